"""Tests for the web middlewares (posthog_logging.wsgi, posthog_logging.asgi, _web).

End-to-end cases serve a real application on loopback (Flask behind werkzeug's WSGI
server, FastAPI/Starlette behind uvicorn), send real HTTP requests, and read what the
local PostHog-compatible server received. Delivery checks flush the client, then poll
the server with a deadline. Cases where the wire is not the point use ``posthog_events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import requests
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse
from flask import Flask, Response
from starlette.applications import Starlette
from starlette.routing import Route
from websockets.sync.client import connect as ws_connect
from werkzeug.serving import make_server
from werkzeug.test import Client as WerkzeugClient

import posthog_logging
from posthog_logging import Client, PostHogHandler
from posthog_logging.asgi import PostHogASGIMiddleware, _path
from posthog_logging.contexts import current_state, get_context_distinct_id
from posthog_logging.server import LocalServer
from posthog_logging.testing import CapturedEvents
from posthog_logging.web import Request, RequestOptions, client_ip
from posthog_logging.wsgi import PostHogWSGIMiddleware

from .helpers import delivered, only

WAIT = 5.0
DISTINCT = "X-POSTHOG-DISTINCT-ID"
SESSION = "X-POSTHOG-SESSION-ID"


# -- helpers ---------------------------------------------------------------------------


def settled(client: Client, server: LocalServer, **filters: Any) -> list[dict]:
    """Every matching event, once everything ``client`` queued so far has been sent."""
    assert client.flush(WAIT)
    return server.events(**filters)


def mark(log: logging.Logger, name: str, **properties: Any) -> None:
    """Log a marked record: the event ``name`` with ``properties``."""
    log.info(name, extra={"event": True, **properties})


@contextlib.contextmanager
def serve_wsgi(app: Any, *, threaded: bool = True) -> Iterator[str]:
    """Serve ``app`` with werkzeug's WSGI server on a free loopback port; yield its URL."""
    srv = make_server("127.0.0.1", 0, app, threaded=threaded)
    thread = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.05}, name="wsgi-server", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(WAIT)


@contextlib.contextmanager
def serve_asgi(app: Any, **options: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yield its URL."""
    options.setdefault("proxy_headers", False)  # the peer is the socket's, as the app sees it
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_level="warning",
        log_config=None,
        ws="websockets-sansio",
        **options,
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="asgi-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not srv.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited before it started")
            if time.monotonic() >= deadline:
                raise TimeoutError("uvicorn did not start within 10s")
            time.sleep(0.01)
        port = srv.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A requests session that ignores proxy settings from the environment."""
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


def flask_app(log: logging.Logger) -> Flask:
    """A Flask application whose views log marked records to ``log``."""
    app = Flask(f"test_web_{uuid.uuid4().hex[:8]}")

    @app.route("/page", methods=["GET", "POST"])
    def page() -> str:
        mark(log, "page_viewed")
        return "ok"

    @app.get("/fail")
    def fail() -> str:
        raise RuntimeError("the view failed")

    @app.get("/slow/<int:n>")
    def slow(n: int) -> str:
        time.sleep(0.01)
        mark(log, "slow_done", n=n)
        return str(n)

    @app.get("/stream")
    def stream() -> Response:
        posthog_logging.tag("order", 7)

        def chunks() -> Iterator[str]:
            for i in range(3):
                mark(log, "chunk_sent", n=i)
                yield f"{i}\n"

        return Response(chunks(), mimetype="text/plain")

    @app.get("/broken-stream")
    def broken_stream() -> Response:
        def chunks() -> Iterator[str]:
            mark(log, "chunk_sent", n=0)
            yield "0\n"
            raise RuntimeError("failed mid-stream")

        return Response(chunks(), mimetype="text/plain")

    return app


def wrapped_flask(log: logging.Logger, client: Client, **options: Any) -> Flask:
    """The Flask application of :func:`flask_app` behind the WSGI middleware."""
    app = flask_app(log)
    app.wsgi_app = PostHogWSGIMiddleware(app.wsgi_app, client=client, **options)  # type: ignore[method-assign]
    return app


def fastapi_app(log: logging.Logger, client: Client, **options: Any) -> FastAPI:
    """A FastAPI application behind the ASGI middleware (added with add_middleware)."""
    app = FastAPI()

    @app.get("/page")
    async def page() -> PlainTextResponse:
        mark(log, "page_viewed")
        return PlainTextResponse("ok")

    @app.get("/fail")
    async def fail() -> None:
        raise RuntimeError("the route failed")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            for i in range(3):
                client.capture("chunk_sent", {"n": i})
                await asyncio.sleep(0)
                yield f"{i}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/broken-stream")
    async def broken_stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            client.capture("chunk_sent", {"n": 0})
            yield "0\n"
            raise RuntimeError("failed mid-stream")

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/concurrent/{n}")
    async def concurrent(n: int) -> PlainTextResponse:
        seen = get_context_distinct_id()
        posthog_logging.identify_context(f"user-{n}")
        await asyncio.sleep(0.01)
        client.capture("concurrent_done", {"n": n, "seen": seen})
        return PlainTextResponse(str(n))

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                mark(log, "ws_message", text=text)
                await websocket.send_text(f"echo:{text}")
        except WebSocketDisconnect:
            pass

    app.add_middleware(PostHogASGIMiddleware, client=client, **options)
    return app


