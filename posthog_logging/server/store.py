"""The local server's store: accepted events and log lines in a SQLite file.

`EventStore` keeps them in ``events.sqlite3`` under a data directory (`default_data_dir`
when none is given), events deduplicated on their ``uuid`` as PostHog does; the request
handlers write to it, and the CLI and the web view read from it.
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import threading
import time
import uuid
from typing import Any

import orjson

__all__ = ["EventStore", "default_data_dir"]

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


def _json(value: Any) -> str:
    """A value read from a request (plain JSON data) as the store keeps it."""
    return orjson.dumps(value).decode()


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


def _event_filters(
    event: str | None, distinct_id: str | None, session_id: str | None
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses and parameters of the web view's event filters (empty ones match any)."""
    filters = {
        "event = ?": event,
        "distinct_id = ?": distinct_id,
        """json_extract(properties, '$."$session_id"') = ?""": session_id,
    }
    clauses = [clause for clause, value in filters.items() if value]
    params: list[Any] = [value for value in filters.values() if value]
    return clauses, params


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
        before: int = 0,
    ) -> list[dict[str, Any]]:
        """Events for the web view, oldest first, each with its ``seq`` (arrival order).

        With ``after`` (a ``seq``), at most ``limit`` events that arrived after it; without,
        the newest ``limit``. With ``before`` (a ``seq``), only events that arrived before
        it (so ``before`` alone pages to older events). Filters match the name, the person
        and ``$session_id``.
        """
        clauses, params = _event_filters(event, distinct_id, session_id)
        if after:
            clauses.append("seq > ?")
            params.append(after)
        if before:
            clauses.append("seq < ?")
            params.append(before)
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
        """Store log lines (as :func:`posthog_logging.server.otlp.read_logs_request` reads them)
        and return how many there were."""
        received_at = time.time()
        values = [
            (
                row["time_unix_nano"],
                row["severity_number"],
                row["severity_text"],
                _json(row["body"]),
                _json(row["attributes"]),
                _json(row["resource"]),
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
        before: int = 0,
    ) -> list[dict[str, Any]]:
        """Stored log lines, oldest first; with *limit*, the newest ones (or, with *after*,
        the first *limit* after that ``seq``). With *before* (a ``seq``), only lines that
        arrived before it. Filters match the person, the session, the least severity number
        and the earliest ``received_at`` (epoch seconds)."""
        filters = {
            "distinct_id = ?": distinct_id,
            "session_id = ?": session_id,
            "severity_number >= ?": min_severity or None,
            "seq > ?": after or None,
            "seq < ?": before or None,
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

    def page_total(
        self,
        *,
        event: str | None = None,
        distinct_id: str | None = None,
        session_id: str | None = None,
    ) -> int:
        """How many stored events match the filters of `page` (empty ones match any)."""
        clauses, params = _event_filters(event, distinct_id, session_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            (total,) = self._conn.execute(f"SELECT count(*) FROM events{where}", params).fetchone()
        return int(total)

    def logs_total(self, *, distinct_id: str | None = None, session_id: str | None = None) -> int:
        """How many stored log lines match the person and session filters of `logs`."""
        filters = {"distinct_id = ?": distinct_id, "session_id = ?": session_id}
        clauses = [clause for clause, value in filters.items() if value is not None]
        params = [value for value in filters.values() if value is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            (total,) = self._conn.execute(f"SELECT count(*) FROM logs{where}", params).fetchone()
        return int(total)

    def log_count(self) -> int:
        """How many log lines are stored."""
        with self._lock:
            (total,) = self._conn.execute("SELECT count(*) FROM logs").fetchone()
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
