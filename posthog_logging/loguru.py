"""A loguru sink: PostHog events, error tracking and log lines from loguru's logger.

loguru has no processors and no handlers to subclass: everything it logs goes to sinks,
each called with a message whose ``record`` says what was logged. :class:`PostHogSink`
is such a sink. It reads the record into a :class:`~posthog_logging.entries.LogEntry`
and hands it to the same router as the standard library's handler and the structlog
processor, so a loguru call sends what the same call would send through them::

    from loguru import logger
    from posthog_logging.loguru import PostHogSink

    logger.add(PostHogSink(), level="INFO")
    logger.info("page_viewed", event=True, page="/pricing")  # -> event "page_viewed"
    logger.info("signed up", event="signup_completed")        # -> event "signup_completed"
    logger.exception("payment failed")                         # -> $exception

Two things loguru does not keep are recovered where the call is made:

- **The message template.** loguru formats ``"payment failed for order {}"`` with its
  arguments before any sink or patcher sees the record, and keeps only the result. The
  template names a marked event (``event=True``) and groups an error logged without an
  exception (one issue per logger and template, whatever the arguments), so the sink
  reads it from loguru's logging call, which is on the stack when the sink runs on the
  thread that logged.
- **The caller's situation, with ``enqueue=True``.** Then loguru calls sinks on a
  thread of its own, with a pickled copy of the record: no context, no span, and an
  exception without its traceback. :data:`stamp_context`, a patcher, runs in the
  logging call and stamps the record's ``extra`` with the context, the active
  OpenTelemetry span, the template and a snapshot of the exception, which the sink then
  uses (``logger.configure(patcher=stamp_context)``).

Importing this module needs loguru (``pip install 'posthog-logging[loguru]'``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:
    import loguru
except ImportError as exc:  # pragma: no cover - exercised without loguru installed
    raise ImportError(
        "posthog_logging.loguru needs loguru: pip install 'posthog-logging[loguru]'"
    ) from exc

from . import default_client
from .client import Client
from .contexts import ContextState, effective_state
from .diagnostics import Warner
from .entries import (
    EVENT_NAME_STAMP,
    EXCEPTION_STAMP,
    ROUTED_KEYS,
    STAMPS,
    TEMPLATE_STAMP,
    LogEntry,
    Where,
    router_for,
    split_properties,
    stamped_context,
)
from .error_tracking import mark_captured, snapshot_exception
from .held_lines import DEFAULT_MAX_HELD
from .levels import NEVER, parse_level
from .official import as_client
from .serialisation import as_text
from .stdlib import DEFAULT_IGNORED_LOGGERS
from .steps import DEFAULT_MAX_STEPS
from .tracing import trace_context

if TYPE_CHECKING:
    from loguru import Message, Record

__all__ = ["ContextStamper", "PostHogSink", "stamp_context"]

#: ``$exception_source`` of what this sink sends.
SOURCE = "python.loguru"

#: The code of loguru's logging call (``Logger._log``), which formats the message and
#: calls patchers and sinks: its frame holds the template. None if loguru changes it.
_LOG_CODE: types.CodeType | None = getattr(
    getattr(type(loguru.logger), "_log", None), "__code__", None
)

#: How far up the stack the logging call may be from a sink or a patcher (loguru 0.7: the
#: sink is three calls below it, a patcher one).
_MAX_DEPTH = 8


def _logging_call() -> types.FrameType | None:
    """The frame of loguru's logging call when the caller runs inside it (a sink called
    on the thread that logged, a patcher); None on loguru's own thread (``enqueue``)."""
    if _LOG_CODE is None:
        return None
    frame: types.FrameType | None = sys._getframe(2)
    for _ in range(_MAX_DEPTH):
        if frame is None:
            return None
        if frame.f_code is _LOG_CODE:
            return frame
        frame = frame.f_back
    return None


def _on_logging_thread(record: Record) -> bool:
    """Whether ``record`` was logged by this thread of this process: how the sink tells
    where it runs should loguru's logging call not be found by its code."""
    return record["thread"].id == threading.get_ident() and record["process"].id == os.getpid()


