"""Security: the API key never leaks, and secret-looking properties are filtered.

The key must never appear in a log record of any logger at any level (the library's
own, urllib3's and requests' debug lines included), in ``repr``/``str`` of the client or
the handler, in the errors given to ``on_error``, in the exceptions the library raises,
on the standard streams of a process that exits while the server is down, or in the
files of the disk spool. Each scenario runs against a real server: the local one (which
answers 401 to a personal or over-long key), a small inline server that answers errors
quoting the request back (as a careless proxy might, key included), a port nobody
listens on, and a socket that never answers.
"""

from __future__ import annotations

import gzip
import inspect
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import posthog_logging
from posthog_logging import Client, PostHogHandler
from posthog_logging.exceptions import DeliveryError
from posthog_logging.serialisation import FILTERED
from posthog_logging.server import LocalServer

from .helpers import one_delivered

WAIT = 10.0

# -- helpers ------------------------------------------------------------------------------


def project_key() -> str:
    """A fresh, valid-looking project key, unlike any other text in the run."""
    return f"phc_{uuid.uuid4().hex}"


def personal_key() -> str:
    """A key the local server refuses (401) that the client still takes (a personal,
    ``phx_``, key is refused by the client itself, without naming it: see
    ``test_a_personal_key_is_refused_without_being_named``)."""
    return f"phc_{uuid.uuid4().hex}{uuid.uuid4().hex}{uuid.uuid4().hex}unknown"


def test_a_host_with_an_unknown_scheme_is_refused_without_naming_the_key() -> None:
    """A host the client cannot send to is a ValueError at once (it used to be retried
    like an outage); its message names the host, never the key."""
    key = project_key()
    with pytest.raises(ValueError, match="nonsense://") as raised:
        Client(key, host="nonsense://127.0.0.1:9")
    assert key not in str(raised.value)


def test_a_personal_key_is_refused_without_being_named() -> None:
    """``Client(<a phx_ key>)`` is a ValueError that says what kind of key it is, never
    the key itself."""
    key = f"phx_{uuid.uuid4().hex}"
    with pytest.raises(ValueError) as raised:
        Client(key, host="http://127.0.0.1:1")
    assert "personal API key" in str(raised.value)
    assert key not in str(raised.value)


def long_key() -> str:
    """A key over 64 characters: the local server refuses it (401)."""
    return f"phc_{uuid.uuid4().hex}{uuid.uuid4().hex}{uuid.uuid4().hex}"


_FORMATTER = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(threadName)s %(message)s")


