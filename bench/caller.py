"""What a log call costs the caller's thread: us and the alternatives, side by side.

Every case runs in this one process, and the repeats are interleaved (repeat 1 of every
case, then repeat 2, ...) so a noisy neighbour slows all cases alike. Senders run while
they are measured: a sender thread competes for the GIL, and that is part of what a call
costs an application. Between repeats (not timed) each client is flushed.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import posthog_logging as ours

EXTRA = {"page": "/pricing", "plan": "pro", "items": 3, "value": 49.9, "ok": True}
MARKED = {**EXTRA, "event": True}
SESSION = "01929c8e-0000-7000-8000-000000000001"


@dataclass
class Case:
    """One measured call: ``call`` runs ``calls`` times per repeat inside ``context``."""

    name: str
    call: Callable[[], object]
    between: Callable[[], object] = lambda: None
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    #: Seconds per call of the caller thread's CPU, one figure per repeat.
    results: list[float] = field(default_factory=list)
    #: Seconds per call of wall-clock time (what other threads did meanwhile included).
    wall: list[float] = field(default_factory=list)


@contextlib.contextmanager
def our_context() -> Iterator[None]:
    """Identity, session and two tags, as a web request would have."""
    with ours.new_context():
        ours.identify_context("user_42")
        ours.set_context_session(SESSION)
        ours.tag("plan", "pro")
        ours.tag("request_id", "req_1")
        yield


@contextlib.contextmanager
def sdk_context(sdk: Any) -> Iterator[None]:
    """The same situation for the official SDK, in its own ``new_context()``."""
    import posthog

    with posthog.new_context(client=sdk):
        posthog.identify_context("user_42")
        posthog.set_context_session(SESSION)
        posthog.tag("plan", "pro")
        posthog.tag("request_id", "req_1")
        yield


def bench_logger(name: str, handler: logging.Handler, level: int = logging.INFO) -> logging.Logger:
    log = logging.getLogger(f"bench.{name}")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(level)
    log.addHandler(handler)
    return log


def stdlib_cases(url: str, down_url: str) -> tuple[list[Case], Callable[[], None]]:
    """Cases for the logging bridge, its baselines and our client; and a cleanup."""
    client = ours.Client("phc_bench", host=url)
    flush = lambda: client.flush(60)  # noqa: E731
    null = bench_logger("null", logging.NullHandler())
    null_off = bench_logger("null_off", logging.NullHandler(), logging.WARNING)
    ph_off = bench_logger("ph_off", ours.PostHogHandler(client=client), logging.WARNING)
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    queued = bench_logger("queue", logging.handlers.QueueHandler(q))
    handler = ours.PostHogHandler(client=client)
    ph = bench_logger("posthog", handler)
    lines = bench_logger("posthog_logs", ours.PostHogHandler(client=client, logs_level="INFO"))

    def drain() -> None:
        while not q.empty():
            q.get_nowait()

    # Server down: a fresh client per repeat (the one before is shut down, untimed), so
    # every repeat starts from an empty queue, as the server-up case does after its flush.
    down_log = bench_logger("posthog_down", logging.NullHandler())
    down: list[ours.Client] = []

    def new_down_client() -> None:
        if down:
            down.pop().shutdown(0)
        down.append(ours.Client("phc_bench", host=down_url))
        down_log.handlers[:] = [ours.PostHogHandler(client=down[-1])]

    def cleanup() -> None:
        client.shutdown(30)
        if down:
            down.pop().shutdown(0)

    cases = [
        Case("disabled level, NullHandler", lambda: null_off.info("page_viewed", extra=EXTRA)),
        Case("disabled level, PostHogHandler", lambda: ph_off.info("page_viewed", extra=EXTRA)),
        Case("NullHandler, 5 extras", lambda: null.info("page_viewed", extra=EXTRA)),
        Case("PostHogHandler, unmarked, 5 extras", lambda: ph.info("page_viewed", extra=EXTRA)),
        Case(
            "QueueHandler, 5 extras, in context",
            lambda: queued.info("page_viewed", extra=MARKED),
            drain,
            our_context,
        ),
        Case(
            "PostHogHandler, marked, in context",
            lambda: ph.info("page_viewed", extra=MARKED),
            flush,
            our_context,
        ),
        Case(
            "PostHogHandler, marked, in context, server down",
            lambda: down_log.info("page_viewed", extra=MARKED),
            new_down_client,
            our_context,
        ),
        Case(
            "PostHogHandler, log line to PostHog Logs, in context",
            lambda: lines.info("cart has %d items", 3, extra=EXTRA),
            flush,
            our_context,
        ),
        Case(
            "Client.capture, in context",
            lambda: client.capture("page_viewed", EXTRA),
            flush,
            our_context,
        ),
    ]
    return cases, cleanup


def sdk_cases(url: str) -> tuple[list[Case], Callable[[], None]]:
    """The official SDK's ``capture()``, default settings, plain and in its own context."""
    import posthog

    sdk = posthog.Posthog("phc_bench", host=url)

    cases = [
        Case(
            "posthog SDK capture()",
            lambda: sdk.capture("page_viewed", distinct_id="user_42", properties=EXTRA),
            sdk.flush,
        ),
        Case(
            "posthog SDK capture(), in context",
            lambda: sdk.capture("page_viewed", properties=EXTRA),
            sdk.flush,
            lambda: sdk_context(sdk),
        ),
    ]
    return cases, sdk.shutdown


def structlog_cases(url: str) -> tuple[list[Case], Callable[[], None]]:
    """A production-like structlog chain rendering JSON to a file, without and with us."""
    import structlog

    from posthog_logging.structlog import PostHogProcessor

    client = ours.Client("phc_bench", host=url)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed by the cleanup

    def bound(extra: list[Any]) -> Any:
        processors = [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *extra,
            structlog.processors.JSONRenderer(),
        ]
        return structlog.wrap_logger(
            structlog.WriteLogger(devnull),
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )

    plain = bound([])
    with_us = bound([PostHogProcessor(client)])

    def cleanup() -> None:
        client.shutdown(30)
        devnull.close()

    cases = [
        Case(
            "structlog, marked entry, without us",
            lambda: plain.info("page_viewed", capture=True, **EXTRA),
            context=our_context,
        ),
        Case(
            "structlog, marked entry, PostHogProcessor",
            lambda: with_us.info("page_viewed", capture=True, **EXTRA),
            lambda: client.flush(60),
            our_context,
        ),
    ]
    return cases, cleanup


def run(cases: list[Case], calls: int, repeats: int) -> None:
    """Fill each case's ``results`` with seconds per call, one figure per repeat."""
    for _ in range(repeats):
        for case in cases:
            case.between()
            call = case.call
            with case.context():
                start, cpu_start = time.perf_counter(), time.thread_time()
                for _ in range(calls):
                    call()
                cpu, wall = time.thread_time() - cpu_start, time.perf_counter() - start
            case.results.append(cpu / calls)
            case.wall.append(wall / calls)
