"""What the logging bridges share: the stdlib handler and the structlog processor turn a
log entry into an event or an ``$exception`` event by the same rules, kept here once."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .client import Client
from .contexts import ContextState, current_state
from .events import ExceptionInfo, choose_distinct_id
from .levels import exception_level_name, level_name

#: Keys with a meaning of their own, as in ``capture()``; ``$set`` and ``$set_once`` stay
#: in the properties, where PostHog reads them.
ROUTED_KEYS = frozenset({"distinct_id", "groups", "properties"})

#: The context stamps (:class:`~posthog_logging.ContextFilter`,
#: :func:`~posthog_logging.structlog.merge_posthog_context`): never properties.
STAMPS = frozenset(
    {
        "posthog_distinct_id",
        "posthog_session_id",
        "posthog_tags",
        "posthog_exception",
        "posthog_event_name",
        "posthog_message",
        "posthog_trace",
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


def line_context(entry: Mapping[str, Any], explicit: Any) -> ContextState:
    """The context a log line for PostHog Logs belongs to: the one stamped on the entry
    where it was logged, else the current one; with an explicit ``distinct_id``, that
    person, by the rule events follow."""
    context = stamped_context(entry) or current_state()
    person = choose_distinct_id(explicit, context)
    if person == context.distinct_id:
        return context
    return dataclasses.replace(context, distinct_id=person)


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


def send_entry(
    client: Client,
    *,
    name: str | None,
    properties: dict[str, Any] | None,
    distinct_id: Any,
    groups: Mapping[str, Any] | None,
    created: float,
    context: ContextState | None,
    levelno: int,
    exception_level: int,
    exception: BaseException | None,
    snapshot: tuple[Any, ...] | None,
    message: Callable[[], str],
    logger_name: str | None,
    source: str,
) -> None:
    """Send a log entry: as the event ``name`` if it is marked, and as an ``$exception``
    event if it carries an exception (``exception``, or an earlier ``snapshot`` of one) at
    or above ``exception_level``. ``message`` is called only for an exception."""
    if name is not None:
        if name:
            client._capture(name, properties, distinct_id, groups, created, None, None, context)
        else:
            client._drop("bad_event_name", "a marked log entry had an empty event name")
    if levelno < exception_level or (exception is None and snapshot is None):
        return
    info = ExceptionInfo(
        chain=snapshot or (),
        mechanism_type="logger",
        handled=True,
        level=exception_level_name(levelno),
        source=source,
    )
    exc_props = dict(properties or {})
    exc_props.update(
        log_message=message(),
        logger_name=logger_name,
        log_level=level_name(levelno).lower(),
    )
    client.capture_exception_info(
        None if snapshot is not None else exception,
        info,
        exc_props,
        distinct_id=distinct_id,
        timestamp=created,
        context=context,
    )