# -- WSGI: Flask behind werkzeug's server ------------------------------------------------


class TestWSGIRequestContext:
    def test_identity_and_session_come_from_posthog_headers(
        self, client: Client, server: LocalServer, logger: logging.Logger, http: requests.Session
    ) -> None:
        """Events logged in a request carry the distinct id and session the headers name."""
        with serve_wsgi(wrapped_flask(logger, client)) as base:
            answer = http.get(f"{base}/page", headers={DISTINCT: "user-1", SESSION: "s-1"})
        assert answer.status_code == 200
        event = only(delivered(client, server, event="page_viewed"))
        assert event["distinct_id"] == "user-1"
        assert event["properties"]["$session_id"] == "s-1"
        assert "$process_person_profile" not in event["properties"]

    def test_request_without_headers_is_personless(
        self, client: Client, server: LocalServer, logger: logging.Logger, http: requests.Session
    ) -> None:
        """Without an identity header the event is personless and has no session."""
        with serve_wsgi(wrapped_flask(logger, client)) as base:
            assert http.get(f"{base}/page").status_code == 200
        props = only(delivered(client, server, event="page_viewed"))["properties"]
        assert props["$process_person_profile"] is False
        assert "$session_id" not in props
        assert props["$request_path"] == "/page"

    def test_identify_hook_wins_over_header(
        self, client: Client, server: LocalServer, logger: logging.Logger, http: requests.Session
    ) -> None:
        """The application's own user lookup beats the header; the header is the fallback."""

        def identify(environ: dict[str, Any]) -> Any:
            return environ.get("HTTP_X_USER_ID")

        app = wrapped_flask(logger, client, identify=identify)
        with serve_wsgi(app) as base:
            http.get(f"{base}/page", headers={DISTINCT: "header-user", "X-User-Id": "app-user"})
            http.get(f"{base}/page", headers={DISTINCT: "header-only"})
        events = delivered(client, server, 2, event="page_viewed")
        assert [e["distinct_id"] for e in events] == ["app-user", "header-only"]

    def test_request_tags(
        self, client: Client, server: LocalServer, logger: logging.Logger, http: requests.Session
    ) -> None:
        """URL, method, path and user agent are tags of every event in the request."""
        with serve_wsgi(wrapped_flask(logger, client)) as base:
            answer = http.post(
                f"{base}/page?page=2&sort=asc", headers={"User-Agent": "web-tests/1.0"}
            )
        assert answer.status_code == 200
        props = only(delivered(client, server, event="page_viewed"))["properties"]
        assert props["$current_url"] == f"{base}/page?page=2&sort=asc"
        assert props["$request_method"] == "POST"
        assert props["$request_path"] == "/page"
        assert props["$raw_user_agent"] == "web-tests/1.0"

    def test_secret_query_values_are_filtered_from_url(
        self, client: Client, server: LocalServer, logger: logging.Logger, http: requests.Session
    ) -> None:
        """A secret-looking query parameter's value is sent as [Filtered]; others stay."""
        with serve_wsgi(wrapped_flask(logger, client)) as base:
            http.get(f"{base}/page?token=abc&page=2")
        props = only(delivered(client, server, event="page_viewed"))["properties"]
        assert props["$current_url"] == f"{base}/page?token=[Filtered]&page=2"
        assert "abc" not in str(props)

    def test_no_ip_by_default(
        self, client: Client, server: LocalServer, logger: logging.Logger, http: requests.Session
    ) -> None:
        """Without capture_ip no $ip is sent and PostHog's geolocation stays off."""
        with serve_wsgi(wrapped_flask(logger, client, trusted_proxies=1)) as base:
            http.get(f"{base}/page", headers={"X-Forwarded-For": "203.0.113.7"})
        props = only(delivered(client, server, event="page_viewed"))["properties"]
        assert "$ip" not in props
        assert props["$geoip_disable"] is True

    @pytest.mark.parametrize(
        ("trusted_proxies", "forwarded", "expected"),
        [
            pytest.param(0, "203.0.113.7", "127.0.0.1", id="peer-header-ignored"),
            pytest.param(1, "6.6.6.6, 203.0.113.7", "203.0.113.7", id="one-proxy"),
            pytest.param(2, "6.6.6.6, 203.0.113.7, 10.0.0.2", "203.0.113.7", id="two-proxies"),
            pytest.param(1, None, "127.0.0.1", id="no-header-uses-peer"),
            pytest.param(2, "203.0.113.7", "203.0.113.7", id="fewer-hops-than-proxies"),
        ],
    )
    def test_capture_ip(
        self,
        client: Client,
        server: LocalServer,
        logger: logging.Logger,
        http: requests.Session,
        trusted_proxies: int,
        forwarded: str | None,
        expected: str,
    ) -> None:
        """With capture_ip, $ip is the peer or the right X-Forwarded-For hop; geoip is on."""
        app = wrapped_flask(logger, client, capture_ip=True, trusted_proxies=trusted_proxies)
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        with serve_wsgi(app) as base:
            http.get(f"{base}/page", headers=headers)
        props = only(delivered(client, server, event="page_viewed"))["properties"]
        assert props["$ip"] == expected
        assert props["$geoip_disable"] is False


