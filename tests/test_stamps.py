"""What ``ContextFilter`` adds to a record that users' formatters show: the context
stamps, and nothing of the library's own carry-overs.

A JSON formatter (python-json-logger) prints every attribute a record has beyond the
standard ones. The stamps it should print are the context's (`posthog_distinct_id`,
`posthog_session_id`, `posthog_tags`) and the span's (`posthog_trace`); the snapshot of
an exception, the message as logged, a marked record's event name and an error's
template travel across a ``QueueHandler`` privately, and still do their job.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import queue
from collections.abc import Callable
from typing import Any

from pythonjsonlogger.json import JsonFormatter

import posthog_logging
from posthog_logging import Client, ContextFilter, PostHogHandler
from posthog_logging.server import LocalServer

from .helpers import delivered

WAIT = 5.0


def test_json_lines_show_the_context_and_nothing_of_the_librarys_own(
    client: Client, attach: Callable[..., logging.Logger], server: LocalServer
) -> None:
    """Behind a ``QueueHandler`` with ``ContextFilter``: the JSON line of a marked record
    and of a logged exception carry the person, session and tags, no internal key; the
    ``PostHogHandler`` on the listener still sends the event under its template's name
    and the exception with its traceback."""
    out = io.StringIO()
    console = logging.StreamHandler(out)
    console.setFormatter(JsonFormatter("%(levelname)s %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    to_queue = logging.handlers.QueueHandler(records)
    to_queue.addFilter(ContextFilter())
    listener = logging.handlers.QueueListener(
        records, console, PostHogHandler(client=client), respect_handler_level=True
    )
    log = attach(to_queue)
    listener.start()
    try:
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_5")
            posthog_logging.set_context_session("session_5")
            posthog_logging.tag("plan", "pro")
            log.info("viewed %s", "/pricing", extra={"event": True})
            try:
                raise ValueError("declined")
            except ValueError:
                log.exception("payment failed for order %s", 7)
            log.error("stock low for %s", "sku_1")
    finally:
        listener.stop()

    lines: list[dict[str, Any]] = [json.loads(line) for line in out.getvalue().splitlines()]
    # (QueueHandler puts the traceback into the message it passes on)
    assert [line["message"].splitlines()[0] for line in lines] == [
        "viewed /pricing",
        "payment failed for order 7",
        "stock low for sku_1",
    ]
    for line in lines:
        assert line["posthog_distinct_id"] == "user_5"
        assert line["posthog_session_id"] == "session_5"
        assert line["posthog_tags"] == {"plan": "pro"}
        internal = {key for key in line if "posthog" in key} - {
            "posthog_distinct_id",
            "posthog_session_id",
            "posthog_tags",
            "posthog_trace",
        }
        assert internal == set(), f"internal keys in a user's line: {internal}"

    events = {e["event"]: e for e in delivered(client, server, 3)}
    assert "viewed %s" in events  # the template, kept across the queue
    exceptions = [e for e in server.events() if e["event"] == "$exception"]
    by_type = {e["properties"]["$exception_list"][0]["type"]: e for e in exceptions}
    real = by_type["ValueError"]["properties"]
    assert real["$exception_list"][0]["stacktrace"]["frames"]  # the snapshot crossed
    assert real["log_message"] == "payment failed for order 7"
    assert "stock low for %s" in by_type  # an error's template, kept across the queue
