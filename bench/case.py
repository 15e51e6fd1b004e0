"""One benchmark case in a fresh process, printed as one JSON line (run by ``bench/run.py``).

    python bench/case.py CASE --events N --host URL

The case is set up (client, logger, handler), then its call runs ``N`` times in a tight
loop, then everything is shut down: the client's ``shutdown()``, the official SDK's
``shutdown()``, or ``QueueListener.stop()``. The process prints what it measured:

- ``caller_cpu_s``: CPU time of the calling thread over the loop (``time.thread_time``),
  what the calls took from the thread that made them;
- ``caller_wall_s``: wall-clock time of the loop (``time.perf_counter``); sender threads
  run meanwhile and take their share of the GIL, so this is what the loop waited for;
- ``process_cpu_s``: CPU time of the whole process, every thread (``time.process_time``),
  from just before the first call through the end of shutdown: what the application
  paid in all for these calls and for getting their events out;
- ``shutdown_s``: wall-clock seconds the shutdown took;
- ``rss_before_mb`` and ``peak_rss_mb``: resident memory before the loop, and the most
  the process had by the end of shutdown;
- ``dropped``: what our client says it discarded, by reason (None for the others);
- ``delivered``: records the handler behind a ``QueueListener`` emitted (None for the
  others: what reaches the sink is counted there, by the parent).

``CASES`` below lists every case, with what ``bench/run.py`` needs to know to run it and
count its deliveries.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import logging.handlers
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import posthog_logging

EXTRA = {"page": "/pricing", "plan": "pro", "items": 3, "value": 49.9, "ok": True}
MARKED = {**EXTRA, "event": True}
SESSION = "01929c8e-0000-7000-8000-000000000001"


# -- the situation a call is made in -------------------------------------------------------


@contextlib.contextmanager
def our_context() -> Iterator[None]:
    """Identity, session and two tags, as a web request would have."""
    with posthog_logging.new_context():
        posthog_logging.identify_context("user_42")
        posthog_logging.set_context_session(SESSION)
        posthog_logging.tag("plan", "pro")
        posthog_logging.tag("request_id", "req_1")
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
    """A logger of its own with one handler, not propagating to the root."""
    log = logging.getLogger(f"bench.{name}")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(level)
    log.addHandler(handler)
    return log


# -- the cases -----------------------------------------------------------------------------


@dataclass
class Setup:
    """A case ready to measure: ``call`` runs in a loop inside ``context``; ``finish``
    shuts everything down and returns what it learnt (``dropped``, ``delivered``)."""

    call: Callable[[], object]
    finish: Callable[[], dict[str, Any]]
    context: Callable[[], contextlib.AbstractContextManager[Any]] = our_context


def nothing_to_finish() -> dict[str, Any]:
    return {}


def our_client(host: str) -> posthog_logging.Client:
    """Our client with default settings."""
    return posthog_logging.Client("phc_bench", host=host)


def shut_down(client: posthog_logging.Client) -> Callable[[], dict[str, Any]]:
    """A finish that shuts our client down (default ``shutdown_timeout``) and reports
    what it dropped."""

    def finish() -> dict[str, Any]:
        ok = client.shutdown()
        return {"shutdown_ok": ok, "dropped": dict(client.stats.dropped)}

    return finish


def handler_marked(host: str, events: int) -> Setup:
    client = our_client(host)
    log = bench_logger("marked", posthog_logging.PostHogHandler(client=client))
    return Setup(lambda: log.info("page_viewed", extra=MARKED), shut_down(client))


def capture(host: str, events: int) -> Setup:
    client = our_client(host)
    return Setup(lambda: client.capture("page_viewed", EXTRA), shut_down(client))


def log_lines(host: str, events: int) -> Setup:
    client = our_client(host)
    handler = posthog_logging.PostHogHandler(client=client, logs_level="INFO")
    log = bench_logger("lines", handler)
    return Setup(lambda: log.info("cart has %d items", 3, extra=EXTRA), shut_down(client))


def handler_unmarked(host: str, events: int) -> Setup:
    client = our_client(host)
    log = bench_logger("unmarked", posthog_logging.PostHogHandler(client=client))
    call = lambda: log.info("page_viewed", extra=EXTRA)  # noqa: E731
    return Setup(call, shut_down(client), contextlib.nullcontext)


def handler_disabled(host: str, events: int) -> Setup:
    client = our_client(host)
    handler = posthog_logging.PostHogHandler(client=client)
    log = bench_logger("disabled", handler, logging.WARNING)
    call = lambda: log.info("page_viewed", extra=EXTRA)  # noqa: E731
    return Setup(call, shut_down(client), contextlib.nullcontext)


def null(host: str, events: int) -> Setup:
    log = bench_logger("null", logging.NullHandler())
    call = lambda: log.info("page_viewed", extra=EXTRA)  # noqa: E731
    return Setup(call, nothing_to_finish, contextlib.nullcontext)


def null_disabled(host: str, events: int) -> Setup:
    log = bench_logger("null_disabled", logging.NullHandler(), logging.WARNING)
    call = lambda: log.info("page_viewed", extra=EXTRA)  # noqa: E731
    return Setup(call, nothing_to_finish, contextlib.nullcontext)


def queue_handler(host: str, events: int) -> Setup:
    """Records handed to a queue that nothing reads: the least a handler that defers its
    work to another thread can cost the caller."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    log = bench_logger("queue", logging.handlers.QueueHandler(records))
    return Setup(lambda: log.info("page_viewed", extra=MARKED), nothing_to_finish)


class CountingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that counts the records it emitted."""

    emitted = 0

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        self.emitted += 1


def queue_json(host: str, events: int) -> Setup:
    """The usual way to keep logging off the request's thread: a ``QueueHandler``, and a
    ``QueueListener`` whose thread writes each record as JSON (python-json-logger)."""
    from pythonjsonlogger.json import JsonFormatter

    out = CountingStreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - closed by finish
    out.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, out)
    listener.start()
    log = bench_logger("queue_json", logging.handlers.QueueHandler(records))

    def finish() -> dict[str, Any]:
        listener.stop()  # handles every record queued, then joins its thread
        out.close()
        return {"delivered": out.emitted}

    return Setup(lambda: log.info("page_viewed", extra=MARKED), finish)


def structlog_logger(processors: list[Any]) -> tuple[Any, Callable[[], None]]:
    """A production-like structlog chain rendering JSON to a file, with ``processors``
    before the renderer; and what closes the file."""
    import structlog

    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed by the returned function
    chain = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *processors,
        structlog.processors.JSONRenderer(),
    ]
    log = structlog.wrap_logger(
        structlog.WriteLogger(devnull),
        processors=chain,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    return log, devnull.close


def structlog_with(client: posthog_logging.Client) -> Setup:
    """The structlog chain with ``PostHogProcessor`` sending to ``client``."""
    from posthog_logging.structlog import PostHogProcessor

    log, close = structlog_logger([PostHogProcessor(client)])
    shutdown = shut_down(client)

    def finish() -> dict[str, Any]:
        report = shutdown()
        close()
        return report

    return Setup(lambda: log.info("page_viewed", capture=True, **EXTRA), finish)


def structlog_ours(host: str, events: int) -> Setup:
    return structlog_with(our_client(host))


def structlog_ours_idle(host: str, events: int) -> Setup:
    """As ``structlog-ours``, with the sender asleep until the loop is over (``flush_at``
    and ``flush_interval`` past it): the processor's own cost to the caller, without the
    GIL hand-overs a busy sender brings."""
    return structlog_with(
        posthog_logging.Client(
            "phc_bench",
            host=host,
            flush_at=events + 1,
            flush_interval=3600,
            max_queue_size=events + 1,
        )
    )


def structlog_plain(host: str, events: int) -> Setup:
    log, close = structlog_logger([])

    def finish() -> dict[str, Any]:
        close()
        return {}

    return Setup(lambda: log.info("page_viewed", capture=True, **EXTRA), finish)


def loguru_to_file(sinks: list[Any]) -> tuple[Any, Callable[[], None]]:
    """loguru writing each record to a file in a temporary directory (its default
    format), with ``sinks`` added after it; and what removes them and the directory."""
    import shutil
    import tempfile

    from loguru import logger

    directory = tempfile.mkdtemp(prefix="posthog-bench-loguru-")
    logger.remove()
    logger.add(os.path.join(directory, "app.log"), level="INFO")
    for sink in sinks:
        logger.add(sink, level="INFO")

    def close() -> None:
        logger.remove()  # closes the file
        shutil.rmtree(directory, ignore_errors=True)

    return logger, close


def loguru_ours(host: str, events: int) -> Setup:
    """loguru's file sink and ``PostHogSink`` on our client: a marked record."""
    from posthog_logging.loguru import PostHogSink

    client = our_client(host)
    log, close = loguru_to_file([PostHogSink(client)])
    shutdown = shut_down(client)

    def finish() -> dict[str, Any]:
        close()
        return shutdown()

    return Setup(lambda: log.info("page_viewed", event=True, **EXTRA), finish)


