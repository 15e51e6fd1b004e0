"""Log lines for PostHog Logs, as OpenTelemetry log records (OTLP/HTTP, JSON encoding).

As with events, the work is split in two:

- :class:`PendingLog` is what the caller's thread records: the time, the level, the
  message (formatted there, since the arguments may change afterwards), the attributes
  the entry carries, where it was logged, the context, and an exception's snapshot.
- :class:`LogBuilder` turns it into one ``LogRecord`` in OTLP's JSON encoding on the
  sender thread; :func:`logs_body` wraps records in an ``ExportLogsServiceRequest``
  with the resource (``service.name`` and the library) that PostHog Logs groups by.

The context reaches each line as the attributes PostHog reads: ``posthogDistinctId``
links it to a person, ``sessionId`` to a session replay; the context's tags become
attributes of their own. OTLP's JSON encoding has its own rules, kept here: 64-bit
integers as strings, trace and span ids as hex, values typed (``stringValue``,
``intValue``, ``doubleValue``, ``boolValue``, ``arrayValue``, ``kvlistValue``).
"""

from __future__ import annotations

import json
import linecache
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._version import __version__
from .contexts import ContextState
from .error_tracking import ExceptionSnapshot
from .levels import severity_number
from .serialisation import MAX_STRING_LENGTH, Redactor, dumps_text, to_jsonable

__all__ = [
    "LogBuilder",
    "PendingLog",
    "default_service_name",
    "is_wire_log_record",
    "logs_body",
    "trace_context",
]

SCOPE_NAME = "posthog-logging"
#: PostHog answers 413 past about 2 MB per request: batches of log lines stay under this.
MAX_LOGS_BATCH_BYTES = 1_800_000
#: One line is cut to fit, well inside a batch.
MAX_LOG_BODY_LENGTH = 65_536


def default_service_name() -> str:
    """``$OTEL_SERVICE_NAME`` if set, else the program's name (``app`` for
    ``python app.py``, ``shop`` for ``python -m shop``), else ``unknown_service:python``
    as OpenTelemetry says."""
    if name := os.environ.get("OTEL_SERVICE_NAME", "").strip():
        return name
    path = sys.argv[0] if sys.argv and sys.argv[0] else ""
    program = os.path.basename(path)
    stem = program[:-3] if program.endswith(".py") else program
    if stem == "__main__":  # python -m package: the package
        stem = os.path.basename(os.path.dirname(path))
    if stem and stem not in ("-c", "-m"):
        return stem
    return "unknown_service:python"


