"""The disk spool: what cannot be delivered goes to files and is sent again later.

Everything is driven for real: the local server on loopback (taken down and brought
back up), real segment files and locks, real subprocesses and forks. The server
deduplicates on uuid, so "exactly once" is also checked on the wire: the events carried
by the requests it accepted add up to the events it stored.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import re
import select
import stat
import subprocess
import sys
import textwrap
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from posthog_logging import Client
from posthog_logging.delivery import backlog as backlog_module
from posthog_logging.delivery.kinds import EVENTS
from posthog_logging.delivery.spool import Spool, SpoolStats, frame, parse
from posthog_logging.server import Fault, LocalServer

from .conftest import API_KEY
from .forking import fork_with_threads, needs_fork, run_in_fork
from .helpers import assert_each_sent_once
from .polling import wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the spool locks with flock")

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEGMENT_NAME = re.compile(r"events-[0-9a-f]{16}-\d{20}-(\d+)-\d+\.spool")


# -- helpers ------------------------------------------------------------------------------


def segment_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """The segment files in ``directory``, oldest first (none if it does not exist)."""
    if not directory.exists():
        return []
    return sorted(directory.glob("*.spool"), key=lambda path: path.name)


def lines_on_disk(directory: pathlib.Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in segment_files(directory))


def bytes_on_disk(directory: pathlib.Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir()) if directory.exists() else 0


def holds_for(predicate: Callable[[], bool], seconds: float) -> bool:
    """Whether ``predicate`` stays true, checked continuously, for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.01)
    return predicate()


def capture_many(client: Client, name: str, count: int, **extra: Any) -> list[str]:
    """Capture ``count`` events named ``name``; return their uuids (none may be dropped)."""
    uuids = [client.capture(name, {"i": i, **extra}, distinct_id="spool") for i in range(count)]
    assert None not in uuids
    return [uuid for uuid in uuids if uuid is not None]


def uuids_of(server: LocalServer, name: str) -> list[str]:
    return [event["uuid"] for event in server.events(event=name)]


def assert_accounted(client: Client, captured: int) -> None:
    """Every event that went in came out somewhere: sent, failed, dropped, spooled or held."""
    stats = client.stats
    went_in = captured + stats.replayed
    came_out = stats.sent + stats.failed + stats.dropped_total + stats.spooled + stats.pending
    assert went_in == came_out, stats


def spool_during_outage(
    server: LocalServer,
    spool_dir: pathlib.Path,
    name: str,
    count: int,
    *,
    api_key: str = API_KEY,
) -> list[str]:
    """Take the server down and spool ``count`` events there; the server stays down.

    One client, one batch, no retries: the batch goes to disk at its first failure, and
    shutdown closes the segment, which leaves exactly one file holding the events in order.
    """
    server.down()
    client = Client(
        api_key,
        server.url,
        spool_dir=spool_dir,
        max_retries=0,
        flush_at=10_000,
        flush_interval=0.05,
    )
    uuids = capture_many(client, name, count)
    client.shutdown(timeout=5)
    stats = client.stats
    assert (stats.spooled, stats.sent, stats.failed, dict(stats.dropped)) == (count, 0, 0, {})
    return uuids


def python(code: str, *args: object) -> list[str]:
    """The command running ``code`` (dedented) in a fresh interpreter with ``args``."""
    return [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]


def child_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """One line of a child's stdout, failing (not hanging) when it does not come in time."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            pytest.fail(f"no line from the child within {timeout:g}s (got {data!r})")
        chunk = os.read(fd, 65536)
        if not chunk:
            stderr = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"the child exited without a line (got {data!r}); stderr:\n{stderr}")
        data += chunk
    return data.decode()


def is_locked(path: pathlib.Path) -> bool:
    """Whether another open file description holds ``path``'s flock."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.fixture
def spool_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "spool"


@pytest.fixture
def fast_spool_checks(monkeypatch: pytest.MonkeyPatch) -> float:
    """Running clients look for spooled segments every 0.1 s instead of every 5 s."""
    monkeypatch.setattr(backlog_module, "SPOOL_CHECK_INTERVAL", 0.1)
    return 0.1


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Children started by a test; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# -- the Spool itself ---------------------------------------------------------------------