class TestWSGIErrors:
    def test_raw_app_error_is_captured_once_with_context_and_reraised(
        self, client: Client, server: LocalServer, http: requests.Session
    ) -> None:
        """A WSGI app's exception is sent once with the request's context; the server says 500."""

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            raise RuntimeError("raw app failed")

        with serve_wsgi(PostHogWSGIMiddleware(app, client=client)) as base:
            answer = http.get(f"{base}/explode?x=1", headers={DISTINCT: "user-err", SESSION: "s"})
        assert answer.status_code == 500
        delivered(client, server, event="$exception")
        event = only(settled(client, server, event="$exception"))
        props = event["properties"]
        assert event["distinct_id"] == "user-err"
        assert props["$session_id"] == "s"
        assert props["$request_path"] == "/explode"
        assert props["$current_url"] == f"{base}/explode?x=1"
        assert props["$exception_source"] == "wsgi.middleware"
        [exc] = props["$exception_list"]
        assert (exc["type"], exc["value"]) == ("RuntimeError", "raw app failed")
        assert exc["mechanism"]["type"] == "middleware"
        assert exc["mechanism"]["handled"] is False

    def test_flask_view_error_is_sent_once_through_logging(
        self, client: Client, server: LocalServer, http: requests.Session
    ) -> None:
        """A Flask view error, logged by Flask, reaches PostHog once with the request's tags."""
        handler = PostHogHandler(client=client)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            app = wrapped_flask(logging.getLogger("test.web.unused"), client)
            with serve_wsgi(app) as base:
                answer = http.get(f"{base}/fail", headers={DISTINCT: "flask-user"})
            assert answer.status_code == 500
            delivered(client, server, event="$exception")
            event = only(settled(client, server, event="$exception"))
        finally:
            root.removeHandler(handler)
            handler.close()
        props = event["properties"]
        assert event["distinct_id"] == "flask-user"
        assert props["$request_path"] == "/fail"
        assert props["$request_method"] == "GET"
        assert props["$exception_list"][0]["value"] == "the view failed"

    def test_capture_exceptions_off_reraises_without_sending(
        self, posthog_events: CapturedEvents
    ) -> None:
        """With capture_exceptions=False the error is re-raised and nothing is sent."""
        failure = RuntimeError("not sent")

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            raise failure

        wrapped = PostHogWSGIMiddleware(app, capture_exceptions=False)
        with pytest.raises(RuntimeError) as raised:
            WerkzeugClient(wrapped).get("/", headers={DISTINCT: "u"})
        assert raised.value is failure
        assert posthog_events.exceptions == []

    def test_error_leaves_caller_context_untouched(self, posthog_events: CapturedEvents) -> None:
        """After a failed request the calling thread is outside any context again."""
        failure = ValueError("bad")

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            raise failure

        with pytest.raises(ValueError) as raised:
            WerkzeugClient(PostHogWSGIMiddleware(app)).get("/", headers={DISTINCT: "u"})
        assert raised.value is failure
        assert current_state().depth == 0
        assert get_context_distinct_id() is None
        posthog_events.assert_captured("$exception", distinct_id="u", count=1)


