"""The client: take events cheaply on the caller's thread, deliver them from another.

``capture()`` snapshots the call into a :class:`~posthog_logging.events.PendingEvent`
and appends it to a bounded in-memory queue; that is all the caller pays for. A
background sender thread wakes when ``flush_at`` events are waiting or
``flush_interval`` has passed, builds and serialises the events, and posts them in
batches through the :class:`~posthog_logging.transport.Transport`, retrying what can be
retried. ``flush()``, ``shutdown()`` and the exit hook wait for it, never past their
deadline.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import datetime as dt
import logging
import os
import random
import threading
import time
import uuid as uuid_module
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .contexts import current_state
from .events import (
    BuiltEvent,
    DroppedEvent,
    EventBuilder,
    ExceptionInfo,
    PendingEvent,
    choose_distinct_id,
    format_timestamp,
    uuid7,
)
from .exceptions import InAppRules, mark_captured, snapshot_exception
from .serialisation import DEFAULT_REDACT_KEYS, Redactor
from .transport import DEFAULT_HOST, SendResult, Transport

__all__ = ["Client", "Stats", "in_library_code"]

logger = logging.getLogger("posthog_logging")

#: Requests stay well under PostHog's 20 MB limit.
MAX_BATCH_BYTES = 5_000_000
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0

OnError = Callable[[Exception, list[dict[str, Any]]], object]

_local = threading.local()


def in_library_code() -> bool:
    """True on the sender thread and while the library itself is running.

    The logging bridge checks it so that nothing the library logs (or that a
    ``before_send`` hook logs) becomes an event again.
    """
    return getattr(_local, "active", False)


class DeliveryError(Exception):
    """Passed to ``on_error`` when a batch could not be delivered."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.describe())
        self.status = result.status


@dataclass(frozen=True)
class Stats:
    """Counters since the client started (or since a fork, in a child process).

    ``enqueued`` counts events accepted by ``capture``; ``sent`` those the server
    accepted; ``retried`` the requests sent again; ``failed`` events the server refused
    or that ran out of retries; ``dropped`` events discarded before sending, by reason;
    ``pending`` events still in memory.
    """

    enqueued: int
    sent: int
    retried: int
    failed: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    pending: int = 0

    @property
    def dropped_total(self) -> int:
        """All dropped events, whatever the reason."""
        return sum(self.dropped.values())