def trace_context() -> tuple[str, str, int] | None:
    """The active OpenTelemetry span's trace id, span id and flags (hex), if the
    ``opentelemetry`` API is installed and a span is recording; never required."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # not imported by the application: no span can be active
        return None
    try:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return (
            f"{context.trace_id:032x}",
            f"{context.span_id:016x}",
            int(context.trace_flags),
        )
    except Exception:  # a broken or unexpected OpenTelemetry: no ids rather than no line
        return None


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


def is_wire_log_record(line: bytes) -> bool:
    """Whether ``line`` is a ``LogRecord`` as :class:`LogBuilder` writes it (a spooled
    line is checked again before it is sent: one that is not would sink its batch)."""
    try:
        data = json.loads(line)
    except ValueError:
        return False
    return (
        type(data) is dict
        and isinstance(data.get("timeUnixNano"), str)
        and data["timeUnixNano"].isdigit()
        and type(data.get("severityNumber")) is int
        and isinstance(data.get("body"), dict)
        and isinstance(data.get("attributes"), list)
    )


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
        return dumps_text(record).encode("utf-8", "replace")

    def _attributes(self, pending: PendingLog) -> list[dict[str, Any]]:
        context = pending.context
        attributes: dict[str, Any] = {}
        if context.tags:
            attributes.update(context.tags)
        if pending.attributes:
            attributes.update(pending.attributes)
        # What the library owns, over anything of the same name.
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
        collisions: list[str] = []
        clean = to_jsonable(attributes, redactor=self._redactor, collisions=collisions)
        if collisions and self._on_collision is not None:
            self._on_collision("a log line", sorted(set(collisions)))
        return [{"key": key, "value": any_value(value)} for key, value in clean.items()]


def any_value(value: Any) -> dict[str, Any]:
    """A JSON-safe value (from :func:`to_jsonable`) as OTLP's ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return {"intValue": str(value)}  # int64 travels as a string in OTLP JSON
        return {"stringValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, Mapping):
        return {
            "kvlistValue": {"values": [{"key": k, "value": any_value(v)} for k, v in value.items()]}
        }
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {}  # None: an empty AnyValue


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
                if snapshot.source == "__cause__"
                else "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
        blocks.append("".join(lines))
    text = "".join(blocks)
    return text if len(text) <= MAX_STRING_LENGTH else text[-MAX_STRING_LENGTH:]


def logs_body(records: Sequence[bytes], service_name: str) -> bytes:
    """An ``ExportLogsServiceRequest`` carrying ``records`` (each one LogRecord's JSON)."""
    resource = [
        {"key": "service.name", "value": {"stringValue": service_name}},
        {"key": "telemetry.sdk.name", "value": {"stringValue": SCOPE_NAME}},
        {"key": "telemetry.sdk.version", "value": {"stringValue": __version__}},
        {"key": "telemetry.sdk.language", "value": {"stringValue": "python"}},
    ]
    scope = {"name": SCOPE_NAME, "version": __version__}
    head = (
        '{"resourceLogs":[{"resource":{"attributes":'
        + dumps_text(resource)
        + '},"scopeLogs":[{"scope":'
        + dumps_text(scope)
        + ',"logRecords":['
    )
    return b"".join((head.encode(), b",".join(records), b"]}]}]}"))


# -- reading: what the local server accepts ------------------------------------------------

_HEX_ID = {"traceId": 32, "spanId": 16}


def read_logs_request(payload: Any) -> list[dict[str, Any]]:
    """The log records of an ``ExportLogsServiceRequest`` in OTLP's JSON encoding, each as
    a flat dict (time, severity, body, attributes, resource, ids, and the person and
    session it is linked to). Raises ``ValueError`` naming what is not OTLP."""
    if not isinstance(payload, dict):
        raise ValueError("the body is not a JSON object")
    resource_logs = payload.get("resourceLogs", [])
    if not isinstance(resource_logs, list):
        raise ValueError("'resourceLogs' is not a list")
    rows: list[dict[str, Any]] = []
    for i, resource_log in enumerate(resource_logs):
        where = f"resourceLogs[{i}]"
        resource_log = _object(resource_log, where)
        resource = _object(resource_log.get("resource", {}), f"{where}.resource")
        resource_attributes = _attributes(resource.get("attributes", []), f"{where}.resource")
        scope_logs = resource_log.get("scopeLogs", [])
        if not isinstance(scope_logs, list):
            raise ValueError(f"{where}.scopeLogs is not a list")
        for j, scope_log in enumerate(scope_logs):
            at = f"{where}.scopeLogs[{j}]"
            scope_log = _object(scope_log, at)
            scope = _object(scope_log.get("scope", {}), f"{at}.scope")
            records = scope_log.get("logRecords", [])
            if not isinstance(records, list):
                raise ValueError(f"{at}.logRecords is not a list")
            for k, record in enumerate(records):
                rows.append(
                    _read_record(record, f"{at}.logRecords[{k}]", resource_attributes, scope)
                )
    return rows


def _read_record(
    record: Any, where: str, resource: dict[str, Any], scope: dict[str, Any]
) -> dict[str, Any]:
    record = _object(record, where)
    attributes = _attributes(record.get("attributes", []), where)
    severity = record.get("severityNumber", 0)
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 24:
        raise ValueError(f"{where}.severityNumber is not a severity from 0 to 24")
    text = record.get("severityText", "")
    if not isinstance(text, str):
        raise ValueError(f"{where}.severityText is not a string")
    ids = {}
    for name, length in _HEX_ID.items():
        value = record.get(name, "")
        if not isinstance(value, str) or (
            value
            and (len(value) != length or any(c not in "0123456789abcdefABCDEF" for c in value))
        ):
            raise ValueError(f"{where}.{name} is not {length} hex digits")
        ids[name] = value.lower()
    time_nanos = _uint64(record.get("timeUnixNano", 0), f"{where}.timeUnixNano")
    observed = _uint64(record.get("observedTimeUnixNano", 0), f"{where}.observedTimeUnixNano")
    return {
        "time_unix_nano": time_nanos or observed,
        "severity_number": severity,
        "severity_text": text,
        "body": _value(record.get("body", {}), f"{where}.body"),
        "attributes": attributes,
        "resource": resource,
        "scope": scope.get("name") if isinstance(scope.get("name"), str) else None,
        "trace_id": ids["traceId"],
        "span_id": ids["spanId"],
        "distinct_id": _text_or_none(attributes.get("posthogDistinctId")),
        "session_id": _text_or_none(attributes.get("sessionId")),
        "service_name": _text_or_none(resource.get("service.name")),
    }


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not an object")
    return value


def _uint64(value: Any, where: str) -> int:
    """A fixed64 field: a string of digits in OTLP JSON (a number is accepted too)."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ValueError(f"{where} is not an unsigned 64-bit integer")
    return value


def _attributes(values: Any, where: str) -> dict[str, Any]:
    if not isinstance(values, list):
        raise ValueError(f"{where}.attributes is not a list")
    out: dict[str, Any] = {}
    for n, item in enumerate(values):
        item = _object(item, f"{where}.attributes[{n}]")
        key = item.get("key")
        if not isinstance(key, str):
            raise ValueError(f"{where}.attributes[{n}].key is not a string")
        out[key] = _value(item.get("value", {}), f"{where}.attributes[{n}].value")
    return out


def _value(value: Any, where: str) -> Any:
    """An ``AnyValue`` as plain data."""
    value = _object(value, where)
    if not value:
        return None
    if len(value) != 1:
        raise ValueError(f"{where} has more than one of its fields set")
    ((kind, inner),) = value.items()
    if kind == "stringValue" and isinstance(inner, str):
        return inner
    if kind == "boolValue" and isinstance(inner, bool):
        return inner
    if kind == "intValue":
        if isinstance(inner, str):
            try:
                inner = int(inner)
            except ValueError:
                raise ValueError(f"{where}.intValue is not an integer") from None
        if isinstance(inner, int) and not isinstance(inner, bool) and -(2**63) <= inner < 2**63:
            return inner
        raise ValueError(f"{where}.intValue is not a 64-bit integer")
    if kind == "doubleValue":
        # proto3's JSON mapping: a number, or a string: "NaN", "Infinity", "-Infinity", "1.5"
        if isinstance(inner, str):
            try:
                inner = float(inner)
            except ValueError:
                raise ValueError(f"{where}.doubleValue is not a number") from None
        if isinstance(inner, (int, float)) and not isinstance(inner, bool):
            number = float(inner)
            # stored as JSON, which has no NaN or infinities: those are kept as their text
            return number if math.isfinite(number) else to_jsonable(number)  # "NaN", ...
        raise ValueError(f"{where}.doubleValue is not a number")
    if kind == "arrayValue" and isinstance(inner, dict):
        items = inner.get("values", [])
        if isinstance(items, list):
            return [_value(v, f"{where}.arrayValue.values[{i}]") for i, v in enumerate(items)]
    if kind == "kvlistValue" and isinstance(inner, dict):
        return _attributes(inner.get("values", []), f"{where}.kvlistValue")
    if kind == "bytesValue" and isinstance(inner, str):
        return inner  # base64, kept as sent
    raise ValueError(f"{where} is not an AnyValue ({kind!r})")


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
