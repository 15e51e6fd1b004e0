"""Tests for posthog_logging.loguru: the sink, and the patcher for ``enqueue=True``.

Everything goes through loguru's real logger and the real local server. loguru's logger
is global: an autouse fixture removes its handlers before each test and gives it back
its default one (stderr) afterwards, with no extra and a patcher that does nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import subprocess
import sys
import threading
import types
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider

import posthog_logging
import posthog_logging.loguru as loguru_sink
from posthog_logging import Client, PostHogHandler
from posthog_logging.loguru import ContextStamper, PostHogSink, stamp_context
from posthog_logging.server import LocalServer

from .conftest import API_KEY
from .forking import fork_with_threads, needs_fork, run_in_fork
from .helpers import Event, Unprintable, delivered, one_delivered, wait_for_lines

MODULE = __name__  # what loguru names the records logged here
SESSION = "01929c8e-0000-7000-8000-00000000000a"


# -- fixtures and helpers --------------------------------------------------------------


@pytest.fixture(autouse=True)
def _loguru_alone() -> Iterator[None]:
    """Each test adds its own sinks; afterwards loguru is as a fresh import leaves it."""
    logger.remove()
    yield
    logger.remove()
    logger.configure(extra={}, patcher=lambda record: None)
    logger.add(sys.stderr)


def add_sink(client: Client, level: str = "DEBUG", **options: Any) -> PostHogSink:
    """A sink on ``client``, added to loguru at ``level`` (loguru's ``add`` options such
    as ``enqueue`` are told apart from the sink's by name)."""
    add_options = {k: options.pop(k) for k in ("enqueue", "filter") if k in options}
    sink = PostHogSink(client, **options)
    logger.add(sink, level=level, **add_options)
    return sink


def own_props(event: Event) -> dict[str, Any]:
    """An event's properties without the ``$`` ones the library adds."""
    return {k: v for k, v in event["properties"].items() if not k.startswith("$")}


def events_before_sentinel(client: Client, server: LocalServer) -> list[Event]:
    """Log a marked sentinel, wait for it, and return every other stored event."""
    logger.info("sentinel", event=True)
    delivered(client, server, 1, event="sentinel")
    return [e for e in server.events() if e["event"] != "sentinel"]


def exceptions_delivered(client: Client, server: LocalServer, n: int) -> list[Event]:
    """Flush, wait for ``n`` ``$exception`` events and return them (exactly ``n``)."""
    found = delivered(client, server, n, event="$exception")
    assert len(found) == n, [e["properties"].get("log_message") for e in found]
    return found


def next_line() -> int:
    """The number of the caller's next line: where its next statement logs."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


#: The source of an application module that logs through loguru.
APP_MODULE = """\
from loguru import logger

def report(message, *args, **kwargs):
    logger.error(message, *args, **kwargs)

def mark(name, **kwargs):
    logger.info(name, event=True, **kwargs)
"""


def app_module(name: str) -> types.ModuleType:
    """A module named ``name`` whose ``report`` logs an error and ``mark`` an event, so
    that loguru names their records ``name``."""
    module = types.ModuleType(name)
    path = f"/app/{name.replace('.', '/')}.py"
    exec(compile(APP_MODULE, path, "exec"), module.__dict__)
    return module


def authorise(order: int) -> None:
    raise PermissionError(f"card declined for order {order}")


RAISE_LINE = inspect.getsourcelines(authorise)[1] + 1


def charge(order: int) -> None:
    authorise(order)


def in_span_ids(span: Any) -> tuple[str, str]:
    """The trace and span ids of an OpenTelemetry span, as PostHog receives them."""
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class Ambiguous:
    """An object whose truth value cannot be decided (like a numpy array)."""

    def __bool__(self) -> bool:
        raise ValueError("the truth value is ambiguous")


# -- events ----------------------------------------------------------------------------


class TestEvents:
    def test_marked_record_is_an_event_with_its_extras_and_context(
        self, client: Client, server: LocalServer
    ) -> None:
        """``logger.info("page_viewed", event=True, page="/")`` sends page_viewed with the
        call's keyword arguments, bind() and contextualize() values and the configured
        extra as properties, in the context's person, session and tags; the marker is not
        a property."""
        add_sink(client)
        logger.configure(extra={"service": "shop"})
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_1")
            posthog_logging.set_context_session(SESSION)
            posthog_logging.tag("plan", "pro")
            with logger.contextualize(request_id="req_7"):
                logger.bind(cart="c_1").info("page_viewed", event=True, page="/pricing")

        event = one_delivered(client, server, "page_viewed")
        assert own_props(event) == {
            "page": "/pricing",
            "cart": "c_1",
            "request_id": "req_7",
            "service": "shop",
            "plan": "pro",
        }
        assert event["distinct_id"] == "user_1"
        assert event["properties"]["$session_id"] == SESSION

    def test_string_marker_names_the_event(self, client: Client, server: LocalServer) -> None:
        """``event="signup_completed"`` names the event, whatever the message says."""
        add_sink(client)
        logger.info("user {} signed up", "ada", event="signup_completed", plan="free")

        event = one_delivered(client, server, "signup_completed")
        assert own_props(event) == {"plan": "free"}

    def test_event_is_named_after_the_template(self, client: Client, server: LocalServer) -> None:
        """A marked record whose message has arguments is named after the message as
        written, so every call makes the same event."""
        add_sink(client)
        for page in ("/", "/pricing"):
            logger.info("viewed {page}", event=True, page=page)

        found = delivered(client, server, 2, event="viewed {page}")
        assert sorted(e["properties"]["page"] for e in found) == ["/", "/pricing"]

    def test_unmarked_or_falsy_marked_records_send_nothing(
        self, client: Client, server: LocalServer
    ) -> None:
        """Records without the marker or with a falsy one, warnings included, send no
        event."""
        add_sink(client)
        logger.info("cache warmed", size=3)
        logger.info("not an event", event=False)
        logger.info("not an event either", event="")
        logger.warning("disk at {}%", 91)

        assert events_before_sentinel(client, server) == []

    def test_person_groups_and_properties_keys_mean_what_they_mean_in_capture(
        self, client: Client, server: LocalServer
    ) -> None:
        """A ``distinct_id`` extra names the person (over the context's), ``groups`` sets
        ``$groups`` and a ``properties`` dict is merged in."""
        add_sink(client)
        with posthog_logging.new_context():
            posthog_logging.identify_context("context_user")
            logger.bind(distinct_id="user_2").info(
                "invoice_paid",
                event=True,
                groups={"company": "acme"},
                properties={"amount": 12},
            )

        event = one_delivered(client, server, "invoice_paid")
        assert event["distinct_id"] == "user_2"
        assert event["properties"]["$groups"] == {"company": "acme"}
        assert own_props(event) == {"amount": 12}

    def test_custom_event_key(self, client: Client, server: LocalServer) -> None:
        """With ``event_key="track"``, ``track=True`` marks a record and ``event=True``
        marks nothing."""
        add_sink(client, event_key="track")
        logger.info("clicked", track=True, button="buy")
        logger.info("not_tracked", event=True)
        logger.info("sentinel", track=True)

        delivered(client, server, 2)
        assert sorted(e["event"] for e in server.events()) == ["clicked", "sentinel"]
        assert own_props(server.events(event="clicked")[0]) == {"button": "buy"}

    def test_events_inside_a_span_carry_its_ids(self, client: Client, server: LocalServer) -> None:
        """An event logged inside an OpenTelemetry span carries ``$trace_id`` and
        ``$span_id``; one logged outside carries neither."""
        add_sink(client)
        tracer = TracerProvider().get_tracer("test.loguru")
        with tracer.start_as_current_span("checkout") as span:
            logger.info("inside", event=True)
        logger.info("outside", event=True)

        delivered(client, server, 2)
        inside = server.events(event="inside")[0]["properties"]
        assert (inside["$trace_id"], inside["$span_id"]) == in_span_ids(span)
        outside = server.events(event="outside")[0]["properties"]
        assert "$trace_id" not in outside and "$span_id" not in outside

    def test_threads_keep_their_own_context(self, client: Client, server: LocalServer) -> None:
        """Four threads, each in its own context, logging at once: every event carries
        the person of the thread that logged it."""
        add_sink(client)
        start = threading.Barrier(4)

        def work(worker: int) -> None:
            with posthog_logging.new_context():
                posthog_logging.identify_context(f"user_{worker}")
                start.wait(5)
                for n in range(5):
                    logger.info("step_done", event=True, worker=worker, n=n)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

        found = delivered(client, server, 20, event="step_done")
        assert len(found) == 20
        assert all(e["distinct_id"] == f"user_{e['properties']['worker']}" for e in found)

    def test_asyncio_tasks_keep_their_own_context(
        self, client: Client, server: LocalServer
    ) -> None:
        """Two asyncio tasks served at once, each in its own context, logging in turns:
        every event carries the person of the task that logged it."""
        add_sink(client)

        async def serve(user: str) -> None:
            with posthog_logging.new_context():
                posthog_logging.identify_context(user)
                for n in range(3):
                    await asyncio.sleep(0)  # the other task logs meanwhile
                    logger.info("page_viewed", event=True, user=user, n=n)

        async def main() -> None:
            await asyncio.gather(serve("user_x"), serve("user_y"))

        asyncio.run(main())

        found = delivered(client, server, 6, event="page_viewed")
        assert sorted(e["distinct_id"] for e in found) == ["user_x"] * 3 + ["user_y"] * 3
        assert all(e["distinct_id"] == e["properties"]["user"] for e in found)

    def test_configured_handlers_send_too(self, client: Client, server: LocalServer) -> None:
        """``logger.configure(handlers=[{"sink": PostHogSink(), "level": "INFO"}])`` sends
        marked records at INFO; a marked DEBUG record stays below the handler's level."""
        logger.configure(handlers=[{"sink": PostHogSink(client), "level": "INFO"}])
        logger.debug("too_quiet", event=True)
        logger.info("report_exported", event=True, rows=3)

        assert [e["event"] for e in events_before_sentinel(client, server)] == ["report_exported"]

    def test_without_finding_the_logging_call_the_context_still_applies(
        self, client: Client, server: LocalServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Should loguru's logging call not be found on the stack (its internals changed),
        a record handled on the thread that logged it still carries that thread's
        context; the formatted message then stands in for the template."""
        monkeypatch.setattr(loguru_sink, "_LOG_CODE", None)
        add_sink(client)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_5")
            logger.info("viewed {page}", event=True, page="/")
            logger.error("payment failed for order {}", 1)

        found = delivered(client, server, 2)
        assert sorted(e["event"] for e in found) == ["$exception", "viewed /"]
        assert {e["distinct_id"] for e in found} == {"user_5"}
        [error] = server.events(event="$exception")
        assert error["properties"]["$exception_list"][0]["type"] == "payment failed for order 1"

    def test_the_default_client_is_used_without_one(
        self, default_client: Client, server: LocalServer
    ) -> None:
        """``PostHogSink()`` sends through the client ``posthog_logging.configure`` set up."""
        logger.add(PostHogSink(), level="INFO")
        logger.info("default_client_used", event=True)

        one_delivered(posthog_logging, server, "default_client_used")


# -- exceptions ------------------------------------------------------------------------


class TestExceptions:
    def test_logged_exception_has_the_frames_that_raised_it(
        self, client: Client, server: LocalServer
    ) -> None:
        """``logger.exception(...)`` in an ``except`` block sends an ``$exception`` with
        the real traceback (down to the line that raised), source ``python.loguru``,
        mechanism logger and handled, the message, module and level, and the extras."""
        add_sink(client)
        try:
            charge(17)
        except PermissionError:
            logger.bind(order=17).exception("charge failed for order {}", 17)

        [event] = exceptions_delivered(client, server, 1)
        props = event["properties"]
        [entry] = props["$exception_list"]
        assert (entry["type"], entry["value"]) == ("PermissionError", "card declined for order 17")
        assert entry["mechanism"] == {
            "type": "logger",
            "handled": True,
            "synthetic": False,
            "exception_id": 0,
        }
        frames = entry["stacktrace"]["frames"]
        assert [f["function"] for f in frames] == [
            "test_logged_exception_has_the_frames_that_raised_it",
            "charge",
            "authorise",
        ]
        assert frames[-1]["abs_path"] == __file__
        assert frames[-1]["lineno"] == RAISE_LINE
        assert props["$exception_source"] == "python.loguru"
        assert props["$exception_level"] == "error"
        assert props["log_message"] == "charge failed for order 17"
        assert (props["logger_name"], props["log_level"]) == (MODULE, "error")
        assert props["order"] == 17
        assert "$exception_fingerprint" not in props

    def test_exception_given_to_opt_and_caught_by_catch(
        self, client: Client, server: LocalServer
    ) -> None:
        """An exception given with ``opt(exception=...)`` and one ``logger.catch()``
        logs are each sent, with their own type; ``catch`` at CRITICAL is fatal."""
        add_sink(client)
        try:
            charge(1)
        except PermissionError as exc:
            caught = exc
        logger.opt(exception=caught).error("refund failed")

        @logger.catch(level="CRITICAL")
        def nightly_job() -> None:
            raise LookupError("no such ledger")

        nightly_job()

        found = exceptions_delivered(client, server, 2)
        by_type = {e["properties"]["$exception_list"][0]["type"]: e for e in found}
        assert set(by_type) == {"PermissionError", "LookupError"}
        assert by_type["PermissionError"]["properties"]["$exception_level"] == "error"
        job = by_type["LookupError"]["properties"]
        assert job["$exception_level"] == "fatal"
        assert job["$exception_list"][0]["stacktrace"]["frames"][-1]["function"] == "nightly_job"

    def test_one_exception_logged_twice_is_sent_once(
        self, client: Client, server: LocalServer
    ) -> None:
        """The same exception object logged again (by a caller up the stack, say) is one
        ``$exception``."""
        add_sink(client)
        try:
            charge(2)
        except PermissionError:
            logger.exception("inner handler")
            logger.exception("outer handler")

        assert [e["event"] for e in events_before_sentinel(client, server)] == ["$exception"]

    def test_exception_below_exception_level_is_not_sent(
        self, client: Client, server: LocalServer
    ) -> None:
        """An exception logged at WARNING (below the default ERROR) sends nothing; with
        ``exception_level="WARNING"`` it is sent as a warning."""
        add_sink(client)
        try:
            charge(3)
        except PermissionError:
            logger.opt(exception=True).warning("retrying")
        assert events_before_sentinel(client, server) == []

        logger.remove()
        add_sink(client, exception_level="WARNING")
        try:
            charge(4)
        except PermissionError:
            logger.opt(exception=True).warning("retrying")
        [event] = exceptions_delivered(client, server, 1)
        assert event["properties"]["$exception_level"] == "warning"

    def test_shown_by_the_feeds_as_the_standard_library_one(
        self, client: Client, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """The web view's feed lists the loguru ``$exception`` with the same fields as
        the one the logging handler sends for the same failure; only the source differs."""
        add_sink(client)
        stdlib = attach(PostHogHandler(client=client))

        def through_loguru() -> None:
            logger.exception("charge failed")

        def through_logging() -> None:
            stdlib.exception("charge failed")

        for log in (through_loguru, through_logging):
            try:
                charge(5)
            except PermissionError:
                log()

        exceptions_delivered(client, server, 2)
        with urllib.request.urlopen(f"{server.url}/api/events?event=%24exception") as answer:
            shown = json.load(answer)["events"]
        loguru_one, stdlib_one = (
            next(e for e in shown if e["properties"]["$exception_source"] == source)
            for source in ("python.loguru", "python.logging")
        )
        assert set(loguru_one["properties"]) == set(stdlib_one["properties"])
        ours, theirs = (e["properties"]["$exception_list"][0] for e in (loguru_one, stdlib_one))
        assert set(ours) == set(theirs)
        assert ours["mechanism"] == theirs["mechanism"]
        assert [set(f) for f in ours["stacktrace"]["frames"]] == [
            set(f) for f in theirs["stacktrace"]["frames"]
        ]


# -- errors without an exception -------------------------------------------------------


class TestErrorsWithoutException:
    def test_one_template_is_one_group_whatever_its_arguments(
        self, client: Client, server: LocalServer
    ) -> None:
        """``logger.error("payment failed for order {}", 1)`` then ``(…, 2)``: two
        synthetic exceptions named after the template, valued with the message, framed
        at the call, sharing one fingerprint."""
        add_sink(client)
        line = next_line()
        logger.error("payment failed for order {}", 1)
        logger.error("payment failed for order {}", 2)

        first, second = sorted(
            exceptions_delivered(client, server, 2), key=lambda e: e["properties"]["log_message"]
        )
        for event, order in ((first, 1), (second, 2)):
            props = event["properties"]
            [entry] = props["$exception_list"]
            assert entry["type"] == "payment failed for order {}"
            assert entry["value"] == f"payment failed for order {order}"
            assert entry["mechanism"]["synthetic"] is True
            [frame] = entry["stacktrace"]["frames"]
            assert (frame["abs_path"], frame["function"]) == (
                __file__,
                "test_one_template_is_one_group_whatever_its_arguments",
            )
            assert frame["lineno"] == line + order - 1
            assert props["$exception_source"] == "python.loguru"
        fingerprints = {e["properties"]["$exception_fingerprint"] for e in (first, second)}
        assert len(fingerprints) == 1

    def test_another_template_or_module_is_another_group(
        self, client: Client, server: LocalServer
    ) -> None:
        """The same template logged from another module, or another template, gets a
        fingerprint of its own."""
        add_sink(client)
        billing = app_module("shop.billing")
        billing.report("payment failed for order {}", 1)
        billing.report("refund failed for order {}", 1)
        logger.error("payment failed for order {}", 1)
        billing.report("payment failed for order {}", 99)

        events = exceptions_delivered(client, server, 4)
        fingerprint = {
            (e["properties"]["logger_name"], e["properties"]["log_message"]): e["properties"][
                "$exception_fingerprint"
            ]
            for e in events
        }
        payment = fingerprint["shop.billing", "payment failed for order 1"]
        refund = fingerprint["shop.billing", "refund failed for order 1"]
        elsewhere = fingerprint[MODULE, "payment failed for order 1"]
        assert len({payment, refund, elsewhere}) == 3
        assert fingerprint["shop.billing", "payment failed for order 99"] == payment

    def test_critical_is_fatal_and_warnings_are_not_errors(
        self, client: Client, server: LocalServer
    ) -> None:
        """CRITICAL without an exception arrives as ``fatal``; WARNING and SUCCESS send
        nothing."""
        add_sink(client)
        logger.warning("disk at {}%", 91)
        logger.success("backup done")
        logger.critical("database unreachable")

        [event] = events_before_sentinel(client, server)
        assert event["properties"]["$exception_list"][0]["type"] == "database unreachable"
        assert event["properties"]["$exception_level"] == "fatal"
        assert event["properties"]["log_level"] == "critical"

    def test_switched_off_sends_only_real_exceptions(
        self, client: Client, server: LocalServer
    ) -> None:
        """With ``capture_errors_without_exception=False`` an error without an exception
        sends nothing, a logged exception still does."""
        add_sink(client, capture_errors_without_exception=False)
        logger.error("payment failed for order {}", 1)
        try:
            charge(6)
        except PermissionError:
            logger.exception("charge failed")

        [event] = events_before_sentinel(client, server)
        assert event["properties"]["$exception_list"][0]["type"] == "PermissionError"

    def test_marked_error_is_the_event_only(self, client: Client, server: LocalServer) -> None:
        """An error record marked as an event is that event, not an ``$exception`` too."""
        add_sink(client)
        logger.error("checkout_failed", event=True, cart=3)

        [event] = events_before_sentinel(client, server)
        assert (event["event"], own_props(event)) == ("checkout_failed", {"cart": 3})


# -- log lines and steps ---------------------------------------------------------------


class TestLogLines:
    def test_lines_carry_message_level_context_and_origin(
        self, client: Client, server: LocalServer
    ) -> None:
        """With ``logs_level="SUCCESS"``: a SUCCESS record is a line with loguru's level
        name, its extras as attributes, the context's person and session, and where it
        was logged; INFO stays below it."""
        add_sink(client, logs_level="SUCCESS")
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_3")
            posthog_logging.set_context_session(SESSION)
            logger.info("cache warmed")
            line = next_line()
            logger.bind(cart="c_9").success("order {} paid", "A1")
        assert client.flush(5)

        [stored] = wait_for_lines(server, 1)
        assert stored["body"] == "order A1 paid"
        assert (stored["severity_text"], stored["severity_number"]) == ("SUCCESS", 11)
        assert (stored["distinct_id"], stored["session_id"]) == ("user_3", SESSION)
        attributes = stored["attributes"]
        assert attributes["cart"] == "c_9"
        assert attributes["logger.name"] == MODULE
        assert attributes["code.filepath"] == __file__
        assert attributes["code.lineno"] == line
        assert attributes["code.function"] == "test_lines_carry_message_level_context_and_origin"
        assert attributes["thread.id"] == threading.get_ident()

    def test_logged_exception_is_a_line_with_its_stack_trace(
        self, client: Client, server: LocalServer
    ) -> None:
        """A logged exception's line carries its type, message and stack trace."""
        add_sink(client, logs_level="INFO")
        try:
            charge(8)
        except PermissionError:
            logger.exception("charge failed")
        assert client.flush(5)

        [stored] = wait_for_lines(server, 1)
        attributes = stored["attributes"]
        assert attributes["exception.type"] == "PermissionError"
        assert attributes["exception.message"] == "card declined for order 8"
        assert "in authorise" in attributes["exception.stacktrace"]

    @pytest.mark.parametrize("stamped", [False, True], ids=["plain", "stamped"])
    def test_steps_before_an_error_travel_with_it(
        self, client: Client, server: LocalServer, stamped: bool
    ) -> None:
        """With ``exception_steps_level="INFO"`` the lines logged in the context before
        an error arrive with it as ``$exception_steps``, oldest first; also when the
        records are stamped by ``stamp_context`` without ``enqueue``."""
        add_sink(client, exception_steps_level="INFO")
        log = logger.patch(stamp_context) if stamped else logger
        with posthog_logging.new_context():
            log.debug("not a step")
            log.info("cart loaded", items=3)
            log.warning("payment slow: {} ms", 900)
            try:
                charge(9)
            except PermissionError:
                log.exception("charge failed")

        event = one_delivered(client, server, "$exception")
        steps = [
            {k: v for k, v in step.items() if k != "$timestamp"}
            for step in event["properties"]["$exception_steps"]
        ]
        assert steps == [
            {"$message": "cart loaded", "$level": "info", "$logger": MODULE, "items": 3},
            {"$message": "payment slow: 900 ms", "$level": "warning", "$logger": MODULE},
        ]


# -- enqueue=True ----------------------------------------------------------------------


class TestEnqueue:
    def test_stamped_records_carry_the_callers_context_span_and_traceback(
        self, client: Client, server: LocalServer
    ) -> None:
        """Behind ``enqueue=True`` with ``stamp_context``: two threads, each in its own
        context, log an event, an exception and an error; each arrives with the person
        of the thread that logged it, the exception with its frames, the errors grouped
        by template, and the event inside a span with the span's ids."""
        add_sink(client, level="INFO", enqueue=True, logs_level="INFO")
        log = logger.patch(stamp_context)
        tracer = TracerProvider().get_tracer("test.loguru")
        spans: dict[str, Any] = {}
        start = threading.Barrier(2)

        def work(user: str) -> None:
            with posthog_logging.new_context():
                posthog_logging.identify_context(user)
                start.wait(5)
                with tracer.start_as_current_span(user) as span:
                    spans[user] = span
                    log.info("checkout_started", event=True, user=user)
                try:
                    charge(10)
                except PermissionError:
                    log.exception("charge failed")
                log.error("payment failed for order {}", user)

        threads = [threading.Thread(target=work, args=(u,)) for u in ("user_a", "user_b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        logger.complete()

        delivered(client, server, 6)
        for user in ("user_a", "user_b"):
            mine = server.events(distinct_id=user)
            assert sorted(e["event"] for e in mine) == [
                "$exception",
                "$exception",
                "checkout_started",
            ]
            [started] = [e for e in mine if e["event"] == "checkout_started"]
            props = started["properties"]
            assert (props["$trace_id"], props["$span_id"]) == in_span_ids(spans[user])
            [raised] = [e for e in mine if e["properties"].get("log_message") == "charge failed"]
            frames = raised["properties"]["$exception_list"][0]["stacktrace"]["frames"]
            assert [f["function"] for f in frames] == ["work", "charge", "authorise"]
        synthetic = [
            e
            for e in server.events(event="$exception")
            if "$exception_fingerprint" in e["properties"]
        ]
        assert len(synthetic) == 2
        assert {e["properties"]["$exception_list"][0]["type"] for e in synthetic} == {
            "payment failed for order {}"
        }
        assert len({e["properties"]["$exception_fingerprint"] for e in synthetic}) == 1
        lines = wait_for_lines(server, 6)
        assert {(x["body"], x["distinct_id"]) for x in lines} >= {
            ("checkout_started", "user_a"),
            ("checkout_started", "user_b"),
        }
        assert {x["attributes"]["thread.name"] for x in lines} == {t.name for t in threads}

    def test_configured_patcher_and_handler(self, client: Client, server: LocalServer) -> None:
        """``logger.configure(patcher=stamp_context, handlers=[{..., "enqueue": True}])``:
        a marked record arrives as an event of the caller's context."""
        logger.configure(
            patcher=stamp_context,
            handlers=[{"sink": PostHogSink(client), "level": "INFO", "enqueue": True}],
        )
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_c")
            logger.info("report_exported", event=True, rows=3)
        logger.complete()

        event = one_delivered(client, server, "report_exported")
        assert event["distinct_id"] == "user_c"
        assert own_props(event) == {"rows": 3}

    def test_without_the_patcher_records_arrive_without_context_and_it_says_so(
        self, client: Client, server: LocalServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Behind ``enqueue=True`` without ``stamp_context``, an event still arrives, but
        without the caller's person, and the library warns once that the patcher is
        missing."""
        add_sink(client, level="INFO", enqueue=True)
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            with posthog_logging.new_context():
                posthog_logging.identify_context("user_d")
                logger.info("first", event=True)
                logger.info("second", event=True)
            logger.complete()

        found = delivered(client, server, 2)
        assert all(e["distinct_id"] == e["uuid"] for e in found)  # anonymous
        warnings = [r for r in caplog.records if "stamp_context" in r.getMessage()]
        assert len(warnings) == 1

    @needs_fork
    @fork_with_threads
    def test_records_of_a_forked_child_carry_its_context(
        self, client: Client, server: LocalServer
    ) -> None:
        """A child process made by fork logs through the parent's enqueued sink: its
        event and exception arrive with the child's person, the exception with its
        frames, sent by the parent."""
        add_sink(client, level="INFO", enqueue=True)
        logger.configure(patcher=stamp_context)

        def child() -> int:
            with posthog_logging.new_context():
                posthog_logging.identify_context("child_user")
                logger.info("child_started", event=True)
                try:
                    charge(12)
                except PermissionError:
                    logger.exception("child failed")
            logger.complete()  # handed to the parent's queue before the child ends
            return os.getpid()

        child_pid = run_in_fork(child)
        logger.complete()

        found = delivered(client, server, 2)
        assert sorted(e["event"] for e in found) == ["$exception", "child_started"]
        assert {e["distinct_id"] for e in found} == {"child_user"}
        [raised] = server.events(event="$exception")
        frames = raised["properties"]["$exception_list"][0]["stacktrace"]["frames"]
        assert [f["function"] for f in frames][-2:] == ["charge", "authorise"]
        assert child_pid != os.getpid()

    def test_queued_records_are_sent_at_exit(self, server: LocalServer) -> None:
        """A program that logs through ``enqueue=True`` and ends without
        ``logger.complete()`` or ``shutdown()`` still delivers every record it logged,
        with the caller's context (loguru imported before the library, as usual)."""
        script = """
from loguru import logger
import posthog_logging as posthog
from posthog_logging.loguru import PostHogSink, stamp_context

logger.remove()
logger.configure(patcher=stamp_context)
logger.add(PostHogSink(), level="INFO", enqueue=True)
with posthog.new_context():
    posthog.identify_context("user_exit")
    for n in range(300):
        logger.info("row_imported", event=True, n=n)
"""
        env = dict(os.environ, POSTHOG_API_KEY=API_KEY, POSTHOG_HOST=server.url)
        subprocess.run([sys.executable, "-c", script], env=env, timeout=60, check=True)

        found = server.wait_for_events(300, event="row_imported")
        assert len(found) == 300
        assert {e["distinct_id"] for e in found} == {"user_exit"}


# -- what is never sent, and never raised ----------------------------------------------


class TestNeverSentNeverRaised:
    @pytest.mark.parametrize(
        "module", ["posthog_logging.delivery", "urllib3.connectionpool", "requests", "posthog"]
    )
    def test_records_of_the_library_and_the_http_stack_are_not_sent(
        self, client: Client, server: LocalServer, module: str
    ) -> None:
        """Records logged from the library's modules or the HTTP stack's (as when the
        standard library is routed into loguru) send nothing; a module whose name only
        starts alike does."""
        add_sink(client)
        app_module(module).mark("from_http_stack")
        app_module(module).report("connection reset")
        app_module(module.split(".")[0] + "_tools").mark("from_the_app")

        assert [e["event"] for e in events_before_sentinel(client, server)] == ["from_the_app"]

    def test_awkward_values_and_markers_never_raise(
        self, client: Client, server: LocalServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A value that cannot be printed still lets its event arrive; a marker whose
        truth cannot be told is counted, not raised, in the sink and in the patcher;
        loguru reports no error of its sink."""
        add_sink(client)
        log = logger.patch(stamp_context)
        log.info("odd_values", event=True, bad=Unprintable(), fine=1)
        log.info("ambiguous", event=Ambiguous())

        event = one_delivered(client, server, "odd_values")
        assert event["properties"]["fine"] == 1
        assert isinstance(event["properties"]["bad"], str)
        assert client.stats.dropped.get("handler_error") == 1
        assert "Logging error" not in capsys.readouterr().err

    def test_a_client_that_was_shut_down_counts_and_never_raises(
        self, client: Client, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """After ``shutdown()``, marked records and logged exceptions are counted as
        dropped; the log calls return normally and loguru reports no error."""
        add_sink(client, logs_level="INFO")
        client.shutdown(timeout=2)
        logger.info("too_late", event=True)
        try:
            charge(11)
        except PermissionError:
            logger.exception("too late to send")

        assert client.stats.dropped.get("shutdown", 0) >= 3
        assert "Logging error" not in capsys.readouterr().err

    def test_the_library_warnings_routed_into_loguru_do_not_loop(
        self, client: Client, server: LocalServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With the standard library routed into loguru (its InterceptHandler recipe)
        and the sink added with ``filter={"posthog_logging": False}`` as documented, a
        warning the library says while the sink runs is shown by the other sinks, never
        sent, and makes loguru report no error."""

        class InterceptHandler(logging.Handler):
            """loguru's recipe: each record re-logged from the code that logged it."""

            def emit(self, record: logging.LogRecord) -> None:
                frame, depth = inspect.currentframe(), 0
                while frame is not None and (
                    depth == 0 or frame.f_code.co_filename == logging.__file__
                ):
                    frame, depth = frame.f_back, depth + 1
                logger.opt(depth=depth).log(record.levelname, record.getMessage())

        root = logging.getLogger()
        intercept = InterceptHandler()
        root.addHandler(intercept)
        logger.add(sys.stderr, format="{name}: {message}", level="WARNING")
        add_sink(client, filter={"posthog_logging": False})
        try:
            logger.info("", event=True)  # an empty event name: counted, and warned about
        finally:
            root.removeHandler(intercept)

        assert events_before_sentinel(client, server) == []
        assert client.stats.dropped.get("bad_event_name") == 1
        err = capsys.readouterr().err
        assert "empty event name" in err
        assert "Logging error" not in err


# -- options ---------------------------------------------------------------------------


class TestOptions:
    @pytest.mark.parametrize(
        ("option", "value", "error"),
        [
            ("event_key", "", ValueError),
            ("exception_level", "LOUD", ValueError),
            ("logs_level", "nope", ValueError),
            ("exception_steps_max", 0, ValueError),
            ("capture_errors_without_exception", "perhaps", ValueError),
        ],
    )
    def test_bad_options_are_refused_when_the_sink_is_made(
        self, option: str, value: Any, error: type[Exception]
    ) -> None:
        """A bad option fails at ``PostHogSink(...)``, naming it, not at the first record."""
        with pytest.raises(error, match=option):
            PostHogSink(**{option: value})

    def test_a_client_that_is_not_one_is_refused(self) -> None:
        """``PostHogSink("phc_key")`` (a key where the client goes) is refused."""
        with pytest.raises(TypeError, match="client"):
            PostHogSink("phc_key")  # type: ignore[arg-type]

    def test_levels_by_loguru_name_or_number(self) -> None:
        """Levels are loguru's names (TRACE, SUCCESS), the standard ones, or numbers."""
        sink = PostHogSink(logs_level="SUCCESS", exception_level=40, exception_steps_level="trace")
        assert (sink.logs_level, sink.exception_level, sink.exception_steps_level) == (25, 40, 5)
        assert ContextStamper(exception_level="CRITICAL").exception_level == 50

    def test_without_loguru_the_import_says_what_to_install(self) -> None:
        """Importing the module where loguru is not installed fails with the pip
        command that installs it."""
        script = (
            "import sys\n"
            "sys.modules['loguru'] = None  # as if it were not installed\n"
            "try:\n"
            "    import posthog_logging.loguru\n"
            "except ImportError as exc:\n"
            "    print(exc)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
        )
        assert "pip install 'posthog-logging[loguru]'" in done.stdout
