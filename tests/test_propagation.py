"""Tests for outbound propagation (posthog_logging.propagation): a service's outgoing
requests carry its context's person and session to the services it calls.

Two services run on loopback: service A is the test, calling through ``requests`` and
``httpx`` (sync and async) from inside an identified context; service B is a real web
application behind the package's middleware (Flask behind werkzeug's WSGI server, or
Starlette behind uvicorn) logging to the local PostHog-compatible server. Where only
the headers matter, B and C are echo servers that answer with the headers they received.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import requests
import requests.adapters
import uvicorn
from flask import Flask
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.serving import make_server

import posthog_logging
from posthog_logging import Client, PostHogHandler
from posthog_logging.asgi import PostHogASGIMiddleware
from posthog_logging.propagation import (
    DISTINCT_ID,
    SESSION_ID,
    PropagatingAdapter,
    context_from_headers,
    context_headers,
    httpx_request_hook,
    instrument_httpx,
    instrument_requests,
    uninstrument_httpx,
    uninstrument_requests,
)
from posthog_logging.server import LocalServer
from posthog_logging.wsgi import PostHogWSGIMiddleware

from .helpers import delivered, only
from .polling import wait_until

WAIT = 5.0
#: How the echo servers' WSGI environ names the two headers.
ENV_DISTINCT = "HTTP_X_POSTHOG_DISTINCT_ID"
ENV_SESSION = "HTTP_X_POSTHOG_SESSION_ID"
KINDS = ["requests", "httpx", "httpx_async"]

Echo = dict[str, str]


# -- services on loopback ---------------------------------------------------------------


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Serve ``app`` with werkzeug's threaded WSGI server on a free loopback port."""
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.02}, name="wsgi", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(WAIT)


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", log_config=None
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="asgi", daemon=True)
    thread.start()
    try:
        wait_until(lambda: srv.started or not thread.is_alive(), 10, "uvicorn to start")
        assert srv.started, "uvicorn exited before it started"
        yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(10)


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answers with the request's headers (as WSGI names them: ``HTTP_...``), as JSON.
    ``/redirect?to=URL`` answers the same with a 302 to URL."""
    headers = {key: str(value) for key, value in environ.items() if key.startswith("HTTP_")}
    body = json.dumps(headers).encode()
    status, extra = "200 OK", []
    if environ.get("PATH_INFO") == "/redirect":
        status = "302 Found"
        extra = [("Location", parse_qs(environ.get("QUERY_STRING", ""))["to"][0])]
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra],
    )
    return [body]


class Echoes:
    """Two echo services: B, the one A allows, and C, one it does not."""

    def __init__(self, b: str, c: str) -> None:
        self.b, self.c = b, c
        self.allowed = [urlsplit(b).netloc]  # "127.0.0.1:<port>": C differs by its port

    def redirect(self, target: str) -> str:
        """A URL on B that redirects to ``target``."""
        return f"{self.b}/redirect?to={quote(target, safe='')}"


@pytest.fixture
def echoes() -> Iterator[Echoes]:
    """Echo services B and C, each on its own loopback port."""
    with serve_wsgi(echo_app) as b, serve_wsgi(echo_app) as c:
        yield Echoes(b, c)


@pytest.fixture(autouse=True)
def _uninstrumented() -> Iterator[None]:
    """Every test starts and ends with neither library instrumented."""
    uninstrument_requests()
    uninstrument_httpx()
    yield
    uninstrument_requests()
    uninstrument_httpx()


@contextlib.contextmanager
def person(
    distinct_id: str | None = "user-a", session_id: str | None = "session-a"
) -> Iterator[None]:
    """Service A's context: identified as ``distinct_id``, in session ``session_id``."""
    with posthog_logging.new_context():
        if distinct_id is not None:
            posthog_logging.identify_context(distinct_id)
        if session_id is not None:
            posthog_logging.set_context_session(session_id)
        yield


# -- service A's calls ------------------------------------------------------------------


