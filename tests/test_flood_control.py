"""Flood control for error tracking: a loop that fails the same way thousands of times
sends a burst of ``$exception`` events, not thousands.

``ExceptionRateLimiter`` is a token bucket per kind of exception: tested first as a value
object with an explicit clock, then end to end through the client, the logging handler,
contexts and the local server. Log lines are never limited; drops are counted in
``stats.dropped["exception_rate_limited"]`` and said once, not once per drop.
"""

from __future__ import annotations

import contextlib
import logging
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import posthog_logging
from posthog_logging import Client, PostHogHandler
from posthog_logging import default_client as defaults
from posthog_logging.flood_control import ExceptionRateLimiter
from posthog_logging.server import LocalServer

from .conftest import API_KEY
from .helpers import Event, delivered, unique_name, wait_for_lines
from .polling import wait_until

OPTIONS = ("exception_bucket_size", "exception_refill_rate", "exception_refill_interval")


# -- shared set-up ----------------------------------------------------------------------


def fail(i: int) -> None:
    raise ValueError(f"failure {i}")


def fail_elsewhere(i: int) -> None:
    raise ValueError(f"other failure {i}")


def log_failures(log: logging.Logger, n: int, raiser: Callable[[int], None] = fail) -> None:
    """Log ``n`` distinct exceptions raised at one place, each with ``log.exception``."""
    for i in range(n):
        try:
            raiser(i)
        except ValueError:
            log.exception("sync failed")


def exception_values(client: Client, server: LocalServer, n: int) -> list[str]:
    """Flush, then the values of the exactly ``n`` stored ``$exception`` events."""
    found = delivered(client, server, n, event="$exception")
    values = [e["properties"]["$exception_list"][0]["value"] for e in found]
    assert len(found) == n, values
    return values


def flood_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the library said about flood-limited exceptions."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "posthog_logging" and "flood limit" in r.getMessage()
    ]


def drops(client: Client) -> int:
    """Exceptions ``client`` dropped for flood control so far."""
    return client.stats.dropped.get("exception_rate_limited", 0)


@pytest.fixture
def limited_default_client(server: LocalServer) -> Iterator[Client]:
    """The default client, sending to ``server``, with a bucket of 5 exceptions."""
    yield posthog_logging.configure(
        api_key=API_KEY, host=server.url, flush_interval=0.05, exception_bucket_size=5
    )
    defaults.reset()  # while the server still runs


# -- the token bucket, with an explicit clock -----------------------------------------


