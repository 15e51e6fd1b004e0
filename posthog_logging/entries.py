"""Log entries, and the one router that turns them into what PostHog receives.

A front-end (the stdlib handler, the structlog processor, any future one) fills a
:class:`LogEntry` from what it was given: a ``LogRecord``, a structlog event dict. The
:class:`Router` then applies the rules, the same for every front-end:

- a *marked* entry (its ``event`` is a name) becomes that event, with the entry's
  properties, its explicit ``distinct_id`` and ``groups``, in its context;
- an entry with an exception, at or above ``exception_level``, becomes an ``$exception``
  event (``mechanism`` ``{"type": "logger", "handled": true}``, ``$exception_level`` from
  the entry's level, ``$exception_source`` the front-end's), once per exception object;
- an unmarked entry at or above ``exception_level`` without an exception becomes one
  too, when ``errors_without_exception`` is on: a synthetic exception (its message
  template as the type, the message as the value, where it was logged as its frame) with
  an ``$exception_fingerprint`` of the logger and the template, so that one template
  makes one issue whatever its arguments;
- an entry at or above ``logs_level`` becomes a line for PostHog Logs;
- an entry at or above ``steps_level`` becomes an exception step of its context (after
  the rest: an error is not a step on its own way);

and hands each to the client through its seams, :meth:`Client.submit` and
:meth:`Client.submit_exception`. What the library's own code logs is not sent (it could
feed a loop) but counted.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .client import Client
from .contexts import ContextState, current_state, current_trail, effective_state
from .error_tracking import (
    ExceptionSnapshot,
    message_fingerprint,
    snapshot_exception,
    synthetic_exception,
)
from .events import ExceptionInfo, PendingEvent, choose_distinct_id
from .flags import parse_flag
from .held_lines import DEFAULT_MAX_HELD
from .levels import NEVER, exception_level_name, level_name, parse_level
from .log_volume import LineRules
from .otlp import PendingLog
from .reentry import in_finaliser, this_thread
from .steps import DEFAULT_MAX_STEPS
from .tracing import trace_context

__all__ = [
    "EVENT_NAME_STAMP",
    "EXCEPTION_STAMP",
    "MESSAGE_STAMP",
    "ROUTED_KEYS",
    "STAMPS",
    "STRUCTLOG_RESERVED",
    "TEMPLATE_STAMP",
    "LogEntry",
    "Router",
    "exception_of",
    "router_for",
    "sent_synthetic",
    "split_properties",
    "stamped_context",
]

#: Keys with a meaning of their own, as in ``capture()``; ``$set`` and ``$set_once`` stay
#: in the properties, where PostHog reads them.
ROUTED_KEYS = frozenset({"distinct_id", "groups", "properties"})

#: What a stamp of the library's own carries across a ``QueueHandler`` (or loguru's
#: ``enqueue``) besides the context: an exception's snapshot, the message as logged, a
#: marked record's event name, an error's message template. Private (a leading ``_``),
#: so that formatters (python-json-logger's among them) leave them out of users' lines.
EXCEPTION_STAMP = "_posthog_exception"
MESSAGE_STAMP = "_posthog_message"
EVENT_NAME_STAMP = "_posthog_event_name"
TEMPLATE_STAMP = "_posthog_template"

#: The context stamps (:class:`~posthog_logging.ContextFilter`,
#: :func:`~posthog_logging.structlog.merge_posthog_context`), which formatters may show,
#: and the private carry-overs above: never properties.
STAMPS = frozenset(
    {
        "posthog_distinct_id",
        "posthog_session_id",
        "posthog_tags",
        "posthog_trace",
        EXCEPTION_STAMP,
        EVENT_NAME_STAMP,
        MESSAGE_STAMP,
        TEMPLATE_STAMP,
    }
)

#: Keys of a structlog event dict that describe the entry rather than what happened:
#: the message, level and time, exception and stack (raw or rendered), the logger's name,
#: and what structlog's stdlib integration adds.
STRUCTLOG_RESERVED = frozenset(
    {
        "event",
        "level",
        "log_level",
        "timestamp",
        "logger",
        "logger_name",
        "exc_info",
        "exception",
        "stack_info",
        "stack",
        "positional_args",
    }
)


def split_properties(
    entry: Mapping[str, Any], not_properties: frozenset[str]
) -> tuple[dict[str, Any] | None, Any, Mapping[str, Any] | None]:
    """Properties, explicit distinct_id and groups of a log entry.

    Every key not in ``not_properties`` and not starting with ``_`` is a property; a
    ``properties`` mapping is merged in; ``distinct_id`` and ``groups`` are routed as in
    ``capture()`` (a ``groups`` that is not a mapping stays a property).
    """
    # A set difference in C finds the few extras among the many standard keys.
    props = {n: entry[n] for n in entry.keys() - not_properties if n[:1] != "_"}
    if "properties" in entry:
        nested = entry["properties"]
        if isinstance(nested, Mapping):
            props = {**nested, **props}
        elif nested is not None:  # not what capture() means by it: keep it as a property
            props["properties"] = nested
    if "groups" not in entry:
        return props or None, entry.get("distinct_id"), None
    groups = entry["groups"]
    if groups is not None and not isinstance(groups, Mapping):
        props["groups"] = groups
        groups = None
    return props or None, entry.get("distinct_id"), groups


def stamped_context(entry: Mapping[str, Any]) -> ContextState | None:
    """The context stamped on an entry where it was logged, or None to use the current one."""
    if (
        "posthog_tags" not in entry
        and "posthog_distinct_id" not in entry
        and "posthog_session_id" not in entry
    ):
        return None
    return ContextState(
        distinct_id=entry.get("posthog_distinct_id"),
        session_id=entry.get("posthog_session_id"),
        tags=entry.get("posthog_tags") or {},
    )


def exception_of(exc_info: Any) -> BaseException | None:
    """The exception an ``exc_info`` value means: True (the one being handled), an
    exception, or a ``sys.exc_info()`` tuple."""
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        value = exc_info[1]
        return value if isinstance(value, BaseException) else None
    return None


class _SentSynthetic(threading.local):
    entry: Any = None


#: Per thread, the last structlog entry the structlog processor sent as a synthetic
#: exception: ``PostHogHandler``, which sees it again behind ``wrap_for_formatter``,
#: leaves it (the object itself is compared: an entry is one log call).
sent_synthetic = _SentSynthetic()


#: Where a line was logged: (file path, line, function) or None, (thread id, thread name)
#: or None, and the OpenTelemetry span (trace id, span id, flags) or None.
Where = tuple[
    "tuple[str, int, str] | None",
    "tuple[int | None, str | None] | None",
    "tuple[str, str, int] | None",
]


@dataclass(slots=True)
class LogEntry:
    """A log call as a front-end saw it: everything the router needs to send it as an
    event, an ``$exception`` event and a log line. Built once per call that may send
    something, so its fields are given by position on hot paths, and what only some of
    what is sent needs (the formatted message, where it was logged) is asked of it
    through :meth:`text` and :meth:`where`, which a front-end overrides to make them only
    then."""

    created: float
    """When it was logged, in epoch seconds."""
    levelno: int
    logger_name: str | None
    event: str | None
    """The event's name when the entry is marked (``""`` for a marked entry whose name
    is empty: counted, not sent); None when it is not."""
    properties: dict[str, Any] | None
    distinct_id: Any
    """An explicit person for it (a ``distinct_id`` extra), if any."""
    groups: Mapping[str, Any] | None
    context: ContextState | None
    """The context stamped where it was logged; None: the current one."""
    message: Any
    """What the message is made from: see :meth:`text`."""
    exception: BaseException | None = None
    """The exception it carries, live."""
    snapshot: tuple[ExceptionSnapshot, ...] | None = None
    """Or a snapshot of it taken where it was logged (empty: already sent)."""
    source: str = "python.logging"
    """``$exception_source``: which front-end saw it."""

    @property
    def level_name(self) -> str:
        return level_name(self.levelno)

    def text(self) -> str:
        """The formatted message. Here ``message`` is that text; a front-end whose
        messages are costly to format keeps what it needs there and overrides this."""
        return str(self.message)

    def template(self) -> str:
        """The message before its arguments were put in: what a synthetic exception is
        named and grouped by. Here the text itself."""
        return self.text()

    def where(self) -> Where:
        """Where it was logged, for a log line: here, no code location, this thread
        and the span active now (the router asks on the thread that logged)."""
        thread = threading.current_thread()
        return None, (thread.ident, thread.name), trace_context()

    def origin(self) -> tuple[str, int, str] | None:
        """The code that logged it (file, line, function), for a synthetic exception's
        frame: here, what :meth:`where` says."""
        return self.where()[0]

    def trace(self) -> tuple[str, str, int] | None:
        """The span it was logged in, for an event: here, the one active now."""
        return trace_context()

    def sent_as_synthetic(self) -> bool:
        """Whether another front-end already sent it as a synthetic exception."""
        return False


def router_for(
    *,
    exception_level: Any,
    logs_level: Any = None,
    capture_errors_without_exception: Any = True,
    exception_steps_level: Any = None,
    exception_steps_max: int = DEFAULT_MAX_STEPS,
    logs_levels: Mapping[str, Any] | None = None,
    logs_sample_rates: Mapping[Any, Any] | None = None,
    logs_hold_level: Any = None,
    logs_release_level: Any = logging.ERROR,
    logs_hold_max: int = DEFAULT_MAX_HELD,
    parse: Callable[[Any, str], int] = parse_level,
) -> Router:
    """The :class:`Router` a front-end's options describe: the options every front-end
    takes, by the same names, checked in one place (levels read by ``parse``: a
    front-end with level names of its own, loguru's, passes its reader)."""
    return Router(
        exception_level=parse(exception_level, "exception_level"),
        lines=LineRules(
            logs_level=None if logs_level is None else parse(logs_level, "logs_level"),
            logs_levels=logs_levels,
            logs_sample_rates=logs_sample_rates,
            logs_hold_level=logs_hold_level,
            logs_release_level=logs_release_level,
            logs_hold_max=logs_hold_max,
            parse=parse,
        ),
        errors_without_exception=parse_flag(
            capture_errors_without_exception, "capture_errors_without_exception"
        ),
        steps_level=None
        if exception_steps_level is None
        else parse(exception_steps_level, "exception_steps_level"),
        max_steps=exception_steps_max,
    )


class Router:
    """Turns log entries into events, ``$exception`` events, log lines and steps."""

    def __init__(
        self,
        *,
        exception_level: int,
        logs_level: int | None = None,
        errors_without_exception: bool = True,
        steps_level: int | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        lines: LineRules | None = None,
    ) -> None:
        self.exception_level = exception_level
        self.steps_level = steps_level
        #: Which lines go to PostHog Logs (per logger, sampled, held back).
        self.lines = LineRules(logs_level=logs_level) if lines is None else lines
        self.logs_threshold = self.lines.floor
        self._line = self._send_line if self.lines.simple else self._line_by_rules
        self.errors_without_exception = errors_without_exception
        self.steps_threshold = NEVER if steps_level is None else steps_level
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"exception_steps_max must be a positive int, got {max_steps!r}")
        self.max_steps = max_steps
        #: At or above this level an entry sends something whatever it carries.
        self.threshold = min(self.logs_threshold, self.steps_threshold)
        if errors_without_exception:
            self.threshold = min(self.threshold, exception_level)
        #: Below this level only a marked entry sends anything (see :meth:`wants`): what a
        #: front-end checks first, for the records that are none of its business.
        self.floor = min(self.exception_level, self.threshold)

    def wants(self, marked: Any, levelno: int, has_exception: Any) -> bool:
        """Whether an entry would send anything: the cheap test front-ends make before
        they fill a :class:`LogEntry`."""
        return bool(
            marked
            or levelno >= self.threshold
            or (has_exception and levelno >= self.exception_level)
        )

    def route(self, client: Client, entry: LogEntry) -> None:
        """Send ``entry`` as what it is (see the module's rules). Every log call that may
        send something comes here, so it is written for speed."""
        if this_thread.in_library and not in_finaliser():
            # Logged on a thread of the library's own (its HTTP stack, say) or by a hook
            # it calls (before_send, on_error) or a property's __str__: not sent, since a
            # hook that logs for every event would feed a loop; counted.
            client.count_drop(
                "in_library_code",
                f"a record of logger {entry.logger_name!r} was logged on the library's own "
                "thread (by before_send, on_error or a __str__); not sent",
            )
            return
        name = entry.event
        if name:
            context = entry.context or effective_state()
            client.submit(
                PendingEvent(
                    name,
                    entry.properties,
                    entry.distinct_id,
                    context,
                    entry.created,
                    None,
                    entry.groups,
                    None,
                    entry.trace(),
                )
            )
        elif name is not None:
            client.count_drop("bad_event_name", "a marked log entry had an empty event name")
        levelno = entry.levelno
        if levelno >= self.exception_level:
            if entry.exception is not None or entry.snapshot is not None:
                self._send_exception(client, entry, None)
            elif self.errors_without_exception and name is None and not entry.sent_as_synthetic():
                self._send_synthetic(client, entry)
        if levelno >= self.logs_threshold:
            self._line(client, entry)
        if levelno >= self.steps_threshold and entry.context is None:
            # A context stamped elsewhere (behind a QueueHandler) has no steps here.
            current_trail().add(
                entry.text(),
                level=entry.level_name.lower(),
                logger=entry.logger_name,
                properties=entry.properties,
                timestamp=entry.created,
                max_steps=self.max_steps,
            )

    def _send_exception(
        self, client: Client, entry: LogEntry, synthetic: ExceptionInfo | None
    ) -> None:
        info = synthetic or ExceptionInfo(
            chain=entry.snapshot or (),
            mechanism_type="logger",
            handled=True,
            level=exception_level_name(entry.levelno),
            source=entry.source,
        )
        properties = dict(entry.properties or {})
        properties.update(
            log_message=entry.text(),
            logger_name=entry.logger_name,
            log_level=entry.level_name.lower(),
        )
        client.submit_exception(
            None if entry.snapshot is not None or synthetic else entry.exception,
            info,
            properties,
            distinct_id=entry.distinct_id,
            timestamp=entry.created,
            context=entry.context,
            trace=entry.trace(),
        )

    def _send_synthetic(self, client: Client, entry: LogEntry) -> None:
        """An error logged without an exception: one of the library's making."""
        template = entry.template()
        info = ExceptionInfo(
            chain=synthetic_exception(template, entry.text(), entry.origin()),
            mechanism_type="logger",
            handled=True,
            level=exception_level_name(entry.levelno),
            source=entry.source,
            fingerprint=message_fingerprint(entry.logger_name, template),
        )
        self._send_exception(client, entry, info)

    def _line_by_rules(self, client: Client, entry: LogEntry) -> None:
        """A line under ``logs_levels``, ``logs_sample_rates`` or ``logs_hold_level``."""
        rules, levelno = self.lines, entry.levelno
        held = None if entry.context is not None else current_state().held
        if held is not None and levelno >= rules.release_level and not held.released:
            held.release()  # the lines before it first
        if levelno >= rules.threshold(entry.logger_name):
            if rules.sampled_out(levelno):
                client.count_drop("logs_sampled", "", warn=False)
            else:
                self._send_line(client, entry)
        elif held is not None and levelno >= rules.hold_level:
            if held.released:
                self._send_line(client, entry)
            else:
                line = self._pending_line(entry)

                def drop(n: int) -> None:
                    client.count_drop("logs_not_kept", "", n, warn=False)

                held.hold(line, 64 + len(line.body), client.submit, drop, rules.max_held)

    def _send_line(self, client: Client, entry: LogEntry) -> None:
        client.submit(self._pending_line(entry))

    def _pending_line(self, entry: LogEntry) -> PendingLog:
        context = entry.context or effective_state()
        person = choose_distinct_id(entry.distinct_id, context)
        if person != context.distinct_id:  # an explicit person, by the rule events follow
            context = dataclasses.replace(context, distinct_id=person)
        snapshot = entry.snapshot or None
        if snapshot is None and entry.exception is not None:
            snapshot = snapshot_exception(entry.exception)
        code, thread, trace = entry.where()
        return PendingLog(
            time=entry.created,
            levelno=entry.levelno,
            level_name=entry.level_name,
            body=entry.text(),
            attributes=entry.properties,
            logger_name=entry.logger_name,
            context=context,
            code=code,
            thread=thread,
            trace=trace,
            exception=snapshot,
        )
