"""The performance suite: us and the alternatives, side by side in one run.

    python bench/run.py             # full run, checks the targets (a few minutes)
    python bench/run.py --quick     # seconds; prints the same tables, enforces nothing
    python bench/run.py --json results.json
    python bench/run.py --write-docs    # the tables into docs/performance.md

Needs the ``bench`` extra (``pip install -e '.[bench]'``): the official ``posthog`` SDK
and structlog. The sink is the package's local server, in a process of its own on
loopback. Machines are shared and noisy, so the suite reports medians of repeated runs
and judges by ratios between cases measured in the same run. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import caller
from _report import machine, table, write_between_markers
from _sink import Sink, dead_url

import posthog_logging

BURST = Path(__file__).resolve().parent / "burst.py"
#: Growth of resident memory allowed in an outage with the default bounds, as
#: docs/reliability.md states it: 32 MiB of built events (max_queue_bytes, about 37 MB
#: with the objects holding them), up to 25,000 events not yet built (about 15 MB with
#: the values they hold), and a request's body and its gzip copy (8 MB).
OUTAGE_RSS_BOUND_MB = 60.0


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


def call_rows(results: Timings, wall: Timings) -> list[dict[str, Any]]:
    """One row per case: CPU time of the caller's thread per call (median, min, max of
    the repeats) and wall-clock time per call."""
    return [
        {
            "per call": name,
            "CPU median (us)": f"{statistics.median(r) * 1e6:.2f}",
            "min": f"{min(r) * 1e6:.2f}",
            "max": f"{max(r) * 1e6:.2f}",
            "wall median (us)": f"{statistics.median(wall[name]) * 1e6:.2f}",
        }
        for name, r in results.items()
    ]


def burst_rows(bursts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for b in bursts:
        delivered, seconds = b.get("delivered"), b.get("delivery_seconds")
        arrived = delivered is not None and seconds
        rows.append(
            {
                "run": b["label"],
                "events": f"{b['events']:,}",
                "caller s": f"{b['caller_seconds']:.2f}",
                "delivered": f"{delivered:,}" if arrived else "-",
                "not delivered": f"{b['events'] - delivered:,}" if arrived else "-",
                "first call to last delivery s": f"{seconds:.2f}" if arrived else "-",
                "events/s": f"{delivered / seconds:,.0f}" if arrived else "-",
                "peak RSS growth MB": f"{b['peak_rss_mb'] - b['rss_before_mb']:.1f}",
                "shutdown s": f"{b['shutdown_seconds']:.2f}",
            }
        )
    return rows


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
    ours, sdk = bursts.get("ours"), bursts.get("SDK, big queue")
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
        {"target": name, "value": round(value, 3), "limit": limit, "met": value <= limit}
        for name, value, limit in targets
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run; targets not enforced")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--write-docs", action="store_true", help="update docs/performance.md")
    args = parser.parse_args()
    calls, repeats, events = (2_000, 3, 10_000) if args.quick else (10_000, 15, 100_000)

    import posthog

    started = time.monotonic()
    results, wall = measure_calls(calls, repeats)
    runs: dict[str, dict[str, Any]] = {}
    plan: list[tuple[str, str, int, str | None]] = [
        ("ours", "ours", events, None),
        ("ours, Client.capture", "ours-capture", events, None),
        ("SDK, big queue", "sdk-big-queue", events, None),
        ("SDK, defaults", "sdk", events, None),
        ("ours, server down", "ours", events, dead_url()),
    ]
    if not args.quick:  # the SDK's shutdown in an outage takes about a minute
        plan.append(("SDK, server down", "sdk", 1_000, dead_url()))
    for label, impl, count, host in plan:
        print(f"burst: {label}...", file=sys.stderr)
        runs[label] = burst(impl, count, host) | {"label": label}
    targets = check_targets(results, runs)

    command = "python bench/run.py" + (" --quick" if args.quick else "")
    text = "\n\n".join(
        [
            f"posthog-logging {posthog_logging.__version__} and posthog {posthog.VERSION} "
            f"on {machine()}, {time.strftime('%Y-%m-%d')}, with `{command}` "
            f"({calls:,} calls x {repeats} repeats per case; {time.monotonic() - started:.0f} s).",
            table(call_rows(results, wall)),
            table(burst_rows(list(runs.values()))),
            table(targets),
        ]
    )
    print(text)
    if args.write_docs:
        write_between_markers("performance.md", "results", text)
        line_cost = [
            row
            for row in call_rows(results, wall)
            if row["per call"]
            in (
                "NullHandler, 5 extras",
                "QueueHandler, 5 extras, in context",
                "PostHogHandler, log line to PostHog Logs, in context",
            )
        ]
        write_between_markers("logs.md", "cost", f"From `{command}`:\n\n{table(line_cost)}")
    if args.json:
        payload = {
            "python": sys.version,
            "machine": machine(),
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


if __name__ == "__main__":
    sys.exit(main())
