"""PostHog Logs: log records shipped as OpenTelemetry log lines (OTLP/HTTP, JSON encoding).

With ``PostHogHandler(logs_level=...)`` every record at or above that level also goes to
``POST {host}/i/v1/logs``. Everything here runs for real: the handler, the client's
sender and the package's LocalServer on loopback, which parses and stores each line.

Every logs request body a client builds during any test of this module is recorded and,
once the test is over, parsed with the official OTLP protobuf schema
(``ExportLogsServiceRequest``): a body the schema rejects fails that test.
"""

from __future__ import annotations

import contextlib
import decimal
import gzip
import json
import logging
import logging.handlers
import math
import pathlib
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import posthog_logging
from posthog_logging.client import Client
from posthog_logging.contexts import ContextState
from posthog_logging.delivery.kinds import LOGS
from posthog_logging.delivery.sender import JOIN_GRACE
from posthog_logging.otlp import LogBuilder, PendingLog
from posthog_logging.server import Fault, LocalServer
from posthog_logging.stdlib import ContextFilter, PostHogHandler

from .conftest import API_KEY, Records
from .helpers import Unprintable, stored_line, wait_for_lines
from .polling import wait_until
from .test_delivery import SendSpy, fast_backoff  # noqa: F401
from .test_spool import fast_spool_checks, segment_files, spool_dir  # noqa: F401

LOGS_PATH = "/i/v1/logs"
TWO_MB = 2 * 1024 * 1024
HEX = frozenset("0123456789abcdef")


@contextlib.contextmanager
def behind_a_queue(
    client: Client, attach: Callable[..., logging.Logger]
) -> Iterator[logging.Logger]:
    """A logger whose QueueHandler (with ContextFilter) feeds a PostHogHandler shipping
    lines on a QueueListener's thread; the listener handles what is queued on exit."""
    messages: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queue_handler = logging.handlers.QueueHandler(messages)
    queue_handler.addFilter(ContextFilter())
    log = attach(queue_handler)
    posthog_handler = PostHogHandler(client=client, logs_level="INFO")
    listener = logging.handlers.QueueListener(messages, posthog_handler)
    listener.start()
    try:
        yield log
    finally:
        listener.stop()
        posthog_handler.close()


# -- what went over the wire ----------------------------------------------------------------


def otlp_parse(body: bytes) -> ExportLogsServiceRequest:
    """``body`` read by the official schema (gunzipped first if it is gzip); raises
    ``json_format.ParseError`` on anything the schema rejects (unknown fields too)."""
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    return json_format.Parse(body.decode("utf-8"), ExportLogsServiceRequest())


class Wire:
    """Every logs request body built by the transport (before gzip), in order."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        self._request = LOGS.request

    def __call__(self, records: Any, **options: Any) -> Any:
        body, headers = self._request(records, **options)
        with self._lock:
            self.bodies.append(body)
        return body, headers

    def records(self) -> list[dict[str, Any]]:
        """Every log record sent, as JSON (a retried record appears once per attempt)."""
        with self._lock:
            bodies = list(self.bodies)
        return [
            record
            for body in bodies
            for resource_logs in json.loads(body)["resourceLogs"]
            for scope_logs in resource_logs["scopeLogs"]
            for record in scope_logs["logRecords"]
        ]


@pytest.fixture(autouse=True)
def wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Wire]:
    """Record the logs bodies of this test; afterwards each must conform to OTLP's schema.

    Set up before the clients and torn down after them: what they send while shutting
    down is checked too.
    """
    recorder = Wire()
    monkeypatch.setattr(LOGS, "request", recorder)
    yield recorder
    for n, body in enumerate(recorder.bodies):
        try:
            otlp_parse(body)
        except json_format.ParseError as exc:
            pytest.fail(f"logs body {n} is not an OTLP ExportLogsServiceRequest: {exc}")


# -- helpers --------------------------------------------------------------------------------


def shipping(
    make_client: Callable[..., Client],
    attach: Callable[..., logging.Logger],
    logs_level: int | str = "INFO",
    *,
    name: str | None = None,
    **options: Any,
) -> tuple[Client, logging.Logger]:
    """A client on the local server and a logger whose records at ``logs_level`` and up
    become log lines (as well as events and ``$exception`` events)."""
    client = make_client(**options)
    return client, attach(PostHogHandler(client=client, logs_level=logs_level), name=name)


def logs_requests(server: LocalServer) -> list[tuple[int, str | None]]:
    return [(r.status, r.fault) for r in server.requests if r.path == LOGS_PATH]


def assert_each_line_once(server: LocalServer, bodies: list[str]) -> None:
    """Exactly these lines are stored, each once (lines have no uuid to deduplicate on)."""
    stored = sorted(row["body"] for row in server.store.logs())
    assert stored == sorted(bodies)


def this_line() -> int:
    """The line number of the caller's next line."""
    return sys._getframe(1).f_lineno + 1


# -- what a line says -----------------------------------------------------------------------