class TestExceptionRateLimiter:
    def test_a_burst_of_exactly_the_bucket_size(self) -> None:
        """A new kind may send ``bucket_size`` at once (the last token included), then
        nothing more at that moment."""
        limiter = ExceptionRateLimiter(bucket_size=50, refill_rate=10, refill_interval=10.0)
        allowed = [limiter.allow("ValueError@app.py:1", now=100.0) for _ in range(60)]
        assert allowed == [True] * 50 + [False] * 10

    def test_refill_per_whole_interval_and_the_rest_carries_over(self) -> None:
        """``refill_rate`` tokens come back per whole ``refill_interval``; the part of an
        interval already waited counts towards the next refill."""
        limiter = ExceptionRateLimiter(bucket_size=50, refill_rate=10, refill_interval=10.0)
        key = "ValueError@app.py:1"
        for _ in range(50):
            assert limiter.allow(key, now=0.0)
        assert not limiter.allow(key, now=9.99)  # not a whole interval yet
        assert [limiter.allow(key, now=15.0) for _ in range(11)] == [True] * 10 + [False]
        assert not limiter.allow(key, now=19.9)  # 9.9 s since the refill counted at 10.0
        assert limiter.allow(key, now=20.0)  # the 5 s waited past 10.0 were kept

    def test_refills_stop_at_the_bucket_size(self) -> None:
        """However long a kind was quiet, its next burst is at most ``bucket_size``."""
        limiter = ExceptionRateLimiter(bucket_size=5, refill_rate=10, refill_interval=1.0)
        key = "ValueError@app.py:1"
        for _ in range(5):
            assert limiter.allow(key, now=0.0)
        assert [limiter.allow(key, now=1000.0) for _ in range(7)] == [True] * 5 + [False] * 2

    def test_kinds_are_independent(self) -> None:
        """An exhausted kind leaves the others their full burst."""
        limiter = ExceptionRateLimiter(bucket_size=3, refill_rate=1, refill_interval=60.0)
        assert [limiter.allow("a", now=0.0) for _ in range(4)] == [True, True, True, False]
        assert [limiter.allow("b", now=0.0) for _ in range(4)] == [True, True, True, False]
        assert not limiter.allow("a", now=1.0)

    def test_fractional_rates(self) -> None:
        """A refill rate below one token per interval adds up over intervals."""
        limiter = ExceptionRateLimiter(bucket_size=1, refill_rate=0.5, refill_interval=1.0)
        assert limiter.allow("k", now=0.0)
        assert not limiter.allow("k", now=1.0)  # half a token
        assert limiter.allow("k", now=2.0)  # one whole token

    @pytest.mark.parametrize("option", OPTIONS)
    @pytest.mark.parametrize("bad", [0, -1, -0.5, True, False, "5", None])
    def test_invalid_options_are_refused_by_name(self, option: str, bad: Any) -> None:
        """Zero, negative, boolean or non-numeric values raise ValueError naming the
        option, from the limiter and from the client that takes the options."""
        args: list[Any] = [50, 10, 10.0]  # in the order of OPTIONS
        args[OPTIONS.index(option)] = bad
        with pytest.raises(ValueError, match=option):
            ExceptionRateLimiter(*args)
        with pytest.raises(ValueError, match=option):
            Client(api_key=API_KEY, **{option: bad})

    def test_a_hot_kind_stays_limited_among_many_others(self) -> None:
        """A flooding kind stays limited while hundreds of other kinds come and go."""
        limiter = ExceptionRateLimiter(bucket_size=3, refill_rate=1, refill_interval=60.0)
        for _ in range(3):
            assert limiter.allow("hot", now=0.0)
        others = [limiter.allow(f"other-{i}", now=1.0) for i in range(900)]
        assert all(others)  # each new kind starts with a full bucket
        assert not limiter.allow("hot", now=2.0)

    @pytest.mark.parametrize("step", [0.0, 1.0])
    def test_memory_stays_bounded_with_endless_kinds(self, step: float) -> None:
        """20,000 distinct kinds (a raise site per generated module, say), arriving at
        once or one a second, do not make the limiter hold memory for 20,000 buckets,
        and each new kind is still let through."""
        tracemalloc.start()
        try:
            limiter = ExceptionRateLimiter()
            base = tracemalloc.get_traced_memory()[0]
            allowed = 0
            for i in range(20_000):
                key = f"builtins.ValueError@/app/generated_{i}.py:{i}"
                allowed += limiter.allow(key, now=i * step)
            held = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert allowed == 20_000
        # 20,000 buckets with their keys take about 4 MB; a thousand about 200 kB.
        assert held < 1_000_000, f"{held} bytes held for 20,000 kinds"


# -- end to end through the logging handler and the local server ----------------------