class TestWSGIStreaming:
    def test_streamed_chunks_are_logged_in_the_request_context(
        self, client: Client, server: LocalServer, logger: logging.Logger, http: requests.Session
    ) -> None:
        """Events logged while a generator body streams carry the request's identity and tags."""
        with serve_wsgi(wrapped_flask(logger, client)) as base:
            answer = http.get(f"{base}/stream", headers={DISTINCT: "streamer"})
        assert answer.text == "0\n1\n2\n"
        events = delivered(client, server, 3, event="chunk_sent")
        assert [e["properties"]["n"] for e in events] == [0, 1, 2]
        for event in events:
            assert event["distinct_id"] == "streamer"
            assert event["properties"]["order"] == 7
            assert event["properties"]["$request_path"] == "/stream"

    def test_error_mid_stream_is_captured_once(
        self, client: Client, server: LocalServer, logger: logging.Logger, http: requests.Session
    ) -> None:
        """An exception raised while the body streams is sent once, with the request identity."""
        with serve_wsgi(wrapped_flask(logger, client)) as base:
            try:
                with http.get(
                    f"{base}/broken-stream", headers={DISTINCT: "streamer"}, stream=True, timeout=5
                ) as answer:
                    body = b"".join(answer.iter_content(chunk_size=None))
            except requests.RequestException:  # the server drops the unfinished response
                body = None
        assert body in (None, b"0\n")
        delivered(client, server, event="$exception")
        exc_event = only(settled(client, server, event="$exception"))
        assert exc_event["distinct_id"] == "streamer"
        assert exc_event["properties"]["$request_path"] == "/broken-stream"
        assert exc_event["properties"]["$exception_list"][0]["value"] == "failed mid-stream"
        chunk = only(server.events(event="chunk_sent"))
        assert chunk["distinct_id"] == "streamer"


