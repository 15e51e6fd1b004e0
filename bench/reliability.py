"""Reliability figures: every fault, an outage across a restart, shutdown deadlines, memory.

    python bench/reliability.py [--quick] [--json FILE] [--write-docs]

Drives the real client against the package's local server on loopback, with the
server's fault injection, and prints four markdown tables:

1. the fault matrix: for each answer or failure, what the client did with a batch;
2. an outage across a process restart with the spool on: events lost and duplicated;
3. how long ``shutdown()`` takes with the server down, failing or stalled, against its
   deadline, with and without a spool;
4. resident memory of a process capturing 1,000,000 events while the server is down.

``--write-docs`` replaces the figures in docs/reliability.md (between the
``<!-- figures -->`` markers) with this run's. ``--quick`` runs smaller sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils
import json
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import posthog_logging.client as client_module
from posthog_logging import Client
from posthog_logging.server import Fault, LocalServer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _report import machine, table, write_between_markers

KEY = "phc_reliability_figures"


def wire_events(server: LocalServer) -> int:
    """Events in requests the server accepted (duplicates included)."""
    return sum(r.event_count for r in server.requests if r.status == 200)


def poll(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


# -- 1. the fault matrix ----------------------------------------------------------------


def fault_matrix(data: pathlib.Path) -> list[dict[str, Any]]:
    """Ten events in one batch meet each fault once; then the server answers normally."""
    date = email.utils.formatdate(time.time() + 1, usegmt=True)
    cases: list[tuple[str, list[Fault], dict[str, Any]]] = [
        ("408", [Fault(status=408)], {}),
        ("429 + Retry-After: 1", [Fault(status=429, headers={"Retry-After": "1"})], {}),
        ("429 + Retry-After: HTTP date", [Fault(status=429, headers={"Retry-After": date})], {}),
        ("500", [Fault(status=500)], {}),
        ("502", [Fault(status=502)], {}),
        ("503 x 3", [Fault(status=503)] * 3, {}),
        ("504", [Fault(status=504)], {}),
        ("connection dropped", [Fault(drop=True)], {}),
        ("timeout (answer after 2 s)", [Fault(delay=2.0)], {"timeout": 0.5}),
        ("connection refused (down 1 s)", [], {"down": 1.0}),
        ("413 (batch split)", [Fault(status=413)], {}),
        ("413 for one event", [Fault(), Fault(status=413)], {"flush_at": 5}),
        ("400", [Fault(status=400)], {}),
        ("401", [Fault(status=401)], {}),
        ("403", [Fault(status=403)], {}),
        ("503 beyond max_retries, spool on", [Fault(status=503)] * 2, {"spool": True}),
    ]
    rows = []
    for name, faults, options in cases:
        with LocalServer(data_dir=data / f"m{len(rows)}") as server:
            if faults:
                server.inject(*faults)
            down = options.pop("down", None)
            spool = options.pop("spool", False)
            if down:
                server.down()
                threading.Timer(down, server.up).start()
            client = Client(
                KEY,
                host=server.url,
                flush_interval=0.05,
                max_retries=1 if spool else 3,
                spool_dir=data / f"spool{len(rows)}" if spool else None,
                **options,
            )
            uuids = [client.capture("e", {"i": i}, distinct_id="u") for i in range(10)]
            start = time.monotonic()
            client.flush(15)
            elapsed = time.monotonic() - start
            client.shutdown(5)
            stats = client.stats
            # a request that timed out on our side is recorded once the server answers it
            expected = 1 if down else stats.retried + 1
            poll(lambda: len(server.requests) >= expected, 3)  # noqa: B023
            replayed = 0
            if spool:  # the next client sends what went to disk
                again = Client(KEY, host=server.url, spool_dir=data / f"spool{len(rows)}")
                poll(lambda: server.store.count() >= 10, 10)
                again.shutdown(5)
                replayed = again.stats.replayed + client.stats.replayed
            stored = {e["uuid"] for e in server.events()}
            rows.append(
                {
                    "fault": name,
                    "requests": len(server.requests),
                    "delivered": len(stored & set(uuids)),
                    "same uuids": stored <= set(uuids),
                    "retried": stats.retried,
                    "failed": stats.failed,
                    "dropped": dict(stats.dropped),
                    "spooled": stats.spooled,
                    "replayed": replayed,
                    "seconds": round(elapsed, 2),
                }
            )
    return rows


# -- 2. an outage across a restart --------------------------------------------------------

PRODUCER = """
import sys, time
import posthog_logging as posthog
client = posthog.Client({key!r}, host={host!r}, spool_dir={spool!r},
                        shutdown_timeout=2.0)
