"""A small PostHog-compatible capture server for local development, demos and tests.

`LocalServer` answers the routes PostHog's SDKs post events to (``/batch``, ``/capture``,
``/e``, ``/track``, ``/i/v0/e``, ``/engage``) and validates each request the way PostHog's
capture service does, with the same status codes: 400 for a malformed body or event (the whole
request is refused), 401 for a missing or malformed project key, 413 for a body over 20 MB or an
event over 1 MB. It is deliberately simple and strict, so that a client that works against it
works against PostHog: there is no ingestion pipeline behind it and no person processing.

Accepted events go to an `EventStore`, a SQLite file in the data directory, deduplicated on
their ``uuid`` as PostHog does. The API key is checked, never stored and never logged::

    with LocalServer(data_dir=tmp_path) as server:
        requests.post(f"{server.url}/batch/", json={"api_key": "phc_...", "batch": [...]})
        [event] = server.wait_for_events(1, event="$exception")

For delivery tests it can also misbehave on cue: `LocalServer.inject` scripts faults (an
error status, a slow or held answer, a dropped connection) for the next capture requests, and
`LocalServer.down` / `LocalServer.up` take the port away and bring it back::

    server.inject(Fault(status=503), Fault(status=429, headers={"Retry-After": "1"}))
    server.down()  # connections to server.url are now refused
    server.up()  # the same address again, with the events already stored
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import pathlib
import re
import socket
import socketserver
import sqlite3
import sys
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .otlp import read_logs_request
from .serialisation import dumps_text
from .wire import LOGS_PATH, MAX_BODY_BYTES, MAX_EVENT_BYTES, MAX_LOGS_BODY_BYTES

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_LOGS_BODY_BYTES",
    "EventStore",
    "Fault",
    "LocalServer",
    "RequestRecord",
    "default_data_dir",
]

_MAX_KEY_LENGTH = 64
_CAPTURE_PATHS = frozenset({"/batch", "/capture", "/e", "/track", "/i/v0/e", "/engage"})
_EVENT_KEY_FIELDS = ("token", "$token", "api_key")  # where a single event may carry the key
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_UUID = re.compile(r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}|[0-9a-f]{32}", re.I)
# A body we refuse is still read and dropped, so that the client sees our answer rather than a
# reset connection; past this size we answer and close instead.
_DRAIN_LIMIT = 5 * MAX_BODY_BYTES
_MAX_RECORDS = 1000
#: The web view: a page and its two assets, shipped in the package (no build step).
_VIEW_DIR = pathlib.Path(__file__).with_name("view")
_VIEW_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/view/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/view/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: Event properties are untrusted input: the page builds its DOM from text only, and
#: this policy forbids any script or style but the page's own as a second line.
_VIEW_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
_MAX_HOLD = 60.0  # seconds a held request waits for its event before it is answered anyway
_HOLD_POLL = 0.02  # seconds between checks, while holding, of whether the server went down
_RELEASE_WAIT = 5.0  # seconds down() and stop() wait for requests in a fault's wait to end
# Fault headers may not change how the body is framed.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REDACTED_HEADERS = frozenset({"authorization", "cookie"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    distinct_id TEXT NOT NULL,
    timestamp TEXT,
    properties TEXT NOT NULL,
    received_at REAL NOT NULL
)
"""


_LOGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_unix_nano INTEGER NOT NULL,
    severity_number INTEGER NOT NULL,
    severity_text TEXT NOT NULL,
    body TEXT NOT NULL,
    attributes TEXT NOT NULL,
    resource TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    distinct_id TEXT,
    session_id TEXT,
    service_name TEXT,
    received_at REAL NOT NULL
)
"""
_LOG_COLUMNS = (
    "seq",
    "time_unix_nano",
    "severity_number",
    "severity_text",
    "body",
    "attributes",
    "resource",
    "trace_id",
    "span_id",
    "distinct_id",
    "session_id",
    "service_name",
    "received_at",
)


def default_data_dir() -> pathlib.Path:
    """Where the local server keeps its data when no directory is given.

    ``$POSTHOG_LOGGING_DATA_DIR`` if set, else ``$XDG_DATA_HOME/posthog-logging``, else
    ``~/.local/share/posthog-logging``. Empty variables count as unset.
    """
    if explicit := os.environ.get("POSTHOG_LOGGING_DATA_DIR"):
        return pathlib.Path(explicit).expanduser()
    if xdg := os.environ.get("XDG_DATA_HOME"):
        return pathlib.Path(xdg).expanduser() / "posthog-logging"
    return pathlib.Path.home() / ".local" / "share" / "posthog-logging"


class EventStore:
    """Accepted events in ``events.sqlite3`` under a data directory, safe to share between threads.

    The directory is created (mode 0700) if missing. Events are deduplicated on ``uuid``.
    """

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        directory = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = directory / "events.sqlite3"
        """The SQLite file."""
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False)
        with self._lock, self._conn:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # No fsync per request: a crash of the machine may lose the last events, never
            # corrupt the store; a development server need not pay for more.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA wal_autocheckpoint=16384")
            self._conn.execute(_SCHEMA)
            self._conn.execute(_LOGS_SCHEMA)

    def add(self, events: list[dict[str, Any]]) -> int:
        """Store *events* (keys ``event``, ``distinct_id``, optional ``uuid``, ``timestamp``,
        ``properties``) and return how many were new; an event without a uuid gets one."""
        received_at = time.time()
        rows = [
            (
                str(event.get("uuid") or uuid.uuid4()),
                event["event"],
                event["distinct_id"],
                event.get("timestamp"),
                event.get("properties_json") or json.dumps(event.get("properties") or {}),
                received_at,
            )
            for event in events
        ]
        with self._lock, self._conn:
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO events"
                " (uuid, event, distinct_id, timestamp, properties, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._conn.total_changes - before

    def events(
        self,
        limit: int | None = None,
        *,
        event: str | None = None,
        distinct_id: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Stored events matching the filters, oldest first; with *limit*, only the newest ones.

        *since* is an epoch time compared with each event's ``received_at``.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be None or >= 0, not {limit!r}")
        filters = {"event = ?": event, "distinct_id = ?": distinct_id, "received_at >= ?": since}
        clauses = [clause for clause, value in filters.items() if value is not None]
        params: list[Any] = [value for value in filters.values() if value is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            "SELECT uuid, event, distinct_id, timestamp, properties, received_at"
            f" FROM events{where} ORDER BY seq DESC LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, [*params, -1 if limit is None else limit]).fetchall()
        names = ("uuid", "event", "distinct_id", "timestamp", "properties", "received_at")
        found = [dict(zip(names, row, strict=True)) for row in reversed(rows)]
        for item in found:
            item["properties"] = json.loads(item["properties"])
        return found

    def page(
        self,
        after: int = 0,
        limit: int = 200,
        *,
        event: str | None = None,
        distinct_id: str | None = None,
        session_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Events for the web view, oldest first, each with its ``seq`` (arrival order).

        With ``after`` (a ``seq``), at most ``limit`` events that arrived after it; without,
        the newest ``limit``. Filters match the name, the person and ``$session_id``.
        """
        filters = {
            "event = ?": event,
            "distinct_id = ?": distinct_id,
            """json_extract(properties, '$."$session_id"') = ?""": session_id,
        }
        clauses = [clause for clause, value in filters.items() if value]
        params: list[Any] = [value for value in filters.values() if value]
        if after:
            clauses.append("seq > ?")
            params.append(after)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "ASC" if after else "DESC"
        sql = (
            "SELECT seq, uuid, event, distinct_id, timestamp, properties, received_at"
            f" FROM events{where} ORDER BY seq {order} LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, [*params, max(0, limit)]).fetchall()
        if not after:
            rows.reverse()
        names = ("seq", "uuid", "event", "distinct_id", "timestamp", "properties", "received_at")
        found = [dict(zip(names, row, strict=True)) for row in rows]
        for item in found:
            item["properties"] = json.loads(item["properties"])
        return found

    def add_logs(self, rows: list[dict[str, Any]]) -> int:
        """Store log lines (as :func:`posthog_logging.otlp.read_logs_request` reads them)
        and return how many there were."""
        received_at = time.time()
        values = [
            (
                row["time_unix_nano"],
                row["severity_number"],
                row["severity_text"],
                json.dumps(row["body"]),
                json.dumps(row["attributes"]),
                json.dumps(row["resource"]),
                row["trace_id"],
                row["span_id"],
                row["distinct_id"],
                row["session_id"],
                row["service_name"],
                received_at,
            )
            for row in rows
        ]
        with self._lock, self._conn:
            self._conn.executemany(
                f"INSERT INTO logs ({', '.join(_LOG_COLUMNS[1:])})"
                f" VALUES ({', '.join('?' * (len(_LOG_COLUMNS) - 1))})",
                values,
            )
        return len(values)

    def logs(
        self,
        limit: int | None = None,
        *,
        after: int = 0,
        distinct_id: str | None = None,
        session_id: str | None = None,
        min_severity: int = 0,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Stored log lines, oldest first; with *limit*, the newest ones (or, with *after*,
        the first *limit* after that ``seq``). Filters match the person, the session, the
        least severity number and the earliest ``received_at`` (epoch seconds)."""
        filters = {
            "distinct_id = ?": distinct_id,
            "session_id = ?": session_id,
            "severity_number >= ?": min_severity or None,
            "seq > ?": after or None,
            "received_at >= ?": since,
        }
        clauses = [clause for clause, value in filters.items() if value is not None]
        params: list[Any] = [value for value in filters.values() if value is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "ASC" if after else "DESC"
        sql = f"SELECT {', '.join(_LOG_COLUMNS)} FROM logs{where} ORDER BY seq {order} LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, [*params, -1 if limit is None else limit]).fetchall()
        if not after:
            rows.reverse()
        found = [dict(zip(_LOG_COLUMNS, row, strict=True)) for row in rows]
        for item in found:
            for column in ("body", "attributes", "resource"):
                item[column] = json.loads(item[column])
        return found

    def count(self) -> int:
        """How many events are stored."""
        with self._lock:
            (total,) = self._conn.execute("SELECT count(*) FROM events").fetchone()
        return int(total)

    def clear(self) -> None:
        """Delete every stored event."""
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM events")
            self._conn.execute("DELETE FROM logs")

    def close(self) -> None:
        """Close the database; the store cannot be used afterwards."""
        with self._lock:
            self._conn.close()


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the server received and answered, or closed unanswered because of a `Fault`.

    Header names are lower-case; credentials are redacted.
    """

    method: str
    path: str
    status: int
    """The status answered, or 0 when the connection was closed without an answer."""
    headers: dict[str, str]
    body_size: int
    """Bytes of body as received (before gunzip)."""
    gzipped: bool
    event_count: int
    """Events in the body when it could be decoded, whether or not they were accepted."""
    fault: str | None = None
    """The injected `Fault` the request met, by what it did: ``"hold"``, ``"delay"``,
    ``"drop"``, ``"status"`` or ``"headers"``, joined by ``+`` when several (``"delay+status"``);
    None for a request served normally."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A misbehaviour scripted with `LocalServer.inject`, for one capture request.

    The server reads the request, waits for *hold* and then *delay*, and then closes the
    connection without an answer (*drop*), or answers *status* without processing the request,
    or processes it as usual; *headers* are added to the answer. ``Fault()`` changes nothing,
    which makes it a placeholder in a script: ``inject(Fault(), Fault(status=500))``.
    """

    status: int | None = None
    """Answer this status (200 to 599) with a JSON error body instead of processing the
    request: nothing is stored. None processes the request as usual."""
    headers: Mapping[str, str] = dataclass_field(default_factory=dict, hash=False)
    """Extra response headers, e.g. ``{"Retry-After": "2"}``; one of ours of the same name is
    replaced. Content-Length, Transfer-Encoding and Connection cannot be set."""
    delay: float = 0.0
    """Seconds to wait before answering."""
    hold: threading.Event | None = None
    """Wait until this event is set (at most 60 s) before answering, so that a test decides
    exactly how long the server is slow. `LocalServer.down` and `LocalServer.stop` end the wait
    by closing the connection."""
    drop: bool = False
    """Close the connection without any answer: the client sees the remote end disconnect.
    Nothing is stored."""

    def __post_init__(self) -> None:
        status = self.status
        if status is not None:
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
                raise ValueError(f"status must be None or an int from 200 to 599, not {status!r}")
            object.__setattr__(self, "status", int(status))  # an HTTPStatus is recorded as int
        delay = self.delay
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise TypeError(f"delay must be a number of seconds, not {delay!r}")
        if not 0 <= delay < math.inf:
            raise ValueError(f"delay must be finite and >= 0, not {delay!r}")
        if self.hold is not None and not isinstance(self.hold, threading.Event):
            raise TypeError(f"hold must be a threading.Event or None, not {self.hold!r}")
        headers = dict(self.headers)
        for name, value in headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in _FRAMING_HEADERS:
                raise ValueError(f"the {name} header is the server's to set")
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"the {name} header's value is not a single-line string")
        if self.drop and (status is not None or headers):
            raise ValueError("a dropped connection has no answer: drop takes no status or headers")
        object.__setattr__(self, "headers", headers)  # a copy: later changes to theirs are ignored

    def _label(self) -> str | None:
        """What this fault does, for `RequestRecord.fault`."""
        parts = ["hold"] if self.hold is not None else []
        if self.delay:
            parts.append("delay")
        if self.drop:
            parts.append("drop")
        elif self.status is not None:
            parts.append("status")
        elif self.headers:
            parts.append("headers")
        return "+".join(parts) or None


class _Rejection(Exception):
    """A request we refuse, with PostHog's status code. Details never quote the key."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail

    def body(self) -> bytes:
        reply = {"type": "validation_error", "code": self.code, "detail": self.detail}
        return json.dumps(reply).encode()


def _invalid(detail: str) -> _Rejection:
    return _Rejection(400, "invalid_payload", detail)


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN and Infinity; PostHog does not


def _decode(body: bytes, gzipped: bool) -> Any:
    return _decode_checked(body, gzipped)[0]


def _decode_checked(
    body: bytes, gzipped: bool, limit: int = MAX_BODY_BYTES
) -> tuple[Any, bool, bool]:
    """The JSON payload, and whether its events need the size check (not when the whole
    body is under the limit for one event) and the Unicode check (not when it escapes no
    lone surrogate)."""
    if not body:
        raise _invalid("the request body is empty")
    if len(body) > limit:
        raise _Rejection(413, "payload_too_large", f"the body is over {limit // 2**20} MB")
    if gzipped:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as unzipped:
                body = unzipped.read(limit + 1)  # bounded: a small body may expand a lot
        except (OSError, EOFError, zlib.error):
            raise _invalid("the body is not valid gzip") from None
        if len(body) > limit:
            detail = f"the body is over {limit // 2**20} MB once gunzipped"
            raise _Rejection(413, "payload_too_large", detail)
    try:
        text = body.decode("utf-8")
        payload = json.loads(text, parse_constant=_reject_constant)
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        raise _invalid("the body is not valid UTF-8 JSON") from None
    return payload, len(body) > MAX_EVENT_BYTES, bool(_SURROGATE_ESCAPE.search(text))


def _count_events(body: bytes | _Rejection, gzipped: bool) -> int:
    """How many events *body* carries, or 0 when it cannot be decoded."""
    if isinstance(body, _Rejection):
        return 0
    try:
        return len(_split(_decode(body, gzipped))[1])
    except _Rejection:
        return 0


def _split(payload: Any) -> tuple[Any, list[Any]]:
    """The request-level key (None when the events carry it) and the events, for each shape."""
    if isinstance(payload, list):
        return None, payload
    if not isinstance(payload, dict):
        raise _invalid("the body is neither a JSON object nor a list of events")
    if "batch" not in payload:
        return None, [payload]
    if not isinstance(payload["batch"], list):
        raise _invalid("'batch' is not a list")
    key = payload.get("api_key")
    return (key if key is not None else payload.get("token")), payload["batch"]


def _event_key(event: Any) -> Any:
    if not isinstance(event, dict):
        return None
    for name in _EVENT_KEY_FIELDS:
        if event.get(name) is not None:
            return event[name]
    properties = event.get("properties")
    if isinstance(properties, dict) and isinstance(properties.get("token"), str):
        return properties["token"]
    return None


def _bearer(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    if header is None:
        return None
    scheme, _, key = header.strip().partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


def _check_key(top_level_key: Any, events: list[Any]) -> None:
    keys = [top_level_key] if top_level_key is not None else [_event_key(e) for e in events]
    keys = [key for key in keys if key is not None]
    if not keys:
        raise _Rejection(401, "missing_api_key", "no API key: send the project key as 'api_key'")
    if not all(isinstance(key, str) for key in keys):
        raise _Rejection(401, "invalid_api_key", "the API key is not a string")
    if len(set(keys)) > 1:
        raise _invalid("the events carry different API keys")
    key: str = keys[0]
    if not key:
        raise _Rejection(401, "invalid_api_key", "the API key is empty")
    if len(key) > _MAX_KEY_LENGTH:
        raise _Rejection(401, "invalid_api_key", "the API key is over 64 characters")
    if not key.isascii() or "\0" in key:
        raise _Rejection(401, "invalid_api_key", "the API key holds non-ASCII or NUL characters")
    if key.startswith("phx_"):
        raise _Rejection(
            401, "invalid_api_key", "a personal API key cannot capture: use the project key"
        )


def _event_uuid(value: Any, where: object) -> str | None:
    if value is None or value == "":  # PostHog generates one for both
        return None
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise _invalid(f"{where}: 'uuid' is not a valid UUID")
    if len(value) == 36 and value.islower():
        return value  # already in the canonical form
    return str(uuid.UUID(value))


def _validate(
    index: int, raw: Any, check_size: bool = True, check_unicode: bool = True
) -> dict[str, Any]:
    """Check one event as PostHog does and return it in the store's form, without the key.

    The size check can be skipped for a body under the limit for one event, the Unicode
    check for a body that escapes no lone surrogate.
    """
    where = _Where(index)
    if not isinstance(raw, dict):
        raise _invalid(f"{where} is not a JSON object")
    name = raw.get("event")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where} has no 'event' name (a non-empty string)")
    properties = raw.get("properties", {})
    if not isinstance(properties, dict):
        raise _invalid(f"{where}: 'properties' is not an object")
    found = raw.get("distinct_id")
    if found is None:
        found = raw.get("$distinct_id")
        if found is None:
            found = properties.get("distinct_id")
    distinct_id = found if isinstance(found, str) or found is None else _compact_json(found)
    if not distinct_id:
        raise _invalid(f"{where} has no 'distinct_id'")
    event_uuid = _event_uuid(raw.get("uuid"), where)
    timestamp = raw.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, str):
        raise _invalid(f"{where}: 'timestamp' is not a string")
    if check_unicode:
        try:
            size = len(_compact_json(raw).encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
            raise _invalid(f"{where} holds a string that is not valid Unicode") from None
        if size > MAX_EVENT_BYTES:
            raise _Rejection(413, "event_too_large", f"{where} is over 1 MB")
    stored = properties
    if "token" in stored:
        stored = {key: value for key, value in properties.items() if key != "token"}
    for field in ("$set", "$set_once"):  # PostHog folds top-level person updates into properties
        if field in raw and field not in stored:
            stored = {**stored, field: raw[field]}
    try:
        text = dumps_text(stored)  # what the store keeps; no lone surrogate gets this far
    except ValueError:  # 1e400 parses as an infinity, which is not JSON
        raise _invalid(f"{where} holds a number out of range") from None
    if check_size and not check_unicode and _size(raw, stored, text) > MAX_EVENT_BYTES:
        raise _Rejection(413, "event_too_large", f"{where} is over 1 MB")
    return {
        "uuid": event_uuid,
        "event": name,
        "distinct_id": distinct_id,
        "timestamp": timestamp,
        "properties": stored,
        "properties_json": text,
    }


class _Where:
    """``event N`` for error messages, made only when one is."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __str__(self) -> str:
        return f"event {self.index}"


def _size(raw: dict[str, Any], stored: dict[str, Any], stored_json: str) -> int:
    """The size of an event's compact JSON, from its properties' JSON when those are
    stored as they came (they are nearly all of an event): the rest is encoded alone."""
    if stored is not raw.get("properties"):
        return len(dumps_text(raw).encode())
    rest = dumps_text({key: value for key, value in raw.items() if key != "properties"})
    comma = 1 if len(rest) > 2 else 0
    return len(rest.encode()) + comma + len('"properties":') + len(stored_json.encode())


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: LocalServer) -> None:
        self.owner = owner
        self.released = threading.Event()
        """Set when this socket is closed (`LocalServer.down` or `stop`): waits end."""
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host's FQDN, which can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.released.is_set() or isinstance(sys.exc_info()[1], OSError):
            return  # the client went away, or we are closing its connection
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "posthog-logging-local"
    timeout = 60  # seconds an idle or stalled connection is kept
    disable_nagle_algorithm = True  # else headers and body, written apart, wait on delayed ACKs
    server: _HTTPServer
    _body_size = 0  # bytes of the current request's body read so far

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True, released=self.server.released)

    def finish(self) -> None:
        self.server.owner._track(self.connection, add=False)
        super().finish()

    def do_GET(self) -> None:
        route = self._route()
        if route in ("/api/events", "/api/logs"):
            self._drain(self._content_length() or 0)
            return self._answer_feed(route)
        if route == "/favicon.ico":  # browsers ask; there is none
            self._drain(self._content_length() or 0)
            return self._answer(204, b"", "image/x-icon", view=True)
        asset = _VIEW_ASSETS.get(route)
        if asset is None:
            return self._refuse()
        self._drain(self._content_length() or 0)
        name, content_type = asset
        self._answer(200, (_VIEW_DIR / name).read_bytes(), content_type, view=True)

    def _answer_feed(self, route: str) -> None:
        """The web view's feeds: ``/api/events?after=SEQ&limit=&event=&distinct_id=&session_id=``
        and ``/api/logs?after=SEQ&limit=&distinct_id=&session_id=``."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        try:
            after = int(query.get("after", "0"))
            limit = min(int(query.get("limit", "200")), 1000)
            if not 0 <= after < 2**63 or limit < 0:
                raise ValueError
        except ValueError:
            detail = "after and limit must be integers >= 0"
            body = _Rejection(400, "invalid", detail).body()
            return self._answer(400, body, "application/json", view=True)
        store = self.server.owner.store
        person, session = query.get("distinct_id") or None, query.get("session_id") or None
        feed: dict[str, Any]
        if route == "/api/logs":
            lines = store.logs(limit, after=after, distinct_id=person, session_id=session)
            feed = {"logs": lines}
        else:
            events = store.page(
                after, limit, event=query.get("event"), distinct_id=person, session_id=session
            )
            feed = {"events": events}
        body = json.dumps(feed, allow_nan=False, default=str).encode()
        self._answer(200, body, "application/json", view=True)

    def do_POST(self) -> None:
        route = self._route()
        if route not in _CAPTURE_PATHS and route != LOGS_PATH:
            return self._refuse()
        fault = self.server.owner._next_fault()
        try:
            body: bytes | _Rejection = self._read_body()
        except _Rejection as rejection:
            body = rejection
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        gzipped = isinstance(body, bytes) and (encoding == "gzip" or body.startswith(b"\x1f\x8b"))
        if fault is not None:
            with self.server.owner._waiting():  # down() and stop() wait for this to end
                if not self._wait_out(fault) or fault.drop:
                    self.close_connection = True  # no answer: the connection just closes
                    return self._note(0, gzipped, _count_events(body, gzipped), fault)
            if fault.status is not None:
                detail = f"injected fault: answered {fault.status} without processing the request"
                reply = {"type": "injected_fault", "code": "fault_injected", "detail": detail}
                data, count = json.dumps(reply).encode(), _count_events(body, gzipped)
                return self._answer(fault.status, data, "application/json", gzipped, count, fault)
        if route == LOGS_PATH:
            status, data, count = self._capture_logs(body, gzipped)
        else:
            status, data, count = self._capture(body, gzipped)
        self._answer(status, data, "application/json", gzipped, count, fault)

    def _capture_logs(self, body: bytes | _Rejection, gzipped: bool) -> tuple[int, bytes, int]:
        """PostHog Logs: validate and store an OTLP/HTTP logs export (JSON encoding)."""
        count = 0
        try:
            if isinstance(body, _Rejection):
                raise body
            key = _bearer(self.headers.get("Authorization"))
            if key is None:
                detail = "no API key: send the project key as 'Authorization: Bearer <key>'"
                raise _Rejection(401, "missing_api_key", detail)
            _check_key(key, [])
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type not in ("application/json", ""):
                detail = "only OTLP's JSON encoding is served here: send application/json"
                raise _Rejection(415, "unsupported_media_type", detail)
            payload, _, _ = _decode_checked(body, gzipped, MAX_LOGS_BODY_BYTES)
            try:
                rows = read_logs_request(payload)
            except ValueError as exc:
                raise _invalid(str(exc)) from None
            count = len(rows)
            self.server.owner.store.add_logs(rows)
        except _Rejection as rejection:
            return rejection.status, rejection.body(), count
        return 200, b"{}", count

    def _capture(self, body: bytes | _Rejection, gzipped: bool) -> tuple[int, bytes, int]:
        """Validate and store the events: the status, the answer and how many events came."""
        count = 0
        try:
            if isinstance(body, _Rejection):
                raise body
            payload, check_size, check_unicode = _decode_checked(body, gzipped)
            key, raw_events = _split(payload)
            count = len(raw_events)
            _check_key(key, raw_events)
            if not raw_events:
                raise _invalid("the batch is empty")
            events = [_validate(i, e, check_size, check_unicode) for i, e in enumerate(raw_events)]
            self.server.owner.store.add(events)
        except _Rejection as rejection:
            return rejection.status, rejection.body(), count
        return 200, b'{"status": 1}', count

    def _wait_out(self, fault: Fault) -> bool:
        """Wait for the fault's hold and delay; False when the server went down meanwhile."""
        released = self.server.released
        if fault.hold is not None:
            deadline = time.monotonic() + _MAX_HOLD
            while not fault.hold.wait(_HOLD_POLL):
                if released.is_set():
                    return False
                if time.monotonic() >= deadline:
                    break
        if fault.delay:
            return not released.wait(fault.delay)
        return not released.is_set()

    def _refuse(self) -> None:
        """Answer 405 on a capture route, 404 elsewhere."""
        route = self._route()
        status, code = (
            (405, "method_not_allowed")
            if route in _CAPTURE_PATHS or route == LOGS_PATH
            else (404, "not_found")
        )
        self._drain(self._content_length() or 0)
        detail = f"{self.command} {route} is not served here: POST events to /batch/"
        self._answer(status, _Rejection(status, code, detail).body(), "application/json")

    do_PUT = do_PATCH = do_DELETE = _refuse

    def _route(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _content_length(self) -> int | None:
        """The declared body length, or None (closing the connection when a body may follow)."""
        header = self.headers.get("Content-Length", "").strip()
        if header.isascii() and header.isdigit():
            return int(header)
        if header or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # where the body ends is unknown to us
        return None

    def _read_body(self) -> bytes:
        self._body_size = 0
        length = self._content_length()
        if length is None:
            self.close_connection = True
            raise _Rejection(411, "length_required", "send a valid Content-Length header")
        if length > MAX_BODY_BYTES:
            self._drain(length)
            raise _Rejection(413, "payload_too_large", "the body is over 20 MB")
        body = self.rfile.read(length)
        self._body_size = len(body)
        if len(body) < length:
            self.close_connection = True
        return body

    def _drain(self, length: int) -> None:
        """Read and drop a body we will not use."""
        self._body_size = 0
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return
        while self._body_size < length and (
            chunk := self.rfile.read(min(length - self._body_size, 1 << 16))
        ):
            self._body_size += len(chunk)

    def _answer(
        self,
        status: int,
        body: bytes,
        content_type: str,
        gzipped: bool = False,
        events: int = 0,
        fault: Fault | None = None,
        view: bool = False,
    ) -> None:
        if not view:  # the web view polls: its requests would crowd out the capture ones
            self._note(status, gzipped, events, fault)
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        if view:
            headers.update(_VIEW_HEADERS)
        if status == 405:
            headers["Allow"] = "POST"
        if self.close_connection:
            headers["Connection"] = "close"
        for name, value in (fault.headers if fault is not None else {}).items():
            for ours in [ours for ours in headers if ours.lower() == name.lower()]:
                del headers[ours]
            headers[name] = value
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _note(self, status: int, gzipped: bool, events: int, fault: Fault | None) -> None:
        """Record this request in `LocalServer.requests`."""
        headers = {
            name.lower(): "[redacted]" if name.lower() in _REDACTED_HEADERS else value
            for name, value in self.headers.items()
        }
        path = urlsplit(self.path).path
        label = fault._label() if fault is not None else None
        record = RequestRecord(
            self.command, path, status, headers, self._body_size, gzipped, events, label
        )
        self.server.owner._record(record)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The default line repeats the raw request line; log the path without its query.
        status = int(code) if isinstance(code, int) else code  # HTTPStatus prints as its name
        self.log_message('"%s %s" %s', self.command, urlsplit(self.path).path, status)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.owner.quiet:
            super().log_message(format, *args)


class LocalServer:
    """A PostHog-compatible capture server on a local port, for development, demos and tests.

    The socket is bound on construction (``port=0`` picks a free port); `start` serves on a
    background thread, `serve_forever` in the foreground. Events go to *store*, or to an
    `EventStore` opened in *data_dir* (see `default_data_dir`), which `stop` then closes.
    With ``quiet=False`` each request is logged to stderr, without its key.

    For tests of a client's failure handling, `inject` scripts faults (see `Fault`) for the
    next capture requests, and `down` and `up` take the server off its port and put it back.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        store: EventStore | None = None,
        quiet: bool = True,
    ) -> None:
        if store is not None and data_dir is not None:
            raise ValueError("pass data_dir or store, not both: a store has its own directory")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 (any free port) and 65535, not {port!r}")
        self.quiet = quiet
        self._owns_store = store is None
        self._store = store if store is not None else EventStore(data_dir)
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=_MAX_RECORDS)
        self._connections: set[socket.socket] = set()
        self._script: deque[Fault] = deque()  # guarded by _lock, as are the two below
        self._standing: Fault | None = None
        self._waiters = 0  # requests in a fault's wait, guarded by _lock
        self._no_waiters = threading.Condition(self._lock)
        self._lifecycle = threading.Lock()  # serialises start, up, down and stop
        self._thread: threading.Thread | None = None
        self._serving = False  # a serve_forever loop runs, or was started, on the socket
        self._up = True  # the socket is open
        self._stopped = False
        self._finished = threading.Event()  # set once stop has run
        try:
            self._httpd = _HTTPServer((host, port), self)
        except BaseException:
            if self._owns_store:
                self._store.close()
            raise

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on (the one picked when created with ``port=0``)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to give a client as its host, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def store(self) -> EventStore:
        """Where accepted events are kept."""
        return self._store

    @property
    def requests(self) -> list[RequestRecord]:
        """The last 1000 requests received, oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def is_up(self) -> bool:
        """Whether the server listens on its port: from creation, or `up`, until `down` or
        `stop`."""
        return self._up

    def start(self) -> LocalServer:
        """Serve on a background daemon thread and return at once (the socket is listening).

        Does nothing when already serving; after `down`, it is `up`.
        """
        self.up()
        return self

    def up(self) -> None:
        """Listen again, after `down`, on the same host and port, and serve on a background
        daemon thread; the events stored and requests recorded meanwhile are kept.

        Does nothing when already up and serving. Raises `RuntimeError` after `stop`, and
        `OSError` when something else took the port while the server was down.
        """
        with self._lifecycle:
            if self._stopped:
                raise RuntimeError("this LocalServer was stopped; create a new one")
            self._bind()
            if self._serving:
                return
            self._serving = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"posthog-logging-server-{self.port}",
                daemon=True,
            )
            self._thread.start()

    def down(self) -> None:
        """Stop accepting, as a server that crashed or was taken off the network: close the
        listening socket and every open connection, so that new connections are refused.

        Requests waiting on a `Fault` (hold or delay) are ended by closing their connection,
        unanswered. The store, the recorded requests and the injected faults are kept, and
        `up` listens again on the same port. Does nothing when already down.
        """
        with self._lifecycle:
            if not self._stopped and self._up:
                self._close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop` is called from another one or Ctrl-C.

        After `down` it returns only at `stop` (or Ctrl-C); `up` serves on a background thread.
        """
        with self._lifecycle:
            if self._stopped or self._serving:
                raise RuntimeError("this LocalServer is already serving or was stopped")
            self._bind()
            self._serving = True
            httpd = self._httpd
        try:
            httpd.serve_forever(poll_interval=0.05)
            self._finished.wait()  # down() ended the loop early; wait for stop()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, close the socket and open connections, and close an owned store.

        Requests waiting on a `Fault` are ended by closing their connection. Calling it again,
        or after `down`, does nothing more.
        """
        with self._lifecycle:
            if self._stopped:
                return
            self._stopped = True
            if self._up:
                self._close()
            if self._owns_store:
                self._store.close()
        self._finished.set()

    def inject(self, *faults: Fault, times: int | None = 1) -> None:
        """Script *faults* for the next POSTs to capture routes, after those already scripted.

        Each such request takes the next scripted fault, in order; *times* repeats the whole
        sequence (``inject(a, b, times=2)`` scripts a, b, a, b). With ``times=None`` the one
        fault given becomes the standing fault, met by every request once the script has run
        out, until `clear_faults` (a later standing fault replaces it). Requests that find no
        fault are served normally; ``GET /`` and other routes are never faulted.
        """
        if not faults:
            raise TypeError("inject() needs at least one Fault")
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"inject() takes Fault objects, not {fault!r}")
        if times is None and len(faults) != 1:
            raise ValueError("a standing fault (times=None) is a single Fault")
        if times is not None and (type(times) is not int or times < 0):
            raise ValueError(f"times must be None or an int >= 0, not {times!r}")
        with self._lock:
            if times is None:
                self._standing = faults[0]
            else:
                self._script.extend(faults * times)

    def clear_faults(self) -> None:
        """Forget every scripted fault and the standing one: requests are served normally."""
        with self._lock:
            self._script.clear()
            self._standing = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def events(
        self,
        limit: int | None = None,
        *,
        event: str | None = None,
        distinct_id: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Stored events, as `EventStore.events`."""
        return self._store.events(limit, event=event, distinct_id=distinct_id, since=since)

    def wait_for_events(
        self,
        n: int,
        timeout: float = 10.0,
        *,
        event: str | None = None,
        distinct_id: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until at least *n* stored events match the filters and return all that match.

        Raises `TimeoutError`, saying how many arrived, what the server answered and which
        injected faults are left, when *timeout* seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(event=event, distinct_id=distinct_id, since=since)
            if len(found) >= n or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if len(found) >= n:
            return found
        filters = {"event": event, "distinct_id": distinct_id, "since": since}
        wanted = ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None)
        statuses = Counter(record.status for record in self.requests)
        answered = ", ".join(
            f"{count} x {status or 'no answer'}" for status, count in sorted(statuses.items())
        )
        with self._lock:
            scripted, standing = len(self._script), self._standing is not None
        pending = [f"{scripted} scripted"] if scripted else []
        pending += ["a standing fault"] if standing else []
        raise TimeoutError(
            f"waited {timeout:g}s for {n} event(s){f' matching {wanted}' if wanted else ''}:"
            f" {len(found)} arrived; requests answered: {answered or 'none'}"
            + (f"; injected faults left: {' and '.join(pending)}" if pending else "")
            + ("" if self._up else "; the server is down")
        )

    def clear(self) -> None:
        """Forget every stored event and recorded request."""
        self._store.clear()
        with self._lock:
            self._records.clear()

    def _bind(self) -> None:
        """Open a new listening socket on the same address if down. Hold `_lifecycle`."""
        if not self._up:
            self._httpd = _HTTPServer((self.host, self.port), self)
            self._up, self._serving = True, False

    def _close(self) -> None:
        """Close the listening socket and every connection, ending fault waits. Hold
        `_lifecycle`."""
        httpd, serving, thread = self._httpd, self._serving, self._thread
        self._up = self._serving = False
        with self._lock:  # a connection tracked from now on is closed by _track
            httpd.released.set()
        if serving:
            httpd.shutdown()  # returns once serve_forever has
        httpd.server_close()
        with self._no_waiters:  # released waits end at once: recorded, then closed
            self._no_waiters.wait_for(lambda: self._waiters == 0, timeout=_RELEASE_WAIT)
            connections = list(self._connections)
        for connection in connections:  # idle keep-alive connections would be served on
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._thread = None

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._script.popleft() if self._script else self._standing

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """Count a request in a fault's wait, for `_close` to let it end first."""
        with self._lock:
            self._waiters += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiters -= 1
                self._no_waiters.notify_all()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _track(
        self, connection: socket.socket, *, add: bool, released: threading.Event | None = None
    ) -> None:
        with self._lock:
            if not add:
                self._connections.discard(connection)
            elif released is not None and released.is_set():  # accepted as the server went down
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            else:
                self._connections.add(connection)
