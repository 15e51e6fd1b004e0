"""Hostile conditions: what an attacker, an unlucky operator or odd application code does.

Each condition is driven for real: signals from a real interval timer, finalisers run by
the cyclic garbage collector, raw-socket servers that redirect, drip, send huge bodies or
never answer, a tmpfs that fills up or is remounted read-only (where this user may mount
one), forked processes. Scripts that may hang when a guarantee breaks run in their own
process, with a deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import posthog_logging
from posthog_logging import Client, ContextFilter, PostHogHandler
from posthog_logging.delivery.sender import Sender
from posthog_logging.exceptions import UnsafeSpoolDirectory
from posthog_logging.server import Fault, LocalServer

from . import rawhttp
from .conftest import API_KEY
from .forking import needs_fork
from .helpers import accepted_event_count
from .polling import wait_until

LIBRARY_LOGGER = "posthog_logging"


def run_script(source: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run ``source`` in a new interpreter; return the JSON it prints last."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(source), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the script hung for {timeout:g}s: {exc.stderr!r}") from None
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def names(server: LocalServer, name: str) -> int:
    return len(server.events(event=name))


# -- 1. no deadlock: counting and reading the counters from a signal handler -------------

SIGNAL_WHILE_READING_STATS = """
import json, logging, signal, sys, threading, time
from posthog_logging import Client, PostHogHandler

stuck = threading.Event()

def hanging(event):
    stuck.set()
    threading.Event().wait()  # the sender is stuck here for good: the queue fills
    return event

client = Client("phc_hostile", host=sys.argv[1], max_queue_size=5_000, timeout=60,
                flush_interval=0.05, shutdown_timeout=1, before_send=hanging)
log = logging.getLogger("app")
log.propagate = False
log.setLevel(logging.INFO)
log.addHandler(PostHogHandler(client=client))

client.capture("first", distinct_id="u")
stuck.wait(10)
filled = dropped_filling = 0
while filled < 4_999:  # with the one the hook holds, the queue is full
    if client.capture("fill", distinct_id="u") is None:
        dropped_filling += 1
    else:
        filled += 1
calls = 0

def handler(signum, frame):
    global calls
    calls += 1
    log.info("from_signal", extra={"event": True})  # the queue is full: a counted drop
    client.stats  # and a read of the counters, nested in the read it interrupted

signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.0003, 0.0003)
end = time.monotonic() + 1.5
while time.monotonic() < end:
    client.stats
signal.setitimer(signal.ITIMER_REAL, 0)
stats = client.stats
print(json.dumps({"calls": calls, "dropped": dict(stats.dropped),
                  "dropped_filling": dropped_filling}))
