"""The performance suite: us and the alternatives, side by side in one run.

    python bench/run.py             # full run, checks the targets (about ten minutes)
    python bench/run.py --quick     # under a minute; the same tables, enforces nothing
    python bench/run.py --json results.json
    python bench/run.py --write-docs    # the tables into docs/performance.md and logs.md

Needs the ``bench`` extra (``pip install -e '.[bench]'``): the official ``posthog`` SDK
and structlog. Every case (``bench/case.py`` lists them) runs in a fresh process of its
own, so that no case inherits another's threads, memory or warm caches. Cases that send
do so to a sink of their own: the package's local server, in another process on
loopback, started afresh for each run and read through its SQLite store.

Machines are shared and noisy, so every case is repeated, the repeats are interleaved
(repeat 1 of every case, then repeat 2, ...) so that a noisy moment slows all cases
alike, and the suite reports medians and judges by ratios between cases of the same run.
See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine, table, write_between_markers
from _sink import Sink, dead_url
from case import CASES, CASES_BY_NAME, Case

import posthog_logging

CASE_SCRIPT = Path(__file__).resolve().parent / "case.py"
#: Growth of resident memory allowed in an outage with the default bounds, as
#: docs/reliability.md states it: 32 MiB of built events (max_queue_bytes, about 37 MB
#: with the objects holding them), up to 25,000 events not yet built (about 15 MB with
#: the values they hold), and a request's body and its gzip copy (8 MB).
OUTAGE_RSS_BOUND_MB = 60.0
#: The cases whose every event must arrive in a burst with default settings.
LOSSLESS = ["handler-marked", "capture", "structlog-ours", "log-lines"]

Run = dict[str, Any]


# -- running the cases ---------------------------------------------------------------------


def run_case(case: Case, calls: int, tree: Path | None = None) -> Run:
    """Run ``case`` once in a fresh process (with a fresh sink if it sends to one) and
    return its report, with ``delivered`` counted where the case's deliveries arrive.

    With ``tree``, the case script and the package are those of that checkout (for
    comparing two versions: ``bench/compare.py``)."""
    sink = Sink() if case.host == "sink" else None
    try:
        if sink is not None:
            host = sink.url
        elif case.host == "down":
            host = dead_url()
        else:
            host = ""  # the case sends nowhere
        script, env = CASE_SCRIPT, None
        if tree is not None:
            script = tree / "bench" / "case.py"
            env = {**os.environ, "PYTHONPATH": str(tree)}
        command = [sys.executable, str(script), case.name, "--events", str(calls)]
        done = subprocess.run(
            [*command, "--host", host], capture_output=True, text=True, timeout=1800, env=env
        )
        if done.returncode != 0:
            raise RuntimeError(f"case {case.name} failed:\n{done.stderr[-3000:]}")
        report: Run = json.loads(done.stdout.strip().splitlines()[-1])
        if case.counted in Sink.TABLES:
            arrived = 0 if sink is None else sink.wait_for(calls, 600, table=case.counted)
            report["delivered"] = arrived
        return report
    finally:
        if sink is not None:
            sink.close()


def run_all(cases: list[Case], calls: int, repeats: int) -> dict[str, list[Run]]:
    """Every case's runs, by name: repeats interleaved round-robin; a case with fewer
    repeats of its own sits out the rounds past them."""
    runs: dict[str, list[Run]] = {case.name: [] for case in cases}
    for repeat in range(repeats):
        for case in cases:
            if repeat >= (case.repeats or repeats):
                continue
            print(f"repeat {repeat + 1}/{repeats}: {case.name}...", file=sys.stderr, flush=True)
            runs[case.name].append(run_case(case, case.calls or calls))
    return runs


# -- what a run's figures mean -------------------------------------------------------------


def figures(case: Case, run: Run) -> dict[str, Any]:
    """One run's figures, per call or per event.

    ``caller_cpu_us`` and ``caller_wall_us``: the calling thread's CPU and the loop's
    wall-clock time, per call. ``total_cpu_us``: the whole process's CPU from the first
    call through shutdown, per delivered event for a case that delivers, else per call
    (None when it delivered nothing). ``total_cpu_per_call_us``: the same, per call
    whatever the case. ``not_delivered``: calls whose event did not arrive (None for a
    case that sends nothing). ``dropped``: what our client dropped, by reason (None for
    the others). ``rss_growth_mb``: peak resident memory less that before the loop.
    """
    calls, delivered = run["calls"], run["delivered"]
    total = run["process_cpu_s"]
    if case.per_delivered:
        total_us = total / delivered * 1e6 if delivered else None
    else:
        total_us = total / calls * 1e6
    dropped = run["dropped"]
    return {
        "calls": calls,
        "caller_cpu_us": run["caller_cpu_s"] / calls * 1e6,
        "caller_wall_us": run["caller_wall_s"] / calls * 1e6,
        "total_cpu_us": total_us,
        "total_cpu_per_call_us": total / calls * 1e6,
        "delivered": delivered,
        "not_delivered": None if case.counted is None else calls - delivered,
        "dropped": dropped,
        "dropped_total": None if dropped is None else sum(dropped.values()),
        "rss_growth_mb": run["peak_rss_mb"] - run["rss_before_mb"],
        "shutdown_s": run["shutdown_s"],
    }


def median(values: list[Any]) -> Any:
    """The median of the values that are not None; None if none is."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summary(case: Case, runs: list[Run]) -> dict[str, Any]:
    """A case's figures over its repeats: the median of each; the min and max of the
    timings; the worst repeat's losses; dropped reasons as medians per reason."""
    each = [figures(case, run) for run in runs]
    out: dict[str, Any] = {"repeats": len(each)}
    for key in each[0]:
        if key != "dropped":
            out[key] = median([f[key] for f in each])
    for key in ("caller_cpu_us", "caller_wall_us", "total_cpu_us"):
        known = [f[key] for f in each if f[key] is not None]
        out[key + "_min"] = min(known) if known else None
        out[key + "_max"] = max(known) if known else None
    for key in ("not_delivered", "dropped_total"):
        known = [f[key] for f in each if f[key] is not None]
        out[key + "_worst"] = max(known) if known else None
    if each[0]["dropped"] is None:
        out["dropped"] = None
    else:
        reasons = sorted({reason for f in each for reason in f["dropped"]})
        out["dropped"] = {r: median([f["dropped"].get(r, 0) for f in each]) for r in reasons}
    return out


