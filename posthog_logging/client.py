"""The client: take events cheaply on the caller's thread, deliver them from another.

``capture()`` snapshots the call into a :class:`~posthog_logging.events.PendingEvent`
and appends it to a bounded in-memory queue; that is all the caller pays for. A
background sender thread takes the events from the queue, builds and serialises them
into batches (the *backlog*) and posts the batches in order through the
:class:`~posthog_logging.transport.Transport`. A batch that fails waits, with the same
uuids, for its next try; those behind it wait too, so an outage costs one request per
backoff step, not one per batch. Memory is bounded in events and in bytes; with a
:class:`~posthog_logging.spool.Spool`, what does not fit, what runs out of retries and
what is left at shutdown goes to disk and is sent again later. ``flush()``,
``shutdown()`` and the exit hook wait for the sender, never past their deadline.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import datetime as dt
import logging
import os
import queue
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from .contexts import current_state
from .error_tracking import InAppRules, mark_captured, snapshot_exception
from .events import (
    BuiltEvent,
    DroppedEvent,
    EventBuilder,
    ExceptionInfo,
    PendingEvent,
    choose_distinct_id,
    is_wire_event,
)
from .exceptions import DeliveryError, UnsafeSpoolDirectory
from .ids import checked_timestamp, checked_uuid, format_timestamp, uuid_for
from .otlp import MAX_LOGS_BATCH_BYTES, LogBuilder, PendingLog, is_wire_log_record
from .serialisation import DEFAULT_REDACT_KEYS, Redactor
from .spool import Segment, Spool, SpoolStats
from .stats import Counters, Stats
from .transport import DEFAULT_HOST, EVENTS, LOGS, SendResult, Transport

__all__ = ["Client", "Stats", "in_finaliser", "in_library_code"]

logger = logging.getLogger("posthog_logging")

#: Requests stay well under PostHog's 20 MB limit.
MAX_BATCH_BYTES = 5_000_000
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
#: The longest ``Retry-After`` obeyed; a server asking for more is retried after this.
RETRY_AFTER_CAP = 60.0
#: How often a healthy sender looks for spool segments to send again.
SPOOL_CHECK_INTERVAL = 5.0
#: With a spool, sending stops this long (at most a tenth of the timeout) before a
#: shutdown deadline, to leave time for writing what is left to disk.
SPOOL_RESERVE = 0.5
#: How long shutdown() waits for the sender past the deadline, for it to finish its
#: last step; past that, shutdown() accounts for what the sender holds itself.
JOIN_GRACE = 0.05
#: How long the sender pauses after an unexpected error of its own before going on.
ERROR_PAUSE = 0.5
#: Spool lines of log records start with this (an event's JSON starts with "{").
_LOG_LINE = b"L"
#: While a request is in flight, the sender builds events this many at a time, and
#: looks for new ones this often (seconds) when there are none.
BUILD_CHUNK = 256
BUILD_POLL = 0.005

OnError = Callable[[Exception, list[dict[str, Any]]], object]


class _ThreadFlags(threading.local):
    # A class default: a miss would raise and catch AttributeError on every log call.
    active = False


_local = _ThreadFlags()


def in_library_code() -> bool:
    """True on the sender thread and while the library itself is running.

    The logging bridge checks it so that nothing the library logs (or that a
    ``before_send`` hook logs) becomes an event again.
    """
    return _local.active


def in_finaliser(depth: int = 40) -> bool:
    """True when a ``__del__`` method is among the callers (at most ``depth`` frames up).

    The garbage collector runs finalisers on whichever thread happens to allocate, the
    library's own included: what a finaliser logs there is the application's, not the
    library's, and is sent (each object is finalised once: it cannot feed a loop).
    """
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame.f_code.co_name == "__del__":
            return True
        if frame.f_back is None:
            return False
        frame = frame.f_back
    return False


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


class _FlushMarker:
    """Put in the queue by ``flush()``: set once everything before it has left memory."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Replay:
    """A spool segment being sent again: deleted once all of its batches are done,
    given back whole if the server fails again."""

    __slots__ = ("given_back", "outstanding", "segment")

    def __init__(self, segment: Segment, outstanding: int) -> None:
        self.segment = segment
        self.outstanding = outstanding
        self.given_back = False


class _Request:
    """One request, run on a thread of its own while the sender goes on building."""

    __slots__ = ("args", "done", "result", "transport")

    def __init__(
        self, transport: Transport, events: list[bytes], sent_at: str, timeout: float, kind: str
    ) -> None:
        self.transport = transport
        self.args = (events, sent_at, timeout, kind)
        self.done = threading.Event()
        self.result = SendResult(status=None, error="no answer")

    def run(self) -> None:
        _local.active = True  # what the HTTP stack logs here is the library's own
        try:
            self.result = self.transport.send(*self.args)
        except Exception as exc:  # pragma: no cover - send() never raises by contract
            self.result = SendResult(status=None, error=type(exc).__name__)
        finally:
            self.done.set()


class _Batch:
    """Events sent together, with their retry state (the same uuids on every try)."""

    __slots__ = (
        "attempts",
        "counted_lost",
        "delivered",
        "events",
        "kind",
        "not_before",
        "replay",
        "size",
    )

    def __init__(
        self,
        events: list[bytes],
        size: int,
        replay: _Replay | None = None,
        kind: str = EVENTS,
    ) -> None:
        self.events = events
        self.size = size
        self.kind = kind  # EVENTS or LOGS: where the batch goes
        self.attempts = 0
        self.not_before = 0.0  # monotonic time of the next try
        self.replay = replay
        self.delivered = False
        self.counted_lost = False  # by shutdown(), while it was in flight


_STOP = object()
_clients: weakref.WeakSet[Client] = weakref.WeakSet()
#: Set by :func:`posthog_logging.testing.capture_events`: every client sends there instead
#: of over HTTP (and sends even without an API key).
_recorder: Any = None