class Collector(logging.Handler):
    """Keeps every record it sees, formatted (traceback included) and as raw attributes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            formatted = _FORMATTER.format(record)
        except Exception as exc:  # a record that cannot be formatted is still checked
            formatted = f"[unformattable: {exc!r}]"
        self.names.append(record.name)
        self.texts.append(f"{formatted}\n{record.__dict__!r}")

    def text(self) -> str:
        """Everything recorded so far."""
        return "\n".join(self.texts)


@pytest.fixture
def collector() -> Iterator[Collector]:
    """Every record of every logger, at DEBUG and up, while the test runs."""
    root = logging.getLogger()
    library = logging.getLogger("posthog_logging")
    library_handlers = list(library.handlers)
    handler = Collector()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # urllib3 and requests log at DEBUG through the root
    yield handler
    root.removeHandler(handler)
    for extra in [h for h in library.handlers if h not in library_handlers]:
        library.removeHandler(extra)  # Client(debug=True) adds a stream handler


def assert_absent(secret: str, *texts: str) -> None:
    """``secret`` is in none of ``texts``; the error shows where it was found."""
    for text in texts:
        where = text.find(secret)
        assert where < 0, f"secret found in: {text[max(0, where - 300) : where + 100]!r}"


assert_no_key = assert_absent


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback URL that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


class EchoServer:
    """Answers every POST with ``status`` and a body quoting the request back, key included.

    ``mode="json"`` answers ``{"detail": "... <the key it got> ..."}``; ``mode="text"``
    answers the request body itself as plain text; ``mode="padded"`` answers ``pad``
    spaces and then the key.
    """

    def __init__(
        self,
        status: int,
        mode: str = "json",
        headers: dict[str, str] | None = None,
        pad: int = 0,
    ) -> None:
        self.statuses: list[int] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if body[:2] == b"\x1f\x8b":
                    body = gzip.decompress(body)
                if mode == "json":
                    key = json.loads(body).get("api_key")
                    reply = json.dumps({"detail": f"project key {key} refused: {body[:300]!r}"})
                    payload = reply.encode()
                elif mode == "padded":
                    payload = b" " * pad + json.loads(body)["api_key"].encode()
                else:
                    payload = body
                owner.statuses.append(status)
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> EchoServer:
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Scenario:
    """What a client meets: where it sends, with which key, and what should come of it."""

    host: str
    key: str
    delivered: bool
    http: bool  # the request reaches an HTTP server (so urllib3 logs about it)


# -- (a) and (c): log records, on_error, streams --------------------------------------------

SCENARIOS = [
    "delivered",
    "delivered-sync",
    "401-personal-key",
    "401-personal-key-sync",
    "401-long-key",
    "400-echo-json",
    "400-echo-text",
    "401-echo-text",
    "500-echo-json",
    "503-echo-text",
    "429-echo-json",
    "413-echo-text",
    "server-down",
    "timeout",
]


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest, server: LocalServer, dead_url: str, silent_url: str
) -> Iterator[Scenario]:
    """The setting named by the test's ``name`` parameter."""
    name: str = request.param
    if name.startswith("delivered"):
        yield Scenario(server.url, project_key(), delivered=True, http=True)
    elif name.startswith("401-personal-key"):
        yield Scenario(server.url, personal_key(), delivered=False, http=True)
    elif name == "401-long-key":
        yield Scenario(server.url, long_key(), delivered=False, http=True)
    elif "-echo-" in name:
        status, _, mode = name.split("-")
        headers = {"Retry-After": "0"} if status == "429" else {}
        with EchoServer(int(status), mode, headers) as echo:
            yield Scenario(echo.url, project_key(), delivered=False, http=True)
    elif name == "server-down":
        yield Scenario(dead_url, project_key(), delivered=False, http=False)
    elif name == "timeout":
        yield Scenario(silent_url, project_key(), delivered=False, http=False)
    else:  # pragma: no cover - a typo in SCENARIOS
        raise AssertionError(name)


