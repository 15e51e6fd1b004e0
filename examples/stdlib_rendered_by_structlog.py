"""Plain ``logging`` calls, rendered by structlog's ``ProcessorFormatter``.

An application (or its libraries) logs with the standard library; structlog only
formats the console output. ``PostHogHandler`` sends the marked records and the
exceptions as usual; ``merge_posthog_context`` in the formatter's ``foreign_pre_chain``
shows whose line it is.

Run against the local server::

    python -m posthog_logging serve &
    export POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local
    python examples/stdlib_rendered_by_structlog.py
    python -m posthog_logging events
"""

import logging

import structlog

import posthog_logging as posthog
from posthog_logging.structlog import merge_posthog_context

console = logging.StreamHandler()
console.setFormatter(
    structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            merge_posthog_context,
            # Only the fields you want shown: all extras would include the "event"
            # marker, which ExtraAdder would copy over structlog's message key.
            structlog.stdlib.ExtraAdder(allow=["format", "rows"]),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
    )
)
root = logging.getLogger()
root.addHandler(console)
root.addHandler(posthog.PostHogHandler())
root.setLevel(logging.INFO)

log = logging.getLogger("example.rendered")


def export_report(user_id: str) -> None:
    with posthog.new_context():
        posthog.identify_context(user_id)
        log.info("report_exported", extra={"event": True, "format": "csv", "rows": 120})
        try:
            raise PermissionError("bucket is read-only")
        except PermissionError:
            log.exception("upload failed")


if __name__ == "__main__":
    export_report("user_3")
    posthog.shutdown()