def event(i: int, pad: int = 0) -> bytes:
    """An event's JSON as the library writes it (the spool checks what it reads back)."""
    return json.dumps(
        {
            "event": "unit",
            "distinct_id": "u",
            "properties": {"pad": "x" * pad} if pad else {},
            "timestamp": "t",
            "uuid": str(uuid.UUID(int=i)),
        },
        separators=(",", ":"),
    ).encode()


def new_spool(directory: pathlib.Path, **options: Any) -> Spool:
    options.setdefault("host", "http://127.0.0.1:1")
    options.setdefault("api_key", API_KEY)
    options.setdefault("max_bytes", 1024 * 1024)
    return Spool(directory, **options)


class TestSpoolUnit:
    def test_write_claim_remove(self, tmp_path: pathlib.Path) -> None:
        """Written events come back in order from a claim; remove deletes the segment."""
        writer = new_spool(tmp_path / "d")
        assert writer.write([event(1), event(2)], EVENTS) == SpoolStats()
        writer.write([event(3)], EVENTS)
        [(path, size)] = writer.segments()
        assert SEGMENT_NAME.fullmatch(path.name)
        assert path.read_bytes() == b"".join(frame(event(i)) for i in (1, 2, 3))
        assert size == path.stat().st_size
        assert not writer.has_segments()  # only its own open segment
        assert writer.claim(SpoolStats()) is None

        writer.close()
        assert writer.has_segments()
        stats = SpoolStats()
        segment = writer.claim(stats)
        assert segment is not None
        assert segment.records[EVENTS] == [event(1), event(2), event(3)]
        assert stats == SpoolStats()
        segment.remove()
        assert not path.exists()
        assert writer.segments() == [] and writer.claim(SpoolStats()) is None

    def test_open_and_claimed_segments_are_locked(self, tmp_path: pathlib.Path) -> None:
        """Another spool cannot claim an open or claimed segment; release gives it back."""
        writer, other = new_spool(tmp_path / "d"), new_spool(tmp_path / "d")
        writer.write([event(1)], EVENTS)
        assert other.has_segments()
        assert other.claim(SpoolStats()) is None  # still being written
        writer.close()
        segment = other.claim(SpoolStats())
        assert segment is not None
        assert writer.claim(SpoolStats()) is None  # being replayed by the other
        segment.release()
        again = writer.claim(SpoolStats())
        assert again is not None and again.path == segment.path
        assert again.records[EVENTS] == [event(1)]
        again.remove()

    def test_rotation_at_segment_bytes(self, tmp_path: pathlib.Path) -> None:
        """Past segment_bytes a new segment starts; claims go oldest first, in order."""
        spool = new_spool(tmp_path / "d", segment_bytes=300)
        framed = len(frame(event(0)))
        for i in range(20):
            spool.write([event(i)], EVENTS)
        spool.close()
        sizes = [size for _, size in spool.segments()]
        assert len(sizes) == -(-20 // (300 // framed)) and all(size <= 300 for size in sizes)
        replayed = []
        while (segment := spool.claim(SpoolStats())) is not None:
            replayed += segment.records[EVENTS]
            segment.remove()
        assert replayed == [event(i) for i in range(20)]

    def test_max_bytes_deletes_oldest_segments(self, tmp_path: pathlib.Path) -> None:
        """Over max_bytes the oldest segments go and their events are counted."""
        spool = new_spool(tmp_path / "d", max_bytes=2000)  # segments of 500 bytes
        framed = len(frame(event(0, pad=60)))
        dropped = 0
        for i in range(100):
            dropped += spool.write([event(i, pad=60)], EVENTS).dropped_full
            assert bytes_on_disk(tmp_path / "d") <= 2000
        assert dropped > 0
        spool.close()
        survivors = []
        while (segment := spool.claim(SpoolStats())) is not None:
            survivors += segment.records[EVENTS]
            segment.remove()
        assert len(survivors) * framed <= 2000
        assert survivors == [event(i, pad=60) for i in range(dropped, 100)]

    def test_write_larger_than_max_bytes_is_refused(self, tmp_path: pathlib.Path) -> None:
        """A batch that can never fit is refused whole, and nothing is deleted for it."""
        spool = new_spool(tmp_path / "d", max_bytes=1000)
        spool.write([event(1)], EVENTS)
        outcome = spool.write([event(i, pad=100) for i in range(10)], EVENTS)
        assert outcome == SpoolStats(refused=10)
        assert lines_on_disk(tmp_path / "d") == 1

    def test_segments_held_by_others_are_not_deleted_for_room(self, tmp_path: pathlib.Path) -> None:
        """Room is never made by deleting a segment another spool holds: the batch is refused."""
        holder = new_spool(tmp_path / "d", max_bytes=1000)
        writer = new_spool(tmp_path / "d", max_bytes=1000)
        holder.write([event(i) for i in range(8)], EVENTS)  # open and locked
        held = bytes_on_disk(tmp_path / "d")
        incoming = [event(99, pad=1000 - held)]
        assert held + len(frame(incoming[0])) > 1000
        assert writer.write(incoming, EVENTS) == SpoolStats(refused=1)
        assert lines_on_disk(tmp_path / "d") == 8
        holder.close()  # no longer held: now the oldest can go
        assert writer.write(incoming, EVENTS) == SpoolStats(dropped_full=8)
        assert lines_on_disk(tmp_path / "d") == 1

    def test_other_key_or_host_sees_nothing(self, tmp_path: pathlib.Path) -> None:
        """Segments are per host and key: spools of another project do not see them."""
        new_spool(tmp_path / "d").write([event(1)], EVENTS)
        assert new_spool(tmp_path / "d", api_key="phc_another_project").segments() == []
        assert new_spool(tmp_path / "d", host="https://eu.i.posthog.com").segments() == []
        assert len(new_spool(tmp_path / "d").segments()) == 1

    def test_files_private_and_named_without_the_key(self, tmp_path: pathlib.Path) -> None:
        """Directory 0700, files 0600, the key in no name."""
        key = "phc_UnitSpoolKeyNeverOnDisk42"
        old = os.umask(0)
        try:
            new_spool(tmp_path / "d", api_key=key).write([event(1)], EVENTS)
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700
        [path] = segment_files(tmp_path / "d")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert key not in path.name and key.encode() not in path.read_bytes()

    def test_unwritable_directory_raises_oserror(self, tmp_path: pathlib.Path) -> None:
        """A directory that cannot be made raises OSError on write; reads find nothing."""
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        spool = new_spool(blocker)
        with pytest.raises(OSError):
            spool.write([event(1)], EVENTS)
        assert spool.segments() == [] and spool.claim(SpoolStats()) is None

    def test_unrelated_files_are_ignored(self, tmp_path: pathlib.Path) -> None:
        """Files without this spool's prefix or suffix are neither listed nor touched."""
        directory = tmp_path / "d"
        spool = new_spool(directory)
        spool.write([event(1)], EVENTS)
        spool.close()
        (directory / "notes.txt").write_text("mine")
        (directory / f"{spool.prefix}-x.tmp").write_text("mine too")
        assert [path.name for path, _ in spool.segments()] == [
            path.name for path in segment_files(directory)
        ]
        segment = spool.claim(SpoolStats())
        assert segment is not None
        segment.remove()
        assert sorted(p.name for p in directory.iterdir()) == sorted(
            ["notes.txt", f"{spool.prefix}-x.tmp"]
        )


GOOD = [b'{"event":"a","uuid":"1"}', b'{"event":"b","n":"with spaces"}']
FRAMED = b"".join(frame(e) for e in GOOD)


class TestParse:
    @pytest.mark.parametrize(
        ("data", "events", "corrupt"),
        [
            (b"", [], 0),
            (FRAMED, GOOD, 0),
            (FRAMED + b'0123abcd {"event":"c', GOOD, 1),  # torn last write
            (FRAMED[:-5], GOOD[:1], 1),  # last line cut mid-way
            (FRAMED[:-1], GOOD[:1], 1),  # only its newline lost
            (FRAMED + b"%08x %s\n" % (zlib.crc32(b"{}") ^ 1, b"{}"), GOOD, 1),  # bad checksum
            (FRAMED + b"zzzzzzzz {}\n", GOOD, 1),  # not hex
            (FRAMED + b"abc {}\n", GOOD, 1),  # short checksum
            (FRAMED + b"\n", GOOD, 1),  # empty line
            (FRAMED + b"\x00\xff\xfe garbage\n", GOOD, 1),  # binary junk
            (frame(GOOD[0]).replace(b'"a"', b'"A"') + frame(GOOD[1]), GOOD[1:], 1),
        ],
        ids=[
            "empty",
            "valid",
            "torn-append",
            "truncated",
            "no-newline",
            "bad-crc",
            "not-hex",
            "short-crc",
            "blank-line",
            "binary",
            "flipped-byte",
        ],
    )
    def testparse(self, data: bytes, events: list[bytes], corrupt: int) -> None:
        """Valid lines come back in order; damaged ones are skipped and counted."""
        assert parse(data) == (events, corrupt)


# -- clients, processes and outages -------------------------------------------------------

WRITER = """
    import atexit, json, sys

    host, api_key, spool_dir, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = None

    def report():  # registered before the library's exit hook, so it runs after it
        stats = client.stats
        print(json.dumps({
            "spooled": stats.spooled, "sent": stats.sent, "failed": stats.failed,
            "dropped": dict(stats.dropped), "pending": stats.pending,
        }), flush=True)

    atexit.register(report)
    from posthog_logging import Client

    client = Client(api_key, host, spool_dir=spool_dir, shutdown_timeout=1.0, flush_interval=0.05)
    uuids = [client.capture("restart_event", {"i": i}, distinct_id="writer") for i in range(count)]
    print(json.dumps(uuids), flush=True)
"""


class TestRestart:
    def test_outage_then_restart_in_another_process(
        self, server: LocalServer, make_client: Callable[..., Client], spool_dir: pathlib.Path
    ) -> None:
        """A process that exits during an outage spools; the next client sends it all once."""
        server.down()
        done = subprocess.run(
            python(WRITER, server.url, API_KEY, spool_dir, 2000),
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        first, second = done.stdout.splitlines()
        captured = json.loads(first)
        assert len(set(captured)) == 2000 and None not in captured
        assert json.loads(second) == {
            "spooled": 2000,
            "sent": 0,
            "failed": 0,
            "dropped": {},
            "pending": 0,
        }
        assert lines_on_disk(spool_dir) == 2000

        server.up()
        reader = make_client(spool_dir=spool_dir)  # captures nothing itself
        server.wait_for_events(2000, timeout=15)
        events = assert_each_sent_once(server)
        assert sorted(event["uuid"] for event in events) == sorted(captured)
        wait_until(lambda: not segment_files(spool_dir), 5, "the segments to be deleted")
        assert list(spool_dir.iterdir()) == []
        stats = reader.stats
        assert (stats.replayed, stats.sent, stats.failed, dict(stats.dropped)) == (
            2000,
            2000,
            0,
            {},
        )
        assert_accounted(reader, captured=0)

    def test_spooled_events_are_sent_before_new_ones(
        self, server: LocalServer, make_client: Callable[..., Client], spool_dir: pathlib.Path
    ) -> None:
        """A new client sends what an earlier run spooled before what it captures itself."""
        old = spool_during_outage(server, spool_dir, "old_event", 20)
        server.up()
        client = make_client(spool_dir=spool_dir)
        new = capture_many(client, "new_event", 5)
        server.wait_for_events(25)
        order = [event["uuid"] for event in assert_each_sent_once(server)]
        assert order[:20] == old and sorted(order[20:]) == sorted(new), (
            "events captured after construction were sent before the spooled ones"
        )


class TestOverflow:
    def test_overflow_during_outage_goes_to_disk(
        self,
        server: LocalServer,
        make_client: Callable[..., Client],
        spool_dir: pathlib.Path,
    ) -> None:
        """Over half the memory bound, batches go to disk: memory stays bounded, none lost.

        The caller here is no faster than the sender can build and write events (a caller
        faster than that fills the queue, and the newest events are dropped and counted).
        """
        count = 5000
        server.down()
        client = make_client(spool_dir=spool_dir, max_retries=10, max_queue_bytes=64 * 1024)
        bound = client.max_queue_bytes
        uuids: list[str | None] = []
        most_bytes = 0
        for i in range(count):
            uuids.append(client.capture("overflow_event", {"i": i}, distinct_id="spool"))
            if i % 25 == 0:
                most_bytes = max(most_bytes, client._sender.backlog.bytes)
                wait_until(
                    lambda: client._sender.backlog.bytes < bound // 2 + 8192, 5, "the sender"
                )
        kept = [uuid for uuid in uuids if uuid is not None]
        assert most_bytes <= bound

        def settled() -> bool:
            stats = client.stats
            return stats.pending <= client.flush_at and stats.spooled + stats.pending == len(kept)

        wait_until(settled, 10, "the backlog to go to disk")
        stats = client.stats
        dropped = dict(stats.dropped)
        assert set(dropped) <= {"queue_full"}, dropped
        assert len(kept) + dropped.get("queue_full", 0) == count
        assert stats.spooled > 0 and stats.spooled + stats.pending == len(kept)
        assert lines_on_disk(spool_dir) == stats.spooled
        assert_accounted(client, captured=count)

        server.up()  # the batch still in memory is retried; then the spool follows
        server.wait_for_events(len(kept), timeout=15)
        assert sorted(e["uuid"] for e in assert_each_sent_once(server)) == sorted(kept)
        wait_until(lambda: not segment_files(spool_dir), 5, "the segments to be deleted")
        assert_accounted(client, captured=count)
        assert len(kept) == count, f"{dropped.get('queue_full', 0)} dropped as queue_full"


class TestRecovery:
    def test_retries_exhausted_go_to_disk_and_are_sent_after_recovery(
        self,
        server: LocalServer,
        make_client: Callable[..., Client],
        spool_dir: pathlib.Path,
        fast_spool_checks: float,
    ) -> None:
        """With a spool, a batch out of retries is spooled, not failed, and sent on recovery."""
        errors: list[Exception] = []
        server.inject(Fault(status=503), times=None)
        client = make_client(
            spool_dir=spool_dir, max_retries=1, on_error=lambda exc, _: errors.append(exc)
        )
        uuids = capture_many(client, "retried_event", 30)
        assert client.flush(timeout=10)
        stats = client.stats
        assert (stats.spooled, stats.failed, stats.sent, dict(stats.dropped)) == (30, 0, 0, {})
        assert errors == []
        assert [r.status for r in server.requests] == [503, 503]
        assert lines_on_disk(spool_dir) == 30

        server.clear_faults()  # nothing new is captured: the spool alone must be sent
        server.wait_for_events(30, timeout=fast_spool_checks + 5)
        assert sorted(e["uuid"] for e in assert_each_sent_once(server)) == sorted(uuids)
        wait_until(lambda: not segment_files(spool_dir), 5, "the segments to be deleted")
        assert_accounted(client, captured=30)

    def test_running_client_sends_its_spool_when_the_server_is_back(
        self,
        server: LocalServer,
        make_client: Callable[..., Client],
        spool_dir: pathlib.Path,
        fast_spool_checks: float,
    ) -> None:
        """A client that spooled everything during an outage sends it once the server is up."""
        server.down()
        client = make_client(spool_dir=spool_dir, max_retries=0)
        uuids = capture_many(client, "outage_event", 50)
        assert client.flush(timeout=10)
        assert (client.stats.spooled, client.stats.pending) == (50, 0)

        server.up()  # nothing new is captured: the spool alone must be sent
        server.wait_for_events(50, timeout=fast_spool_checks + 5)
        assert sorted(e["uuid"] for e in assert_each_sent_once(server)) == sorted(uuids)
        wait_until(lambda: not segment_files(spool_dir), 5, "the segments to be deleted")
        assert_accounted(client, captured=50)


class TestFiles:
    def test_permissions_and_no_key_on_disk(
        self, server: LocalServer, tmp_path: pathlib.Path
    ) -> None:
        """The spool directory is 0700 and its files 0600, even with umask 0; no key on disk."""
        key = "phc_SpoolCanaryKey_7f3a9c1e5b"
        spool_dir = tmp_path / "a" / "b" / "spool"
        old = os.umask(0)
        try:
            spool_during_outage(server, spool_dir, "private_event", 20, api_key=key)
        finally:
            os.umask(old)
        assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
        files = list(spool_dir.iterdir())
        assert files and all(SEGMENT_NAME.fullmatch(path.name) for path in files)
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert key not in path.name
            assert key.encode() not in path.read_bytes()
        for path in (tmp_path / "a").rglob("*"):
            assert key not in str(path)

    def test_unwritable_spool_dir_is_counted_not_fatal(
        self, server: LocalServer, make_client: Callable[..., Client], tmp_path: pathlib.Path
    ) -> None:
        """A spool that cannot be written loses its events as spool_error, never raises."""
        blocker = tmp_path / "blocker"
        blocker.write_text("a file, not a directory")
        server.down()
        client = make_client(spool_dir=blocker, max_retries=0)
        capture_many(client, "lost_event", 10)
        assert client.flush(timeout=10)
        assert dict(client.stats.dropped) == {"spool_error": 10}
        assert_accounted(client, captured=10)


def truncate_last_line(path: pathlib.Path, count: int) -> set[int]:
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last + (len(data) - last) // 2])
    return set(range(count - 1))


def append_partial_line(path: pathlib.Path, count: int) -> set[int]:
    with path.open("ab") as file:
        file.write(b'1a2b3c4d {"event":"torn","uuid":"0190')
    return set(range(count))


def append_bad_checksum(path: pathlib.Path, count: int) -> set[int]:
    line = path.read_bytes().splitlines()[0]
    with path.open("ab") as file:
        file.write(b"%08x %s\n" % (int(line[:8], 16) ^ 0xFF, line[9:]))
    return set(range(count))


def flip_byte_in_line_ten(path: pathlib.Path, count: int) -> set[int]:
    lines = path.read_bytes().splitlines(keepends=True)
    line = bytearray(lines[10])
    middle = len(line) // 2
    line[middle] = ord("y") if line[middle] == ord("x") else ord("x")
    lines[10] = bytes(line)
    path.write_bytes(b"".join(lines))
    return set(range(count)) - {10}


class TestDamage:
    @pytest.mark.parametrize(
        "damage",
        [truncate_last_line, append_partial_line, append_bad_checksum, flip_byte_in_line_ten],
        ids=["truncated-last-line", "partial-line", "bad-checksum", "flipped-byte"],
    )
    def test_damaged_lines_are_skipped_and_counted(
        self,
        server: LocalServer,
        make_client: Callable[..., Client],
        spool_dir: pathlib.Path,
        damage: Callable[[pathlib.Path, int], set[int]],
    ) -> None:
        """A torn or damaged line is skipped and counted; the valid lines of the file are sent."""
        uuids = spool_during_outage(server, spool_dir, "damaged_event", 40)
        [segment] = segment_files(spool_dir)
        valid = damage(segment, 40)
        server.up()
        client = make_client(spool_dir=spool_dir)
        server.wait_for_events(len(valid))
        wait_until(lambda: not segment_files(spool_dir), 5, "the segment to be deleted")
        sent = [e["uuid"] for e in assert_each_sent_once(server)]
        assert sorted(sent) == sorted(uuids[i] for i in valid)
        assert dict(client.stats.dropped) == {"spool_corrupt": 1}
        assert (client.stats.replayed, client.stats.sent) == (len(valid), len(valid))

    def test_segment_of_pure_garbage_is_never_fatal(
        self, server: LocalServer, make_client: Callable[..., Client], spool_dir: pathlib.Path
    ) -> None:
        """A segment holding only junk is counted and deleted; a later segment is still sent."""
        uuids = spool_during_outage(server, spool_dir, "after_junk", 10)
        prefix = Spool(spool_dir, host=server.url, api_key=API_KEY, max_bytes=1).prefix
        junk = spool_dir / f"{prefix}-{0:020d}-1-0.spool"  # sorts first: replayed first
        junk.write_bytes(b"\x00\xff\n\n not a line\n" + os.urandom(300).replace(b"\n", b"."))
        server.up()
        client = make_client(spool_dir=spool_dir)
        server.wait_for_events(10)
        wait_until(lambda: not segment_files(spool_dir), 5, "the segments to be deleted")
        assert sorted(e["uuid"] for e in assert_each_sent_once(server)) == sorted(uuids)
        assert dict(client.stats.dropped) == {"spool_corrupt": 4}


class TestBound:
    def test_spool_max_bytes_keeps_the_newest(
        self, server: LocalServer, make_client: Callable[..., Client], spool_dir: pathlib.Path
    ) -> None:
        """The directory stays under spool_max_bytes; the oldest events go, counted."""
        bound = 64 * 1024
        server.down()
        writer = make_client(
            spool_dir=spool_dir, spool_max_bytes=bound, max_retries=0, flush_at=10_000
        )
        captured: list[str] = []
        for round_ in range(24):
            captured += capture_many(writer, "bounded_event", 10, pad="x" * 500, round=round_)
            assert writer.flush(timeout=10)
            assert bytes_on_disk(spool_dir) <= bound
        assert writer.shutdown(timeout=5) is True
        stats = writer.stats
        lost = stats.dropped.get("spool_full", 0)
        assert dict(stats.dropped) == {"spool_full": lost}
        assert 0 < lost < len(captured)
        assert stats.spooled == len(captured)
        assert lines_on_disk(spool_dir) == len(captured) - lost

        server.up()
        make_client(spool_dir=spool_dir)
        server.wait_for_events(len(captured) - lost)
        wait_until(lambda: not segment_files(spool_dir), 5, "the segments to be deleted")
        sent = [e["uuid"] for e in assert_each_sent_once(server)]
        assert sent == captured[lost:], "the newest events should be the ones kept"


class TestIsolation:
    def test_only_the_same_key_and_host_send_a_spool(
        self,
        server: LocalServer,
        make_client: Callable[..., Client],
        spool_dir: pathlib.Path,
        tmp_path: pathlib.Path,
        fast_spool_checks: float,
    ) -> None:
        """Clients of another key or host never send the segments; the matching one does."""
        uuids = spool_during_outage(server, spool_dir, "isolated_event", 25)
        [segment] = segment_files(spool_dir)
        content = segment.read_bytes()
        server.up()

        other_key = make_client(api_key="phc_another_project_key", spool_dir=spool_dir)
        capture_many(other_key, "other_key_event", 1)
        server.wait_for_events(1, event="other_key_event")
        assert holds_for(lambda: other_key.stats.replayed == 0, 10 * fast_spool_checks)

        with LocalServer("127.0.0.1", 0, data_dir=tmp_path / "other") as other:
            other_host = make_client(host=other.url, spool_dir=spool_dir)
            capture_many(other_host, "other_host_event", 1)
            other.wait_for_events(1)
            assert holds_for(lambda: other_host.stats.replayed == 0, 10 * fast_spool_checks)
            other_host.shutdown(timeout=2)
            assert [e["event"] for e in other.events()] == ["other_host_event"]

        assert segment_files(spool_dir) == [segment] and segment.read_bytes() == content
        assert server.events(event="isolated_event") == []

        make_client(spool_dir=spool_dir)
        server.wait_for_events(25, event="isolated_event")
        assert_each_sent_once(server)
        assert sorted(uuids_of(server, "isolated_event")) == sorted(uuids)
        wait_until(lambda: not segment_files(spool_dir), 5, "the segment to be deleted")


HOLDER = """
    import json, sys
    from posthog_logging import Client

    host, api_key, spool_dir, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = Client(
        api_key, host, spool_dir=spool_dir, max_retries=0, flush_interval=0.05,
        shutdown_timeout=2.0,
    )
    uuids = [client.capture("held_event", {"i": i}, distinct_id="holder") for i in range(count)]
    flushed = client.flush(10)
    print(json.dumps({"uuids": uuids, "flushed": flushed, "spooled": client.stats.spooled}),
          flush=True)
    sys.stdin.readline()  # keeps its segment open until the test lets it exit
"""


class TestSharedDirectory:
    def test_segment_open_in_another_process_waits_for_it_to_exit(
        self,
        server: LocalServer,
        make_client: Callable[..., Client],
        spool_dir: pathlib.Path,
        fast_spool_checks: float,
        processes: list[subprocess.Popen[bytes]],
    ) -> None:
        """A segment another live process holds is not replayed; once it exits, it is."""
        server.down()
        holder = subprocess.Popen(
            python(HOLDER, server.url, API_KEY, spool_dir, 40),
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        processes.append(holder)
        report = json.loads(read_line(holder, timeout=20))
        assert report["flushed"] is True and report["spooled"] == 40
        [segment] = segment_files(spool_dir)
        match = SEGMENT_NAME.fullmatch(segment.name)
        assert match is not None and int(match.group(1)) == holder.pid
        assert is_locked(segment)

        # Still down, so that only a claim (never a send) can touch the segment.
        client = make_client(spool_dir=spool_dir, max_retries=5)
        assert holds_for(
            lambda: client.stats.replayed == 0 and segment.exists(), 10 * fast_spool_checks
        )
        assert lines_on_disk(spool_dir) == 40

        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=15) == 0, holder.stderr.read() if holder.stderr else ""
        server.up()
        server.wait_for_events(40, event="held_event")
        wait_until(lambda: client.stats.replayed == 40, 5, "the segment to be sent by us")
        assert_each_sent_once(server)
        assert sorted(uuids_of(server, "held_event")) == sorted(report["uuids"])
        wait_until(lambda: not segment_files(spool_dir), 5, "the segment to be deleted")
        assert_accounted(client, captured=0)


class TestFork:
    @needs_fork
    @fork_with_threads
    def test_forked_child_leaves_the_parents_open_segment_alone(
        self, server: LocalServer, make_client: Callable[..., Client], spool_dir: pathlib.Path
    ) -> None:
        """A forked child spools into its own segment; the parent's stays open, locked, whole."""
        server.down()
        parent = make_client(spool_dir=spool_dir, max_retries=0)
        before = capture_many(parent, "parent_event", 30, part="before")
        assert parent.flush(timeout=10)
        [parent_segment] = segment_files(spool_dir)
        inode = parent_segment.stat().st_ino

        def child() -> dict[str, Any]:
            uuids = capture_many(parent, "child_event", 20)
            flushed = parent.flush(timeout=10)
            parent.shutdown(timeout=5)
            return {"uuids": uuids, "flushed": flushed, "pid": os.getpid()}

        result = run_in_fork(child)
        assert result["flushed"] is True
        assert parent_segment.exists() and parent_segment.stat().st_ino == inode
        assert is_locked(parent_segment), "the child released the parent's lock"

        after = capture_many(parent, "parent_event", 30, part="after")
        assert parent.flush(timeout=10)
        files = segment_files(spool_dir)
        assert len(files) == 2
        [child_segment] = [path for path in files if path != parent_segment]
        match = SEGMENT_NAME.fullmatch(child_segment.name)
        assert match is not None and int(match.group(1)) == result["pid"]
        parent_events, parent_damaged = parse(parent_segment.read_bytes())
        child_events, child_damaged = parse(child_segment.read_bytes())
        assert (len(parent_events), parent_damaged) == (60, 0)
        assert (len(child_events), child_damaged) == (20, 0)

        server.up()
        parent.shutdown(timeout=5)
        reader = make_client(spool_dir=spool_dir)
        server.wait_for_events(80)
        assert_each_sent_once(server)
        assert sorted(uuids_of(server, "parent_event")) == sorted(before + after)
        assert sorted(uuids_of(server, "child_event")) == sorted(result["uuids"])
        wait_until(lambda: not segment_files(spool_dir), 5, "the segments to be deleted")
        assert dict(reader.stats.dropped) == {}
