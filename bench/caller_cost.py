"""What a log call costs the caller's thread, side by side in one run.

    python bench/caller_cost.py            # full: 15 repeats of 20,000 calls per case
    python bench/caller_cost.py --quick    # a few seconds, for CI
    python bench/caller_cost.py --json out.json

Every case makes the same ``logger.info`` call with five extra fields; the PostHog cases
send to the package's local server on loopback, so the sender thread runs (and competes
for the GIL) as it would in an application. Prints the median, min and max per call and
the ratio of medians to the baselines; machines here are shared and noisy, so compare
ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import queue
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import posthog_logging as posthog
from posthog_logging.server import LocalServer

EXTRA = {"page": "/pricing", "plan": "pro", "items": 3, "value": 49.9, "ok": True}


def logger_with(
    handler: logging.Handler | None, name: str, level: int = logging.INFO
) -> logging.Logger:
    log = logging.getLogger(f"bench.{name}")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(level)
    if handler is not None:
        log.addHandler(handler)
    return log


def per_call(
    fn: Callable[[], object], calls: int, repeats: int, between: Callable[[], object]
) -> list[float]:
    """Seconds per call for each repeat."""
    results = []
    for _ in range(repeats):
        between()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        results.append((time.perf_counter() - start) / calls)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (no thresholds)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    calls, repeats = (2_000, 5) if args.quick else (20_000, 15)

    with tempfile.TemporaryDirectory() as data, LocalServer(data_dir=data) as server:
        client = posthog.Client(
            "phc_bench", host=server.url, max_queue_size=calls * 2, flush_at=500
        )
        flush = lambda: client.flush(30)  # noqa: E731 - a tiny callback
        nothing = lambda: None  # noqa: E731

        disabled = logger_with(posthog.PostHogHandler(client=client), "disabled", logging.WARNING)
        null = logger_with(logging.NullHandler(), "null")
        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        queued = logger_with(logging.handlers.QueueHandler(q), "queue")
        ours = logger_with(posthog.PostHogHandler(client=client), "posthog")
        marked = {**EXTRA, "event": True}

        def drain_queue() -> None:
            while not q.empty():
                q.get_nowait()

        def in_context(fn: Callable[[], object]) -> Callable[[], object]:
            def run() -> object:
                return fn()

            return run

        cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            (
                "disabled level (PostHogHandler attached)",
                lambda: disabled.info("x", extra=EXTRA),
                nothing,
            ),
            ("NullHandler, 5 extras", lambda: null.info("page_viewed", extra=EXTRA), nothing),
            (
                "QueueHandler(SimpleQueue), 5 extras",
                lambda: queued.info("page_viewed", extra=marked),
                drain_queue,
            ),
            (
                "PostHogHandler, unmarked record, 5 extras",
                lambda: ours.info("page_viewed", extra=EXTRA),
                nothing,
            ),
            (
                "PostHogHandler, marked event in a context",
                lambda: ours.info("page_viewed", extra=marked),
                flush,
            ),
            (
                "Client.capture in a context, 5 properties",
                lambda: client.capture("page_viewed", EXTRA),
                flush,
            ),
        ]

        results: dict[str, list[float]] = {}
        with posthog.new_context():
            posthog.identify_context("user_42")
            posthog.set_context_session("01929c8e-0000-7000-8000-000000000001")
            posthog.tag("plan", "pro")
            posthog.tag("request_id", "req_1")
            for name, fn, between in cases:
                results[name] = per_call(in_context(fn), calls, repeats, between)
        client.shutdown()
        stats = client.stats

    medians = {name: statistics.median(r) for name, r in results.items()}
    null_median = medians["NullHandler, 5 extras"]
    queue_median = medians["QueueHandler(SimpleQueue), 5 extras"]
    print(f"Python {sys.version.split()[0]}, {calls} calls x {repeats} repeats per case")
    print(f"{'case':<44} {'median':>9} {'min':>9} {'max':>9} {'/Null':>7} {'/Queue':>7}")
    for name, r in results.items():
        m = medians[name]
        print(
            f"{name:<44} {m * 1e6:>7.2f}us {min(r) * 1e6:>7.2f}us {max(r) * 1e6:>7.2f}us "
            f"{m / null_median:>6.2f}x {m / queue_median:>6.2f}x"
        )
    print(f"delivered {stats.sent} events, dropped {dict(stats.dropped)}, failed {stats.failed}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "python": sys.version,
                    "calls": calls,
                    "repeats": repeats,
                    "cases": {
                        n: {"median_s": medians[n], "min_s": min(r), "max_s": max(r)}
                        for n, r in results.items()
                    },
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
