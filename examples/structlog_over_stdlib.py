"""structlog over the standard library: structlog's API, logging's handlers.

structlog processes each entry, then hands it to ``logging`` wrapped for
``ProcessorFormatter``; the console handler renders it, and a ``PostHogHandler`` on the
same logger would see it too. With ``PostHogProcessor`` in the chain *and* a
``PostHogHandler`` on logging, each entry is still sent once: the processor consumes
the marker and an exception is sent once per exception object.

Run against the local server::

    python -m posthog_logging serve &
    export POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local
    python examples/structlog_over_stdlib.py
    python -m posthog_logging events
"""

import logging

import structlog

import posthog_logging as posthog
from posthog_logging.structlog import PostHogProcessor, merge_posthog_context

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        merge_posthog_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        PostHogProcessor(),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)

console = logging.StreamHandler()
console.setFormatter(
    structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    )
)
root = logging.getLogger()
root.addHandler(console)
root.addHandler(posthog.PostHogHandler())  # for records logged with plain logging, too
root.setLevel(logging.INFO)

log = structlog.get_logger("example.over_stdlib")


def rename_project(user_id: str) -> None:
    with posthog.new_context():
        posthog.identify_context(user_id)
        posthog.tag("team", "growth")
        log.info("project_renamed", capture=True, old="alpha", new="beta")
        logging.getLogger("example.legacy").info(
            "legacy module still logs through logging", extra={"event": "legacy_call"}
        )
        try:
            {}["missing"]
        except KeyError:
            log.exception("rename hook failed")


if __name__ == "__main__":
    rename_project("user_5")
    posthog.shutdown()