def loguru_file(host: str, events: int) -> Setup:
    """The same call to loguru's file sink alone: the baseline."""
    log, close = loguru_to_file([])

    def finish() -> dict[str, Any]:
        close()
        return {}

    return Setup(lambda: log.info("page_viewed", event=True, **EXTRA), finish)


def sdk(host: str, max_queue_size: int | None) -> Setup:
    """The official SDK's ``capture()`` in its own context."""
    import posthog

    if max_queue_size is None:
        client = posthog.Posthog("phc_bench", host=host)
    else:
        client = posthog.Posthog("phc_bench", host=host, max_queue_size=max_queue_size)

    def finish() -> dict[str, Any]:
        client.shutdown()  # flushes, then joins the consumer threads
        return {}

    return Setup(
        lambda: client.capture("page_viewed", properties=EXTRA),
        finish,
        lambda: sdk_context(client),
    )


def sdk_big_queue(host: str, events: int) -> Setup:
    """A queue large enough for every call: the SDK drops nothing."""
    return sdk(host, max_queue_size=events + 1)


def sdk_defaults(host: str, events: int) -> Setup:
    return sdk(host, max_queue_size=None)


@dataclass(frozen=True)
class Case:
    """A case as ``bench/run.py`` sees it.

    ``host`` is what the case sends to: ``"sink"`` (a fresh local server for each run),
    ``"down"`` (a port where nothing listens) or ``"none"`` (nothing to send to).
    ``counted`` is where its deliveries are counted: ``"events"`` or ``"logs"`` (the
    sink's tables; nothing arrives from a host that is down), ``"records"`` (by the
    process itself), or ``None`` (a case that delivers nothing: figures per call).
    ``calls`` and ``repeats``, when set, replace the run's (``note`` says why);
    ``full_only`` cases are left out of ``--quick``.
    """

    name: str
    description: str
    setup: Callable[[str, int], Setup]
    host: str
    counted: str | None
    calls: int | None = None
    repeats: int | None = None
    note: str = ""
    full_only: bool = False

    @property
    def per_delivered(self) -> bool:
        """Whether total CPU is divided by deliveries (else by calls)."""
        return self.counted is not None and self.host != "down"