"""


def test_signal_handler_that_logs_and_reads_stats_never_deadlocks() -> None:
    """A handler that logs a marked event (dropped: the queue is full) and reads the
    counters, landing again and again inside ``client.stats`` on the main thread: the
    process goes on, and every drop is counted."""
    with rawhttp.RawServer(rawhttp.never_answer) as stalled:
        result = run_script(SIGNAL_WHILE_READING_STATS, stalled.url)
    assert result["calls"] > 50, "the timer did not interrupt the reads often enough"
    # Each handler call's event is dropped (the queue is full) and counted: as queue_full,
    # or as reentrant when another signal landed while it was being sent after an emit.
    dropped = result["dropped"]
    assert set(dropped) <= {"queue_full", "reentrant"}, result
    assert sum(dropped.values()) == result["calls"] + result["dropped_filling"], result


# -- 2. a spooled segment that cannot be deleted is not sent again and again -------------


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


needs_mount = pytest.mark.skipif(
    not can_mount(), reason="needs root to mount a tmpfs (a full or read-only file system)"
)


@pytest.fixture
def tmpfs(tmp_path: pathlib.Path) -> Iterator[Callable[..., pathlib.Path]]:
    """Mount small tmpfs file systems under ``tmp_path``; unmounted afterwards."""
    mounted: list[pathlib.Path] = []

    def mount(name: str, size: str = "1m") -> pathlib.Path:
        point = tmp_path / name
        point.mkdir(mode=0o700)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(point)],
            check=True,
        )
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


def spool_while_down(server: LocalServer, spool: pathlib.Path, n: int, **options: Any) -> Client:
    """A client captures ``n`` events while the server is down and shuts down: all on disk."""
    server.down()
    client = Client(API_KEY, host=server.url, spool_dir=spool, flush_interval=0.05, **options)
    for i in range(n):
        client.capture("spooled", {"i": i, "pad": "x" * 200}, distinct_id="u")
    client.shutdown(2)
    return client


@needs_mount
def test_undeletable_segment_on_a_read_only_file_system_is_sent_once(
    tmpfs: Callable[..., pathlib.Path],
    server: LocalServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The spool's file system turns read-only: a replayed segment cannot be deleted. Its
    events go out once; the client says so, and sends what comes next as usual."""
    spool = tmpfs("spool")
    first = spool_while_down(server, spool, 300)
    assert first.stats.spooled == 300
    subprocess.run(["mount", "-o", "remount,ro", str(spool)], check=True)
    server.up()
    caplog.set_level(logging.WARNING, LIBRARY_LOGGER)
    client = Client(API_KEY, host=server.url, spool_dir=spool, flush_interval=0.05)
    try:
        server.wait_for_events(300, timeout=10)
        client.capture("after", distinct_id="u")
        assert client.flush(5)
        server.wait_for_events(1, event="after", timeout=5)
        assert accepted_event_count(server) == 301  # the segment went out once, not in a loop
        assert client.stats.replayed == 300
    finally:
        client.shutdown(2)
    assert any("could not delete the sent spool file" in r.getMessage() for r in caplog.records)


@needs_mount
def test_segment_that_cannot_be_deleted_is_emptied_for_the_next_run(
    tmp_path: pathlib.Path, server: LocalServer
) -> None:
    """A segment file that cannot be unlinked (here: a mount point, EBUSY) but can be
    written is emptied once sent, so the next process sends none of it again."""
    spool = tmp_path / "spool"
    spool_while_down(server, spool, 50)
    (segment,) = spool.glob("*.spool")
    subprocess.run(["mount", "--bind", str(segment), str(segment)], check=True)
    try:
        server.up()
        client = Client(API_KEY, host=server.url, spool_dir=spool, flush_interval=0.05)
        server.wait_for_events(50, timeout=10)
        client.shutdown(2)
        assert segment.exists() and segment.stat().st_size == 0
        again = Client(API_KEY, host=server.url, spool_dir=spool, flush_interval=0.05)
        again.capture("after", distinct_id="u")
        assert again.flush(5)
        again.shutdown(2)
        assert accepted_event_count(server) == 51
        assert again.stats.replayed == 0
    finally:
        subprocess.run(["umount", "-l", str(segment)], check=False)


# -- 3. every event logged from a finaliser or a signal handler is sent or counted -------

#: A client on the server given as the first argument, and a logger "app" sending to it.
SCRIPT_HEAD = """
import gc, json, logging, signal, sys
from posthog_logging import Client, PostHogHandler

client = Client("phc_hostile", host=sys.argv[1], flush_interval=0.05, max_queue_size=100_000)
log = logging.getLogger("app")
log.propagate = False
log.setLevel(logging.INFO)
log.addHandler(PostHogHandler(client=client))
"""

FINALISERS = (
    SCRIPT_HEAD
    + """
class Noisy:
    def __init__(self, i):
        self.i = i
        self.me = self  # a cycle: only the cyclic collector frees it, on whatever thread
    def __del__(self):
        log.info("from_del", extra={"event": True, "i": self.i})

gc.set_threshold(100, 5, 5)
N = 20_000
for i in range(N):
    Noisy(i)
    if i % 4 == 0:
        log.info("work", extra={"event": True, "i": i})
gc.collect()
client.flush(30)
stats = client.stats
client.shutdown(5)
print(json.dumps({"logged": N, "work": N // 4, "dropped": dict(stats.dropped)}))
"""
)

