"""What an ``$exception`` event tells about how it came to be, end to end through the
local server: the lines logged before it in its context (``$exception_steps``), the
OpenTelemetry span it happened in (``$trace_id`` / ``$span_id``), and the local variables
of the frames it went through (``code_variables``), all within PostHog's size limit.

Everything runs for real: the handler or structlog processor, contexts on real threads,
spans of the real OpenTelemetry SDK, the client's sender and the package's LocalServer.
"""

# The functions below assign locals only for error tracking to read them from the frames.
# ruff: noqa: F841

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import logging.handlers
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

import posthog_logging
from posthog_logging import Client, ContextFilter, PostHogHandler
from posthog_logging.code_variables import REDACTED, TOO_LONG
from posthog_logging.server import LocalServer
from posthog_logging.structlog import PostHogProcessor
from posthog_logging.wire import MAX_EVENT_BYTES

from .conftest import API_KEY
from .helpers import Event, delivered, one_delivered, wait_for_lines

TRACER = TracerProvider().get_tracer("tests.exception_context")

#: Seconds a thread of a test waits for the others before it gives up.
PATIENCE = 5.0


# -- what the tests raise, log and read ------------------------------------------------------


def fail(message: str = "card declined") -> None:
    raise ValueError(message)


def steps_of(event: Event) -> list[dict[str, Any]]:
    """An ``$exception`` event's steps as sent, without their timestamps."""
    steps: list[dict[str, Any]] = event["properties"]["$exception_steps"]
    return [{k: v for k, v in step.items() if k != "$timestamp"} for step in steps]


def messages_of(event: Event) -> list[str]:
    """The messages of an ``$exception`` event's steps, oldest first."""
    return [step["$message"] for step in event["properties"]["$exception_steps"]]


def by_value(events: list[Event]) -> dict[str, Event]:
    """``$exception`` events by the message of their (outermost) exception."""
    found: dict[str, Event] = {}
    for event in events:
        if event["event"] == "$exception":
            value = event["properties"]["$exception_list"][0]["value"]
            assert value not in found, f"two $exception events for {value!r}"
            found[value] = event
    return found


def ids_of(span: Span) -> tuple[str, str]:
    """The span's trace id and span id as PostHog gets them (lowercase hex)."""
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def trace_of(event: Event) -> tuple[str, str] | None:
    """An event's ``$trace_id`` and ``$span_id``; None when it has neither."""
    properties = event["properties"]
    if "$trace_id" not in properties and "$span_id" not in properties:
        return None
    return properties["$trace_id"], properties["$span_id"]


