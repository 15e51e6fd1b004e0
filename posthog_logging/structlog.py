"""structlog processors: PostHog events and error tracking in structlog's own idiom.

- :func:`merge_posthog_context` adds the current context (``posthog_distinct_id``,
  ``posthog_session_id``, ``posthog_tags``) to the event dict, as
  ``structlog.contextvars.merge_contextvars`` does for bound context variables.
- :class:`PostHogProcessor` sends entries marked with ``capture=True`` (or
  ``capture="event_name"``) as events, and entries with ``exc_info`` (or errors without
  one) at or above the exception level as ``$exception`` events; then hands the event
  dict on, unchanged but for the marker it consumed, so rendering goes on::

      structlog.configure(
          processors=[
              structlog.contextvars.merge_contextvars,
              structlog.processors.add_log_level,
              PostHogProcessor(),  # before format_exc_info / dict_tracebacks
              structlog.processors.TimeStamper(fmt="iso"),
              structlog.processors.format_exc_info,
              structlog.processors.JSONRenderer(),
          ]
      )
      log.info("page_viewed", capture=True, page="/pricing")

Importing this module needs structlog (``pip install 'posthog-logging[structlog]'``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

try:
    import structlog
    from structlog.typing import EventDict, WrappedLogger
except ImportError as exc:  # pragma: no cover - exercised without structlog installed
    raise ImportError(
        "posthog_logging.structlog needs structlog: pip install 'posthog-logging[structlog]'"
    ) from exc

from . import default_client
from .client import Client
from .contexts import effective_state
from .entries import (
    ROUTED_KEYS,
    STAMPS,
    STRUCTLOG_RESERVED,
    LogEntry,
    Where,
    exception_of,
    router_for,
    sent_synthetic,
    split_properties,
    stamped_context,
)
from .held_lines import DEFAULT_MAX_HELD
from .levels import NEVER, entry_level
from .official import as_client
from .serialisation import as_text
from .steps import DEFAULT_MAX_STEPS
from .tracing import trace_context

__all__ = ["PostHogProcessor", "merge_posthog_context"]


def merge_posthog_context(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Add the current context to ``event_dict``: ``posthog_distinct_id``,
    ``posthog_session_id`` and ``posthog_tags``, each only when set.

    Keys already in the entry win. With it in the chain, a rendered line shows whose it
    is, and :class:`PostHogProcessor` (or ``PostHogHandler`` behind structlog's stdlib
    integration) uses the context of the code that logged even if it runs elsewhere.
    """
    state = effective_state()
    if state.distinct_id is not None:
        event_dict.setdefault("posthog_distinct_id", state.distinct_id)
    if state.session_id is not None:
        event_dict.setdefault("posthog_session_id", state.session_id)
    if state.tags:
        event_dict.setdefault("posthog_tags", dict(state.tags))
    return event_dict