# -- tables --------------------------------------------------------------------------------


def number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def spread(s: dict[str, Any], key: str) -> str:
    """The median, and the range of the repeats when there are several."""
    if s[key] is None or s["repeats"] < 2:
        return number(s[key])
    return f"{number(s[key])} ({number(s[key + '_min'])}-{number(s[key + '_max'])})"


def dropped_cell(dropped: dict[str, float] | None) -> str:
    if dropped is None:
        return "-"
    return ", ".join(f"{reason} {count:,.0f}" for reason, count in dropped.items()) or "0"


def case_row(case: Case, s: dict[str, Any]) -> dict[str, Any]:
    """One row of the results table, from a case's summary."""
    counted = case.counted is not None
    return {
        "case": case.name,
        "what": case.description,
        "calls": f"{s['calls']:,.0f} x {s['repeats']}",
        "caller CPU us/call": spread(s, "caller_cpu_us"),
        "caller wall us/call": spread(s, "caller_wall_us"),
        "total CPU us": spread(s, "total_cpu_us"),
        "per": "delivered" if case.per_delivered else "call",
        "delivered": number(s["delivered"], 0) if counted else "-",
        "not delivered": number(s["not_delivered"], 0) if counted else "-",
        "dropped": dropped_cell(s["dropped"]),
        "peak RSS growth MB": number(s["rss_growth_mb"], 1),
        "shutdown s": number(s["shutdown_s"]),
    }


def cost_row(row: dict[str, Any]) -> dict[str, Any]:
    """A results row cut to what a log line costs, for docs/logs.md."""
    keep = ["case", "what", "caller CPU us/call", "caller wall us/call", "total CPU us", "per"]
    return {key: row[key] for key in keep}


# -- targets -------------------------------------------------------------------------------