class Caller:
    """Service A's HTTP client of one kind, made before any instrumentation (as an
    application's long-lived session or client is)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment
        self.client = httpx.Client(trust_env=False, follow_redirects=True)

    def get(self, url: str, headers: dict[str, str] | None = None) -> Any:
        """GET ``url`` in the current context; the response (redirects followed)."""
        if self.kind == "requests":
            return self.session.get(url, headers=headers, timeout=WAIT)
        if self.kind == "httpx":
            return self.client.get(url, headers=headers, timeout=WAIT)

        async def fetch() -> httpx.Response:
            async with httpx.AsyncClient(trust_env=False, follow_redirects=True) as client:
                response = await client.get(url, headers=headers, timeout=WAIT)
                await response.aread()
                return response

        return asyncio.run(fetch())  # the task runs in a copy of this context

    def echo(self, url: str, headers: dict[str, str] | None = None) -> Echo:
        """The headers the echo service at ``url`` received."""
        response = self.get(url, headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def instrument(self, allowed_hosts: list[str]) -> None:
        if self.kind == "requests":
            instrument_requests(allowed_hosts=allowed_hosts)
        else:
            instrument_httpx(allowed_hosts=allowed_hosts)

    def uninstrument(self) -> None:
        if self.kind == "requests":
            uninstrument_requests()
        else:
            uninstrument_httpx()

    def close(self) -> None:
        self.session.close()
        self.client.close()


@pytest.fixture(params=KINDS)
def caller(request: pytest.FixtureRequest) -> Iterator[Caller]:
    """Service A's client of each kind in turn."""
    made = Caller(request.param)
    yield made
    made.close()


def propagated(echo: Echo) -> dict[str, str]:
    """Our two headers among those an echo service received."""
    return {key: value for key, value in echo.items() if key in (ENV_DISTINCT, ENV_SESSION)}


# -- service B, logging to PostHog ------------------------------------------------------


def work(log: logging.Logger, run: str) -> None:
    """What service B does for a request: an event, a log line, an error."""
    log.info("b_worked", extra={"event": True, "run": run})
    log.info("b is working on %s", run)
    try:
        raise ValueError(f"b failed on {run}")
    except ValueError:
        log.exception("b could not finish")


def flask_service(log: logging.Logger, client: Client) -> Any:
    """Service B on Flask, behind the WSGI middleware, sending to ``client``."""
    app = Flask(f"service_b_{uuid.uuid4().hex[:8]}")

    @app.get("/work")
    def handle() -> str:
        work(log, flask_request.args["run"])
        return "done"

    app.wsgi_app = PostHogWSGIMiddleware(app.wsgi_app, client=client)  # type: ignore[method-assign]
    return app


def starlette_service(log: logging.Logger, client: Client) -> Any:
    """Service B on Starlette, behind the ASGI middleware, sending to ``client``."""

    async def handle(request: StarletteRequest) -> PlainTextResponse:
        work(log, request.query_params["run"])
        return PlainTextResponse("done")

    return PostHogASGIMiddleware(Starlette(routes=[Route("/work", handle)]), client=client)


def assert_carried(client: Client, server: LocalServer, run: str, who: str, session: str) -> None:
    """B's event, ``$exception`` and log lines of ``run`` all carry ``who`` and ``session``."""
    events = delivered(client, server, 2, distinct_id=who)
    event = only([e for e in events if e["event"] == "b_worked"])
    assert event["properties"]["run"] == run
    assert event["properties"]["$session_id"] == session
    error = only([e for e in events if e["event"] == "$exception"])
    assert error["properties"]["$exception_list"][0]["value"] == f"b failed on {run}"
    assert error["properties"]["$session_id"] == session
    bodies = {f"b is working on {run}", "b could not finish"}

    def b_lines() -> list[dict[str, Any]]:
        return [line for line in server.store.logs(distinct_id=who) if line["body"] in bodies]

    wait_until(lambda: len(b_lines()) >= 2, WAIT, "B's two log lines")
    lines = b_lines()
    assert len(lines) == 2
    assert {line["session_id"] for line in lines} == {session}