class PostHogProcessor:
    """Send marked entries as PostHog events and entries with an exception as ``$exception``.

    An entry is an event when it carries ``event_key`` (default ``"capture"``, since
    structlog's message is already called ``event``): ``True`` names the event after the
    message, a string is the name. Its properties are the entry's keys, bound ones and
    structlog context variables included, minus structlog's own (``event``, ``level``,
    ``timestamp``, ``exc_info``, ...), ``_``-prefixed keys and the context stamps;
    ``distinct_id``, ``groups`` and ``properties`` mean what they mean in ``capture()``.

    An entry with ``exc_info`` (``True``, an exception, or a ``sys.exc_info()`` tuple) at
    or above ``exception_level`` becomes an ``$exception`` event. The level comes from the
    method name (``log.exception`` is ``error``). Put the processor before
    ``format_exc_info`` / ``dict_tracebacks``, which replace ``exc_info`` with text.

    An unmarked entry at or above ``exception_level`` without an exception becomes a
    synthetic ``$exception``, one issue per logger and event name
    (``capture_errors_without_exception``). With ``logs_level``, every entry at or above
    it also goes to PostHog Logs as a log line (its message, level, keys and context;
    see docs/logs.md); with ``exception_steps_level``, it is kept as a step of its
    context, sent with the context's next ``$exception`` (docs/exceptions.md).

    The processor consumes the marker (it is not rendered, and a ``PostHogHandler``
    further down does not send the entry again) and returns the event dict. It never
    raises and never drops an entry.
    """

    __slots__ = (
        "_client",
        "_errors_level",
        "_not_properties",
        "_route",
        "_router",
        "_threshold",
        "_wants",
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
        event_key: str = "capture",
        exception_level: int | str = "error",
        logs_level: int | str | None = None,
        capture_errors_without_exception: bool = True,
        exception_steps_level: int | str | None = None,
        exception_steps_max: int = DEFAULT_MAX_STEPS,
        logs_levels: Mapping[str, int | str] | None = None,
        logs_sample_rates: Mapping[Any, Any] | None = None,
        logs_hold_level: int | str | None = None,
        logs_release_level: int | str = "error",
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
        )
        self.exception_level = self._router.exception_level
        self.logs_level = None if logs_level is None else self._router.lines.logs_threshold
        self.exception_steps_level = self._router.steps_level
        self.capture_errors_without_exception = self._router.errors_without_exception
        # Asked of every entry: bound once.
        self._wants, self._route = self._router.wants, self._router.route
        self._threshold = self._router.threshold
        #: At or above it, an entry without an exception is sent as a synthetic one.
        self._errors_level = (
            self.exception_level if self.capture_errors_without_exception else NEVER
        )
        self._not_properties = STRUCTLOG_RESERVED | STAMPS | ROUTED_KEYS | {event_key}

    def __repr__(self) -> str:
        return f"PostHogProcessor(event_key={self.event_key!r})"

    @property
    def client(self) -> Client:
        """The client events go to (the default client unless one was given)."""
        return self._client if self._client is not None else default_client.get_client()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        try:
            marker = event_dict.pop(self.event_key, None)
            exc_info = event_dict.get("exc_info")
            if not marker and not exc_info and self._threshold == NEVER:
                return event_dict
            levelno = entry_level(method_name, event_dict)
            if self._wants(marker, levelno, exc_info):
                entry = self._entry(logger, marker, levelno, exc_info, event_dict)
                if levelno >= self._errors_level and entry.exception is None and not marker:
                    # Sent here as a synthetic exception: a PostHogHandler behind
                    # wrap_for_formatter sees this very dict and leaves it.
                    sent_synthetic.entry = event_dict
                self._route(self.client, entry)
        except Exception:
            with contextlib.suppress(Exception):  # even counting failed: stay silent
                self.client.count_drop(
                    "handler_error", "a structlog entry could not become an event"
                )
        return event_dict

    def _entry(
        self,
        logger: WrappedLogger,
        marker: Any,
        levelno: int,
        exc_info: Any,
        event_dict: EventDict,
    ) -> LogEntry:
        """What the entry says: its marker, keys (bound ones and context variables
        included), context stamp and exception."""
        entry = event_dict
        bound = structlog.contextvars.get_contextvars()
        if bound:  # context variables are properties even when not merged into the entry
            entry = {**bound, **event_dict}
        properties, distinct_id, groups = split_properties(entry, self._not_properties)
        name = None
        if marker:
            name = marker if isinstance(marker, str) else as_text(event_dict.get("event", ""))
        return _Entry(
            time.time(),
            levelno,
            _logger_name(logger, event_dict) if levelno >= self._threshold or exc_info else None,
            name,
            properties,
            distinct_id,
            groups,
            stamped_context(event_dict),
            event_dict,
            exception_of(exc_info) if exc_info else None,
            None,
            "python.structlog",
        )


class _Entry(LogEntry):
    """A structlog entry's: its message (from the event dict, in ``message``) is made
    only when something sent needs it."""

    __slots__ = ()

    def text(self) -> str:
        return as_text(self.message.get("event", ""))

    def template(self) -> str:
        return self.text()

    def where(self) -> Where:
        thread = threading.current_thread()
        return _callsite(self.message), (thread.ident, thread.name), trace_context()

    def origin(self) -> tuple[str, int, str] | None:
        return _callsite(self.message) or _caller()


#: structlog's own way to find the code that logged: it skips its frames and ours, and
#: knows where an async call (``await log.aerror(...)``) was made, though the processors
#: then run on an executor's thread.
_CALLSITE = structlog.processors.CallsiteParameterAdder(
    {
        structlog.processors.CallsiteParameter.PATHNAME,
        structlog.processors.CallsiteParameter.LINENO,
        structlog.processors.CallsiteParameter.FUNC_NAME,
    },
    additional_ignores=["posthog_logging"],
)


def _caller() -> tuple[str, int, str] | None:
    """The code that made the log call (for the frame of a synthetic exception when no
    ``CallsiteParameterAdder`` in the chain said where)."""
    found = _CALLSITE(logging.getLogger(), "error", {})  # it reads only the stack
    return _callsite(found)


def _callsite(event_dict: EventDict) -> tuple[str, int, str] | None:
    """Where the entry was logged, when structlog's ``CallsiteParameterAdder`` said."""
    path = event_dict.get("pathname")
    line = event_dict.get("lineno")
    if isinstance(path, str) and isinstance(line, int):
        return path, line, as_text(event_dict.get("func_name", ""))
    return None


def _logger_name(logger: WrappedLogger, event_dict: EventDict) -> str | None:
    name = event_dict.get("logger") or event_dict.get("logger_name")
    if name is None:
        name = getattr(logger, "name", None)
    return None if name is None else as_text(name)