def run_threads(*targets: Callable[[], None]) -> None:
    """Run each target on a thread of its own; fail with the first error one raised."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported on the test's thread
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(target)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE * 2)
        assert not thread.is_alive(), "a thread of the test did not finish"
    if errors:
        raise errors[0]


@pytest.fixture
def steps_logger(client: Client, attach: Callable[..., logging.Logger]) -> logging.Logger:
    """A logger whose PostHogHandler records every line at INFO or above as a step."""
    return attach(PostHogHandler(client=client, exception_steps_level="INFO"))


# -- steps: what an error carries of the lines before it --------------------------------------


def fail_after_long_lines(log: logging.Logger) -> None:
    """In a context, 40 lines of 3,000 characters, then a logged exception."""
    with posthog_logging.new_context():
        for i in range(40):
            log.info("%02d %s", i, "x" * 3000)
        try:
            fail()
        except ValueError:
            log.exception("failed after long lines")


class TestSteps:
    def test_lines_logged_before_an_error_are_its_steps_oldest_first(
        self, client: Client, steps_logger: logging.Logger, server: LocalServer
    ) -> None:
        """A logged exception carries the lines logged before it in its context, oldest
        first, each with its formatted message, level, logger, extras and time; lines
        below the level are not among them, and neither is the error's own line."""
        log = steps_logger
        before = time.time()
        with posthog_logging.new_context():
            log.debug("not a step: below INFO")
            log.info("cart loaded", extra={"cart_id": "c_1", "items": 3})
            log.warning("payment slow: %d ms", 900)
            try:
                fail()
            except ValueError:
                log.exception("checkout failed")
        after = time.time()

        event = one_delivered(client, server, "$exception")
        assert steps_of(event) == [
            {
                "$message": "cart loaded",
                "$level": "info",
                "$logger": log.name,
                "cart_id": "c_1",
                "items": 3,
            },
            {"$message": "payment slow: 900 ms", "$level": "warning", "$logger": log.name},
        ]
        stamps = [
            dt.datetime.fromisoformat(step["$timestamp"])
            for step in event["properties"]["$exception_steps"]
        ]
        assert all(stamp.utcoffset() == dt.timedelta(0) for stamp in stamps)
        assert before - 0.001 <= stamps[0].timestamp() <= stamps[1].timestamp() <= after + 0.001

    @pytest.mark.parametrize(("max_steps", "kept"), [(None, 20), (3, 3)])
    def test_only_the_most_recent_steps_are_kept(
        self,
        client: Client,
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        max_steps: int | None,
        kept: int,
    ) -> None:
        """After 25 lines, an error carries the last 20 (or ``exception_steps_max``), the
        oldest dropped."""
        options: dict[str, Any] = {} if max_steps is None else {"exception_steps_max": max_steps}
        log = attach(PostHogHandler(client=client, exception_steps_level="INFO", **options))
        with posthog_logging.new_context():
            for i in range(25):
                log.info("line %d", i)
            try:
                fail()
            except ValueError:
                log.exception("gave up")

        event = one_delivered(client, server, "$exception")
        assert messages_of(event) == [f"line {i}" for i in range(25 - kept, 25)]

    def test_long_messages_are_cut_and_the_steps_stay_within_32_kib(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """A step's message is cut to 1,024 characters, and long steps are dropped,
        oldest first, before ``exception_steps_max`` is reached."""
        log = attach(
            PostHogHandler(client=client, exception_steps_level="INFO", exception_steps_max=50)
        )
        fail_after_long_lines(log)

        event = one_delivered(client, server, "$exception")
        messages = messages_of(event)
        assert 20 <= len(messages) < 40
        assert all(len(message) == 1024 and message.endswith("...") for message in messages)
        assert [m[:2] for m in messages] == [f"{i:02d}" for i in range(40 - len(messages), 40)]

    def test_the_steps_sent_weigh_at_most_32_kib(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """However many steps are allowed, ``$exception_steps`` as sent is at most
        32 KiB of JSON."""
        log = attach(
            PostHogHandler(client=client, exception_steps_max=50, exception_steps_level="INFO"),
            name=f"test.{'n' * 8}",  # the same length of logger name at each run
        )
        fail_after_long_lines(log)

        event = one_delivered(client, server, "$exception")
        steps = event["properties"]["$exception_steps"]
        assert len(json.dumps(steps, separators=(",", ":"))) <= 32 * 1024

    def test_steps_of_concurrent_contexts_do_not_mix(
        self, client: Client, steps_logger: logging.Logger, server: LocalServer
    ) -> None:
        """Two requests served at the same time, each in its own context, logging in
        turns: each one's error carries its own lines only."""
        log = steps_logger
        turns = threading.Barrier(2)

        def request(user: str) -> Callable[[], None]:
            def serve() -> None:
                with posthog_logging.new_context():
                    posthog_logging.identify_context(user)
                    for i in range(3):
                        log.info("%s step %d", user, i)
                        turns.wait(PATIENCE)  # the other request logs its line meanwhile
                    try:
                        fail(f"{user} failed")
                    except ValueError:
                        log.exception("request failed")

            return serve

        run_threads(request("ann"), request("bob"))

        for user in ("ann", "bob"):
            [event] = delivered(client, server, 1, event="$exception", distinct_id=user)
            assert messages_of(event) == [f"{user} step {i}" for i in range(3)]

    def test_a_nested_context_shares_its_parents_steps_and_capturing_uses_none_up(
        self, client: Client, steps_logger: logging.Logger, server: LocalServer
    ) -> None:
        """An error in a nested context carries the lines of the contexts around it; an
        error after it, in the outer context, carries those lines again, the nested ones
        and the first error's line too."""
        log = steps_logger
        with posthog_logging.new_context():
            log.info("outer line")
            with posthog_logging.new_context():
                log.info("inner line")
                try:
                    fail("inner")
                except ValueError:
                    log.exception("inner failed")
            log.info("back in outer")
            try:
                fail("outer")
            except ValueError:
                log.exception("outer failed")

        events = by_value(delivered(client, server, 2, event="$exception"))
        assert messages_of(events["inner"]) == ["outer line", "inner line"]
        assert messages_of(events["outer"]) == [
            "outer line",
            "inner line",
            "inner failed",
            "back in outer",
        ]

    def test_a_fresh_context_starts_with_no_steps(
        self, client: Client, steps_logger: logging.Logger, server: LocalServer
    ) -> None:
        """A context opened with ``fresh=True`` inside another starts an empty trail: its
        error carries its own lines only, and the outer context does not get them."""
        log = steps_logger
        with posthog_logging.new_context():
            log.info("outer line")
            with posthog_logging.new_context(fresh=True):
                log.info("fresh line")
                try:
                    fail("fresh")
                except ValueError:
                    log.exception("fresh failed")
            try:
                fail("outer")
            except ValueError:
                log.exception("outer failed")

        events = by_value(delivered(client, server, 2, event="$exception"))
        assert messages_of(events["fresh"]) == ["fresh line"]
        assert messages_of(events["outer"]) == ["outer line"]

    def test_outside_any_context_each_thread_has_its_own_steps(
        self, client: Client, steps_logger: logging.Logger, server: LocalServer
    ) -> None:
        """Code outside any context on two threads, logging in turns: each thread's error
        carries that thread's lines only, and none of the lines it logged in a context
        that has ended."""
        log = steps_logger
        turns = threading.Barrier(2)

        def worker(name: str) -> Callable[[], None]:
            def work() -> None:
                with posthog_logging.new_context():
                    log.info("%s inside a context", name)
                for i in range(2):
                    log.info("%s outside %d", name, i)
                    turns.wait(PATIENCE)
                try:
                    fail(name)
                except ValueError:
                    log.exception("worker failed")

            return work

        run_threads(worker("first"), worker("second"))

        events = by_value(delivered(client, server, 2, event="$exception"))
        for name in ("first", "second"):
            assert messages_of(events[name]) == [f"{name} outside 0", f"{name} outside 1"]

    def test_steps_added_by_hand_are_carried_with_secrets_filtered(
        self, client: Client, steps_logger: logging.Logger, server: LocalServer
    ) -> None:
        """``add_exception_step`` records a step with its properties (a secret-looking one
        filtered), in order with logged lines; ``capture_exception()`` in the same context
        carries them. An empty message is ignored."""
        with posthog_logging.new_context():
            posthog_logging.add_exception_step(
                "opened settings", {"tab": "billing", "password": "hunter2"}
            )
            posthog_logging.add_exception_step("")
            steps_logger.info("saved")
            try:
                fail()
            except ValueError:
                client.capture_exception()

        event = one_delivered(client, server, "$exception")
        assert steps_of(event) == [
            {"$message": "opened settings", "tab": "billing", "password": "[Filtered]"},
            {"$message": "saved", "$level": "info", "$logger": steps_logger.name},
        ]
        assert "hunter2" not in json.dumps(event["properties"]["$exception_steps"])

    def test_secret_looking_extras_of_a_step_are_filtered(
        self, client: Client, steps_logger: logging.Logger, server: LocalServer
    ) -> None:
        """A line logged with a ``password`` extra is a step whose password reads
        ``[Filtered]``; the secret is nowhere in the event."""
        with posthog_logging.new_context():
            steps_logger.info("login attempt", extra={"user": "ann", "password": "hunter2"})
            try:
                fail()
            except ValueError:
                steps_logger.exception("login failed")

        event = one_delivered(client, server, "$exception")
        [step] = steps_of(event)
        assert step["user"] == "ann"
        assert step["password"] == "[Filtered]"
        assert "hunter2" not in json.dumps(event["properties"]["$exception_steps"])

    def test_an_exception_leaving_a_context_carries_its_steps(
        self,
        default_client: Client,
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """An exception that leaves ``new_context()`` is sent (unhandled) with the lines
        logged in that context."""
        log = attach(PostHogHandler(exception_steps_level="INFO"))  # the default client
        with pytest.raises(ValueError, match="bad row"), posthog_logging.new_context():
            log.info("importing batch %d", 7)
            log.info("row 12 read")
            fail("bad row")

        event = one_delivered(posthog_logging, server, "$exception")
        assert event["properties"]["$exception_list"][0]["mechanism"]["handled"] is False
        assert messages_of(event) == ["importing batch 7", "row 12 read"]

    def test_an_error_logged_without_an_exception_carries_the_steps(
        self, client: Client, steps_logger: logging.Logger, server: LocalServer
    ) -> None:
        """An error logged with no exception (sent as a synthetic one) carries the lines
        before it too."""
        with posthog_logging.new_context():
            steps_logger.info("retrying payment")
            steps_logger.error("payment %s declined", "pm_1")

        event = one_delivered(client, server, "$exception")
        assert event["properties"]["$exception_list"][0]["mechanism"]["synthetic"] is True
        assert messages_of(event) == ["retrying payment"]

    def test_structlog_entries_are_steps_too(self, client: Client, server: LocalServer) -> None:
        """With ``PostHogProcessor(exception_steps_level="info")``, structlog entries at or
        above INFO are steps of the error logged after them, with their keys."""
        log = structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[
                PostHogProcessor(client, exception_steps_level="info"),
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        ).bind(logger="shop")
        with posthog_logging.new_context():
            log.debug("not a step")
            log.info("cart loaded", cart_id="c_1")
            log.warning("stock low", sku="tea")
            try:
                fail()
            except ValueError:
                log.exception("checkout failed")

        event = one_delivered(client, server, "$exception")
        assert event["properties"]["$exception_source"] == "python.structlog"
        assert steps_of(event) == [
            {"$message": "cart loaded", "$level": "info", "$logger": "shop", "cart_id": "c_1"},
            {"$message": "stock low", "$level": "warning", "$logger": "shop", "sku": "tea"},
        ]

    @pytest.mark.parametrize("logs_level", [None, "INFO"])
    def test_without_a_steps_level_nothing_is_recorded(
        self,
        client: Client,
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        logs_level: str | None,
    ) -> None:
        """Without ``exception_steps_level`` an error carries no ``$exception_steps``,
        whether or not lines go to PostHog Logs."""
        log = attach(PostHogHandler(client=client, logs_level=logs_level))
        with posthog_logging.new_context():
            log.info("a line")
            try:
                fail()
            except ValueError:
                log.exception("failed")

        event = one_delivered(client, server, "$exception")
        assert "$exception_steps" not in event["properties"]
        if logs_level is not None:
            assert [line["body"] for line in wait_for_lines(server, 2)] == ["a line", "failed"]

    def test_steps_and_log_lines_go_together(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """With PostHog Logs on as well, the lines are shipped and are steps of the error."""
        log = attach(PostHogHandler(client=client, logs_level="INFO", exception_steps_level="INFO"))
        with posthog_logging.new_context():
            log.info("a line")
            try:
                fail()
            except ValueError:
                log.exception("failed")

        event = one_delivered(client, server, "$exception")
        assert messages_of(event) == ["a line"]
        assert [line["body"] for line in wait_for_lines(server, 2)] == ["a line", "failed"]

    def test_steps_given_as_a_property_win(
        self, client: Client, steps_logger: logging.Logger, server: LocalServer
    ) -> None:
        """An ``$exception_steps`` property given to the call is sent instead of the
        recorded steps."""
        mine = [{"$message": "from the application", "$timestamp": "2024-05-01T12:00:00+00:00"}]
        with posthog_logging.new_context():
            steps_logger.info("a recorded line")
            try:
                fail()
            except ValueError:
                client.capture_exception(properties={"$exception_steps": mine})

        event = one_delivered(client, server, "$exception")
        assert event["properties"]["$exception_steps"] == mine

    def test_behind_a_queue_handler_no_steps_are_recorded_and_none_leak(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """Behind a QueueHandler (ContextFilter stamping the records) nothing is recorded
        as a step, as documented: an error sent on the listener's thread carries no steps,
        not even a line the listener's thread handled before it, and the logging
        context's own trail is left empty."""
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        queue_handler = logging.handlers.QueueHandler(records)
        queue_handler.addFilter(ContextFilter())
        log = attach(queue_handler)
        handler = PostHogHandler(client=client, exception_steps_level="INFO")
        listener = logging.handlers.QueueListener(records, handler)
        # A record that no ContextFilter stamped: handled on the listener's thread, where
        # it is a step of that thread (outside any context there).
        records.put(
            logging.makeLogRecord(
                {"name": "listener.side", "msg": "a line of the listener's thread",
                 "levelno": logging.INFO, "levelname": "INFO"}
            )
        )  # fmt: skip
        listener.start()
        try:
            with posthog_logging.new_context():
                log.info("queued line")
                try:
                    fail("queued")
                except ValueError:
                    log.exception("queued failure")
                # handled on the listener's thread: sent once it got there
                delivered(client, server, 1, event="$exception")
                try:
                    fail("direct")
                except ValueError:
                    client.capture_exception()
        finally:
            listener.stop()
            handler.close()

        events = by_value(delivered(client, server, 2, event="$exception"))
        assert "$exception_steps" not in events["queued"]["properties"]
        assert "$exception_steps" not in events["direct"]["properties"]
        assert "handler_error" not in client.stats.dropped


# -- traces: the span an event happened in ---------------------------------------------------


def send_every_kind(log: logging.Logger, round_: str) -> None:
    """An event captured by hand, a marked log event, a logged exception, an error
    logged without one, ``capture_exception()`` and an exception leaving a context, all
    tagged ``round_``."""
    with posthog_logging.new_context():
        posthog_logging.tag("round", round_)
        posthog_logging.capture("cart_viewed")
        log.info("checkout", extra={"event": True})
        try:
            fail(f"{round_} logged")
        except ValueError:
            log.exception("logged failure")
        log.error("declined %s without an exception", round_)
        try:
            fail(f"{round_} captured")
        except ValueError:
            posthog_logging.capture_exception()
        with pytest.raises(ValueError), posthog_logging.new_context():
            fail(f"{round_} leaving")


class TestTraces:
    def test_events_and_exceptions_in_a_span_carry_its_ids_and_none_outside(
        self,
        default_client: Client,
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """Inside an active span, events captured by hand, marked log events, logged
        exceptions, errors logged without one, ``capture_exception()`` and exceptions
        leaving a context carry the span's ``$trace_id`` and ``$span_id``; the same calls
        outside any span carry neither."""
        log = attach(PostHogHandler())  # the default client
        with TRACER.start_as_current_span("checkout") as span:
            send_every_kind(log, "inside")
        send_every_kind(log, "outside")

        events = delivered(posthog_logging, server, 12)
        assert len(events) == 12
        inside = [e for e in events if e["properties"]["round"] == "inside"]
        outside = [e for e in events if e["properties"]["round"] == "outside"]
        expected = {
            "cart_viewed",
            "checkout",
            "inside logged",
            "declined inside without an exception",
            "inside captured",
            "inside leaving",
        }
        named = {e["event"] for e in inside if e["event"] != "$exception"}
        assert {*named, *by_value(inside)} == expected
        trace_id, span_id = ids_of(span)
        assert len(trace_id) == 32 and len(span_id) == 16
        assert trace_id == trace_id.lower()
        for event in inside:
            assert trace_of(event) == (trace_id, span_id), event["event"]
        assert len(outside) == 6
        for event in outside:
            assert trace_of(event) is None, event["event"]

    def test_a_trace_id_given_as_a_property_wins(
        self, client: Client, logger: logging.Logger, server: LocalServer
    ) -> None:
        """A ``$trace_id`` the application gives (as an extra) is sent instead of the
        active span's, on events and exceptions alike, and the span's ``$span_id`` is
        not paired with it."""
        with TRACER.start_as_current_span("s"):
            logger.info("linked", extra={"event": True, "$trace_id": "my-own-trace"})
            try:
                fail()
            except ValueError:
                logger.exception("failed", extra={"$trace_id": "my-own-trace"})

        events = delivered(client, server, 2)
        assert sorted(e["event"] for e in events) == ["$exception", "linked"]
        assert all(e["properties"]["$trace_id"] == "my-own-trace" for e in events)
        assert all("$span_id" not in e["properties"] for e in events)

    def test_behind_a_queue_events_carry_the_span_of_the_code_that_logged(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """With ContextFilter on the QueueHandler, events, exceptions and log lines
        handled on a listener thread that runs in a span of its own carry the span of the
        code that logged; a record logged outside any span carries none."""
        records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        queue_handler = logging.handlers.QueueHandler(records)
        queue_handler.addFilter(ContextFilter())
        log = attach(queue_handler)
        handler = PostHogHandler(client=client, logs_level="INFO")
        listener = logging.handlers.QueueListener(records, handler)
        listener_ids: list[tuple[str, str]] = []

        def listen() -> None:  # QueueListener's work, inside a span of the listener's
            with TRACER.start_as_current_span("listener") as span:
                listener_ids.append(ids_of(span))
                while (record := records.get()) is not None:
                    listener.handle(record)

        thread = threading.Thread(target=listen)
        thread.start()
        try:
            with TRACER.start_as_current_span("request") as span:
                log.info("order placed", extra={"event": True})
                try:
                    fail("queued")
                except ValueError:
                    log.exception("queued failure")
                log.error("declined without an exception")
            log.info("untraced", extra={"event": True})
        finally:
            records.put(None)
            thread.join(PATIENCE)
            handler.close()

        logged = ids_of(span)
        assert listener_ids and listener_ids[0] != logged
        events = delivered(client, server, 4)
        assert len(events) == 4
        for event in events:
            expected = None if event["event"] == "untraced" else logged
            assert trace_of(event) == expected, event["event"]
        lines = wait_for_lines(server, 4)
        for line in lines:
            expected_line = ("", "") if line["body"] == "untraced" else logged
            assert (line["trace_id"], line["span_id"]) == expected_line, line["body"]

    def test_log_lines_and_exceptions_of_one_trace_share_its_id(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """Log lines and the ``$exception`` of one trace carry the same trace id, each
        the span id of the span it was logged in; a line outside any span has none."""
        log = attach(PostHogHandler(client=client, logs_level="INFO"))
        with TRACER.start_as_current_span("request") as parent:
            log.info("request received")
            with TRACER.start_as_current_span("charge") as child:
                try:
                    fail()
                except ValueError:
                    log.exception("charge failed")
        log.info("after the request")

        trace_id, parent_span = ids_of(parent)
        child_trace, child_span = ids_of(child)
        assert child_trace == trace_id and child_span != parent_span
        event = one_delivered(client, server, "$exception")
        assert trace_of(event) == (trace_id, child_span)
        lines = {line["body"]: line for line in wait_for_lines(server, 3)}
        received, failed = lines["request received"], lines["charge failed"]
        assert (received["trace_id"], received["span_id"]) == (trace_id, parent_span)
        assert (failed["trace_id"], failed["span_id"]) == (trace_id, child_span)
        after = lines["after the request"]
        assert (after["trace_id"], after["span_id"]) == ("", "")


# -- code variables: the locals of the frames an exception went through ---------------------


@dataclasses.dataclass
class Order:
    id: int
    items: list[str]


def checkout(obj: dict[str, Any]) -> dict[str, Any]:
    """Raises holding locals of every kind; called by ``json`` (as its object hook), so
    that library frames lie between the caller and the raise site."""
    count = 3
    name = "bob"
    password = "hunter2"
    dsn = "postgresql://u:p@h/db"
    db_url = "postgresql://u:p@h/db"
    cfg = {"host": "db", "token": "abc"}
    order = Order(7, ["tea"])
    raise ValueError("checkout failed")


def frames_of(event: Event) -> list[dict[str, Any]]:
    """Every frame of every exception of an ``$exception`` event."""
    return [
        frame
        for exception in event["properties"]["$exception_list"]
        for frame in exception["stacktrace"]["frames"]
    ]


def log_checkout_failure(log: logging.Logger) -> None:
    try:
        json.loads('{"basket": 1}', object_hook=checkout)
    except ValueError:
        log.exception("checkout failed")


class TestCodeVariables:
    def test_the_raise_sites_locals_are_sent_masked_and_library_frames_have_none(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """With ``capture_exception_code_variables=True`` a logged exception's raise site
        shows its locals: numbers as numbers, text as is, secrets and URL credentials
        masked, dicts and dataclasses as JSON text; the ``json`` frames it went through
        show none."""
        client = make_client(capture_exception_code_variables=True)
        log_checkout_failure(attach(PostHogHandler(client=client)))

        event = one_delivered(client, server, "$exception")
        frames = event["properties"]["$exception_list"][0]["stacktrace"]["frames"]
        raise_site = frames[-1]
        assert (raise_site["function"], raise_site["in_app"]) == ("checkout", True)
        variables = raise_site["code_variables"]
        assert variables["count"] == 3
        assert variables["name"] == "bob"
        assert variables["password"] == REDACTED
        assert variables["dsn"] == REDACTED  # a secret-looking name: the whole value
        assert variables["db_url"] == f"postgresql://{REDACTED}@h/db"
        assert json.loads(variables["cfg"]) == {"host": "db", "token": REDACTED}
        assert json.loads(variables["order"]) == {"id": 7, "items": ["tea"], "__class__": "Order"}
        assert json.loads(variables["obj"]) == {"basket": 1}
        shown = [frame.get("code_variables") for frame in frames_of(event)]
        assert "hunter2" not in json.dumps(shown)
        library = [frame for frame in frames if not frame["in_app"]]
        assert library, "the json frames between the caller and the raise site"
        assert all(frame["module"].startswith("json") for frame in library)
        assert all("code_variables" not in frame for frame in library)

    def test_no_locals_are_sent_by_default(
        self, client: Client, logger: logging.Logger, server: LocalServer
    ) -> None:
        """Without the option, no frame carries ``code_variables``."""
        log_checkout_failure(logger)

        event = one_delivered(client, server, "$exception")
        frames = frames_of(event)
        assert frames and all("code_variables" not in frame for frame in frames)

    def test_values_are_those_at_the_time_of_the_log_call(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """A local changed after the exception was logged, before the event is built and
        sent, is sent as it was when it was logged."""
        building = threading.Event()
        release = threading.Event()

        def hold_the_sender(event: dict[str, Any]) -> dict[str, Any]:
            if event["event"] == "hold":
                building.set()
                release.wait(PATIENCE)
            return event

        client = make_client(capture_exception_code_variables=True, before_send=hold_the_sender)
        log = attach(PostHogHandler(client=client))
        client.capture("hold")
        assert building.wait(PATIENCE), "the sender did not start building"

        def fill_basket() -> None:
            basket = ["tea"]
            try:
                raise ValueError("out of stock")
            except ValueError:
                log.exception("basket failed")
            basket.append("cake")

        fill_basket()
        release.set()

        event = one_delivered(client, server, "$exception")
        [frame] = [f for f in frames_of(event) if f["function"] == "fill_basket"]
        assert json.loads(frame["code_variables"]["basket"]) == ["tea"]

    def test_the_module_switch_turns_them_on_for_the_default_client(
        self, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """``posthog_logging.capture_exception_code_variables = True`` makes the default
        client send locals."""
        posthog_logging.api_key = API_KEY
        posthog_logging.host = server.url
        posthog_logging.capture_exception_code_variables = True
        log_checkout_failure(attach(PostHogHandler()))

        event = one_delivered(posthog_logging, server, "$exception")
        raise_site = event["properties"]["$exception_list"][0]["stacktrace"]["frames"][-1]
        assert raise_site["code_variables"]["count"] == 3
        assert raise_site["code_variables"]["password"] == REDACTED

    def test_mask_patterns_given_replace_the_defaults(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """``code_variables_mask_patterns=["^secret_"]`` masks what it names and only
        that (with ``redact_keys`` emptied too): a ``password`` or a ``conn_str`` is
        then shown."""
        client = make_client(
            capture_exception_code_variables=True,
            code_variables_mask_patterns=["^secret_"],
            redact_keys=[],
        )
        log = attach(PostHogHandler(client=client))

        def reveal() -> None:
            secret_plan = "gold"
            password = "hunter2"
            conn_str = "server=db"
            raise ValueError("revealed")

        try:
            reveal()
        except ValueError:
            log.exception("failed")

        event = one_delivered(client, server, "$exception")
        [frame] = [f for f in frames_of(event) if f["function"] == "reveal"]
        assert frame["code_variables"] == {
            "conn_str": "server=db",
            "password": "hunter2",
            "secret_plan": REDACTED,
        }

    def test_a_huge_local_does_not_stop_the_event(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """A local holding five million items is sent as too long to show; the event and
        the other locals arrive."""
        client = make_client(capture_exception_code_variables=True)
        log = attach(PostHogHandler(client=client))

        def crunch() -> None:
            rows = list(range(5_000_000))
            batch = 12
            raise ValueError("crunch failed")

        try:
            crunch()
        except ValueError:
            log.exception("crunch failed")

        event = one_delivered(client, server, "$exception")
        [frame] = [f for f in frames_of(event) if f["function"] == "crunch"]
        assert frame["code_variables"] == {"batch": 12, "rows": TOO_LONG}


# -- all of it at once, within PostHog's limit -------------------------------------------------


def deep_raise(depth: int, message: str, cause: BaseException | None) -> None:
    """Recurse ``depth`` frames, each holding a local of 900 characters, then raise
    ``message`` chained from ``cause``."""
    padding = "p" * 900
    if depth == 0:
        raise ValueError(message) from cause
    deep_raise(depth - 1, message, cause)


def deep_chain(links: int, depth: int) -> ValueError:
    """An exception chained from ``links - 1`` others (``raise ... from``), each raised
    ``depth`` frames down, with a message of 8,000 characters."""
    cause: ValueError | None = None
    for link in range(links):
        try:
            deep_raise(depth, f"link {link} " + "v" * 8000, cause)
        except ValueError as exc:
            cause = exc
    assert cause is not None
    return cause


class TestSizeLimit:
    def test_locals_steps_and_a_deep_chain_still_arrive_within_the_limit(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """An exception with locals, twenty steps of 1,000 characters and a deep chain of
        long messages is sent within PostHog's limit on one event (not dropped as too
        large), with its steps and its outermost exception."""
        client = make_client(capture_exception_code_variables=True)
        log = attach(PostHogHandler(client=client, exception_steps_level="INFO"))
        with posthog_logging.new_context():
            for i in range(20):
                log.info("%02d %s", i, "s" * 997)
            error = deep_chain(32, 90)
            try:
                raise error
            except ValueError:
                log.exception("everything failed")

        event = one_delivered(client, server, "$exception", timeout=15)
        assert "too_large" not in client.stats.dropped
        assert len(json.dumps(event, separators=(",", ":"))) <= MAX_EVENT_BYTES
        messages = messages_of(event)
        assert [m[:2] for m in messages] == [f"{i:02d}" for i in range(20)]
        assert all(len(m) == 1000 for m in messages)
        outermost = event["properties"]["$exception_list"][0]
        assert outermost["value"].startswith("link 31 ")
        raise_site = outermost["stacktrace"]["frames"][-1]
        assert raise_site["function"] == "deep_raise"
        assert raise_site["code_variables"]["depth"] == 0