class TestTwoServices:
    def test_b_events_errors_and_log_lines_carry_a_person_and_session(
        self, caller: Caller, client: Client, server: LocalServer, attach: Callable[..., Any]
    ) -> None:
        """Service A, identified, calls service B: what B sends to PostHog (its event, its
        ``$exception``, its log lines) belongs to A's person and session replay."""
        log = attach(PostHogHandler(client=client, logs_level="INFO"))
        who, session, run = f"person-{uuid.uuid4().hex[:8]}", "session-42", uuid.uuid4().hex
        with serve_wsgi(flask_service(log, client)) as b:
            caller.instrument([urlsplit(b).netloc])
            with person(who, session):
                assert caller.get(f"{b}/work?run={run}").text == "done"
        assert_carried(client, server, run, who, session)

    def test_async_service_calling_an_asgi_service(
        self, client: Client, server: LocalServer, attach: Callable[..., Any]
    ) -> None:
        """An async service A (httpx.AsyncClient) calling an ASGI service B (Starlette
        behind the ASGI middleware, on uvicorn): B's records carry A's person."""
        log = attach(PostHogHandler(client=client, logs_level="INFO"))
        who, run = f"person-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex

        async def service_a(base: str) -> str:
            with person(who, "session-async"):
                async with httpx.AsyncClient(trust_env=False) as http:
                    return (await http.get(f"{base}/work?run={run}", timeout=WAIT)).text

        with serve_asgi(starlette_service(log, client)) as b:
            instrument_httpx(allowed_hosts=[urlsplit(b).netloc])
            assert asyncio.run(service_a(b)) == "done"
        assert_carried(client, server, run, who, "session-async")

    def test_without_instrumentation_b_records_are_not_a_person(
        self, client: Client, server: LocalServer, attach: Callable[..., Any]
    ) -> None:
        """Nothing is propagated unless asked: B's event is personless."""
        log = attach(PostHogHandler(client=client))
        with serve_wsgi(flask_service(log, client)) as b, person("user-x"):
            assert Caller("requests").get(f"{b}/work?run=plain").text == "done"
        event = only(delivered(client, server, event="b_worked"))
        assert event["properties"]["$process_person_profile"] is False
        assert "$session_id" not in event["properties"]


# -- the allow-list, and what is never touched ------------------------------------------


class TestInstrumentation:
    def test_only_allowed_hosts_get_the_headers(self, caller: Caller, echoes: Echoes) -> None:
        """B (allowed) receives A's person and session; C, another port on the same
        machine, receives neither."""
        caller.instrument(echoes.allowed)
        with person("user-a", "session-a"):
            to_b = caller.echo(f"{echoes.b}/echo")
            to_c = caller.echo(f"{echoes.c}/echo")
        assert propagated(to_b) == {ENV_DISTINCT: "user-a", ENV_SESSION: "session-a"}
        assert propagated(to_c) == {}

    def test_outside_a_context_nothing_is_sent(self, caller: Caller, echoes: Echoes) -> None:
        """A request made outside any context carries no header, even to an allowed host."""
        caller.instrument(echoes.allowed)
        assert propagated(caller.echo(f"{echoes.b}/echo")) == {}
        with person("user-a", session_id=None):
            assert propagated(caller.echo(f"{echoes.b}/echo")) == {ENV_DISTINCT: "user-a"}

    def test_headers_set_by_the_caller_are_kept(self, caller: Caller, echoes: Echoes) -> None:
        """A header the caller set (e.g. for another user) is sent as set; only the
        missing one is added."""
        caller.instrument(echoes.allowed)
        with person("user-a", "session-a"):
            echo = caller.echo(f"{echoes.b}/echo", headers={"x-posthog-distinct-id": "other"})
        assert propagated(echo) == {ENV_DISTINCT: "other", ENV_SESSION: "session-a"}

    def test_uninstrument_stops_the_headers(self, caller: Caller, echoes: Echoes) -> None:
        """After uninstrumenting, the same session or client sends no header."""
        caller.instrument(echoes.allowed)
        with person():
            assert propagated(caller.echo(f"{echoes.b}/echo"))
            caller.uninstrument()
            assert propagated(caller.echo(f"{echoes.b}/echo")) == {}

    def test_instrumenting_twice_adds_once(self, caller: Caller, echoes: Echoes) -> None:
        """Instrumenting again sends each header once (not twice, not joined), and one
        uninstrument undoes it all, leaving the library's own methods in place: there is
        one hook, whose list the last call set."""
        methods = (
            requests.adapters.HTTPAdapter.send,
            httpx.HTTPTransport.handle_request,
            httpx.AsyncHTTPTransport.handle_async_request,
        )
        caller.instrument(["nowhere.invalid"])
        caller.instrument(echoes.allowed)
        with person("user-a", "session-a"):
            assert propagated(caller.echo(f"{echoes.b}/echo")) == {
                ENV_DISTINCT: "user-a",
                ENV_SESSION: "session-a",
            }
            caller.uninstrument()
            assert propagated(caller.echo(f"{echoes.b}/echo")) == {}
        assert methods == (
            requests.adapters.HTTPAdapter.send,
            httpx.HTTPTransport.handle_request,
            httpx.AsyncHTTPTransport.handle_async_request,
        )

    def test_a_redirect_to_another_host_does_not_carry_the_headers(
        self, caller: Caller, echoes: Echoes
    ) -> None:
        """B (allowed) gets the headers and redirects to C (not allowed): C gets none."""
        caller.instrument(echoes.allowed)
        with person("user-a", "session-a"):
            response = caller.get(echoes.redirect(f"{echoes.c}/echo"))
        assert [r.status_code for r in response.history] == [302]
        assert propagated(response.history[0].json()) == {
            ENV_DISTINCT: "user-a",
            ENV_SESSION: "session-a",
        }
        assert propagated(response.json()) == {}

    def test_an_unsafe_distinct_id_injects_nothing_and_raises_nothing(
        self, caller: Caller, echoes: Echoes
    ) -> None:
        """A distinct id with a line break (or non-ASCII text) is left out: no header is
        injected, the request succeeds, the session still goes."""
        caller.instrument(echoes.allowed)
        for bad in ("user\r\nX-Injected: yes", "user\nX-Injected: yes", "jörg@example.com"):
            with person(bad, "session-a"):
                echo = caller.echo(f"{echoes.b}/echo")
            assert "HTTP_X_INJECTED" not in echo
            assert propagated(echo) == {ENV_SESSION: "session-a"}

    def test_a_failed_call_changes_nothing(self, caller: Caller, echoes: Echoes) -> None:
        """An invalid allow-list is refused before anything is instrumented."""
        with pytest.raises(ValueError, match="every host is never allowed"):
            caller.instrument(["*"])
        with person():
            assert propagated(caller.echo(f"{echoes.b}/echo")) == {}


