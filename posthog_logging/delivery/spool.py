"""The disk spool: records that could not be delivered, kept in files until they can be.

A :class:`Spool` belongs to one client. It appends batches of already-serialised records
(events, or log lines) to *segment* files in a directory, one line per record: the
record's CRC-32 in hex, a space, the record's kind tag (none for events, ``L`` for log
lines: an event's JSON starts with ``{``) and its JSON. A line torn by a crash (or damaged
on disk) fails its checksum and is skipped rather than sent or fatal; a line that passes
it but is not a record of its kind (another program's, say) is skipped too, since it
would make the server refuse its whole batch. This module is the one home of the format.

Segments are replayed oldest first, by any client of the same project and host, then
deleted; PostHog deduplicates on the event's uuid, so an event sent twice after a crash
mid-replay is stored once.

Files are private to the user (directory 0700, files 0600), and a directory that another
user owns or may write to is refused (:class:`UnsafeSpoolDirectory`), as ssh refuses a key
file others can read: anyone who can write there could inject events sent under our key,
or delete ours. A file's name carries a one-way hash of the host and API key, never the
key itself, so that clients of different projects sharing a directory never send each
other's events. Segments being written or
replayed are locked with ``flock``, so processes sharing a directory (gunicorn workers,
say) never replay a segment another one is still writing or already replaying, and a
lock dies with its process.

The directory is bounded by ``max_bytes``: to make room, the oldest unlocked segments
are deleted and their events counted as dropped.

A write is all or nothing as the reader and the counters see it: a write cut short (a full
disk) is taken back before the error is raised. A segment that cannot be deleted once
sent (a read-only file system) is emptied if it can be, and in any case never claimed
again by this spool, so its events are not sent over and over.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import pathlib
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..exceptions import UnsafeSpoolDirectory
from .kinds import KINDS, Kind

if sys.platform != "win32":
    import fcntl

__all__ = ["Segment", "Spool", "SpoolStats", "frame", "parse"]

SUFFIX = ".spool"
#: A segment is closed and a new one started past this size.
SEGMENT_BYTES = 4 * 1024 * 1024


@dataclass
class SpoolStats:
    """What a write or a read had to give up, for the client's counters."""

    dropped_full: int = 0
    """Events deleted with the oldest segments to keep the directory under its bound."""
    refused: int = 0
    """Events not written: they could not fit under the bound."""
    corrupt: int = 0
    """Lines skipped on replay: torn by a crash, damaged, or not a record of their kind."""


