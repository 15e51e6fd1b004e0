"""Reliability figures: every fault, an outage across a restart, shutdown deadlines, memory.

    python bench/reliability.py [--quick] [--json FILE] [--write-docs]

Drives the real client against the package's local server on loopback, with the
server's fault injection, and prints four markdown tables:

1. the fault matrix: for each answer or failure, what the client did with a batch;
2. an outage across a process restart with the spool on: events lost and duplicated;
3. how long ``shutdown()`` takes with the server down, failing or stalled, against its
   deadline, with and without a spool;
4. resident memory of a process capturing 1,000,000 events while the server is down;
5. hostile conditions: signals and finalisers that log, servers that redirect, drip,
   send huge bodies or never answer, a spool on a file system that fills up or turns
   read-only (those two need root, to mount a tmpfs; they are reported as skipped
   otherwise).

``--write-docs`` replaces the figures in docs/reliability.md (between the
``<!-- figures -->`` markers) with this run's. ``--quick`` runs smaller sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import posthog_logging.delivery.backlog as backlog_module
from posthog_logging import Client
from posthog_logging.server import Fault, LocalServer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from _report import machine, table, write_between_markers

# The hostile conditions are the test suite's own (tests/test_hostile.py), measured here.
from tests import rawhttp
from tests.test_hostile import FINALISERS, SIGNAL_WHILE_READING_STATS, SIGNALS

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
        # 10, then 5, then 2 refused: split each time; then 1 refused alone: dropped.
        ("413 down to one event", [Fault(status=413)] * 4, {}),
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


# -- 5. hostile conditions ------------------------------------------------------------------


def run_json(source: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


HUGE_BODY = """
import json, sys
from posthog_logging import Client

def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) * 1024