class TestOneClient:
    def test_requests_adapter_on_one_session(self, echoes: Echoes) -> None:
        """A session with PropagatingAdapter mounted sends the headers to allowed hosts
        only, and not on to a redirect's other host; other sessions send nothing."""
        session, plain = requests.Session(), requests.Session()
        session.trust_env = plain.trust_env = False
        session.mount("http://", PropagatingAdapter(allowed_hosts=echoes.allowed))
        with session, plain, person("user-a", "session-a"):
            to_b = session.get(f"{echoes.b}/echo", timeout=WAIT).json()
            to_c = session.get(f"{echoes.c}/echo", timeout=WAIT).json()
            redirected = session.get(echoes.redirect(f"{echoes.c}/echo"), timeout=WAIT)
            other = plain.get(f"{echoes.b}/echo", timeout=WAIT).json()
        assert propagated(to_b) == {ENV_DISTINCT: "user-a", ENV_SESSION: "session-a"}
        assert propagated(to_c) == {}
        assert propagated(redirected.history[0].json()) == propagated(to_b)
        assert propagated(redirected.json()) == {}
        assert propagated(other) == {}

    def test_one_httpx_hook_for_sync_and_async_clients(self, echoes: Echoes) -> None:
        """The same request hook serves httpx.Client and httpx.AsyncClient: allowed hosts
        get the headers, a redirect to another host has them taken off, the caller's own
        header stays."""
        hook = httpx_request_hook(allowed_hosts=echoes.allowed)
        options: dict[str, Any] = {
            "trust_env": False,
            "follow_redirects": True,
            "event_hooks": {"request": [hook]},
            "timeout": WAIT,
        }

        def sync_calls() -> list[Any]:
            with httpx.Client(**options) as http:
                return [
                    http.get(f"{echoes.b}/echo"),
                    http.get(f"{echoes.c}/echo"),
                    http.get(echoes.redirect(f"{echoes.c}/echo")),
                    http.get(f"{echoes.b}/echo", headers={"X-POSTHOG-SESSION-ID": "mine"}),
                ]

        async def async_calls() -> list[Any]:
            async with httpx.AsyncClient(**options) as http:
                return [
                    await http.get(f"{echoes.b}/echo"),
                    await http.get(f"{echoes.c}/echo"),
                    await http.get(echoes.redirect(f"{echoes.c}/echo")),
                    await http.get(f"{echoes.b}/echo", headers={"X-POSTHOG-SESSION-ID": "mine"}),
                ]

        with person("user-a", "session-a"):
            results = [sync_calls(), asyncio.run(async_calls())]
        both = {ENV_DISTINCT: "user-a", ENV_SESSION: "session-a"}
        for to_b, to_c, redirected, own in results:
            assert propagated(to_b.json()) == both
            assert propagated(to_c.json()) == {}
            assert propagated(redirected.history[0].json()) == both
            assert propagated(redirected.json()) == {}
            assert propagated(own.json()) == {ENV_DISTINCT: "user-a", ENV_SESSION: "mine"}


