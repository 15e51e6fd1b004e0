"""What is left at shutdown: spooled, or counted as lost, so that nothing goes unaccounted.

A shutdown that ends normally (the sender reached its deadline or sent everything) and
one that gives up on a stuck sender both end here: the items still queued, the batches
built and not sent, each either written to the spool or counted ``shutdown_timeout``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backlog import Backlog
from .batcher import Batch, Batcher
from .intake import STOP, FlushMarker, Intake
from .kinds import KINDS, Kind
from .stats import Ledger

__all__ = ["Leftovers"]


class Leftovers:
    """Takes what is left out of the sender's parts and accounts for it."""

    def __init__(
        self,
        intake: Intake,
        batcher: Batcher,
        backlog: Backlog,
        ledger: Ledger,
        build: Callable[[Any], tuple[bytes, Kind] | None],
    ) -> None:
        self._intake = intake
        self._batcher = batcher
        self._backlog = backlog
        self._ledger = ledger
        self._build = build

    def drain_intake(self) -> tuple[list[Any], list[FlushMarker]]:
        """Take everything out of the queue: the items (counted as taken), and the flush
        markers (to be set once what is left is accounted for)."""
        items: list[Any] = []
        markers: list[FlushMarker] = []
        queue = self._intake.items
        while queue:
            item = queue.popleft()
            if item is STOP or type(item) is FlushMarker:
                self._intake.took_marker()
                if type(item) is FlushMarker:
                    markers.append(item)
            else:
                items.append(item)
        self._ledger.add("dequeued", len(items))
        return items, markers

    def account(self, batches: list[Batch], items: list[Any], *, answer_may_come: bool) -> int:
        """Spool ``batches`` and ``items``, or count them as lost (``shutdown_timeout``).
        ``answer_may_come``: a request may still answer for one of ``batches``, and
        correct the count. Returns how many records were left."""
        backlog, spool = self._backlog, self._backlog.spool
        left = len(items) + sum(len(batch) for batch in batches)
        if spool is not None and items:
            built: dict[Kind, list[bytes]] = {kind: [] for kind in KINDS}
            for item in items:
                made = self._build(item)
                if made is not None:
                    built[made[1]].append(made[0])
            for kind, records in built.items():
                for batch in self._batcher.chunk(records, kind):
                    backlog.hold(batch)
                    batches.append(batch)
        lost = 0 if spool is not None else len(items)
        for batch in batches:
            if batch.replay is not None:
                if not batch.replay.given_back:
                    backlog.give_back(batch.replay)
                backlog.release(batch)
            elif spool is not None:
                backlog.spill(batch)
            else:
                lost += len(batch)
                batch.counted_lost = answer_may_come
                backlog.release(batch)
        if lost:
            message = f"{lost} events not sent before the shutdown deadline"
            self._ledger.drop("shutdown_timeout", message, lost)
        return left
