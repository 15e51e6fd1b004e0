"""``logging.config.dictConfig``: everything from plain data (strings and numbers).

The same dict works from a JSON or YAML file. ``ContextFilter`` puts the context on
every line, so the console shows who each line is about.

    python -m posthog_logging serve &
    POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local python examples/dict_config.py
"""

import logging
import logging.config
import os

import posthog_logging as posthog

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"posthog_context": {"()": "posthog_logging.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(levelname)s %(name)s [%(posthog_distinct_id)s]: %(message)s"}
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["posthog_context"],
        },
        "posthog": {
            "class": "posthog_logging.PostHogHandler",
            "api_key": os.environ.get("POSTHOG_API_KEY", ""),
            "host": os.environ.get("POSTHOG_HOST", "https://us.i.posthog.com"),
            "flush_at": 50,
            "flush_interval": 1.0,
            "exception_level": "ERROR",
            "filters": ["posthog_context"],
        },
    },
    "root": {"level": "INFO", "handlers": ["console", "posthog"]},
}

log = logging.getLogger("example.dictconfig")


def main() -> None:
    logging.config.dictConfig(LOGGING)
    with posthog.new_context():
        posthog.identify_context("user_2")
        posthog.set_context_session("0190b9a0-0000-7000-8000-000000000001")
        log.info("report_exported", extra={"event": True, "format": "pdf", "pages": 12})
        try:
            {}["missing"]
        except KeyError:
            log.exception("export cleanup failed")


if __name__ == "__main__":
    main()
