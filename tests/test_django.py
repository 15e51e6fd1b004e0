"""The Django middleware, through Django's own test clients (sync and async stacks).

The project (settings, URLs, views, the application's "authentication") is in
tests/_django_project.py. Events are checked as they would go on the wire, with the
``posthog_events`` fixture.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import AsyncClient, Client, override_settings

import posthog_logging
from posthog_logging import PostHogHandler
from posthog_logging.contexts import current_state
from posthog_logging.django import PostHogMiddleware
from posthog_logging.serialisation import FILTERED
from posthog_logging.server import LocalServer
from posthog_logging.testing import CapturedEvents

from . import _django_project as project
from .conftest import Records
from .helpers import assert_anonymous, only

project.configure()

DISTINCT = "HTTP_X_POSTHOG_DISTINCT_ID"
SESSION = "HTTP_X_POSTHOG_SESSION_ID"
APP_USER = "HTTP_X_APP_USER"


@pytest.fixture(autouse=True)
def views_logger(attach: Callable[..., logging.Logger]) -> logging.Logger:
    """The views' logger sends its marked records through the default client."""
    return attach(PostHogHandler(), name=project.LOGGER_NAME)


@pytest.fixture(autouse=True)
def _no_identify_calls() -> Iterator[None]:
    project.identify_calls.clear()
    yield
    project.identify_calls.clear()


# -- identity -------------------------------------------------------------------------------


def test_identity_from_the_posthog_header(posthog_events: CapturedEvents) -> None:
    response = Client().get("/hello", **{DISTINCT: "user-from-header"})
    assert response.status_code == 200
    posthog_events.assert_captured("hello_viewed", distinct_id="user-from-header", count=1)


def test_no_header_no_identity(posthog_events: CapturedEvents) -> None:
    assert Client().get("/hello").status_code == 200
    event = only(posthog_events.find("hello_viewed"))
    assert_anonymous(event)
    assert "$session_id" not in event["properties"]


@pytest.mark.parametrize(
    "identify",
    [project.identify, "tests._django_project.identify"],
    ids=["callable", "dotted-path"],
)
def test_identify_hook_wins_over_the_header(posthog_events: CapturedEvents, identify: Any) -> None:
    with override_settings(POSTHOG_LOGGING={"identify": identify}):
        client = Client()
        client.get("/hello?n=app", **{APP_USER: "app-user-7", DISTINCT: "header-user"})
        # The hook finds nobody: the header is used.
        client.get("/hello?n=header", **{DISTINCT: "header-user"})
    posthog_events.assert_captured("hello_viewed", distinct_id="app-user-7", n="app", count=1)
    posthog_events.assert_captured("hello_viewed", distinct_id="header-user", n="header", count=1)
    assert [user for user, _ in project.identify_calls] == ["app-user-7", None]


def test_identify_hook_that_raises_falls_back_to_the_header(
    posthog_events: CapturedEvents, caplog: pytest.LogCaptureFixture
) -> None:
    with override_settings(POSTHOG_LOGGING={"identify": project.identify_raising}):
        response = Client().get("/hello", **{DISTINCT: "header-user"})
    assert response.status_code == 200
    posthog_events.assert_captured("hello_viewed", distinct_id="header-user", count=1)
    assert any("identify() raised" in r.getMessage() for r in caplog.records)
    posthog_events.assert_not_captured("$exception")


def test_settings_are_read_when_the_handler_loads_the_middleware(
    posthog_events: CapturedEvents,
) -> None:
    with override_settings(POSTHOG_LOGGING={"identify": project.identify}):
        loaded_with_hook = Client()
        loaded_with_hook.get("/hello?n=1", **{APP_USER: "app-user"})
    # The same handler keeps the middleware (and the options) it loaded...
    loaded_with_hook.get("/hello?n=2", **{APP_USER: "app-user"})
    # ... while a new one reads the settings as they are now: no hook.
    Client().get("/hello?n=3", **{APP_USER: "app-user"})
    posthog_events.assert_captured("hello_viewed", distinct_id="app-user", n="1")
    posthog_events.assert_captured("hello_viewed", distinct_id="app-user", n="2")
    assert_anonymous(only(posthog_events.find("hello_viewed", n="3")))