client = Client("phc_reliability", host=sys.argv[1], max_retries=0)
client.capture("warm up", distinct_id="u")  # the HTTP stack's own memory, before the peak
client.flush(10)
before = peak()
client.capture("e", distinct_id="u")
client.flush(60)
client.shutdown(2)
print(json.dumps({"growth": peak() - before, "failed": client.stats.failed}))
"""


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


def tmpfs(point: pathlib.Path, size: str) -> None:
    point.mkdir(mode=0o700)
    options = f"size={size},mode=0700"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)


def spool_while_down(server: LocalServer, spool: pathlib.Path, n: int) -> Client:
    server.down()
    client = Client(KEY, host=server.url, spool_dir=spool, spool_max_bytes=64 << 20)
    for i in range(n):
        client.capture("spooled", {"i": i, "pad": "x" * 200}, distinct_id="u")
    client.shutdown(2)
    return client


def hostile(data: pathlib.Path) -> list[dict[str, Any]]:
    """Each condition once: what happened, and whether every event was accounted for."""
    rows: list[dict[str, Any]] = []

    def row(condition: str, outcome: str, accounted: bool | None, seconds: float) -> None:
        rows.append(
            {
                "condition": condition,
                "outcome": outcome,
                "every event sent or counted": "-" if accounted is None else accounted,
                "seconds": round(seconds, 2),
            }
        )

    start = time.monotonic()
    with rawhttp.RawServer(rawhttp.never_answer) as stalled:
        result = run_json(SIGNAL_WHILE_READING_STATS, stalled.url)
    calls, dropped = result["calls"], result["dropped"]
    row(
        "SIGALRM every 0.3 ms logs and reads `stats` while the main thread reads `stats` "
        "(queue full: the sender is stuck in a hook) for 1.5 s",
        f"no deadlock; {calls} handler calls, each drop counted "
        f"({', '.join(f'{reason} {n}' for reason, n in sorted(dropped.items()))})",
        sum(dropped.values()) == calls + result["dropped_filling"],
        time.monotonic() - start,
    )
    for label, script, name in (
        ("20,000 finalisers (cyclic GC) log an event", FINALISERS, "from_del"),
        ("SIGALRM every 0.2 ms logs an event during 20,000 log calls", SIGNALS, "from_signal"),
    ):
        with LocalServer(data_dir=data / f"h{len(rows)}") as server:
            start = time.monotonic()
            result = run_json(script, server.url)
            logged = result.get("logged", result.get("calls", 0))
            poll(lambda: server.store.count() >= logged + result["work"], 10)  # noqa: B023
            stored = len(server.events(event=name))
            lost = sum(result["dropped"].values())
            counted = ", ".join(f"{v} {k}" for k, v in result["dropped"].items()) or "none"
            row(
                label,
                f"{stored:,} of {logged:,} stored; counted: {counted}",
                stored + lost == logged,
                time.monotonic() - start,
            )
    for status in (302, 307):
        with rawhttp.RawServer(rawhttp.ok) as elsewhere:
            redirect = rawhttp.answer(status, "Moved", {"Location": elsewhere.url + "/batch/"})
            with rawhttp.RawServer(redirect) as origin:
                start = time.monotonic()
                client = Client(KEY, host=origin.url, max_retries=3)
                client.capture("e", distinct_id="u")
                client.flush(5)
                client.shutdown(2)
            stats = client.stats
            row(
                f"{status} to another host",
                f"{len(elsewhere.requests)} requests reached the other host; "
                f"{stats.failed} failed, {stats.retried} retried",
                stats.failed == 1,
                time.monotonic() - start,
            )
    with rawhttp.RawServer(rawhttp.drip(0.5, headers_too=True)) as dripping:
        client = Client(KEY, host=dripping.url, timeout=2.0, max_retries=0)
        client.capture("e", distinct_id="u")
        poll(lambda: bool(dripping.requests), 5)
        start = time.monotonic()
        poll(lambda: client.stats.failed == 1, 30)
        took = time.monotonic() - start
        client.shutdown(1)
        row(
            "headers a byte every 0.5 s, `timeout=2`",
            f"request ended after {took:.2f} s; {client.stats.failed} failed",
            client.stats.failed == 1,
            took,
        )
    with rawhttp.RawServer(rawhttp.never_answer) as stalled:
        client = Client(KEY, host=stalled.url, timeout=60)
        client.capture("e", distinct_id="u")
        poll(lambda: bool(stalled.requests), 5)
        start = time.monotonic()
        client.shutdown(1)
        took = time.monotonic() - start
        sender = client._sender.thread
        ended = poll(lambda: sender is None or not sender.is_alive(), 2)
        row(
            "`shutdown(1)` during a request that never gets an answer (`timeout=60`)",
            f"shutdown took {took:.2f} s; the request and sender thread "
            + ("ended" if ended else "lived on"),
            client.stats.dropped_total == 1,
            took,
        )
    with rawhttp.RawServer(rawhttp.huge_body(400, 300 << 20)) as huge:
        start = time.monotonic()
        result = run_json(HUGE_BODY, huge.url)
        poll(lambda: len(huge.connections) >= 2 and huge.connections[-1].ended.is_set(), 10)
        written = huge.connections[-1].bytes_sent
        row(
            "a 400 with a 300 MB body",
            f"peak RSS grew {result['growth'] / 2**20:.1f} MB; the server wrote "
            f"{written / 2**20:.1f} MB before the client closed",
            result["failed"] == 2,  # the warm-up's and this one's
            time.monotonic() - start,
        )
    with LocalServer(data_dir=data / "foreign") as server:
        start = time.monotonic()
        spool = data / "foreign-spool"
        spool_while_down(server, spool, 20)
        foreign = b'{"not": "an event"}'
        (segment,) = spool.glob("*.spool")
        with segment.open("ab") as file:
            file.write(b"%08x %s\n" % (zlib.crc32(foreign), foreign))
        server.up()
        client = Client(KEY, host=server.url, spool_dir=spool)
        poll(lambda: server.store.count() >= 20, 10)
        client.shutdown(2)
        refused = sum(1 for r in server.requests if r.status == 400)
        row(
            "a spooled line with a good checksum that is not an event",
            f"{server.store.count()} of 20 delivered, {refused} answered 400; "
            f"skipped: {client.stats.dropped.get('spool_corrupt', 0)}",
            server.store.count() == 20,
            time.monotonic() - start,
        )
    if not can_mount():
        rows.append(
            {
                "condition": "spool on a full or read-only file system",
                "outcome": "skipped: needs root to mount a tmpfs",
                "every event sent or counted": "-",
                "seconds": 0,
            }
        )
        return rows
    full = data / "full"
    tmpfs(full, "256k")
    try:
        with LocalServer(data_dir=data / "full-server") as server:
            start = time.monotonic()
            first = spool_while_down(server, full, 1_500)
            spooled, lost = first.stats.spooled, first.stats.dropped.get("spool_error", 0)
            server.up()
            again = Client(KEY, host=server.url, spool_dir=full)
            poll(lambda: server.store.count() >= spooled, 10)
            again.shutdown(2)
            delivered = server.store.count()
            row(
                "the spool's file system (256 kB) fills up in a write",
                f"{spooled} counted spooled, {lost} counted lost; {delivered} delivered later",
                delivered == spooled and spooled + lost == 1_500,
                time.monotonic() - start,
            )
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)
    readonly = data / "readonly"
    tmpfs(readonly, "1m")
    try:
        with LocalServer(data_dir=data / "ro-server") as server:
            start = time.monotonic()
            spool_while_down(server, readonly, 300)
            subprocess.run(["mount", "-o", "remount,ro", str(readonly)], check=True)
            server.up()
            client = Client(KEY, host=server.url, spool_dir=readonly)
            poll(lambda: server.store.count() >= 300, 10)
            client.capture("after", distinct_id="u")
            client.flush(5)
            poll(lambda: server.store.count() >= 301, 5)
            client.shutdown(2)
            row(
                "the spool's file system turns read-only: sent segments cannot be deleted",
                f"300 spooled events went out as {wire_events(server) - 1} on the wire",
                wire_events(server) == 301,
                time.monotonic() - start,
            )
    finally:
        subprocess.run(["umount", "-l", str(readonly)], check=False)
    return rows


# -- output ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--write-docs", action="store_true", help="update docs/reliability.md")
    args = parser.parse_args()

    backlog_module.SPOOL_CHECK_INTERVAL = 0.5
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
        print("hostile conditions...", file=sys.stderr)
        results["hostile"] = hostile(data / "hostile")

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
        "**Hostile conditions** (each once; the scripts are those of "
        "`tests/test_hostile.py`):\n\n" + table(results["hostile"]),
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
