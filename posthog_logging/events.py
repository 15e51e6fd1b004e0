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
from collections.abc import Set as AbstractSet
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


class _Layer:
    """The properties one source gives an event, JSON-safe, and as JSON members (the
    text between an object's braces), made once and spliced into each event."""

    __slots__ = ("_without", "clashes", "comma_text", "keys", "members", "text")

    def __init__(self, members: dict[str, Any], text: str | None = None) -> None:
        self.members = members
        self.keys = members.keys()
        self.text = (dumps_text(members)[1:-1] if members else "") if text is None else text
        self.comma_text = "," + self.text if self.text else ""
        self.clashes = True  # sets a key a fixed layer sets too (only context layers say)
        self._without: tuple[frozenset[str], str] = (frozenset(), self.text)

    def text_without(self, later: AbstractSet[str]) -> str:
        """Its members less those a later layer sets, as JSON members (the last answer
        is remembered: the events of one call site override the same keys)."""
        overridden = frozenset(self.keys & later)
        last = self._without
        if last[0] == overridden:
            return last[1]
        rest = {key: value for key, value in self.members.items() if key not in overridden}
        text = dumps_text(rest)[1:-1] if rest else ""
        self._without = (overridden, text)
        return text


_EMPTY_LAYER = _Layer({})


class EventBuilder:
    """Turns a :class:`PendingEvent` into wire-ready JSON. Runs on the sender thread.

    An event's properties come in layers, lowest precedence first (see the module's
    docstring); :meth:`_layers` is the one place that order is written down. JSON is
    spliced from each layer's text, each less the keys a later layer sets; the layers
    that are the same for many events (the constant ones, a context's) are made once.
    """

    def __init__(
        self,
        *,
        super_properties: Mapping[str, Any] | None = None,
        redactor: Redactor | None = None,
        before_send: BeforeSend | None = None,
        in_app: InAppRules | None = None,
        on_collision: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self._redactor = redactor or Redactor(())
        self._before_send = before_send
        self._in_app = in_app or InAppRules()
        self._warner = Warner(interval=None)  # once per name or id, for good
        self._collisions: list[str] = []  # keys given twice in what is being built
        self._on_collision = on_collision
        constant = {**_library_defaults(), **dict(super_properties or {})}
        self._constant = _Layer(self._clean(constant))
        self._report_collisions("super_properties")
        self._owned = _Layer({"$lib": LIB_NAME, "$lib_version": __version__, "$is_server": True})
        self._fixed_keys = frozenset(self._constant.keys) | self._owned.keys
        self._owned_comma_text = "," + self._owned.text
        self._last_context: tuple[ContextState | None, _Layer] = (None, _Layer({}))
        self._last_name_and_person: tuple[str, str, str] = ("", "", "")
        # For a run of one context, person and name: (context, explicit person, name, head).
        self._last_head: tuple[Any, Any, str, str] = (None, None, "", "")
        self._last_distinct_id: tuple[str | None, str] = (None, "")

    def build(self, pending: PendingEvent) -> BuiltEvent:
        """Build the event; raise :class:`DroppedEvent` if it must not be sent."""
        uuid = pending.uuid
        if uuid is None:  # made here, for the events whose caller did not need it at once
            timestamp = pending.timestamp
            uuid = pending.uuid = uuid7(timestamp if type(timestamp) is float else None)
        if self._before_send is None and pending.exception is None:
            properties = self._usual_properties(pending)
            if properties is not None:  # the usual event (plain properties: no collision)
                payload = "".join(
                    (
                        self._last_head[3],
                        properties,
                        '},"timestamp":"',
                        format_timestamp(pending.timestamp),
                        '","uuid":"',
                        uuid,
                        '"}',
                    )
                ).encode("utf-8", "replace")
                if len(payload) <= MAX_EVENT_BYTES:
                    return BuiltEvent(uuid=uuid, payload=payload)
        try:
            return self._build(pending, uuid)
        finally:
            if self._collisions:
                self._report_collisions(f"event {pending.event!r}")

    def _report_collisions(self, where: str) -> None:
        """Keys given twice (``1`` and ``"1"``) in what was just built: say so."""
        keys, self._collisions[:] = sorted(set(self._collisions)), []
        if keys and self._on_collision is not None:
            self._on_collision(where, keys)

    def _build(self, pending: PendingEvent, uuid: str) -> BuiltEvent:
        """Any event but the usual one: with ``before_send`` or an exception, as a dict;
        else spliced from its layers, less what later layers set."""
        if self._before_send is not None or pending.exception is not None:
            data = self.to_dict(pending)
            if self._before_send is not None:
                data = self._apply_before_send(data)
            payload = self._serialise(data)
            return BuiltEvent(uuid=str(data["uuid"]), payload=payload)
        distinct_id, layers = self._layers(pending, uuid)
        parts = (
            self._head(pending.event, distinct_id),
            self._properties_json(layers),
            '},"timestamp":"',
            format_timestamp(pending.timestamp),
            '","uuid":"',
            uuid,
            '"}',
        )
        payload = "".join(parts).encode("utf-8", "replace")
        if len(payload) > MAX_EVENT_BYTES:  # the general way knows how to shrink it
            return BuiltEvent(uuid=uuid, payload=self._serialise(self.to_dict(pending)))
        return BuiltEvent(uuid=uuid, payload=payload)

    def to_dict(self, pending: PendingEvent) -> dict[str, Any]:
        """The event as the JSON-safe dict that goes on the wire."""
        if pending.uuid is None:
            timestamp = pending.timestamp
            pending.uuid = uuid7(timestamp if type(timestamp) is float else None)
        uuid = pending.uuid
        distinct_id, layers = self._layers(pending, uuid)
        properties: dict[str, Any] = {}
        for layer in layers:  # a later layer's value wins
            properties.update(layer.members)
        return {
            "event": self._checked_name(pending.event),
            "distinct_id": distinct_id,
            "properties": properties,
            "timestamp": format_timestamp(pending.timestamp),
            "uuid": uuid,
        }

    def _layers(self, pending: PendingEvent, uuid: str) -> tuple[str, tuple[_Layer, ...]]:
        """Whose event it is, and its properties' layers, lowest precedence first:

        1. library defaults (Python and OS versions, ``$geoip_disable``) and the client's
           ``super_properties``;
        2. the context's tags, then its ``$session_id``;
        3. the properties given to the call;
        4. what the library owns: ``$lib``, ``$lib_version``, ``$is_server``, ``$groups``,
           ``$process_person_profile: false`` for a personless event, the exception's.
        """
        distinct_id = choose_distinct_id(pending.distinct_id, pending.context)
        owned = self._owned
        if distinct_id is None or pending.groups or pending.exception is not None:
            extra: dict[str, Any] = {}
            if pending.groups:
                extra["$groups"] = self._clean(pending.groups)
            if distinct_id is None:
                extra["$process_person_profile"] = False
            if pending.exception is not None:
                extra.update(self._exception_properties(pending.exception))
            owned = _Layer({**owned.members, **extra})
        checked = uuid if distinct_id is None else self._checked_distinct_id(distinct_id)
        layers = (
            self._constant,
            self._context_layer(pending.context),
            self._own_layer(pending.properties),
            owned,
        )
        return checked, layers

    def _usual_properties(self, pending: PendingEvent) -> str | None:
        """The properties as JSON members for the usual event, spliced from the layers
        (see :meth:`_layers`) without making them: identified, no groups, flat plain
        properties that set nothing the fixed layers (the constant and the library's)
        set. Its own properties may override its context's tags: the context's text is
        then the one less those keys (remembered), as in :meth:`_properties_json`. None
        for any other event (and then ``_last_head`` is not this event's)."""
        context, explicit, name = pending.context, pending.distinct_id, pending.event
        if pending.groups:
            return None
        last = self._last_head
        if not (last[0] is context and last[1] is explicit and last[2] == name):
            distinct_id = choose_distinct_id(explicit, context)
            if distinct_id is None:
                return None
            head = self._head(name, self._checked_distinct_id(distinct_id))
            # Remembered by identity only for what cannot change: a str (or no) person.
            self._last_head = (context, explicit, name, head)
            if explicit is not None and type(explicit) is not str:
                self._last_head = (None, None, "", head)
        last_context = self._last_context  # _context_layer's memory, read here: hot path
        layer = last_context[1] if last_context[0] is context else self._context_layer(context)
        if layer.clashes:
            return None
        props = pending.properties
        if not props:
            return self._constant.text + layer.comma_text + self._owned_comma_text
        own = plain_json(props, self._redactor)
        keys = props.keys()
        if own is None or not keys.isdisjoint(self._fixed_keys):
            return None
        context_text = layer.comma_text
        if not keys.isdisjoint(layer.keys):  # the event's own values win over the tags'
            context_text = layer.text_without(keys)
            context_text = "," + context_text if context_text else ""
        if len(own) == 2:  # {}
            return self._constant.text + context_text + self._owned_comma_text
        return "".join((self._constant.text, context_text, ",", own[1:-1], self._owned_comma_text))

    def _properties_json(self, layers: tuple[_Layer, ...]) -> str:
        """The properties as JSON members: each layer's, less what a later layer sets."""
        constant, context, own, owned = layers
        if (
            owned is self._owned
            and not context.clashes
            and own.keys.isdisjoint(self._fixed_keys)
            and own.keys.isdisjoint(context.keys)
        ):  # the usual event: no layer sets what another does
            parts: tuple[str, ...] = (constant.text, context.text, own.text, owned.text)
        else:
            later: set[str] = set()
            texts = []
            for layer in reversed(layers):
                texts.append(layer.text_without(later) if later else layer.text)
                later.update(layer.keys)
            parts = tuple(reversed(texts))
        return ",".join(part for part in parts if part)

    def _context_layer(self, context: ContextState) -> _Layer:
        """The context's tags and session id. The events of one context share its
        state: the last one is remembered, when its values are scalars that cannot
        change."""
        last = self._last_context
        if last[0] is context:
            return last[1]
        tags = context.tags
        members = self._clean(tags) if tags else {}
        if context.session_id:
            members["$session_id"] = context.session_id
        layer = _Layer(members)
        layer.clashes = not layer.keys.isdisjoint(self._fixed_keys)
        if all(type(value) in _IMMUTABLE_SCALARS for value in tags.values()):
            self._last_context = (context, layer)
        return layer

    def _own_layer(self, properties: dict[str, Any] | None) -> _Layer:
        """The call's own properties: flat ones of plain values as they are (no copy),
        the others made JSON-safe."""
        if not properties:
            return _EMPTY_LAYER
        text = plain_json(properties, self._redactor)
        if text is not None:
            return _Layer(properties, text[1:-1])
        return _Layer(self._clean(properties))

    def _head(self, name: str, distinct_id: str) -> str:
        """The event's JSON up to its properties (the last one is remembered: events
        come in runs of one name and person)."""
        last = self._last_name_and_person
        if last[0] == name and last[1] == distinct_id:
            return last[2]
        head = "".join(
            (
                '{"event":',
                quote(self._checked_name(name)),
                ',"distinct_id":',
                quote(distinct_id),
                ',"properties":{',
            )
        )
        self._last_name_and_person = (name, distinct_id, head)
        return head

    def _exception_properties(self, exc: ExceptionInfo) -> dict[str, Any]:
        properties: dict[str, Any] = {
            "$exception_list": build_exception_list(
                exc.chain,
                mechanism_type=exc.mechanism_type,
                handled=exc.handled,
                in_app=self._in_app,
            )
        }
        if exc.level is not None:
            properties["$exception_level"] = exc.level
        if exc.source is not None:
            properties["$exception_source"] = exc.source
        return properties

    def _clean(self, value: Mapping[str, Any]) -> dict[str, Any]:
        clean: dict[str, Any] = to_jsonable(
            value, redactor=self._redactor, collisions=self._collisions
        )
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