class TestWSGIIsolation:
    def test_concurrent_requests_never_mix_identities(
        self, client: Client, server: LocalServer, logger: logging.Logger, http: requests.Session
    ) -> None:
        """Twenty parallel requests, each with its own distinct id, never log as another."""
        with serve_wsgi(wrapped_flask(logger, client)) as base:

            def get(n: int) -> int:
                with requests.Session() as session:
                    session.trust_env = False
                    answer = session.get(f"{base}/slow/{n}", headers={DISTINCT: f"user-{n}"})
                    return answer.status_code

            with ThreadPoolExecutor(max_workers=20) as pool:
                assert list(pool.map(get, range(20))) == [200] * 20
        events = delivered(client, server, 20, event="slow_done")
        assert len(events) == 20
        assert sorted(e["properties"]["n"] for e in events) == list(range(20))
        for event in events:
            assert event["distinct_id"] == f"user-{event['properties']['n']}"

    def test_nothing_leaks_into_the_server_thread(
        self, client: Client, server: LocalServer, logger: logging.Logger, http: requests.Session
    ) -> None:
        """Logs around requests on the server thread carry no identity; requests start empty."""
        inner = PostHogWSGIMiddleware(flask_app(logger).wsgi_app, client=client)

        def outer(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
            mark(logger, "outside_before", worker=threading.get_ident())
            body = inner(environ, start_response)
            try:
                yield from body
            finally:
                body.close()  # type: ignore[attr-defined]
                mark(logger, "outside_after", worker=threading.get_ident())

        with serve_wsgi(outer, threaded=False) as base:
            headers = {DISTINCT: "user-a", SESSION: "s-a"}
            assert http.get(f"{base}/page", headers=headers).status_code == 200
            assert http.get(f"{base}/page").status_code == 200
        outside = delivered(client, server, 2, event="outside_before")
        outside += delivered(client, server, 2, event="outside_after")
        assert len({e["properties"]["worker"] for e in outside}) == 1
        for event in outside:
            props = event["properties"]
            assert props["$process_person_profile"] is False, event
            assert "$session_id" not in props
            assert "$request_path" not in props
        pages = server.events(event="page_viewed")
        assert len(pages) == 2
        assert pages[0]["distinct_id"] == "user-a"
        assert pages[1]["properties"]["$process_person_profile"] is False
        assert "$session_id" not in pages[1]["properties"]

    def test_non_ascii_path_is_decoded(self, posthog_events: CapturedEvents) -> None:
        """A percent-encoded UTF-8 path is tagged as the text the user sees, as in ASGI."""
        log = logging.getLogger(f"test.web.{uuid.uuid4().hex[:8]}")
        handler = PostHogHandler()
        log.addHandler(handler)
        log.propagate = False
        log.setLevel(logging.INFO)
        app = Flask("non_ascii")

        @app.get("/<name>")
        def named(name: str) -> str:
            mark(log, "named", label=name)
            return name

        app.wsgi_app = PostHogWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
        try:
            assert WerkzeugClient(app).get("/caf%C3%A9").status_code == 200
        finally:
            log.removeHandler(handler)
            handler.close()
        event = posthog_events.assert_captured("named", label="café")
        assert event["properties"]["$request_path"] == "/café"


# -- ASGI: FastAPI and Starlette behind uvicorn -----------------------------------------


class TestASGIRequestContext:
    def test_identity_session_and_tags(
        self, client: Client, server: LocalServer, logger: logging.Logger
    ) -> None:
        """Route events carry header identity, session, URL (filtered), method, path, agent."""
        headers = {DISTINCT: "asgi-user", SESSION: "asgi-s", "User-Agent": "web-tests/2.0"}
        with serve_asgi(fastapi_app(logger, client)) as base:
            answer = httpx.get(f"{base}/page?token=abc&page=2", headers=headers, trust_env=False)
        assert answer.status_code == 200
        event = only(delivered(client, server, event="page_viewed"))
        props = event["properties"]
        assert event["distinct_id"] == "asgi-user"
        assert props["$session_id"] == "asgi-s"
        assert props["$current_url"] == f"{base}/page?token=[Filtered]&page=2"
        assert props["$request_method"] == "GET"
        assert props["$request_path"] == "/page"
        assert props["$raw_user_agent"] == "web-tests/2.0"
        assert "$ip" not in props
        assert props["$geoip_disable"] is True

    def test_identify_hook_gets_scope_and_wins(
        self, client: Client, server: LocalServer, logger: logging.Logger
    ) -> None:
        """identify(scope) beats the header when it finds a user."""

        def identify(scope: dict[str, Any]) -> Any:
            return dict(scope["headers"]).get(b"x-user-id", b"").decode() or None

        app = fastapi_app(logger, client, identify=identify)
        with serve_asgi(app) as base:
            headers = {DISTINCT: "header-user", "X-User-Id": "app-user"}
            httpx.get(f"{base}/page", headers=headers, trust_env=False)
            httpx.get(f"{base}/page", headers={DISTINCT: "header-only"}, trust_env=False)
        events = delivered(client, server, 2, event="page_viewed")
        assert [e["distinct_id"] for e in events] == ["app-user", "header-only"]

    @pytest.mark.parametrize(
        ("trusted_proxies", "forwarded", "expected"),
        [
            pytest.param(0, "203.0.113.7", "127.0.0.1", id="peer"),
            pytest.param(1, "6.6.6.6, 203.0.113.7", "203.0.113.7", id="one-proxy"),
            pytest.param(3, "203.0.113.7, 10.0.0.2", "203.0.113.7", id="fewer-hops"),
        ],
    )
    def test_capture_ip(
        self,
        client: Client,
        server: LocalServer,
        logger: logging.Logger,
        trusted_proxies: int,
        forwarded: str,
        expected: str,
    ) -> None:
        """With capture_ip the client's address is $ip and geolocation is turned on."""
        app = fastapi_app(logger, client, capture_ip=True, trusted_proxies=trusted_proxies)
        with serve_asgi(app) as base:
            httpx.get(f"{base}/page", headers={"X-Forwarded-For": forwarded}, trust_env=False)
        props = only(delivered(client, server, event="page_viewed"))["properties"]
        assert props["$ip"] == expected
        assert props["$geoip_disable"] is False

    def test_root_path_is_counted_once(
        self, client: Client, server: LocalServer, logger: logging.Logger
    ) -> None:
        """Behind a root path, $request_path is the full path, with the prefix once."""
        with serve_asgi(fastapi_app(logger, client), root_path="/api") as base:
            answer = httpx.get(f"{base}/page", trust_env=False)
        assert answer.status_code == 200
        props = only(delivered(client, server, event="page_viewed"))["properties"]
        assert props["$request_path"] == "/api/page"
        assert props["$current_url"] == f"{base}/api/page"


class TestASGIErrorsAndStreaming:
    def test_route_error_is_captured_once_with_context_and_reraised(
        self, client: Client, server: LocalServer, logger: logging.Logger
    ) -> None:
        """A FastAPI route's exception is sent once with the request's context (500 answered)."""
        with serve_asgi(fastapi_app(logger, client)) as base:
            answer = httpx.get(f"{base}/fail", headers={DISTINCT: "asgi-err"}, trust_env=False)
        assert answer.status_code == 500
        delivered(client, server, event="$exception")
        event = only(settled(client, server, event="$exception"))
        props = event["properties"]
        assert event["distinct_id"] == "asgi-err"
        assert props["$request_path"] == "/fail"
        assert props["$exception_source"] == "asgi.middleware"
        [exc] = props["$exception_list"]
        assert (exc["type"], exc["value"]) == ("RuntimeError", "the route failed")
        assert exc["mechanism"]["type"] == "middleware"

    def test_streaming_response_chunks_carry_identity(
        self, client: Client, server: LocalServer, logger: logging.Logger
    ) -> None:
        """Events captured by a StreamingResponse async generator carry the request identity."""
        with serve_asgi(fastapi_app(logger, client)) as base:
            answer = httpx.get(f"{base}/stream", headers={DISTINCT: "streamer"}, trust_env=False)
        assert answer.text == "0\n1\n2\n"
        events = delivered(client, server, 3, event="chunk_sent")
        assert [e["properties"]["n"] for e in events] == [0, 1, 2]
        for event in events:
            assert event["distinct_id"] == "streamer"
            assert event["properties"]["$request_path"] == "/stream"

    def test_error_mid_stream_is_captured_once_as_itself(
        self, client: Client, server: LocalServer, logger: logging.Logger
    ) -> None:
        """A mid-stream exception is sent once, as itself (no group), with the request identity."""
        app = fastapi_app(logger, client)
        # the server drops the unfinished response: the client may see an error
        with serve_asgi(app) as base, contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{base}/broken-stream", headers={DISTINCT: "s"}, trust_env=False)
        delivered(client, server, event="$exception")
        event = only(settled(client, server, event="$exception"))
        assert event["distinct_id"] == "s"
        exc = event["properties"]["$exception_list"][0]
        assert (exc["type"], exc["value"]) == ("RuntimeError", "failed mid-stream")

    def test_error_is_reraised_unchanged_and_context_left(
        self, posthog_events: CapturedEvents
    ) -> None:
        """The very exception leaves the middleware, after one capture; no context remains."""
        failure = RuntimeError("raw asgi failed")

        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise failure

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            return None

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/x",
            "headers": [(b"x-posthog-distinct-id", b"raw-user")],
            "client": ("127.0.0.1", 5000),
        }
        with pytest.raises(RuntimeError) as raised:
            asyncio.run(PostHogASGIMiddleware(app)(scope, receive, send))
        assert raised.value is failure
        assert current_state().depth == 0
        event = posthog_events.assert_captured("$exception", distinct_id="raw-user", count=1)
        assert event["properties"]["$request_path"] == "/x"

    def test_websocket_error_is_captured_once(
        self, client: Client, server: LocalServer, logger: logging.Logger
    ) -> None:
        """An exception in a websocket endpoint is sent once with the handshake's identity."""
        app = fastapi_app(logger, client)

        @app.websocket("/ws-fail")
        async def ws_fail(websocket: WebSocket) -> None:
            await websocket.accept()
            await websocket.receive_text()
            raise RuntimeError("websocket handler failed")

        with serve_asgi(app) as base:
            url = base.replace("http://", "ws://") + "/ws-fail"
            with ws_connect(url, additional_headers={DISTINCT: "ws-err"}) as ws:
                ws.send("boom")
                with contextlib.suppress(Exception):  # the server closes the connection
                    ws.recv(timeout=WAIT)
        delivered(client, server, event="$exception")
        event = only(settled(client, server, event="$exception"))
        assert event["distinct_id"] == "ws-err"
        assert event["properties"]["$request_path"] == "/ws-fail"
        assert "$request_method" not in event["properties"]
        assert event["properties"]["$exception_list"][0]["value"] == "websocket handler failed"