SIGNALS = (
    SCRIPT_HEAD
    + """calls = 0

def handler(signum, frame):
    global calls
    calls += 1
    log.info("from_signal", extra={"event": True, "n": calls})

signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
N = 20_000
for i in range(N):
    log.info("work", extra={"event": True, "i": i})
signal.setitimer(signal.ITIMER_REAL, 0)
client.flush(30)
stats = client.stats
client.shutdown(5)
print(json.dumps({"calls": calls, "work": N, "dropped": dict(stats.dropped)}))
"""
)


def test_events_from_finalisers_are_all_sent_or_counted(server: LocalServer) -> None:
    """Finalisers the cyclic GC runs (on the application's thread, inside an emit, or on
    the sender's thread) log 20,000 events: each is stored or counted as dropped."""
    result = run_script(FINALISERS, server.url, timeout=120)
    wait_until(lambda: names(server, "work") == result["work"], 10, "the work events")
    stored = names(server, "from_del")
    dropped = result["dropped"]
    assert set(dropped) <= {"in_library_code", "reentrant"}
    assert stored + sum(dropped.values()) == result["logged"]


def test_events_from_signal_handlers_are_sent(server: LocalServer) -> None:
    """A signal handler that logs, landing thousands of times in the middle of other
    log calls: its events are sent once the interrupted call is done (any it could not
    send are counted), and none of the interrupted calls' events is lost."""
    result = run_script(SIGNALS, server.url, timeout=120)
    wait_until(lambda: names(server, "work") == result["work"], 10, "the work events")
    assert result["calls"] > 500, "the timer did not fire often enough"
    stored = names(server, "from_signal")
    dropped = result["dropped"]
    assert set(dropped) <= {"reentrant"}
    assert stored + sum(dropped.values()) == result["calls"]
    assert stored >= 0.95 * result["calls"]


def test_record_logged_by_code_the_emit_calls_is_sent_after_it(
    make_client: Callable[..., Client], server: LocalServer, attach: Callable[..., logging.Logger]
) -> None:
    """A message argument whose __str__ logs (code below the emit): its event is sent
    once the emit is done; one level deep, so it cannot loop, and what is not sent is
    counted."""
    client = make_client()
    log = attach(PostHogHandler(client=client, logs_level="WARNING"))

    class Chatty:
        def __str__(self) -> str:  # called when the emit formats its line
            log.info("from_str", extra={"event": True})
            return "chatty"

    log.warning("outer %s", Chatty(), extra={"event": "outer"})
    assert client.flush(5)
    server.wait_for_events(1, event="outer")
    server.wait_for_events(1, event="from_str")
    assert [line["body"] for line in server.store.logs()] == ["outer chatty"]
    assert client.stats.dropped == {}