class TestThroughTheHandler:
    def test_a_failing_loop_sends_one_burst_and_says_so_once(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        attach: Callable[..., logging.Logger],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """10,000 exceptions from one raise site, each logged: 5 ``$exception`` events
        arrive (the bucket), 9,995 are counted as dropped, and one warning says so."""
        caplog.set_level(logging.WARNING, logger="posthog_logging")
        client = make_client(exception_bucket_size=5)
        log = attach(PostHogHandler(client=client))
        log_failures(log, 10_000)

        values = exception_values(client, server, 5)
        assert values == [f"failure {i}" for i in range(5)]
        assert drops(client) == 9_995
        [warning] = flood_warnings(caplog)
        assert "ValueError" in warning

    def test_each_raise_site_has_its_own_bucket(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """Exceptions of one type raised at two places are two kinds: 5 of each arrive."""
        client = make_client(exception_bucket_size=5)
        log = attach(PostHogHandler(client=client))
        log_failures(log, 20, fail)
        log_failures(log, 20, fail_elsewhere)

        values = exception_values(client, server, 10)
        assert values == [f"failure {i}" for i in range(5)] + [
            f"other failure {i}" for i in range(5)
        ]
        assert drops(client) == 30

    def test_log_lines_are_not_limited(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """With ``logs_level`` every failure still goes to PostHog Logs as a line, each
        with its exception; only the ``$exception`` events are limited."""
        client = make_client(exception_bucket_size=5)
        log = attach(PostHogHandler(client=client, logs_level="ERROR"))
        log_failures(log, 300)

        assert len(exception_values(client, server, 5)) == 5
        lines = wait_for_lines(server, 300)
        assert len(lines) == 300
        messages = sorted(line["attributes"]["exception.message"] for line in lines)
        assert messages == sorted(f"failure {i}" for i in range(300))
        assert drops(client) == 295

    def test_switched_off_sends_every_exception(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """``exception_rate_limit=False``: every one of 200 logged exceptions arrives."""
        client = make_client(exception_rate_limit=False, exception_bucket_size=5)
        log = attach(PostHogHandler(client=client))
        log_failures(log, 200)

        values = exception_values(client, server, 200)
        assert sorted(values) == sorted(f"failure {i}" for i in range(200))
        assert drops(client) == 0

    def test_errors_without_exception_are_limited_per_template_and_logger(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """Errors logged without an exception share a bucket when they share a logger
        and template, whatever the arguments; another template or logger has its own."""
        client = make_client(exception_bucket_size=5)
        billing = attach(PostHogHandler(client=client), name=unique_name("test.billing"))
        shipping = attach(PostHogHandler(client=client), name=unique_name("test.shipping"))
        for i in range(12):
            billing.error("payment failed for order %s", i)
            billing.error("refund failed for order %s", i)
            shipping.error("payment failed for order %s", i)

        found = delivered(client, server, 15, event="$exception")
        assert len(found) == 15
        sent: dict[tuple[str, str], list[str]] = {}
        for event in found:
            entry = event["properties"]["$exception_list"][0]
            key = (event["properties"]["logger_name"], entry["type"])
            sent.setdefault(key, []).append(entry["value"])
        assert sent == {
            (billing.name, "payment failed for order %s"): [
                f"payment failed for order {i}" for i in range(5)
            ],
            (billing.name, "refund failed for order %s"): [
                f"refund failed for order {i}" for i in range(5)
            ],
            (shipping.name, "payment failed for order %s"): [
                f"payment failed for order {i}" for i in range(5)
            ],
        }
        assert drops(client) == 21

    def test_the_default_bucket_lets_a_burst_of_fifty_through(
        self, client: Client, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """With the defaults a burst of 50 exceptions of one kind arrives (the official
        SDK lets 49 through); the rest of 60 are dropped."""
        log = attach(PostHogHandler(client=client))
        log_failures(log, 60)

        values = exception_values(client, server, 50)
        assert values == [f"failure {i}" for i in range(50)]
        assert drops(client) == 10


# -- every other way an exception is captured -----------------------------------------


class TestOtherCaptures:
    def test_capture_exception_by_hand(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """``capture_exception()`` is limited too: it returns None for the dropped ones."""
        client = make_client(exception_bucket_size=5)
        returned = []
        for i in range(12):
            try:
                fail(i)
            except ValueError:
                returned.append(client.capture_exception())

        assert all(isinstance(uuid, str) for uuid in returned[:5])
        assert returned[5:] == [None] * 7
        assert exception_values(client, server, 5) == [f"failure {i}" for i in range(5)]
        assert drops(client) == 7

    def test_exceptions_leaving_a_context(
        self, limited_default_client: Client, server: LocalServer
    ) -> None:
        """Exceptions leaving ``new_context()`` go through the same buckets."""
        for i in range(12):
            with contextlib.suppress(ValueError), posthog_logging.new_context():
                posthog_logging.identify_context(f"user-{i}")
                fail(i)

        found = delivered(limited_default_client, server, 5, event="$exception")
        assert [e["distinct_id"] for e in found] == [f"user-{i}" for i in range(5)]
        assert drops(limited_default_client) == 7

    def test_buckets_refill_with_time(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """Once ``exception_refill_interval`` has passed, ``exception_refill_rate`` more
        exceptions of an exhausted kind are let through."""
        client = make_client(
            exception_bucket_size=2, exception_refill_rate=1, exception_refill_interval=0.5
        )
        attempts = iter(range(1_000_000))

        def capture_one() -> str | None:
            try:
                fail(next(attempts))
            except ValueError as exc:
                return client.capture_exception(exc)
            raise AssertionError("unreachable")

        start = time.monotonic()
        sent = [capture_one(), capture_one()]
        assert None not in sent
        third = capture_one()
        if time.monotonic() - start < 0.5:  # (a stalled machine may see the refill)
            assert third is None
        sent.append(third)
        sent.append(wait_until(capture_one, timeout=5.0, what="a refilled token"))
        assert time.monotonic() - start >= 0.5  # never before a whole interval

        n = len([uuid for uuid in sent if uuid is not None])
        found = delivered(client, server, n, event="$exception")
        assert sorted(e["uuid"] for e in found) == sorted(u for u in sent if u is not None)


# -- what a dropped exception costs ---------------------------------------------------


class CountedRepr:
    """A local variable whose ``repr`` counts how often it was taken."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    def __repr__(self) -> str:
        self.calls += 1
        return "CountedRepr()"


def fail_holding(probe: CountedRepr, i: int) -> None:
    raise ValueError(f"failure {i}")


def by_hand(client: Client, log: logging.Logger) -> None:
    client.capture_exception()


def by_logging(client: Client, log: logging.Logger) -> None:
    log.exception("sync failed")


class TestCost:
    @pytest.mark.parametrize("capture", [by_hand, by_logging])
    def test_a_dropped_exception_takes_no_snapshot(
        self,
        capture: Callable[[Client, logging.Logger], None],
        make_client: Callable[..., Client],
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """With ``capture_exception_code_variables`` on, the locals of the first 5
        exceptions are read (and sent); once the bucket is empty no local is read
        again: a flood costs no snapshots."""
        client = make_client(exception_bucket_size=5, capture_exception_code_variables=True)
        log = attach(PostHogHandler(client=client))
        probe = CountedRepr()
        calls_after = []
        for i in range(20):
            try:
                fail_holding(probe, i)
            except ValueError:
                capture(client, log)
            calls_after.append(probe.calls)

        assert calls_after[0] > 0
        assert calls_after[:5] == sorted(set(calls_after[:5]))  # each capture read it
        assert calls_after[5:] == [calls_after[4]] * 15  # no drop read it
        found = delivered(client, server, 5, event="$exception")
        assert len(found) == 5
        for i, event in enumerate(found):
            assert raise_site_variables(event) == {"probe": "CountedRepr()", "i": i}
        assert drops(client) == 15


def raise_site_variables(event: Event) -> dict[str, Any]:
    """The code variables of the frame that raised the event's exception."""
    frames = event["properties"]["$exception_list"][0]["stacktrace"]["frames"]
    raised: dict[str, Any] = frames[-1]["code_variables"]
    assert frames[-1]["function"] == "fail_holding"
    return raised
