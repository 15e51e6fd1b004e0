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
3. the context's tags, and ``$context_tags``: their names, as the official SDK sends them;
4. ``$session_id`` from the context, ``$trace_id``/``$span_id`` from the active
   OpenTelemetry span, an exception's ``$exception_fingerprint`` and ``$exception_steps``;
5. the properties given to the call (a ``$session_id`` given here wins over the context's);
6. what the library owns and no one overrides: ``$lib``, ``$lib_version``, ``$is_server``,
   ``$groups`` from the ``groups`` argument, ``$process_person_profile: false`` for
   personless events, and ``$exception_list``/``$exception_level``/``$exception_source``.

The distinct_id is the explicit one, else the context's, else a generated one for a
personless event (:func:`choose_distinct_id`).
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._version import __version__
from .contexts import ContextState
from .diagnostics import Warner
from .error_tracking import ExceptionSnapshot, InAppRules, build_exception_list
from .ids import format_timestamp, uuid7
from .serialisation import Redactor, as_text, dumps, jsonable_mapping, to_jsonable
from .steps import DEFAULT_MAX_BYTES, Step
from .wire import MAX_EVENT_BYTES

__all__ = [
    "LIB_NAME",
    "MAX_EVENT_BYTES",
    "DroppedEvent",
    "EventBuilder",
    "ExceptionInfo",
    "PendingEvent",
    "choose_distinct_id",
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
    """What an ``$exception`` event needs beyond a plain event: how it was caught (the
    mechanism, ``$exception_level``, ``$exception_source``), and once taken, the chain,
    the fingerprint of a synthetic one and the steps that led to it."""

    chain: tuple[ExceptionSnapshot, ...] = ()
    mechanism_type: str = "generic"
    handled: bool | None = None
    level: str | None = None
    source: str | None = None
    fingerprint: str | None = None
    steps: tuple[Step, ...] = ()


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
    #: The OpenTelemetry span it was made in: trace id, span id, flags (hex).
    trace: tuple[str, str, int] | None = None


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
    """Turns a :class:`PendingEvent` into wire-ready JSON. Runs on the sender thread.

    :meth:`to_dict` is the one place the precedence of the module's docstring is
    written down; :meth:`build` encodes what it makes in one call to the JSON encoder.
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
        #: Library defaults under super_properties: the same for every event, made
        #: JSON-safe once.
        self._constant = dict(self._safe({**_library_defaults(), **dict(super_properties or {})}))
        self._report_collisions("super_properties")
        self._owned = {"$lib": LIB_NAME, "$lib_version": __version__, "$is_server": True}

    def build(self, pending: PendingEvent) -> bytes:
        """The event as JSON bytes; raise :class:`DroppedEvent` if it must not be sent."""
        try:
            data = self.to_dict(pending)
            if self._before_send is not None:
                data = self._apply_before_send(data)
            return self._encode(data)
        finally:
            if self._collisions:
                self._report_collisions(f"event {pending.event!r}")

    def to_dict(self, pending: PendingEvent) -> dict[str, Any]:
        """The event as the JSON-safe dict that goes on the wire. Its properties, lowest
        precedence first (a later one overwrites an earlier one of the same key):

        1. library defaults (Python and OS versions, ``$geoip_disable``) and the client's
           ``super_properties``;
        2. the context's tags, then its ``$session_id``;
        3. the properties given to the call;
        4. what the library owns: ``$lib``, ``$lib_version``, ``$is_server``, ``$groups``,
           ``$process_person_profile: false`` for a personless event, the exception's.
        """
        uuid = pending.uuid
        if uuid is None:  # made here, for the events whose caller did not need it at once
            timestamp = pending.timestamp
            uuid = pending.uuid = uuid7(timestamp if type(timestamp) is float else None)
        context = pending.context
        properties = self._constant.copy()
        if context.tags:
            properties.update(self._safe(context.tags))
            # The names of the tags it got from its context, as the official SDK sends them.
            properties["$context_tags"] = list(context.tags)
        if context.session_id:
            properties["$session_id"] = context.session_id
        given = pending.properties
        if pending.trace is not None and not (
            given and ("$trace_id" in given or "$span_id" in given)
        ):  # ids given with the call replace the span's, both of them
            properties["$trace_id"], properties["$span_id"], _ = pending.trace
        exception = pending.exception
        if exception is not None:
            if exception.fingerprint:
                properties["$exception_fingerprint"] = exception.fingerprint
            if exception.steps:
                properties["$exception_steps"] = self._steps(exception.steps)
        if pending.properties:
            properties.update(self._safe(pending.properties))
        properties.update(self._owned)
        if pending.groups:
            properties["$groups"] = dict(self._safe(pending.groups))
        distinct_id = choose_distinct_id(pending.distinct_id, context)
        if distinct_id is None:  # personless: its own uuid stands for the person
            properties["$process_person_profile"] = False
            distinct_id = uuid
        else:
            distinct_id = self._checked_distinct_id(distinct_id)
        if exception is not None:
            properties.update(self._exception_properties(exception))
        return {
            "event": self._checked_name(pending.event),
            "distinct_id": distinct_id,
            "properties": properties,
            "timestamp": format_timestamp(pending.timestamp),
            "uuid": uuid,
        }

    def _report_collisions(self, where: str) -> None:
        """Keys given twice (``1`` and ``"1"``) in what was just built: say so."""
        keys, self._collisions[:] = sorted(set(self._collisions)), []
        if keys and self._on_collision is not None:
            self._on_collision(where, keys)

    def _safe(self, properties: Mapping[str, Any]) -> Mapping[str, Any]:
        return jsonable_mapping(properties, self._redactor, self._collisions)

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

    def _steps(self, steps: tuple[Step, ...]) -> list[dict[str, Any]]:
        """``$exception_steps``: each step as PostHog's specification shapes it (its
        properties redacted and made JSON-safe), the oldest left out until the list is
        within the specification's byte limit."""
        out: list[dict[str, Any]] = []
        sizes: list[int] = []
        for step in steps:
            item: dict[str, Any] = dict(self._safe(step.properties)) if step.properties else {}
            item["$message"] = step.message
            item["$timestamp"] = format_timestamp(step.timestamp)
            if step.level is not None:
                item["$level"] = step.level
            if step.logger is not None:
                item["$logger"] = step.logger
            out.append(item)
            sizes.append(len(dumps(item)))
        total = sum(sizes) + len(out) + 1  # the list's brackets and commas too
        first = 0
        while total > DEFAULT_MAX_BYTES and first < len(out):
            total -= sizes[first] + 1
            first += 1
        return out[first:]

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
        # What the hook put in may be anything: made JSON-safe by the usual rules.
        safe: dict[str, Any] = to_jsonable(result)
        return safe

    def _encode(self, data: dict[str, Any]) -> bytes:
        """``data`` as JSON bytes, within PostHog's limit on one event."""
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
