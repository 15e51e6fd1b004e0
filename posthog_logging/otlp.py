"""Log lines for PostHog Logs, as OpenTelemetry log records (OTLP/HTTP, JSON encoding).

As with events, the work is split in two:

- :class:`PendingLog` is what the caller's thread records: the time, the level, the
  message (formatted there, since the arguments may change afterwards), the attributes
  the entry carries, where it was logged, the context, and an exception's snapshot.
- :class:`LogBuilder` turns it into one ``LogRecord`` in OTLP's JSON encoding on the
  sender thread. Delivery wraps records in an ``ExportLogsServiceRequest`` with the
  resource (``service.name`` and the library) that PostHog Logs groups by: see
  :data:`posthog_logging.delivery.kinds.LOGS`.

The context reaches each line as the attributes PostHog reads: ``posthogDistinctId``
links it to a person, ``sessionId`` to a session replay; the context's tags become
attributes of their own. OTLP's JSON encoding has its own rules, kept here: 64-bit
integers as strings, trace and span ids as hex, values typed (``stringValue``,
``intValue``, ``doubleValue``, ``boolValue``, ``arrayValue``, ``kvlistValue``).
"""

from __future__ import annotations

import linecache
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .contexts import ContextState
from .error_tracking import ExceptionSnapshot
from .levels import severity_number
from .serialisation import MAX_STRING_LENGTH, Redactor, dumps, jsonable_mapping

__all__ = ["LogBuilder", "PendingLog", "any_value", "format_stacktrace"]

#: One line is cut to fit, well inside a batch.
MAX_LOG_BODY_LENGTH = 65_536


@dataclass(slots=True)
class PendingLog:
    """A log line as taken on the caller's thread: cheap to make, built later."""

    time: float
    levelno: int
    level_name: str
    body: str
    attributes: dict[str, Any] | None
    logger_name: str | None
    context: ContextState
    code: tuple[str, int, str] | None = None  # file path, line, function
    thread: tuple[int | None, str | None] | None = None
    trace: tuple[str, str, int] | None = None
    exception: tuple[ExceptionSnapshot, ...] | None = None


class LogBuilder:
    """Turns a :class:`PendingLog` into one OTLP ``LogRecord``, JSON text as bytes."""

    def __init__(
        self,
        redactor: Redactor | None = None,
        on_collision: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self._redactor = redactor or Redactor(())
        self._on_collision = on_collision

    def build(self, pending: PendingLog) -> bytes:
        """The line as one ``LogRecord`` in OTLP's JSON encoding, UTF-8. Attribute values
        of any type are made JSON-safe first (:func:`to_jsonable`), secrets filtered."""
        nanos = str(int(pending.time * 1e9))
        body = pending.body
        if len(body) > MAX_LOG_BODY_LENGTH:
            body = body[:MAX_LOG_BODY_LENGTH] + f"...[truncated {len(body) - MAX_LOG_BODY_LENGTH}]"
        record: dict[str, Any] = {
            "timeUnixNano": nanos,
            "observedTimeUnixNano": nanos,
            "severityNumber": severity_number(pending.levelno),
            "severityText": pending.level_name,
            "body": {"stringValue": body},
            "attributes": self._attributes(pending),
        }
        if pending.trace is not None:
            record["traceId"], record["spanId"], record["flags"] = pending.trace
        return dumps(record)

    def _attributes(self, pending: PendingLog) -> list[dict[str, Any]]:
        """The line's attributes, lowest precedence first: the context's tags, the
        entry's own, then what the library owns (person, session, where it was logged,
        the exception), each made JSON-safe."""
        context = pending.context
        collisions: list[str] = []
        attributes: dict[str, Any] = {}
        if context.tags:
            attributes.update(jsonable_mapping(context.tags, self._redactor, collisions))
        if pending.attributes:
            attributes.update(jsonable_mapping(pending.attributes, self._redactor, collisions))
        if context.distinct_id:
            attributes["posthogDistinctId"] = context.distinct_id
        if context.session_id:
            attributes["sessionId"] = context.session_id
        if pending.logger_name is not None:
            attributes["logger.name"] = pending.logger_name
        if pending.code is not None:
            path, line, function = pending.code
            attributes["code.filepath"] = path
            attributes["code.lineno"] = line
            attributes["code.function"] = function
        if pending.thread is not None:
            thread_id, thread_name = pending.thread
            if thread_id is not None:
                attributes["thread.id"] = thread_id
            if thread_name is not None:
                attributes["thread.name"] = thread_name
        if pending.exception:
            first = pending.exception[0]
            qualified = f"{first.module}.{first.type}" if first.module else first.type
            attributes["exception.type"] = qualified
            attributes["exception.message"] = first.value
            attributes["exception.stacktrace"] = format_stacktrace(pending.exception)
        if collisions and self._on_collision is not None:
            self._on_collision("a log line", sorted(set(collisions)))
        return [{"key": key, "value": any_value(value)} for key, value in attributes.items()]


def any_value(value: Any) -> dict[str, Any]:
    """A JSON-safe value (from :func:`to_jsonable`) as OTLP's ``AnyValue``."""
    cls = type(value)
    if cls is str:
        return {"stringValue": value}
    if cls is int:
        if -(2**63) <= value < 2**63:
            return {"intValue": str(value)}  # int64 travels as a string in OTLP JSON
        return {"stringValue": str(value)}
    if cls is float:
        return {"doubleValue": value}
    if cls is bool:
        return {"boolValue": value}
    if value is None:
        return {}  # an empty AnyValue
    if isinstance(value, Mapping):
        return {
            "kvlistValue": {"values": [{"key": k, "value": any_value(v)} for k, v in value.items()]}
        }
    if isinstance(value, Sequence) and not isinstance(value, str):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def format_stacktrace(chain: Sequence[ExceptionSnapshot]) -> str:
    """The chain as Python prints it (root cause first), from its snapshot."""
    by_id = {snapshot.exception_id: snapshot for snapshot in chain}
    blocks: list[str] = []
    current: ExceptionSnapshot | None = chain[0] if chain else None
    ordered: list[ExceptionSnapshot] = []
    while current is not None and current not in ordered:  # caught first, cause last
        ordered.append(current)
        current = next((s for s in chain if s.parent_id == current.exception_id), None)
    for snapshot in reversed(ordered):
        lines = ["Traceback (most recent call last):\n"]
        for frame in snapshot.frames:
            lines.append(f'  File "{frame.abs_path}", line {frame.lineno}, in {frame.function}\n')
            source = linecache.getline(frame.abs_path, frame.lineno).strip()
            if source:
                lines.append(f"    {source}\n")
        name = f"{snapshot.module}.{snapshot.type}" if snapshot.module else snapshot.type
        lines.append(f"{name}: {snapshot.value}\n" if snapshot.value else f"{name}\n")
        parent = by_id.get(snapshot.parent_id) if snapshot.parent_id is not None else None
        if parent is not None:
            lines.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
                if snapshot.source == "cause"
                else "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
        blocks.append("".join(lines))
    text = "".join(blocks)
    return text if len(text) <= MAX_STRING_LENGTH else text[-MAX_STRING_LENGTH:]
