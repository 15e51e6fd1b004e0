"""Built records in memory: sealed batches and flush markers, in the order they go.

The backlog holds what the sender has built and not yet sent, and counts the memory
that holds, with what is still being filled: memory is bounded by ``max_queue_bytes``.
With a :class:`~posthog_logging.delivery.spool.Spool` it is also the way to and from
disk: the oldest batches are moved there when memory passes half its bound, and a
spooled segment is read back as batches when there is nothing else to send.
"""

from __future__ import annotations

import collections
import time

from ..exceptions import UnsafeSpoolDirectory
from .batcher import Batch, Batcher, Replay
from .intake import FlushMarker
from .kinds import KINDS, Kind
from .spool import Segment, Spool, SpoolStats
from .stats import Ledger

__all__ = ["SPOOL_CHECK_INTERVAL", "Backlog"]

#: How often a healthy sender looks for spool segments to send again; while the server
#: fails, how often a segment's first batch probes whether it is back.
SPOOL_CHECK_INTERVAL = 5.0


class Backlog:
    """Sealed batches and flush markers in order, the memory they (and the batches being
    filled) hold, and the spool they overflow to and come back from."""

    def __init__(
        self, max_bytes: int, spool: Spool | None, batcher: Batcher, ledger: Ledger
    ) -> None:
        self.max_bytes = max_bytes
        self.spool = spool
        self.items: collections.deque[Batch | FlushMarker] = collections.deque()
        self.records = 0  # records in memory: here, being filled, in flight
        self.bytes = 0
        self.last_size = 0  # the size of the last record admitted: what the next may need
        self.next_spool_check = 0.0
        self._batcher = batcher
        self._ledger = ledger

    # -- memory ------------------------------------------------------------------------

    def admit(self, size: int) -> None:
        """A record of ``size`` bytes was built and is held (in a batch being filled)."""
        self.records += 1
        self.bytes += size
        self.last_size = size

    def has_room(self, size: int) -> bool:
        """Whether ``size`` more bytes fit under the bound."""
        return self.bytes + size <= self.max_bytes

    def hold(self, batch: Batch) -> None:
        """``batch`` (made elsewhere: read back, left over) is held in memory."""
        self.records += len(batch)
        self.bytes += batch.size

    def add(self, record: bytes, kind: Kind, *, grow: bool) -> bool:
        """Put a built record in the batch being filled for its kind, if memory allows
        (else it is dropped and counted); True when that filled the batch, which joins
        the backlog. ``grow``: a request is in flight, and batches grow past flush_at.

        Run for every record: :meth:`has_room` and :meth:`admit` are written out here."""
        size = len(record) + 1  # record_size()
        batcher = self._batcher
        if batcher.must_seal_before(kind, size):
            self.extend(batcher.seal(kind))
        if self.spool is not None:
            self.spill_overflow(size)
        if self.bytes + size > self.max_bytes:
            self._ledger.drop("queue_full", "the queue is full (max_queue_bytes); events dropped")
            return False
        self.records += 1
        self.bytes += size
        self.last_size = size
        sealed = batcher.add(record, kind, size, grow=grow)
        if sealed is None:
            return False
        self.items.append(sealed)
        return True

    def seal(self) -> None:
        """Close the batches being filled: they join the backlog, to be sent in turn."""
        self.extend(self._batcher.seal())

    def release(self, batch: Batch) -> None:
        """``batch`` has left memory: sent, refused, dropped or spooled. The spool
        segment it came from is deleted once all of that segment's batches have."""
        self.records -= len(batch.records)
        self.bytes -= batch.size
        replay = batch.replay
        if replay is not None:
            replay.outstanding -= 1
            if replay.outstanding == 0 and not replay.given_back:
                self._remove_segment(replay.segment)

    def forget(self) -> None:
        """Everything held was accounted for elsewhere (shutdown gave up on the sender)."""
        self.records = self.bytes = 0

    # -- order -------------------------------------------------------------------------

    def batches(self) -> list[Batch]:
        return [item for item in self.items if isinstance(item, Batch)]

    def first_batch(self) -> Batch | None:
        """The batch that goes next, if any (flush markers before it are skipped)."""
        return next((item for item in self.items if isinstance(item, Batch)), None)

    def extend(self, batches: list[Batch], *, first: bool = False) -> None:
        """Add sealed batches, after the others (or, ``first``, before them)."""
        if first:
            self.items.extendleft(reversed(batches))
        else:
            self.items.extend(batches)

    # -- to and from the spool -----------------------------------------------------------

    def spill_overflow(self, incoming: int) -> None:
        """Move the oldest waiting batches to disk so memory stays at half its bound."""
        limit = self.max_bytes // 2
        items = self.items
        while self.bytes + incoming > limit:
            index = next((i for i, item in enumerate(items) if isinstance(item, Batch)), None)
            if index is None:
                return
            batch = items[index]
            del items[index]
            assert isinstance(batch, Batch)
            self.spill(batch)

    def spill(self, batch: Batch) -> None:
        """Write ``batch`` to the spool (it leaves memory); what cannot be written is
        counted as lost. It is written ``flush_at`` records at a time: batches grow to
        megabytes under load, and a disk that fills up takes what fits."""
        assert self.spool is not None
        self.release(batch)
        for part in self._batcher.chunk(batch.records, batch.kind):
            try:
                outcome = self.spool.write(part.records, part.kind)
            except OSError as exc:
                self._ledger.drop(
                    "spool_error",
                    f"could not write {len(part)} events to the spool: {exc}",
                    len(part),
                )
                continue
            self.count_spool(outcome, written=len(part) - outcome.refused)

    def count_spool(self, outcome: SpoolStats, written: int = 0) -> None:
        """Count what a write to (or a read from) the spool did and gave up."""
        self._ledger.add("spooled", written)
        if lost := outcome.dropped_full + outcome.refused:
            message = f"the spool is full (spool_max_bytes): {lost} events dropped"
            self._ledger.drop("spool_full", message, lost)
        if outcome.corrupt:
            self._ledger.drop(
                "spool_corrupt",
                f"{outcome.corrupt} damaged or foreign lines skipped in the spool (a torn write?)",
                outcome.corrupt,
            )

    def replay(self, *, first: bool, healthy: bool) -> bool:
        """Read a spooled segment back as batches: when the sender starts (``first``:
        before anything new), and whenever it has nothing else to send (at most every
        :data:`SPOOL_CHECK_INTERVAL` while the server fails, the segment's first batch
        being the probe that tells whether it is back). True when batches were added."""
        spool = self.spool
        if spool is None:
            return False
        now = time.monotonic()
        if now < self.next_spool_check:
            return False
        if not healthy:
            self.next_spool_check = now + SPOOL_CHECK_INTERVAL
        outcome = SpoolStats()
        try:
            segment = spool.claim(outcome)
            if segment is None and spool.writing:
                spool.close()  # what we spooled ourselves becomes sendable
                segment = spool.claim(outcome)
        except UnsafeSpoolDirectory as exc:  # made unsafe since: read nothing from it
            self._ledger.warn("spool_unsafe", f"{exc}; nothing is read from it")
            self.next_spool_check = now + SPOOL_CHECK_INTERVAL
            return False
        self.count_spool(outcome)
        if segment is None:
            self.next_spool_check = now + SPOOL_CHECK_INTERVAL
            return False
        if not segment.count:
            self._remove_segment(segment)
            return False
        replay = Replay(segment)
        batches: list[Batch] = []
        for kind in KINDS:
            batches += self._batcher.chunk(segment.records[kind], kind, replay)
        replay.outstanding = len(batches)
        for batch in batches:
            self.hold(batch)
        self.extend(batches, first=first)
        return True

    def give_back(self, replay: Replay) -> None:
        """Put a segment being replayed back on disk, whole; forget its batches here."""
        replay.given_back = True
        self.next_spool_check = time.monotonic() + SPOOL_CHECK_INTERVAL
        for batch in [b for b in self.batches() if b.replay is replay]:
            self.items.remove(batch)
            self.release(batch)
        replay.segment.release()

    def _remove_segment(self, segment: Segment) -> None:
        """A replayed segment is done with: delete it, or make sure it is not sent again."""
        assert self.spool is not None
        if not self.spool.remove(segment):
            self._ledger.warn(
                "spool_undeletable",
                f"could not delete the sent spool file {str(segment.path)!r} "
                f"({segment.undeletable}); it was emptied if it could be, and will not be "
                "sent again by this process: delete it by hand",
            )
