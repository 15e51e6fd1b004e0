"""A tiny Django project for tests/test_django.py: settings, URLs, views and the
application's own "authentication" (a middleware that reads the user from a header).

``configure()`` sets Django up once per process; the URLs below are this module's
``urlpatterns`` (``ROOT_URLCONF`` points here).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path
from django.utils.decorators import sync_and_async_middleware

import posthog_logging

#: Views log their events through this logger; tests attach a PostHogHandler to it.
LOGGER_NAME = "tests.django_views"
log = logging.getLogger(LOGGER_NAME)

#: The header the application's own "authentication" reads the user from.
USER_HEADER = "X-App-User"

MIDDLEWARE = [
    "tests._django_project.user_from_header",
    "posthog_logging.django.PostHogMiddleware",
]

SETTINGS: dict[str, Any] = {
    "DEBUG": False,
    "ALLOWED_HOSTS": ["testserver", "localhost"],
    "ROOT_URLCONF": __name__,
    "MIDDLEWARE": MIDDLEWARE,
    "INSTALLED_APPS": [],
    "DATABASES": {},
    "SECRET_KEY": "tests-only-not-a-secret",
    "USE_TZ": True,
    "POSTHOG_LOGGING": {},
}


def configure() -> None:
    """Configure Django for this project, unless something configured it already."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(**SETTINGS)
        django.setup()


# -- the application's authentication ------------------------------------------------------


@sync_and_async_middleware  # type: ignore[untyped-decorator]
def user_from_header(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Set ``request.user_id`` from the ``X-App-User`` header (None without it)."""
    if asyncio.iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> Any:
            request.user_id = request.headers.get(USER_HEADER)
            return await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> Any:
        request.user_id = request.headers.get(USER_HEADER)
        return get_response(request)

    return middleware


#: What ``identify`` saw: (user id, whether it ran on a thread with a running event loop).
identify_calls: list[tuple[Any, bool]] = []
_calls_lock = threading.Lock()


def identify(request: HttpRequest) -> Any:
    """The ``identify`` hook: the user the application authenticated, if any."""
    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    user_id = getattr(request, "user_id", None)
    with _calls_lock:
        identify_calls.append((user_id, in_loop))
    return user_id


def identify_raising(request: HttpRequest) -> Any:
    raise RuntimeError("the user lookup is broken")


# -- views ----------------------------------------------------------------------------------


def _context_properties() -> dict[str, Any]:
    return {
        "seen_distinct_id": posthog_logging.get_context_distinct_id(),
        "seen_session_id": posthog_logging.get_context_session_id(),
    }


def hello(request: HttpRequest) -> HttpResponse:
    log.info("hello_viewed", extra={"event": True, "n": request.GET.get("n")})
    return HttpResponse("hello")


def identify_in_view(request: HttpRequest) -> HttpResponse:
    """A view that identifies the context itself (it must not outlive the request)."""
    posthog_logging.identify_context(request.GET["as"])
    posthog_logging.tag("set_in_view", True)
    log.info("identified_in_view", extra={"event": True})
    return HttpResponse("ok")


class ViewFailed(Exception):
    pass


def boom(request: HttpRequest) -> HttpResponse:
    log.info("before_boom", extra={"event": True})
    raise ViewFailed("the view failed")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("chunks", "3"))

    def chunks() -> Iterator[bytes]:
        for i in range(count):
            log.info("chunk_sent", extra={"event": True, "i": i, **_context_properties()})
            yield f"chunk {i}\n".encode()

    return StreamingHttpResponse(chunks())


def stream_boom(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield b"first\n"
        raise ViewFailed("the stream failed")

    return StreamingHttpResponse(chunks())


async def async_hello(request: HttpRequest) -> HttpResponse:
    n = request.GET.get("n")
    # Give the other requests a chance to run in between.
    for _ in range(3):
        await asyncio.sleep(0)
    log.info("async_viewed", extra={"event": True, "n": n, **_context_properties()})
    await asyncio.sleep(0)
    posthog_logging.capture("async_captured", {"n": n})
    return HttpResponse(f"async {n}")


async def async_boom(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    raise ViewFailed("the async view failed")


async def async_stream(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0)
            log.info("async_chunk_sent", extra={"event": True, "i": i, **_context_properties()})
            yield f"chunk {i}\n".encode()

    return StreamingHttpResponse(chunks())


urlpatterns = [
    path("hello", hello),
    path("identify-in-view", identify_in_view),
    path("boom", boom),
    path("stream", stream),
    path("stream-boom", stream_boom),
    path("async/hello", async_hello),
    path("async/boom", async_boom),
    path("async/stream", async_stream),
]