n, rate = {n}, {rate}
start = time.monotonic()
for i in range(n):
    client.capture("order", {{"i": i}}, distinct_id=f"user-{{i % 50}}")
    if rate and i % 100 == 99:
        time.sleep(max(0.0, start + (i + 1) / rate - time.monotonic()))
print(client.stats.enqueued, flush=True)
"""


def outage_restart(data: pathlib.Path, n: int, rate: int) -> dict[str, Any]:
    """A process captures n events; the server dies a third of the way in and the process
    exits during the outage; the server comes back and a new process starts."""
    spool = data / "spool"
    with LocalServer(data_dir=data / "server") as server:
        script = data / "producer.py"
        script.write_text(
            PRODUCER.format(key=KEY, host=server.url, spool=str(spool), n=n, rate=rate)
        )
        proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        poll(lambda: server.store.count() >= n // 3, 60)
        server.down()
        out, _ = proc.communicate(timeout=120)
        captured = int(out.split()[-1])
        on_disk = sum(f.stat().st_size for f in spool.glob("*.spool"))
        before = server.store.count()
        server.up()
        start = time.monotonic()
        restarted = Client(KEY, host=server.url, spool_dir=spool, flush_interval=0.05)
        poll(lambda: server.store.count() >= captured, 60)
        recovery = time.monotonic() - start
        restarted.shutdown(5)
        stored = server.store.count()
        return {
            "captured": captured,
            "delivered before the outage": before,
            "spool on disk (bytes)": on_disk,
            "delivered after the restart": stored - before,
            "lost": captured - stored,
            "sent twice (deduplicated by uuid)": wire_events(server) - stored,
            "seconds from restart to last delivery": round(recovery, 2),
            "spool files left": len(list(spool.glob("*.spool"))),
        }


# -- 3. shutdown against its deadline ------------------------------------------------------


def shutdown_times(data: pathlib.Path, deadlines: list[float]) -> list[dict[str, Any]]:
    rows = []
    hold = threading.Event()
    modes: list[tuple[str, Fault | None]] = [
        ("down (refused)", None),
        ("503 on every request", Fault(status=503)),
        ("stalled (never answers)", Fault(hold=hold)),
    ]
    for mode, fault in modes:
        for spool in (False, True):
            for deadline in deadlines:
                with LocalServer(data_dir=data / f"s{len(rows)}") as server:
                    if fault is None:
                        server.down()
                    else:
                        server.inject(fault, times=None)
                    client = Client(
                        KEY,
                        host=server.url,
                        flush_interval=0.05,
                        max_retries=10,
                        spool_dir=data / f"sp{len(rows)}" if spool else None,
                    )
                    for i in range(1000):
                        client.capture("e", {"i": i}, distinct_id="u")
                    start = time.monotonic()
                    client.shutdown(deadline)
                    took = time.monotonic() - start
                    stats = client.stats
                    rows.append(
                        {
                            "server": mode,
                            "spool": "on" if spool else "off",
                            "deadline (s)": deadline,
                            "shutdown took (s)": round(took, 3),
                            "events": 1000,
                            "spooled": stats.spooled,
                            "counted lost": stats.dropped_total + stats.failed,
                        }
                    )
    hold.set()
    return rows


# -- 4. memory during a long outage --------------------------------------------------------

RSS_SCRIPT = """
import json, os, sys, time
import posthog_logging as posthog

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

client = posthog.Client({key!r}, host={host!r}, spool_dir={spool}, flush_interval=0.5,
                        shutdown_timeout=2.0)