@pytest.mark.parametrize(
    "configured",
    [{"identfy": "tests._django_project.identify"}, {"capture_ip": True, "trusted_proxy": 1}],
    ids=["alone", "beside-a-known-one"],
)
def test_unknown_setting_raises_naming_it(configured: dict[str, Any]) -> None:
    [unknown] = set(configured) - {"capture_ip"}
    with override_settings(POSTHOG_LOGGING=configured):
        with pytest.raises(ValueError, match=unknown):
            PostHogMiddleware(lambda request: None)
        with pytest.raises(ValueError, match=unknown):  # as Django loads it, on a request
            Client().get("/hello")


# -- session and tags -----------------------------------------------------------------------


def test_session_and_request_tags(posthog_events: CapturedEvents) -> None:
    response = Client().get(
        "/hello?n=1",
        **{DISTINCT: "user-1", SESSION: "session-1"},
        HTTP_USER_AGENT="Mozilla/5.0 (tests)",
    )
    assert response.status_code == 200
    props = posthog_events.assert_captured("hello_viewed", distinct_id="user-1")["properties"]
    assert props["$session_id"] == "session-1"
    assert props["$current_url"] == "http://testserver/hello?n=1"
    assert props["$request_method"] == "GET"
    assert props["$request_path"] == "/hello"
    assert props["$raw_user_agent"] == "Mozilla/5.0 (tests)"
    assert props["n"] == "1"
    assert "$ip" not in props  # only with capture_ip
    assert props["$geoip_disable"] is True


def test_post_and_secret_query_values_filtered(posthog_events: CapturedEvents) -> None:
    Client().post("/hello?n=2&token=s3cr3t&page=4", **{DISTINCT: "user-1"})
    props = posthog_events.assert_captured("hello_viewed")["properties"]
    assert props["$request_method"] == "POST"
    assert props["$current_url"] == f"http://testserver/hello?n=2&token={FILTERED}&page=4"
    assert "s3cr3t" not in repr(posthog_events.events)


def test_capture_ip(posthog_events: CapturedEvents) -> None:
    with override_settings(POSTHOG_LOGGING={"capture_ip": True}):
        Client().get("/hello?n=peer", REMOTE_ADDR="198.51.100.4")
    with override_settings(POSTHOG_LOGGING={"capture_ip": True, "trusted_proxies": 1}):
        Client().get(
            "/hello?n=proxied",
            REMOTE_ADDR="10.0.0.2",
            HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9",
        )
    peer = posthog_events.assert_captured("hello_viewed", n="peer")["properties"]
    assert peer["$ip"] == "198.51.100.4"
    assert peer["$geoip_disable"] is False
    proxied = posthog_events.assert_captured("hello_viewed", n="proxied")["properties"]
    assert proxied["$ip"] == "203.0.113.9"


def test_disallowed_host_not_used_in_the_url(posthog_events: CapturedEvents) -> None:
    # No middleware here checks the host, so the view runs; the URL tag is built from
    # the server's name, not from the Host header Django refuses.
    response = Client().get("/hello", HTTP_HOST="evil.example", **{DISTINCT: "user-1"})
    assert response.status_code == 200
    props = posthog_events.assert_captured("hello_viewed", distinct_id="user-1")["properties"]
    assert props["$current_url"] == "http://testserver/hello"


# -- errors ---------------------------------------------------------------------------------


def test_view_exception_captured_once_with_the_request_context(
    posthog_events: CapturedEvents, root_handlers: Records
) -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/boom?x=1", **{DISTINCT: "user-9", SESSION: "session-9"})
    assert response.status_code == 500

    # Django logged the error too (with its traceback), and the root logger saw it ...
    [logged] = [r for r in root_handlers.records if r.name == "django.request"]
    assert logged.levelno == logging.ERROR
    assert logged.exc_info is not None
    assert isinstance(logged.exc_info[1], project.ViewFailed)
    # ... yet the exception went out once, from the middleware.
    event = only(posthog_events.exceptions)
    props = event["properties"]
    assert event["distinct_id"] == "user-9"
    assert props["$exception_source"] == "django.middleware"
    assert props["$session_id"] == "session-9"
    assert props["$request_path"] == "/boom"
    assert props["$request_method"] == "GET"
    assert props["$current_url"] == "http://testserver/boom?x=1"
    [exc] = props["$exception_list"]
    assert exc["type"] == "ViewFailed"
    assert exc["value"] == "the view failed"
    posthog_events.assert_captured("before_boom", distinct_id="user-9", count=1)