# -- 4. redirects are never followed ------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_an_error_and_the_body_goes_nowhere_else(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A redirect to another host is not followed: neither the body (with the key) nor a
    GET goes there; the batch fails once, unretried, and the warning names the target."""
    caplog.set_level(logging.WARNING, LIBRARY_LOGGER)
    with rawhttp.RawServer(rawhttp.ok) as elsewhere:
        target = elsewhere.url + "/batch/"
        redirect = rawhttp.answer(status, "Moved", {"Location": target})
        with rawhttp.RawServer(redirect) as origin:
            client = Client(API_KEY, host=origin.url, flush_interval=0.05, max_retries=3)
            client.capture("e", distinct_id="u")
            client.flush(5)
            client.shutdown(2)
            assert len(origin.requests) == 1
        assert elsewhere.requests == []
    stats = client.stats
    assert (stats.sent, stats.failed, stats.retried) == (0, 1, 0)
    warnings = [r.getMessage() for r in caplog.records if r.name == LIBRARY_LOGGER]
    assert any(f"HTTP {status}" in w and target in w for w in warnings), warnings


# -- 5. a request has a total deadline; shutdown ends a request in flight ------------------


def test_a_dripping_body_is_cut_at_the_request_deadline() -> None:
    """A 200, then a byte of body every 0.1 s: each read is quick, but the request as a
    whole ends at ``timeout`` (the batch was accepted: it counts as sent), instead of
    holding the sender for as long as the server likes."""
    with rawhttp.RawServer(rawhttp.drip(0.1)) as dripping:
        client = Client(API_KEY, host=dripping.url, timeout=1.0, flush_interval=0.05)
        try:
            client.capture("e", distinct_id="u")
            wait_until(lambda: dripping.connections, 5, "the request")
            first = dripping.connections[0]
            assert first.ended.wait(5)
            assert first.closed_by_peer
            assert first.bytes_sent < 200  # about ten drips a second, for one second
            wait_until(lambda: client.stats.sent == 1, 2, "the batch counted sent")
        finally:
            client.shutdown(1)


def test_dripping_headers_are_cut_at_the_request_deadline_and_retried() -> None:
    """The status line and headers a byte every 0.1 s: no answer by ``timeout``; the
    request ends there and is tried again."""
    with rawhttp.RawServer(rawhttp.drip(0.1, headers_too=True)) as dripping:
        client = Client(API_KEY, host=dripping.url, timeout=1.0, flush_interval=0.05)
        try:
            client.capture("e", distinct_id="u")
            wait_until(lambda: len(dripping.requests) >= 2, 10, "a second try")
            first = dripping.connections[0]
            assert first.ended.wait(1)
            assert first.bytes_sent < 20
            assert client.stats.sent == 0
        finally:
            client.shutdown(1)


def test_shutdown_ends_a_request_in_flight() -> None:
    """A request that began before shutdown(), with a long timeout, on a server that never
    answers: shutdown() returns by its deadline, the connection is closed and the sender
    thread is gone, rather than living on until the request's own timeout."""
    with rawhttp.RawServer(rawhttp.never_answer) as stalled:
        client = Client(API_KEY, host=stalled.url, timeout=60, flush_interval=0.05)
        client.capture("e", distinct_id="u")
        wait_until(lambda: stalled.requests, 5, "the request")
        start = time.monotonic()
        assert client.shutdown(1) is False
        assert time.monotonic() - start < 2
        assert stalled.connections[0].ended.wait(2)
        sender = client._sender.thread
        assert sender is not None
        wait_until(lambda: not sender.is_alive(), 2, "the sender thread to end")
    assert client.stats.dropped == {"shutdown_timeout": 1}


# -- 6. an answer's body is read up to a small cap -----------------------------------------


def test_a_huge_error_body_is_not_read() -> None:
    """A 400 with a 300 MB body: the client reads the start of it (for the error's
    detail), closes the connection and goes on; the server gets to write a small part."""
    with rawhttp.RawServer(rawhttp.huge_body(400, 300 << 20)) as server:
        client = Client(API_KEY, host=server.url, flush_interval=0.05, max_retries=0)
        client.capture("e", distinct_id="u")
        client.flush(10)
        client.shutdown(2)
        assert server.connections[0].ended.wait(10)
        assert server.connections[0].bytes_sent < 64 << 20
    assert client.stats.failed == 1


# -- 7. a full disk: spool writes are all or nothing ---------------------------------------


@needs_mount
def test_full_disk_what_is_counted_spooled_is_what_is_delivered(
    tmpfs: Callable[..., pathlib.Path], server: LocalServer
) -> None:
    """The spool's file system fills up in the middle of a write. What the counters say
    went to disk is exactly what the next process delivers; what they count as lost
    (``spool_error``) is not delivered."""
    spool = tmpfs("spool", size="256k")
    first = spool_while_down(server, spool, 1_500, spool_max_bytes=64 << 20)
    stats = first.stats
    assert stats.dropped.get("spool_error", 0) > 0, "the disk did not fill up"
    # A batch grows to megabytes under load; it goes to disk flush_at events at a time,
    # so a disk of 256 kB still takes what fits rather than nothing.
    assert stats.spooled > 0, "nothing was written before the disk filled"
    assert stats.spooled + stats.dropped["spool_error"] == 1_500
    server.up()
    again = Client(API_KEY, host=server.url, spool_dir=spool, flush_interval=0.05)
    try:
        server.wait_for_events(stats.spooled, timeout=10)
        again.capture("after", distinct_id="u")
        assert again.flush(5)
        server.wait_for_events(1, event="after")
    finally:
        again.shutdown(2)
    assert names(server, "spooled") == stats.spooled
    assert again.stats.dropped == {}


