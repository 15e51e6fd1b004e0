"""The bridge from the standard library's :mod:`logging` to PostHog.

- :class:`PostHogHandler` turns marked records into events, and records with an
  exception (or errors without one) into ``$exception`` events. Everything else passes
  by at the cost of two dictionary look-ups.
- :class:`ContextFilter` stamps each record, where it is logged, with the current
  context (``posthog_distinct_id``, ``posthog_session_id``, ``posthog_tags``), for
  formatters and for a handler that runs on another thread behind ``QueueHandler``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

from . import default_client
from .client import Client
from .contexts import effective_state
from .entries import (
    EVENT_NAME_STAMP,
    EXCEPTION_STAMP,
    MESSAGE_STAMP,
    ROUTED_KEYS,
    STAMPS,
    STRUCTLOG_RESERVED,
    TEMPLATE_STAMP,
    LogEntry,
    Where,
    exception_of,
    router_for,
    sent_synthetic,
    split_properties,
    stamped_context,
)
from .error_tracking import mark_captured, snapshot_exception
from .held_lines import DEFAULT_MAX_HELD
from .levels import parse_level
from .official import as_client
from .reentry import in_finaliser, this_thread
from .serialisation import as_text
from .steps import DEFAULT_MAX_STEPS
from .tracing import trace_context

__all__ = ["DEFAULT_IGNORED_LOGGERS", "ContextFilter", "PostHogHandler"]

#: Loggers whose records never become events: our own, and the HTTP stack we send with
#: (an event about a failed request would need a request, which could fail, ...).
DEFAULT_IGNORED_LOGGERS: tuple[str, ...] = ("posthog_logging", "urllib3", "requests", "posthog")

#: The library's own logger: its records are never sent, whatever ``ignore_loggers`` says.
#: They could feed a loop (a line logged for each batch sent would make the next batch).
_LIBRARY_LOGGER = "posthog_logging"

#: Record attributes that are never properties: the standard LogRecord attributes
#: (python-json-logger's list) and the stamps :class:`ContextFilter` adds.
_NOT_PROPERTIES = frozenset(RESERVED_ATTRS) | STAMPS | {"taskName"}


#: The attributes ``LogRecord.__init__`` sets. Everything added later (``extra`` fields,
#: stamps, a formatter's ``message``) comes after them in the record's ``__dict__``.
_RECORD_INIT_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)


def _record_properties(
    d: dict[str, Any], not_properties: frozenset[str]
) -> tuple[dict[str, Any] | None, Any, Any]:
    """Properties, explicit distinct_id and groups of a record (see ``split_properties``).

    The extras are found by a walk back from the end of the record's ``__dict__`` over
    what was added after ``LogRecord.__init__``, not by a look at all of its attributes.
    """
    if "properties" in d or "groups" in d:  # the rarer shapes: the general rule
        return split_properties(d, not_properties)
    props = {}
    for name in reversed(d):
        if name in _RECORD_INIT_ATTRS:
            break
        if name not in not_properties and name[:1] != "_":
            props[name] = d[name]
    return props or None, d.get("distinct_id"), None


class _Guard(threading.local):
    """Per thread: whether the handler is emitting, and the records that arrived
    meanwhile (from a signal handler or a finaliser that landed mid-emit, or from code
    the emit called), to be sent once it is done."""

    busy = False
    draining = False  # sending the deferred records: what arrives now is not deferred
    deferred: list[logging.LogRecord] | None = None


def _names(value: Iterable[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # "a, b" from an ini file or an environment variable
        value = value.split(",")
    return tuple(n.strip() for n in value if n and n.strip())


class ContextFilter(logging.Filter):
    """Stamp records with the current context; never rejects a record.

    Adds ``posthog_distinct_id``, ``posthog_session_id`` and ``posthog_tags`` (None
    when unset), and, inside an active OpenTelemetry span, ``posthog_trace`` (its ids,
    for log lines). Attach it where records are made (on the ``QueueHandler``, or on the loggers)
    so the stamp describes the code that logged, not the thread that handles.

    A record that carries the event marker also gets ``_posthog_event_name`` (its message
    template, before ``QueueHandler`` formats it), and a record with an exception at or
    above ``exception_level`` gets ``_posthog_exception``, a picklable snapshot, since
    ``QueueHandler`` drops ``exc_info``; an unmarked one at or above it gets
    ``_posthog_template``, its message template, which groups it if it is sent as an error
    without an exception. Use the same ``event_key`` and ``exception_level`` as the
    :class:`PostHogHandler`.
    """

    def __init__(
        self,
        name: str = "",
        *,
        event_key: str = "event",
        exception_level: int | str = logging.ERROR,
    ) -> None:
        super().__init__(name)
        self.event_key = event_key
        self.exception_level = parse_level(exception_level, "exception_level")

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp ``record``; always True."""
        d = record.__dict__
        if "posthog_tags" not in d:
            state = effective_state()
            d["posthog_distinct_id"] = state.distinct_id
            d["posthog_session_id"] = state.session_id
            d["posthog_tags"] = dict(state.tags) if state.tags else None
            trace = trace_context()
            if trace is not None:  # the span where the line was logged, if any
                d["posthog_trace"] = trace
        marker = d.get(self.event_key)
        if marker is True and EVENT_NAME_STAMP not in d:
            d[EVENT_NAME_STAMP] = str(record.msg)
        elif record.levelno >= self.exception_level and TEMPLATE_STAMP not in d:
            # An error's message template, which groups it when it is sent without an
            # exception (QueueHandler puts the arguments into msg).
            d[TEMPLATE_STAMP] = as_text(record.msg)
        exc_info = record.exc_info
        if exc_info and exc_info[1] is not None and EXCEPTION_STAMP not in d:
            exc = exc_info[1]
            if record.levelno < self.exception_level or mark_captured(exc):
                # Below exception_level no $exception event is sent (so the exception is
                # not marked), but a log line still carries it.
                d[EXCEPTION_STAMP] = snapshot_exception(exc)
                d[MESSAGE_STAMP] = _message(record)  # QueueHandler adds the traceback
            else:
                d[EXCEPTION_STAMP] = ()
        return True


