"""The queue between the callers and the sender.

Callers append what they captured (opaque items: delivery does not look inside) and
ring the :class:`Doorbell`; the sender takes items out in order, with the flush markers
and the stop marker that :meth:`Sender.flush` and :meth:`Sender.shutdown` put among
them. Appending to a :class:`collections.deque` is atomic, and nothing on the callers'
side takes a lock, so a signal handler or a finaliser may capture at any moment.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from typing import Any

from .stats import Counters

__all__ = ["STOP", "Doorbell", "FlushMarker", "Intake"]


class FlushMarker:
    """Put in the queue by ``flush()``: set once everything before it has left memory."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


#: Put in the queue by ``shutdown()``: the sender stops once it has sent what came before.
STOP = object()


class Doorbell:
    """Wakes the sender. :meth:`ring` may be called from anywhere, a signal handler or a
    finaliser included: :meth:`queue.SimpleQueue.put` is reentrant, where a
    :class:`threading.Event` takes a lock the interrupted code may hold."""

    __slots__ = ("_bell", "_rung")

    def __init__(self) -> None:
        self._bell: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._rung = False

    def ring(self) -> None:
        """Wake the waiting thread (or the next wait returns at once)."""
        if not self._rung:  # one token is enough; a race only adds a spare one
            self._rung = True
            self._bell.put(None)

    def wait(self, timeout: float) -> None:
        """Wait until rung or ``timeout`` seconds; then take every token."""
        bell = self._bell
        with contextlib.suppress(queue.Empty):
            bell.get(timeout=timeout)
        self._rung = False
        while True:
            try:
                bell.get_nowait()
            except queue.Empty:
                return


class Intake:
    """Items waiting for the sender, bounded by ``max_size`` (the sender appends to
    ``items`` itself: see :meth:`Sender.put`), and the markers among them."""

    def __init__(self, max_size: int, counters: Counters) -> None:
        self.max_size = max_size
        self.items: collections.deque[Any] = collections.deque()
        self.bell = Doorbell()
        self._counters = counters  # "markers": how many of the items are markers

    def __len__(self) -> int:
        return len(self.items)

    def put_marker(self, marker: FlushMarker | object) -> None:
        """Append a flush or stop marker, and wake the sender."""
        self._counters.add("markers")
        self.items.append(marker)
        self.bell.ring()

    def took_marker(self) -> None:
        """The sender (or shutdown) took a marker out."""
        self._counters.add("markers", -1)