CASES = [
    Case("null-disabled", "NullHandler, level disabled", null_disabled, "none", None),
    Case("handler-disabled", "PostHogHandler, level disabled", handler_disabled, "sink", None),
    Case("null", "NullHandler, 5 extras", null, "none", None),
    Case("handler-unmarked", "PostHogHandler, unmarked, 5 extras", handler_unmarked, "sink", None),
    Case("queue-handler", "QueueHandler alone, marked, in context", queue_handler, "none", None),
    Case(
        "queue-json",
        "QueueHandler + QueueListener, JSON to a file, marked, in context",
        queue_json,
        "none",
        "records",
    ),
    Case("handler-marked", "PostHogHandler, marked, in context", handler_marked, "sink", "events"),
    Case("capture", "Client.capture, in context", capture, "sink", "events"),
    Case(
        "log-lines",
        "PostHogHandler, log line to PostHog Logs, in context",
        log_lines,
        "sink",
        "logs",
    ),
    Case(
        "structlog-plain",
        "structlog JSON, marked entry, without us, in context",
        structlog_plain,
        "none",
        None,
    ),
    Case(
        "structlog-ours",
        "structlog JSON, marked entry, PostHogProcessor, in context",
        structlog_ours,
        "sink",
        "events",
    ),
    Case(
        "structlog-ours-idle",
        "structlog JSON, marked entry, PostHogProcessor, in context, sender idle in the loop",
        structlog_ours_idle,
        "sink",
        "events",
        full_only=True,
    ),
    Case(
        "loguru-file",
        "loguru to a file, marked record, without us, in context",
        loguru_file,
        "none",
        None,
    ),
    Case(
        "loguru-ours",
        "loguru to a file and PostHogSink, marked record, in context",
        loguru_ours,
        "sink",
        "events",
    ),
    Case(
        "sdk-context",
        "posthog SDK capture(), in its context, queue for every call",
        sdk_big_queue,
        "sink",
        "events",
    ),
    Case(
        "sdk-defaults",
        "posthog SDK capture(), in its context, defaults",
        sdk_defaults,
        "sink",
        "events",
    ),
    Case(
        "handler-marked-down",
        "PostHogHandler, marked, in context, server down",
        handler_marked,
        "down",
        "events",
    ),
    # The SDK retries each batch with back-off against a server that is down: its
    # shutdown takes about a minute for 1,000 events, so one run of 1,000 is enough.
    Case(
        "sdk-down",
        "posthog SDK capture(), in its context, defaults, server down",
        sdk_defaults,
        "down",
        "events",
        calls=1_000,
        repeats=1,
        note="its shutdown retries for about a minute against a server that is down",
        full_only=True,
    ),
]
CASES_BY_NAME = {case.name: case for case in CASES}


# -- measuring -----------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1e3  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_mb() -> float:
    """Current resident memory in MB (Linux)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """The most resident memory this process has had, in MB (Linux; unlike ru_maxrss,
    not carried over from the parent across exec)."""
    return _status_mb("VmHWM")


def measure(setup: Setup, calls: int) -> dict[str, Any]:
    """Run ``setup.call`` ``calls`` times inside its context, then ``setup.finish``;
    return the figures the module's docstring describes."""
    call = setup.call
    rss_before = rss_mb()
    with setup.context():
        process_start = time.process_time()
        wall_start, thread_start = time.perf_counter(), time.thread_time()
        for _ in range(calls):
            call()
        caller_cpu = time.thread_time() - thread_start
        caller_wall = time.perf_counter() - wall_start
    shutdown_start = time.perf_counter()
    report = setup.finish()
    shutdown_seconds = time.perf_counter() - shutdown_start
    process_cpu = time.process_time() - process_start
    return {
        "calls": calls,
        "caller_cpu_s": caller_cpu,
        "caller_wall_s": caller_wall,
        "process_cpu_s": process_cpu,
        "shutdown_s": shutdown_seconds,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "dropped": report.get("dropped"),
        "delivered": report.get("delivered"),
        "shutdown_ok": report.get("shutdown_ok"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("case", choices=list(CASES_BY_NAME))
    parser.add_argument("--events", type=int, required=True, help="calls to make")
    parser.add_argument("--host", default="", help="where to send (cases that send)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # An outage warns by design; and the SDK warns of every event its full queue drops.
    # What the libraries say about what they drop is counted elsewhere, not logged here.
    logging.getLogger("posthog_logging").setLevel(logging.ERROR)
    logging.getLogger("posthog").setLevel(logging.ERROR)

    setup = CASES_BY_NAME[args.case].setup(args.host, args.events)
    report = measure(setup, args.events)
    print(json.dumps({"case": args.case, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
