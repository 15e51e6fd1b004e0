"""Delivery across processes: os.fork, multiprocessing (fork and spawn), gunicorn, exit.

Every test sends to a real local server and checks what it stored, by uuid. The server
deduplicates on uuid, so "each event once" is checked on the wire too: the events carried
by the requests it accepted add up to the events it stored.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from types import TracebackType
from typing import Any

import pytest
import requests

import posthog_logging
from posthog_logging import Client, default_client
from posthog_logging.server import LocalServer

from . import _process_workers as workers
from .conftest import API_KEY
from .forking import fork_with_threads, needs_fork, run_in_fork
from .helpers import assert_each_sent_once

# -- helpers ------------------------------------------------------------------------------


def uuids_of(events: list[dict[str, Any]], name: str) -> Counter[str]:
    return Counter(event["uuid"] for event in events if event["event"] == name)


class StallingProxy:
    """A loopback HTTP proxy to a server that holds the first request until released.

    ``entered`` is set once that request has arrived; ``release`` lets it through.
    Every other request is forwarded at once.
    """

    def __init__(self, target: str) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._first = True
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner._lock:
                    first, owner._first = owner._first, False
                if first:
                    owner.entered.set()
                    owner.release.wait(30)
                headers = {
                    name: value
                    for name in ("Content-Type", "Content-Encoding")
                    if (value := self.headers.get(name))
                }
                try:
                    answer = requests.post(
                        target + self.path, data=body, headers=headers, timeout=10
                    )
                    status, payload = answer.status_code, answer.content
                except requests.RequestException:
                    status, payload = 502, b"{}"
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client went away
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> StallingProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# -- os.fork ------------------------------------------------------------------------------


@needs_fork
@fork_with_threads
class TestForkedChildren:
    """After os.fork() children send only their own events; the parent's sender keeps going."""

    def test_child_sends_only_its_own_events(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """Parent's pending events arrive once, from the parent; then it still sends alone."""
        client = make_client(flush_interval=3600, flush_at=50)
        before = [client.capture("parent_before", {"i": i}, distinct_id="p") for i in range(20)]

        def child() -> list[str]:
            assert client.stats.pending == 0
            uuids = [client.capture("from_child", {"i": i}, distinct_id="c") for i in range(5)]
            assert client.flush(5)
            return [u for u in uuids if u]

        from_child = run_in_fork(child)
        assert len(from_child) == 5
        # The child is gone, having sent all it will; the parent has sent nothing yet.
        assert sorted(e["uuid"] for e in server.events()) == sorted(from_child)

        # 30 more reach flush_at: the parent's sender delivers without being asked.
        after = [client.capture("parent_after", {"i": i}, distinct_id="p") for i in range(30)]
        server.wait_for_events(55)
        events = assert_each_sent_once(server)
        assert len(events) == 55
        assert uuids_of(events, "parent_before") == Counter(before)
        assert uuids_of(events, "parent_after") == Counter(after)
        assert uuids_of(events, "from_child") == Counter(from_child)

    def test_several_children(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """Three children in a row each send their own events, never the parent's."""
        client = make_client(flush_interval=3600, flush_at=1000)
        pending = [client.capture("parent", {"i": i}, distinct_id="p") for i in range(10)]
        by_child: list[list[str]] = []
        for n in range(3):

            def child(n: int = n) -> list[str]:
                assert client.stats.pending == 0
                uuids = [client.capture(f"child_{n}", distinct_id="c") for _ in range(4)]
                assert client.flush(5)
                return [u for u in uuids if u]

            by_child.append(run_in_fork(child))
        assert client.stats.pending == 10
        assert client.flush(5)
        events = assert_each_sent_once(server)
        assert uuids_of(events, "parent") == Counter(pending)
        for n, uuids in enumerate(by_child):
            assert len(uuids) == 4
            assert uuids_of(events, f"child_{n}") == Counter(uuids)
        assert len(events) == 22


@needs_fork
@fork_with_threads
class TestForkDuringRequest:
    """A fork while the sender awaits an answer leaves the child free to send, resending nothing."""

    def test_child_flushes_while_parent_request_is_stalled(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """The child flushes by its deadline; the parent's held and pending events arrive once."""
        with StallingProxy(server.url) as proxy:
            client = make_client(host=proxy.url, flush_interval=3600, flush_at=10, timeout=30)
            held = [client.capture("held", {"i": i}, distinct_id="p") for i in range(10)]
            assert proxy.entered.wait(10), "the sender never posted its batch"
            pending = [client.capture("pending", {"i": i}, distinct_id="p") for i in range(5)]

            def child() -> list[str]:
                assert client.stats.pending == 0
                uuids = [client.capture("from_child", {"i": i}, distinct_id="c") for i in range(5)]
                assert client.flush(5)
                return [u for u in uuids if u]

            from_child = run_in_fork(child, timeout=10)
            assert len(from_child) == 5
            # The parent's request is still held: all that is stored came from the child.
            assert not proxy.release.is_set()
            assert sorted(e["uuid"] for e in server.events()) == sorted(from_child)

            proxy.release.set()
            assert client.flush(10)
        events = assert_each_sent_once(server)
        assert uuids_of(events, "held") == Counter(held)
        assert uuids_of(events, "pending") == Counter(pending)
        assert uuids_of(events, "from_child") == Counter(from_child)
        assert len(events) == 20
        assert client.stats.retried == 0


# -- multiprocessing ----------------------------------------------------------------------


@pytest.fixture(
    params=[pytest.param("fork", marks=needs_fork), "spawn"],
)
def mp_context(request: pytest.FixtureRequest) -> Any:
    """A multiprocessing context for each start method."""
    return multiprocessing.get_context(request.param)


WORKERS = pytest.mark.parametrize(
    "worker",
    [workers.capture_with_module_api, workers.capture_with_own_client],
    ids=["module_api", "own_client"],
)


def assert_worker_events(
    server: LocalServer, expected: dict[str, int], pids: set[int]
) -> list[dict[str, Any]]:
    """Each (tag, i) expected arrived once, from one of ``pids``, none from this process."""
    total = sum(expected.values())
    server.wait_for_events(total, timeout=2, event=workers.EVENT)
    events = assert_each_sent_once(server)
    found = [e for e in events if e["event"] == workers.EVENT]
    keys = Counter((e["properties"]["tag"], e["properties"]["i"]) for e in found)
    assert keys == Counter((tag, i) for tag, n in expected.items() for i in range(n))
    senders = {e["properties"]["pid"] for e in found}
    assert senders <= pids
    assert os.getpid() not in senders
    return events


def join(process: Any, timeout: float = 30.0) -> int:
    """Wait for a multiprocessing child to exit with 0; return its pid."""
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
        pytest.fail(f"the child process did not finish within {timeout}s")
    assert process.exitcode == 0
    return int(process.pid)


def run_pool(context: Any, worker: Any, tasks: list[tuple[Any, ...]]) -> set[int]:
    """Run ``tasks`` on a two-process Pool, then close and join it (a graceful end)."""
    pool = context.Pool(2)
    try:
        pids = pool.starmap_async(worker, tasks, chunksize=1).get(timeout=30)
        pool.close()
        pool.join()
    except BaseException:
        pool.terminate()
        raise
    return set(pids)


@fork_with_threads
class TestMultiprocessing:
    """multiprocessing children (fork or spawn) deliver at exit without flush or shutdown."""

    @WORKERS
    def test_process(self, mp_context: Any, worker: Any, server: LocalServer) -> None:
        """A Process that captures and returns: its events arrive once."""
        process = mp_context.Process(target=worker, args=(API_KEY, server.url, "process", 5))
        process.start()
        pid = join(process)
        assert_worker_events(server, {"process": 5}, {pid})

    @WORKERS
    def test_pool(self, mp_context: Any, worker: Any, server: LocalServer) -> None:
        """A Pool's tasks capture; after close() and join() every task's events arrive once."""
        tags = [f"task_{n}" for n in range(6)]
        pids = run_pool(mp_context, worker, [(API_KEY, server.url, tag, 3) for tag in tags])
        assert_worker_events(server, dict.fromkeys(tags, 3), pids)


@needs_fork
@fork_with_threads
class TestMultiprocessingForkInherited:
    """Fork-started children deliver at exit through clients made before the fork, alone."""

    def test_process_with_parents_client(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """A Process uses the parent's client: its events arrive, the parent's pending do not."""
        client = make_client(flush_interval=3600, flush_at=10_000)
        pending = [client.capture("parent_pending", distinct_id="p") for _ in range(10)]
        context = multiprocessing.get_context("fork")
        process = context.Process(target=workers.capture_with, args=(client, "child", 5))
        process.start()
        pid = join(process)
        assert_worker_events(server, {"child": 5}, {pid})
        assert server.events(event="parent_pending") == []
        assert client.flush(5)
        events = assert_each_sent_once(server)
        assert uuids_of(events, "parent_pending") == Counter(pending)
        assert len(events) == 15

    def test_pool_with_configured_default_client(self, server: LocalServer) -> None:
        """Pool tasks use the default client configured in the parent; nothing is sent twice."""
        posthog_logging.configure(
            api_key=API_KEY, host=server.url, flush_interval=3600, flush_at=10_000
        )
        try:
            pending = [
                posthog_logging.capture("parent_pending", distinct_id="p") for _ in range(10)
            ]
            tags = [f"task_{n}" for n in range(6)]
            context = multiprocessing.get_context("fork")
            tasks = [(tag, 3) for tag in tags]
            pids = run_pool(context, workers.capture_with_default_client, tasks)
            assert_worker_events(server, dict.fromkeys(tags, 3), pids)
            assert server.events(event="parent_pending") == []
            assert posthog_logging.flush(5)
        finally:
            default_client.reset()  # while the server runs
        events = assert_each_sent_once(server)
        assert uuids_of(events, "parent_pending") == Counter(pending)
        assert len(events) == 28


# -- gunicorn -----------------------------------------------------------------------------

GUNICORN_APP = """
import logging
import os

import posthog_logging

posthog_logging.configure(
    api_key={api_key!r}, host={host!r}, flush_interval=3600, flush_at=10_000
)
# Captured in the master at import (--preload): still pending when the workers are forked.
posthog_logging.capture("master_import", {{"pid": os.getpid()}}, distinct_id="gunicorn")

log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.propagate = False
log.addHandler(posthog_logging.PostHogHandler())


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path != "/health":
        log.info(
            "request_handled",
            extra={{"event": True, "path": path, "pid": os.getpid(), "distinct_id": "gunicorn"}},
        )
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


@pytest.fixture
def gunicorn(server: LocalServer, tmp_path: Any) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A preloading gunicorn master with two workers serving the app on a free loopback port."""
    pytest.importorskip("gunicorn", reason="gunicorn is not installed")

    (tmp_path / "app.py").write_text(GUNICORN_APP.format(api_key=API_KEY, host=server.url))
    # Port 0: the system picks a free port, which gunicorn logs ("Listening at: ...").
    command = [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "-b", "127.0.0.1:0"]
    command += ["--graceful-timeout", "10"]
    major, minor = (int(part) for part in version("gunicorn").split(".")[:2])
    if (major, minor) >= (25, 1):  # a control socket, shared by all, in $HOME otherwise
        command.append("--no-control-socket")
    command.append("app:app")
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        base = None
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited early:\n{log_path.read_text()}")
            if base is None:
                found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log_path.read_text())
                base = found.group(1) if found else None
            if base is not None:
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(f"{base}/health", timeout=1).ok:
                        break
            if time.monotonic() >= deadline:
                pytest.fail(f"gunicorn did not answer within 30s:\n{log_path.read_text()}")
            time.sleep(0.05)
        assert base is not None
        yield process, base
    finally:
        if process.poll() is None:  # the test failed before stopping it: end master and workers
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


class TestGunicornPreload:
    """gunicorn --preload workers deliver each request's event once; the master's once too."""

    def test_requests_delivered_once_from_workers(
        self, gunicorn: tuple[subprocess.Popen[bytes], str], server: LocalServer, tmp_path: Any
    ) -> None:
        """20 requests, then SIGTERM: 20 events from worker pids and the master's one, once."""
        process, base = gunicorn
        answered_by: dict[str, int] = {}
        with requests.Session() as session:
            for n in range(20):
                response = session.get(f"{base}/req/{n}", timeout=10)
                assert response.status_code == 200
                answered_by[f"/req/{n}"] = int(response.text)
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail("gunicorn did not stop within 30s of SIGTERM")
        log = (tmp_path / "gunicorn.log").read_text()
        assert code == 0, log
        assert "Traceback" not in log, log

        # Everything was sent before the processes exited: nothing more will come.
        server.wait_for_events(21, timeout=5)
        events = assert_each_sent_once(server)
        handled = [e for e in events if e["event"] == "request_handled"]
        assert Counter(e["properties"]["path"] for e in handled) == Counter(list(answered_by))
        for event in handled:
            assert event["properties"]["pid"] == answered_by[event["properties"]["path"]]
            assert event["properties"]["pid"] != process.pid
        [master] = [e for e in events if e["event"] == "master_import"]
        assert master["properties"]["pid"] == process.pid
        assert len(events) == 21


# -- exit ---------------------------------------------------------------------------------

LOGGING_SCRIPT = """
import logging

import posthog_logging

{setup}
log = logging.getLogger("job")
log.setLevel(logging.INFO)
log.addHandler(handler)
for step in range(5):
    log.info("job_step", extra={{"event": True, "step": step}})
try:
    1 / 0
except ZeroDivisionError:
    log.exception("job failed")
"""

SETUPS = {
    "default_client": (
        f"posthog_logging.api_key = {API_KEY!r}\n"
        "posthog_logging.host = {host!r}\n"
        "handler = posthog_logging.PostHogHandler()"
    ),
    "handler_client": (
        f"handler = posthog_logging.PostHogHandler(api_key={API_KEY!r}, host={{host!r}},"
        " flush_interval=3600)"
    ),
}


class TestLoggingScriptExit:
    """A script that logs through PostHogHandler and exits delivers its events and exception."""

    @pytest.mark.parametrize("setup", list(SETUPS))
    def test_events_and_exception_arrive(
        self, server: LocalServer, tmp_path: Any, setup: str
    ) -> None:
        """Marked records and a logger.exception() arrive once, with no flush or shutdown."""
        script = tmp_path / "job.py"
        setup_code = SETUPS[setup].format(host=server.url)
        script.write_text(LOGGING_SCRIPT.format(setup=setup_code))
        done = subprocess.run(
            [sys.executable, str(script)], timeout=30, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        server.wait_for_events(6, timeout=5)
        events = assert_each_sent_once(server)
        steps = [e["properties"]["step"] for e in events if e["event"] == "job_step"]
        assert sorted(steps) == [0, 1, 2, 3, 4]
        [exception] = [e for e in events if e["event"] == "$exception"]
        properties = exception["properties"]
        assert properties["$exception_list"][0]["type"] == "ZeroDivisionError"
        assert properties["$exception_source"] == "python.logging"
        assert properties["log_message"] == "job failed"
        assert len(events) == 6