class TestASGIWebsocketAndLifespan:
    def test_websocket_messages_carry_handshake_identity(
        self, client: Client, server: LocalServer, logger: logging.Logger
    ) -> None:
        """Websocket message events carry the handshake's identity and session, no method."""
        with serve_asgi(fastapi_app(logger, client)) as base:
            url = base.replace("http://", "ws://") + "/ws?token=abc"
            headers = {DISTINCT: "ws-user", SESSION: "ws-s"}
            with ws_connect(url, additional_headers=headers, open_timeout=WAIT) as ws:
                for text in ("hello", "again"):
                    ws.send(text)
                    assert ws.recv(timeout=WAIT) == f"echo:{text}"
        events = delivered(client, server, 2, event="ws_message")
        assert [e["properties"]["text"] for e in events] == ["hello", "again"]
        for event in events:
            props = event["properties"]
            assert event["distinct_id"] == "ws-user"
            assert props["$session_id"] == "ws-s"
            assert props["$request_path"] == "/ws"
            assert props["$current_url"] == url.replace("token=abc", "token=[Filtered]")
            assert "$request_method" not in props

    def test_lifespan_passes_through(
        self, client: Client, logger: logging.Logger, posthog_events: CapturedEvents
    ) -> None:
        """Lifespan startup/shutdown reach the app outside any context; nothing is sent."""
        seen: dict[str, Any] = {}

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            seen["startup_depth"] = current_state().depth
            yield
            seen["shutdown"] = True

        async def page(request: Any) -> PlainTextResponse:
            mark(logger, "page_viewed")
            return PlainTextResponse("ok")

        inner = Starlette(routes=[Route("/page", page)], lifespan=lifespan)
        with serve_asgi(PostHogASGIMiddleware(inner, client=client)) as base:
            assert seen == {"startup_depth": 0}
            answer = httpx.get(f"{base}/page", headers={DISTINCT: "u"}, trust_env=False)
            assert answer.status_code == 200
        assert seen == {"startup_depth": 0, "shutdown": True}
        assert posthog_events.names == ["page_viewed"]

    def test_lifespan_scope_is_handed_over_unchanged(self) -> None:
        """A lifespan scope reaches the app unchanged, with no context opened around it."""
        calls: list[tuple[Any, ...]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            calls.append((scope, receive, send, current_state().depth))

        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.startup"}

        async def send(message: Any) -> None:
            return None

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        asyncio.run(PostHogASGIMiddleware(app)(scope, receive, send))
        assert calls == [(scope, receive, send, 0)]


class TestASGIIsolation:
    def test_concurrent_requests_never_mix_identities(
        self, client: Client, server: LocalServer, logger: logging.Logger
    ) -> None:
        """Fifty concurrent requests that identify, await, then capture stay isolated."""

        async def run(base: str) -> list[int]:
            async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=WAIT) as http:
                answers = await asyncio.gather(
                    *(
                        http.get(f"/concurrent/{n}", headers={DISTINCT: f"hdr-{n}"})
                        for n in range(50)
                    )
                )
            return [a.status_code for a in answers]

        with serve_asgi(fastapi_app(logger, client)) as base:
            assert asyncio.run(run(base)) == [200] * 50
        events = delivered(client, server, 50, event="concurrent_done")
        assert len(events) == 50
        assert sorted(e["properties"]["n"] for e in events) == list(range(50))
        for event in events:
            n = event["properties"]["n"]
            assert event["distinct_id"] == f"user-{n}"
            assert event["properties"]["seen"] == f"hdr-{n}"


