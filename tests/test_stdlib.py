"""Tests for posthog_logging.stdlib: the logging bridge, end to end through a local server.

Every delivery check flushes the client and then polls the server with a deadline
(``server.wait_for_events``); "nothing was sent" is checked by sending a sentinel event
after the records under test and looking at what arrived before it.
"""

from __future__ import annotations

import datetime as dt
import gc
import io
import json
import logging
import logging.config
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

import posthog_logging
from posthog_logging import Client, ContextFilter, PostHogHandler
from posthog_logging.server import LocalServer

from .conftest import API_KEY
from .helpers import Unprintable, delivered, unique_name

WAIT = 5.0


# -- helpers ---------------------------------------------------------------------------


def events_before_sentinel(
    log: logging.Logger, client: Client, server: LocalServer
) -> list[dict[str, Any]]:
    """Log a marked sentinel record, wait for it, return every other stored event."""
    log.info("sentinel", extra={"event": True})
    delivered(client, server, 1, event="sentinel")
    return [e for e in server.events() if e["event"] != "sentinel"]


def parse_timestamp(value: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp with an offset."""
    moment = dt.datetime.fromisoformat(value)
    assert moment.tzinfo is not None, value
    return moment.timestamp()


def exception_text(exc: BaseException) -> str:
    """The messages of ``exc`` and of every exception it was raised from."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return " | ".join(parts)


class RecordKeeper(logging.Handler):
    """Keeps every record it handles, unchanged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class CountingLock:
    """Stands in for a handler's lock and counts how often it is taken."""

    def __init__(self) -> None:
        self.taken = 0
        self._lock = threading.RLock()

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        self.taken += 1
        return self._lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> CountingLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class CountingHandler(PostHogHandler):
    """A PostHogHandler that counts the records it emits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.emitted = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.emitted += 1
        super().emit(record)


def fail(message: str) -> None:
    """Raise and catch nothing: called inside ``try`` blocks to make a real traceback."""
    raise ValueError(message)


@pytest.fixture
def on_root() -> Iterator[Callable[[logging.Handler], logging.Logger]]:
    """Put handlers on the root logger at DEBUG (conftest restores the root afterwards)."""
    lib_logger = logging.getLogger("posthog_logging")
    lib_handlers = list(lib_logger.handlers)
    added: list[logging.Handler] = []

    def install(handler: logging.Handler) -> logging.Logger:
        root = logging.getLogger()
        root.setLevel(logging.DEBUG)
        root.addHandler(handler)
        added.append(handler)
        return root

    yield install
    for handler in added:
        logging.getLogger().removeHandler(handler)
        handler.close()
    lib_logger.handlers[:] = lib_handlers  # Client(debug=True) may add a StreamHandler


# -- 1. marked records -------------------------------------------------------------------


class TestMarkedRecords:
    """Records carrying the marker key become events."""

    def test_true_marker_names_event_by_unformatted_template(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """``extra={"event": True}`` names the event by ``record.msg``, not the message."""
        logger.info("viewed %s", "pricing", extra={"event": True})

        (event,) = delivered(client, server)
        assert event["event"] == "viewed %s"

    def test_string_marker_is_the_event_name(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """``extra={"event": "signup"}`` names the event ``signup``."""
        logger.info("user %s signed up", "ada", extra={"event": "signup", "plan": "pro"})

        (event,) = delivered(client, server)
        assert event["event"] == "signup"
        assert event["properties"]["plan"] == "pro"

    def test_properties_are_extras_without_marker_or_record_attributes(
        self,
        attach: Callable[..., logging.Logger],
        client: Client,
        server: LocalServer,
    ) -> None:
        """Properties are the extras only: no marker, no LogRecord attribute, no stamp."""
        # A formatting handler first, so that record.message and record.asctime exist too.
        formatting = logging.StreamHandler(io.StringIO())
        formatting.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        stamping = PostHogHandler(client=client)
        stamping.addFilter(ContextFilter())
        log = attach(formatting, stamping)

        log.info("page_viewed", extra={"event": True, "page": "/dashboard", "n": 3})

        (event,) = delivered(client, server)
        props = event["properties"]
        assert props["page"] == "/dashboard"
        assert props["n"] == 3
        assert "event" not in props
        leaked = set(props) & (set(RESERVED_ATTRS) | {"taskName"})
        assert not leaked, leaked
        assert not [k for k in props if k.startswith("posthog_")]

    def test_special_extras_mean_what_they_mean_in_capture(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """``distinct_id``, ``groups``, ``properties``, ``$set``, ``$set_once`` are honoured."""
        logger.info(
            "upgraded",
            extra={
                "event": True,
                "distinct_id": "user-42",
                "groups": {"company": "acme"},
                "properties": {"plan": "enterprise", "seats": 12},
                "$set": {"name": "Ada"},
                "$set_once": {"first_plan": "free"},
                "source": "billing",
            },
        )

        (event,) = delivered(client, server)
        props = event["properties"]
        assert event["distinct_id"] == "user-42"
        assert props["$groups"] == {"company": "acme"}
        assert props["plan"] == "enterprise"
        assert props["seats"] == 12
        assert props["$set"] == {"name": "Ada"}
        assert props["$set_once"] == {"first_plan": "free"}
        assert props["source"] == "billing"
        for key in ("distinct_id", "groups", "properties"):
            assert key not in props
        assert "$process_person_profile" not in props

    def test_timestamp_is_when_the_record_was_created(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """The event's timestamp is ``record.created``, within the logging call."""
        keeper = RecordKeeper()
        logger.addHandler(keeper)
        try:
            before = time.time()
            logger.info("timed", extra={"event": True})
            after = time.time()
        finally:
            logger.removeHandler(keeper)

        (event,) = delivered(client, server)
        (record,) = keeper.records
        stamp = parse_timestamp(event["timestamp"])
        assert abs(stamp - record.created) < 2e-6
        assert before - 1e-6 <= stamp <= after + 1e-6

    def test_timestamp_is_not_the_send_time(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """A record made an hour ago is stamped an hour ago, not when it was sent."""
        record = logger.makeRecord(
            logger.name, logging.INFO, __file__, 1, "old", (), None, extra={"event": True}
        )
        record.created -= 3600
        logger.handle(record)

        (event,) = delivered(client, server)
        assert abs(parse_timestamp(event["timestamp"]) - record.created) < 2e-6

    def test_custom_event_key(
        self,
        attach: Callable[..., logging.Logger],
        client: Client,
        server: LocalServer,
    ) -> None:
        """With ``event_key="track"`` the ``track`` extra marks; ``event`` is a property."""
        log = attach(PostHogHandler(client=client, event_key="track"))
        log.info("not marked", extra={"event": True})
        log.info("checkout", extra={"track": True, "event": "a property", "cart": 2})

        (event,) = delivered(client, server)
        assert event["event"] == "checkout"
        assert event["properties"]["cart"] == 2
        assert event["properties"]["event"] == "a property"
        assert "track" not in event["properties"]

    def test_unmarked_records_send_nothing(
        self, attach: Callable[..., logging.Logger], client: Client, server: LocalServer
    ) -> None:
        """With ``capture_errors_without_exception=False``, records that are neither
        marked nor carry an exception are not sent, errors included."""
        logger = attach(PostHogHandler(client=client, capture_errors_without_exception=False))
        logger.debug("debug")
        logger.info("info with extras", extra={"page": "/"})
        logger.warning("warning")
        logger.error("error without exc_info")
        logger.critical("critical without exc_info")

        assert events_before_sentinel(logger, client, server) == []

    @pytest.mark.parametrize("marker", [False, "", None, 0])
    def test_falsy_marker_sends_nothing(
        self, logger: logging.Logger, client: Client, server: LocalServer, marker: Any
    ) -> None:
        """A falsy marker (False, "", None, 0) does not mark the record."""
        logger.info("not an event", extra={"event": marker})

        assert events_before_sentinel(logger, client, server) == []

    def test_marked_record_with_exception_sends_both(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """A marked record logged with an exception sends the event and ``$exception``."""
        try:
            fail("payment declined")
        except ValueError:
            logger.exception("payment_failed", extra={"event": True, "amount": 5})

        found = delivered(client, server, 2)
        names = sorted(e["event"] for e in found)
        assert names == ["$exception", "payment_failed"]
        for event in found:
            assert event["properties"]["amount"] == 5


# -- 2. exceptions -----------------------------------------------------------------------


class TestExceptions:
    """Records with an exception at or above ``exception_level`` become ``$exception``."""

    def test_logger_exception_becomes_exception_event(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """``logger.exception`` sends the log message, logger name, extras and mechanism."""
        try:
            fail("boom")
        except ValueError:
            logger.exception("could not %s order", "save", extra={"order_id": 7})

        (event,) = delivered(client, server, event="$exception")
        props = event["properties"]
        assert props["log_message"] == "could not save order"
        assert props["logger_name"] == logger.name
        assert props["order_id"] == 7
        assert props["$exception_level"] == "error"
        assert props["$exception_source"] == "python.logging"
        (entry,) = props["$exception_list"]
        assert entry["type"] == "ValueError"
        assert entry["value"] == "boom"
        assert entry["mechanism"]["type"] == "logger"
        assert entry["mechanism"]["handled"] is True
        frames = entry["stacktrace"]["frames"]
        assert [f["function"] for f in frames][-2:] == [
            "test_logger_exception_becomes_exception_event",
            "fail",
        ]

    def test_critical_is_fatal_and_still_handled(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """A CRITICAL record gives ``$exception_level`` ``fatal``, mechanism handled."""
        try:
            fail("down")
        except ValueError:
            logger.critical("service down", exc_info=True)

        (event,) = delivered(client, server, event="$exception")
        assert event["properties"]["$exception_level"] == "fatal"
        assert event["properties"]["$exception_list"][0]["mechanism"]["handled"] is True

    def test_extras_cannot_override_exception_fields(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """User extras do not replace ``$exception_list``/``_level``/``_source``."""
        try:
            fail("real")
        except ValueError:
            logger.exception(
                "oops",
                extra={
                    "$exception_list": [],
                    "$exception_level": "debug",
                    "$exception_source": "mine",
                },
            )

        (event,) = delivered(client, server, event="$exception")
        props = event["properties"]
        assert props["$exception_list"][0]["value"] == "real"
        assert props["$exception_level"] == "error"
        assert props["$exception_source"] == "python.logging"

    def test_below_exception_level_sends_nothing(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """An exception logged below ``exception_level`` (default ERROR) is not sent."""
        try:
            fail("minor")
        except ValueError:
            logger.warning("retrying", exc_info=True)
            logger.info("still retrying", exc_info=True)

        assert events_before_sentinel(logger, client, server) == []

    def test_exception_level_as_string(
        self,
        attach: Callable[..., logging.Logger],
        client: Client,
        server: LocalServer,
    ) -> None:
        """``exception_level="WARNING"`` captures exceptions logged at WARNING."""
        log = attach(PostHogHandler(client=client, exception_level="WARNING"))
        try:
            fail("flaky")
        except ValueError:
            log.warning("flaky upstream", exc_info=True)

        (event,) = delivered(client, server, event="$exception")
        assert event["properties"]["$exception_level"] == "warning"
        assert event["properties"]["log_message"] == "flaky upstream"

    def test_same_exception_logged_twice_is_sent_once(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """One exception object logged twice gives one ``$exception`` event."""
        try:
            fail("twice")
        except ValueError:
            logger.exception("first")
            logger.exception("second")

        others = events_before_sentinel(logger, client, server)
        assert [e["properties"]["log_message"] for e in others] == ["first"]


# -- 3. contexts ---------------------------------------------------------------------------


class TestContexts:
    """Records carry the context they were logged in; ContextFilter stamps it."""

    def test_records_in_a_context_carry_identity_session_and_tags(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """Events and ``$exception`` events logged in a context carry its id, session, tags."""
        with posthog_logging.new_context():
            posthog_logging.identify_context("user-7")
            posthog_logging.set_context_session("session-7")
            posthog_logging.tag("plan", "pro")
            logger.info("dashboard_viewed", extra={"event": True})
            try:
                fail("in context")
            except ValueError:
                logger.exception("failed in context")

        found = delivered(client, server, 2)
        assert sorted(e["event"] for e in found) == ["$exception", "dashboard_viewed"]
        for event in found:
            assert event["distinct_id"] == "user-7"
            assert event["properties"]["$session_id"] == "session-7"
            assert event["properties"]["plan"] == "pro"

    def test_explicit_distinct_id_and_properties_win_over_context(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """A ``distinct_id`` extra beats the context's; an extra beats a tag."""
        with posthog_logging.new_context():
            posthog_logging.identify_context("context-user")
            posthog_logging.tag("plan", "free")
            logger.info("x", extra={"event": True, "distinct_id": "explicit", "plan": "pro"})

        (event,) = delivered(client, server)
        assert event["distinct_id"] == "explicit"
        assert event["properties"]["plan"] == "pro"

    def test_outside_a_context_events_are_personless(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """With no distinct_id anywhere the event is still sent, personless."""
        logger.info("anonymous_visit", extra={"event": True})

        (event,) = delivered(client, server)
        assert event["distinct_id"]
        assert event["properties"]["$process_person_profile"] is False

    def test_context_filter_stamps_records(self, attach: Callable[..., logging.Logger]) -> None:
        """ContextFilter adds the context's id, session and tags; None when unset."""
        keeper = RecordKeeper()
        keeper.addFilter(ContextFilter())
        log = attach(keeper)

        log.info("outside")
        with posthog_logging.new_context():
            posthog_logging.identify_context("user-1")
            posthog_logging.set_context_session("session-1")
            posthog_logging.tag("region", "eu")
            log.info("inside")

        outside, inside = keeper.records
        assert outside.posthog_distinct_id is None  # type: ignore[attr-defined]
        assert outside.posthog_session_id is None  # type: ignore[attr-defined]
        assert outside.posthog_tags is None  # type: ignore[attr-defined]
        assert inside.posthog_distinct_id == "user-1"  # type: ignore[attr-defined]
        assert inside.posthog_session_id == "session-1"  # type: ignore[attr-defined]
        assert inside.posthog_tags == {"region": "eu"}  # type: ignore[attr-defined]

    def test_context_filter_never_rejects(self) -> None:
        """ContextFilter returns True for every record."""
        record = logging.makeLogRecord({"msg": "anything", "levelno": logging.DEBUG})
        assert ContextFilter().filter(record) is True

    def test_plain_formatter_prints_stamps(self, attach: Callable[..., logging.Logger]) -> None:
        """A ``logging.Formatter`` can print the stamps, inside and outside a context."""
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.addFilter(ContextFilter())
        handler.setFormatter(
            logging.Formatter(
                "%(posthog_distinct_id)s|%(posthog_session_id)s|%(posthog_tags)s|%(message)s"
            )
        )
        log = attach(handler)

        log.info("outside")
        with posthog_logging.new_context():
            posthog_logging.identify_context("user-2")
            posthog_logging.set_context_session("session-2")
            posthog_logging.tag("team", "core")
            log.info("inside")

        assert stream.getvalue().splitlines() == [
            "None|None|None|outside",
            "user-2|session-2|{'team': 'core'}|inside",
        ]

    def test_json_formatter_prints_stamps(self, attach: Callable[..., logging.Logger]) -> None:
        """python-json-logger's JsonFormatter writes the stamps as JSON fields."""
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.addFilter(ContextFilter())
        handler.setFormatter(
            JsonFormatter(
                "%(message)s %(posthog_distinct_id)s %(posthog_session_id)s %(posthog_tags)s"
            )
        )
        log = attach(handler)

        log.info("outside")
        with posthog_logging.new_context():
            posthog_logging.identify_context("user-3")
            posthog_logging.set_context_session("session-3")
            posthog_logging.tag("team", "growth")
            log.info("inside")

        outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
        assert outside["message"] == "outside"
        assert outside["posthog_distinct_id"] is None
        assert outside["posthog_session_id"] is None
        assert outside["posthog_tags"] is None
        assert inside["message"] == "inside"
        assert inside["posthog_distinct_id"] == "user-3"
        assert inside["posthog_session_id"] == "session-3"
        assert inside["posthog_tags"] == {"team": "growth"}


# -- 4. QueueHandler / QueueListener ------------------------------------------------------


@pytest.fixture
def queued(
    client: Client, attach: Callable[..., logging.Logger]
) -> Iterator[tuple[logging.Logger, logging.handlers.QueueListener]]:
    """A logger whose QueueHandler (with ContextFilter) feeds a PostHogHandler on a listener."""
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    queue_handler = logging.handlers.QueueHandler(records)
    queue_handler.addFilter(ContextFilter())
    log = attach(queue_handler)
    posthog_handler = PostHogHandler(client=client)
    listener = logging.handlers.QueueListener(records, posthog_handler)
    listener.start()
    yield log, listener
    if listener._thread is not None:  # type: ignore[attr-defined]
        listener.stop()
    posthog_handler.close()


class TestQueueHandler:
    """Behind QueueHandler/QueueListener, events describe the code that logged."""

    def test_events_carry_the_identity_of_the_logging_thread(
        self,
        queued: tuple[logging.Logger, logging.handlers.QueueListener],
        client: Client,
        server: LocalServer,
    ) -> None:
        """Two threads with different identities log concurrently; each keeps its own."""
        log, listener = queued
        per_thread = 20
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                with posthog_logging.new_context():
                    posthog_logging.identify_context(f"user-{worker}")
                    posthog_logging.set_context_session(f"session-{worker}")
                    posthog_logging.tag("worker_tag", worker)
                    barrier.wait(timeout=WAIT)
                    for i in range(per_thread):
                        log.info("step %d", i, extra={"event": True, "worker": worker})
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        listener.stop()
        assert not errors

        found = delivered(client, server, 2 * per_thread)
        assert len(found) == 2 * per_thread
        for event in found:
            worker = event["properties"]["worker"]
            assert event["event"] == "step %d"
            assert event["distinct_id"] == f"user-{worker}"
            assert event["properties"]["$session_id"] == f"session-{worker}"
            assert event["properties"]["worker_tag"] == worker

    def test_event_name_is_the_template_although_queue_formats_it(
        self,
        queued: tuple[logging.Logger, logging.handlers.QueueListener],
        client: Client,
        server: LocalServer,
    ) -> None:
        """``QueueHandler.prepare`` formats the message; the event keeps the template."""
        log, listener = queued
        log.info("viewed %s", "pricing", extra={"event": True, "page": "/pricing"})
        log.info("named by marker", extra={"event": "signup"})
        listener.stop()

        found = delivered(client, server, 2)
        assert sorted(e["event"] for e in found) == ["signup", "viewed %s"]
        viewed = next(e for e in found if e["event"] == "viewed %s")
        assert viewed["properties"]["page"] == "/pricing"

    def test_exception_behind_the_queue_is_sent_once_with_frames(
        self,
        queued: tuple[logging.Logger, logging.handlers.QueueListener],
        client: Client,
        server: LocalServer,
    ) -> None:
        """``logger.exception`` behind the queue sends one ``$exception`` with frames."""
        log, listener = queued
        with posthog_logging.new_context():
            posthog_logging.identify_context("user-q")
            try:
                fail("queued boom")
            except ValueError:
                log.exception("queued failure")
        log.info("sentinel", extra={"event": True})
        listener.stop()

        delivered(client, server, 1, event="sentinel")
        found = server.events(event="$exception")
        assert len(found) == 1
        (event,) = found
        props = event["properties"]
        assert event["distinct_id"] == "user-q"
        assert props["logger_name"] == log.name
        assert props["$exception_level"] == "error"
        assert props["$exception_source"] == "python.logging"
        (entry,) = props["$exception_list"]
        assert entry["type"] == "ValueError"
        assert entry["value"] == "queued boom"
        assert entry["mechanism"] == {**entry["mechanism"], "type": "logger", "handled": True}
        functions = [f["function"] for f in entry["stacktrace"]["frames"]]
        assert functions[-2:] == [
            "test_exception_behind_the_queue_is_sent_once_with_frames",
            "fail",
        ]

    def test_exception_behind_the_queue_keeps_the_log_message(
        self,
        queued: tuple[logging.Logger, logging.handlers.QueueListener],
        client: Client,
        server: LocalServer,
    ) -> None:
        """``log_message`` is the message logged, not the text ``QueueHandler`` formats."""
        log, listener = queued
        try:
            fail("queued boom")
        except ValueError:
            log.exception("could not %s", "sync", extra={"job": 3})
        listener.stop()

        (event,) = delivered(client, server, event="$exception")
        assert event["properties"]["job"] == 3
        assert event["properties"]["log_message"] == "could not sync"


# -- 5. dictConfig -----------------------------------------------------------------------------


def dict_config(server: LocalServer, logger_name: str, **handler_options: Any) -> dict:
    """A dictConfig dict with only strings, numbers and lists of strings."""
    handler: dict[str, Any] = {
        "class": "posthog_logging.PostHogHandler",
        "level": "DEBUG",
        "api_key": API_KEY,
        "host": server.url,
        "flush_at": 10,
        "flush_interval": 0.05,
        "exception_level": "ERROR",
        "event_key": "track",
        "ignore_loggers": ["posthog_logging", "urllib3", "requests"],
        "filters": ["posthog_context"],
    }
    handler.update(handler_options)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "posthog_context": {"()": "posthog_logging.ContextFilter", "event_key": "track"}
        },
        "handlers": {"posthog": handler},
        "loggers": {logger_name: {"level": "DEBUG", "handlers": ["posthog"], "propagate": False}},
    }


def dictconfig_error(config: dict) -> str | None:
    """Apply ``config``; the failure as ``"Type: messages of the chain"``, or None.

    The exception is dropped (and collected) before returning: a half-built handler
    that its traceback keeps alive must not leak into later tests.
    """
    text = None
    try:
        logging.config.dictConfig(config)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exception_text(exc)}"
    gc.collect()
    return text


@pytest.fixture
def configured(server: LocalServer) -> Iterator[tuple[logging.Logger, PostHogHandler]]:
    """A logger set up by dictConfig with a PostHogHandler sending to ``server``."""
    name = unique_name("test.dictconfig")
    logging.config.dictConfig(dict_config(server, name))
    log = logging.getLogger(name)
    (handler,) = log.handlers
    assert isinstance(handler, PostHogHandler)
    yield log, handler
    log.removeHandler(handler)
    handler.close()


class TestDictConfig:
    """The handler and filter work from ``logging.config.dictConfig``."""

    def test_options_from_dictconfig_are_applied(
        self, configured: tuple[logging.Logger, PostHogHandler], server: LocalServer
    ) -> None:
        """String and number options reach the handler and its client."""
        _, handler = configured
        assert handler.event_key == "track"
        assert handler.exception_level == logging.ERROR
        assert handler.level == logging.DEBUG
        assert handler.client.flush_at == 10
        assert handler.client.flush_interval == 0.05
        assert handler.client.host == server.url
        assert any(isinstance(f, ContextFilter) for f in handler.filters)

    def test_events_and_exceptions_arrive(
        self, configured: tuple[logging.Logger, PostHogHandler], server: LocalServer
    ) -> None:
        """Marked records and logged exceptions reach the server, with the context."""
        log, handler = configured
        with posthog_logging.new_context():
            posthog_logging.identify_context("dict-user")
            log.info("signed_up", extra={"track": True, "plan": "pro"})
            try:
                fail("dict boom")
            except ValueError:
                log.exception("dict failure")
        log.info("not marked with the custom key", extra={"event": True})

        found = delivered(handler.client, server, 2)
        assert sorted(e["event"] for e in found) == ["$exception", "signed_up"]
        for event in found:
            assert event["distinct_id"] == "dict-user"
        signed_up = next(e for e in found if e["event"] == "signed_up")
        assert signed_up["properties"]["plan"] == "pro"

    def test_handler_client_becomes_the_default_client(
        self, configured: tuple[logging.Logger, PostHogHandler], server: LocalServer
    ) -> None:
        """The client built from dictConfig is the default: ``capture`` reaches the server."""
        _, handler = configured
        assert posthog_logging.get_client() is handler.client
        posthog_logging.capture("direct_capture", {"via": "module"}, distinct_id="u-1")

        (event,) = delivered(handler.client, server, event="direct_capture")
        assert event["properties"]["via"] == "module"

    def test_ignore_loggers_as_comma_separated_string(
        self, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """``ignore_loggers`` may be one comma-separated string, as from an ini file."""
        name = unique_name("test.dictconfig")
        config = dict_config(server, name, ignore_loggers=f"urllib3, {name}.noisy")
        logging.config.dictConfig(config)
        log = logging.getLogger(name)
        (handler,) = log.handlers
        attach(handler, name=name)  # detached and closed at the end

        assert isinstance(handler, PostHogHandler)
        log.getChild("noisy").info("ignored", extra={"track": True})
        log.getChild("noisy.deeper").info("ignored too", extra={"track": True})
        log.info("kept", extra={"track": True})

        delivered(handler.client, server, 1, event="kept")
        assert [e["event"] for e in server.events()] == ["kept"]

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("flush_at", 0),
            ("flush_interval", -1),
            ("exception_level", "NOPE"),
            ("event_key", ""),
        ],
    )
    def test_bad_option_fails_with_a_clear_value_error(
        self, server: LocalServer, option: str, value: Any
    ) -> None:
        """A bad option makes dictConfig raise ValueError naming the option and value."""
        config = dict_config(server, unique_name("test.dictconfig"), **{option: value})

        text = dictconfig_error(config)

        assert text is not None, "dictConfig accepted a bad option"
        assert text.startswith("ValueError: "), text
        assert option in text
        assert repr(value) in text

    def test_dictconfig_can_be_retried_after_a_bad_config(
        self, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """After a bad config, a corrected dictConfig (e.g. a fallback) works and delivers."""
        bad = dict_config(server, unique_name("test.dictconfig"), flush_at=0)
        name = unique_name("test.dictconfig")
        outcome = "the bad config was accepted"
        try:
            logging.config.dictConfig(bad)
        except ValueError:
            try:  # falling back while handling the error, as an application would
                logging.config.dictConfig(dict_config(server, name))
                outcome = "ok"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
        gc.collect()  # drop the tracebacks, and what they hold, before asserting

        assert outcome == "ok"
        log = logging.getLogger(name)
        (handler,) = log.handlers
        attach(handler, name=name)  # detached and closed at the end
        assert isinstance(handler, PostHogHandler)
        log.info("after_retry", extra={"track": True})
        delivered(handler.client, server, 1, event="after_retry")


# -- 6. no recursion ------------------------------------------------------------------------


IGNORED_BY_DEFAULT = [
    "posthog_logging",
    "posthog_logging.client",
    "urllib3",
    "urllib3.connectionpool",
    "requests",
    "requests.sessions",
    "posthog",
    "posthog.client",
]


class TestNoRecursion:
    """The handler never feeds on its own logging or its HTTP stack's."""

    def test_library_and_http_loggers_are_ignored_by_default(
        self,
        on_root: Callable[[logging.Handler], logging.Logger],
        make_client: Callable[..., Client],
        server: LocalServer,
    ) -> None:
        """Marked records and exceptions from our own and HTTP loggers never become events."""
        client = make_client(debug=True)  # the library chatters on posthog_logging
        keeper = RecordKeeper()
        on_root(keeper)
        on_root(PostHogHandler(client=client))

        for name in IGNORED_BY_DEFAULT:
            log = logging.getLogger(name)
            log.info("chatter", extra={"event": True})
            log.info("named chatter", extra={"event": "named"})
            try:
                fail(f"from {name}")
            except ValueError:
                log.exception("exception chatter")
        app = logging.getLogger(unique_name("app"))
        app.info("app_event", extra={"event": True})
        delivered(client, server, 1, event="app_event")
        app.info("sentinel", extra={"event": True})

        delivered(client, server, 1, event="sentinel")
        assert sorted(e["event"] for e in server.events()) == ["app_event", "sentinel"]
        seen = {r.name for r in keeper.records}
        assert set(IGNORED_BY_DEFAULT) <= seen  # the records did reach the root handlers
        assert client.stats.enqueued == 2

    @pytest.mark.parametrize(
        "ignore_loggers",
        [["myapp.noisy", "other"], "myapp.noisy, other", ("myapp.noisy",)],
    )
    def test_ignore_loggers_is_configurable(
        self,
        attach: Callable[..., logging.Logger],
        client: Client,
        server: LocalServer,
        ignore_loggers: Any,
    ) -> None:
        """``ignore_loggers`` (list or comma-separated string) replaces the default list."""
        handler = PostHogHandler(client=client, ignore_loggers=ignore_loggers)
        log = attach(handler)

        def emit_as(name: str, message: str) -> None:
            log.handle(
                log.makeRecord(
                    name, logging.INFO, __file__, 1, message, (), None, extra={"event": True}
                )
            )

        emit_as("myapp.noisy", "ignored")
        emit_as("myapp.noisy.child", "ignored child")
        emit_as("myapp.noisyish", "kept sibling")
        emit_as("urllib3", "kept urllib3")

        assert [e["event"] for e in events_before_sentinel(log, client, server)] == [
            "kept sibling",
            "kept urllib3",
        ]

    @pytest.mark.parametrize("sync_mode", [False, True])
    def test_before_send_that_logs_does_not_loop(
        self,
        on_root: Callable[[logging.Handler], logging.Logger],
        make_client: Callable[..., Client],
        server: LocalServer,
        sync_mode: bool,
    ) -> None:
        """A before_send hook logging events and exceptions on the root gives no loop."""
        calls: list[str] = []

        def before_send(event: dict[str, Any]) -> dict[str, Any]:
            calls.append(event["event"])
            root = logging.getLogger()
            root.info("from_hook", extra={"event": True})
            logging.getLogger("app.hook").info("from_hook_child", extra={"event": True})
            try:
                fail("hook failure")
            except ValueError:
                root.exception("hook failed")
            return event

        client = make_client(before_send=before_send, sync_mode=sync_mode)
        root = on_root(PostHogHandler(client=client))
        root.info("outer", extra={"event": True})

        delivered(client, server, 1, event="outer")
        client.flush()
        assert [e["event"] for e in server.events()] == ["outer"]
        assert calls == ["outer"]
        assert client.stats.enqueued == 1

    def test_refused_key_gives_no_loop_and_one_warning_without_the_key(
        self,
        on_root: Callable[[logging.Handler], logging.Logger],
        make_client: Callable[..., Client],
        server: LocalServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A 401 with the handler on the root: no loop, one warning, never the key."""
        caplog.set_level(logging.DEBUG, logger="posthog_logging")
        key = "phc_" + "refused_by_the_server" * 4  # longer than a project key can be
        client = make_client(api_key=key)
        root = on_root(PostHogHandler(client=client))

        for i in range(3):
            root.info("refused_event", extra={"event": True, "i": i})
            assert client.flush()
        client.flush()

        assert [r.status for r in server.requests] == [401, 401, 401]
        assert server.events() == []
        stats = client.stats
        assert stats.enqueued == 3
        assert stats.failed == 3
        warnings = [
            r
            for r in caplog.records
            if r.name.startswith("posthog_logging") and r.levelno >= logging.WARNING
        ]
        refusals = [r for r in warnings if "401" in r.getMessage()]
        assert len(refusals) == 1, [r.getMessage() for r in warnings]
        assert key not in caplog.text
        for record in caplog.records:
            assert key not in record.getMessage()


# -- 7. never raises -------------------------------------------------------------------------


class TestNeverRaises:
    """No logging call raises into the application; bad values are coerced.

    Loggers are made inside each test, so that pytest's own capture handler (which
    fails the test on a bad record when ``logging.raiseExceptions`` is on) is not on them.
    """

    @pytest.fixture(autouse=True, params=[True, False], ids=["raiseExceptions", "quiet"])
    def raise_exceptions(self, request: pytest.FixtureRequest, monkeypatch: Any) -> bool:
        """Run each test with ``logging.raiseExceptions`` on and off."""
        monkeypatch.setattr(logging, "raiseExceptions", request.param)
        return bool(request.param)

    def test_unserialisable_and_cyclic_extras_are_coerced(
        self,
        attach: Callable[..., logging.Logger],
        client: Client,
        server: LocalServer,
    ) -> None:
        """A marked record with cyclic and odd extras is sent with coerced values."""
        logger = attach(PostHogHandler(client=client))
        cyclic: dict[str, Any] = {"name": "loop"}
        cyclic["self"] = cyclic
        looping: list[Any] = [1]
        looping.append(looping)

        logger.info(
            "odd_values",
            extra={
                "event": True,
                "cyclic": cyclic,
                "looping": looping,
                "unprintable": Unprintable(),
                "plain_object": object(),
                "raw": b"\xff\x00",
                "numbers": {1, 2},
                "odd_keys": {1: "int", (1, 2): "tuple", None: "none"},
                "nan": float("nan"),
            },
        )

        (event,) = delivered(client, server)
        props = event["properties"]
        assert props["cyclic"]["name"] == "loop"
        assert props["cyclic"]["self"] == "[Circular]"
        assert props["looping"][0] == 1
        assert props["looping"][1] == "[Circular]"
        assert isinstance(props["unprintable"], str)
        assert isinstance(props["plain_object"], str)
        assert isinstance(props["raw"], str)
        assert props["numbers"] == [1, 2]
        assert sorted(props["odd_keys"].values()) == ["int", "none", "tuple"]
        assert all(isinstance(k, str) for k in props["odd_keys"])
        assert props["nan"] == "NaN"

    def test_bad_percent_args_are_not_raised(
        self,
        attach: Callable[..., logging.Logger],
        client: Client,
        server: LocalServer,
    ) -> None:
        """Bad %-args: the call returns, the event keeps the template as message."""
        logger = attach(PostHogHandler(client=client))
        try:
            fail("bad args")
        except ValueError as exc:
            logger.error("%d", "x", exc_info=exc)
        logger.info("count %d", "not a number", extra={"event": True})

        found = delivered(client, server, 2)
        exception = next(e for e in found if e["event"] == "$exception")
        assert exception["properties"]["log_message"] == "%d"
        assert exception["properties"]["$exception_list"][0]["value"] == "bad args"
        assert any(e["event"] == "count %d" for e in found)

    def test_exc_info_without_exception_sends_nothing(
        self,
        attach: Callable[..., logging.Logger],
        client: Client,
        server: LocalServer,
    ) -> None:
        """``exc_info=True`` outside an ``except`` block is harmless: with no exception to
        send, the records are errors logged without one (sent as synthetic exceptions by
        default, nothing when that is off)."""
        logger = attach(PostHogHandler(client=client))
        logger.error("nothing to report", exc_info=True)
        logger.exception("nothing either")
        quiet = attach(PostHogHandler(client=client, capture_errors_without_exception=False))
        quiet.exception("nothing at all")

        found = events_before_sentinel(logger, client, server)
        assert sorted(e["properties"]["log_message"] for e in found) == [
            "nothing either",
            "nothing to report",
        ]
        for event in found:
            [entry] = event["properties"]["$exception_list"]
            assert entry["mechanism"]["synthetic"] is True

    def test_unprintable_message_does_not_raise(
        self,
        attach: Callable[..., logging.Logger],
        client: Client,
        server: LocalServer,
    ) -> None:
        """A marked record whose message cannot be turned into text does not raise."""
        logger = attach(PostHogHandler(client=client))
        logger.info(Unprintable(), extra={"event": True})  # type: ignore[arg-type]
        logger.info(Unprintable(), extra={"event": "named"})  # type: ignore[arg-type]

        delivered(client, server, 1, event="named")
        others = events_before_sentinel(logger, client, server)
        assert len(others) + client.stats.dropped_total == 2

    def test_odd_special_extras_are_not_raised(
        self,
        attach: Callable[..., logging.Logger],
        client: Client,
        server: LocalServer,
    ) -> None:
        """Special extras of the wrong type do not raise, and are kept as plain properties."""
        logger = attach(PostHogHandler(client=client))
        logger.info(
            "odd_specials",
            extra={
                "event": True,
                "groups": "not a mapping",
                "properties": ["not", "a", "mapping"],
                "distinct_id": 12345,
                "$set": "not a mapping",
            },
        )

        (event,) = delivered(client, server)
        assert event["distinct_id"] == "12345"
        assert event["properties"]["groups"] == "not a mapping"
        assert event["properties"]["properties"] == ["not", "a", "mapping"]
        assert "$groups" not in event["properties"]

    def test_before_send_that_raises_drops_the_event(
        self,
        attach: Callable[..., logging.Logger],
        make_client: Callable[..., Client],
        server: LocalServer,
    ) -> None:
        """A raising ``before_send`` drops the event, counted; the logging call returns."""

        def before_send(event: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("hook is broken")

        client = make_client(before_send=before_send)
        log = attach(PostHogHandler(client=client))
        log.info("dropped_by_hook", extra={"event": True})
        try:
            fail("hook cannot help")
        except ValueError:
            log.exception("also dropped")

        assert client.flush()
        assert client.stats.dropped["before_send_error"] == 2
        assert server.events() == []


# -- 8. before configuration -----------------------------------------------------------------


class TestBeforeConfiguration:
    """A handler with no client uses the default client, whenever it gets configured."""

    def test_no_api_key_does_not_crash_counts_then_delivers_once_configured(
        self, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """No key: records are dropped and counted; setting the module attributes fixes it."""
        assert posthog_logging.api_key is None
        log = attach(PostHogHandler())

        log.info("too_early", extra={"event": True})
        log.info("still_too_early", extra={"event": True})
        assert posthog_logging.get_client().stats.dropped["no_api_key"] == 2

        posthog_logging.api_key = API_KEY
        posthog_logging.host = server.url
        log.info("configured_now", extra={"event": True})

        posthog_logging.flush()
        server.wait_for_events(1, timeout=WAIT, event="configured_now")
        assert [e["event"] for e in server.events()] == ["configured_now"]

    def test_no_api_key_logs_one_warning(
        self, attach: Callable[..., logging.Logger], caplog: pytest.LogCaptureFixture
    ) -> None:
        """No key anywhere: exactly one warning on ``posthog_logging``, however many records."""
        caplog.set_level(logging.WARNING, logger="posthog_logging")
        log = attach(PostHogHandler())

        for _ in range(3):
            log.info("too_early", extra={"event": True})

        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("posthog_logging") and r.levelno >= logging.WARNING
        ]
        assert len(warnings) == 1, warnings


# -- 9. the cheap path -------------------------------------------------------------------------


class TestCheapPath:
    """Unmarked records cost almost nothing: no emit, no lock."""

    def test_unmarked_records_are_not_emitted_and_take_no_lock(self, client: Client) -> None:
        """``handle()`` returns falsy without calling ``emit`` or taking the lock."""
        handler = CountingHandler(client=client)
        lock = CountingLock()
        handler.lock = lock  # type: ignore[assignment]
        log = logging.getLogger(unique_name("test.stdlib"))

        records = [
            log.makeRecord(log.name, logging.INFO, __file__, 1, "plain", (), None),
            log.makeRecord(log.name, logging.WARNING, __file__, 1, "no exc", (), None),
            log.makeRecord(
                log.name, logging.INFO, __file__, 1, "falsy", (), None, extra={"event": False}
            ),
            log.makeRecord(
                log.name, logging.INFO, __file__, 1, "other", (), None, extra={"page": "/"}
            ),
        ]
        try:
            fail("below level")
        except ValueError:
            records.append(
                log.makeRecord(log.name, logging.WARNING, __file__, 1, "warn", (), sys.exc_info())
            )

        try:
            for record in records:
                assert not handler.handle(record)
            assert handler.emitted == 0
            assert lock.taken == 0

            marked = log.makeRecord(
                log.name, logging.INFO, __file__, 1, "marked", (), None, extra={"event": True}
            )
            assert handler.handle(marked)
            assert handler.emitted == 1  # the counting does work
        finally:
            handler.close()

    def test_unmarked_records_through_a_logger_are_not_emitted(
        self, attach: Callable[..., logging.Logger], client: Client
    ) -> None:
        """Through a real logger, unmarked records never reach ``emit``."""
        handler = CountingHandler(client=client)
        lock = CountingLock()
        handler.lock = lock  # type: ignore[assignment]
        log = attach(handler)

        for _ in range(100):
            log.info("plain %s", "message", extra={"page": "/"})
            log.warning("no exception")

        assert handler.emitted == 0
        assert lock.taken == 0
