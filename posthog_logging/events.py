"""Event building, in two halves.

On the application's thread, :class:`PendingEvent` records only what must be taken at
the call site: the name, a shallow copy of the properties, the context (an immutable
snapshot, so taking it is free), the time and the uuid. Everything else (merging
properties, making them JSON-safe, redacting secrets, exception source context,
``before_send``, serialising) happens on the sender thread in :class:`EventBuilder`.

Property precedence, lowest first (a later layer overwrites an earlier one):

1. library defaults: ``$python_version``, ``$python_runtime``, ``$os``, ``$os_version``,
   ``$geoip_disable``;
2. the client's ``super_properties``;
3. the context's tags;
4. ``$session_id`` from the context;
5. the properties given to the call (a ``$session_id`` given here wins over the context's);
6. what the library owns and no one overrides: ``$lib``, ``$lib_version``, ``$is_server``,
   ``$groups`` from the ``groups`` argument, ``$process_person_profile: false`` for
   personless events, and ``$exception_list``/``$exception_level``/``$exception_source``.

The distinct_id is the explicit one, else the context's, else a generated one for a
personless event (:func:`choose_distinct_id`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._version import __version__
from .contexts import ContextState, current_state
from .diagnostics import Warner
from .error_tracking import (
    ExceptionSnapshot,
    InAppRules,
    build_exception_list,
    mark_captured,
    snapshot_exception,
)
from .ids import format_timestamp, uuid7
from .serialisation import (
    MAX_STRING_LENGTH,
    Redactor,
    as_text,
    dumps,
    dumps_text,
    plain_json,
    quote,
    to_jsonable,
)
from .wire import MAX_EVENT_BYTES

__all__ = [
    "LIB_NAME",
    "MAX_EVENT_BYTES",
    "BuiltEvent",
    "DroppedEvent",
    "EventBuilder",
    "ExceptionInfo",
    "PendingEvent",
    "choose_distinct_id",
    "pending_exception",
]


LIB_NAME = "posthog-logging"
MAX_NAME_LENGTH = 200

BeforeSend = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def choose_distinct_id(explicit: Any, context: ContextState) -> str | None:
    """The one rule for whose event this is: explicit, else the context's, else None.

    A non-string id is sent as its text; one whose text is empty counts as not given.
    """
    if explicit is not None:
        text = as_text(explicit)
        if text:
            return text
    return context.distinct_id


@dataclass(frozen=True)
class ExceptionInfo:
    """What an ``$exception`` event needs beyond a plain event."""

    chain: tuple[ExceptionSnapshot, ...]
    mechanism_type: str = "generic"
    handled: bool | None = None
    level: str | None = None
    source: str | None = None


@dataclass(slots=True)
class PendingEvent:
    """An event as taken on the caller's thread: cheap to make, built later."""

    event: str
    properties: dict[str, Any] | None
    distinct_id: str | None
    context: ContextState
    timestamp: float | dt.datetime
    #: None until the sender builds the event, unless the caller needed it at once.
    uuid: str | None
    groups: Mapping[str, Any] | None = None
    exception: ExceptionInfo | None = None


@dataclass(slots=True)  # not frozen: a frozen dataclass is slow to make, one per event
class BuiltEvent:
    """An event ready for the wire: its uuid and its JSON bytes."""

    uuid: str
    payload: bytes


def pending_exception(
    exception: BaseException | None,
    info: ExceptionInfo,
    properties: dict[str, Any] | None = None,
    *,
    distinct_id: Any = None,
    timestamp: float | None = None,
    context: ContextState | None = None,
) -> PendingEvent | None:
    """An ``$exception`` event for ``exception``, caught as ``info`` says, taken here on
    the caller's thread (now, in the current context, unless ``timestamp`` and
    ``context`` say otherwise); None when there is nothing to send.

    With ``exception`` given, it is marked captured (None if it already was: one
    exception object is sent once) and its chain snapshotted; with None, ``info.chain``
    (a snapshot taken earlier) is sent, and an empty chain means nothing is.
    """
    if exception is not None:
        if not mark_captured(exception):
            return None
        info = dataclasses.replace(info, chain=snapshot_exception(exception))
    if not info.chain:
        return None
    if timestamp is None:
        timestamp = time.time()
    if context is None:
        context = current_state()
    return PendingEvent("$exception", properties, distinct_id, context, timestamp, None, None, info)