class _FlushMarker:
    """Put in the queue by ``flush()``: the sender sets it once all before it is handled."""

    __slots__ = ("all_sent", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.all_sent = True


_STOP = object()
_clients: weakref.WeakSet[Client] = weakref.WeakSet()


class Client:
    """Sends events to PostHog. Thread-safe; one per process is usually enough.

    All options are keyword-only except ``api_key`` and ``host``. A missing ``api_key``
    is read from ``POSTHOG_API_KEY`` (or ``POSTHOG_PROJECT_API_KEY``); with none at
    all the client warns once and sends nothing.
    """

    def __init__(
        self,
        api_key: str | None = None,
        host: str | None = None,
        *,
        flush_at: int = 100,
        flush_interval: float = 0.5,
        max_queue_size: int = 10_000,
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
    ) -> None:
        _check_positive("flush_at", flush_at, integer=True)
        _check_positive("flush_interval", flush_interval)
        _check_positive("max_queue_size", max_queue_size, integer=True)
        _check_positive("timeout", timeout)
        _check_positive("shutdown_timeout", shutdown_timeout)
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        for name, hook in (("before_send", before_send), ("on_error", on_error)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable or None, got {hook!r}")
        if super_properties is not None and not isinstance(super_properties, Mapping):
            raise TypeError("super_properties must be a mapping")

        api_key = (
            api_key
            or os.environ.get("POSTHOG_API_KEY")
            or os.environ.get("POSTHOG_PROJECT_API_KEY")
        )
        self.api_key: str | None = api_key.strip() if api_key else None
        self.host: str = (host or os.environ.get("POSTHOG_HOST") or DEFAULT_HOST).rstrip("/")
        self.flush_at = flush_at
        self.flush_interval = float(flush_interval)
        self.max_queue_size = max_queue_size
        self.max_retries = max_retries
        self.sync_mode = sync_mode
        self.disabled = disabled
        self.debug = debug
        self.shutdown_timeout = float(shutdown_timeout)
        self._on_error = on_error
        self._builder = EventBuilder(
            super_properties=super_properties,
            redactor=Redactor(redact_keys),
            before_send=before_send,
            in_app=InAppRules(tuple(in_app_include), tuple(in_app_exclude)),
        )
        self._transport = Transport(self.host, self.api_key or "", gzip=gzip, timeout=timeout)
        if debug:
            logger.setLevel(logging.DEBUG)
            if not logger.handlers:
                logger.addHandler(logging.StreamHandler())
        if self.api_key is None and not disabled:
            logger.warning(
                "posthog_logging: no API key (pass api_key= or set POSTHOG_API_KEY); "
                "nothing will be sent"
            )
        self._reset_state()
        if self.api_key is None and not disabled:
            self._last_warning["no_api_key"] = time.monotonic()  # warned just above
        _clients.add(self)

    # -- state, fork -----------------------------------------------------------------

    def _reset_state(self) -> None:
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._stats_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False
        self._deadline: float | None = None  # monotonic; set while flushing or shutting down
        self._interrupt = threading.Event()
        self._urgent = False
        self._gave_back = False
        self._in_flight = 0
        self._dequeued = 0
        self._sent = 0
        self._retried = 0
        self._failed = 0
        self._dropped: dict[str, int] = {}
        self._last_warning: dict[str, float] = {}

    def _after_fork_in_child(self) -> None:
        # The parent's pending events are the parent's to send: start empty, with a
        # fresh sender and no inherited sockets.
        closed = self._closed
        self._reset_state()
        self._closed = closed
        self._transport.reset_after_fork()

    def __repr__(self) -> str:
        key = "set" if self.api_key else "missing"
        return f"<posthog_logging.Client host={self.host!r} api_key={key}>"

    # -- public API ------------------------------------------------------------------

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        with self._stats_lock:
            items = list(self._queue)
            not_dequeued = sum(1 for item in items if isinstance(item, PendingEvent))
            pending = not_dequeued + sum(1 for item in items if isinstance(item, BuiltEvent))
            return Stats(
                enqueued=self._dequeued + not_dequeued,
                sent=self._sent,
                retried=self._retried,
                failed=self._failed,
                dropped=MappingProxyType(dict(self._dropped)),
                pending=pending,
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
        that is not a non-empty string, or properties that are not a mapping.
        """
        if not isinstance(event, str):
            raise TypeError(f"event must be a non-empty str, got {type(event).__name__}")
        if not event:
            raise ValueError("event must be a non-empty str")
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, got {type(properties).__name__}")
        if groups is not None and not isinstance(groups, Mapping):
            raise TypeError(f"groups must be a mapping, got {type(groups).__name__}")
        if timestamp is not None and (
            isinstance(timestamp, bool) or not isinstance(timestamp, (dt.datetime, int, float))
        ):
            raise TypeError(
                f"timestamp must be a datetime or epoch seconds, got {type(timestamp).__name__}"
            )
        if uuid is not None:
            uuid = _checked_uuid(uuid)
        return self._capture(
            event,
            dict(properties) if properties else None,
            distinct_id,
            groups,
            timestamp,
            uuid,
            None,
        )

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
            import sys

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
        return self._capture(
            "$exception", properties, distinct_id, None, timestamp, None, info, context
        )

    def set(self, properties: Mapping[str, Any], *, distinct_id: Any = None) -> str | None:
        """Set person properties (``$set``) on the person of the context or ``distinct_id``."""
        return self._person_update("$set", properties, distinct_id)

    def set_once(self, properties: Mapping[str, Any], *, distinct_id: Any = None) -> str | None:
        """Set person properties only where not set yet (``$set_once``)."""
        return self._person_update("$set_once", properties, distinct_id)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; wait at most ``timeout`` seconds.

        Returns True when all of it was handled (sent, or refused by the server) in time.
        """
        if self.sync_mode or self._pid != os.getpid():
            return True
        timeout = self.shutdown_timeout if timeout is None else timeout
        return self._flush_until(time.monotonic() + timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default ``shutdown_timeout``), stop the sender.

        Idempotent. Events captured afterwards are dropped (counted as ``shutdown``).
        Returns True when everything queued was handled in time.
        """
        timeout = self.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if self._closed and self._thread is None:
            return True
        self._closed = True
        self._deadline = deadline
        ok = self._flush_until(deadline)
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.append(_STOP)
            self._urgent = True
            self._wake.set()
            thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None
        # list() copies the deque in one step: the sender may still be touching it.
        leftover = self._in_flight + sum(
            1 for item in list(self._queue) if isinstance(item, (PendingEvent, BuiltEvent))
        )
        if leftover:
            self._queue.clear()
            self._drop(
                "shutdown_timeout",
                f"{leftover} events not sent before the shutdown deadline",
                count=leftover,
            )
            ok = False
        self._transport.close()
        return ok

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
        return self._capture(
            kind,
            {kind: dict(properties)},
            distinct_id,
            None,
            None,
            None,
            None,
            context=_NO_TAGS_CONTEXT,
        )

    def _capture(
        self,
        event: str,
        properties: dict[str, Any] | None,
        distinct_id: Any,
        groups: Mapping[str, Any] | None,
        timestamp: dt.datetime | float | None,
        uuid: str | None,
        exception: ExceptionInfo | None,
        context: Any = None,
    ) -> str | None:
        if self.disabled:
            return None
        if self.api_key is None:
            self._drop("no_api_key", "no API key configured; events are not sent")
            return None
        if self._closed:
            self._drop("shutdown", "event captured after shutdown(); not sent")
            return None
        state = current_state()
        if context is _NO_TAGS_CONTEXT:
            state = _without_tags(state)
        elif context is not None:
            state = context
        if timestamp is None:
            timestamp = time.time()
        if uuid is None:
            uuid = uuid7(timestamp if isinstance(timestamp, float) else None)
        pending = PendingEvent(
            event, properties, distinct_id, state, timestamp, str(uuid), groups, exception
        )
        if self.sync_mode:
            return uuid if self._send_now(pending) else None
        return uuid if self.enqueue(pending) else None

    def enqueue(self, pending: PendingEvent) -> bool:
        """Append an already-made event to the queue (the fast path of every capture)."""
        queue = self._queue
        if len(queue) >= self.max_queue_size:
            self._drop("queue_full", "the queue is full (max_queue_size); events dropped")
            return False
        queue.append(pending)
        if self._thread is None:
            self._start_sender()
        if len(queue) >= self.flush_at and not self._wake.is_set():
            self._wake.set()
        return True

    def _send_now(self, pending: PendingEvent) -> bool:
        was_active = getattr(_local, "active", False)
        _local.active = True
        try:
            built = self._build(pending)
            if built is None:
                return False
            with self._stats_lock:
                self._dequeued += 1
            return self._deliver([built]) > 0
        finally:
            _local.active = was_active

    def _drop(self, reason: str, message: str, count: int = 1) -> None:
        with self._stats_lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + count
        self._warn(reason, message)

    def _warn(self, key: str, message: str, interval: float = 60.0) -> None:
        """Log ``message`` at most once per ``interval`` per ``key``: no log storms."""
        now = time.monotonic()
        last = self._last_warning.get(key)
        if last is not None and now - last < interval:
            return
        self._last_warning[key] = now
        was_active = getattr(_local, "active", False)
        _local.active = True
        try:
            logger.warning("posthog_logging: %s", message)
        finally:
            _local.active = was_active

    # -- the sender's side ---------------------------------------------------------------

    def _start_sender(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="posthog_logging.sender", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                # No new threads at interpreter shutdown: the exit hook sends inline.
                return
            self._thread = thread

    def _run(self) -> None:
        _local.active = True
        last_send = time.monotonic()
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            now = time.monotonic()
            if not self._queue:
                last_send = now
                continue
            urgent = self._urgent or len(self._queue) >= self.flush_at
            if urgent or now - last_send >= self.flush_interval:
                self._urgent = False
                if self._drain():
                    return
                last_send = time.monotonic()

    def _drain(self) -> bool:
        """Send everything in the queue. True when the stop marker was reached.

        Stops early, leaving the rest queued, when a flush or shutdown deadline passes.
        """
        queue = self._queue
        batch: list[BuiltEvent] = []
        size = 0
        try:
            while True:
                deadline = self._deadline
                if self._gave_back or (deadline is not None and time.monotonic() >= deadline):
                    self._gave_back = False
                    break
                try:
                    item = queue.popleft()
                except IndexError:
                    break
                if isinstance(item, PendingEvent):
                    with self._stats_lock:
                        self._dequeued += 1
                    built = self._build(item)
                    if built is None:
                        continue
                    item = built
                if isinstance(item, BuiltEvent):
                    if batch and size + len(item.payload) > MAX_BATCH_BYTES:
                        self._deliver(batch)
                        batch, size = [], 0
                    batch.append(item)
                    size += len(item.payload) + 1
                    if len(batch) >= self.flush_at:
                        self._deliver(batch)
                        batch, size = [], 0
                elif isinstance(item, _FlushMarker):
                    if batch:
                        self._deliver(batch)
                        batch, size = [], 0
                    item.done.set()
                elif item is _STOP:
                    if batch:
                        self._deliver(batch)
                    return True
            if batch:
                self._deliver(batch)
        except Exception:  # a bug here must not kill the sender and lose everything after
            logger.exception("posthog_logging: unexpected error in the sender")
        return False

    def _build(self, pending: PendingEvent) -> BuiltEvent | None:
        try:
            return self._builder.build(pending)
        except DroppedEvent as drop:
            self._drop(drop.reason, drop.detail)
        except Exception as exc:
            self._drop("build_error", f"could not build event {pending.event!r}: {exc!r}")
        return None

    def _deliver(self, batch: list[BuiltEvent]) -> int:
        """Send ``batch``, retrying and splitting as the answers ask. Returns events sent.

        When a flush or shutdown deadline leaves no time for the next try, the batch goes
        back to the front of the queue (same uuids) instead of being given up.
        """
        attempt = 0
        self._in_flight = len(batch)
        try:
            while True:
                timeout = self._transport.timeout
                deadline = self._deadline
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return self._requeue(batch)
                    timeout = min(timeout, remaining)
                result = self._transport.send(
                    [e.payload for e in batch], format_timestamp(time.time()), timeout
                )
                if result.ok:
                    with self._stats_lock:
                        self._sent += len(batch)
                    logger.debug("posthog_logging: sent %d events", len(batch))
                    return len(batch)
                if result.status == 413:
                    if len(batch) == 1:
                        self._drop("too_large", "an event was refused as too large (HTTP 413)")
                        return 0
                    half = len(batch) // 2
                    return self._deliver(batch[:half]) + self._deliver(batch[half:])
                if not result.retryable:
                    return self._give_up(batch, "refused", result)
                if attempt >= self.max_retries:
                    return self._give_up(batch, "retries", result)
                attempt += 1
                with self._stats_lock:
                    self._retried += 1
                delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
                if result.retry_after is not None:
                    delay = max(delay, min(result.retry_after, BACKOFF_CAP * 2))
                deadline = self._deadline
                if deadline is not None and time.monotonic() + delay >= deadline:
                    return self._requeue(batch)
                logger.debug("posthog_logging: %s; retrying in %.2fs", result.describe(), delay)
                # flush() and shutdown() interrupt the wait so that their deadline applies
                if self._interrupt.wait(delay):
                    self._interrupt.clear()
        finally:
            self._in_flight = 0

    def _requeue(self, batch: list[BuiltEvent]) -> int:
        self._queue.extendleft(reversed(batch))
        self._gave_back = True  # tells _drain to stop until the deadline is over
        return 0

    def _give_up(self, batch: list[BuiltEvent], why: str, result: SendResult | None) -> int:
        with self._stats_lock:
            self._failed += len(batch)
        if why == "deadline":
            message = f"{len(batch)} events not sent before the flush/shutdown deadline"
        elif why == "retries":
            assert result is not None
            message = (
                f"{len(batch)} events not sent after {self.max_retries} retries: "
                + result.describe()
            )
        else:
            assert result is not None
            message = f"{len(batch)} events refused by {self.host}: {result.describe()}"
        self._warn(f"failed:{why}:{result.status if result else ''}", message)
        if self._on_error is not None and result is not None:
            try:
                import json

                self._on_error(DeliveryError(result), [json.loads(e.payload) for e in batch])
            except Exception:
                logger.debug("posthog_logging: on_error raised", exc_info=True)
        return 0

    def _flush_until(self, deadline: float) -> bool:
        if self.sync_mode:
            return True
        if not self._queue and not self._in_flight:
            return True
        marker = _FlushMarker()
        previous = self._deadline  # shutdown() keeps its own deadline in force
        self._deadline = deadline if previous is None else min(previous, deadline)
        try:
            self._queue.append(marker)
            thread = self._thread
            if thread is None or not thread.is_alive():
                # No sender (never started, or interpreter shutting down): send inline.
                self._thread = None
                was_active = getattr(_local, "active", False)
                _local.active = True
                try:
                    self._drain()
                finally:
                    _local.active = was_active
            else:
                self._urgent = True
                self._wake.set()
                self._interrupt.set()
            return marker.done.wait(max(0.0, deadline - time.monotonic()))
        finally:
            self._deadline = previous
            with contextlib.suppress(ValueError):
                self._queue.remove(marker)


class _NoTags:
    pass


_NO_TAGS_CONTEXT = _NoTags()


def _without_tags(state: Any) -> Any:
    from .contexts import ContextState

    return ContextState(distinct_id=state.distinct_id, session_id=None)


def _checked_uuid(value: Any) -> str:
    """A uuid given to capture(), normalised; PostHog refuses a whole batch for a bad one."""
    try:
        return str(uuid_module.UUID(str(value)))
    except ValueError:
        raise ValueError(f"uuid must be a UUID, got {value!r}") from None


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


atexit.register(_shutdown_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