# -- 8. smaller ones -------------------------------------------------------------------------


def test_a_spooled_line_that_is_not_an_event_is_skipped_not_sent(
    tmp_path: pathlib.Path, server: LocalServer
) -> None:
    """A line with a right checksum but that is not an event would sink its whole batch
    (400): it is skipped and counted, and the 20 good ones are delivered."""
    spool = tmp_path / "spool"
    spool_while_down(server, spool, 20)
    (segment,) = spool.glob("*.spool")
    foreign = b'{"not": "an event"}'
    with segment.open("ab") as file:
        file.write(b"%08x %s\n" % (zlib.crc32(foreign), foreign))
    server.up()
    client = Client(API_KEY, host=server.url, spool_dir=spool, flush_interval=0.05)
    try:
        server.wait_for_events(20, timeout=10)
    finally:
        client.shutdown(2)
    assert all(r.status == 200 for r in server.requests)
    assert client.stats.replayed == 20
    assert client.stats.dropped == {"spool_corrupt": 1}


def test_an_event_whose_building_hangs_is_accounted_at_shutdown(
    make_client: Callable[..., Client],
) -> None:
    """A property whose __str__ never returns holds the sender; shutdown() still returns
    by its deadline and counts the event, rather than leaving it pending for good."""
    release = threading.Event()

    class Hangs:
        def __str__(self) -> str:
            release.wait(30)
            return "released"

    client = make_client()
    try:
        client.capture("stuck", {"value": Hangs()}, distinct_id="u")
        wait_until(
            lambda: client.stats.pending == 1 and not client._sender.intake.items, 5, "the build"
        )
        start = time.monotonic()
        client.shutdown(1)
        assert time.monotonic() - start < 2
        stats = client.stats
        assert (stats.enqueued, stats.pending) == (1, 0)
        assert stats.dropped == {"shutdown_timeout": 1}
    finally:
        release.set()


@pytest.mark.parametrize(
    "timestamp",
    [
        math.nan,
        math.inf,
        -math.inf,
        1e20,
        -1e12,
        -1,
        10**400,
        dt.datetime.min,
        dt.datetime.max.replace(tzinfo=dt.timezone.utc),
        dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc),
    ],
    ids=repr,
)
def test_timestamp_out_of_range_is_a_clear_error_at_the_call(
    client: Client, timestamp: Any
) -> None:
    with pytest.raises(ValueError, match="timestamp must be a time from 1970 to 9999"):
        client.capture("e", distinct_id="u", timestamp=timestamp)
    assert client.stats.enqueued == 0


def test_timestamps_at_the_edges_of_the_range_are_sent(client: Client, server: LocalServer) -> None:
    edges = [0, 253_402_300_799.5, dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)]
    for timestamp in edges:
        assert client.capture("edge", distinct_id="u", timestamp=timestamp)
    assert client.flush(5)
    stamps = sorted(e["timestamp"] for e in server.wait_for_events(3, event="edge"))
    assert stamps[0].startswith("1970-01-01T00:00:00") and stamps[-1].startswith("9999-12-31")


class RaisingGetattr(Exception):
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} here")


class RaisingCause(Exception):
    @property  # type: ignore[override]
    def __cause__(self) -> Any:
        raise RuntimeError("no cause")

    @property  # type: ignore[override]
    def __traceback__(self) -> Any:
        raise RuntimeError("no traceback")


