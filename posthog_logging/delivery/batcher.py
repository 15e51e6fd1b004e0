"""Batches: records sent together, and the one rule for how big a batch grows.

A batch holds ``flush_at`` records when the sender is idle; while a request is in flight
the batch being filled grows past that (load-following: under load each request carries
more). Whatever the count, a batch stays under its kind's byte limit and under an eighth
of the memory bound, so that with a spool there is always a sealed batch to move to disk
when memory passes half of it. :meth:`Batcher.chunk` cuts records read back from the
spool (or left over at shutdown) by the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from .kinds import KINDS, Kind
from .spool import Segment

__all__ = ["Batch", "Batcher", "Replay", "record_size"]


def record_size(record: bytes) -> int:
    """What a record adds to a batch: itself and the comma before the next."""
    return len(record) + 1


class Replay:
    """A spool segment being sent again: deleted once all of its batches are done,
    given back whole if the server fails again."""

    __slots__ = ("given_back", "outstanding", "segment")

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.outstanding = 0  # its batches not yet done with
        self.given_back = False


class Batch:
    """Records sent together, with their retry state (the same bytes on every try)."""

    __slots__ = (
        "attempts",
        "counted_lost",
        "delivered",
        "kind",
        "not_before",
        "records",
        "replay",
        "size",
    )

    def __init__(
        self,
        records: list[bytes],
        kind: Kind,
        size: int | None = None,
        replay: Replay | None = None,
    ) -> None:
        self.records = records
        self.kind = kind
        self.size = sum(map(record_size, records)) if size is None else size
        self.attempts = 0  # failed tries so far
        self.not_before = 0.0  # monotonic time of the next try
        self.replay = replay  # the spool segment it came from, if it did
        self.delivered = False
        self.counted_lost = False  # by shutdown(), while it was in flight

    def __len__(self) -> int:
        return len(self.records)

    def halves(self) -> list[Batch]:
        """The batch cut in two (after a 413), each with its retry state."""
        half = len(self.records) // 2
        parts = []
        for records in (self.records[:half], self.records[half:]):
            part = Batch(records, self.kind, replay=self.replay)
            part.attempts = self.attempts
            parts.append(part)
        if self.replay is not None:
            self.replay.outstanding += 1
        return parts


class Batcher:
    """The batches being filled, one per kind."""

    def __init__(self, flush_at: int, max_queue_bytes: int) -> None:
        self.flush_at = flush_at
        share = max(1, max_queue_bytes // 8)
        self._limit = {kind: min(kind.max_batch_bytes, share) for kind in KINDS}
        self._open: dict[Kind, list[bytes]] = {kind: [] for kind in KINDS}
        self._open_size: dict[Kind, int] = {kind: 0 for kind in KINDS}

    def limit(self, kind: Kind) -> int:
        """The most a batch of ``kind`` holds, in bytes."""
        return self._limit[kind]

    def must_seal_before(self, kind: Kind, size: int) -> bool:
        """Whether a record of ``size`` bytes would not fit the batch being filled."""
        return bool(self._open[kind]) and self._open_size[kind] + size > self._limit[kind]

    def add(self, record: bytes, kind: Kind, size: int, grow: bool) -> Batch | None:
        """Put ``record`` in the batch being filled for its kind (call :meth:`seal`
        first when :meth:`must_seal_before` says so). Returns the batch if that filled
        it: ``flush_at`` records, unless ``grow`` (a request is in flight)."""
        filling = self._open[kind]
        filling.append(record)
        self._open_size[kind] += size
        if len(filling) >= self.flush_at and not grow:
            return self._take(kind)
        return None

    def seal(self, kind: Kind | None = None) -> list[Batch]:
        """Close the batches being filled (of ``kind``, or of every kind)."""
        kinds = KINDS if kind is None else (kind,)
        return [self._take(each) for each in kinds if self._open[each]]

    def seal_full(self) -> list[Batch]:
        """Close the batches that reached ``flush_at`` while they grew."""
        return [self._take(kind) for kind in KINDS if len(self._open[kind]) >= self.flush_at]

    @property
    def filling(self) -> bool:
        """Whether any batch is being filled."""
        return any(self._open.values())

    def chunk(
        self, records: Iterable[bytes], kind: Kind, replay: Replay | None = None
    ) -> list[Batch]:
        """``records`` cut into batches by the rule batches are filled by."""
        batches: list[Batch] = []
        limit = self._limit[kind]
        chunk: list[bytes] = []
        size = 0
        for record in records:
            grows = record_size(record)
            if chunk and (len(chunk) >= self.flush_at or size + grows > limit):
                batches.append(Batch(chunk, kind, size, replay))
                chunk, size = [], 0
            chunk.append(record)
            size += grows
        if chunk:
            batches.append(Batch(chunk, kind, size, replay))
        return batches

    def _take(self, kind: Kind) -> Batch:
        batch = Batch(self._open[kind], kind, self._open_size[kind])
        self._open[kind], self._open_size[kind] = [], 0
        return batch
