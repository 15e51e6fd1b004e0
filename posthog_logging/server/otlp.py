"""Reading PostHog Logs' requests: an OTLP/HTTP logs export in the JSON encoding.

`read_logs_request` takes the decoded body of a ``POST /i/v1/logs`` and returns its log
records as flat rows for the store, or raises ``ValueError`` naming what is not OTLP:
a record whose severity, ids, time or attributes are not what the schema says. OTLP's
JSON encoding has its own rules, checked here: 64-bit integers as strings (or numbers),
trace and span ids as hex, values typed (``stringValue``, ``intValue``, ``doubleValue``,
``boolValue``, ``arrayValue``, ``kvlistValue``, ``bytesValue``).

The client's side, writing the records, is :mod:`posthog_logging.otlp`.
"""

from __future__ import annotations

import math
from typing import Any

from ..serialisation import to_jsonable

__all__ = ["read_logs_request"]

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
        # Where a fault is is spelt out only when there is one: a request holds
        # thousands of attributes, and a path for each would be most of the work.
        try:
            if not isinstance(item, dict):
                raise ValueError(" is not an object")
            key = item.get("key")
            if not isinstance(key, str):
                raise ValueError(".key is not a string")
            value = item.get("value", {})
            text = value.get("stringValue") if type(value) is dict and len(value) == 1 else None
            # Most attributes are text: taken here, without a call (else as _value says).
            out[key] = text if type(text) is str else _value(value, ".value")
        except ValueError as exc:
            raise ValueError(f"{where}.attributes[{n}]{exc}") from None
    return out


def _value(value: Any, where: str) -> Any:
    """An ``AnyValue`` as plain data. The message of the ``ValueError`` it raises
    begins with ``where``, the value's place relative to what holds it."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not an object")
    if len(value) != 1:
        if not value:
            return None
        raise ValueError(f"{where} has more than one of its fields set")
    ((kind, inner),) = value.items()
    if kind == "stringValue" and type(inner) is str:  # the usual attribute, first
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
    if kind == "stringValue" and isinstance(inner, str):  # a str subclass
        return str(inner)
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
