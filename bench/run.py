"""The performance suite: us and the alternatives, side by side in one run.

    python bench/run.py             # full run, checks the targets (a few minutes)
    python bench/run.py --quick     # seconds; prints the same tables, enforces nothing
    python bench/run.py --json results.json

Needs the ``bench`` extra (``pip install -e '.[bench]'``): the official ``posthog`` SDK
and structlog. The sink is the package's local server, in a process of its own on
loopback. Machines are shared and noisy, so the suite reports medians of repeated runs
and judges by ratios between cases measured in the same run. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import caller
from _sink import Sink, dead_url

import posthog_logging

BURST = Path(__file__).resolve().parent / "burst.py"
#: Growth of resident memory allowed in an outage with the default bounds: 32 MiB of
#: built events (max_queue_bytes) plus up to 10,000 captured events not yet built.
OUTAGE_RSS_BOUND_MB = 48.0


Timings = dict[str, list[float]]


def measure_calls(calls: int, repeats: int) -> tuple[Timings, Timings]:
    """Per-call CPU and wall seconds of every case, by name."""
    # The server-down case warns of what it cannot send: expected, and not for the table.
    logging.getLogger("posthog_logging").setLevel(logging.ERROR)
    with Sink() as sink:
        stdlib, stdlib_done = caller.stdlib_cases(sink.url, dead_url())
        sdk, sdk_done = caller.sdk_cases(sink.url)
        slog, slog_done = caller.structlog_cases(sink.url)
        cases = stdlib + sdk + slog
        try:
            caller.run(cases, calls, repeats)
        finally:
            stdlib_done()
            sdk_done()
            slog_done()
    return {c.name: c.results for c in cases}, {c.name: c.wall for c in cases}


def burst(impl: str, events: int, host: str | None = None) -> dict[str, Any]:
    """Run one burst in a fresh process; with no ``host``, against a fresh sink."""
    sink = Sink() if host is None else None
    try:
        url = sink.url if sink is not None else host
        done = subprocess.run(
            [sys.executable, str(BURST), impl, "--events", str(events), "--host", str(url)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{impl} burst failed:\n{done.stderr[-3000:]}")
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if sink is not None:
            report["delivered"] = sink.wait_for(events, timeout=600)
            last = sink.last_received()
            report["delivery_seconds"] = None if last is None else last - report["first_call"]
        return report
    finally:
        if sink is not None:
            sink.close()


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f}"


def print_calls(results: dict[str, list[float]], wall: dict[str, list[float]]) -> None:
    print(f"{'per call (us)':<50} {'CPU median':>10} {'min':>7} {'max':>7} {'wall median':>12}")
    for name, r in results.items():
        print(
            f"{name:<50} {fmt_us(statistics.median(r)):>10} {fmt_us(min(r)):>7} "
            f"{fmt_us(max(r)):>7} {fmt_us(statistics.median(wall[name])):>12}"
        )


def print_bursts(bursts: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'burst':<18} {'events':>8} {'caller s':>9} {'delivered':>10} {'not delivered':>14} "
        f"{'to last delivery s':>19} {'events/s':>9} {'RSS +MB':>8} {'shutdown s':>11}"
    )
    for b in bursts:
        delivered, seconds = b.get("delivered"), b.get("delivery_seconds")
        cells = (
            ("-", "-", "-", "-")
            if delivered is None or not seconds
            else (
                f"{delivered:,}",
                f"{b['events'] - delivered:,}",
                f"{seconds:.2f}",
                f"{delivered / seconds:,.0f}",
            )
        )
        print(
            f"{b['label']:<18} {b['events']:>8,} {b['caller_seconds']:>9.2f} {cells[0]:>10} "
            f"{cells[1]:>14} {cells[2]:>19} {cells[3]:>9} "
            f"{b['peak_rss_mb'] - b['rss_before_mb']:>8.1f} {b['shutdown_seconds']:>11.2f}"
        )


def check_targets(
    results: dict[str, list[float]], bursts: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    m = {name: statistics.median(r) for name, r in results.items()}

    def ratio(a: str, b: str) -> float:
        return m[a] / m[b]

    marked = "PostHogHandler, marked, in context"
    targets: list[tuple[str, float, float]] = [
        (
            "marked event / SDK capture() in context",
            ratio(marked, "posthog SDK capture(), in context"),
            0.15,
        ),
        ("marked event / QueueHandler", ratio(marked, "QueueHandler, 5 extras, in context"), 1.5),
        (
            "unmarked record / NullHandler",
            ratio("PostHogHandler, unmarked, 5 extras", "NullHandler, 5 extras"),
            1.1,
        ),
        (
            "disabled level / same with NullHandler",
            ratio("disabled level, PostHogHandler", "disabled level, NullHandler"),
            1.1,
        ),
        (
            "structlog with PostHogProcessor / without",
            ratio(
                "structlog, marked entry, PostHogProcessor", "structlog, marked entry, without us"
            ),
            2.0,
        ),
        ("marked event, server down / up", ratio(marked + ", server down", marked), 1.2),
    ]
    ours, sdk = bursts.get("ours"), bursts.get("sdk-big-queue")
    if ours is not None:
        targets.append(("burst: events not delivered", ours["events"] - ours["delivered"], 0))
        targets.append(("burst: events dropped", sum(ours["dropped"].values()), 0))
        if sdk is not None and ours["delivery_seconds"] and sdk["delivery_seconds"]:
            targets.append(
                (
                    "burst: time to last delivery / SDK's",
                    ours["delivery_seconds"] / sdk["delivery_seconds"],
                    0.2,
                )
            )
    outage = bursts.get("ours, server down")
    if outage is not None:
        targets.append(
            (
                "outage: RSS growth (MB)",
                outage["peak_rss_mb"] - outage["rss_before_mb"],
                OUTAGE_RSS_BOUND_MB,
            )
        )
        targets.append(("outage: shutdown() seconds (deadline 5)", outage["shutdown_seconds"], 5.1))
    return [
        {"target": name, "value": value, "limit": limit, "met": value <= limit}
        for name, value, limit in targets
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run; targets not enforced")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    calls, repeats, events = (2_000, 3, 10_000) if args.quick else (10_000, 15, 100_000)

    import posthog

    print(
        f"posthog-logging {posthog_logging.__version__} vs posthog {posthog.VERSION}; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}, {_cpus()} CPUs; {calls:,} calls x {repeats} repeats per case"
    )
    started = time.monotonic()
    results, wall = measure_calls(calls, repeats)
    print_calls(results, wall)

    runs: dict[str, dict[str, Any]] = {}
    plan: list[tuple[str, str, int, str | None]] = [
        ("ours", "ours", events, None),
        ("ours-capture", "ours-capture", events, None),
        ("sdk-big-queue", "sdk-big-queue", events, None),
        ("sdk", "sdk", events, None),
        ("ours, server down", "ours", events, dead_url()),
    ]
    if not args.quick:  # the SDK's shutdown in an outage takes about a minute
        plan.append(("sdk, server down", "sdk", 1_000, dead_url()))
    for label, impl, count, host in plan:
        runs[label] = burst(impl, count, host) | {"label": label}
    print_bursts(list(runs.values()))

    targets = check_targets(results, runs)
    print()
    print(f"{'target':<45} {'value':>8} {'limit':>7}")
    for t in targets:
        mark = "ok" if t["met"] else "MISSED"
        print(f"{t['target']:<45} {t['value']:>8.3f} {t['limit']:>7} {mark}")
    print(f"\n{time.monotonic() - started:.0f} s in all")
    if args.json:
        payload = {
            "python": sys.version,
            "machine": platform.machine(),
            "cpus": _cpus(),
            "calls": calls,
            "repeats": repeats,
            "cases": {
                name: {
                    "cpu_median": statistics.median(r),
                    "cpu_min": min(r),
                    "cpu_max": max(r),
                    "cpu_runs": r,
                    "wall_median": statistics.median(wall[name]),
                    "wall_runs": wall[name],
                }
                for name, r in results.items()
            },
            "bursts": runs,
            "targets": targets,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    missed = [t for t in targets if not t["met"]]
    return 1 if missed and not args.quick else 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