@pytest.mark.parametrize("kind", [RaisingGetattr, RaisingCause])
def test_exception_with_raising_attributes_is_captured(
    kind: type[Exception],
    make_client: Callable[..., Client],
    server: LocalServer,
    attach: Callable[..., logging.Logger],
) -> None:
    """capture_exception() and a logger.exception() through ContextFilter (as behind a
    QueueHandler) take such an exception without raising, and send it."""
    client = make_client()
    log = attach(PostHogHandler(client=client))
    log.addFilter(ContextFilter())
    assert client.capture_exception(kind("by hand")) is not None
    try:
        raise kind("logged")
    except kind:
        log.exception("it failed")
    assert client.flush(5)
    events = server.wait_for_events(2, event="$exception")
    for event in events:
        assert event["properties"]["$exception_list"][0]["type"] == kind.__qualname__


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_spool_directory_others_may_write_is_refused(tmp_path: pathlib.Path, mode: int) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(mode)
    with pytest.raises(UnsafeSpoolDirectory, match="may be written by other users"):
        Client(API_KEY, host="http://127.0.0.1:9", spool_dir=spool)


def test_spool_directory_of_another_user_is_refused(tmp_path: pathlib.Path) -> None:
    if os.geteuid() == 0:
        spool = tmp_path / "spool"
        spool.mkdir(mode=0o700)
        os.chown(spool, 65534, 65534)  # nobody
    else:
        spool = pathlib.Path("/")  # root's: never this user's
    with pytest.raises(UnsafeSpoolDirectory, match="belongs to another user"):
        Client(API_KEY, host="http://127.0.0.1:9", spool_dir=spool)


def test_private_spool_directory_is_used(tmp_path: pathlib.Path, server: LocalServer) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    client = Client(API_KEY, host=server.url, spool_dir=spool)
    client.shutdown(1)


@pytest.mark.parametrize("method", ["flush", "shutdown"])
def test_flush_or_shutdown_from_on_error_does_not_stall_the_sender(
    method: str, make_client: Callable[..., Client], server: LocalServer
) -> None:
    """on_error runs on the sender: a flush() or shutdown() there returns at once (it
    cannot wait for the thread it runs on), and what comes next is sent without delay."""
    calls: list[tuple[bool, float]] = []
    client: Client

    def on_error(error: Exception, events: list[dict[str, Any]]) -> None:
        client.capture("from_on_error", distinct_id="u")  # something to flush
        start = time.monotonic()
        result = getattr(client, method)(5)
        calls.append((result, time.monotonic() - start))

    client = make_client(on_error=on_error, shutdown_timeout=5)
    server.inject(Fault(status=400))
    client.capture("refused", distinct_id="u")
    wait_until(lambda: calls, 5, "on_error")
    assert calls[0][0] is False and calls[0][1] < 0.5
    if method == "flush":
        client.capture("next", distinct_id="u")
        start = time.monotonic()
        assert client.flush(5)
        assert time.monotonic() - start < 2
        server.wait_for_events(1, event="next")
        server.wait_for_events(1, event="from_on_error")
    else:
        wait_until(lambda: client._sender.stopped, 2, "the sender to stop")


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({1: "int", "1": "str"}, {"1": "str"}),
        ({"1": "str", 1: "int"}, {"1": "str"}),
        ({None: "none", "null": "str"}, {"null": "str"}),
        ({True: "bool", "true": "str", "x": 1}, {"true": "str", "x": 1}),
    ],
    ids=["int-first", "str-first", "none", "bool"],
)
def test_keys_that_become_the_same_text_keep_the_string_key(
    properties: dict[Any, Any],
    expected: dict[str, Any],
    client: Client,
    server: LocalServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, LIBRARY_LOGGER)
    client.capture("e", properties, distinct_id="u")
    assert client.flush(5)
    (event,) = server.wait_for_events(1, event="e")
    assert {k: event["properties"][k] for k in expected} == expected
    assert client.stats.dropped_properties == {"duplicate_key": 1}
    assert any("the value under the string key is sent" in r.getMessage() for r in caplog.records)