baseline = rss()
peak = baseline
rate = {rate}
start = time.monotonic()
for i in range({n}):
    client.capture("page_viewed", {{"i": i, "path": "/pricing", "plan": "pro"}},
                   distinct_id=f"user-{{i % 1000}}")
    if i % 1000 == 0:
        if i % 10000 == 0:
            peak = max(peak, rss())
        if rate:
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
caller = time.monotonic() - start
client.flush(2)
peak = max(peak, rss())
stats = client.stats
client.shutdown(2)
stats = client.stats
print(json.dumps({{"baseline": baseline, "peak": peak, "caller_s": caller,
                  "enqueued": stats.enqueued, "dropped": dict(stats.dropped),
                  "failed": stats.failed,
                  "spooled": stats.spooled, "pending": stats.pending}}))
"""


def memory_outage(data: pathlib.Path, n: int, paced: int, rate: int) -> list[dict[str, Any]]:
    """A tight loop of ``n`` captures without and with a spool, then ``paced`` captures at
    ``rate`` per second with a spool."""
    rows = []
    with LocalServer(data_dir=data / "server") as server:
        server.down()
        runs = [(n, 0, None), (n, 0, data / "spool"), (paced, rate, data / "spool-paced")]
        for count, per_second, spool in runs:
            script = data / "rss.py"
            script.write_text(
                RSS_SCRIPT.format(
                    key=KEY,
                    host=server.url,
                    n=count,
                    rate=per_second,
                    spool=repr(str(spool)) if spool else None,
                )
            )
            proc = subprocess.run(
                [sys.executable, str(script)], capture_output=True, text=True, timeout=600
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            disk = sum(f.stat().st_size for f in spool.glob("*.spool")) if spool else 0
            rows.append(
                {
                    "spool": "on" if spool else "off",
                    "captures": f"{count:,}" + (f" at {per_second:,}/s" if per_second else ""),
                    "RSS before (MB)": round(result["baseline"] / 2**20, 1),
                    "peak RSS (MB)": round(result["peak"] / 2**20, 1),
                    "growth (MB)": round((result["peak"] - result["baseline"]) / 2**20, 1),
                    "caller seconds": round(result["caller_s"], 1),
                    "spooled": result["spooled"],
                    "failed after retries": result["failed"],
                    "dropped": result["dropped"],
                    "spool on disk (MB)": round(disk / 2**20, 1),
                }
            )
    return rows


# -- output ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--write-docs", action="store_true", help="update docs/reliability.md")
    args = parser.parse_args()

    client_module.SPOOL_CHECK_INTERVAL = 0.5
    with tempfile.TemporaryDirectory() as tmp:
        data = pathlib.Path(tmp)
        results: dict[str, Any] = {"machine": machine(), "date": dt.date.today().isoformat()}
        print("fault matrix...", file=sys.stderr)
        results["faults"] = fault_matrix(data / "faults")
        print("outage and restart...", file=sys.stderr)
        n, rate = (6_000, 3_000) if args.quick else (30_000, 5_000)
        results["restart"] = [outage_restart(data / "restart", n, rate)]
        print("shutdown deadlines...", file=sys.stderr)
        deadlines = [1.0] if args.quick else [0.5, 1.0, 2.0, 5.0]
        results["shutdown"] = shutdown_times(data / "shutdown", deadlines)
        print("memory during an outage...", file=sys.stderr)
        if args.quick:
            results["memory"] = memory_outage(data / "memory", 100_000, 20_000, 10_000)
        else:
            results["memory"] = memory_outage(data / "memory", 1_000_000, 200_000, 10_000)

    sections = [
        f"Measured on {results['machine']}, {results['date']}, with "
        f"`python bench/reliability.py{' --quick' if args.quick else ''}`.",
        "**Fault matrix** (10 events in one batch; the fault, then normal answers; "
        "`max_retries=3`):\n\n" + table(results["faults"]),
        f"**An outage across a restart** (spool on; {n:,} events at {rate:,}/s; the server "
        "goes down a third of the way in and the process exits during the outage; the "
        "server comes back and a new process starts):\n\n" + table(results["restart"]),
        "**Shutdown against its deadline** (1,000 events queued, `max_retries=10`):\n\n"
        + table(results["shutdown"]),
        "**Memory during an outage** (server down the whole time, default bounds; a tight "
        "loop of captures, then a paced one):\n\n" + table(results["memory"]),
    ]
    text = "\n\n".join(sections)
    print(text)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    if args.write_docs:
        write_between_markers("reliability.md", "figures", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