def headers_sent(allowed_hosts: list[str], url: str) -> dict[str, str]:
    """Our headers on a request to ``url`` with ``allowed_hosts``, as httpx hands it to its
    transport (no network: the names need not resolve)."""
    seen: dict[str, str] = {}

    def transport(request: httpx.Request) -> httpx.Response:
        seen.update({k: v for k, v in request.headers.items() if k.startswith("x-posthog")})
        return httpx.Response(204)

    hook = httpx_request_hook(allowed_hosts=allowed_hosts)
    with (
        httpx.Client(
            transport=httpx.MockTransport(transport), event_hooks={"request": [hook]}
        ) as c,
        person("user-a", session_id=None),
    ):
        c.get(url)
    return seen


class TestAllowedHosts:
    @pytest.mark.parametrize(
        ("allowed", "url", "sent"),
        [
            (["api.internal"], "http://api.internal:8080/x", True),
            (["API.Internal."], "https://api.internal/", True),
            (["api.internal:8443"], "https://api.internal:8443/", True),
            (["api.internal:8443"], "https://api.internal/", False),
            (["api.internal:443"], "https://api.internal/", True),
            (["api.internal:80"], "https://api.internal/", False),
            (["api.internal"], "https://api.internal.evil.test/", False),
            (["api.internal"], "https://evil.test/?api.internal", False),
            (["api.internal"], "https://api.internal@evil.test/", False),
            (["*.example.com"], "https://a.b.example.com/", True),
            (["*.example.com"], "https://example.com/", False),
            (["*.example.com"], "https://badexample.com/", False),
            (["*.example.com:8443"], "https://a.example.com/", False),
            (["[::1]:8000"], "http://[::1]:8000/", True),
            (["::1"], "http://[::1]:9000/", True),
            (["10.0.0.7"], "http://10.0.0.70/", False),
            (["bücher.example"], "http://bücher.example/", True),
            ([], "http://api.internal/", False),
        ],
    )
    def test_which_hosts_get_the_headers(self, allowed: list[str], url: str, sent: bool) -> None:
        """Exact names in any case, on any port or the one named (a URL without a port has
        its scheme's), ``*.domain`` for subdomains only; nothing by default."""
        expected = {"x-posthog-distinct-id": "user-a"} if sent else {}
        assert headers_sent(allowed, url) == expected

    @pytest.mark.parametrize(
        "entry",
        ["*", "*.", "http://api.internal", "api.internal/path", "api.internal:0",
         "api.internal:99999", "api.internal:http", "user@api.internal", "", "a*.example.com"],
    )  # fmt: skip
    def test_entries_that_are_not_hosts_are_refused(self, entry: str) -> None:
        """A URL, a path, a bad port or a bare ``*`` is an error, not a silent no-match."""
        with pytest.raises(ValueError, match="allowed_hosts entry"):
            instrument_requests(allowed_hosts=[entry])

    def test_one_string_is_refused(self) -> None:
        """``allowed_hosts="api.internal"`` (a string, not a list) is a TypeError."""
        with pytest.raises(TypeError, match="not one string"):
            instrument_httpx(allowed_hosts="api.internal")


# -- the library's own requests ---------------------------------------------------------


@pytest.fixture
def inheriting_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads run in a copy of the context of the thread that starts them, as they do on
    free-threaded Python 3.14 (``-X thread_inherit_context``): the library's own threads,
    started from inside an identified context, then hold that context too."""
    start = threading.Thread.start

    def start_in_context(self: threading.Thread) -> None:
        context, run = contextvars.copy_context(), self.run
        self.run = lambda: context.run(run)  # type: ignore[method-assign]
        start(self)

    monkeypatch.setattr(threading.Thread, "start", start_in_context)


@pytest.mark.usefixtures("inheriting_threads")
def test_the_librarys_own_requests_never_carry_the_headers(
    make_client: Callable[..., Client], server: LocalServer
) -> None:
    """Even with PostHog's own host allowed, and the library's threads started from inside
    an identified context, the requests that deliver events carry no person header; the
    application's own request to that host does."""
    allowed = [urlsplit(server.url).netloc]
    instrument_requests(allowed_hosts=allowed)
    instrument_httpx(allowed_hosts=allowed)
    with person("user-a", "session-a"):
        client = make_client()
        client.capture("sent_in_context")  # starts the client's threads, here
        assert client.flush(WAIT)
        own = requests.Session()
        own.trust_env = False
        with own:
            assert own.get(f"{server.url}/batch", timeout=WAIT).status_code == 405
    assert only(server.events(event="sent_in_context"))["distinct_id"] == "user-a"
    posts = [r for r in server.requests if r.method == "POST"]
    assert posts and all("x-posthog-distinct-id" not in r.headers for r in posts)
    [get] = [r for r in server.requests if r.method == "GET"]
    assert get.headers["x-posthog-distinct-id"] == "user-a"