class Segment:
    """A segment claimed for replay: its records by kind, and the lock that keeps it ours."""

    def __init__(self, path: pathlib.Path, fd: int, records: dict[Kind, list[bytes]]) -> None:
        self.path = path
        self.records = records
        self._fd: int | None = fd
        self.undeletable: OSError | None = None
        """Why :meth:`remove` could not delete the file, if it could not."""

    def remove(self) -> bool:
        """Delete the file: its events were delivered (or are accounted for elsewhere).

        False when it cannot be deleted (``undeletable`` says why): it is then emptied if
        the file itself can still be written, so that no later run sends it again.
        """
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            self.undeletable = exc
            with contextlib.suppress(OSError):
                os.truncate(self.path, 0)
        self.release()
        return self.undeletable is None

    def release(self) -> None:
        """Give the segment back, undeleted, for a later replay."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def count(self) -> int:
        """How many records it holds, of every kind."""
        return sum(len(records) for records in self.records.values())

    def __repr__(self) -> str:
        return f"<Segment {self.path.name} records={self.count}>"


class Spool:
    """Append-only segment files under ``directory`` for one host and API key."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        host: str,
        api_key: str,
        max_bytes: int,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.directory = pathlib.Path(directory).expanduser()
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(1, max_bytes // 4))
        digest = hashlib.sha256(f"{host}\n{api_key}".encode()).hexdigest()
        self.prefix = f"events-{digest[:16]}"
        self._counter = itertools.count()
        self._fd: int | None = None
        self._path: pathlib.Path | None = None
        self._size = 0
        #: Segments sent but not deleted (see Segment.remove): never claimed again here.
        self._sent: set[str] = set()
        if self.directory.exists():
            check_directory(self.directory)

    def __repr__(self) -> str:
        return f"<Spool {str(self.directory)!r}>"

    # -- writing ---------------------------------------------------------------------

    def write(self, records: Sequence[bytes], kind: Kind) -> SpoolStats:
        """Append ``records`` (each one record's JSON, of ``kind``) to the current segment.

        Raises ``OSError`` when the directory cannot be written; the caller counts the
        records as lost. Makes room first by deleting the oldest segments.
        """
        stats = SpoolStats()
        if not records:
            return stats
        tag = kind.spool_tag
        data = b"".join(frame(tag + record) for record in records)
        if len(data) > self.max_bytes:
            stats.refused = len(records)
            return stats
        stats.dropped_full, fits = self._make_room(len(data))
        if not fits:  # only segments other processes hold are left: refuse the newest
            stats.refused = len(records)
            return stats
        if self._fd is None or self._size + len(data) > self.segment_bytes:
            self._open_segment()
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        try:
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError:
            # Cut short (a full disk, say): take back what reached the file, so that a
            # reader never finds half of these lines, nor the next write joined to them.
            try:
                os.ftruncate(fd, self._size)
            except OSError:
                self.close()  # cannot take it back: the next write starts a new segment
            raise
        self._size += len(data)
        return stats

    @property
    def writing(self) -> bool:
        """Whether a segment of ours is open for writing (and locked)."""
        return self._fd is not None

    def close(self) -> None:
        """Close the current segment (flushed to disk): it becomes replayable."""
        fd, self._fd, self._path = self._fd, None, None
        self._size = 0
        if fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's open segment without touching it."""
        fd, self._fd, self._path = self._fd, None, None
        self._size = 0
        if fd is not None:
            # The lock belongs to the file description the parent still holds open;
            # closing our copy of the descriptor leaves it (and the parent's file) intact.
            with contextlib.suppress(OSError):
                os.close(fd)

    def _open_segment(self) -> None:
        self.close()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_directory(self.directory)
        name = f"{self.prefix}-{time.time_ns():020d}-{os.getpid()}-{next(self._counter)}{SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        _lock(fd, blocking=True)
        self._fd, self._path, self._size = fd, path, 0

    def _make_room(self, needed: int) -> tuple[int, bool]:
        """Delete the oldest segments nobody holds until ``needed`` more bytes fit.

        Returns the events deleted and whether the new bytes now fit.
        """
        segments = self.segments()
        total = sum(size for _, size in segments)
        dropped = 0
        for path, size in segments:
            if total + needed <= self.max_bytes:
                break
            if path == self._path:
                self.close()  # our own segment is older than what comes next
            fd = _open_locked(path)
            if fd is None:
                continue
            try:
                with os.fdopen(os.dup(fd), "rb") as file:
                    dropped += file.read().count(b"\n")
                path.unlink()
                total -= size
            except OSError:
                pass
            finally:
                os.close(fd)
        return dropped, total + needed <= self.max_bytes

    # -- reading ---------------------------------------------------------------------

    def segments(self) -> list[tuple[pathlib.Path, int]]:
        """This spool's segment files with their sizes, oldest first."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return []
        found = []
        for entry in entries:
            if entry.name.startswith(self.prefix + "-") and entry.name.endswith(SUFFIX):
                with contextlib.suppress(OSError):
                    found.append((pathlib.Path(entry.path), entry.stat().st_size))
        return sorted(found, key=lambda item: item[0].name)

    def has_segments(self) -> bool:
        """Whether anything is on disk for this host and key, besides our own open segment."""
        return any(
            path != self._path and path.name not in self._sent for path, _ in self.segments()
        )

    def claim(self, stats: SpoolStats) -> Segment | None:
        """Lock and read the oldest segment nobody else holds; None when there is none.

        Lines that fail their checksum (a torn last write) or are not a record of their
        kind are skipped and counted in ``stats.corrupt``. Raises
        :class:`~posthog_logging.exceptions.UnsafeSpoolDirectory` if the directory has
        become unsafe since the spool was made.
        """
        check_directory(self.directory)
        for path, _ in self.segments():
            if path == self._path or path.name in self._sent:
                continue
            fd = _open_locked(path)
            if fd is None:
                continue
            try:
                with os.fdopen(os.dup(fd), "rb") as file:
                    data = file.read()
            except OSError:
                os.close(fd)
                continue
            lines, corrupt = parse(data)
            records = _by_kind(lines)
            stats.corrupt += corrupt + len(lines) - sum(len(r) for r in records.values())
            return Segment(path, fd, records)
        return None

    def remove(self, segment: Segment) -> bool:
        """Delete a claimed segment whose events are accounted for. False when it could
        not be deleted: it is then never claimed again by this spool."""
        if segment.remove():
            return True
        self._sent.add(segment.path.name)
        return False


def check_directory(directory: pathlib.Path) -> None:
    """Raise :class:`UnsafeSpoolDirectory` unless ``directory`` belongs to this user and
    no one else may write to it."""
    if not hasattr(os, "geteuid"):  # pragma: no cover - Windows: ACLs, not modes
        return
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return
    if st.st_uid != os.geteuid():
        raise UnsafeSpoolDirectory(
            f"spool_dir {str(directory)!r} belongs to another user (uid {st.st_uid}): "
            "they could inject events sent under this API key, or delete undelivered "
            "ones. Use a directory of your own."
        )
    if st.st_mode & 0o022:
        raise UnsafeSpoolDirectory(
            f"spool_dir {str(directory)!r} may be written by other users (mode "
            f"{st.st_mode & 0o777:04o}): they could inject events sent under this API "
            f"key, or delete undelivered ones. Make it private: chmod 700 {str(directory)!r}"
        )


def frame(line: bytes) -> bytes:
    """One line of a segment: ``line``'s CRC-32 in hex, a space, ``line``."""
    return b"%08x %s\n" % (zlib.crc32(line), line)


def parse(data: bytes) -> tuple[list[bytes], int]:
    """The lines of a segment that pass their checksum, and how many did not."""
    events: list[bytes] = []
    corrupt = 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        corrupt += 1  # the last write was torn: no newline
        lines.pop()
    for line in lines:
        checksum, _, event = line.partition(b" ")
        try:
            valid = len(checksum) == 8 and int(checksum, 16) == zlib.crc32(event)
        except ValueError:
            valid = False
        if valid:
            events.append(event)
        else:
            corrupt += 1
    return events, corrupt


def _by_kind(lines: list[bytes]) -> dict[Kind, list[bytes]]:
    """Lines sorted by their kind's tag, the tag taken off; those that are not a record
    of their kind left out."""
    tagged = [kind for kind in KINDS if kind.spool_tag]
    untagged = next(kind for kind in KINDS if not kind.spool_tag)
    records: dict[Kind, list[bytes]] = {kind: [] for kind in KINDS}
    for line in lines:
        kind = next((k for k in tagged if line.startswith(k.spool_tag)), untagged)
        record = line[len(kind.spool_tag) :]
        if kind.is_record(record):
            records[kind].append(record)
    return records


def _lock(fd: int, *, blocking: bool) -> bool:
    if sys.platform == "win32":  # pragma: no cover - no locks between processes there
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


def _open_locked(path: pathlib.Path) -> int | None:
    """Open ``path`` and take its lock without waiting; None if it is gone or held."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    if not _lock(fd, blocking=False):
        os.close(fd)
        return None
    if not path.exists():  # deleted by whoever held it before us
        os.close(fd)
        return None
    return fd