def _template(frame: types.FrameType | None) -> str | None:
    """The message as the logging call was given it, before its arguments went in."""
    if frame is None:
        return None
    message = frame.f_locals.get("message")
    return None if message is None else as_text(message)


def _exception(record: Record) -> BaseException | None:
    """The exception a record carries: ``logger.exception(...)``, ``opt(exception=...)``
    (loguru keeps ``(None, None, None)`` when there was none to take)."""
    carried = record["exception"]
    if carried is None:
        return None
    value = carried.value
    return value if isinstance(value, BaseException) else None


def _level(value: int | str, option: str) -> int:
    """A level from a number or a name, loguru's own names (``"SUCCESS"``, ``"TRACE"``,
    levels added with ``logger.level(...)``) included."""
    try:
        return parse_level(value, option)
    except ValueError:
        if not isinstance(value, str):
            raise
    for name in (value.strip(), value.strip().upper()):
        with contextlib.suppress(ValueError, TypeError):
            return int(loguru.logger.level(name).no)
    return parse_level(value, option)  # raises, naming the option


class _Drain:
    """At exit, let loguru's queues (``enqueue=True``) hand what they hold to the sinks
    before the clients shut down: both loguru and this library shut down from ``atexit``
    hooks, and loguru's would run after the client's when loguru was imported first."""

    registered_by: int | None = None

    @classmethod
    def register(cls) -> None:
        if cls.registered_by != os.getpid():
            cls.registered_by = os.getpid()
            atexit.register(cls.drain)

    @classmethod
    def drain(cls) -> None:
        # Not in a forked child that made no sink: what it queued is its parent's to send.
        if cls.registered_by == os.getpid():
            with contextlib.suppress(Exception):
                loguru.logger.complete()


class ContextStamper:
    """A loguru patcher that stamps each record, in the logging call, with what the sink
    needs when it runs elsewhere (``enqueue=True``): the current context
    (``posthog_distinct_id``, ``posthog_session_id``, ``posthog_tags``, None when unset),
    the active OpenTelemetry span (``posthog_trace``), the message template of a marked
    record (``_posthog_event_name``) or of an error (``_posthog_template``), and a
    picklable snapshot of the exception (``_posthog_exception``, empty when another record
    already sent it), all in the record's ``extra``.

    :data:`stamp_context` is one with the defaults; make another for a sink with another
    ``event_key`` or ``exception_level``. Never raises into the logging call.
    """

    __slots__ = ("event_key", "exception_level")

    def __init__(self, *, event_key: str = "event", exception_level: int | str = "ERROR") -> None:
        if not isinstance(event_key, str) or not event_key:
            raise ValueError(f"event_key must be a non-empty str, got {event_key!r}")
        self.event_key = event_key
        self.exception_level = _level(exception_level, "exception_level")

    def __repr__(self) -> str:
        return f"ContextStamper(event_key={self.event_key!r})"

    def __call__(self, record: Record) -> None:
        """Stamp ``record`` (once: a record already stamped is left as it is)."""
        with contextlib.suppress(Exception):  # a patcher's error would be the log call's
            self._stamp(record)

    def _stamp(self, record: Record) -> None:
        extra = record["extra"]
        if "posthog_tags" in extra:
            return
        state = effective_state()
        extra["posthog_distinct_id"] = state.distinct_id
        extra["posthog_session_id"] = state.session_id
        extra["posthog_tags"] = dict(state.tags) if state.tags else None
        trace = trace_context()
        if trace is not None:
            extra["posthog_trace"] = trace
        levelno = record["level"].no
        exception = _exception(record)
        marker = extra.get(self.event_key)
        if marker and not isinstance(marker, str):
            extra[EVENT_NAME_STAMP] = _template(_logging_call())
        elif levelno >= self.exception_level and exception is None and not marker:
            extra[TEMPLATE_STAMP] = _template(_logging_call())
        if exception is not None:
            if levelno < self.exception_level or mark_captured(exception):
                # Below exception_level no $exception is sent (so the exception is not
                # marked), but a log line still carries it.
                extra[EXCEPTION_STAMP] = snapshot_exception(exception)
            else:
                extra[EXCEPTION_STAMP] = ()


