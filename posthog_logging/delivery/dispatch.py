"""The sender's work: taking captured items, having them built into batches, and
sending the batches that are due, one request at a time.

:class:`Dispatcher` takes items from the queue in order, with the flush and stop
markers among them, and has each built by the client's ``build`` callable (delivery
never looks inside an item) into the batch being filled for its kind. It sends the head
of the backlog while it is due; a failing batch waits for its next try, and those behind
it wait too. While a request is in flight, on the :class:`RequestThread`, it builds
what arrives meanwhile. :class:`Stop` is what shutdown has said: when sending must stop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..reentry import mark_library_thread
from .backlog import Backlog
from .batcher import Batch, Batcher
from .courier import Courier
from .intake import STOP, FlushMarker, Intake
from .kinds import Kind
from .stats import Ledger
from .transport import SendResult, Transport

__all__ = ["BUILD_CHUNK", "BUILD_POLL", "Build", "Dispatcher", "RequestThread", "Stop"]

#: Turns a captured item into its record (JSON bytes) and kind; None when it was dropped
#: (it counts the drop itself).
Build = Callable[[Any], "tuple[bytes, Kind] | None"]

#: While a request is in flight, items are built this many at a time, and new ones
#: looked for this often (seconds) when there are none.
BUILD_CHUNK = 256
BUILD_POLL = 0.005


class Stop:
    """What shutdown has said, shared by the sender's parts."""

    def __init__(self) -> None:
        self.finished = threading.Event()
        """The sender has stopped for good (or shutdown gave up on it)."""
        self.deadline: float | None = None
        """When shutdown must be done (monotonic); None before shutdown()."""
        self.reserve = 0.0
        """How long before the deadline sending stops, to write what is left to disk."""
        self.stopping = False
        """The stop marker was taken: what is left is sent, then the sender stops."""

    def send_deadline(self) -> float:
        """When sending must stop at shutdown: a little before the deadline with a spool,
        so that what is left can still be written to disk in time."""
        assert self.deadline is not None
        return self.deadline - self.reserve

    def past_send_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.send_deadline()


