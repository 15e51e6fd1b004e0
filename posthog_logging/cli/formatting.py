"""Tables of what the local server stored, for a terminal: `format_events` and `format_logs`.

The ``events`` and ``logs`` commands print them, and so does the demo. Persons and
sessions too long for their column keep their start and their end (``0192…3c8e1f2a``):
UUIDv7 sessions made in the same second share their first characters.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

__all__ = ["format_events", "format_logs"]

#: Widths of the person and session columns. A longer id keeps its first characters
#: and its last eight, e.g. ``0192…3c8e1f2a`` for a session.
PERSON_WIDTH = 16
SESSION_WIDTH = 13


def _short(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _ends(value: Any, width: int, tail: int = 8) -> str:
    """An identifier cut to *width* by dropping its middle: the first characters, an
    ellipsis and the last *tail*. Ids made close together (UUIDv7 sessions) share their
    start, the time, and differ at the end, which a cut at the end would hide."""
    text = "" if value is None else str(value)
    if len(text) <= width:
        return text
    head = max(0, width - tail - 1)
    return text[:head] + "…" + text[-tail:]


def _summary(event: dict[str, Any]) -> str:
    props = event.get("properties") or {}
    if event.get("event") == "$exception":
        exceptions = props.get("$exception_list") or [{}]
        first = exceptions[0]
        if (first.get("mechanism") or {}).get("synthetic"):  # an error line: its message
            return f"{first.get('value')}  (logged error)"
        text = f"{first.get('type')}: {first.get('value')}"
        if len(exceptions) > 1:
            text += f" (+{len(exceptions) - 1} chained)"
        return text
    shown = {
        k: v
        for k, v in props.items()
        if not k.startswith("$") and k not in ("log_message", "logger_name", "log_level")
    }
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in shown.items())


def format_events(events: Sequence[dict[str, Any]]) -> str:
    """A readable table of stored events (time, event, person, session, what it says)."""
    rows = [("time (UTC)", "event", "person", "session", "properties / exception")]
    for e in events:
        props = e.get("properties") or {}
        stamp = str(e.get("timestamp") or "")
        person = e.get("distinct_id")
        if props.get("$process_person_profile") is False:
            person = "(anonymous)"
        rows.append(
            (
                stamp[11:23] if len(stamp) >= 23 else stamp,
                _short(e.get("event"), 24),
                _ends(person, PERSON_WIDTH),
                _ends(props.get("$session_id"), SESSION_WIDTH),
                _short(_summary(e), 96),
            )
        )
    return _table(rows)


def format_logs(lines: Sequence[dict[str, Any]]) -> str:
    """A readable table of stored log lines (time, level, service, person, session, body)."""
    rows = [("time (UTC)", "level", "service", "person", "session", "line")]
    for line in lines:
        nanos = int(line.get("time_unix_nano") or 0)
        stamp = dt.datetime.fromtimestamp(nanos / 1e9, dt.timezone.utc).strftime("%H:%M:%S.%f")
        body = line.get("body")
        exception = (line.get("attributes") or {}).get("exception.type")
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        if exception:
            text += f"  [{exception}]"
        rows.append(
            (
                stamp[:12],
                _short(line.get("severity_text") or line.get("severity_number"), 8),
                _short(line.get("service_name"), 16),
                _ends(line.get("distinct_id"), PERSON_WIDTH),
                _ends(line.get("session_id"), SESSION_WIDTH),
                _short(text, 96),
            )
        )
    return _table(rows)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
