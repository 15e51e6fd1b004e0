"""WSGI middleware: every request runs in its own context.

::

    app.wsgi_app = PostHogWSGIMiddleware(app.wsgi_app)          # Flask
    application = PostHogWSGIMiddleware(get_wsgi_application())  # any WSGI app

Identity comes from the ``X-POSTHOG-DISTINCT-ID`` header (or ``identify(environ)``),
the session from ``X-POSTHOG-SESSION-ID``; the request's URL, method, path and user
agent are tags, and ``$ip`` too when ``capture_ip=True``. An exception leaving the
application is sent once, with the request's context, and re-raised. A streaming
response is produced in the request's context, and an error while streaming is sent too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .contexts import ContextState, current_state, new_context, restored
from .web import Request, RequestMiddleware, RequestOptions

__all__ = ["PostHogWSGIMiddleware"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PostHogWSGIMiddleware(RequestMiddleware):
    """Wrap a WSGI application so that each request runs in a new context.

    Options (keyword-only): ``identify``, ``capture_ip``, ``trusted_proxies``,
    ``capture_exceptions``, ``client``; see docs/web.md.
    """

    app: WSGIApp

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        with new_context(fresh=True, capture_exceptions=False):
            self.options.apply(_request(environ), environ)
            try:
                body = self.app(environ, start_response)
            except Exception as exc:
                self.options.capture(exc, "wsgi")
                raise
            state = current_state()  # with whatever the application set
        return _Body(body, state, self.options)


class _Body:
    """The response body, produced chunk by chunk in the request's context."""

    def __init__(self, body: Iterable[bytes], state: ContextState, options: RequestOptions):
        self._body = body
        self._iterator: Iterator[bytes] | None = None
        self._state = state
        self._options = options

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        with restored(self._state):
            try:
                if self._iterator is None:
                    self._iterator = iter(self._body)
                return next(self._iterator)
            except StopIteration:
                raise
            except Exception as exc:
                self._options.capture(exc, "wsgi")
                raise

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            with restored(self._state):
                close()


def _request(environ: dict[str, Any]) -> Request:
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    host = (
        headers.get("host") or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    )
    path = _text(environ.get("SCRIPT_NAME", "")) + _text(environ.get("PATH_INFO", ""))
    return Request(
        method=environ.get("REQUEST_METHOD"),
        scheme=str(environ.get("wsgi.url_scheme", "http")),
        host=host,
        path=path or "/",
        query=str(environ.get("QUERY_STRING", "")),
        headers=headers,
        peer=environ.get("REMOTE_ADDR"),
    )


def _text(value: object) -> str:
    """A WSGI path: bytes read as latin-1 (PEP 3333), which are really UTF-8."""
    text = str(value)
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text