# -- context_headers() and context_from_headers() ---------------------------------------


class TestContextHeaders:
    def test_the_current_contexts_headers(self) -> None:
        """``{}`` outside any context; inside, a key for each value the context has, named
        as the middlewares read them."""
        assert posthog_logging.context_headers() == {}
        with posthog_logging.new_context():
            assert context_headers() == {}
            posthog_logging.set_context_session("s-1")
            assert context_headers() == {SESSION_ID: "s-1"}
            posthog_logging.identify_context("user-1")
            assert context_headers() == {DISTINCT_ID: "user-1", SESSION_ID: "s-1"}
        assert context_headers() == {}
        assert (DISTINCT_ID, SESSION_ID) == ("X-POSTHOG-DISTINCT-ID", "X-POSTHOG-SESSION-ID")

    def test_an_unsafe_value_is_left_out_with_one_warning(self, tmp_path: Any) -> None:
        """A value with a line break, non-ASCII text or past the length limit is not
        returned; the process warns once, without the value (it is personal data)."""
        script = """
import logging, posthog_logging as p
logging.basicConfig(level=logging.WARNING, format="%(name)s:%(message)s")
for value in ["a\\r\\nX-Injected: 1", "jörg", " padded", "x" * 1001, "a\\x00b"]:
    with p.new_context():
        p.identify_context(value)
        p.set_context_session("s-1")
        print(sorted(p.context_headers().items()))
"""
        env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["[('X-POSTHOG-SESSION-ID', 's-1')]"] * 5
        warnings = [line for line in done.stderr.splitlines() if "not sent" in line]
        assert len(warnings) == 1, done.stderr
        assert "X-Injected" not in done.stderr and "jörg" not in done.stderr


class TestQueues:
    def test_a_consumer_runs_each_message_as_the_producers_person(
        self, client: Client, server: LocalServer, logger: logging.Logger
    ) -> None:
        """The producer puts ``context_headers()`` in each message; the consumer thread
        handles each in ``context_from_headers(...)``: its events carry the producer's
        person and session, in any header spelling or as bytes; a message without them is
        anonymous, whatever the consumer's own context holds."""
        messages: queue.Queue[Any] = queue.Queue()
        with person("producer-1", "session-1"):
            messages.put({"headers": context_headers(), "n": 1})
        with person("producer-2", session_id=None):
            kafka_style = [(k.lower(), v.encode()) for k, v in context_headers().items()]
            messages.put({"headers": kafka_style, "n": 2})
        messages.put({"headers": None, "n": 3})
        messages.put(None)

        def consume() -> None:
            with person("consumer", "consumer-session"):
                while (message := messages.get()) is not None:
                    with context_from_headers(message["headers"]):
                        logger.info("handled", extra={"event": True, "n": message["n"]})

        thread = threading.Thread(target=consume)
        thread.start()
        thread.join(WAIT)
        events = {e["properties"]["n"]: e for e in delivered(client, server, 3, event="handled")}
        assert events[1]["distinct_id"] == "producer-1"
        assert events[1]["properties"]["$session_id"] == "session-1"
        assert events[2]["distinct_id"] == "producer-2"
        assert "$session_id" not in events[2]["properties"]
        assert events[3]["properties"]["$process_person_profile"] is False
        assert "$session_id" not in events[3]["properties"]

    def test_an_error_leaving_the_block_is_sent_as_the_producers_person(
        self, default_client: Client, server: LocalServer
    ) -> None:
        """An exception escaping the consumer's block is sent once, with the message's
        person, and re-raised."""
        with person("producer-9", "session-9"):
            headers = context_headers()
        with pytest.raises(KeyError), context_from_headers(headers):
            raise KeyError("missing order")
        error = only(delivered(posthog_logging, server, event="$exception"))
        assert error["distinct_id"] == "producer-9"
        assert error["properties"]["$session_id"] == "session-9"
