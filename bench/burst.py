"""One burst of events in a fresh process, printed as JSON (run by ``bench/run.py``).

    python bench/burst.py IMPL --events N --host URL [--outage]

``IMPL`` is ``ours`` (marked records through ``PostHogHandler``), ``ours-capture``
(``Client.capture``), ``sdk`` (the official SDK, default settings) or ``sdk-big-queue``
(the SDK with a queue large enough for the whole burst). Each runs in a context with an
identity, a session and two tags, with default settings otherwise. The loop runs as fast
as it can; then the process shuts its client down and reports the caller's time, the
shutdown's time, what the library says it dropped, and resident memory. Arrivals are
counted by the parent, at the sink.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from caller import EXTRA, MARKED, bench_logger, our_context, sdk_context


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


def ours(host: str, use_logging: bool) -> tuple[Callable[[], object], Any, Callable[[], Any]]:
    import posthog_logging as posthog

    client = posthog.Client("phc_bench", host=host)
    log = bench_logger("burst", posthog.PostHogHandler(client=client))

    if use_logging:
        call: Callable[[], object] = lambda: log.info("page_viewed", extra=MARKED)  # noqa: E731
    else:
        call = lambda: client.capture("page_viewed", EXTRA)  # noqa: E731

    def finish() -> dict[str, Any]:
        ok = client.shutdown()
        stats = client.stats
        return {"shutdown_ok": ok, "dropped": dict(stats.dropped), "failed": stats.failed}

    return call, our_context, finish


def sdk(host: str, big_queue: bool, events: int) -> tuple[Callable[[], object], Any, Any]:
    import posthog

    options = {"max_queue_size": events + 1} if big_queue else {}
    client = posthog.Posthog("phc_bench", host=host, **options)

    def finish() -> dict[str, Any]:
        client.shutdown()  # flushes, then joins the consumer threads
        return {}

    def context() -> contextlib.AbstractContextManager[None]:
        return sdk_context(client)

    return lambda: client.capture("page_viewed", properties=EXTRA), context, finish


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("impl", choices=["ours", "ours-capture", "sdk", "sdk-big-queue"])
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--host", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("posthog_logging").setLevel(logging.ERROR)  # an outage is expected

    if args.impl.startswith("ours"):
        call, context, finish = ours(args.host, use_logging=args.impl == "ours")
    else:
        call, context, finish = sdk(args.host, args.impl == "sdk-big-queue", args.events)
    rss_before = rss_mb()
    with context():
        first_call = time.time()
        start = time.perf_counter()
        for _ in range(args.events):
            call()
        caller_seconds = time.perf_counter() - start
    rss_after_calls = rss_mb()
    start = time.perf_counter()
    report = finish()
    shutdown_seconds = time.perf_counter() - start
    report.update(
        impl=args.impl,
        events=args.events,
        first_call=first_call,
        caller_seconds=caller_seconds,
        shutdown_seconds=shutdown_seconds,
        rss_before_mb=rss_before,
        rss_after_calls_mb=rss_after_calls,
        peak_rss_mb=peak_rss_mb(),
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