class Dispatcher:
    """Takes items, builds them into batches, and sends the batches that are due."""

    def __init__(
        self,
        build: Build,
        transport: Transport,
        *,
        intake: Intake,
        batcher: Batcher,
        backlog: Backlog,
        courier: Courier,
        ledger: Ledger,
        stop: Stop,
        timeout: float,
    ) -> None:
        self.transport = transport
        self.stop = stop
        self.timeout = timeout
        self._build = build
        self._intake = intake
        self._batcher = batcher
        self._backlog = backlog
        self._courier = courier
        self._ledger = ledger
        self.taken: Any = None  # the item being built: still counted against the queue
        self.dequeued = 0  # items taken from the queue (only the sender's thread writes this)
        self.in_flight: Batch | None = None
        self.posting = False  # a request is in flight while building goes on
        self.building = threading.Lock()  # held while it does; abandon() waits for it
        self._requests = RequestThread()
        self.last_seal = time.monotonic()

    def take(self, limit: int = 10_000, whole: bool = False) -> None:
        """Move items from the queue into batches, building them on the way.

        Unless ``whole``, it stops once a batch is ready to go: sending it then (which
        waits on the network without the GIL) lets the threads that log run meanwhile.
        """
        items = self._intake.items
        backlog = self._backlog
        refused = 0
        try:
            for _ in range(limit):
                try:
                    item = items.popleft()
                except IndexError:
                    return
                if type(item) is FlushMarker:
                    self._intake.took_marker()
                    self.seal()
                    backlog.items.append(item)
                    continue
                if item is STOP:
                    self._intake.took_marker()
                    self.seal()
                    self.stop.stopping = True
                    continue
                # Counted one by one, as taken: if building never returns (a __str__
                # that hangs), shutdown() still accounts for everything.
                self.dequeued += 1
                if backlog.bytes + backlog.last_size > backlog.max_bytes:
                    # Memory is full (an outage without a spool): a record built now
                    # would be refused by the bound; refuse it without building it.
                    refused += 1
                    continue
                self.taken = item
                made = self._build(item)
                self.taken = None
                if self.stop.finished.is_set():
                    return  # shutdown() gave up on us meanwhile, and counted it
                # While a request is in flight, or more items wait, the batch grows past
                # flush_at (up to its bytes limit): under load each request carries more,
                # and its fixed cost (a few GIL hand-overs, headers, the deadline's timer)
                # is spread over thousands of events rather than a hundred.
                grow = self.posting or bool(items)
                if made is not None and backlog.add(made[0], made[1], grow=grow):
                    self.last_seal = time.monotonic()  # it filled a batch
                    if whole:
                        continue
                    head = backlog.items[0]
                    if not isinstance(head, Batch) or head.not_before <= time.monotonic():
                        return
        finally:
            if refused:
                message = "the queue is full (max_queue_bytes); events dropped"
                self._ledger.drop("queue_full", message, refused)

    def seal(self) -> None:
        """Close the batches being filled: they join the backlog, to be sent in turn."""
        self._backlog.seal()
        self.last_seal = time.monotonic()

    def send_due(self) -> None:
        """Send batches from the head of the backlog while they are due and succeed."""
        items = self._backlog.items
        while items and not self.stop.finished.is_set():
            head = items[0]
            if isinstance(head, FlushMarker):
                items.popleft()
                head.done.set()
                continue
            if head.not_before > time.monotonic() or self.stop.past_send_deadline():
                return
            items.popleft()
            again = self.send(head)
            self._backlog.extend(again, first=True)
            if again and again[0].not_before > time.monotonic():
                return  # the head waits for its next try; the rest wait behind it
            if not items:
                self.take()

    def send(self, batch: Batch) -> list[Batch]:
        """Post ``batch`` once. Returns what must be tried again (empty when done)."""
        timeout = self.timeout
        if self.stop.deadline is not None:
            remaining = self.stop.send_deadline() - time.monotonic()
            if remaining <= 0:
                return [batch]
            timeout = min(timeout, remaining)
        self.in_flight = batch
        result = self._post(batch, timeout)
        self.in_flight = None
        self._backlog.extend(self._batcher.seal_full())  # what came in meanwhile goes next
        if self.stop.finished.is_set():
            self._courier.late_answer(batch, result)
            return []
        return self._courier.settle(batch, result)

    def _post(self, batch: Batch, timeout: float) -> SendResult:
        """Send ``batch``; while the request waits on the network, build what comes in.

        The request runs on the request thread: a sender that waited on the network
        would let a busy application queue items faster than they go out (the queue may
        be empty when the request starts and full a moment later). While it runs, this
        thread looks for items every BUILD_POLL, and never waits while there are some:
        a wait gives up the GIL, and under load taking it back costs a switch interval
        (5 ms) in which the callers queue more. At shutdown the request is made here.
        """
        transport, items = self.transport, self._intake.items
        if self.stop.deadline is not None:
            return transport.send(batch.records, batch.kind, timeout)
        request = self._requests.submit(transport, batch, timeout)
        if request is None:  # no new threads at interpreter exit
            return transport.send(batch.records, batch.kind, timeout)
        done = request.done
        self.posting = True
        try:
            while not done.is_set():
                if self.stop.deadline is not None or self.stop.finished.is_set():
                    # Shutdown has begun and accounts for what is held: keep still.
                    done.wait()
                    break
                if not items:
                    done.wait(BUILD_POLL)
                    continue
                with self.building:
                    if not self.stop.finished.is_set():
                        self.take(limit=BUILD_CHUNK, whole=True)
        finally:
            self.posting = False
        return request.result

    def close(self) -> None:
        """The sender has stopped: end the request thread once it is idle."""
        self._requests.close()


class _Request:
    """One request, for the request thread."""

    __slots__ = ("batch", "done", "result", "timeout", "transport")

    def __init__(self, transport: Transport, batch: Batch, timeout: float) -> None:
        self.transport = transport
        self.batch = batch
        self.timeout = timeout
        self.done = threading.Event()
        self.result = SendResult(status=None, error="no answer")

    def run(self) -> None:
        try:
            self.result = self.transport.send(self.batch.records, self.batch.kind, self.timeout)
        except Exception as exc:  # pragma: no cover - send() never raises by contract
            self.result = SendResult(status=None, error=type(exc).__name__)
        finally:
            self.done.set()


class RequestThread:
    """The thread a sender's requests run on while it goes on building: one per sender,
    started at its first request and kept (a thread started per request would cost the
    sender two GIL hand-overs each time)."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, transport: Transport, batch: Batch, timeout: float) -> _Request | None:
        """Start sending ``batch``; None when no thread can be started."""
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="posthog_logging.request", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter exit
                return None
            self._thread = thread
        request = _Request(transport, batch, timeout)
        self._requests.put(request)
        return request

    def close(self) -> None:
        """End the thread after the request it is running, if any."""
        if self._thread is not None:
            self._requests.put(None)

    def _run(self) -> None:
        mark_library_thread()  # what the HTTP stack logs here is the library's own
        while (request := self._requests.get()) is not None:
            request.run()