class TestLineContents:
    """A record becomes a line carrying its message, level, time, context and origin."""

    def test_line_carries_message_context_and_origin(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """Inside a context: the formatted message, INFO as 9, the record's time, the
        person, session, tags and extras, the logger, file, line, function and thread,
        and the service; a DEBUG record below logs_level is not sent."""
        client = make_client(service_name="checkout")
        records = Records()
        log = attach(PostHogHandler(client=client, logs_level="INFO"), records, name="shop.orders")
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_42")
            posthog_logging.set_context_session("sess-7")
            posthog_logging.tag("plan", "pro")
            log.debug("cache miss for %s", "A1")
            line_number = this_line()
            log.info("order %s paid: %d EUR", "A1", 12, extra={"cart": {"items": 3}})
        assert client.flush(5)

        [line] = wait_for_lines(server, 1)
        created = records.records[1].created
        assert line["body"] == "order A1 paid: 12 EUR"
        assert (line["severity_number"], line["severity_text"]) == (9, "INFO")
        assert abs(line["time_unix_nano"] / 1e9 - created) < 0.001
        assert (line["distinct_id"], line["session_id"]) == ("user_42", "sess-7")
        attributes = line["attributes"]
        assert attributes["posthogDistinctId"] == "user_42"
        assert attributes["sessionId"] == "sess-7"
        assert attributes["plan"] == "pro"
        assert attributes["cart"] == {"items": 3}
        assert attributes["logger.name"] == "shop.orders"
        assert attributes["code.filepath"] == __file__
        assert attributes["code.lineno"] == line_number
        assert attributes["code.function"] == "test_line_carries_message_context_and_origin"
        assert attributes["thread.id"] == threading.get_ident()
        assert attributes["thread.name"] == threading.current_thread().name
        assert not any(key.startswith("exception.") for key in attributes)
        assert (line["trace_id"], line["span_id"]) == ("", "")
        assert line["service_name"] == "checkout"
        assert line["resource"] == {
            "service.name": "checkout",
            "telemetry.sdk.name": "posthog-logging",
            "telemetry.sdk.version": posthog_logging.__version__,
            "telemetry.sdk.language": "python",
        }
        assert client.stats.logs_sent == 1
        [request] = server.requests  # OTLP/HTTP JSON, gzipped, the key as a Bearer token
        assert (request.method, request.path, request.status) == ("POST", LOGS_PATH, 200)
        assert request.headers["content-type"] == "application/json"
        assert request.gzipped and request.headers["content-encoding"] == "gzip"
        assert request.headers["authorization"] == "[redacted]"  # present, and not logged

    def test_each_level_has_its_severity(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """DEBUG 5, INFO 9, WARNING 13, ERROR 17, CRITICAL 21, with the level's name."""
        client, log = shipping(make_client, attach, logs_level="DEBUG")
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
            log.log(level, "at %s", logging.getLevelName(level))
        log.critical("at CRITICAL")
        assert client.flush(5)
        lines = wait_for_lines(server, 5)
        assert [(x["body"], x["severity_number"], x["severity_text"]) for x in lines] == [
            ("at DEBUG", 5, "DEBUG"),
            ("at INFO", 9, "INFO"),
            ("at WARNING", 13, "WARNING"),
            ("at ERROR", 17, "ERROR"),
            ("at CRITICAL", 21, "CRITICAL"),
        ]

    @pytest.mark.parametrize("logs_level", ["WARNING", logging.WARNING])
    def test_records_below_logs_level_are_not_sent(
        self,
        logs_level: int | str,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """logs_level as a name or a number: lower records are not lines, the rest are."""
        client, log = shipping(make_client, attach, logs_level=logs_level)
        log.debug("debug")
        log.info("info")
        log.warning("warning")
        log.error("error")
        assert client.flush(5)
        wait_for_lines(server, 2)
        assert client.flush(5)
        assert [line["body"] for line in server.store.logs()] == ["warning", "error"]
        assert client.stats.logs_sent == 2

    def test_no_lines_without_logs_level(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """A handler without logs_level sends events only, never a line."""
        client = make_client()
        log = attach(PostHogHandler(client=client))
        log.error("plain error")
        log.info("signup", extra={"event": True})
        server.wait_for_events(1)
        assert client.flush(5)
        assert server.store.logs() == []
        assert all(r.path != LOGS_PATH for r in server.requests)

    def test_outside_a_context_a_line_has_no_person(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """Without an identified context, no posthogDistinctId or sessionId is made up."""
        client, log = shipping(make_client, attach)
        log.info("anonymous")
        assert client.flush(5)
        [line] = wait_for_lines(server, 1)
        assert (line["distinct_id"], line["session_id"]) == (None, None)
        assert "posthogDistinctId" not in line["attributes"]
        assert "sessionId" not in line["attributes"]

    def test_explicit_distinct_id_overrides_the_context(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """A distinct_id extra links the line to that person, as it would an event."""
        client, log = shipping(make_client, attach)
        with posthog_logging.new_context():
            posthog_logging.identify_context("context_user")
            log.info("on behalf of someone", extra={"distinct_id": "explicit_user"})
            log.info("as the context")
        assert client.flush(5)
        wait_for_lines(server, 2)
        assert stored_line(server, "on behalf of someone")["distinct_id"] == "explicit_user"
        assert stored_line(server, "as the context")["distinct_id"] == "context_user"
        assert [x["body"] for x in server.store.logs(distinct_id="explicit_user")] == [
            "on behalf of someone"
        ]

    def test_empty_distinct_id_extra_keeps_the_context_person(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """An empty distinct_id extra counts as not given, for the line as for the event:
        both belong to the context's person."""
        client, log = shipping(make_client, attach)
        with posthog_logging.new_context():
            posthog_logging.identify_context("context_user")
            log.info("checkout", extra={"event": True, "distinct_id": ""})
        [event] = server.wait_for_events(1)
        assert client.flush(5)
        [line] = wait_for_lines(server, 1)
        assert event["distinct_id"] == "context_user"
        assert line["distinct_id"] == "context_user"

    def test_default_service_name_from_otel_service_name(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without service_name=, $OTEL_SERVICE_NAME names the service."""
        monkeypatch.setenv("OTEL_SERVICE_NAME", "billing")
        client, log = shipping(make_client, attach)
        log.info("hello")
        assert client.flush(5)
        [line] = wait_for_lines(server, 1)
        assert line["service_name"] == line["resource"]["service.name"] == "billing"

    def test_default_service_name_is_the_program(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without service_name= or $OTEL_SERVICE_NAME, `python worker.py` is "worker"."""
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        monkeypatch.setattr(sys, "argv", ["/srv/shop/worker.py", "--queue", "emails"])
        client, log = shipping(make_client, attach)
        log.info("hello")
        assert client.flush(5)
        [line] = wait_for_lines(server, 1)
        assert line["service_name"] == "worker"

    def test_events_and_exceptions_arrive_alongside_lines(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """A marked INFO record is an event and a line; a logged exception is an
        $exception event and a line; a marked DEBUG record is an event only."""
        client, log = shipping(make_client, attach)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_9")
            log.info("user signed up", extra={"event": "signup", "plan": "pro"})
            log.debug("tour_started", extra={"event": True})
            try:
                {}["missing"]
            except KeyError:
                log.exception("lookup failed")
        server.wait_for_events(3)
        assert client.flush(5)
        wait_for_lines(server, 2)

        [signup] = server.events(event="signup")
        assert signup["distinct_id"] == "user_9"
        assert signup["properties"]["plan"] == "pro"
        assert len(server.events(event="tour_started")) == 1
        [error] = server.events(event="$exception")
        assert error["properties"]["$exception_list"][0]["type"] == "KeyError"

        assert [line["body"] for line in server.store.logs()] == [
            "user signed up",
            "lookup failed",
        ]
        signup_line = stored_line(server, "user signed up")
        assert signup_line["attributes"]["plan"] == "pro"
        assert signup_line["distinct_id"] == "user_9"
        error_line = stored_line(server, "lookup failed")
        assert error_line["attributes"]["exception.type"] == "KeyError"
        stats = client.stats
        assert (stats.sent, stats.logs_sent, stats.failed, stats.dropped_total) == (5, 2, 0, 0)

    def test_behind_a_queue_handler_the_caller_context_is_kept(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """With ContextFilter on the QueueHandler, the PostHogHandler on the listener's
        thread still sends the caller's person, tags, span, extras, thread and exception,
        and the message without the traceback QueueHandler appends."""
        client = make_client()
        span = SpanContext(
            trace_id=TRACE_ID, span_id=SPAN_ID, is_remote=False, trace_flags=TraceFlags(1)
        )
        with (
            behind_a_queue(client, attach) as log,
            posthog_logging.new_context(),
            trace.use_span(NonRecordingSpan(span)),
        ):
            posthog_logging.identify_context("queued_user")
            posthog_logging.tag("region", "eu")
            log.info("cart has %d items", 3, extra={"cart_id": "c_17"})
            try:
                divide_by_zero()
            except ZeroDivisionError:
                log.exception("could not %s", "divide")
        assert client.flush(5)
        wait_for_lines(server, 2)

        for line in server.store.logs():
            assert line["distinct_id"] == "queued_user"
            assert line["attributes"]["region"] == "eu"
            assert (line["trace_id"], line["span_id"]) == (f"{TRACE_ID:032x}", f"{SPAN_ID:016x}")
            assert line["attributes"]["thread.id"] == threading.get_ident()
            assert line["attributes"]["code.filepath"] == __file__
        assert stored_line(server, "cart has 3 items")["attributes"]["cart_id"] == "c_17"
        error = stored_line(server, "could not divide")  # no traceback in the body
        assert error["attributes"]["exception.type"] == "ZeroDivisionError"
        assert "in divide_by_zero" in error["attributes"]["exception.stacktrace"]

    def test_behind_a_queue_an_exception_below_exception_level_reaches_its_line(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """A warning logged with its exception behind a queue gives a line carrying the
        exception's attributes and the message alone, and no $exception event, as
        without a queue."""
        client = make_client()
        with behind_a_queue(client, attach) as log:
            try:
                {}["missing"]
            except KeyError:
                log.warning("cache miss, computing again", exc_info=True)
        assert client.flush(5)
        [line] = wait_for_lines(server, 1)
        assert line["body"] == "cache miss, computing again"
        assert line["attributes"]["exception.type"] == "KeyError"
        assert "Traceback" in line["attributes"]["exception.stacktrace"]
        assert server.events() == []

    def test_the_library_own_records_never_become_lines(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """On the root logger at DEBUG, neither the client's warnings nor the HTTP stack's
        debug records are shipped: only the application's lines, no feedback loop."""
        client = make_client(max_retries=0)
        root = logging.getLogger()
        handler = PostHogHandler(client=client, logs_level="DEBUG")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)  # urllib3 logs each connection at DEBUG
        try:
            server.inject(Fault(status=400))  # refused: the client logs a warning
            logging.getLogger("app").info("refused line")
            wait_until(lambda: client.stats.failed == 1, what="the refusal")
            logging.getLogger("app").info("delivered line")
            wait_for_lines(server, 1)
            assert client.flush(5)
            assert client.flush(5)  # anything the last request made is sent by now
        finally:
            root.removeHandler(handler)
        assert [line["body"] for line in server.store.logs()] == ["delivered line"]
        assert len(logs_requests(server)) == 2


# -- exceptions -----------------------------------------------------------------------------


class PaymentDeclined(Exception):
    """An application's own error: its type is sent qualified by its module."""


def divide_by_zero() -> float:
    return 1 / 0


def charge_card() -> None:
    try:
        divide_by_zero()
    except ZeroDivisionError as exc:
        raise PaymentDeclined("card declined") from exc


def refund() -> None:
    try:
        divide_by_zero()
    except ZeroDivisionError:
        raise KeyError("refund_id") from None


class TestExceptionLines:
    """A logged exception's line carries its type, message and Python's traceback text."""

    def test_builtin_exception(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """A builtin is named without "builtins."; the message is the record's, not the
        traceback; the stack trace names the function that raised."""
        client, log = shipping(make_client, attach)
        try:
            divide_by_zero()
        except ZeroDivisionError:
            log.exception("could not compute %s", "ratio")
        assert client.flush(5)
        [line] = wait_for_lines(server, 1)
        assert line["body"] == "could not compute ratio"
        assert (line["severity_number"], line["severity_text"]) == (17, "ERROR")
        attributes = line["attributes"]
        assert attributes["exception.type"] == "ZeroDivisionError"
        assert attributes["exception.message"] == "division by zero"
        stacktrace = attributes["exception.stacktrace"]
        assert stacktrace.startswith("Traceback (most recent call last):\n")
        assert f'File "{__file__}"' in stacktrace
        assert "in divide_by_zero" in stacktrace
        assert "return 1 / 0" in stacktrace  # the source line, as Python prints it
        assert stacktrace.rstrip().endswith("ZeroDivisionError: division by zero")

    def test_chained_cause_and_qualified_type(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """An application error raised from another: its module-qualified type and
        message, and the stack trace with the cause first, "direct cause", then it."""
        client, log = shipping(make_client, attach)
        try:
            charge_card()
        except PaymentDeclined:
            log.exception("payment failed")
        assert client.flush(5)
        [line] = wait_for_lines(server, 1)
        attributes = line["attributes"]
        assert attributes["exception.type"] == f"{__name__}.PaymentDeclined"
        assert attributes["exception.message"] == "card declined"
        stacktrace = attributes["exception.stacktrace"]
        cause = stacktrace.index("ZeroDivisionError: division by zero")
        link = stacktrace.index(
            "The above exception was the direct cause of the following exception:"
        )
        error = stacktrace.index(f"{__name__}.PaymentDeclined: card declined")
        assert stacktrace.index("in divide_by_zero") < cause < link < error
        # charge_card is in both tracebacks: where it called, then where it raised
        assert stacktrace.index("in charge_card") < cause
        assert link < stacktrace.rindex("in charge_card") < error
        assert stacktrace.count("Traceback (most recent call last):") == 2

    def test_suppressed_context_is_not_shown(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """``raise ... from None`` hides the exception being handled, as Python does."""
        client, log = shipping(make_client, attach)
        try:
            refund()
        except KeyError:
            log.exception("refund failed")
        assert client.flush(5)
        [line] = wait_for_lines(server, 1)
        attributes = line["attributes"]
        assert attributes["exception.type"] == "KeyError"
        assert attributes["exception.message"] == "'refund_id'"
        assert "ZeroDivisionError" not in attributes["exception.stacktrace"]
        assert "in refund" in attributes["exception.stacktrace"]


# -- trace context --------------------------------------------------------------------------

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0x00F067AA0BA902B7  # leading zeros: the hex must keep them


class TestTraceContext:
    """Lines logged inside an active OpenTelemetry span carry its trace and span ids."""

    def test_ids_inside_the_span_only(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        wire: Wire,
    ) -> None:
        """32 and 16 lowercase hex digits and the sampled flag inside; none outside."""
        client, log = shipping(make_client, attach)
        context = SpanContext(
            trace_id=TRACE_ID, span_id=SPAN_ID, is_remote=False, trace_flags=TraceFlags(1)
        )
        with trace.use_span(NonRecordingSpan(context), end_on_exit=False):
            log.info("inside the span")
        log.info("outside the span")
        assert client.flush(5)
        wait_for_lines(server, 2)

        inside = stored_line(server, "inside the span")
        assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert inside["span_id"] == "00f067aa0ba902b7"
        outside = stored_line(server, "outside the span")
        assert (outside["trace_id"], outside["span_id"]) == ("", "")

        sent = {r["body"]["stringValue"]: r for r in wire.records()}
        ids = sent["inside the span"]
        assert (ids["traceId"], ids["spanId"], ids["flags"]) == (
            "0af7651916cd43dd8448eb211c80319c",
            "00f067aa0ba902b7",
            1,
        )
        assert set(ids["traceId"]) <= HEX and set(ids["spanId"]) <= HEX
        assert not {"traceId", "spanId", "flags"} & set(sent["outside the span"])

    def test_an_invalid_span_gives_no_ids(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """The all-zero span OpenTelemetry uses for "no span" is not an id."""
        client, log = shipping(make_client, attach)
        with trace.use_span(trace.INVALID_SPAN, end_on_exit=False):
            log.info("no real span")
        assert client.flush(5)
        [line] = wait_for_lines(server, 1)
        assert (line["trace_id"], line["span_id"]) == ("", "")


# -- conformance ----------------------------------------------------------------------------


AWKWARD_EXTRAS: dict[str, Any] = {
    "nested": {"a": {"b": [1, {"c": None}, ("t", 2.5)]}, "empty": {}, "list": []},
    "huge": 2**70,
    "huge_negative": -(2**70),
    "past_int64": 2**63,
    "int64_min": -(2**63),
    "nan": math.nan,
    "inf": math.inf,
    "minus_inf": -math.inf,
    "nothing": None,
    "raw": b"\x00\xff bytes",
    "buffer": bytearray(b"abc"),
    "unprintable": Unprintable(),
    "decimal": decimal.Decimal("1.10"),
    "when": time.gmtime(0),
    "a_set": {3, 1, 2},
    "flag": True,
    "ключ": "значение ✓ 🚀",
    "control": "tab\tnul\x00esc\x1b",
    "surrogate": "lone \ud800 half",
    "id": uuid.UUID(int=1),
}


class TestConformance:
    """What the client sends is an ExportLogsServiceRequest by the official schema, and
    the local server reads it back, whatever the application logs."""

    def test_awkward_values_conform_and_arrive(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        wire: Wire,
    ) -> None:
        """Non-ASCII, very long messages, nested extras, huge ints, NaN/inf, None, bytes,
        failing __str__, bad %-args: every body parses, every line is stored."""
        client, log = shipping(make_client, attach, name="app.ünïcode")
        with posthog_logging.new_context():
            posthog_logging.identify_context("usér ✓")
            posthog_logging.tag("weird tag", [math.nan, 2**80, None])
            log.info("注文 %s — café ✓ 🚀", "№1", extra=AWKWARD_EXTRAS)
            log.warning("x" * 200_000)
            log.info(Unprintable())
            log.info("%d items", "not a number")
            log.info("lone \ud800 surrogate in the message")
        assert client.flush(5)
        lines = wait_for_lines(server, 5)
        assert len(wire.records()) == 5
        for body in wire.bodies:
            request = otlp_parse(body)  # the official schema accepts it
            for record in request.resource_logs[0].scope_logs[0].log_records:
                assert record.time_unix_nano > 0
        assert client.stats.logs_sent == 5
        assert client.stats.dropped_total == 0

        first = lines[0]
        assert first["body"] == "注文 №1 — café ✓ 🚀"
        assert first["distinct_id"] == "usér ✓"
        attributes = first["attributes"]
        assert attributes["logger.name"] == "app.ünïcode"
        assert attributes["nested"] == {
            "a": {"b": [1, {"c": None}, ["t", 2.5]]},
            "empty": {},
            "list": [],
        }
        assert attributes["huge"] == str(2**70)  # past 64 bits: text, not a lossy number
        assert attributes["huge_negative"] == str(-(2**70))
        assert attributes["past_int64"] == str(2**63)
        assert attributes["int64_min"] == -(2**63)
        assert (attributes["nan"], attributes["inf"], attributes["minus_inf"]) == (
            "NaN",
            "Infinity",
            "-Infinity",
        )
        assert "nothing" in attributes and attributes["nothing"] is None
        assert isinstance(attributes["raw"], str) and isinstance(attributes["buffer"], str)
        assert isinstance(attributes["unprintable"], str)
        assert attributes["a_set"] == [1, 2, 3]
        assert attributes["flag"] is True
        assert attributes["ключ"] == "значение ✓ 🚀"
        assert attributes["control"] == "tab\tnul\x00esc\x1b"
        assert attributes["weird tag"] == ["NaN", str(2**80), None]

        long_line = lines[1]["body"]
        assert long_line.startswith("x" * 1000) and len(long_line) < 70_000
        assert isinstance(lines[2]["body"], str)  # the object could not say what it is
        assert lines[3]["body"] == "%d items"  # bad %-args: the template, not a lost line

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=100)
    @given(
        body=st.text(),
        levelno=st.integers(0, 60),
        attributes=st.dictionaries(
            st.text(max_size=12),
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers(-(2**80), 2**80)
                | st.floats()
                | st.text()
                | st.binary(max_size=16),
                lambda children: (
                    st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=6), children, max_size=4)
                ),
                max_leaves=12,
            ),
            max_size=6,
        ),
        distinct_id=st.none() | st.text(min_size=1, max_size=20),
    )
    def test_any_line_conforms(
        self,
        server: LocalServer,
        body: str,
        levelno: int,
        attributes: dict[str, Any],
        distinct_id: str | None,
    ) -> None:
        """Any message, level and attribute values: the official schema parses the body
        and the local server accepts it, with the severity and body as sent."""
        pending = PendingLog(
            time=time.time(),
            levelno=levelno,
            level_name=logging.getLevelName(levelno),
            body=body,
            attributes=attributes,
            logger_name="fuzz",
            context=ContextState(distinct_id=distinct_id, tags={"t": attributes}),
            code=(__file__, 1, "fuzz"),
            thread=(1, "MainThread"),
        )
        data, _ = LOGS.request(
            [LogBuilder().build(pending)], api_key=API_KEY, service_name="fuzz-service"
        )
        [record] = otlp_parse(data).resource_logs[0].scope_logs[0].log_records
        assert 1 <= record.severity_number <= 24
        answer = post_logs(server, data)
        assert answer.status_code == 200, answer.text
        line = server.store.logs(1)[0]
        assert line["severity_number"] == record.severity_number
        assert line["body"] == record.body.string_value


# -- delivery through faults ----------------------------------------------------------------


@pytest.mark.usefixtures("fast_backoff")
class TestDelivery:
    """Lines share the events' sender: retries, splitting, outages, deadlines, spool."""

    def test_429_retry_after_is_waited_then_each_line_stored_once(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """429 with Retry-After: 1: the batch is sent again after about a second, the
        same lines, and every line is stored once."""
        client, log = shipping(make_client, attach, max_retries=3, flush_at=5, flush_interval=5)
        spy = SendSpy(client, monkeypatch)
        server.inject(Fault(status=429, headers={"Retry-After": "1"}))
        bodies = [f"over quota {i}" for i in range(5)]
        for body in bodies:
            log.info(body)
        wait_for_lines(server, 5)
        assert client.flush(5)

        refused, retry = spy.attempts
        assert refused.result.status == 429 and refused.result.retry_after == 1.0
        assert retry.result.ok and retry.events == refused.events
        assert 1.0 - 0.05 <= retry.start - refused.end < 5.0
        assert logs_requests(server) == [(429, "status"), (200, None)]
        assert_each_line_once(server, bodies)
        stats = client.stats
        assert (stats.logs_sent, stats.retried, stats.failed, stats.dropped_total) == (5, 1, 0, 0)

    def test_503_several_times_then_success(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """Three 503s in a row are retried with backoff; the lines arrive once."""
        client, log = shipping(make_client, attach, max_retries=5, flush_at=3, flush_interval=5)
        server.inject(Fault(status=503), times=3)
        bodies = ["a", "b", "c"]
        for body in bodies:
            log.warning(body)
        wait_for_lines(server, 3)
        assert client.flush(5)
        assert logs_requests(server) == [(503, "status")] * 3 + [(200, None)]
        assert_each_line_once(server, bodies)
        assert (client.stats.logs_sent, client.stats.retried) == (3, 3)

    def test_413_splits_a_batch_of_lines(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A batch of 8 lines refused as too large is sent again as two halves."""
        client, log = shipping(make_client, attach, flush_at=8, flush_interval=5)
        spy = SendSpy(client, monkeypatch)
        server.inject(Fault(status=413))
        bodies = [f"line {i}" for i in range(8)]
        for body in bodies:
            log.info(body)
        wait_for_lines(server, 8)
        assert client.flush(5)
        assert [len(a.events) for a in spy.attempts] == [8, 4, 4]
        assert logs_requests(server) == [(413, "status"), (200, None), (200, None)]
        assert_each_line_once(server, bodies)
        stats = client.stats
        assert (stats.logs_sent, stats.failed, stats.dropped_total) == (8, 0, 0)

    def test_413_for_a_single_line_drops_it(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """A line over PostHog's 2 MB on its own is refused 413 and dropped as too_large;
        the lines around it still arrive."""
        client, log = shipping(make_client, attach, flush_at=1)
        fat = {f"blob_{i}": f"{i}" * 60_000 for i in range(40)}  # ~2.4 MB of attributes
        log.info("before")
        wait_for_lines(server, 1)
        log.info("too big", extra=fat)
        log.info("after")
        wait_for_lines(server, 2)
        assert client.flush(5)
        assert [line["body"] for line in server.store.logs()] == ["before", "after"]
        assert [status for status, _ in logs_requests(server)] == [200, 413, 200]
        stats = client.stats
        assert dict(stats.dropped) == {"too_large": 1}
        assert (stats.logs_sent, stats.failed, stats.pending) == (2, 0, 0)

    def test_server_down_then_up(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """Lines logged while the server is off its port arrive once when it is back."""
        client, log = shipping(make_client, attach, max_retries=20)
        server.down()
        bodies = [f"during the outage {i}" for i in range(3)]
        for body in bodies:
            log.error(body)
        wait_until(lambda: client.stats.retried >= 1, what="a refused attempt")
        server.up()
        wait_for_lines(server, 3)
        assert client.flush(5)
        assert_each_line_once(server, bodies)
        assert client.stats.logs_sent == 3 and client.stats.dropped_total == 0

    def test_shutdown_deadline_while_the_server_is_down(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """shutdown(timeout=1) returns within its deadline and counts the lines it could
        not send as dropped (shutdown_timeout), not as sent or failed."""
        client, log = shipping(make_client, attach, max_retries=1000)
        server.down()
        for i in range(4):
            log.info("never delivered %d", i)
        wait_until(lambda: client.stats.retried >= 1, what="a refused attempt")
        started = time.monotonic()
        assert client.shutdown(timeout=1.0) is False
        assert time.monotonic() - started < 1.0 + JOIN_GRACE + 0.25
        stats = client.stats
        assert dict(stats.dropped) == {"shutdown_timeout": 4}
        assert (stats.sent, stats.logs_sent, stats.failed, stats.pending) == (0, 0, 0, 0)
        server.up()
        log.info("after shutdown")  # dropped as "shutdown", never sent
        assert client.stats.dropped["shutdown"] == 1
        assert server.store.logs() == []

    @pytest.mark.usefixtures("fast_spool_checks")
    def test_spooled_lines_arrive_once_after_a_restart(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        spool_dir: pathlib.Path,  # noqa: F811
    ) -> None:
        """Lines (and an event) logged during an outage go to the spool; a new client on
        the same spool (the process restarted) sends them, each once, and empties it."""
        server.down()
        first, log = shipping(
            make_client, attach, spool_dir=spool_dir, max_retries=0, flush_at=10_000
        )
        bodies = [f"spooled {i}" for i in range(20)]
        for body in bodies:
            log.info(body)
        log.info("signed up", extra={"event": "signup"})
        first.shutdown(timeout=5)
        stats = first.stats
        assert (stats.spooled, stats.sent, stats.failed, dict(stats.dropped)) == (22, 0, 0, {})
        assert segment_files(spool_dir)

        server.up()
        second = make_client(spool_dir=spool_dir)
        server.wait_for_events(1, event="signup")
        wait_for_lines(server, 21)
        assert second.flush(5)
        wait_until(lambda: not segment_files(spool_dir), what="the spool to be emptied")
        assert_each_line_once(server, [*bodies, "signed up"])
        assert len(server.events()) == 1
        stats = second.stats
        assert (stats.replayed, stats.sent, stats.logs_sent) == (22, 22, 21)
        assert all(status == 200 for status, _ in logs_requests(server))


# -- the local server's strictness ----------------------------------------------------------


def post_logs(
    server: LocalServer,
    data: bytes,
    *,
    authorization: str | None = f"Bearer {API_KEY}",
    content_type: str = "application/json",
    gzipped: bool = False,
) -> requests.Response:
    headers = {"Content-Type": content_type}
    if authorization is not None:
        headers["Authorization"] = authorization
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        data = gzip.compress(data)
    return requests.post(server.url + LOGS_PATH, data=data, headers=headers, timeout=10)


def export(*records: dict[str, Any]) -> dict[str, Any]:
    """An ExportLogsServiceRequest carrying ``records``, as plain JSON data."""
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]}
    return {
        "resourceLogs": [
            {"resource": resource, "scopeLogs": [{"scope": {}, "logRecords": list(records)}]}
        ]
    }


def log_record(**fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "timeUnixNano": str(time.time_ns()),
        "severityNumber": 9,
        "severityText": "INFO",
        "body": {"stringValue": "hello"},
        "attributes": [{"key": "posthogDistinctId", "value": {"stringValue": "u1"}}],
    }
    record.update(fields)
    return record


def encoded(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


MALFORMED: dict[str, dict[str, Any]] = {
    "severity over 24": log_record(severityNumber=99),
    "negative severity": log_record(severityNumber=-1),
    "severity as a float": log_record(severityNumber=9.5),
    "traceId of 31 digits": log_record(traceId="0" * 31),
    "traceId of 33 digits": log_record(traceId="1" * 33),
    "traceId not hex": log_record(traceId="z" * 32),
    "spanId of 15 digits": log_record(spanId="1" * 15),
    "attributes not a list": log_record(attributes={"a": {"stringValue": "x"}}),
    "attribute without a key": log_record(attributes=[{"value": {"stringValue": "x"}}]),
    "value with two fields": log_record(body={"stringValue": "x", "intValue": "1"}),
    "intValue not a number": log_record(body={"intValue": "many"}),
    "negative time": log_record(timeUnixNano="-5"),
}


class TestServerStrictness:
    """The local server's /i/v1/logs refuses what PostHog would, and stores none of it."""

    def test_a_valid_export_is_stored(self, server: LocalServer) -> None:
        """200 with ``{}``, the line stored with its person and service."""
        answer = post_logs(server, encoded(export(log_record())))
        assert (answer.status_code, answer.json()) == (200, {})
        [line] = server.store.logs()
        assert (line["body"], line["distinct_id"], line["service_name"]) == ("hello", "u1", "svc")

    @pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwYXNz", "Bearer ", API_KEY])
    def test_401_without_a_bearer_key(self, server: LocalServer, authorization: str | None) -> None:
        """No Authorization header, another scheme, an empty key, a bare key: 401."""
        answer = post_logs(server, encoded(export(log_record())), authorization=authorization)
        assert answer.status_code == 401
        assert server.store.logs() == []

    def test_415_for_protobuf(self, server: LocalServer) -> None:
        """OTLP's protobuf encoding is not served: 415, asking for JSON."""
        message = json_format.ParseDict(export(log_record()), ExportLogsServiceRequest())
        answer = post_logs(
            server, message.SerializeToString(), content_type="application/x-protobuf"
        )
        assert answer.status_code == 415
        assert "application/json" in answer.json()["detail"]
        assert server.store.logs() == []

    @pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzipped"])
    def test_413_over_2_mb(self, server: LocalServer, gzipped: bool) -> None:
        """A body over 2 MB, as sent or once gunzipped, is refused 413."""
        big = log_record(body={"stringValue": "y" * (TWO_MB + 1000)})
        answer = post_logs(server, encoded(export(big)), gzipped=gzipped)
        assert answer.status_code == 413
        assert server.store.logs() == []

    def test_just_under_2_mb_is_accepted(self, server: LocalServer) -> None:
        """The limit is 2 MB: a body a little under it is stored."""
        big = log_record(body={"stringValue": "y" * (TWO_MB - 2000)})
        data = encoded(export(big))
        assert len(data) < TWO_MB
        assert post_logs(server, data).status_code == 200
        assert len(server.store.logs()) == 1

    @pytest.mark.parametrize("case", list(MALFORMED))
    def test_400_for_a_malformed_record(self, server: LocalServer, case: str) -> None:
        """A record OTLP would not read is 400, and the valid record beside it is not
        stored either: a request is stored whole or not at all."""
        payload = export(log_record(body={"stringValue": "valid"}), MALFORMED[case])
        answer = post_logs(server, encoded(payload))
        assert answer.status_code == 400
        assert answer.json()["code"] == "invalid_payload"
        assert server.store.logs() == []

    @pytest.mark.parametrize(
        "data",
        [
            b"not json",
            b"[]",
            b'{"resourceLogs": {}}',
            b'{"resourceLogs": [{"scopeLogs": 1}]}',
            b'{"resourceLogs": NaN}',
            b'{"resourceLogs": [], "x": "\\ud800"}',
            b'{"resourceLogs": []}\xff',
        ],
        ids=[
            "not json",
            "a list",
            "resourceLogs not a list",
            "scopeLogs not a list",
            "NaN",
            "a lone surrogate",
            "not UTF-8",
        ],
    )
    def test_400_for_a_body_that_is_not_an_export(self, server: LocalServer, data: bytes) -> None:
        """A body that is not an ExportLogsServiceRequest in JSON is 400."""
        assert post_logs(server, data).status_code == 400
        assert server.store.logs() == []

    @pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1.5"])
    def test_doubles_in_proto3_string_form_are_accepted(
        self, server: LocalServer, value: str
    ) -> None:
        """What the official schema accepts as a double, the server stores."""
        data = encoded(export(log_record(body={"doubleValue": value})))
        otlp_parse(data)  # valid by the official schema
        assert post_logs(server, data).status_code == 200


# -- size -----------------------------------------------------------------------------------


class TestSize:
    """Many lines go out in several requests, each within PostHog's 2 MB."""

    def test_3000_lines_of_1_kb(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        wire: Wire,
    ) -> None:
        """About 4 MB of lines, with no count limit on a batch: several requests, none
        over 2 MB before gzip, none refused, every line stored once."""
        client, log = shipping(make_client, attach, flush_at=10_000, flush_interval=5)
        padding = "p" * 1000
        for i in range(3000):
            log.info("line %05d %s", i, padding)
        assert client.flush(20)
        wait_for_lines(server, 3000)

        assert len(wire.bodies) >= 2
        assert max(len(body) for body in wire.bodies) <= TWO_MB
        assert len(wire.records()) == 3000
        assert all(status == 200 for status, _ in logs_requests(server))
        stored = [line["body"] for line in server.store.logs()]
        assert sorted(stored) == [f"line {i:05d} {padding}" for i in range(3000)]
        assert client.stats.logs_sent == 3000