def test_view_exception_not_captured_when_turned_off(posthog_events: CapturedEvents) -> None:
    with override_settings(POSTHOG_LOGGING={"capture_exceptions": False}):
        response = Client(raise_request_exception=False).get("/boom", **{DISTINCT: "user-9"})
    assert response.status_code == 500
    assert posthog_events.exceptions == []


def test_djangos_log_line_is_what_sends_it_when_the_middleware_does_not(
    posthog_events: CapturedEvents, root_handlers: Records
) -> None:
    # The counterpart of the test above: the root handler does send Django's error
    # line when the middleware has not captured the exception first.
    with override_settings(POSTHOG_LOGGING={"capture_exceptions": False}):
        response = Client(raise_request_exception=False).get("/boom", **{DISTINCT: "user-9"})
    assert response.status_code == 500
    event = only(posthog_events.exceptions)
    assert event["properties"]["$exception_source"] == "python.logging"
    assert event["distinct_id"] == "user-9"  # logged inside the request's context


def test_view_exception_reaches_the_test_client(posthog_events: CapturedEvents) -> None:
    with pytest.raises(project.ViewFailed):
        Client().get("/boom", **{DISTINCT: "user-9"})
    assert only(posthog_events.exceptions)["distinct_id"] == "user-9"


# -- streaming ------------------------------------------------------------------------------


def test_streaming_response_produced_in_the_request_context(
    posthog_events: CapturedEvents,
) -> None:
    response = Client().get("/stream?chunks=3", **{DISTINCT: "streamer", SESSION: "s-1"})
    assert response.status_code == 200
    assert response.streaming
    # The content is produced here, after the middleware returned, in another context.
    with posthog_logging.new_context():
        posthog_logging.identify_context("the-consumer")
        body = b"".join(response.streaming_content)
        assert posthog_logging.get_context_distinct_id() == "the-consumer"
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"
    events = posthog_events.find("chunk_sent")
    assert [e["properties"]["i"] for e in events] == [0, 1, 2]
    for event in events:
        props = event["properties"]
        assert event["distinct_id"] == "streamer"
        assert props["seen_distinct_id"] == "streamer"
        assert props["$session_id"] == props["seen_session_id"] == "s-1"
        assert props["$request_path"] == "/stream"
    assert current_state().depth == 0


def test_streaming_response_error_captured_once(
    posthog_events: CapturedEvents, root_handlers: Records
) -> None:
    response = Client().get("/stream-boom", **{DISTINCT: "streamer"})
    assert response.status_code == 200
    with pytest.raises(project.ViewFailed):
        b"".join(response.streaming_content)
    event = only(posthog_events.exceptions)
    assert event["distinct_id"] == "streamer"
    assert event["properties"]["$exception_source"] == "django.middleware"
    assert event["properties"]["$request_path"] == "/stream-boom"


# -- no leaks between requests --------------------------------------------------------------


def test_requests_one_after_another_never_leak(posthog_events: CapturedEvents) -> None:
    client = Client()
    client.get("/hello?n=1", **{DISTINCT: "first-user", SESSION: "first-session"})
    client.get("/identify-in-view?as=set-by-view", **{SESSION: "second-session"})
    client.get("/hello?n=3")
    client.get("/hello?n=4", **{DISTINCT: "fourth-user"})

    posthog_events.assert_captured("hello_viewed", distinct_id="first-user", n="1")
    in_view = posthog_events.assert_captured("identified_in_view", distinct_id="set-by-view")
    assert in_view["properties"]["set_in_view"] is True
    assert in_view["properties"]["$session_id"] == "second-session"
    third = only(posthog_events.find("hello_viewed", n="3"))
    assert_anonymous(third)
    assert "$session_id" not in third["properties"]
    assert "set_in_view" not in third["properties"]
    fourth = only(posthog_events.find("hello_viewed", n="4"))
    assert fourth["distinct_id"] == "fourth-user"
    assert "$session_id" not in fourth["properties"]
    # The test client runs requests on this thread: nothing stayed behind here either.
    assert current_state().depth == 0
    assert posthog_logging.get_context_distinct_id() is None