# -- unit level ------------------------------------------------------------------------


class TestRequestOptionsValidation:
    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            pytest.param({"identify": "user"}, TypeError, "identify must be callable", id="id"),
            pytest.param({"trusted_proxies": -1}, ValueError, ">= 0", id="negative-proxies"),
            pytest.param({"trusted_proxies": True}, TypeError, "must be an int", id="bool"),
            pytest.param({"trusted_proxies": 1.0}, TypeError, "must be an int", id="float"),
            pytest.param({"trusted_proxies": "1"}, TypeError, "must be an int", id="str"),
            pytest.param({"client": object()}, TypeError, "posthog_logging.Client", id="client"),
        ],
    )
    @pytest.mark.parametrize(
        "make",
        [
            pytest.param(lambda **o: RequestOptions(**o), id="options"),
            pytest.param(lambda **o: PostHogWSGIMiddleware(lambda e, s: [], **o), id="wsgi"),
            pytest.param(lambda **o: PostHogASGIMiddleware(lambda s, r, w: None, **o), id="asgi"),
        ],
    )
    def test_bad_arguments_are_refused(
        self, make: Callable[..., Any], options: dict[str, Any], error: type, message: str
    ) -> None:
        """A wrong identify, trusted_proxies or client is refused with a message naming it."""
        with pytest.raises(error, match=message):
            make(**options)

    def test_good_arguments_are_kept(self, client: Client) -> None:
        """Valid options are accepted and kept as given."""
        options = RequestOptions(identify=str, capture_ip=1, trusted_proxies=2, client=client)
        assert (options.identify, options.capture_ip, options.trusted_proxies) == (str, True, 2)
        assert options.client is client