#: The patcher for a :class:`PostHogSink` with the default ``event_key`` and
#: ``exception_level``: ``logger.configure(patcher=stamp_context)``.
stamp_context = ContextStamper()


class PostHogSink:
    """A loguru sink that sends marked records as PostHog events and logged exceptions
    to error tracking: ``logger.add(PostHogSink(), level="INFO")``.

    ``logger.info("page_viewed", event=True, page="/")`` sends the event
    ``page_viewed`` (named after the message template) with the property ``page``;
    ``event="signup"`` names it ``signup``. A record's properties are its ``extra``: the
    call's keyword arguments, ``bind()`` and ``contextualize()`` values and
    ``configure(extra=...)``, minus the marker, the context stamps and keys starting with
    ``_``; ``distinct_id``, ``groups`` and ``properties`` mean what they mean in
    ``capture()``.

    A record with an exception (``logger.exception(...)``, ``opt(exception=...)``,
    ``logger.catch()``) at or above ``exception_level`` becomes an ``$exception`` event
    with its traceback and ``$exception_source`` ``python.loguru``; an unmarked record at
    or above it without one becomes a synthetic ``$exception``, one issue per logger and
    message template (``capture_errors_without_exception``). With ``logs_level``, every
    record at or above it also goes to PostHog Logs as a line; with
    ``exception_steps_level``, it is kept as a step of its context, sent with the
    context's next ``$exception``. Levels are numbers or names, loguru's own
    (``"SUCCESS"``, ``"TRACE"``) included.

    Identity, session and tags come from the context the record was logged in. With
    ``enqueue=True`` loguru calls the sink on its own thread: add :data:`stamp_context`
    as a patcher so that the record carries them there. Records of the library's own
    modules and of the HTTP stack it sends with are never sent. The sink never raises:
    what it cannot send is counted in ``client.stats.dropped``.
    """

    __slots__ = (
        "_client",
        "_errors_level",
        "_ignored",
        "_not_properties",
        "_route",
        "_router",
        "_threshold",
        "_wants",
        "_warner",
        "capture_errors_without_exception",
        "event_key",
        "exception_level",
        "exception_steps_level",
        "logs_level",
    )

    def __init__(
        self,
        client: Client | Any = None,
        *,
        event_key: str = "event",
        exception_level: int | str = "ERROR",
        logs_level: int | str | None = None,
        capture_errors_without_exception: bool = True,
        exception_steps_level: int | str | None = None,
        exception_steps_max: int = DEFAULT_MAX_STEPS,
        logs_levels: Mapping[str, int | str] | None = None,
        logs_sample_rates: Mapping[Any, Any] | None = None,
        logs_hold_level: int | str | None = None,
        logs_release_level: int | str = "ERROR",
        logs_hold_max: int = DEFAULT_MAX_HELD,
    ) -> None:
        if not isinstance(event_key, str) or not event_key:
            raise ValueError(f"event_key must be a non-empty str, got {event_key!r}")
        # Ours, or an official posthog.Posthog to send through.
        self._client = None if client is None else as_client(client)
        self.event_key = event_key
        self._router = router_for(
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
            parse=_level,
        )
        self.exception_level = self._router.exception_level
        self.logs_level = None if logs_level is None else self._router.lines.logs_threshold
        self.exception_steps_level = self._router.steps_level
        self.capture_errors_without_exception = self._router.errors_without_exception
        # Asked of every record: bound once.
        self._wants, self._route = self._router.wants, self._router.route
        self._threshold = self._router.threshold
        #: At or above it, a record without an exception is sent as a synthetic one.
        self._errors_level = (
            self.exception_level if self.capture_errors_without_exception else NEVER
        )
        self._not_properties = STAMPS | ROUTED_KEYS | {event_key}
        self._ignored: dict[str, bool] = {}
        self._warner = Warner(interval=None)
        _Drain.register()

    def __repr__(self) -> str:
        return f"PostHogSink(event_key={self.event_key!r})"

    @property
    def client(self) -> Client:
        """The client events go to (the default client unless one was given)."""
        return self._client if self._client is not None else default_client.get_client()

    def __call__(self, message: Message) -> None:
        """Send the record of ``message`` as what it is. Never raises."""
        try:
            record = message.record
            extra = record["extra"]
            marker = extra.get(self.event_key)
            levelno = record["level"].no
            exception = _exception(record)
            if not self._wants(
                marker, levelno, exception is not None or extra.get(EXCEPTION_STAMP)
            ):
                return
            name = record["name"]
            if name is not None and self._is_ignored(name):
                return
            self._route(self.client, self._entry(record, marker, levelno, exception))
        except Exception:
            with contextlib.suppress(Exception):  # even counting failed: stay silent
                self.client.count_drop("handler_error", "a loguru record could not become an event")

    def _is_ignored(self, name: str) -> bool:
        """Whether records of module ``name`` are never sent: the library's own, and
        those of the HTTP stack it sends with (an event about a failed request would
        need a request, which could fail, ...)."""
        ignored = self._ignored.get(name)
        if ignored is None:
            ignored = any(name == n or name.startswith(n + ".") for n in DEFAULT_IGNORED_LOGGERS)
            if len(self._ignored) < 10_000:
                self._ignored[name] = ignored
        return ignored

    def _entry(
        self, record: Record, marker: Any, levelno: int, exception: BaseException | None
    ) -> LogEntry:
        """What the record says: its marker, extras, context and exception, from the
        logging call when the sink runs in it, else from the stamps."""
        extra = record["extra"]
        call = _logging_call()
        live = call is not None or (_LOG_CODE is None and _on_logging_thread(record))
        snapshot = extra.get(EXCEPTION_STAMP)
        if live:
            context = None  # the current one: this is the thread that logged
        else:
            context = stamped_context(extra)
            if context is None:
                self._unstamped()
                context = ContextState()  # not this thread's: nothing to tell
        name = None
        if marker:
            if isinstance(marker, str):
                name = marker
            else:
                name = _template(call) or extra.get(EVENT_NAME_STAMP) or record["message"]
        template = None
        if levelno >= self._errors_level and not marker and exception is None and snapshot is None:
            template = _template(call) or extra.get(TEMPLATE_STAMP)
        properties, distinct_id, groups = split_properties(extra, self._not_properties)
        entry = _Entry(
            record["time"].timestamp(),
            levelno,
            record["name"],
            name,
            properties,
            distinct_id,
            groups,
            context,
            record,
            exception,
            snapshot,
            SOURCE,
        )
        entry.live = live
        entry.template_text = template
        return entry

    def _unstamped(self) -> None:
        self._warner.warn(
            "loguru-unstamped",
            "PostHogSink runs outside the logging call (enqueue=True) and the records "
            "carry no context: add posthog_logging.loguru.stamp_context as a patcher "
            "(logger.configure(patcher=stamp_context)) to send their person, session, "
            "tags, span and traceback",
        )


class _Entry(LogEntry):
    """A loguru record's entry: the record is its ``message``; where it was logged, its
    level's name and its span are read from it when something sent needs them."""

    __slots__ = ("live", "template_text")

    live: bool
    """Whether it is handled in the logging call (else on loguru's thread, from stamps)."""
    template_text: str | None

    @property
    def level_name(self) -> str:
        return str(self.message["level"].name)

    def text(self) -> str:
        return str(self.message["message"])

    def template(self) -> str:
        return self.template_text or self.text()

    def where(self) -> Where:
        record: Record = self.message
        thread = record["thread"]
        return self.origin(), (thread.id, thread.name), self.trace()

    def origin(self) -> tuple[str, int, str] | None:
        record: Record = self.message
        return record["file"].path, record["line"], record["function"]

    def trace(self) -> tuple[str, str, int] | None:
        if self.live:
            return trace_context()
        stamped: tuple[str, str, int] | None = self.message["extra"].get("posthog_trace")
        return stamped
