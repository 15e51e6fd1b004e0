"""What a batch carries: events, or log records for PostHog Logs.

Delivery knows bytes and a kind. Each :class:`Kind` says, once, everything that differs
between the two: the endpoint, how records are wrapped into a request body (and where
the API key goes), how large a batch may grow, how its records are tagged in the disk
spool, and what one of its records looks like (a spooled line is checked again before it
is sent: one that is not a record of its kind would make the server refuse its batch).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .._version import __version__
from ..ids import format_timestamp
from ..serialisation import dumps
from ..wire import EVENTS_PATH, LOGS_PATH, MAX_BODY_BYTES

__all__ = ["EVENTS", "KINDS", "LOGS", "Kind", "default_service_name", "resource_attributes"]

#: The instrumentation scope and SDK name log records are sent under.
SCOPE_NAME = "posthog-logging"


class Kind:
    """One kind of record. The base class holds what every kind has; each kind
    overrides :meth:`request` (its body and headers) and :meth:`is_record`."""

    def __init__(self, name: str, path: str, max_batch_bytes: int, spool_tag: bytes) -> None:
        self.name = name
        self.path = path
        """Where its batches are posted, on the client's host."""
        self.max_batch_bytes = max_batch_bytes
        """The most a batch of it holds: its records, plus a byte each between them."""
        self.spool_tag = spool_tag
        """What its spooled lines start with (each kind's own, or none)."""

    def __repr__(self) -> str:
        return f"<Kind {self.name}>"

    def request(
        self,
        records: Sequence[bytes],
        *,
        api_key: str,
        service_name: str,
        resource: Mapping[str, str] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The body of a request carrying ``records``, and the headers it needs;
        ``resource``: more attributes of the service that sends them (log records)."""
        raise NotImplementedError

    def is_record(self, line: bytes) -> bool:
        """Whether ``line`` is one record of this kind, as the library writes it."""
        raise NotImplementedError


class _Events(Kind):
    def request(
        self,
        records: Sequence[bytes],
        *,
        api_key: str,
        service_name: str,
        resource: Mapping[str, str] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        # The key travels in the body, as PostHog's capture API expects.
        sent_at = format_timestamp(time.time())  # PostHog corrects clock skew by it
        body = b"".join(
            (
                b'{"api_key":',
                json.dumps(api_key).encode(),
                b',"batch":[',
                b",".join(records),
                b'],"sent_at":"',
                sent_at.encode(),
                b'","historical_migration":false}',
            )
        )
        return body, {}

    def is_record(self, line: bytes) -> bool:
        try:
            data = json.loads(line)
            uuid.UUID(data["uuid"])
        except (ValueError, TypeError, KeyError):
            return False
        return (
            type(data) is dict
            and isinstance(data.get("event"), str)
            and bool(data["event"])
            and isinstance(data.get("distinct_id"), str)
            and bool(data["distinct_id"])
            and isinstance(data.get("properties"), dict)
            and isinstance(data.get("timestamp"), str)
        )


class _Logs(Kind):
    def request(
        self,
        records: Sequence[bytes],
        *,
        api_key: str,
        service_name: str,
        resource: Mapping[str, str] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        # An ExportLogsServiceRequest in OTLP's JSON encoding; the key as OTLP exporters
        # send it, in a header.
        attributes = [
            {"key": "service.name", "value": {"stringValue": service_name}},
            *(
                {"key": key, "value": {"stringValue": value}}
                for key, value in (resource or {}).items()
            ),
            {"key": "telemetry.sdk.name", "value": {"stringValue": SCOPE_NAME}},
            {"key": "telemetry.sdk.version", "value": {"stringValue": __version__}},
            {"key": "telemetry.sdk.language", "value": {"stringValue": "python"}},
        ]
        scope = {"name": SCOPE_NAME, "version": __version__}
        head = (
            b'{"resourceLogs":[{"resource":{"attributes":'
            + dumps(attributes)
            + b'},"scopeLogs":[{"scope":'
            + dumps(scope)
            + b',"logRecords":['
        )
        body = b"".join((head, b",".join(records), b"]}]}]}"))
        return body, {"Authorization": f"Bearer {api_key}"}

    def is_record(self, line: bytes) -> bool:
        try:
            data: Any = json.loads(line)
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


#: Events, posted to ``/batch/``: batches of at most 5 MB, well under PostHog's 20 MB.
EVENTS: Kind = _Events("events", EVENTS_PATH, min(5_000_000, MAX_BODY_BYTES), b"")
#: Log records for PostHog Logs, posted to ``/i/v1/logs``: 1.8 MB, under its 2 MB (the
#: envelope and the resource are added to the records).
LOGS: Kind = _Logs("logs", LOGS_PATH, 1_800_000, b"L")
KINDS: tuple[Kind, ...] = (EVENTS, LOGS)


def default_service_name() -> str:
    """``$OTEL_SERVICE_NAME`` if set, else ``service.name`` in
    ``$OTEL_RESOURCE_ATTRIBUTES``, else the program's name (``app`` for
    ``python app.py``, ``shop`` for ``python -m shop``), else ``unknown_service:python``
    as OpenTelemetry says."""
    if name := os.environ.get("OTEL_SERVICE_NAME", "").strip():
        return name
    if name := _environment_resource().get("service.name", ""):
        return name
    path = sys.argv[0] if sys.argv and sys.argv[0] else ""
    program = os.path.basename(path)
    stem = program[:-3] if program.endswith(".py") else program
    if stem == "__main__":  # python -m package: the package
        stem = os.path.basename(os.path.dirname(path))
    if stem and stem not in ("-c", "-m"):
        return stem
    return "unknown_service:python"


def resource_attributes(
    service_version: str | None = None, environment: str | None = None
) -> dict[str, str]:
    """``service.version`` and ``deployment.environment.name`` for log records: the
    options given, else what ``$OTEL_RESOURCE_ATTRIBUTES`` says (OpenTelemetry's variable,
    ``key=value`` pairs separated by commas; ``deployment.environment``, the older name,
    counts too); absent when neither says."""
    found = _environment_resource()
    out: dict[str, str] = {}
    version = service_version or found.get("service.version")
    if version:
        out["service.version"] = str(version)
    environment = (
        environment
        or found.get("deployment.environment.name")
        or found.get("deployment.environment")
    )
    if environment:
        out["deployment.environment.name"] = str(environment)
    return out


def _environment_resource() -> dict[str, str]:
    """``$OTEL_RESOURCE_ATTRIBUTES`` as a dict (its values percent-decoded); pairs that
    are not ``key=value`` are left out."""
    out: dict[str, str] = {}
    for pair in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        key, value = key.strip(), urllib.parse.unquote(value.strip())
        if sep and key and value:
            out[key] = value
    return out
