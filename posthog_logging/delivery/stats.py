"""What became of every record: counters that any code may bump (signal handlers and
finalisers included), the :class:`Ledger` that counts and says what was lost, and the
:class:`Stats` view a client gives of them.

A counter bumped from a signal handler or a finaliser may land while the same thread is
already bumping or reading one: a lock taken there would be held by the very code the
handler interrupted, and the thread would wait for itself for good. So :meth:`Counters.add`
takes no lock at all; it appends to a :class:`collections.deque`, which is atomic in
CPython. Reading folds what was appended into totals under a lock that only readers take,
and a reader that interrupted a fold on its own thread does not wait for it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..diagnostics import Warner

__all__ = ["Counters", "Ledger", "Stats"]


class _Folding(threading.local):
    active = False  # per thread: inside a fold (set before the lock is taken)


class Counters:
    """Named integer counters. :meth:`add` is safe anywhere, and never blocks."""

    #: Past this many unread increments, ``add`` folds them (when no one else is).
    FOLD_AT = 4096

    def __init__(self) -> None:
        self._increments: collections.deque[tuple[str, int]] = collections.deque()
        self._totals: dict[str, int] = {}
        self._lock = threading.Lock()
        self._folding = _Folding()

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` (which may be negative) to the counter ``name``."""
        self._increments.append((name, n))
        if len(self._increments) > self.FOLD_AT:
            self._fold(wait=False)

    def totals(self) -> dict[str, int]:
        """Every counter's value now."""
        totals = self._fold(wait=not self._folding.active)
        if totals is not None:
            return totals
        # This thread interrupted a fold of its own (a handler reading the counters): do
        # not wait for it. The increment the fold holds in hand may be missing here.
        totals = dict(self._totals)
        for name, n in tuple(self._increments):
            totals[name] = totals.get(name, 0) + n
        return totals

    def __getitem__(self, name: str) -> int:
        return self.totals().get(name, 0)

    def _fold(self, *, wait: bool) -> dict[str, int] | None:
        """Fold the increments into the totals and return a copy of them; None when
        another fold holds the lock and ``wait`` is false."""
        folding = self._folding
        if folding.active:
            return None
        folding.active = True  # before the lock: a handler landing now must not wait
        try:
            if not self._lock.acquire(blocking=wait):
                return None
            try:
                increments, totals = self._increments, self._totals
                while increments:
                    name, n = increments.popleft()
                    totals[name] = totals.get(name, 0) + n
                return dict(totals)
            finally:
                self._lock.release()
        finally:
            folding.active = False


class Ledger:
    """Counts what becomes of records, and says what was lost, once a minute per reason:
    the one place delivery reports through."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.warner = Warner(interval=60.0)

    def add(self, name: str, n: int = 1) -> None:
        """Count ``n`` more under ``name`` (``"sent"``, ``"failed"``, ...)."""
        self.counters.add(name, n)

    def drop(self, reason: str, message: str, n: int = 1) -> None:
        """Count ``n`` records dropped for ``reason`` and warn (rate-limited)."""
        self.counters.add("dropped:" + reason, n)
        self.warn(reason, message)

    def warn(self, key: str, message: str) -> None:
        """Say ``message`` at most once a minute per ``key``: no log storms."""
        self.warner.warn(key, "%s", message)

    def stats(self, *, queue: int, in_memory: int, taken: int) -> Stats:
        """The counters as :class:`Stats`, given the length of the ``queue`` to the
        sender (records and the flush and stop markers among them, counted here as
        ``"markers"``: the queue, which can hold 25,000 records, is not walked), the
        records it holds ``in_memory`` (being built, batched, in flight) and those it has
        ``taken`` from the queue (counted by the sender alone, not here: see Sender)."""
        counts = self.counters.totals()
        queued = max(0, queue - counts.get("markers", 0))
        dropped = _with_prefix(counts, "dropped:")
        return Stats(
            enqueued=counts.get("dequeued", 0) + taken + queued,
            sent=counts.get("sent", 0),
            retried=counts.get("retried", 0),
            failed=counts.get("failed", 0),
            dropped=MappingProxyType(dropped),
            pending=queued + in_memory,
            spooled=counts.get("spooled", 0),
            replayed=counts.get("replayed", 0),
            logs_sent=counts.get("logs_sent", 0),
            dropped_properties=MappingProxyType(_with_prefix(counts, "dropped_property:")),
            waited_for_room=counts.get("waited_for_room", 0),
        )


def _with_prefix(counts: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in counts.items() if k.startswith(prefix) and v}


@dataclass(frozen=True)
class Stats:
    """Counters since the client started (or since a fork, in a child process).

    ``enqueued`` counts events accepted by ``capture``; ``sent`` those the server
    accepted; ``retried`` the requests sent again; ``failed`` events the server refused
    or that ran out of retries; ``dropped`` events discarded before sending, by reason;
    ``pending`` events still in memory; ``spooled`` events written to the disk spool and
    ``replayed`` events from the spool that were then sent (they count in ``sent`` too).
    Log lines for PostHog Logs count in all of these as events do; ``logs_sent`` is the
    part of ``sent`` that were log lines. ``dropped_properties`` counts property values
    left out of events that were sent, by reason (``duplicate_key``: a key such as ``1``
    whose text another key of the same mapping already is, ``"1"``). ``waited_for_room``
    counts the calls that found the queue full and waited for the sender to take
    something rather than drop their event.
    """

    enqueued: int
    sent: int
    retried: int
    failed: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    pending: int = 0
    spooled: int = 0
    replayed: int = 0
    logs_sent: int = 0
    dropped_properties: Mapping[str, int] = field(default_factory=dict)
    waited_for_room: int = 0

    @property
    def dropped_total(self) -> int:
        """All dropped events, whatever the reason."""
        return sum(self.dropped.values())
