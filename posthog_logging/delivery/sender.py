"""The sender: one client's delivery, and the thread that does it.

:class:`Sender` puts together the parts (the
:class:`~posthog_logging.delivery.intake.Intake` the callers append to, the
:class:`~posthog_logging.delivery.batcher.Batcher`, the
:class:`~posthog_logging.delivery.backlog.Backlog`, the
:class:`~posthog_logging.delivery.courier.Courier` and the
:class:`~posthog_logging.delivery.dispatch.Dispatcher` that works them) and runs its
thread: it wakes when ``flush_at`` items are waiting, when ``flush_interval`` has passed
or when a retry is due, and has the dispatcher take, build and send. ``flush()``,
``shutdown()`` and the exit hook wait for it, never past their deadline; what is left at
the deadline goes to the spool or is counted, even when the thread is stuck.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ..diagnostics import Warner, logger
from ..reentry import in_library_code, library_code, mark_library_thread
from .backlog import Backlog
from .batcher import Batch, Batcher
from .closing import Leftovers
from .courier import Courier, OnError
from .dispatch import Build, Dispatcher, Stop
from .intake import STOP, FlushMarker, Intake
from .retry import RetryPolicy
from .spool import Spool
from .stats import Ledger, Stats
from .transport import Transport

__all__ = ["JOIN_GRACE", "Sender"]

#: With a spool, sending stops this long (at most a tenth of the timeout) before a
#: shutdown deadline, to leave time for writing what is left to disk.
SPOOL_RESERVE = 0.5
#: How long shutdown() waits for the sender past the deadline, for it to finish its
#: last step; past that, shutdown() accounts for what the sender holds itself.
JOIN_GRACE = 0.05
#: How long the sender pauses after an unexpected error of its own before going on.
ERROR_PAUSE = 0.5
#: A caller that finds the queue full sleeps this long (seconds), giving the sender the
#: GIL, and again while the sender takes items meanwhile, for at most MAX_WAIT_FOR_ROOM.
WAIT_FOR_ROOM_STEP = 0.001
MAX_WAIT_FOR_ROOM = 1.0
#: A sender that took nothing for this long (seconds) is taken as stuck, and the caller
#: stops waiting. Long enough for the other threads of a busy process to have their
#: turns at the GIL (a switch interval each, or longer in C code that keeps it).
STALLED_AFTER = 0.1
#: ... and over at least this many of the caller's own looks (each a WAIT_FOR_ROOM_STEP
#: sleep): a sender that holds the GIL for a while (a garbage collection of a queue full
#: of events) keeps the caller from looking too, and is not stuck.
STALLED_STEPS = 50


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
        self._transport = transport
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
        self._leftovers = Leftovers(
            self.intake, self.batcher, self.backlog, self.ledger, self._build
        )
        self.stop = Stop()
        self.dispatcher = Dispatcher(
            self._build,
            self._transport,
            intake=self.intake,
            batcher=self.batcher,
            backlog=self.backlog,
            courier=self.courier,
            ledger=self.ledger,
            stop=self.stop,
            timeout=self.timeout,
        )
        self.closed = False  # no more items are taken (after shutdown())
        self._thread: threading.Thread | None = None
        self._threads_refused = False
        self._start_lock = threading.Lock()
        self._pid = os.getpid()
        self._shutdown_ok = True
        self._stalled_at = -1  # what the sender had taken when it was last found stuck

    # -- the callers' side ------------------------------------------------------------

    def put(self, item: Any) -> bool:
        """Queue ``item``. When the queue is full, wait for a sender that is taking
        items (:meth:`_wait_for_room`); False when there is still no room (the drop is
        counted). Takes no lock: safe from signal handlers and finalisers."""
        if self.sync_mode:
            return self.send_now(item)
        # The intake's queue, used here directly: this runs for every event.
        items = self._items
        full = len(items) + (self.dispatcher.taken is not None) >= self._max_queue_size
        if full and not self._wait_for_room():
            self.ledger.drop("queue_full", "the queue is full (max_queue_size); events dropped")
            return False
        items.append(item)
        if self._thread is None and not self._threads_refused:
            self.start()
        if len(items) >= self.flush_at:
            self._bell.ring()
        return True

    def _wait_for_room(self) -> bool:
        """The queue is full: rather than drop, give the sender the GIL while it is
        taking items, until there is room (True) or it stops taking them (False).

        A caller that makes events faster than the sender builds them would otherwise
        outrun it for as long as it keeps going: under the GIL each thread gets about half
        of the time. Sleeping hands the sender a turn (a switch interval, 5 ms); a sender
        that took nothing for STALLED_AFTER is stuck (a hook that hangs), and then the
        event is dropped, as are the next ones at once until it takes something again.
        Never from the library's own code (the sender's thread above all) or after
        shutdown(), and never on the network: the sender builds while requests wait.
        """
        dispatcher = self.dispatcher
        if (
            self.closed
            or dispatcher.dequeued == self._stalled_at
            or not self._alive()
            or in_library_code()
        ):
            return False
        self._bell.ring()
        deadline = time.monotonic() + MAX_WAIT_FOR_ROOM
        items, limit = self._items, self._max_queue_size
        self.ledger.add("waited_for_room")
        seen, moved, idle = dispatcher.dequeued, time.monotonic(), 0
        while True:
            time.sleep(WAIT_FOR_ROOM_STEP)
            if len(items) + (dispatcher.taken is not None) < limit:
                return True
            now = time.monotonic()
            if dispatcher.dequeued != seen:
                seen, moved, idle = dispatcher.dequeued, now, 0
                continue
            idle += 1
            # Stuck: no progress for STALLED_AFTER *while this caller was looking*. A
            # sender that holds the GIL (a garbage collection, a long call into C) stops
            # this loop too; the time that passes meanwhile is not a sign it hangs.
            if (now - moved > STALLED_AFTER and idle >= STALLED_STEPS) or now > deadline:
                self._stalled_at = seen
                return False

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        dispatcher = self.dispatcher
        held = self.backlog.records + (dispatcher.taken is not None)
        return self.ledger.stats(queue=len(self.intake), in_memory=held, taken=dispatcher.dequeued)

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
        stop = self.stop
        if stop.finished.is_set():
            return True
        self.closed = True
        if self.spool is not None:
            stop.reserve = min(SPOOL_RESERVE, timeout / 10)
        if stop.deadline is None or deadline < stop.deadline:
            stop.deadline = deadline
        self.intake.put_marker(STOP)
        if in_library_code():
            # From a hook the sender runs (on_error, before_send): it stops once the hook
            # returns, and this thread must not wait for itself.
            self._warn_inside("shutdown")
            return False
        if self._alive():
            stop.finished.wait(max(0.0, deadline - time.monotonic()) + JOIN_GRACE)
        else:
            self._run_inline(deadline + JOIN_GRACE, until=stop.finished)
        if not stop.finished.is_set():
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
            while waiting:  # the same send as the thread's; here, waiting for retries
                current = waiting.pop(0)
                time.sleep(max(0.0, current.not_before - time.monotonic()))
                waiting[:0] = self.dispatcher.send(current)
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
        stopped: bool = self.stop.finished.is_set()
        return stopped

    @property
    def transport(self) -> Transport:
        """What batches are sent through."""
        return self._transport

    def use_transport(self, transport: Transport) -> None:
        """Send through ``transport`` from the next request on."""
        self._transport = self.dispatcher.transport = transport

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
            if self._thread is not None or self.stop.finished.is_set():
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
            logger.exception("could not read the spool")
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
            wait = min(wait, self.dispatcher.last_seal + self.flush_interval - now)
        items = self.backlog.items
        if items and isinstance(items[0], Batch):
            wait = min(wait, items[0].not_before - now)
        if self.stop.deadline is not None:
            wait = min(wait, self.stop.send_deadline() - now)
        return max(0.0, wait)

    def _cycle(self) -> bool:
        """One round: take new items, send what is due. True once stopped for good."""
        stop, dispatcher = self.stop, self.dispatcher
        if stop.finished.is_set():
            return True
        try:
            dispatcher.take()
            if self.batcher.filling and (
                stop.stopping or time.monotonic() - dispatcher.last_seal >= self.flush_interval
            ):
                dispatcher.seal()
            elif not self.batcher.filling:
                dispatcher.last_seal = time.monotonic()
            dispatcher.send_due()
            if not stop.stopping:
                if not self.backlog.first_batch() and not self.batcher.filling:
                    self._replay(first=False)
                return False
            if self.backlog.items and not stop.past_send_deadline():
                head = self.backlog.items[0]
                if not (isinstance(head, Batch) and head.not_before > stop.send_deadline()):
                    return False  # still time to send what is left
            self._finish()
            return True
        except Exception:  # a bug here must not kill the sender and lose everything after
            message = "unexpected error in the sender"
            self._errors.warn("sender_error", message, exc_info=True, level=logging.ERROR)
            self.intake.bell.wait(ERROR_PAUSE)  # not a busy loop if it happens every time
            return False

    def _replay(self, *, first: bool) -> None:
        if self.backlog.replay(first=first, healthy=self.courier.healthy):
            self.intake.bell.ring()

    # -- stopping -----------------------------------------------------------------------

    def _finish(self) -> None:
        """After the stop marker: spool or count what is left, wake every waiter."""
        if self.stop.finished.is_set():
            return  # shutdown() gave up on us and has counted everything
        self.dispatcher.seal()
        items, markers = self._leftovers.drain_intake()
        leftover = self.backlog.batches()
        markers += [item for item in self.backlog.items if isinstance(item, FlushMarker)]
        self.backlog.items.clear()
        if self._leftovers.account(leftover, items, answer_may_come=False):
            self._shutdown_ok = False
        if self.spool is not None:
            self.spool.close()
        for marker in markers:
            marker.done.set()
        self.dispatcher.close()
        self.stop.finished.set()

    def _abandon(self) -> None:
        """shutdown() could not wait any longer for the sender: spool or count, from this
        thread, everything the sender holds. The sender stops at its next step."""
        self.stop.finished.set()
        dispatcher = self.dispatcher
        dispatcher.close()
        # The sender may be building while a request is in flight: let it finish that
        # step (a few milliseconds) rather than read what it is changing.
        acquired = dispatcher.building.acquire(timeout=JOIN_GRACE)
        try:
            self._shutdown_ok = False
            batches = self.backlog.batches()
            markers = [item for item in self.backlog.items if isinstance(item, FlushMarker)]
            self.backlog.items.clear()
            in_flight = dispatcher.in_flight
            if in_flight is not None and in_flight not in batches:
                batches.insert(0, in_flight)
            batches += self.batcher.seal()
            items, more_markers = self._leftovers.drain_intake()
            stuck, dispatcher.taken = dispatcher.taken, None
            if stuck is not None:  # its building never returned (a __str__ that hangs?)
                self.ledger.drop("shutdown_timeout", "an event still being built at the deadline")
            try:
                self._leftovers.account(batches, items, answer_may_come=True)
            finally:
                # What was held has been spooled or counted: nothing is in memory any more.
                self.backlog.forget()
                for marker in markers + more_markers:
                    marker.done.set()
        finally:
            if acquired:
                dispatcher.building.release()
