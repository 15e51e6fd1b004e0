"""ASGI middleware: every HTTP request and websocket session runs in its own context.

::

    app.add_middleware(PostHogASGIMiddleware)   # Starlette, FastAPI
    app = PostHogASGIMiddleware(app)             # any ASGI application

Identity comes from the ``X-POSTHOG-DISTINCT-ID`` header (or ``identify(scope)``), the
session from ``X-POSTHOG-SESSION-ID``; URL, method, path and user agent are tags, and
``$ip`` too when ``capture_ip=True``. The whole exchange, streamed responses and
websocket messages included, runs in the context. An exception leaving the application
is sent once, with the request's context, and re-raised. Lifespan events pass through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .contexts import new_context
from .web import Request, RequestMiddleware

__all__ = ["PostHogASGIMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class PostHogASGIMiddleware(RequestMiddleware):
    """Wrap an ASGI application so that each request runs in a new context.

    Options (keyword-only): ``identify``, ``capture_ip``, ``trusted_proxies``,
    ``capture_exceptions``, ``client``; see docs/web.md.
    """

    app: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):  # lifespan, and whatever comes next
            await self.app(scope, receive, send)
            return
        with new_context(fresh=True, capture_exceptions=False):
            self.options.apply(_request(scope), scope)
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                self.options.capture(exc, "asgi")
                raise


def _request(scope: Scope) -> Request:
    headers: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    server = scope.get("server")
    host = headers.get("host") or (f"{server[0]}:{server[1]}" if server else "")
    client = scope.get("client")
    query = scope.get("query_string") or b""
    return Request(
        method=scope.get("method"),  # None for a websocket
        scheme=str(scope.get("scheme") or ("ws" if scope["type"] == "websocket" else "http")),
        host=host,
        path=_path(scope),
        query=query.decode("latin-1") if isinstance(query, bytes) else str(query),
        headers=headers,
        peer=client[0] if client else None,
    )


def _path(scope: Scope) -> str:
    """The full path: servers differ on whether ``path`` already holds ``root_path``."""
    path, root = str(scope.get("path") or "/"), str(scope.get("root_path") or "").rstrip("/")
    if not root or path == root or path.startswith(root + "/"):
        return path
    return root + path
