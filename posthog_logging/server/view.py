"""The web view: a page showing what arrived, its assets, and the JSON feeds it polls.

The page (``index.html``, ``app.js``, ``style.css``) ships in the package's ``static``
directory, next to this module, with no build step; `VIEW_ASSETS` maps each route to its
file, and `VIEW_HEADERS` are sent with all of the view's answers. `feed` answers
``/api/events`` and ``/api/logs`` from the store, oldest first, each row with its
arrival number ``seq``, with the number of stored rows that match the filters.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any
from urllib.parse import parse_qs

from .capture import Rejection
from .store import EventStore

__all__ = ["FEEDS", "VIEW_ASSETS", "VIEW_HEADERS", "feed", "read_asset"]

#: The routes of the web view's JSON feeds.
FEEDS = ("/api/events", "/api/logs")
#: The web view: a page and its two assets, shipped in the package (no build step).
_VIEW_DIR = pathlib.Path(__file__).with_name("static")
VIEW_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/view/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/view/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: Event properties are untrusted input: the page builds its DOM from text only, and
#: this policy forbids any script or style but the page's own as a second line.
VIEW_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def read_asset(name: str) -> bytes:
    """The content of one of the view's files (a name from `VIEW_ASSETS`)."""
    return (_VIEW_DIR / name).read_bytes()


def feed(store: EventStore, route: str, query_string: str) -> tuple[int, bytes]:
    """The web view's feeds, ``/api/events?after=SEQ&before=SEQ&limit=&event=&distinct_id=
    &session_id=`` and ``/api/logs?after=SEQ&before=SEQ&limit=&distinct_id=&session_id=``:
    the status and JSON body, the rows (``events`` or ``logs``) and ``total``, how many
    stored rows match the filters (whatever ``after``, ``before`` and ``limit``)."""
    query = {k: v[-1] for k, v in parse_qs(query_string).items()}
    try:
        after = int(query.get("after", "0"))
        before = int(query.get("before", "0"))
        limit = min(int(query.get("limit", "200")), 1000)
        if not (0 <= after < 2**63 and 0 <= before < 2**63) or limit < 0:
            raise ValueError
    except ValueError:
        detail = "after, before and limit must be integers >= 0"
        return 400, Rejection(400, "invalid", detail).body()
    person, session = query.get("distinct_id") or None, query.get("session_id") or None
    answer: dict[str, Any]
    if route == "/api/logs":
        lines = store.logs(
            limit, after=after, before=before, distinct_id=person, session_id=session
        )
        total = store.logs_total(distinct_id=person, session_id=session)
        answer = {"logs": lines, "total": total}
    else:
        name = query.get("event") or None
        events = store.page(
            after, limit, event=name, distinct_id=person, session_id=session, before=before
        )
        total = store.page_total(event=name, distinct_id=person, session_id=session)
        answer = {"events": events, "total": total}
    return 200, json.dumps(answer, allow_nan=False, default=str).encode()
