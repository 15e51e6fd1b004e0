"""The sender: a thread that takes captured items, builds them into batches and sends them.

It wakes when ``flush_at`` items are waiting or ``flush_interval`` has passed, takes items
from the :class:`~posthog_logging.delivery.intake.Intake`, has them built (by the
``build`` callable the client gives it: delivery never looks inside an item) into the
:class:`~posthog_logging.delivery.batcher.Batcher`'s batches, and sends the head of the
:class:`~posthog_logging.delivery.backlog.Backlog` through the
:class:`~posthog_logging.delivery.transport.Transport`. A failing batch waits for its
next try with the same bytes, and the batches behind it wait too, so an outage costs one
request per backoff step. While a request is in flight on a thread of its own, the
sender goes on building what arrives. ``flush()``, ``shutdown()`` and the exit hook wait
for it, never past their deadline; what is left at the deadline goes to the spool or is
counted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..diagnostics import Warner, logger
from ..reentry import in_library_code, library_code, mark_library_thread
from .backlog import Backlog
from .batcher import Batch, Batcher, record_size
from .courier import Courier, OnError
from .intake import STOP, FlushMarker, Intake
from .kinds import KINDS, Kind
from .retry import RetryPolicy
from .spool import Spool
from .stats import Ledger, Stats
from .transport import SendResult, Transport

__all__ = ["JOIN_GRACE", "Build", "Sender"]

#: Turns a captured item into its record (JSON bytes) and kind; None when it was dropped
#: (it counts the drop itself).
Build = Callable[[Any], "tuple[bytes, Kind] | None"]

#: With a spool, sending stops this long (at most a tenth of the timeout) before a
#: shutdown deadline, to leave time for writing what is left to disk.
SPOOL_RESERVE = 0.5
#: How long shutdown() waits for the sender past the deadline, for it to finish its
#: last step; past that, shutdown() accounts for what the sender holds itself.
JOIN_GRACE = 0.05
#: How long the sender pauses after an unexpected error of its own before going on.
ERROR_PAUSE = 0.5
#: While a request is in flight, the sender builds items this many at a time, and
#: looks for new ones this often (seconds) when there are none.
BUILD_CHUNK = 256
BUILD_POLL = 0.005


class Sender:
    """One client's delivery: its queue, batches, backlog and thread."""

    def __init__(
        self,
        build: Build,
        transport: Transport,
        *,
        host: str,
        flush_at: int,
        flush_interval: float,
        max_queue_size: int,
        max_queue_bytes: int,
        timeout: float,
        shutdown_timeout: float,
        retry: RetryPolicy,
        spool: Spool | None = None,
        on_error: OnError | None = None,
        sync_mode: bool = False,
    ) -> None:
        self.transport = transport
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.shutdown_timeout = shutdown_timeout
        self.sync_mode = sync_mode
        # sync_mode ignores the spool: its point is that the caller knows what happened.
        self.spool = None if sync_mode else spool
        self._build = build
        self._settings = (host, max_queue_size, max_queue_bytes, retry, on_error)
        self._errors = Warner()
        self._reset()
        if self.spool is not None and self.spool.has_segments():
            self.start()  # what an earlier run left on disk is sent first

    def _reset(self) -> None:
        host, max_queue_size, max_queue_bytes, retry, on_error = self._settings
        self.ledger = Ledger()
        self.intake = Intake(max_queue_size, self.ledger.counters)
        self._items, self._bell = self.intake.items, self.intake.bell
        self._max_queue_size = max_queue_size
        self.batcher = Batcher(self.flush_at, max_queue_bytes)
        self.backlog = Backlog(max_queue_bytes, self.spool, self.batcher, self.ledger)
        spill = self.spool is not None
        self.courier = Courier(
            retry, self.backlog, self.ledger, host=host, on_error=on_error, spill=spill
        )
        self.closed = False  # no more items are taken (after shutdown())
        self._thread: threading.Thread | None = None
        self._threads_refused = False
        self._start_lock = threading.Lock()
        self._pid = os.getpid()
        self._finished = threading.Event()  # stopped for good
        self._deadline: float | None = None  # monotonic; set by shutdown()
        self._spool_reserve = 0.0
        self._stopping = False
        self._shutdown_ok = True
        self._last_seal = time.monotonic()
        self._taken: Any = None  # the item being built: still counted against the queue
        self._dequeued = 0  # items this thread took from the queue (only it writes this)
        self._in_flight: Batch | None = None
        self._posting = False  # a request is in flight while the sender builds on
        self._building = threading.Lock()  # held while it does; abandon() waits for it

    # -- the callers' side ------------------------------------------------------------

    def put(self, item: Any) -> bool:
        """Queue ``item``; False when the queue is full (the drop is counted). Takes no
        lock: safe from signal handlers and finalisers."""
        if self.sync_mode:
            return self.send_now(item)
        # The intake's queue, used here directly: this runs for every event.
        items = self._items
        if len(items) + (self._taken is not None) >= self._max_queue_size:
            self.ledger.drop("queue_full", "the queue is full (max_queue_size); events dropped")
            return False
        items.append(item)
        if self._thread is None and not self._threads_refused:
            self.start()
        if len(items) >= self.flush_at:
            self._bell.ring()
        return True

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        held = self.backlog.records + (self._taken is not None)
        return self.ledger.stats(queue=len(self.intake), in_memory=held, taken=self._dequeued)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far has left memory, at most ``timeout``."""
        if self.sync_mode or self._pid != os.getpid():
            return True
        deadline = time.monotonic() + timeout
        if not len(self.intake) and not self.backlog.records:
            return True
        if in_library_code():
            self._warn_inside("flush")
            return False
        marker = FlushMarker()
        self.intake.put_marker(marker)
        if not self._alive():
            self._run_inline(deadline, until=marker.done)
        return marker.done.wait(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout: float) -> bool:
        """Send what is queued until ``timeout``, then spool or count what is left and
        stop. True when everything was sent (or refused by the server) in time."""
        deadline = time.monotonic() + timeout
        if self._finished.is_set():
            return True
        self.closed = True
        if self.spool is not None:
            self._spool_reserve = min(SPOOL_RESERVE, timeout / 10)
        if self._deadline is None or deadline < self._deadline:
            self._deadline = deadline
        self.intake.put_marker(STOP)
        if in_library_code():
            # From a hook the sender runs (on_error, before_send): it stops once the hook
            # returns, and this thread must not wait for itself.
            self._warn_inside("shutdown")
            return False
        if self._alive():
            self._finished.wait(max(0.0, deadline - time.monotonic()) + JOIN_GRACE)
        else:
            self._run_inline(deadline + JOIN_GRACE, until=self._finished)
        if not self._finished.is_set():
            # The sender is stuck past the deadline: in a request that began before
            # shutdown() was called, or in a hook that does not return. Account for
            # what it holds here rather than wait any longer.
            self._abandon()
        self.transport.close()  # a request still in flight ends now (it is accounted for)
        return self._shutdown_ok

    def send_now(self, item: Any) -> bool:
        """``sync_mode``: build and send ``item`` on this thread, retries included; True
        when it was delivered."""
        with library_code():
            self.ledger.add("dequeued")
            made = self._build(item)
            if made is None:
                return False
            record, kind = made
            batch = Batch([record], kind)
            self.backlog.admit(batch.size)
            waiting = [batch]
            while waiting:
                current = waiting.pop(0)
                time.sleep(max(0.0, current.not_before - time.monotonic()))
                result = self.transport.send(current.records, current.kind, self.timeout)
                waiting[:0] = self.courier.settle(current, result)
            return batch.delivered

    def after_fork_in_child(self) -> None:
        """The parent's items are the parent's to send: start empty, with a fresh thread
        and no inherited sockets, spool segment or lock."""
        for batch in self.backlog.batches():  # segments the parent replays stay its own
            if batch.replay is not None:
                batch.replay.segment.release()
        closed = self.closed
        self._reset()
        self.closed = closed
        self.transport.reset_after_fork()
        if self.spool is not None:
            self.spool.forget_after_fork()

    @property
    def thread(self) -> threading.Thread | None:
        """The sender's thread, once started."""
        return self._thread

    @property
    def stopped(self) -> bool:
        """Whether it has stopped for good (after ``shutdown()``)."""
        return self._finished.is_set()

    def use_transport(self, transport: Transport) -> None:
        """Send through ``transport`` from the next request on."""
        self.transport = transport

    def _warn_inside(self, method: str) -> None:
        self.ledger.warn(
            f"{method}_inside",
            f"{method}() was called from inside the library (a hook such as on_error or "
            "before_send, or a finaliser on its thread): it cannot wait for the sender "
            "it runs on, and returned at once",
        )

    # -- the thread ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (once; not again after it stopped)."""
        # Not waited for: a signal handler or finaliser that captures while this thread
        # is starting the sender would otherwise wait for itself.
        if not self._start_lock.acquire(blocking=False):
            return  # being started (or, here, about to be) already
        try:
            if self._thread is not None or self._finished.is_set():
                return
            thread = threading.Thread(target=self._run, name="posthog_logging.sender", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                # No new threads at interpreter shutdown: the exit hook sends inline.
                self._threads_refused = True
                return
            self._thread = thread
        finally:
            self._start_lock.release()

    def _alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        mark_library_thread()
        try:
            self._replay(first=True)  # what an earlier run left goes before the new
        except Exception:
            logger.exception("posthog_logging: could not read the spool")
        while True:
            self.intake.bell.wait(self._wait_time())
            if self._cycle():
                return

    def _run_inline(self, deadline: float, until: threading.Event) -> None:
        """Do the sender's work on this thread, when there is no sender thread to do it."""
        with library_code():
            while not until.is_set() and not self._cycle():
                remaining = deadline - time.monotonic()
                if until.is_set() or remaining <= 0:
                    return
                time.sleep(min(self._wait_time(), remaining))

    def _wait_time(self) -> float:
        """How long the sender may sleep before something is due."""
        if len(self.intake) >= self.flush_at:
            return 0.0
        now = time.monotonic()
        wait = self.flush_interval
        if self.batcher.filling:
            wait = min(wait, self._last_seal + self.flush_interval - now)
        items = self.backlog.items
        if items and isinstance(items[0], Batch):
            wait = min(wait, items[0].not_before - now)
        if self._deadline is not None:
            wait = min(wait, self._send_deadline() - now)
        return max(0.0, wait)

    def _cycle(self) -> bool:
        """One round: take new items, send what is due. True once stopped for good."""
        if self._finished.is_set():
            return True
        try:
            self._take()
            if self.batcher.filling and (
                self._stopping or time.monotonic() - self._last_seal >= self.flush_interval
            ):
                self._seal()
            elif not self.batcher.filling:
                self._last_seal = time.monotonic()
            self._send_due()
            if not self._stopping:
                if not self.backlog.first_batch() and not self.batcher.filling:
                    self._replay(first=False)
                return False
            if self.backlog.items and not self._past_send_deadline():
                head = self.backlog.items[0]
                if not (isinstance(head, Batch) and head.not_before > self._send_deadline()):
                    return False  # still time to send what is left
            self._finish()
            return True
        except Exception:  # a bug here must not kill the sender and lose everything after
            message = "posthog_logging: unexpected error in the sender"
            self._errors.warn("sender_error", message, exc_info=True, level=logging.ERROR)
            self.intake.bell.wait(ERROR_PAUSE)  # not a busy loop if it happens every time
            return False

    def _replay(self, *, first: bool) -> None:
        if self.backlog.replay(first=first, healthy=self.courier.healthy):
            self.intake.bell.ring()

    # -- building -----------------------------------------------------------------------

    def _take(self, limit: int = 10_000, whole: bool = False) -> None:
        """Move items from the queue into batches, building them on the way.

        Unless ``whole``, it stops once a batch is ready to go: sending it then (which
        waits on the network without the GIL) lets the threads that log run meanwhile.
        """
        items = self.intake.items
        backlog = self.backlog
        refused = 0
        try:
            for _ in range(limit):
                try:
                    item = items.popleft()
                except IndexError:
                    return
                if type(item) is FlushMarker:
                    self.intake.took_marker()
                    self._seal()
                    backlog.items.append(item)
                    continue
                if item is STOP:
                    self.intake.took_marker()
                    self._seal()
                    self._stopping = True
                    continue
                # Counted one by one, as taken: if building never returns (a __str__
                # that hangs), shutdown() still accounts for everything.
                self._dequeued += 1
                if not backlog.has_room(backlog.last_size):
                    # Memory is full (an outage without a spool): a record built now
                    # would be refused by the bound; refuse it without building it.
                    refused += 1
                    continue
                self._taken = item
                made = self._build(item)
                self._taken = None
                if self._finished.is_set():
                    return  # shutdown() gave up on us meanwhile, and counted it
                if made is not None and self._add(*made) and not whole:
                    head = backlog.items[0]
                    if not isinstance(head, Batch) or head.not_before <= time.monotonic():
                        return
        finally:
            if refused:
                message = "the queue is full (max_queue_bytes); events dropped"
                self.ledger.drop("queue_full", message, refused)

    def _add(self, record: bytes, kind: Kind) -> bool:
        """Put a built record in the batch being filled for its kind; True when that
        sealed the batch."""
        size = record_size(record)
        batcher, backlog = self.batcher, self.backlog
        if batcher.must_seal_before(kind, size):
            backlog.extend(batcher.seal(kind))
        if backlog.spool is not None:
            backlog.spill_overflow(size)
        if not backlog.has_room(size):
            self.ledger.drop("queue_full", "the queue is full (max_queue_bytes); events dropped")
            return False
        backlog.admit(size)
        # While a request is in flight the batch grows past flush_at (up to its bytes
        # limit): under load, batches grow with it, and each request carries more.
        sealed = batcher.add(record, kind, size, grow=self._posting)
        if sealed is None:
            return False
        backlog.extend([sealed])
        self._last_seal = time.monotonic()
        return True

    def _seal(self) -> None:
        """Close the batches being filled: they join the backlog, to be sent in turn."""
        self.backlog.extend(self.batcher.seal())
        self._last_seal = time.monotonic()

    # -- sending ------------------------------------------------------------------------

    def _send_due(self) -> None:
        """Send batches from the head of the backlog while they are due and succeed."""
        items = self.backlog.items
        while items and not self._finished.is_set():
            head = items[0]
            if isinstance(head, FlushMarker):
                items.popleft()
                head.done.set()
                continue
            if head.not_before > time.monotonic() or self._past_send_deadline():
                return
            items.popleft()
            again = self._send(head)
            self.backlog.extend(again, first=True)
            if again and again[0].not_before > time.monotonic():
                return  # the head waits for its next try; the rest wait behind it
            if not items:
                self._take()

    def _send(self, batch: Batch) -> list[Batch]:
        """Post ``batch`` once. Returns what must be tried again (empty when done)."""
        timeout = self.timeout
        if self._deadline is not None:
            remaining = self._send_deadline() - time.monotonic()
            if remaining <= 0:
                return [batch]
            timeout = min(timeout, remaining)
        self._in_flight = batch
        result = self._post(batch, timeout)
        self._in_flight = None
        self.backlog.extend(self.batcher.seal_full())  # what came in meanwhile goes next
        if self._finished.is_set():
            self.courier.late_answer(batch, result)
            return []
        return self.courier.settle(batch, result)

    def _post(self, batch: Batch, timeout: float) -> SendResult:
        """Send ``batch``; while the request waits on the network, build what comes in.

        The request runs on a thread of its own only when there are items to build: a
        sender that waited idle on the network would let a busy application queue items
        faster than they go out.
        """
        transport, items = self.transport, self.intake.items
        if not items or self._deadline is not None:
            return transport.send(batch.records, batch.kind, timeout)
        request = _Request(transport, batch, timeout)
        try:
            threading.Thread(
                target=request.run, name="posthog_logging.request", daemon=True
            ).start()
        except RuntimeError:  # no new threads at interpreter exit
            return transport.send(batch.records, batch.kind, timeout)
        self._posting = True
        try:
            while not request.done.wait(0 if items else BUILD_POLL):
                if self._deadline is not None or self._finished.is_set():
                    # Shutdown has begun and accounts for what is held: keep still.
                    request.done.wait()
                    break
                with self._building:
                    if not self._finished.is_set():
                        self._take(limit=BUILD_CHUNK, whole=True)
        finally:
            self._posting = False
        return request.result

    # -- stopping -----------------------------------------------------------------------

    def _send_deadline(self) -> float:
        """When sending must stop at shutdown: a little before the deadline with a spool,
        so that what is left can still be written to disk in time."""
        assert self._deadline is not None
        return self._deadline - self._spool_reserve

    def _past_send_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._send_deadline()

    def _finish(self) -> None:
        """After the stop marker: spool or count what is left, wake every waiter."""
        if self._finished.is_set():
            return  # shutdown() gave up on us and has counted everything
        self._seal()
        items, markers = self._drain_intake()
        self.ledger.add("dequeued", len(items))
        leftover = self.backlog.batches()
        markers += [item for item in self.backlog.items if isinstance(item, FlushMarker)]
        self.backlog.items.clear()
        if self._account_leftovers(leftover, items, answer_may_come=False):
            self._shutdown_ok = False
        if self.spool is not None:
            self.spool.close()
        for marker in markers:
            marker.done.set()
        self._finished.set()

    def _abandon(self) -> None:
        """shutdown() could not wait any longer for the sender: spool or count, from this
        thread, everything the sender holds. The sender stops at its next step."""
        self._finished.set()
        # The sender may be building while a request is in flight: let it finish that
        # step (a few milliseconds) rather than read what it is changing.
        acquired = self._building.acquire(timeout=JOIN_GRACE)
        try:
            self._shutdown_ok = False
            batches = self.backlog.batches()
            markers = [item for item in self.backlog.items if isinstance(item, FlushMarker)]
            self.backlog.items.clear()
            in_flight = self._in_flight
            if in_flight is not None and in_flight not in batches:
                batches.insert(0, in_flight)
            batches += self.batcher.seal()
            items, more_markers = self._drain_intake()
            self.ledger.add("dequeued", len(items))
            stuck, self._taken = self._taken, None
            if stuck is not None:  # its building never returned (a __str__ that hangs?)
                self.ledger.drop("shutdown_timeout", "an event still being built at the deadline")
            try:
                self._account_leftovers(batches, items, answer_may_come=True)
            finally:
                # What was held has been spooled or counted: nothing is in memory any more.
                self.backlog.forget()
                for marker in markers + more_markers:
                    marker.done.set()
        finally:
            if acquired:
                self._building.release()

    def _drain_intake(self) -> tuple[list[Any], list[FlushMarker]]:
        """Take everything out of the queue: the items, and the flush markers."""
        items: list[Any] = []
        markers: list[FlushMarker] = []
        queue = self.intake.items
        while queue:
            item = queue.popleft()
            if item is STOP or type(item) is FlushMarker:
                self.intake.took_marker()
                if type(item) is FlushMarker:
                    markers.append(item)
            else:
                items.append(item)
        return items, markers

    def _account_leftovers(
        self, batches: list[Batch], items: list[Any], *, answer_may_come: bool
    ) -> int:
        """What is left at shutdown goes to the spool, or is counted as lost
        (``shutdown_timeout``). ``answer_may_come``: a request may still answer for one
        of ``batches``, and correct the count. Returns how many records were left."""
        backlog, spool = self.backlog, self.spool
        left = len(items) + sum(len(batch) for batch in batches)
        if spool is not None and items:
            built: dict[Kind, list[bytes]] = {kind: [] for kind in KINDS}
            for item in items:
                made = self._build(item)
                if made is not None:
                    built[made[1]].append(made[0])
            for kind, records in built.items():
                for batch in self.batcher.chunk(records, kind):
                    backlog.records += len(batch)
                    backlog.bytes += batch.size
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
            self.ledger.drop("shutdown_timeout", message, lost)
        return left


class _Request:
    """One request, run on a thread of its own while the sender goes on building."""

    __slots__ = ("batch", "done", "result", "timeout", "transport")

    def __init__(self, transport: Transport, batch: Batch, timeout: float) -> None:
        self.transport = transport
        self.batch = batch
        self.timeout = timeout
        self.done = threading.Event()
        self.result = SendResult(status=None, error="no answer")

    def run(self) -> None:
        mark_library_thread()  # what the HTTP stack logs here is the library's own
        try:
            self.result = self.transport.send(self.batch.records, self.batch.kind, self.timeout)
        except Exception as exc:  # pragma: no cover - send() never raises by contract
            self.result = SendResult(status=None, error=type(exc).__name__)
        finally:
            self.done.set()