# -- async ----------------------------------------------------------------------------------


def test_async_view_with_identity_session_and_tags(posthog_events: CapturedEvents) -> None:
    async def main() -> None:
        with override_settings(POSTHOG_LOGGING={"identify": project.identify}):
            client = AsyncClient()
            response = await client.get(
                "/async/hello?n=1",
                headers={"X-App-User": "async-user", "X-POSTHOG-SESSION-ID": "async-session"},
            )
            assert response.status_code == 200
            response = await client.get(
                "/async/hello?n=2", headers={"X-POSTHOG-DISTINCT-ID": "header-user"}
            )
            assert response.status_code == 200

    asyncio.run(main())
    # The middleware ran in async mode: identify() was called on the event loop.
    assert project.identify_calls == [("async-user", True), (None, True)]
    for name in ("async_viewed", "async_captured"):
        first = posthog_events.assert_captured(name, distinct_id="async-user", n="1")
        props = first["properties"]
        assert props["$session_id"] == "async-session"
        assert props["$request_path"] == "/async/hello"
        assert props["$current_url"] == "http://testserver/async/hello?n=1"
        second = posthog_events.assert_captured(name, distinct_id="header-user", n="2")
        assert "$session_id" not in second["properties"]


def test_sync_view_in_the_async_stack(posthog_events: CapturedEvents) -> None:
    # The view runs on a worker thread (sync_to_async); the request's context goes along.
    async def main() -> list[int]:
        client = AsyncClient(raise_request_exception=False)
        hello = await client.get("/hello?n=1", headers={"X-POSTHOG-DISTINCT-ID": "mixed-user"})
        boom = await client.get("/boom", headers={"X-POSTHOG-DISTINCT-ID": "mixed-user"})
        return [hello.status_code, boom.status_code]

    assert asyncio.run(main()) == [200, 500]
    posthog_events.assert_captured("hello_viewed", distinct_id="mixed-user", count=1)
    event = only(posthog_events.exceptions)
    assert event["distinct_id"] == "mixed-user"
    assert event["properties"]["$exception_source"] == "django.middleware"
    assert event["properties"]["$request_path"] == "/boom"


def test_concurrent_async_requests_are_isolated(posthog_events: CapturedEvents) -> None:
    count = 30

    async def one(client: AsyncClient, i: int) -> int:
        headers = {"X-POSTHOG-DISTINCT-ID": f"user-{i}"}
        if i % 2:
            headers["X-POSTHOG-SESSION-ID"] = f"session-{i}"
        response = await client.get(f"/async/hello?n={i}", headers=headers)
        return int(response.status_code)

    async def main() -> list[int]:
        client = AsyncClient()
        return await asyncio.gather(*(one(client, i) for i in range(count)))

    assert asyncio.run(main()) == [200] * count
    for name in ("async_viewed", "async_captured"):
        events = posthog_events.find(name)
        assert len(events) == count
        for event in events:
            i = int(event["properties"]["n"])
            props = event["properties"]
            assert event["distinct_id"] == f"user-{i}"
            assert props.get("$session_id") == (f"session-{i}" if i % 2 else None)
            assert props["$current_url"] == f"http://testserver/async/hello?n={i}"
            if name == "async_viewed":
                assert props["seen_distinct_id"] == f"user-{i}"


def test_async_view_exception_captured_once(
    posthog_events: CapturedEvents, root_handlers: Records
) -> None:
    async def main() -> int:
        client = AsyncClient(raise_request_exception=False)
        response = await client.get("/async/boom", headers={"X-POSTHOG-DISTINCT-ID": "a-user"})
        return int(response.status_code)

    assert asyncio.run(main()) == 500
    assert [r for r in root_handlers.records if r.name == "django.request" and r.exc_info]
    event = only(posthog_events.exceptions)
    assert event["distinct_id"] == "a-user"
    assert event["properties"]["$exception_source"] == "django.middleware"
    assert event["properties"]["$request_path"] == "/async/boom"