class TestKeyNeverLogged:
    @pytest.mark.parametrize("scenario", SCENARIOS, indirect=True)
    def test_no_log_record_stream_or_error_holds_the_key(
        self,
        request: pytest.FixtureRequest,
        scenario: Scenario,
        server: LocalServer,
        collector: Collector,
        attach: Callable[..., logging.Logger],
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        """Delivery, 4xx, 5xx, refused, timeout: no record, stream or error shows the key."""
        errors: list[tuple[Exception, list[dict[str, Any]]]] = []
        sync = request.node.callspec.id.endswith("-sync")
        client = Client(
            scenario.key,
            host=scenario.host,
            debug=True,
            sync_mode=sync,
            flush_interval=0.05,
            max_retries=1,
            timeout=0.5,
            shutdown_timeout=3,
            on_error=lambda error, events: errors.append((error, events)),
        )
        log = attach(PostHogHandler(client=client))
        try:
            uids = [client.capture("secure", {"i": i}, distinct_id="u1") for i in range(3)]
            log.info("secure_logged", extra={"event": True, "note": "via logging"})
            try:
                raise RuntimeError("a failure to report")
            except RuntimeError:
                log.exception("something failed")
            client.flush(timeout=5)
        finally:
            client.shutdown(timeout=2)

        if scenario.delivered:
            events = server.wait_for_events(5, timeout=WAIT)
            assert {uid for uid in uids if uid} <= {e["uuid"] for e in events}
            assert errors == []
        elif not request.node.callspec.id.startswith("413"):  # 413 drops, not on_error
            assert errors, "on_error was never called"
        if scenario.http:
            assert any(name.startswith("urllib3") for name in collector.names), collector.names
        assert any(name == "posthog_logging" for name in collector.names), collector.names

        out, err = capfd.readouterr()
        assert_no_key(scenario.key, collector.text(), out, err)
        for error, events in errors:
            assert isinstance(error, DeliveryError)
            assert_no_key(
                scenario.key,
                str(error),
                repr(error),
                repr(error.args),
                repr(vars(error)),
                json.dumps(events),
            )
        assert_no_key(scenario.key, repr(client), str(client), repr(client.stats))

    @pytest.mark.parametrize(
        "limit", [500, 512, 1000, 1024, 4096, 8192, 10_000, 16_384, 65_536, 100_000, 1_048_576]
    )
    def test_key_cut_by_a_read_limit_leaks_no_part_of_it(
        self, collector: Collector, capfd: pytest.CaptureFixture[str], limit: int
    ) -> None:
        """An error answer whose key straddles a plausible read limit shows no piece of it."""
        key = project_key()
        errors: list[Exception] = []
        with EchoServer(400, "padded", pad=limit - len(key) // 2) as echo:
            client = Client(
                key,
                host=echo.url,
                max_retries=0,
                on_error=lambda error, events: errors.append(error),
            )
            client.capture("e", distinct_id="u")
            client.flush(timeout=5)
            client.shutdown(timeout=1)
        assert errors, "on_error was never called"
        out, err = capfd.readouterr()
        prefix = key[:12]  # "phc_" and 8 random hex digits: never there by chance
        assert_absent(prefix, collector.text(), out, err, *(str(e) for e in errors))


class TestKeyNotInReprOrExceptions:
    def test_client_repr_and_str(self, server: LocalServer) -> None:
        """repr() and str() of a client say whether a key is set, never what it is."""
        key = project_key()
        client = Client(key, host=server.url)
        try:
            assert_no_key(key, repr(client), str(client), f"{client}", f"{client!r}")
            assert "set" in repr(client)
        finally:
            client.shutdown(timeout=1)

    def test_handler_repr_with_given_and_own_client(self, server: LocalServer) -> None:
        """repr() of a handler, on a given client or on one it built itself, hides the key."""
        key = project_key()
        client = Client(key, host=server.url)
        given = PostHogHandler(client=client)
        owning = PostHogHandler(api_key=key, host=server.url)
        try:
            assert_no_key(
                key,
                repr(given),
                str(given),
                repr(owning),
                str(owning),
                repr(owning.client),
                str(owning.client),
            )
        finally:
            given.close()
            owning.close()
            client.shutdown(timeout=1)

    def test_default_client_repr(self, server: LocalServer) -> None:
        """The configured module-level default client's repr hides the key."""
        key = project_key()
        posthog_logging.configure(api_key=key, host=server.url)
        assert_no_key(key, repr(posthog_logging.get_client()))

    def test_key_from_environment_hidden(
        self, server: LocalServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A key read from POSTHOG_API_KEY is hidden like a given one."""
        key = project_key()
        monkeypatch.setenv("POSTHOG_API_KEY", key)
        monkeypatch.setenv("POSTHOG_HOST", server.url)
        client = posthog_logging.get_client()
        assert client.api_key == key
        assert_no_key(key, repr(client), str(client))

    @pytest.mark.parametrize(
        "options",
        [
            {"flush_at": 0},
            {"flush_interval": -1},
            {"max_queue_size": "many"},
            {"timeout": 0},
            {"shutdown_timeout": None},
            {"max_retries": -1},
            {"before_send": "not callable"},
            {"on_error": 3},
            {"super_properties": ["not", "a", "mapping"]},
            {"redact_keys": "password"},
        ],
        ids=lambda options: next(iter(options)),
    )
    def test_bad_option_errors_do_not_quote_the_key(self, options: dict[str, Any]) -> None:
        """A bad option fails with TypeError/ValueError whose text does not quote the key."""
        key = project_key()
        with pytest.raises((TypeError, ValueError)) as info:
            Client(key, host="http://127.0.0.1:9", **options)
        assert_no_key(key, str(info.value), repr(info.value), str(info.getrepr()))

    def test_handler_conflict_error_does_not_quote_the_key(self, server: LocalServer) -> None:
        """PostHogHandler(client=..., api_key=...) is refused without quoting the key."""
        key = project_key()
        client = Client(key, host=server.url)
        try:
            with pytest.raises(ValueError) as info:
                PostHogHandler(client=client, api_key=key)
            assert_no_key(key, str(info.value), repr(info.value))
        finally:
            client.shutdown(timeout=1)

    def test_raising_on_error_is_logged_without_the_key(
        self, collector: Collector, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """An on_error hook that raises is logged (with its traceback) without the key."""
        key = personal_key()

        def on_error(error: Exception, events: list[dict[str, Any]]) -> None:
            raise RuntimeError(f"hook failed on {error}")

        with EchoServer(400) as echo:
            client = Client(key, host=echo.url, debug=True, on_error=on_error, max_retries=0)
            client.capture("e", distinct_id="u")
            client.flush(timeout=5)
            client.shutdown(timeout=1)
        out, err = capfd.readouterr()
        assert "hook failed" in collector.text()
        assert_no_key(key, collector.text(), out, err)


# -- (d) a process that exits while the server is down ---------------------------------------

_EXIT_SCRIPT = """
import logging, os, sys
import posthog_logging as posthog

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
posthog.configure(
    api_key=os.environ["SECRET_KEY"], host=os.environ["TARGET"], debug=True,
    shutdown_timeout=1.0, max_retries=100, flush_interval=0.05,
)
logging.getLogger().addHandler(posthog.PostHogHandler())
log = logging.getLogger("app")
for i in range(20):
    posthog.capture("from_script", {"i": i}, distinct_id="u1")
    log.info("logged_event", extra={"event": True, "i": i})
if os.environ["ENDING"] == "crash":
    with posthog.new_context():
        posthog.identify_context("u1")
        raise RuntimeError("the script fails on its way out")
"""


class TestExitingProcess:
    @pytest.mark.parametrize("ending", ["clean", "crash"])
    @pytest.mark.parametrize("target", ["server-down", "401"])
    def test_exit_hook_output_holds_no_key(
        self, tmp_path: Any, dead_url: str, server: LocalServer, ending: str, target: str
    ) -> None:
        """Exiting (cleanly or by an exception) with undeliverable events: streams hide the key."""
        key = personal_key() if target == "401" else project_key()
        script = tmp_path / "app.py"
        script.write_text(textwrap.dedent(_EXIT_SCRIPT))
        env = dict(os.environ)
        for name in ("POSTHOG_API_KEY", "POSTHOG_PROJECT_API_KEY", "POSTHOG_HOST"):
            env.pop(name, None)
        env.update(
            SECRET_KEY=key,
            TARGET=dead_url if target == "server-down" else server.url,
            ENDING=ending,
        )
        proc = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == (1 if ending == "crash" else 0), proc.stderr[-2000:]
        assert "posthog_logging" in proc.stderr
        if target == "server-down":
            assert "not sent" in proc.stderr, proc.stderr[-2000:]
        else:
            assert "refused" in proc.stderr, proc.stderr[-2000:]
        if ending == "crash":
            assert "the script fails on its way out" in proc.stderr
        assert_no_key(key, proc.stdout, proc.stderr)


# -- the disk spool ----------------------------------------------------------------------------


@pytest.mark.skipif("spool_dir" not in inspect.signature(Client).parameters, reason="no disk spool")
class TestSpool:
    def test_spool_files_hold_no_key(
        self, tmp_path: Any, dead_url: str, collector: Collector
    ) -> None:
        """Events spooled to disk while the server is down: no file name or content has the key."""
        key = project_key()
        spool = tmp_path / "spool"
        client = Client(
            key,
            host=dead_url,
            spool_dir=str(spool),
            debug=True,
            max_retries=0,
            shutdown_timeout=2,
            flush_interval=0.05,
        )
        for i in range(10):
            client.capture("spooled", {"i": i}, distinct_id="u1")
        client.shutdown(timeout=2)
        files = [p for p in spool.rglob("*") if p.is_file()]
        assert files, "nothing was written to the spool"
        for path in files:
            assert_no_key(key, str(path.relative_to(tmp_path)))
            assert key.encode() not in path.read_bytes()
        assert_no_key(key, collector.text())


# -- secret-looking properties ------------------------------------------------------------------

SECRETS = {
    "password": "pw-hunter2",
    "api_key": "ak-0000",
    "Authorization": "Bearer tok-1111",
    "user": {"name": "ann", "access_token": "at-2222", "ssn": "123-45-6789"},
    "ssn": "987-65-4321",
    "tokens_used": 12,
}


class TestRedaction:
    def test_default_filters_secret_looking_keys_at_any_depth(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """By default password, api_key, Authorization and nested access_token are filtered."""
        client = make_client()
        client.capture("form", SECRETS, distinct_id="u")
        event = one_delivered(client, server, "form", timeout=WAIT)
        props = event["properties"]
        assert props["password"] == FILTERED
        assert props["api_key"] == FILTERED
        assert props["Authorization"] == FILTERED
        assert props["user"] == {"name": "ann", "access_token": FILTERED, "ssn": "123-45-6789"}
        assert props["ssn"] == "987-65-4321"
        assert props["tokens_used"] == 12
        for secret in ("hunter2", "ak-0000", "tok-1111", "at-2222"):
            assert_absent(secret, json.dumps(event))

    def test_default_filters_tags_and_logged_extras(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """Secret-looking context tags and logging extras are filtered like properties."""
        client = make_client()
        log = attach(PostHogHandler(client=client))
        with posthog_logging.new_context():
            posthog_logging.tag("session_token", "st-3333")
            log.info(
                "login",
                extra={"event": True, "password": "pw-4444", "headers": {"Cookie": "c-5555"}},
            )
        event = one_delivered(client, server, "login", timeout=WAIT)
        props = event["properties"]
        assert props["session_token"] == FILTERED
        assert props["password"] == FILTERED
        assert props["headers"] == {"Cookie": FILTERED}
        for secret in ("st-3333", "pw-4444", "c-5555"):
            assert_absent(secret, json.dumps(event))

    def test_redaction_off(self, make_client: Callable[..., Client], server: LocalServer) -> None:
        """With redact_keys=None every value arrives as given."""
        client = make_client(redact_keys=None)
        client.capture("form", SECRETS, distinct_id="u")
        props = one_delivered(client, server, "form", timeout=WAIT)["properties"]
        for key, value in SECRETS.items():
            assert props[key] == value

    def test_custom_keys_filter_only_those(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """redact_keys=["ssn"] filters ssn (nested too) and nothing else."""
        client = make_client(redact_keys=["ssn"])
        client.capture("form", SECRETS, distinct_id="u")
        props = one_delivered(client, server, "form", timeout=WAIT)["properties"]
        assert props["ssn"] == FILTERED
        assert props["user"] == {"name": "ann", "access_token": "at-2222", "ssn": FILTERED}
        assert props["password"] == "pw-hunter2"
        assert props["api_key"] == "ak-0000"
        assert props["Authorization"] == "Bearer tok-1111"
        assert props["tokens_used"] == 12
