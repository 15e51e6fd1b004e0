"""Delivery under failure: retries, backoff, refusals, splitting, bounded memory, deadlines.

Every fault is real: the client talks HTTP over loopback to the package's LocalServer,
which answers error statuses, delays, holds or drops requests, or goes down, on cue.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import posthog_logging
from posthog_logging.client import Client
from posthog_logging.delivery import retry as retry_module
from posthog_logging.delivery.kinds import Kind
from posthog_logging.delivery.sender import JOIN_GRACE
from posthog_logging.delivery.transport import SendResult
from posthog_logging.exceptions import DeliveryError
from posthog_logging.server import Fault, LocalServer
from posthog_logging.stdlib import PostHogHandler

from .conftest import API_KEY
from .helpers import delivered
from .polling import wait_until

LIBRARY_LOGGER = "posthog_logging"


# -- helpers ----------------------------------------------------------------------------


@dataclass
class Attempt:
    """One request the client's transport made: the events it carried and what came of it."""

    events: list[dict[str, Any]]
    start: float  # monotonic
    end: float  # monotonic
    wall_start: float  # time.time()
    result: SendResult


class SendSpy:
    """Watches the client's transport (observation only: every request still goes out)."""

    def __init__(self, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[Attempt] = []
        self.started = 0  # requests begun, answered or not
        self._transport = client._sender.transport
        client.use_transport(self)  # a Transport wrapping the client's own

    def send(self, records: Any, kind: Kind, timeout: float) -> SendResult:
        start, wall = time.monotonic(), time.time()
        self.started += 1
        result = self._transport.send(records, kind, timeout)
        parsed = [json.loads(e) for e in records]
        self.attempts.append(Attempt(parsed, start, time.monotonic(), wall, result))
        return result

    def abort(self) -> None:
        self._transport.abort()

    def close(self) -> None:
        self._transport.close()

    def reset_after_fork(self) -> None:
        self._transport.reset_after_fork()


def faults_and_statuses(server: LocalServer) -> list[tuple[int, str | None]]:
    return [(r.status, r.fault) for r in server.requests]


def library_warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == LIBRARY_LOGGER and r.levelno == logging.WARNING and text in r.getMessage()
    ]


