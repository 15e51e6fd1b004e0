"""Plain ``logging``: a handler on the root logger, contexts around units of work.

Run against the local server::

    python -m posthog_logging serve &
    POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local python examples/plain_logging.py
    python -m posthog_logging events
"""

import logging

import posthog_logging as posthog

# The API key and host come from POSTHOG_API_KEY / POSTHOG_HOST; or set them here:
# posthog.api_key = "phc_..."; posthog.host = "https://eu.i.posthog.com"
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
logging.getLogger().addHandler(posthog.PostHogHandler())

log = logging.getLogger("example.plain")


def import_contacts(user_id: str, rows: list[dict[str, str]]) -> None:
    with posthog.new_context():
        posthog.identify_context(user_id)
        posthog.tag("source", "csv")
        log.info("import_started", extra={"event": True, "rows": len(rows)})
        for row in rows:
            try:
                if "@" not in row["email"]:
                    raise ValueError(f"not an email address: {row['email']!r}")
            except ValueError:
                log.exception("bad row skipped")  # -> an $exception event
        log.info("contacts imported", extra={"event": "import_finished", "rows": len(rows)})


if __name__ == "__main__":
    import_contacts("user_1", [{"email": "a@example.com"}, {"email": "nope"}])
    posthog.shutdown()  # also done at exit; explicit here to show it