class Client:
    """Sends events to PostHog. Thread-safe; one per process is usually enough.

    All options are keyword-only except ``api_key`` and ``host``. A missing ``api_key``
    is read from ``POSTHOG_API_KEY`` (or ``POSTHOG_PROJECT_API_KEY``); with none at
    all the client warns once and sends nothing. ``spool_dir`` turns on the disk spool
    (see docs/reliability.md).
    """

    def __init__(
        self,
        api_key: str | None = None,
        host: str | None = None,
        *,
        flush_at: int = 100,
        flush_interval: float = 0.5,
        max_queue_size: int = 25_000,
        max_queue_bytes: int = 32 * 1024 * 1024,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        gzip: bool = True,
        timeout: float = 10.0,
        max_retries: int = 3,
        sync_mode: bool = False,
        disabled: bool = False,
        debug: bool = False,
        before_send: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
        on_error: OnError | None = None,
        super_properties: Mapping[str, Any] | None = None,
        shutdown_timeout: float = 5.0,
        redact_keys: Iterable[str] | None = DEFAULT_REDACT_KEYS,
        in_app_include: Iterable[str] = (),
        in_app_exclude: Iterable[str] = (),
        service_name: str | None = None,
    ) -> None:
        _check_positive("flush_at", flush_at, integer=True)
        _check_positive("flush_interval", flush_interval)
        _check_positive("max_queue_size", max_queue_size, integer=True)
        _check_positive("max_queue_bytes", max_queue_bytes, integer=True)
        _check_positive("spool_max_bytes", spool_max_bytes, integer=True)
        if spool_dir is not None and not isinstance(spool_dir, (str, os.PathLike)):
            raise TypeError(f"spool_dir must be a path or None, got {spool_dir!r}")
        _check_positive("timeout", timeout)
        _check_positive("shutdown_timeout", shutdown_timeout)
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        for name, hook in (("before_send", before_send), ("on_error", on_error)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable or None, got {hook!r}")
        if super_properties is not None and not isinstance(super_properties, Mapping):
            raise TypeError("super_properties must be a mapping")

        # A key of only whitespace is no key (as in the official SDK), and so is sent never.
        api_key = (
            (api_key or "").strip()
            or os.environ.get("POSTHOG_API_KEY", "").strip()
            or os.environ.get("POSTHOG_PROJECT_API_KEY", "").strip()
        )
        self.api_key: str | None = api_key or None
        self.host: str = (host or os.environ.get("POSTHOG_HOST") or DEFAULT_HOST).rstrip("/")
        self.flush_at = flush_at
        self.flush_interval = float(flush_interval)
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        # A batch is at most an eighth of the memory bound, so that with a spool there
        # is always a sealed batch to move to disk when memory passes half of it.
        self._batch_bytes = min(MAX_BATCH_BYTES, max(1, max_queue_bytes // 8))
        self.max_retries = max_retries
        self.sync_mode = sync_mode
        self.disabled = disabled
        self.debug = debug
        self.shutdown_timeout = float(shutdown_timeout)
        self._on_error = on_error
        self._reset_state()
        redactor = Redactor(redact_keys)
        self._builder = EventBuilder(
            super_properties=super_properties,
            redactor=redactor,
            before_send=before_send,
            in_app=InAppRules(tuple(in_app_include), tuple(in_app_exclude)),
            on_collision=self._property_collision,
        )
        self._log_builder = LogBuilder(redactor, on_collision=self._property_collision)
        self._transport = Transport(
            self.host, self.api_key or "", gzip=gzip, timeout=timeout, service_name=service_name
        )
        self._spool: Spool | None = None
        if spool_dir is not None and self.api_key is not None and not disabled:
            self._spool = Spool(
                spool_dir, host=self.host, api_key=self.api_key, max_bytes=spool_max_bytes
            )
        if debug:
            logger.setLevel(logging.DEBUG)
            if not logger.handlers:
                logger.addHandler(logging.StreamHandler())
        if self.api_key is None and not disabled and _recorder is None:
            logger.warning(
                "posthog_logging: no API key (pass api_key= or set POSTHOG_API_KEY); "
                "nothing will be sent"
            )
        if self.api_key is None and not disabled:
            self._last_warning["no_api_key"] = time.monotonic()  # warned just above
        _clients.add(self)
        if self._spool is not None and not sync_mode and self._spool.has_segments():
            self._start_sender()  # what an earlier run left on disk is sent first

    # -- state, fork -----------------------------------------------------------------

    def _reset_state(self) -> None:
        # Shared with callers: the queue, the wake-up event and the counters.
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = Doorbell()
        self._counters = Counters()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._threads_refused = False
        self._pid = os.getpid()
        self._closed = False
        self._finished = threading.Event()  # the sender has stopped for good
        self._deadline: float | None = None  # monotonic; set by shutdown()
        self._last_warning: dict[str, float] = {}
        # The sender's own: built events in memory, in order.
        self._backlog: collections.deque[_Batch | _FlushMarker] = collections.deque()
        # The batches being filled, one per kind (events, log lines), and their sizes.
        self._open: dict[str, list[bytes]] = {EVENTS: [], LOGS: []}
        self._open_size: dict[str, int] = {EVENTS: 0, LOGS: 0}
        self._last_seal = time.monotonic()
        #: The event the sender has taken from the queue and is building.
        self._taken: PendingEvent | PendingLog | None = None
        #: Events the sender has taken from the queue (only the sender writes it; what
        #: other threads take out is in the counters).
        self._dequeued = 0
        self._memory_events = 0  # built events in memory (backlog and open batch)
        self._last_size = 0  # the size of the last event built: what the next may need
        self._memory_bytes = 0
        self._stopping = False
        self._healthy = True  # the last request was answered (not a retryable failure)
        self._next_spool_check = 0.0
        self._shutdown_ok = True
        self._spool_reserve = 0.0
        self._in_flight: _Batch | None = None
        self._posting = False  # a request is in flight while the sender builds on
        self._building = threading.Lock()  # held while it does; _abandon() waits for it

    def _after_fork_in_child(self) -> None:
        # The parent's pending events are the parent's to send: start empty, with a
        # fresh sender and no inherited sockets.
        closed = self._closed
        for item in self._backlog:  # segments the parent is replaying stay the parent's
            if isinstance(item, _Batch) and item.replay is not None:
                item.replay.segment.release()
        self._reset_state()
        self._closed = closed
        self._transport.reset_after_fork()
        if self._spool is not None:
            self._spool.forget_after_fork()

    def __repr__(self) -> str:
        key = "set" if self.api_key else "missing"
        return f"<posthog_logging.Client host={self.host!r} api_key={key}>"

    # -- public API ------------------------------------------------------------------

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        # Without walking the queue (it can hold 25,000 events): its length, less the
        # flush and stop markers in it.
        counts = self._counters.totals()
        not_dequeued = max(0, len(self._queue) - counts.get("markers", 0))
        dropped = {k[8:]: v for k, v in counts.items() if k.startswith("dropped:") and v}
        properties = {
            k[17:]: v for k, v in counts.items() if k.startswith("dropped_property:") and v
        }
        taken = self._dequeued + counts.get("dequeued", 0)
        return Stats(
            enqueued=taken + not_dequeued,
            sent=counts.get("sent", 0),
            retried=counts.get("retried", 0),
            failed=counts.get("failed", 0),
            dropped=MappingProxyType(dropped),
            pending=not_dequeued + self._memory_events + (self._taken is not None),
            spooled=counts.get("spooled", 0),
            replayed=counts.get("replayed", 0),
            logs_sent=counts.get("logs_sent", 0),
            dropped_properties=MappingProxyType(properties),
        )

    def capture(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        distinct_id: Any = None,
        groups: Mapping[str, Any] | None = None,
        timestamp: dt.datetime | float | None = None,
        uuid: str | None = None,
    ) -> str | None:
        """Queue an event. Returns its uuid, or None when it was dropped.

        Raises ``TypeError``/``ValueError`` only for programming errors: an event name
        that is not a non-empty string, properties that are not a mapping, a
        ``timestamp`` outside 1970 to 9999 or a ``uuid`` that is not one.
        """
        if not isinstance(event, str):
            raise TypeError(f"event must be a non-empty str, got {type(event).__name__}")
        if not event:
            raise ValueError("event must be a non-empty str")
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, got {type(properties).__name__}")
        if groups is not None and not isinstance(groups, Mapping):
            raise TypeError(f"groups must be a mapping, got {type(groups).__name__}")
        timestamp = time.time() if timestamp is None else checked_timestamp(timestamp)
        uuid = checked_uuid(uuid) if uuid is not None else uuid_for(timestamp)
        queued = self._capture(
            event,
            dict(properties) if properties else None,
            distinct_id,
            groups,
            timestamp,
            uuid,
            None,
        )
        return uuid if queued else None

    def capture_exception(
        self,
        exception: BaseException | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        distinct_id: Any = None,
    ) -> str | None:
        """Send ``exception`` (default: the one being handled) as an ``$exception`` event.

        An exception object is sent once: a second capture of the same object (by a
        context it leaves, a log call, or by hand) returns None.
        """
        if exception is None:
            exception = sys.exc_info()[1]
            if exception is None:
                self._drop("no_exception", "capture_exception() called with no exception")
                return None
        if not isinstance(exception, BaseException):
            raise TypeError(f"exception must be an exception, got {type(exception).__name__}")
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, got {type(properties).__name__}")
        return self.capture_exception_info(
            exception,
            ExceptionInfo(chain=(), mechanism_type="generic", handled=True),
            dict(properties) if properties else None,
            distinct_id=distinct_id,
        )

    def capture_exception_info(
        self,
        exception: BaseException | None,
        info: ExceptionInfo,
        properties: dict[str, Any] | None,
        *,
        distinct_id: Any = None,
        timestamp: float | None = None,
        context: Any = None,
    ) -> str | None:
        """Lower-level capture used by the bridges: ``info`` says how it was caught.

        With ``exception`` given, its chain is snapshotted here and it is marked
        captured (returning None if it already was); with None, ``info.chain`` is used.
        """
        if exception is not None:
            if not mark_captured(exception):
                return None
            try:
                chain = snapshot_exception(exception)
            except Exception:  # pragma: no cover - defensive: never fail the caller
                logger.debug("could not read an exception's traceback", exc_info=True)
                chain = ()
            info = ExceptionInfo(
                chain=chain,
                mechanism_type=info.mechanism_type,
                handled=info.handled,
                level=info.level,
                source=info.source,
            )
        if not info.chain:
            return None
        if timestamp is None:
            timestamp = time.time()
        uuid = uuid_for(timestamp)
        queued = self._capture(
            "$exception", properties, distinct_id, None, timestamp, uuid, info, context
        )
        return uuid if queued else None

    def set(self, properties: Mapping[str, Any], *, distinct_id: Any = None) -> str | None:
        """Set person properties (``$set``) on the person of the context or ``distinct_id``."""
        return self._person_update("$set", properties, distinct_id)

    def set_once(self, properties: Mapping[str, Any], *, distinct_id: Any = None) -> str | None:
        """Set person properties only where not set yet (``$set_once``)."""
        return self._person_update("$set_once", properties, distinct_id)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; wait at most ``timeout`` seconds.

        Returns True when all of it has left memory in time: sent, refused by the
        server, or (with a spool) written to disk. Events whose retries would run past
        the deadline stay queued and are tried again later.
        """
        if self.sync_mode or self._pid != os.getpid():
            return True
        timeout = self.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if not self._queue and not self._memory_events:
            return True
        if _local.active:
            self._warn_waiting_inside("flush")
            return False
        marker = _FlushMarker()
        self._counters.add("markers")  # the queue holds one more that is not an event
        self._queue.append(marker)
        if self._sender_alive():
            self._wake.ring()
        else:
            self._run_inline(deadline, until=marker.done)
        return marker.done.wait(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default ``shutdown_timeout``), stop the sender.

        Idempotent. Events captured afterwards are dropped (counted as ``shutdown``).
        What could not be sent by the deadline is written to the spool, if there is
        one, else counted as ``shutdown_timeout``. Returns True when everything queued
        was sent (or refused by the server) in time.
        """
        timeout = self.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if self._finished.is_set():
            return True
        self._closed = True
        if self._spool is not None:
            self._spool_reserve = min(SPOOL_RESERVE, timeout / 10)
        if self._deadline is None or deadline < self._deadline:
            self._deadline = deadline
        self._counters.add("markers")
        self._queue.append(_STOP)
        if _local.active:
            # From a hook the sender runs (on_error, before_send): the sender stops once
            # the hook returns, and this thread must not wait for itself.
            self._wake.ring()
            self._warn_waiting_inside("shutdown")
            return False
        if self._sender_alive():
            self._wake.ring()
            self._finished.wait(max(0.0, deadline - time.monotonic()) + JOIN_GRACE)
        else:
            self._run_inline(deadline + JOIN_GRACE, until=self._finished)
        if not self._finished.is_set():
            # The sender is stuck past the deadline: in a request that began before
            # shutdown() was called, or in a hook that does not return. Account for
            # what it holds here rather than wait any longer.
            self._abandon()
        self._transport.close()  # a request still in flight ends now (it is accounted for)
        return self._shutdown_ok

    def _property_collision(self, where: str, keys: list[str]) -> None:
        self._counters.add("dropped_property:duplicate_key", len(keys))
        shown = ", ".join(repr(key) for key in keys[:5])
        self._warn(
            "duplicate_key",
            f"{where} has keys that are the same text once made strings ({shown}): the "
            "value under the string key is sent (else the first one), the other dropped",
        )

    def _warn_waiting_inside(self, method: str) -> None:
        self._warn(
            f"{method}_inside",
            f"{method}() was called from inside the library (a hook such as on_error or "
            "before_send, or a finaliser on its thread): it cannot wait for the sender "
            "it runs on, and returned at once",
        )

    # -- the caller's side -------------------------------------------------------------

    def _person_update(
        self, kind: str, properties: Mapping[str, Any], distinct_id: Any
    ) -> str | None:
        if not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, got {type(properties).__name__}")
        if choose_distinct_id(distinct_id, current_state()) is None:
            self._drop("no_distinct_id", f"{kind} needs a distinct_id or an identified context")
            return None
        # Only the given properties: the context's tags describe events, not the person.
        timestamp = time.time()
        uuid = uuid_for(timestamp)
        queued = self._capture(
            kind,
            {kind: dict(properties)},
            distinct_id,
            None,
            timestamp,
            uuid,
            None,
            context=_NO_TAGS_CONTEXT,
        )
        return uuid if queued else None

    def _capture(
        self,
        event: str,
        properties: dict[str, Any] | None,
        distinct_id: Any,
        groups: Mapping[str, Any] | None,
        timestamp: dt.datetime | float,
        uuid: str | None,
        exception: ExceptionInfo | None,
        context: Any = None,
    ) -> bool:
        """Queue an event (the one path every capture takes). True when it was queued.

        With ``uuid`` None, the sender makes it when it builds the event: the logging
        bridges, which never show the uuid to anyone, leave that work off the caller.
        """
        if self.disabled or self._closed or self.api_key is None:
            if self.disabled:
                return False
            if self.api_key is None and _recorder is None:
                self._drop("no_api_key", "no API key configured; events are not sent")
                return False
            if self._closed:
                self._drop("shutdown", "event captured after shutdown(); not sent")
                return False
            # no key, but capture_events() records what would be sent
        if context is None:
            state = current_state()
        elif context is _NO_TAGS_CONTEXT:
            state = _without_tags(current_state())
        else:
            state = context
        pending = PendingEvent(
            event, properties, distinct_id, state, timestamp, uuid, groups, exception
        )
        return self._intake(pending)

    def capture_log(self, pending: PendingLog) -> bool:
        """Queue a log line for PostHog Logs (the logging bridges make ``pending``).
        True when it was queued."""
        if self.disabled or self._closed or self.api_key is None:
            if self.disabled or (self.api_key is None and _recorder is None):
                return False
            if self._closed:
                self._drop("shutdown", "log line after shutdown(); not sent")
                return False
        return self._intake(pending)

    def _intake(self, item: PendingEvent | PendingLog) -> bool:
        """Queue ``item``. A bug of ours here never reaches the caller (as with the
        official SDK): counted and logged with its traceback; raised with ``debug=True``."""
        try:
            return self._enqueue(item)
        except Exception:
            if self.debug:
                raise
            self._counters.add("dropped:intake_error")
            now = time.monotonic()
            if now - self._last_warning.get("intake_error", -60.0) >= 60.0:
                self._last_warning["intake_error"] = now
                logger.exception("posthog_logging: could not take an event (a bug); dropped")
            return False

    def _enqueue(self, item: PendingEvent | PendingLog) -> bool:
        if self.sync_mode:
            return self._send_now(item)
        queue = self._queue
        if len(queue) + (self._taken is not None) >= self.max_queue_size:
            self._drop("queue_full", "the queue is full (max_queue_size); events dropped")
            return False
        queue.append(item)
        if self._thread is None and not self._threads_refused:
            self._start_sender()
        if len(queue) >= self.flush_at:
            self._wake.ring()
        return True

    def _send_now(self, item: PendingEvent | PendingLog) -> bool:
        """``sync_mode``: build and send on the caller's thread, retries included."""
        was_active = _local.active
        _local.active = True
        try:
            self._counters.add("dequeued")
            built = self._build_item(item)
            if built is None:
                return False
            payload, kind = built
            batch = _Batch([payload], len(payload) + 1, kind=kind)
            self._memory_events += 1
            self._memory_bytes += batch.size
            waiting = [batch]
            while waiting:
                current = waiting.pop(0)
                time.sleep(max(0.0, current.not_before - time.monotonic()))
                waiting[:0] = self._send(current)
            return batch.delivered
        finally:
            _local.active = was_active

    def _drop(self, reason: str, message: str, count: int = 1) -> None:
        self._counters.add("dropped:" + reason, count)
        self._warn(reason, message)

    def _warn(self, key: str, message: str, interval: float = 60.0) -> None:
        """Log ``message`` at most once per ``interval`` per ``key``: no log storms."""
        now = time.monotonic()
        last = self._last_warning.get(key)
        if last is not None and now - last < interval:
            return
        self._last_warning[key] = now
        logger.warning("posthog_logging: %s", message)

    # -- the sender's side ---------------------------------------------------------------

    def _sender_alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _start_sender(self) -> None:
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

    def _run(self) -> None:
        _local.active = True
        try:
            self._replay_spooled(first=True)  # what an earlier run left goes before the new
        except Exception:
            logger.exception("posthog_logging: could not read the spool")
        while True:
            self._wake.wait(self._wait_time())
            if self._cycle():
                return

    def _run_inline(self, deadline: float, until: threading.Event) -> None:
        """Do the sender's work on this thread, when there is no sender thread to do it."""
        was_active = _local.active
        _local.active = True
        try:
            while not until.is_set() and not self._cycle():
                remaining = deadline - time.monotonic()
                if until.is_set() or remaining <= 0:
                    return
                time.sleep(min(self._wait_time(), remaining))
        finally:
            _local.active = was_active

    def _wait_time(self) -> float:
        """How long the sender may sleep before something is due."""
        now = time.monotonic()
        wait = self.flush_interval
        if len(self._queue) >= self.flush_at:
            return 0.0
        if self._has_open():
            wait = min(wait, self._last_seal + self.flush_interval - now)
        for item in self._backlog:
            if isinstance(item, _Batch):
                wait = min(wait, item.not_before - now)
            break
        if self._deadline is not None:
            wait = min(wait, self._send_deadline() - now)
        return max(0.0, wait)

    def _cycle(self) -> bool:
        """One round: take new events, send what is due. True once stopped for good."""
        if self._finished.is_set():
            return True
        try:
            self._take()
            if self._has_open() and (
                self._stopping or time.monotonic() - self._last_seal >= self.flush_interval
            ):
                self._seal()
            elif not self._has_open():
                self._last_seal = time.monotonic()
            self._send_due()
            if not self._stopping:
                self._replay_spooled()
                return False
            if self._backlog and not self._past_send_deadline():
                head = self._backlog[0]
                if not (isinstance(head, _Batch) and head.not_before > self._send_deadline()):
                    return False  # still time to send what is left
            self._finish()
            return True
        except Exception:  # a bug here must not kill the sender and lose everything after
            now = time.monotonic()
            last = self._last_warning.get("sender_error")
            if last is None or now - last >= 60.0:  # with its traceback, once a minute
                self._last_warning["sender_error"] = now
                logger.exception("posthog_logging: unexpected error in the sender")
            self._wake.wait(ERROR_PAUSE)  # not a busy loop if it happens every time
            return False

    def _take(self, limit: int = 10_000, whole: bool = False) -> None:
        """Move events from the queue into batches, building them on the way.

        Unless ``whole``, it stops once a batch is ready to go: sending it then (which
        waits on the network without the GIL) lets the threads that log run meanwhile.
        """
        queue = self._queue
        refused = 0
        try:
            for _ in range(limit):
                try:
                    item = queue.popleft()
                except IndexError:
                    return
                if type(item) is PendingEvent or type(item) is PendingLog:
                    # Counted one by one, as taken: if building never returns (a __str__
                    # that hangs), shutdown() still accounts for everything.
                    self._dequeued += 1
                    if self._memory_bytes + self._last_size > self.max_queue_bytes:
                        # Memory is full (an outage without a spool): an event built now
                        # would be refused by the bound; refuse it without building it.
                        refused += 1
                        continue
                    self._taken = item  # still counted against max_queue_size while built
                    built = self._build_item(item)
                    self._taken = None
                    if self._finished.is_set():
                        return  # shutdown() gave up on us meanwhile, and counted it
                    if built is not None and self._add(*built) and not whole:
                        head = self._backlog[0]
                        if not isinstance(head, _Batch) or head.not_before <= time.monotonic():
                            return
                elif isinstance(item, _FlushMarker):
                    self._counters.add("markers", -1)
                    self._seal()
                    self._backlog.append(item)
                elif item is _STOP:
                    self._counters.add("markers", -1)
                    self._seal()
                    self._stopping = True
        finally:
            if refused:
                message = "the queue is full (max_queue_bytes); events dropped"
                self._drop("queue_full", message, count=refused)

    def _add(self, payload: bytes, kind: str = EVENTS) -> bool:
        """Put an event (or a log line) in the batch being filled for its kind; True when
        that sealed the batch."""
        size = len(payload) + 1
        limit = (
            self._batch_bytes if kind == EVENTS else min(self._batch_bytes, MAX_LOGS_BATCH_BYTES)
        )
        filling = self._open[kind]
        if filling and self._open_size[kind] + size > limit:
            self._seal(kind)
            filling = self._open[kind]
        if self._spool is not None:
            self._spill_overflow(size)
        if self._memory_bytes + size > self.max_queue_bytes:
            self._drop("queue_full", "the queue is full (max_queue_bytes); events dropped")
            return False
        filling.append(payload)
        self._open_size[kind] += size
        self._memory_events += 1
        self._memory_bytes += size
        self._last_size = size
        # While a request is in flight the batch grows past flush_at (up to its bytes
        # limit): under load, batches grow with it, and each request carries more.
        if len(filling) >= self.flush_at and not self._posting:
            self._seal(kind)
            return True
        return False

    def _has_open(self) -> bool:
        return bool(self._open[EVENTS] or self._open[LOGS])

    def _seal(self, kind: str | None = None) -> None:
        """Close the batch being filled (of ``kind``, or of each kind): it joins the
        backlog, to be sent in turn."""
        for each in (EVENTS, LOGS) if kind is None else (kind,):
            if self._open[each]:
                self._backlog.append(_Batch(self._open[each], self._open_size[each], kind=each))
                self._open[each], self._open_size[each] = [], 0
        self._last_seal = time.monotonic()

    def _send_due(self) -> None:
        """Send batches from the head of the backlog while they are due and succeed."""
        backlog = self._backlog
        while backlog and not self._finished.is_set():
            head = backlog[0]
            if isinstance(head, _FlushMarker):
                backlog.popleft()
                head.done.set()
                continue
            if head.not_before > time.monotonic() or self._past_send_deadline():
                return
            backlog.popleft()
            again = self._send(head)
            backlog.extendleft(reversed(again))
            if again and again[0].not_before > time.monotonic():
                return  # the head waits for its next try; the rest wait behind it
            if not backlog:
                self._take()

    def _send(self, batch: _Batch) -> list[_Batch]:
        """Post ``batch`` once. Returns what must be tried again (empty when it is done)."""
        timeout = self._transport.timeout
        if self._deadline is not None:
            remaining = self._send_deadline() - time.monotonic()
            if remaining <= 0:
                return [batch]
            timeout = min(timeout, remaining)
        self._in_flight = batch
        result = self._post(batch, timeout)
        self._in_flight = None
        for kind, filling in self._open.items():
            if len(filling) >= self.flush_at:
                self._seal(kind)  # what came in meanwhile goes next, as one batch
        if self._finished.is_set():
            self._late_answer(batch, result)
            return []
        if result.ok:
            self._healthy = True
            batch.delivered = True
            counters = self._counters
            counters.add("sent", len(batch.events))
            if batch.kind == LOGS:
                counters.add("logs_sent", len(batch.events))
            if batch.replay is not None:
                counters.add("replayed", len(batch.events))
            logger.debug("posthog_logging: sent %d events", len(batch.events))
            self._release(batch)
            return []
        if result.status == 413:
            self._healthy = True
            if len(batch.events) == 1:
                self._drop("too_large", "an event was refused as too large (HTTP 413)")
                self._release(batch)
                return []
            return self._split(batch)
        if not result.retryable:
            self._healthy = True
            self._give_up(batch, "refused", result)
            return []
        self._healthy = False
        if batch.replay is not None:
            # Still down: the segment stays on disk as it is, to be tried again later,
            # rather than being retried from memory and written out again.
            self._give_back(batch.replay)
            self._release(batch)
            return []
        batch.attempts += 1
        if batch.attempts > self.max_retries:
            if self._spool is not None and not self.sync_mode:
                self._spill(batch)
            else:
                self._give_up(batch, "retries", result)
            return []
        self._counters.add("retried")
        delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**batch.attempts))
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, RETRY_AFTER_CAP))
        batch.not_before = time.monotonic() + delay
        logger.debug("posthog_logging: %s; retrying in %.2fs", result.describe(), delay)
        return [batch]

    def _post(self, batch: _Batch, timeout: float) -> SendResult:
        """Send ``batch``; while the request waits on the network, build what comes in.

        The request runs on a thread of its own only when there are events to build: a
        sender that waited idle on the network would let a busy application queue events
        faster than they go out.
        """
        sent_at = format_timestamp(time.time())
        if _recorder is not None:
            result: SendResult = _recorder.send(batch.events, sent_at, timeout, batch.kind)
            return result
        if not self._queue or self.sync_mode or self._deadline is not None:
            return self._transport.send(batch.events, sent_at, timeout, batch.kind)
        request = _Request(self._transport, batch.events, sent_at, timeout, batch.kind)
        try:
            threading.Thread(
                target=request.run, name="posthog_logging.request", daemon=True
            ).start()
        except RuntimeError:  # no new threads at interpreter exit
            return self._transport.send(batch.events, sent_at, timeout, batch.kind)
        self._posting = True
        try:
            while not request.done.wait(0 if self._queue else BUILD_POLL):
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

    def _build_item(self, item: PendingEvent | PendingLog) -> tuple[bytes, str] | None:
        """An event's or a log line's JSON and its kind; None when it was dropped."""
        if type(item) is PendingLog:
            try:
                return self._log_builder.build(item), LOGS
            except Exception as exc:
                self._drop("build_error", f"could not build a log line: {exc!r}")
                return None
        built = self._build(item)  # type: ignore[arg-type]
        return None if built is None else (built.payload, EVENTS)

    def _build(self, pending: PendingEvent) -> BuiltEvent | None:
        try:
            return self._builder.build(pending)
        except DroppedEvent as drop:
            self._drop(drop.reason, drop.detail)
        except Exception as exc:
            self._drop("build_error", f"could not build event {pending.event!r}: {exc!r}")
        return None

    def _split(self, batch: _Batch) -> list[_Batch]:
        half = len(batch.events) // 2
        parts = []
        for events in (batch.events[:half], batch.events[half:]):
            part = _Batch(events, sum(len(e) + 1 for e in events), batch.replay, batch.kind)
            part.attempts = batch.attempts
            parts.append(part)
        if batch.replay is not None:
            batch.replay.outstanding += 1
        return parts

    def _release(self, batch: _Batch) -> None:
        """``batch`` has left memory: sent, refused, dropped or spooled."""
        self._memory_events -= len(batch.events)
        self._memory_bytes -= batch.size
        replay = batch.replay
        if replay is not None:
            replay.outstanding -= 1
            if replay.outstanding == 0 and not replay.given_back:
                self._remove_segment(replay.segment)

    def _give_up(self, batch: _Batch, why: str, result: SendResult) -> None:
        self._release(batch)
        self._counters.add("failed", len(batch.events))
        if why == "retries":
            message = (
                f"{len(batch.events)} events not sent after {self.max_retries} retries: "
                + result.describe()
            )
        else:
            message = f"{len(batch.events)} events refused by {self.host}: {result.describe()}"
        self._warn(f"failed:{why}:{result.status}", message)
        if self._on_error is not None:
            try:
                import json

                self._on_error(
                    DeliveryError(result.describe(), result.status),
                    [json.loads(e) for e in batch.events],
                )
            except Exception:
                logger.debug("posthog_logging: on_error raised", exc_info=True)

    # -- the spool -------------------------------------------------------------------

    def _spill_overflow(self, incoming: int) -> None:
        """Move the oldest waiting batches to disk so memory stays at half its bound."""
        limit_bytes = self.max_queue_bytes // 2
        backlog = self._backlog
        while self._memory_bytes + incoming > limit_bytes:
            index = next((i for i, b in enumerate(backlog) if isinstance(b, _Batch)), None)
            if index is None:
                return
            batch = backlog[index]
            del backlog[index]
            assert isinstance(batch, _Batch)
            self._spill(batch)

    def _spill(self, batch: _Batch) -> None:
        """Write ``batch`` to the spool; if that fails, count its events as lost."""
        assert self._spool is not None
        lines = batch.events if batch.kind == EVENTS else [_LOG_LINE + r for r in batch.events]
        try:
            outcome = self._spool.write(lines)
        except OSError as exc:
            self._release(batch)
            self._drop(
                "spool_error",
                f"could not write {len(batch.events)} events to the spool: {exc}",
                count=len(batch.events),
            )
            return
        self._release(batch)
        self._count_spool(outcome, written=len(batch.events) - outcome.refused)

    def _count_spool(self, outcome: SpoolStats, written: int = 0) -> None:
        self._counters.add("spooled", written)
        if lost := outcome.dropped_full + outcome.refused:
            self._drop(
                "spool_full",
                f"the spool is full (spool_max_bytes): {lost} events dropped",
                count=lost,
            )
        if outcome.corrupt:
            self._drop(
                "spool_corrupt",
                f"{outcome.corrupt} damaged or foreign lines skipped in the spool (a torn write?)",
                count=outcome.corrupt,
            )

    def _replay_spooled(self, first: bool = False) -> None:
        """Send a spooled segment: when the sender starts, and whenever it has nothing
        else to send (at most every SPOOL_CHECK_INTERVAL while the server is failing:
        the segment's first batch is then the probe that tells whether it is back)."""
        spool = self._spool
        if spool is None:
            return
        if not first and (any(isinstance(i, _Batch) for i in self._backlog) or self._has_open()):
            return
        now = time.monotonic()
        if now < self._next_spool_check:
            return
        if not self._healthy:
            self._next_spool_check = now + SPOOL_CHECK_INTERVAL
        outcome = SpoolStats()
        try:
            segment = spool.claim(outcome)
            if segment is None and spool.writing:
                spool.close()  # what we spooled ourselves becomes sendable
                segment = spool.claim(outcome)
        except UnsafeSpoolDirectory as exc:  # made unsafe since: read nothing from it
            self._warn("spool_unsafe", f"{exc}; nothing is read from it")
            self._next_spool_check = now + SPOOL_CHECK_INTERVAL
            return
        self._count_spool(outcome)
        if segment is None:
            self._next_spool_check = now + SPOOL_CHECK_INTERVAL
            return
        events = [line for line in segment.events if not line.startswith(_LOG_LINE)]
        logs = [line[1:] for line in segment.events if line.startswith(_LOG_LINE)]
        # Lines that pass their checksum but are not what we write (written by something
        # else, or by a version of ours that wrote another format) would sink the batch.
        events = [line for line in events if is_wire_event(line)]
        logs = [line for line in logs if is_wire_log_record(line)]
        if invalid := len(segment.events) - len(events) - len(logs):
            self._count_spool(SpoolStats(corrupt=invalid))
        if not events and not logs:
            self._remove_segment(segment)
            return
        batches: list[_Batch] = []
        replay = _Replay(segment, 0)
        for kind, items, limit in (
            (EVENTS, events, MAX_BATCH_BYTES),
            (LOGS, logs, MAX_LOGS_BATCH_BYTES),
        ):
            chunk: list[bytes] = []
            size = 0
            for item in items:
                if chunk and (len(chunk) >= self.flush_at or size + len(item) > limit):
                    batches.append(_Batch(chunk, size, replay, kind))
                    chunk, size = [], 0
                chunk.append(item)
                size += len(item) + 1
            if chunk:
                batches.append(_Batch(chunk, size, replay, kind))
        replay.outstanding = len(batches)
        for batch in batches:
            self._memory_events += len(batch.events)
            self._memory_bytes += batch.size
        if first:
            self._backlog.extendleft(reversed(batches))
        else:
            self._backlog.extend(batches)
        self._wake.ring()

    def _remove_segment(self, segment: Segment) -> None:
        """A replayed segment is done with: delete it, or make sure it is not sent again."""
        assert self._spool is not None
        if not self._spool.remove(segment):
            self._warn(
                "spool_undeletable",
                f"could not delete the sent spool file {str(segment.path)!r} "
                f"({segment.undeletable}); it was emptied if it could be, and will not be "
                "sent again by this process: delete it by hand",
            )

    def _give_back(self, replay: _Replay) -> None:
        """Put a segment being replayed back on disk, whole; forget its batches here."""
        replay.given_back = True
        self._next_spool_check = time.monotonic() + SPOOL_CHECK_INTERVAL
        for batch in [b for b in self._backlog if isinstance(b, _Batch) and b.replay is replay]:
            self._backlog.remove(batch)
            self._release(batch)
        replay.segment.release()

    # -- stopping --------------------------------------------------------------------

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
        if self._spool is not None:
            self._take(limit=len(self._queue), whole=True)  # built, to be written to disk
        lost = 0
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, (PendingEvent, PendingLog)):
                self._counters.add("dequeued")
                lost += 1
                continue
            self._counters.add("markers", -1)
            if isinstance(item, _FlushMarker):
                item.done.set()
        self._seal()
        leftover = [item for item in self._backlog if isinstance(item, _Batch)]
        markers = [item for item in self._backlog if isinstance(item, _FlushMarker)]
        self._backlog.clear()
        for batch in leftover:
            if batch.replay is not None:
                if not batch.replay.given_back:
                    self._give_back(batch.replay)
                self._release(batch)
            elif self._spool is not None:
                self._spill(batch)
            else:
                lost += len(batch.events)
                self._release(batch)
        if lost:
            self._drop(
                "shutdown_timeout",
                f"{lost} events not sent before the shutdown deadline",
                count=lost,
            )
        if leftover or lost:
            self._shutdown_ok = False
        if self._spool is not None:
            self._spool.close()
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
            self._abandon_held()
        finally:
            if acquired:
                self._building.release()

    def _abandon_held(self) -> None:
        self._shutdown_ok = False
        held = list(self._backlog)
        self._backlog.clear()
        batches = [item for item in held if isinstance(item, _Batch)]
        markers = [item for item in held if isinstance(item, _FlushMarker)]
        in_flight = self._in_flight
        if in_flight is not None and in_flight not in batches:
            batches.insert(0, in_flight)
        for kind, filling in self._open.items():
            if filling:
                batches.append(_Batch(filling, self._open_size[kind], kind=kind))
                self._open[kind], self._open_size[kind] = [], 0
        pending: list[PendingEvent | PendingLog] = []
        while self._queue:  # taken out, so that stats count each event once
            item = self._queue.popleft()
            if isinstance(item, (PendingEvent, PendingLog)):
                pending.append(item)
                continue
            self._counters.add("markers", -1)
            if isinstance(item, _FlushMarker):
                markers.append(item)
        self._counters.add("dequeued", len(pending))
        stuck, self._taken = self._taken, None
        if stuck is not None:  # its building never returned (a __str__ that hangs?)
            self._drop("shutdown_timeout", "an event still being built at the deadline")
        try:
            self._account_abandoned(batches, pending)
        finally:
            # What was held has been spooled or counted: nothing is in memory any more.
            self._memory_events = self._memory_bytes = 0
            for marker in markers:
                marker.done.set()

    def _account_abandoned(
        self, batches: list[_Batch], pending: list[PendingEvent | PendingLog]
    ) -> None:
        """Spool, or count as lost, what shutdown() gave up waiting for."""
        if self._spool is not None:
            built: dict[str, list[bytes]] = {EVENTS: [], LOGS: []}
            for item in pending:
                made = self._build_item(item)
                if made is not None:
                    built[made[1]].append(made[0])
            for kind, lines in built.items():
                if lines:
                    batches.append(_Batch(lines, sum(len(e) + 1 for e in lines), kind=kind))
            for batch in batches:
                if batch.replay is not None:
                    batch.replay.given_back = True
                    batch.replay.segment.release()
                else:
                    self._spill(batch)
            self._spool.close()
            return
        held = sum(len(batch.events) for batch in batches) + len(pending)
        for batch in batches:
            batch.counted_lost = True
        if held:
            self._drop(
                "shutdown_timeout",
                f"{held} events not sent before the shutdown deadline",
                count=held,
            )

    def _late_answer(self, batch: _Batch, result: SendResult) -> None:
        """A request answered after shutdown() gave up on it: correct the counters."""
        if result.ok and batch.counted_lost:
            self._counters.add("sent", len(batch.events))
            self._counters.add("dropped:shutdown_timeout", -len(batch.events))


class _NoTags:
    pass


_NO_TAGS_CONTEXT = _NoTags()


def _without_tags(state: Any) -> Any:
    from .contexts import ContextState

    return ContextState(distinct_id=state.distinct_id, session_id=None)


def _check_positive(name: str, value: Any, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        what = "a positive int" if integer else "a positive number"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def _shutdown_all() -> None:
    """The exit hook: flush every live client, each within its own shutdown_timeout."""
    for client in list(_clients):
        with contextlib.suppress(Exception):  # never fail interpreter exit
            client.shutdown()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork_in_child()
    # multiprocessing ends its forked children with os._exit(), so atexit never runs in
    # them; its own exit handlers do. They are cleared right after the fork, so register
    # ours from one of its after-fork callbacks, which run once they have been.
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(_shutdown_all, _flush_at_multiprocessing_exit)


def _flush_at_multiprocessing_exit(_: object) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _shutdown_all, exitpriority=0)


atexit.register(_shutdown_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