@needs_fork
def test_forked_child_starts_outside_any_context(
    make_client: Callable[..., Client], server: LocalServer
) -> None:
    """As with the official SDK: a child forked inside a context has none, even after
    leaving the contexts entered before the fork; the parent keeps its own."""
    client = make_client()
    read, write = os.pipe()
    with posthog_logging.new_context():
        posthog_logging.identify_context("parent-user")
        posthog_logging.tag("parent-tag", 1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            code = 1
            try:
                seen = [posthog_logging.get_context_distinct_id(), posthog_logging.get_tags()]
                client.capture("from_child")
                client.flush(5)
                code = 0
            finally:
                os.write(write, json.dumps(seen).encode())
                os._exit(code)
        parent = (posthog_logging.get_context_distinct_id(), posthog_logging.get_tags())
    os.close(write)
    child = json.loads(os.read(read, 4096))
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert child == [None, {}]
    assert parent == ("parent-user", {"parent-tag": 1})
    (event,) = server.wait_for_events(1, event="from_child")
    assert event["properties"]["$process_person_profile"] is False
    assert "parent-tag" not in event["properties"]


@needs_fork
def test_forked_child_leaving_a_context_entered_before_the_fork_restores_nothing() -> None:
    read, write = os.pipe()
    with posthog_logging.new_context():
        posthog_logging.identify_context("parent-user")
        with posthog_logging.new_context():
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child reports through the pipe
                with posthog_logging.new_context():
                    posthog_logging.identify_context("child-user")
                    inside = posthog_logging.get_context_distinct_id()
                after_inner = posthog_logging.get_context_distinct_id()
        if pid == 0:  # pragma: no cover
            after_outer = posthog_logging.get_context_distinct_id()
            os.write(write, json.dumps([inside, after_inner, after_outer]).encode())
            os._exit(0)
        parent = posthog_logging.get_context_distinct_id()
    os.close(write)
    child = json.loads(os.read(read, 4096))
    os.close(read)
    os.waitpid(pid, 0)
    assert child == ["child-user", None, None]
    assert parent == "parent-user"


@pytest.mark.parametrize("key", [" ", " \n\t ", ""])
def test_whitespace_api_key_is_no_key(
    key: str, server: LocalServer, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    caplog.set_level(logging.WARNING, LIBRARY_LOGGER)
    monkeypatch.setenv("POSTHOG_API_KEY", key)
    client = Client(key, host=server.url, flush_interval=0.05)
    try:
        assert client.api_key is None
        assert client.capture("e", distinct_id="u") is None
        assert client.stats.dropped == {"no_api_key": 1}
    finally:
        client.shutdown(1)
    assert server.requests == []
    assert [r.getMessage() for r in caplog.records].count(
        "no API key (pass api_key= or set POSTHOG_API_KEY); nothing will be sent"
    ) == 1


def test_api_key_is_trimmed(client: Client, make_client: Callable[..., Client]) -> None:
    assert make_client(api_key=f" \n{API_KEY}\t ").api_key == API_KEY


def test_super_properties_cannot_override_is_server(
    make_client: Callable[..., Client], server: LocalServer
) -> None:
    client = make_client(super_properties={"$is_server": False, "plan": "pro"})
    client.capture("e", {"$is_server": "no"}, distinct_id="u")
    client.capture("f", distinct_id="u")
    assert client.flush(5)
    for event in server.wait_for_events(2):
        assert event["properties"]["$is_server"] is True
        assert event["properties"]["plan"] == "pro"


def test_an_internal_error_in_the_intake_never_reaches_the_caller(
    make_client: Callable[..., Client], monkeypatch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """As the official SDK's own test does it: the intake itself fails (here: the
    sender's queue refuses with an unexpected error)."""

    def broken(self: Sender, item: Any) -> bool:
        raise RuntimeError("a bug in the intake")

    monkeypatch.setattr(Sender, "put", broken)
    caplog.set_level(logging.ERROR, LIBRARY_LOGGER)
    client = make_client()
    assert client.capture("e", distinct_id="u") is None
    assert client.set({"a": 1}, distinct_id="u") is None
    assert client.set_once({"a": 1}, distinct_id="u") is None
    assert client.capture_exception(ValueError("x"), distinct_id="u") is None
    assert client.stats.dropped == {"intake_error": 4}
    assert any(r.exc_info for r in caplog.records)  # logged with its traceback
    debugging = make_client(debug=True)
    with pytest.raises(RuntimeError, match="a bug in the intake"):
        debugging.capture("e", distinct_id="u")