def check_targets(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets, judged on the medians of the repeats (losses on the worst repeat).
    A row whose limit is "-" is shown alongside, not judged."""

    def ratio(key: str, a: str, b: str) -> float | None:
        x, y = summaries[a][key], summaries[b][key]
        return None if x is None or not y else x / y

    rows: list[tuple[str, float | None, float | None]] = []
    for name in LOSSLESS:
        s = summaries[name]
        rows.append((f"burst, {name}: not delivered (worst repeat)", s["not_delivered_worst"], 0))
        if s["dropped_total_worst"] is not None:
            rows.append((f"burst, {name}: dropped (worst repeat)", s["dropped_total_worst"], 0))
    rows += [
        (
            "total CPU per delivered event: handler-marked / sdk-context",
            ratio("total_cpu_us", "handler-marked", "sdk-context"),
            0.10,
        ),
        (
            "total CPU per delivered event: handler-marked / queue-json",
            ratio("total_cpu_us", "handler-marked", "queue-json"),
            0.6,
        ),
        (
            "caller wall per call: handler-marked / queue-handler",
            ratio("caller_wall_us", "handler-marked", "queue-handler"),
            1.2,
        ),
        (
            "caller wall per call: handler-unmarked / null",
            ratio("caller_wall_us", "handler-unmarked", "null"),
            1.05,
        ),
        (
            "caller CPU per call: handler-unmarked / null",
            ratio("caller_cpu_us", "handler-unmarked", "null"),
            None,
        ),
        (
            "caller wall per call: handler-disabled / null-disabled",
            ratio("caller_wall_us", "handler-disabled", "null-disabled"),
            1.1,
        ),
        (
            "caller CPU per call: handler-disabled / null-disabled",
            ratio("caller_cpu_us", "handler-disabled", "null-disabled"),
            None,
        ),
        (
            "total CPU per call: structlog-ours / structlog-plain",
            ratio("total_cpu_per_call_us", "structlog-ours", "structlog-plain"),
            1.3,
        ),
        (
            "total CPU per call: loguru-ours / loguru-file",
            ratio("total_cpu_per_call_us", "loguru-ours", "loguru-file"),
            None,
        ),
        (
            "total CPU per delivered line (log-lines) / per record (queue-json)",
            ratio("total_cpu_us", "log-lines", "queue-json"),
            0.6,
        ),
        (
            "outage (handler-marked-down): peak RSS growth MB",
            summaries["handler-marked-down"]["rss_growth_mb"],
            OUTAGE_RSS_BOUND_MB,
        ),
        (
            "outage (handler-marked-down): shutdown() seconds (deadline 5)",
            summaries["handler-marked-down"]["shutdown_s"],
            5.1,
        ),
    ]
    return [
        {
            "target": name,
            "value": "-" if value is None else round(value, 3),
            "limit": "-" if limit is None else limit,
            "met": "-" if limit is None else value is not None and value <= limit,
        }
        for name, value, limit in rows
    ]


# -- the run -------------------------------------------------------------------------------


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def command_line() -> str:
    """The command this run was started with."""
    return " ".join(["python", "bench/run.py", *sys.argv[1:]])


def header(calls: int, repeats: int, cases: list[Case], seconds: float) -> str:
    """The libraries, the machine, the date, the command, the sizes, the run's length."""
    from posthog.version import VERSION as SDK_VERSION

    sizes = f"{calls:,} calls x {plural(repeats, 'repeat')} per case"
    for case in cases:
        if case.calls is not None or case.repeats is not None:
            own = f"{case.calls or calls:,} calls x {plural(case.repeats or repeats, 'repeat')}"
            sizes += f"; {case.name}: {own} ({case.note})"
    return (
        f"posthog-logging {posthog_logging.__version__} and posthog {SDK_VERSION} "
        f"on {machine()}, {time.strftime('%Y-%m-%d')}, with `{command_line()}` "
        f"({sizes}; every run in a fresh process; {seconds:.0f} s)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run; targets not enforced")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--write-docs", action="store_true", help="update docs/performance.md and docs/logs.md"
    )
    args = parser.parse_args()
    calls, repeats = (10_000, 1) if args.quick else (100_000, 5)
    cases = [case for case in CASES if not (args.quick and case.full_only)]

    started = time.monotonic()
    try:
        runs = run_all(cases, calls, repeats)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(e, file=sys.stderr)
        return 1
    summaries = {case.name: summary(case, runs[case.name]) for case in cases}
    targets = check_targets(summaries)
    rows = [case_row(case, summaries[case.name]) for case in cases]

    first = header(calls, repeats, cases, time.monotonic() - started)
    text = "\n\n".join([first, table(rows), table(targets)])
    print(text)
    if args.write_docs:
        write_between_markers("performance.md", "results", text)
        cost = [cost_row(row) for row in rows if row["case"] in ("null", "queue-json", "log-lines")]
        write_between_markers("logs.md", "cost", f"From `{command_line()}`:\n\n{table(cost)}")
    if args.json:
        payload = {
            "header": first,
            "python": sys.version,
            "machine": machine(),
            "calls": calls,
            "repeats": repeats,
            "cases": {
                name: {"description": CASES_BY_NAME[name].description, **s, "runs": runs[name]}
                for name, s in summaries.items()
            },
            "targets": targets,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    missed = [t for t in targets if t["met"] is False]
    return 1 if missed and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