def test_async_streaming_response_produced_in_the_request_context(
    posthog_events: CapturedEvents,
) -> None:
    async def main() -> bytes:
        client = AsyncClient()
        response = await client.get(
            "/async/stream", headers={"X-POSTHOG-DISTINCT-ID": "async-streamer"}
        )
        assert response.streaming
        with posthog_logging.new_context():
            posthog_logging.identify_context("the-consumer")
            return b"".join([chunk async for chunk in response.streaming_content])

    assert asyncio.run(main()) == b"chunk 0\nchunk 1\nchunk 2\n"
    events = posthog_events.find("async_chunk_sent")
    assert [e["properties"]["i"] for e in events] == [0, 1, 2]
    for event in events:
        assert event["distinct_id"] == "async-streamer"
        assert event["properties"]["seen_distinct_id"] == "async-streamer"
        assert event["properties"]["$request_path"] == "/async/stream"


def test_sync_stream_under_the_async_stack(posthog_events: CapturedEvents) -> None:
    async def main() -> bytes:
        response = await AsyncClient().get(
            "/stream?chunks=2", headers={"X-POSTHOG-DISTINCT-ID": "mixed-streamer"}
        )
        assert not response.is_async
        with posthog_logging.new_context():
            posthog_logging.identify_context("the-consumer")
            return b"".join(response.streaming_content)

    assert asyncio.run(main()) == b"chunk 0\nchunk 1\n"
    events = posthog_events.find("chunk_sent")
    assert [e["distinct_id"] for e in events] == ["mixed-streamer"] * 2


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous")
def test_async_stream_under_the_sync_stack(posthog_events: CapturedEvents) -> None:
    response = Client().get("/async/stream", **{DISTINCT: "mixed-streamer"})
    assert response.is_async
    # What a WSGI server does: iterate the response (Django consumes it on an event loop).
    with posthog_logging.new_context():
        posthog_logging.identify_context("the-consumer")
        assert b"".join(list(response)) == b"chunk 0\nchunk 1\nchunk 2\n"
    events = posthog_events.find("async_chunk_sent")
    assert [e["distinct_id"] for e in events] == ["mixed-streamer"] * 3
    assert [e["properties"]["seen_distinct_id"] for e in events] == ["mixed-streamer"] * 3


class TestThroughTheLocalServer:
    """The same middleware, sending over HTTP to the local PostHog-compatible server."""

    def test_concurrent_requests_events_and_errors_arrive_with_their_context(
        self, default_client: posthog_logging.Client, server: LocalServer
    ) -> None:
        """Concurrent async requests: events and errors reach the server with their own
        person, session and request tags."""
        count = 10

        async def one(client: AsyncClient, i: int) -> None:
            headers = {"X-POSTHOG-DISTINCT-ID": f"e2e-{i}", "X-POSTHOG-SESSION-ID": f"s-{i}"}
            await client.get(f"/async/hello?n={i}", headers=headers)
            await client.get("/async/boom", headers=headers)

        async def main() -> None:
            client = AsyncClient(raise_request_exception=False)
            await asyncio.gather(*(one(client, i) for i in range(count)))

        asyncio.run(main())
        assert default_client.flush(10)
        viewed = server.wait_for_events(count, event="async_viewed")
        errors = server.wait_for_events(count, event="$exception")
        for event in viewed:
            i = int(event["properties"]["n"])
            assert event["distinct_id"] == f"e2e-{i}"
            assert event["properties"]["$session_id"] == f"s-{i}"
            assert event["properties"]["$request_path"] == "/async/hello"
        assert sorted(e["distinct_id"] for e in errors) == sorted(f"e2e-{i}" for i in range(count))
        for error in errors:
            i = int(error["distinct_id"].removeprefix("e2e-"))
            assert error["properties"]["$session_id"] == f"s-{i}"
            assert error["properties"]["$request_path"] == "/async/boom"
            assert error["properties"]["$exception_source"] == "django.middleware"