class DroppedEvent(Exception):
    """Raised by :meth:`EventBuilder.build` when an event must not be sent."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _library_defaults() -> dict[str, Any]:
    return {
        "$python_version": platform.python_version(),
        "$python_runtime": platform.python_implementation(),
        "$os": {"darwin": "Mac OS X", "win32": "Windows", "linux": "Linux"}.get(
            sys.platform, platform.system()
        ),
        "$os_version": platform.release(),
        "$geoip_disable": True,
    }


_IMMUTABLE_SCALARS = frozenset({str, int, float, bool, type(None)})

_PLACEHOLDER_IDS = frozenset(
    {
        "null",
        "undefined",
        "none",
        "nil",
        "anonymous",
        "guest",
        "0",
        "nan",
        "[object object]",
        "distinct_id",
        "distinctid",
        "id",
        "not_authenticated",
        "true",
        "false",
    }
)


class EventBuilder:
    """Turns a :class:`PendingEvent` into wire-ready JSON. Runs on the sender thread."""

    def __init__(
        self,
        *,
        super_properties: Mapping[str, Any] | None = None,
        redactor: Redactor | None = None,
        before_send: BeforeSend | None = None,
        in_app: InAppRules | None = None,
        on_collision: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self._defaults = _library_defaults()
        self._super = dict(super_properties or {})
        self._redactor = redactor or Redactor(())
        self._before_send = before_send
        self._in_app = in_app or InAppRules()
        self._warner = Warner(interval=None)  # once per name or id, for good
        # The layers that are the same for every event, made JSON-safe once, and as
        # JSON text (the members, without braces) to splice into each event; with them
        # what the library owns, which only the slow path has to put last.
        self._collisions: list[str] = []  # keys given twice in what is being built
        self._on_collision = on_collision
        self._constant = to_jsonable(
            {**self._defaults, **self._super}, redactor=self._redactor, collisions=self._collisions
        )
        self._report_collisions("super_properties")
        owned = {"$lib": LIB_NAME, "$lib_version": __version__, "$is_server": True}
        self._constant_keys = frozenset(self._constant) | owned.keys()
        self._constant_json = dumps_text({**self._constant, **owned})[1:-1]
        self._last_context: tuple[ContextState | None, dict[str, Any], str | None] = (
            None,
            {},
            "",
        )
        self._last_overridden: tuple[ContextState | None, frozenset[str], str] = (
            None,
            frozenset(),
            "",
        )
        self._last_head: tuple[Any, Any, str, tuple[str, str, dict[str, Any]]] = (
            None,
            None,
            "",
            ("", "", {}),
        )
        self._last_tags: tuple[Mapping[str, Any], dict[str, Any]] | None = None
        self._last_distinct_id: tuple[str | None, str] = (None, "")

    def build(self, pending: PendingEvent) -> BuiltEvent:
        """Build the event; raise :class:`DroppedEvent` if it must not be sent."""
        try:
            return self._build(pending)
        finally:
            if self._collisions:
                self._report_collisions(f"event {pending.event!r}")

    def _report_collisions(self, where: str) -> None:
        """Keys given twice (``1`` and ``"1"``) in what was just built: say so."""
        keys, self._collisions[:] = sorted(set(self._collisions)), []
        if keys and self._on_collision is not None:
            self._on_collision(where, keys)

    def _build(self, pending: PendingEvent) -> BuiltEvent:
        if self._before_send is None and pending.exception is None:
            built = self._build_fast(pending)
            if built is not None:
                return built
        data = self.to_dict(pending)
        if self._before_send is not None:
            data = self._apply_before_send(data)
        payload = self._serialise(data)
        return BuiltEvent(uuid=str(data["uuid"]), payload=payload)

    def _build_fast(self, pending: PendingEvent) -> BuiltEvent | None:
        """The JSON of :meth:`to_dict`, spliced from text made once (the constant layers),
        once per context and name (the start of the event, up to its own properties),
        and the event's own properties.

        None when the general path is needed: a property that overrides a constant one
        (the general path applies the precedence), or an event too large (which
        :meth:`_serialise` knows how to shrink).
        """
        uuid = pending.uuid
        if uuid is None:
            uuid = pending.uuid = uuid7(
                pending.timestamp if type(pending.timestamp) is float else None
            )
        props = pending.properties
        head = self._head(pending) if pending.groups is None else None
        if head is None:
            return self._build_spliced(pending, uuid)
        start, context_json, context_members = head
        if props:
            own = plain_json(props, self._redactor)
            keys = props.keys()
            if own is None or not keys.isdisjoint(self._constant_keys):
                return self._build_spliced(pending, uuid)
            if not keys.isdisjoint(context_members):  # the event's own values win
                context_json = self._context_json_without(pending.context, context_members, keys)
            parts: tuple[str, ...] = (start, context_json, ",", own[1:-1])
        else:
            parts = (start, context_json)
        end = ('},"timestamp":"', format_timestamp(pending.timestamp), '","uuid":"', uuid, '"}')
        payload = "".join(parts + end).encode("utf-8", "replace")
        if len(payload) > MAX_EVENT_BYTES:
            return None
        return BuiltEvent(uuid=uuid, payload=payload)

    def _head(self, pending: PendingEvent) -> tuple[str, str, dict[str, Any]] | None:
        """An identified event's JSON up to its context's members, those members as JSON
        (see :meth:`_context_json`) and as a dict; None for a personless event or a tag
        that overrides a constant property. A run of events of one name in one context
        shares them: the last are remembered."""
        context, name, explicit = pending.context, pending.event, pending.distinct_id
        last = self._last_head
        if last[0] is context and last[1] is explicit and last[2] == name:
            return last[3]
        context_members, context_json = self._context_json(context)
        distinct_id = choose_distinct_id(explicit, context)
        if context_json is None or distinct_id is None:
            return None
        start = "".join(
            (
                '{"event":',
                quote(self._checked_name(name)),
                ',"distinct_id":',
                quote(self._checked_distinct_id(distinct_id)),
                ',"properties":{',
                self._constant_json,
            )
        )
        head = (start, context_json, context_members)
        if self._last_context[0] is context and (explicit is None or type(explicit) is str):
            self._last_head = (context, explicit, name, head)
        return head

    def _build_spliced(self, pending: PendingEvent, uuid: str) -> BuiltEvent | None:
        """:meth:`_build_fast` for the events it does not take the short way: personless
        ones, with groups, or with properties to convert or overriding the context's."""
        context = pending.context
        context_members, context_json = self._context_json(context)
        if context_json is None:
            return None
        props = pending.properties
        own = (
            to_jsonable(props, redactor=self._redactor, collisions=self._collisions)
            if props
            else {}
        )
        distinct_id = choose_distinct_id(pending.distinct_id, context)
        if pending.groups:
            own["$groups"] = to_jsonable(
                pending.groups, redactor=self._redactor, collisions=self._collisions
            )
        if distinct_id is None:
            distinct_id = uuid
            own["$process_person_profile"] = False
        else:
            distinct_id = self._checked_distinct_id(distinct_id)
        if own:
            keys = own.keys()
            if not keys.isdisjoint(self._constant_keys):
                return None
            if not keys.isdisjoint(context_members):  # the event's own values win
                context_json = self._context_json_without(context, context_members, keys)
        parts = ['{"event":', quote(self._checked_name(pending.event)), ',"distinct_id":']
        parts += (quote(distinct_id), ',"properties":{', self._constant_json, context_json)
        if own:
            parts += (",", dumps_text(own)[1:-1])
        parts += ('},"timestamp":"', format_timestamp(pending.timestamp), '","uuid":"', uuid, '"}')
        payload = "".join(parts).encode("utf-8", "replace")
        if len(payload) > MAX_EVENT_BYTES:
            return None
        return BuiltEvent(uuid=uuid, payload=payload)

    def _context_json(self, context: ContextState) -> tuple[dict[str, Any], str | None]:
        """The context's tags and session id, JSON-safe, and as JSON members with a
        leading comma (None when a tag overrides a constant property). The events of
        one context share its state: the last one is remembered, when its values are
        scalars that cannot change."""
        last = self._last_context
        if last[0] is context:
            return last[1], last[2]
        tags, session_id = context.tags, context.session_id
        members: dict[str, Any] = to_jsonable(tags, redactor=self._redactor) if tags else {}
        if session_id:
            members["$session_id"] = session_id
        text: str | None = ""
        if not members.keys().isdisjoint(self._constant_keys):
            text = None
        elif members:
            text = "," + dumps_text(members)[1:-1]
        if all(type(v) in _IMMUTABLE_SCALARS for v in tags.values()):
            self._last_context = (context, members, text)
        return members, text

    def _context_json_without(
        self, context: ContextState, members: dict[str, Any], keys: Any
    ) -> str:
        """The context's members less those the event sets itself (remembered, as the
        events of one call site set the same keys)."""
        overridden = frozenset(keys & members.keys())
        last = self._last_overridden
        if last[0] is context and last[1] == overridden:
            return last[2]
        rest = {k: v for k, v in members.items() if k not in overridden}
        text = "," + dumps_text(rest)[1:-1] if rest else ""
        if self._last_context[0] is context:  # only a remembered context is remembered
            self._last_overridden = (context, overridden, text)
        return text

    def to_dict(
        self, pending: PendingEvent, string_limit: int = MAX_STRING_LENGTH
    ) -> dict[str, Any]:
        """The event as the JSON-safe dict that goes on the wire."""
        if pending.uuid is None:
            pending.uuid = uuid7(pending.timestamp if type(pending.timestamp) is float else None)
        props, distinct_id = self._own_layers(pending, string_limit)
        if string_limit == MAX_STRING_LENGTH:
            clean = {**self._constant, **props}
        else:
            constant = to_jsonable(self._constant, max_string_length=string_limit)
            clean = {**constant, **props}
        return {
            "event": self._checked_name(pending.event),
            "distinct_id": distinct_id,
            "properties": clean,
            "timestamp": format_timestamp(pending.timestamp),
            "uuid": pending.uuid,
        }

    def _own_layers(
        self, pending: PendingEvent, string_limit: int = MAX_STRING_LENGTH
    ) -> tuple[dict[str, Any], str]:
        """The event's own properties (all layers but the constant ones), JSON-safe, and
        its distinct_id."""
        assert pending.uuid is not None
        context = pending.context
        tags = context.tags
        props = pending.properties
        if tags:
            clean = self._clean_tags(tags, string_limit)
            if context.session_id:
                clean["$session_id"] = context.session_id
            if props:
                clean.update(self._clean(props, string_limit))
        else:
            clean = self._clean(props, string_limit) if props else {}
            if context.session_id and (not props or "$session_id" not in props):
                clean["$session_id"] = context.session_id

        distinct_id = choose_distinct_id(pending.distinct_id, context)
        clean["$lib"] = LIB_NAME
        clean["$lib_version"] = __version__
        clean["$is_server"] = True
        if pending.groups:
            clean["$groups"] = self._clean(pending.groups, string_limit)
        if distinct_id is None:
            distinct_id = pending.uuid
            clean["$process_person_profile"] = False
        else:
            distinct_id = self._checked_distinct_id(distinct_id)
        exc = pending.exception
        if exc is not None:
            clean["$exception_list"] = build_exception_list(
                exc.chain,
                mechanism_type=exc.mechanism_type,
                handled=exc.handled,
                in_app=self._in_app,
            )
            if exc.level is not None:
                clean["$exception_level"] = exc.level
            if exc.source is not None:
                clean["$exception_source"] = exc.source
        return clean, distinct_id

    def _clean(self, value: Mapping[str, Any], string_limit: int) -> dict[str, Any]:
        clean: dict[str, Any] = to_jsonable(
            value,
            redactor=self._redactor,
            max_string_length=string_limit,
            collisions=self._collisions,
        )
        return clean

    def _clean_tags(self, tags: Mapping[str, Any], string_limit: int) -> dict[str, Any]:
        """The context's tags, JSON-safe: the events of one context share one tags
        mapping, so the last one is remembered (when its values cannot change)."""
        last = self._last_tags
        if last is not None and last[0] is tags and string_limit == MAX_STRING_LENGTH:
            return dict(last[1])
        clean = self._clean(tags, string_limit)
        if string_limit == MAX_STRING_LENGTH and all(
            type(v) in _IMMUTABLE_SCALARS for v in tags.values()
        ):
            self._last_tags = (tags, clean)
            return dict(clean)
        return clean

    def _apply_before_send(self, data: dict[str, Any]) -> dict[str, Any]:
        assert self._before_send is not None
        try:
            result = self._before_send(data)
        except Exception as exc:
            raise DroppedEvent(
                "before_send_error", f"before_send raised {type(exc).__name__}: {exc}"
            ) from None
        if result is None:
            raise DroppedEvent("before_send", "before_send returned None")
        if not isinstance(result, dict) or not isinstance(result.get("event"), str):
            raise DroppedEvent(
                "before_send_error", "before_send must return the event dict or None"
            )
        distinct_id = result.get("distinct_id")
        if isinstance(distinct_id, (int, float)) and not isinstance(distinct_id, bool):
            result["distinct_id"] = distinct_id = str(distinct_id)
        if not result["event"] or not distinct_id or not isinstance(distinct_id, str):
            raise DroppedEvent(
                "before_send_error",
                "before_send returned an event without a name or a string distinct_id",
            )
        if not isinstance(result.get("properties"), dict):
            result["properties"] = {}
        if not isinstance(result.get("timestamp"), str):
            result["timestamp"] = data["timestamp"]
        result["uuid"] = data["uuid"]  # the uuid is fixed at creation, whatever happens
        return result

    def _serialise(self, data: dict[str, Any]) -> bytes:
        try:
            payload = dumps(data)
        except (TypeError, ValueError, RecursionError):  # before_send put something odd in
            data = to_jsonable(data)
            payload = dumps(data)
        if len(payload) <= MAX_EVENT_BYTES:
            return payload
        # Too big: cut long strings harder, then trim stack frames, before giving up.
        shrunk = to_jsonable(data, max_string_length=1024)
        payload = dumps(shrunk)
        if len(payload) <= MAX_EVENT_BYTES:
            return payload
        exceptions = shrunk.get("properties", {}).get("$exception_list")
        if isinstance(exceptions, list):
            del exceptions[8:]
            for entry in exceptions:
                frames = entry.get("stacktrace", {}).get("frames", [])
                del frames[: max(0, len(frames) - 10)]  # keep the 10 nearest the raise site
                for frame in frames:
                    frame.pop("pre_context", None)
                    frame.pop("post_context", None)
            payload = dumps(shrunk)
            if len(payload) <= MAX_EVENT_BYTES:
                return payload
        raise DroppedEvent(
            "too_large",
            f"event {data.get('event')!r} is {len(payload)} bytes serialised, over PostHog's "
            f"limit of about 1 MB even with long strings cut",
        )

    def _checked_name(self, name: str) -> str:
        if len(name) > MAX_NAME_LENGTH:
            self._warner.warn(
                "name:" + name[:50],
                "event name %r... is over %d chars; truncated",
                name[:50],
                MAX_NAME_LENGTH,
            )
            return name[:MAX_NAME_LENGTH]
        return name

    def _checked_distinct_id(self, distinct_id: str) -> str:
        last = self._last_distinct_id
        if last[0] is distinct_id:  # the same person's events, one after another
            return last[1]
        checked = self._check_distinct_id(distinct_id)
        self._last_distinct_id = (distinct_id, checked)
        return checked

    def _check_distinct_id(self, distinct_id: str) -> str:
        if distinct_id.strip().lower() in _PLACEHOLDER_IDS:
            self._warner.warn(
                "id:" + distinct_id,
                "distinct_id %r looks like a placeholder; PostHog will not make a person of it",
                distinct_id,
            )
        if len(distinct_id) > MAX_NAME_LENGTH:
            self._warner.warn("idlen", "a distinct_id is over %d chars; truncated", MAX_NAME_LENGTH)
            return distinct_id[:MAX_NAME_LENGTH]
        return distinct_id
