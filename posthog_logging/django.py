"""Django middleware: every request runs in its own context.

Add it after Django's ``AuthenticationMiddleware`` (so that ``identify`` can look at
``request.user``)::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "posthog_logging.django.PostHogMiddleware",
        ...,
    ]
    POSTHOG_LOGGING = {
        "identify": "myapp.analytics.user_id",  # or a callable: request -> distinct_id
        "capture_ip": False,
        "trusted_proxies": 0,
    }

Identity comes from ``identify(request)``, else the ``X-POSTHOG-DISTINCT-ID`` header;
the session from ``X-POSTHOG-SESSION-ID``; URL, method, path and user agent are tags.
An exception a view raises is sent once with the request's context (Django then turns
it into a 500 as usual). Works in sync and async stacks; streaming responses are
produced in the request's context.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.utils.module_loading import import_string

from .contexts import ContextState, current_state, new_context, restored
from .web import Request, RequestOptions

__all__ = ["PostHogMiddleware"]

_OPTIONS = ("identify", "capture_ip", "trusted_proxies", "capture_exceptions")


class PostHogMiddleware:
    """Run each request in a new context built from the request (see the module)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.options = RequestOptions(**_options_from_settings())
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._is_async:
            return self._acall(request)
        with new_context(fresh=True, capture_exceptions=False):
            self.options.apply(_request(request), request)
            response = self.get_response(request)
            return _stream_in_context(response, current_state(), self.options)

    async def _acall(self, request: Any) -> Any:
        with new_context(fresh=True, capture_exceptions=False):
            self.options.apply(_request(request), request)
            response = await self.get_response(request)
            return _stream_in_context(response, current_state(), self.options)

    def process_exception(self, request: Any, exception: Exception) -> None:
        """Send the view's exception (in the request's context); Django handles it after."""
        self.options.capture(exception, "django")


def _options_from_settings() -> dict[str, Any]:
    configured = getattr(settings, "POSTHOG_LOGGING", None) or {}
    unknown = set(configured) - set(_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown POSTHOG_LOGGING setting(s) {sorted(unknown)}; known: {list(_OPTIONS)}"
        )
    options = {k: configured[k] for k in _OPTIONS if k in configured}
    if isinstance(options.get("identify"), str):
        options["identify"] = import_string(options["identify"])
    return options


def _request(request: Any) -> Request:
    try:
        host = request.get_host()
    except DisallowedHost:  # Django answers 400 itself; the context still describes it
        host = str(request.META.get("SERVER_NAME", ""))
    return Request(
        method=request.method,
        scheme=request.scheme,
        host=host,
        path=request.path,
        query=str(request.META.get("QUERY_STRING", "")),
        headers={name.lower(): value for name, value in request.headers.items()},
        peer=request.META.get("REMOTE_ADDR"),
    )


def _stream_in_context(response: Any, state: ContextState, options: RequestOptions) -> Any:
    """A streaming response's content is produced after the middleware returns: keep
    the request's context around each chunk."""
    if not getattr(response, "streaming", False):
        return response
    if getattr(response, "is_async", False):
        response.streaming_content = _async_chunks(response.streaming_content, state, options)
    else:
        response.streaming_content = _chunks(response.streaming_content, state, options)
    return response


def _chunks(content: Iterable[Any], state: ContextState, options: RequestOptions) -> Iterator[Any]:
    iterator = iter(content)
    while True:
        with restored(state):
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # the response has started: Django cannot help
                options.capture(exc, "django")
                raise
        yield chunk


async def _async_chunks(
    content: Any, state: ContextState, options: RequestOptions
) -> AsyncIterator[Any]:
    iterator = content.__aiter__()
    while True:
        with restored(state):
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                options.capture(exc, "django")
                raise
        yield chunk