class TestIdentifyFailure:
    def test_wsgi_identify_raising_falls_back_to_header_and_warns(
        self, posthog_events: CapturedEvents, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A raising identify() is ignored: header identity used, warning with traceback."""

        def identify(environ: Any) -> Any:
            raise LookupError("user store down")

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            posthog_logging.capture("handled")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        wrapped = PostHogWSGIMiddleware(app, identify=identify)
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            answer = WerkzeugClient(wrapped).get("/", headers={DISTINCT: "header-user"})
        assert answer.status_code == 200
        posthog_events.assert_captured("handled", distinct_id="header-user", count=1)
        assert posthog_events.exceptions == []
        [record] = [r for r in caplog.records if "identify() raised" in r.getMessage()]
        assert record.levelno == logging.WARNING
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], LookupError)

    def test_asgi_identify_raising_falls_back_to_header(
        self, posthog_events: CapturedEvents, caplog: pytest.LogCaptureFixture
    ) -> None:
        """In ASGI too, a failing identify() is ignored and the header's identity used."""

        def identify(scope: Any) -> Any:
            raise LookupError("user store down")

        async def page(request: Any) -> PlainTextResponse:
            posthog_logging.capture("handled")
            return PlainTextResponse("ok")

        app = PostHogASGIMiddleware(Starlette(routes=[Route("/", page)]), identify=identify)

        async def call() -> int:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return (await http.get("/", headers={DISTINCT: "header-user"})).status_code

        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            assert asyncio.run(call()) == 200
        posthog_events.assert_captured("handled", distinct_id="header-user", count=1)
        assert any("identify() raised" in r.getMessage() for r in caplog.records)

    @pytest.mark.parametrize("found", [None, ""], ids=["none", "empty"])
    def test_identify_finding_no_one_keeps_header(
        self, posthog_events: CapturedEvents, found: Any
    ) -> None:
        """identify() returning None or an empty id leaves the header's identity."""

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            posthog_logging.capture("handled")
            start_response("200 OK", [])
            return [b""]

        wrapped = PostHogWSGIMiddleware(app, identify=lambda environ: found)
        WerkzeugClient(wrapped).get("/", headers={DISTINCT: "header-user"})
        posthog_events.assert_captured("handled", distinct_id="header-user", count=1)


class TestASGIPath:
    @pytest.mark.parametrize(
        ("scope", "expected"),
        [
            pytest.param({"path": "/items"}, "/items", id="no-root"),
            pytest.param({"path": "/api/items", "root_path": "/api"}, "/api/items", id="included"),
            pytest.param({"path": "/items", "root_path": "/api"}, "/api/items", id="not-included"),
            pytest.param({"path": "/api", "root_path": "/api"}, "/api", id="root-itself"),
            pytest.param({"path": "", "root_path": ""}, "/", id="empty"),
            pytest.param({}, "/", id="missing"),
        ],
    )
    def test_full_path(self, scope: dict[str, Any], expected: str) -> None:
        """The root path appears once in the path, whether or not the server included it."""
        assert _path({"type": "http", **scope}) == expected

    def test_root_path_prefix_needs_a_segment_boundary(self) -> None:
        """A path that merely starts with the root path's letters still gets the root path."""
        assert _path({"type": "http", "path": "/apiary", "root_path": "/api"}) == "/api/apiary"


class TestClientIP:
    @pytest.mark.parametrize(
        ("trusted", "forwarded", "expected"),
        [
            pytest.param(0, "1.1.1.1", "9.9.9.9", id="no-proxies-peer"),
            pytest.param(1, "1.1.1.1, 2.2.2.2", "2.2.2.2", id="rightmost"),
            pytest.param(2, "1.1.1.1, 2.2.2.2, 3.3.3.3", "2.2.2.2", id="second-from-right"),
            pytest.param(3, "2.2.2.2", "2.2.2.2", id="fewer-hops"),
            pytest.param(1, " , ", "9.9.9.9", id="blank-hops-peer"),
            pytest.param(1, "", "9.9.9.9", id="empty-header-peer"),
        ],
    )
    def test_hop_chosen(self, trusted: int, forwarded: str, expected: str) -> None:
        """The client IP is that many hops from the right of X-Forwarded-For, else the peer."""
        request = Request(
            method="GET",
            scheme="http",
            host="h",
            path="/",
            query="",
            headers={"x-forwarded-for": forwarded},
            peer="9.9.9.9",
        )
        assert client_ip(request, trusted) == expected