class PostHogHandler(logging.Handler):
    """Send marked records as PostHog events and logged exceptions to error tracking.

    ``logger.info("page_viewed", extra={"event": True, "page": "/"})`` sends the event
    ``page_viewed`` with the property ``page``; ``extra={"event": "signup"}`` names the
    event ``signup``. ``logger.exception(...)`` (any record with ``exc_info`` at or above
    ``exception_level``) sends an ``$exception`` event; so does an unmarked record at or
    above it without an exception (``capture_errors_without_exception``, on by default:
    a synthetic exception, one issue per logger and message template). With
    ``logs_level``, every record at or above it also goes to PostHog Logs as a log line,
    linked to the context's person and session (see docs/logs.md); with
    ``exception_steps_level``, every record at or above it is kept as a step of its
    context, sent with the context's next ``$exception`` (docs/exceptions.md). Other
    records are ignored.

    Entries structlog hands to logging through ``ProcessorFormatter.wrap_for_formatter``
    are understood too: marked with ``structlog_event_key`` (``capture=True`` or an event
    name), or carrying ``exc_info``. An entry the structlog processor already sent is
    not sent again.

    Without ``client``, the handler uses the default client, unless ``api_key``,
    ``host`` or other client options are given: then it builds its own :class:`Client`
    (and it becomes the default client if none was configured). All arguments are
    strings, numbers or lists, so the handler can be set up from ``dictConfig``.
    """

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        client: Client | Any = None,
        api_key: str | None = None,
        host: str | None = None,
        event_key: str = "event",
        exception_level: int | str = logging.ERROR,
        ignore_loggers: Iterable[str] | str | None = DEFAULT_IGNORED_LOGGERS,
        structlog_event_key: str = "capture",
        logs_level: int | str | None = None,
        capture_errors_without_exception: bool = True,
        exception_steps_level: int | str | None = None,
        exception_steps_max: int = DEFAULT_MAX_STEPS,
        logs_levels: Mapping[str, int | str] | None = None,
        logs_sample_rates: Mapping[Any, Any] | None = None,
        logs_hold_level: int | str | None = None,
        logs_release_level: int | str = logging.ERROR,
        logs_hold_max: int = DEFAULT_MAX_HELD,
        **client_options: Any,
    ) -> None:
        # Validate and build everything before Handler.__init__ registers the handler
        # with logging: a half-built handler would break logging.shutdown() later.
        for option, key in (("event_key", event_key), ("structlog_event_key", structlog_event_key)):
            if not isinstance(key, str) or not key:
                raise ValueError(f"{option} must be a non-empty str, got {key!r}")
        if client is not None and (api_key or host or client_options):
            raise ValueError("pass either client= or client options (api_key, host, ...), not both")
        if client is not None:  # ours, or an official posthog.Posthog to send through
            client = as_client(client)
        router = router_for(
            exception_level=exception_level,
            logs_level=logs_level,
            capture_errors_without_exception=capture_errors_without_exception,
            exception_steps_level=exception_steps_level,
            exception_steps_max=exception_steps_max,
            logs_levels=logs_levels,
            logs_sample_rates=logs_sample_rates,
            logs_hold_level=logs_hold_level,
            logs_release_level=logs_release_level,
            logs_hold_max=logs_hold_max,
        )
        ignored = _names(ignore_loggers)
        owns_client = client is None and bool(api_key or host or client_options)
        if owns_client:
            client = Client(api_key, host, **client_options)
        super().__init__(level)
        self.event_key = event_key
        self.exception_level = router.exception_level
        self.logs_level = None if logs_level is None else router.lines.logs_threshold
        self.capture_errors_without_exception = router.errors_without_exception
        self.exception_steps_level = router.steps_level
        self._router = router
        self._wants = self._router.wants  # asked of every record: bound once
        self._floor = self._router.floor
        self.ignore_loggers = ignored
        self.structlog_event_key = structlog_event_key
        self._not_properties = _NOT_PROPERTIES | ROUTED_KEYS | {event_key}
        self._not_structlog_properties = (
            STRUCTLOG_RESERVED | STAMPS | ROUTED_KEYS | {structlog_event_key}
        )
        self._ignored: dict[str, bool] = {}
        self._guard = _Guard()
        self._owns_client = owns_client
        self._client = client
        if owns_client:
            assert client is not None
            default_client.adopt(client)

    @property
    def client(self) -> Client:
        """The client events go to (the default client unless one was given)."""
        return self._client if self._client is not None else default_client.get_client()

    def _is_ignored(self, name: str) -> bool:
        ignored = self._ignored.get(name)
        if ignored is None:
            ignored = any(
                name == n or name.startswith(n + ".")
                for n in (_LIBRARY_LOGGER, *self.ignore_loggers)
            )
            if len(self._ignored) < 10_000:
                self._ignored[name] = ignored
        return ignored

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit ``record`` if it is an event or an exception; cheap otherwise.

        No handler lock: the client is thread-safe, and the lock would serialise threads.
        """
        d = record.__dict__
        try:
            # Most records: below every level that sends, not marked, not from structlog.
            if (
                d["levelno"] < self._floor
                and not d.get(self.event_key)
                and type(d["msg"]) is not dict
            ):
                return False
            if not self._wants(
                d.get(self.event_key),
                record.levelno,
                record.exc_info or d.get(EXCEPTION_STAMP),
            ) and (  # one more check for the records left: an entry structlog wrapped?
                type(record.msg) is not dict or not self._structlog_entry_to_send(record)
            ):
                return False
        except Exception:  # a marker whose truth cannot be told, say
            self._drop("handler_error", "a log record could not be turned into an event")
            return False
        ignored = self._ignored.get(record.name)
        if ignored is None:
            ignored = self._is_ignored(record.name)
        if ignored:
            return False
        result: Any = True
        if self.filters:
            result = self.filter(record)
            if not result:
                return False
            if isinstance(result, logging.LogRecord):  # Python 3.12+: a filter may swap it
                record = result
        self.emit(record)
        return result

    def emit(self, record: logging.LogRecord) -> None:
        """Turn ``record`` into an event or an ``$exception`` event. Never raises.

        A record that arrives on this thread while an emit is in progress (from a signal
        handler or a finaliser that landed in it, or logged by code it called) is sent
        once that emit is done. What arrives while those are sent is dropped and counted
        (``reentrant``): code that logs whenever it is emitted cannot loop.
        """
        guard = self._guard
        if guard.busy:
            if this_thread.in_library and not in_finaliser():
                # Logged by a hook the emit reached (before_send in sync_mode, say): see
                # Router.route. Not deferred: once deferred it would look like the app's.
                self._drop("in_library_code", "a record logged by a hook the library called")
            elif guard.draining:
                self._drop("reentrant", "a record logged while a deferred one was sent")
            else:
                if guard.deferred is None:
                    guard.deferred = []
                guard.deferred.append(record)  # atomic: safe from a handler landing here
            return
        guard.busy = True
        try:
            self._emit(record)
        except Exception:
            self._failed(record)
        finally:  # a KeyboardInterrupt, say: the next emit must not be deferred forever
            guard.busy = False
        if guard.deferred:
            self._send_deferred(guard)

    def _send_deferred(self, guard: _Guard) -> None:
        """Send what arrived during an emit on this thread (see :meth:`emit`)."""
        deferred = guard.deferred
        assert deferred is not None
        while deferred:
            guard.busy = guard.draining = True
            try:
                while deferred:
                    self._emit_safely(deferred.pop(0))
            finally:
                guard.busy = guard.draining = False
            # One deferred after the loop above looked, and before busy was cleared,
            # would otherwise wait for the next emit on this thread: look again.

    def _emit_safely(self, record: logging.LogRecord) -> None:
        try:
            self._emit(record)
        except Exception:
            self._failed(record)

    def _failed(self, record: logging.LogRecord) -> None:
        self._drop("handler_error", "a log record could not be turned into an event")
        self.handleError(record)  # prints only when logging.raiseExceptions is on

    def _drop(self, reason: str, message: str) -> None:
        """Count a record that was not sent (never raises)."""
        with contextlib.suppress(Exception):
            self.client.count_drop(reason, message)

    def _structlog_entry_to_send(self, record: logging.LogRecord) -> bool:
        entry: dict[str, Any] = record.msg  # type: ignore[assignment]
        return "_logger" in record.__dict__ and bool(
            entry.get(self.structlog_event_key)
            or (record.levelno >= self.exception_level and entry.get("exc_info"))
        )

    def _emit(self, record: logging.LogRecord) -> None:
        d = record.__dict__
        if type(record.msg) is dict and "_logger" in d:
            entry = self._structlog_entry(record, record.msg)
        else:
            entry = self._record_entry(record, d)
        self._router.route(self._client or default_client.get_client(), entry)

    def _record_entry(self, record: logging.LogRecord, d: dict[str, Any]) -> LogEntry:
        """What the record says: its marker, extras, context stamp and exception."""
        marker = d.get(self.event_key)
        name = None
        if marker:
            if isinstance(marker, str):
                name = marker
            else:  # the message template, as ContextFilter kept it behind a QueueHandler
                name = d.get(EVENT_NAME_STAMP) or as_text(record.msg)
        properties, distinct_id, groups = _record_properties(d, self._not_properties)
        exc_info = record.exc_info
        return _RecordEntry(
            record.created,
            record.levelno,
            record.name,
            name,
            properties,
            distinct_id,
            groups,
            stamped_context(d),
            record,
            exc_info[1] if exc_info else None,
            d.get(EXCEPTION_STAMP),
        )

    def _structlog_entry(self, record: logging.LogRecord, entry: dict[str, Any]) -> LogEntry:
        """An entry structlog wrapped for logging: its dict holds what extras would."""
        marker = entry.get(self.structlog_event_key)
        name = None
        if marker:
            name = marker if isinstance(marker, str) else as_text(entry.get("event", ""))
        properties, distinct_id, groups = split_properties(entry, self._not_structlog_properties)
        return _WrappedEntry(
            record.created,
            record.levelno,
            record.name,
            name,
            properties,
            distinct_id,
            groups,
            stamped_context(entry),
            record,
            exception_of(entry.get("exc_info")),
            None,
            "python.structlog",
        )

    def flush(self) -> None:
        """Send what is queued (bounded by the client's ``shutdown_timeout``)."""
        client = self._client
        if client is not None:
            client.flush()

    def close(self) -> None:
        """Shut the handler's own client down (a shared client is left running)."""
        try:
            if self._owns_client and self._client is not None:
                self._client.shutdown()
        finally:
            super().close()


class _RecordEntry(LogEntry):
    """A record's entry: the record itself is its ``message``, formatted (and its place
    read) only when something sent needs it."""

    __slots__ = ()

    @property
    def level_name(self) -> str:
        return str(self.message.levelname)

    def text(self) -> str:
        record: logging.LogRecord = self.message
        return record.__dict__.get(MESSAGE_STAMP) or _message(record)

    def template(self) -> str:
        record: logging.LogRecord = self.message
        return record.__dict__.get(TEMPLATE_STAMP) or as_text(record.msg)

    def where(self) -> Where:
        record: logging.LogRecord = self.message
        code = (record.pathname, record.lineno, record.funcName)
        return code, (record.thread, record.threadName), _trace_of(record.__dict__)

    def origin(self) -> tuple[str, int, str] | None:
        record: logging.LogRecord = self.message
        return record.pathname, record.lineno, record.funcName

    def trace(self) -> tuple[str, str, int] | None:
        return _trace_of(self.message.__dict__)


class _WrappedEntry(_RecordEntry):
    """An entry structlog wrapped for logging: its message is the event dict's."""

    __slots__ = ()

    def text(self) -> str:
        entry: dict[str, Any] = self.message.msg
        return as_text(entry.get("event", ""))

    def template(self) -> str:
        return self.text()

    def sent_as_synthetic(self) -> bool:
        return self.message.msg is sent_synthetic.entry


def _trace_of(d: dict[str, Any]) -> tuple[str, str, int] | None:
    """The span a record was logged in: stamped by ContextFilter where it was made (no
    stamp there: no span), else the one active here."""
    if "posthog_trace" in d:
        trace: tuple[str, str, int] = d["posthog_trace"]
        return trace
    return None if "posthog_tags" in d else trace_context()


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # bad %-args: keep the template rather than fail
        return as_text(record.msg)