@pytest.fixture(autouse=True)
def _no_stray_library_logger_state() -> Iterator[None]:
    """The library's logger keeps no handler or filter a test added."""
    library = logging.getLogger(LIBRARY_LOGGER)
    handlers, filters = list(library.handlers), list(library.filters)
    yield
    library.handlers[:] = handlers
    library.filters[:] = filters


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff steps of 0.1 s, 0.2 s, ...: retries come quickly in tests not about backoff."""
    monkeypatch.setattr(retry_module, "BACKOFF_BASE", 0.05)


class Outage:
    """A server that is unavailable in one of several ways, and its recovery."""

    KINDS = ("down", "503", "delay", "hold", "dropped")

    def __init__(self, server: LocalServer, kind: str) -> None:
        self.server = server
        self.kind = kind
        self.release = threading.Event()

    def start(self) -> None:
        server = self.server
        if self.kind == "down":
            server.down()
        elif self.kind == "503":
            server.inject(Fault(status=503), times=None)
        elif self.kind == "delay":
            server.inject(Fault(delay=5), times=None)
        elif self.kind == "hold":
            server.inject(Fault(hold=self.release), times=None)
        else:
            server.inject(Fault(drop=True), times=None)

    def end(self) -> None:
        self.server.clear_faults()
        self.server.up()
        self.release.set()


class HangingHook:
    """A ``before_send`` that holds the sender until released: a sender stuck in a hook,
    whose queue fills. ``stuck`` is set once it holds one."""

    def __init__(self) -> None:
        self.stuck = threading.Event()
        self.release = threading.Event()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.stuck.set()
        self.release.wait(30)
        return event


# -- retries ---------------------------------------------------------------------------


RETRY_CASES = ["408", "429", "500", "502", "503", "504", "dropped", "refused", "timeout"]


@pytest.mark.usefixtures("fast_backoff")
class TestRetry:
    """Retryable failures are sent again, with the same event, until it is delivered once."""

    @pytest.mark.parametrize("case", RETRY_CASES)
    def test_retried_until_delivered_once(
        self,
        case: str,
        make_client: Callable[..., Client],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """After a 408/429/5xx, a dropped or refused connection or a timeout the event
        arrives once, with the uuid and timestamp of its first attempt."""
        client = make_client(max_retries=10, timeout=0.3 if case == "timeout" else 10.0)
        spy = SendSpy(client, monkeypatch)
        if case == "refused":
            server.down()
        elif case == "timeout":
            server.inject(Fault(delay=2))
        elif case == "dropped":
            server.inject(Fault(drop=True))
        else:
            server.inject(Fault(status=int(case)))

        uid = client.capture("order_paid", {"amount": 12}, distinct_id="u1")
        if case == "refused":
            wait_until(lambda: client.stats.retried >= 1, what="a refused attempt")
            server.up()
        server.wait_for_events(1, timeout=10)
        assert client.flush(5)
        if case == "timeout":  # the server answers the abandoned request after its delay
            wait_until(
                lambda: any(r.fault == "delay" for r in server.requests),
                timeout=6,
                what="the delayed request to end",
            )

        [event] = server.events()
        first = spy.attempts[0]
        assert len(spy.attempts) >= 2
        assert not first.result.ok and spy.attempts[-1].result.ok
        assert all(a.events == first.events for a in spy.attempts)  # same uuid, same time
        assert event["uuid"] == uid == first.events[0]["uuid"]
        assert event["timestamp"] == first.events[0]["timestamp"]

        stats = client.stats
        assert stats.retried >= 1
        assert (stats.sent, stats.failed, stats.dropped_total, stats.pending) == (1, 0, 0, 0)

        seen = faults_and_statuses(server)
        if case == "refused":  # refused connections never reach the server
            assert first.result.status is None
            assert seen == [(200, None)]
        elif case == "timeout":  # the retry is answered while the first try still waits
            assert first.result.status is None
            assert seen == [(200, None), (200, "delay")]
        elif case == "dropped":
            assert first.result.status is None
            assert seen == [(0, "drop"), (200, None)]
        else:
            assert first.result.status == int(case)
            assert seen == [(int(case), "status"), (200, None)]
        assert all(r.event_count == 1 for r in server.requests)


class TestRetryTiming:
    """Retries wait as long as the server asks, and back off exponentially otherwise."""

    @pytest.mark.usefixtures("fast_backoff")
    def test_retry_after_seconds(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Retry-After: 1 makes the client wait at least one second before trying again."""
        client = make_client(max_retries=3)
        spy = SendSpy(client, monkeypatch)
        server.inject(Fault(status=503, headers={"Retry-After": "1"}))
        client.capture("report_exported", distinct_id="u1")
        server.wait_for_events(1, timeout=10)
        assert client.flush(5)
        refused, retry = spy.attempts
        assert refused.result.retry_after == 1.0
        assert 1.0 - 0.05 <= retry.start - refused.end < 5.0
        assert faults_and_statuses(server) == [(503, "status"), (200, None)]

    @pytest.mark.usefixtures("fast_backoff")
    def test_retry_after_http_date(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Retry-After as an HTTP date makes the client wait until that time."""
        client = make_client(max_retries=3)
        spy = SendSpy(client, monkeypatch)
        target = time.time() + 2
        header = email.utils.formatdate(target, usegmt=True)  # whole seconds
        server.inject(Fault(status=503, headers={"Retry-After": header}))
        client.capture("report_exported", distinct_id="u1")
        server.wait_for_events(1, timeout=10)
        assert client.flush(5)
        refused, retry = spy.attempts
        assert refused.result.retry_after is not None
        assert retry.wall_start >= math.floor(target) - 0.05  # not before the date given
        assert retry.start - refused.end < 5.0
        assert faults_and_statuses(server) == [(503, "status"), (200, None)]

    @pytest.mark.usefixtures("fast_backoff")
    def test_retry_after_is_capped(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A Retry-After longer than the cap is cut to the cap, not obeyed for an hour."""
        monkeypatch.setattr(retry_module, "RETRY_AFTER_CAP", 0.3)
        client = make_client(max_retries=3)
        spy = SendSpy(client, monkeypatch)
        server.inject(Fault(status=429, headers={"Retry-After": "3600"}))
        client.capture("report_exported", distinct_id="u1")
        server.wait_for_events(1, timeout=10)
        assert client.flush(5)
        refused, retry = spy.attempts
        assert 0.3 - 0.05 <= retry.start - refused.end < 3.0

    def test_backoff_exponential_full_jitter_capped(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Each wait is drawn from [0, base * 2**attempt] capped; after max_retries the
        batch fails: 1 + 3 requests, all its events counted failed, on_error told."""
        drawn: list[tuple[float, float]] = []

        class HighestJitter:
            @staticmethod
            def uniform(low: float, high: float) -> float:
                drawn.append((low, high))
                return high

        monkeypatch.setattr(retry_module, "BACKOFF_BASE", 0.05)
        monkeypatch.setattr(retry_module, "BACKOFF_CAP", 0.15)
        monkeypatch.setattr(retry_module, "random", HighestJitter)
        errors: list[tuple[Exception, list[dict[str, Any]]]] = []
        client = make_client(
            max_retries=3,
            flush_at=3,
            flush_interval=5,
            on_error=lambda e, events: errors.append((e, events)),
        )
        spy = SendSpy(client, monkeypatch)
        server.inject(Fault(status=503), times=None)
        uids = [client.capture("step", {"i": i}, distinct_id="u1") for i in range(3)]
        wait_until(lambda: client.stats.failed == 3, what="the batch to fail")
        assert client.flush(2)  # nothing is left to send: no further request can come

        assert drawn == [(0, 0.1), (0, 0.15), (0, 0.15)]  # doubling, then the cap
        assert len(server.requests) == 1 + 3
        assert faults_and_statuses(server) == [(503, "status")] * 4
        gaps = [b.start - a.end for a, b in zip(spy.attempts, spy.attempts[1:], strict=False)]
        for gap, (_, wait) in zip(gaps, drawn, strict=True):
            assert wait - 0.02 <= gap < wait + 2.0
        stats = client.stats
        assert (stats.sent, stats.retried, stats.failed, stats.dropped_total) == (0, 3, 3, 0)
        [(error, events)] = errors
        assert isinstance(error, DeliveryError) and error.status == 503
        assert sorted(e["uuid"] for e in events) == sorted(uids)  # type: ignore[type-var]


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_backoff")
class TestRefused:
    """A request the server refuses for good is not retried; it is counted and reported."""

    @pytest.mark.parametrize("status", [400, 401, 403])
    def test_not_retried_counted_logged_once(
        self,
        status: int,
        make_client: Callable[..., Client],
        server: LocalServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Each refused batch costs one request, counts in failed and reaches on_error;
        the warning is logged once for several batches, without the API key."""
        caplog.set_level(logging.WARNING, logger=LIBRARY_LOGGER)
        errors: list[tuple[Exception, list[dict[str, Any]]]] = []
        client = make_client(on_error=lambda e, events: errors.append((e, events)))
        server.inject(Fault(status=status), times=None)
        uids = []
        for i in range(3):
            uids.append(client.capture("step", {"i": i}, distinct_id="u1"))
            assert client.flush(5)  # refused counts as handled

        assert faults_and_statuses(server) == [(status, "status")] * 3
        stats = client.stats
        assert (stats.sent, stats.retried, stats.failed, stats.dropped_total) == (0, 0, 3, 0)
        assert len(library_warnings(caplog, f"HTTP {status}")) == 1
        assert API_KEY not in caplog.text
        assert [type(e) for e, _ in errors] == [DeliveryError] * 3
        assert [e.status for e, _ in errors] == [status] * 3  # type: ignore[attr-defined]
        assert [events[0]["uuid"] for _, events in errors] == uids

    def test_logged_once_per_cause(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Different refusals (400, then 401) are each logged once."""
        caplog.set_level(logging.WARNING, logger=LIBRARY_LOGGER)
        client = make_client()
        server.inject(Fault(status=400), Fault(status=400), Fault(status=401), Fault(status=401))
        for i in range(4):
            client.capture("step", {"i": i}, distinct_id="u1")
            assert client.flush(5)
        assert client.stats.failed == 4
        assert len(library_warnings(caplog, "HTTP 400")) == 1
        assert len(library_warnings(caplog, "HTTP 401")) == 1


# -- 413 -------------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_backoff")
class TestTooLarge:
    """A batch refused as too large is split; a single event refused alone is dropped."""

    def test_split_in_halves(self, make_client: Callable[..., Client], server: LocalServer) -> None:
        """After a 413 both halves of the batch are sent and every event arrives once."""
        client = make_client(flush_at=10, flush_interval=5)
        server.inject(Fault(status=413))
        uids = [client.capture("step", {"i": i}, distinct_id="u1") for i in range(10)]
        server.wait_for_events(10, timeout=10)
        assert client.flush(5)
        assert [(r.status, r.event_count) for r in server.requests] == [
            (413, 10),
            (200, 5),
            (200, 5),
        ]
        assert sorted(e["uuid"] for e in server.events()) == sorted(uids)  # type: ignore[type-var]
        stats = client.stats
        assert (stats.sent, stats.failed, stats.dropped_total, stats.retried) == (10, 0, 0, 0)

    def test_single_event_dropped_rest_arrives(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """An event still refused with 413 when alone is dropped as too_large; the others
        of its batch arrive."""
        client = make_client(flush_at=4, flush_interval=5)
        server.inject(Fault(status=413), times=3)  # [a b c d], then [a b], then [a]
        uids = [client.capture("step", {"i": i}, distinct_id="u1") for i in range(4)]
        server.wait_for_events(3, timeout=10)
        assert client.flush(5)
        assert [(r.status, r.event_count) for r in server.requests] == [
            (413, 4),
            (413, 2),
            (413, 1),
            (200, 1),
            (200, 2),
        ]
        assert sorted(e["uuid"] for e in server.events()) == sorted(uids[1:])  # type: ignore[type-var]
        stats = client.stats
        assert stats.dropped == {"too_large": 1}
        assert (stats.sent, stats.failed, stats.pending) == (3, 0, 0)


# -- slow server -------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_backoff")
class TestSlowServer:
    """A server that does not answer never slows down the code that captures."""

    def test_capture_never_waits_for_the_server(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """5,000 captures return while the server holds the first request; once it
        answers, every event arrives once."""
        release = threading.Event()
        server.inject(Fault(hold=release), times=None)
        client = make_client(max_queue_size=10_000)
        uids: list[str | None] = []
        done = threading.Event()

        def produce() -> None:
            for i in range(5_000):
                uids.append(client.capture("tick", {"i": i}, distinct_id="u1"))
            done.set()

        worker = threading.Thread(target=produce, daemon=True)
        started = time.monotonic()
        worker.start()
        assert done.wait(15), "capture() blocked behind a held request"
        took = time.monotonic() - started
        assert not release.is_set() and server.events() == []
        assert client.stats.sent == 0
        assert None not in uids and len(set(uids)) == 5_000

        server.clear_faults()
        release.set()
        server.wait_for_events(5_000, timeout=30)
        assert client.flush(10)
        assert sorted(e["uuid"] for e in server.events()) == sorted(uids)  # type: ignore[type-var]
        stats = client.stats
        assert (stats.sent, stats.failed, stats.dropped_total) == (5_000, 0, 0)
        assert took < 15


# -- bounded memory ---------------------------------------------------------------------


class TestBoundedMemory:
    """While the server is unreachable, memory stays within its bounds and drops are counted."""

    def test_bounded_by_events(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """max_queue_size=100 bounds the events waiting to be built: with the sender
        stuck (in a hook that does not return), the overflow of 1,000 captures is dropped
        and counted, after one short wait for it (STALLED_AFTER), not one per capture."""
        hook = HangingHook()
        client = make_client(max_queue_size=100, before_send=hook)
        client.capture("first", distinct_id="u1")
        assert hook.stuck.wait(10)
        started = time.monotonic()
        results = [client.capture("tick", {"i": i}, distinct_id="u1") for i in range(1_000)]
        took = time.monotonic() - started
        stats = client.stats
        nones = results.count(None)
        assert nones == 901  # 99 waiting, and the one the hook holds
        assert stats.dropped == {"queue_full": nones}
        assert stats.pending == 100
        assert stats.waited_for_room == 1
        assert took < 5  # a wait per capture would be 100 s
        hook.release.set()
        assert client.flush(10)
        assert len(server.wait_for_events(100)) == 100

    def test_a_full_queue_waits_for_a_sender_that_keeps_building(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """A caller that outruns the sender waits for it, rather than drop, while the
        sender keeps taking events: 20,000 captures through a queue of 100 all arrive."""
        client = make_client(max_queue_size=100)
        results = [client.capture("tick", {"i": i}, distinct_id="u1") for i in range(20_000)]
        assert None not in results
        events = delivered(client, server, 20_000, timeout=60)
        assert sorted(e["properties"]["i"] for e in events) == list(range(20_000))
        stats = client.stats
        assert stats.dropped == {}
        assert stats.waited_for_room > 0

    def test_no_wait_inside_the_library(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """A hook on the sender's thread that captures into a full queue is dropped at
        once: the sender never waits for itself."""
        captured_inside: list[str | None] = []
        client = make_client(max_queue_size=1)

        def capturing(event: dict[str, Any]) -> dict[str, Any]:
            if event["event"] == "outer":
                for i in range(3):
                    captured_inside.append(client.capture("inner", {"i": i}, distinct_id="u1"))
            return event

        client._builder._before_send = capturing  # set after: it needs the client
        client.capture("outer", distinct_id="u1")
        assert client.flush(10)
        assert client.stats.waited_for_room == 0

    def test_bound_holds_while_sender_builds_an_event(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """max_queue_size holds even while the sender is building an event it took."""
        server.down()
        building, proceed = threading.Event(), threading.Event()

        def slow_before_send(event: dict[str, Any]) -> dict[str, Any]:
            building.set()
            proceed.wait(10)
            return event

        client = make_client(max_queue_size=100, max_retries=50, before_send=slow_before_send)
        client.capture("first", distinct_id="u1")
        assert building.wait(10)
        results = [client.capture("tick", {"i": i}, distinct_id="u1") for i in range(200)]
        proceed.set()
        wait_until(lambda: not client._sender.intake.items, what="the sender to take every event")
        accepted = 1 + len(results) - results.count(None)
        try:
            assert accepted <= 100
            assert client.stats.pending <= 100
        finally:
            client.shutdown(0.2)

    def test_bounded_by_bytes(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """With max_queue_bytes=200 kB and 10 kB events, payloads in memory stay under it."""
        server.down()
        client = make_client(max_queue_bytes=200_000, max_retries=50)
        blob = "x" * 10_000
        for i in range(60):
            assert client.capture("upload", {"i": i, "blob": blob}, distinct_id="u1")
        most_bytes = 0

        def all_taken() -> bool:
            nonlocal most_bytes
            most_bytes = max(most_bytes, client._sender.backlog.bytes)
            stats = client.stats
            return not client._sender.intake.items and stats.pending + stats.dropped_total == 60

        wait_until(all_taken, what="the sender to take every event")
        stats = client.stats
        assert stats.dropped["queue_full"] > 0
        assert stats.dropped_total == stats.dropped["queue_full"]
        assert max(most_bytes, client._sender.backlog.bytes) <= client.max_queue_bytes
        assert stats.pending * 10_000 <= 200_000
        client.shutdown(0.2)

    def test_full_memory_refuses_events_without_building_them(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Once built events fill max_queue_bytes, the next ones are refused (counted as
        queue_full) without the sender spending time building them."""
        server.down()
        client = make_client(max_queue_bytes=200_000, max_retries=50)
        builds = 0
        build = client._builder.build

        def counting_build(pending: Any) -> Any:
            nonlocal builds
            builds += 1
            return build(pending)

        monkeypatch.setattr(client._builder, "build", counting_build)
        blob = "x" * 10_000
        for i in range(200):
            assert client.capture("upload", {"i": i, "blob": blob}, distinct_id="u1")
        wait_until(lambda: not client._sender.intake.items, what="the sender to take every event")
        stats = client.stats
        assert stats.pending + stats.dropped["queue_full"] == 200
        assert stats.pending <= 20  # what fits in 200 kB
        assert builds <= stats.pending + 2  # the refused ones were never built
        client.shutdown(0.2)

    def test_queue_full_warned_once(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Thousands of drops log one queue_full warning (once per interval)."""
        caplog.set_level(logging.WARNING, logger=LIBRARY_LOGGER)
        hook = HangingHook()
        client = make_client(max_queue_size=10, before_send=hook)
        client.capture("first", distinct_id="u1")
        assert hook.stuck.wait(10)
        results = [client.capture("tick", {"i": i}, distinct_id="u1") for i in range(5_000)]
        hook.release.set()
        assert results.count(None) >= 4_900
        assert client.stats.dropped["queue_full"] == results.count(None)
        assert len(library_warnings(caplog, "queue is full")) == 1
        client.shutdown(0.2)

    @pytest.mark.usefixtures("fast_backoff")
    def test_library_warnings_routed_to_itself_no_recursion(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """With the library's own logger (and the root) routed into a PostHogHandler on the
        same client, a full queue neither recurses nor turns its warnings into events."""
        # A sender stuck in a hook until the server is back: the queue fills, and the
        # library warns of what it drops.
        hook = HangingHook()
        client = make_client(max_queue_size=20, max_retries=50, before_send=hook)
        library = logging.getLogger(LIBRARY_LOGGER)
        root = logging.getLogger()
        own = PostHogHandler(client=client, ignore_loggers=None, exception_level=logging.DEBUG)
        via_root = PostHogHandler(client=client, ignore_loggers=None, exception_level=logging.DEBUG)

        def mark_as_event(record: logging.LogRecord) -> bool:
            record.event = True  # every record of the library's logger would be an event
            return True

        saved = library.level, library.propagate
        library.addFilter(mark_as_event)
        library.addHandler(own)
        library.setLevel(logging.DEBUG)
        library.propagate = True
        root.addHandler(via_root)
        app = logging.getLogger("test.delivery.app")
        try:
            server.down()
            for i in range(300):
                client.capture("direct_event", {"i": i}, distinct_id="u1")
                app.warning("app_event", extra={"event": True, "i": i})
            assert client.stats.dropped["queue_full"] > 0
            hook.release.set()
            server.up()
            assert client.flush(10)
            for i in range(3):
                client.capture("after_recovery", {"i": i}, distinct_id="u1")
            assert client.flush(10)
        finally:
            hook.release.set()
            root.removeHandler(via_root)
            library.removeHandler(own)
            library.removeFilter(mark_as_event)
            library.setLevel(saved[0])
            library.propagate = saved[1]
            own.close()
            via_root.close()

        names = {e["event"] for e in server.events()}
        assert names == {"direct_event", "app_event", "after_recovery"}
        assert set(client.stats.dropped) == {"queue_full"}
        err = capsys.readouterr().err
        assert "RecursionError" not in err and "Traceback" not in err


# -- deadlines ----------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_backoff")
class TestDeadlines:
    """flush() and shutdown() keep their deadlines whatever the server does."""

    @pytest.mark.parametrize("kind", Outage.KINDS)
    def test_flush_deadline_then_recovery(
        self, kind: str, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """During an outage flush(0.5) returns False in time; after recovery flush()
        returns True and every event arrives once."""
        outage = Outage(server, kind)
        client = make_client(max_retries=20, timeout=10)
        outage.start()
        try:
            uids = [client.capture("step", {"i": i}, distinct_id="u1") for i in range(20)]
            started = time.monotonic()
            assert client.flush(0.5) is False
            assert 0.45 <= time.monotonic() - started < 0.5 + 0.5
        finally:
            outage.end()
        assert client.flush(10)
        server.wait_for_events(20, timeout=10)
        assert sorted(e["uuid"] for e in server.events()) == sorted(uids)  # type: ignore[type-var]
        stats = client.stats
        assert (stats.sent, stats.failed, stats.dropped_total, stats.pending) == (20, 0, 0, 0)

    @pytest.mark.parametrize("kind", Outage.KINDS)
    def test_shutdown_deadline_and_accounting(
        self,
        kind: str,
        make_client: Callable[..., Client],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """During an outage shutdown(1.0) returns in time and every event is counted as
        sent, failed or dropped."""
        outage = Outage(server, kind)
        client = make_client(max_retries=20, timeout=10)
        spy = SendSpy(client, monkeypatch)
        outage.start()
        try:
            for i in range(20):
                client.capture("step", {"i": i}, distinct_id="u1")
            wait_until(lambda: spy.started >= 1, what="a request to start")
            started = time.monotonic()
            ok = client.shutdown(1.0)
            took = time.monotonic() - started
        finally:
            outage.end()
        assert ok is False
        assert took < 1.0 + JOIN_GRACE + 0.5
        stats = client.stats
        assert stats.sent + stats.failed + stats.dropped_total == 20
        assert stats.dropped.get("shutdown_timeout", 0) == 20 - stats.sent - stats.failed

    @pytest.mark.parametrize("kind", ["hold", "delay"])
    def test_request_in_flight_at_shutdown_counted_once(
        self,
        kind: str,
        make_client: Callable[..., Client],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Events of a request in flight when shutdown() gives up are counted once, even
        when the server answers that request afterwards."""
        outage = Outage(server, kind)
        client = make_client(max_retries=20, timeout=10)
        spy = SendSpy(client, monkeypatch)
        outage.start()
        try:
            for i in range(20):
                client.capture("step", {"i": i}, distinct_id="u1")
            wait_until(lambda: spy.started >= 1, what="the request to start")
            assert client.shutdown(1.0) is False
        finally:
            outage.end()
        wait_until(lambda: spy.attempts, timeout=8, what="the request to be answered")
        thread = client._sender.thread
        assert thread is not None
        thread.join(5)
        stats = client.stats
        assert stats.sent + stats.failed + stats.dropped_total == 20, stats

    @pytest.mark.parametrize("kind", ["hold", "delay"])
    def test_events_built_during_a_request_in_flight_at_shutdown(
        self,
        kind: str,
        make_client: Callable[..., Client],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """While a request is in flight the sender builds what keeps coming; shutdown()
        still returns in time and every event is counted once, built or not, and after
        the server answers the stuck request."""
        outage = Outage(server, kind)
        client = make_client(max_retries=20, timeout=10, flush_at=10)
        spy = SendSpy(client, monkeypatch)
        outage.start()
        try:
            for i in range(3_010):
                client.capture("step", {"i": i}, distinct_id="u1")
            wait_until(lambda: spy.started >= 1, what="the request to start")
            wait_until(
                lambda: not client._sender.intake.items,
                what="the sender to build during the request",
            )
            assert spy.started == 1 and client._sender.backlog.records == 3_010
            started = time.monotonic()
            assert client.shutdown(1.0) is False
            took = time.monotonic() - started
        finally:
            outage.end()
        assert took < 1.0 + JOIN_GRACE + 0.5
        stats = client.stats
        assert stats.sent + stats.failed + stats.dropped_total == 3_010, stats
        wait_until(lambda: spy.attempts, timeout=8, what="the request to be answered")
        thread = client._sender.thread
        assert thread is not None
        thread.join(5)
        stats = client.stats
        assert stats.sent + stats.failed + stats.dropped_total == 3_010, stats
        assert stats.pending == 0


# -- process exit -------------------------------------------------------------------------


def _python_env() -> dict[str, str]:
    """Environment for a child interpreter that imports this checkout of the package."""
    repo = str(pathlib.Path(posthog_logging.__file__).resolve().parent.parent)
    paths = [repo, sysconfig.get_paths()["purelib"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG")}
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _newer_python() -> str | None:
    """A Python 3.12+ interpreter able to import the package, if one is installed."""
    candidates = [sys.executable] if sys.version_info >= (3, 12) else []
    candidates += [p for v in ("3.13", "3.12") if (p := shutil.which(f"python{v}"))]
    for candidate in candidates:
        try:
            probe = subprocess.run(
                [
                    candidate,
                    "-c",
                    "import sys, posthog_logging; assert sys.version_info >= (3, 12)",
                ],
                env=_python_env(),
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return candidate
    return None


EXIT_DURING_OUTAGE = """
import time
import posthog_logging

client = posthog_logging.Client({key!r}, host={host!r}, shutdown_timeout=1, max_retries=50)
for i in range(7):
    client.capture("job_step", {{"i": i}}, distinct_id="u1")
print(time.time(), flush=True)
"""

CAPTURE_AT_EXIT = """
import atexit
import threading
import posthog_logging

client = posthog_logging.Client({key!r}, host={host!r}, shutdown_timeout=5)


def last_words():
    if {refuse_threads!r}:
        # As Python 3.12+ does at this point of interpreter shutdown.
        def start(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")

        threading.Thread.start = start
    for i in range(3):
        client.capture("said_at_exit", {{"i": i}}, distinct_id="u1")


atexit.register(last_words)
"""


class TestProcessExit:
    """At interpreter exit, pending events are sent or reported, within the deadline."""

    def test_exit_during_outage_is_bounded_and_reported(
        self, server: LocalServer, tmp_path: pathlib.Path
    ) -> None:
        """With the server down, a script exits within shutdown_timeout + 2 s and says on
        stderr how many events were not sent."""
        server.down()
        script = tmp_path / "outage.py"
        script.write_text(EXIT_DURING_OUTAGE.format(key=API_KEY, host=server.url))
        done = subprocess.run(
            [sys.executable, str(script)],
            env=_python_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        exited = time.time()
        assert done.returncode == 0, done.stderr
        assert exited - float(done.stdout.strip()) < 1 + 2
        assert "7 events not sent" in done.stderr

    @pytest.mark.parametrize("interpreter", ["current", "current_threads_refused", "python3.12+"])
    def test_first_capture_in_atexit_is_delivered(
        self, interpreter: str, server: LocalServer, tmp_path: pathlib.Path
    ) -> None:
        """Events first captured in an atexit function that runs before the library's
        hook are still delivered, even when no new thread may start then."""
        python: str | None = sys.executable
        if interpreter == "python3.12+":
            python = _newer_python()
            if python is None:
                pytest.skip("no Python 3.12+ interpreter able to import the package")
        assert python is not None
        script = tmp_path / "at_exit.py"
        refuse = interpreter == "current_threads_refused"
        script.write_text(
            CAPTURE_AT_EXIT.format(key=API_KEY, host=server.url, refuse_threads=refuse)
        )
        done = subprocess.run(
            [python, str(script)], env=_python_env(), capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        events = server.wait_for_events(3, timeout=5)
        assert sorted(e["properties"]["i"] for e in events) == [0, 1, 2]
        assert done.stderr == ""


class TestSenderBug:
    def test_an_error_in_the_sender_is_logged_once_and_delivery_goes_on(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A bug in the sender's loop is logged (once), never kills it: events still go."""
        client = make_client()
        dispatcher = client._sender.dispatcher
        real = dispatcher.send_due
        failures = {"left": 5}

        def flaky() -> None:
            if failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("a bug in the sender")
            real()

        monkeypatch.setattr(dispatcher, "send_due", flaky)
        with caplog.at_level(logging.ERROR, logger="posthog_logging"):
            client.capture("still_sent", distinct_id="u1")
            server.wait_for_events(1, timeout=15, event="still_sent")
        assert failures["left"] == 0
        logged = [r for r in caplog.records if "unexpected error in the sender" in r.getMessage()]
        assert len(logged) == 1
        assert client._sender.thread is not None and client._sender.thread.is_alive()
