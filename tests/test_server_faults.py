"""Fault injection in posthog_logging.server: every fault driven with real HTTP on loopback."""

from __future__ import annotations

import pathlib
import socket
import threading
import time
import uuid
from http import HTTPStatus
from typing import Any

import pytest
import requests

from posthog_logging.server import Fault, LocalServer

from .conftest import API_KEY


def body(*names: str) -> dict[str, Any]:
    """A valid /batch/ body with one event per name (one event "e" when none are given)."""
    events = [
        {"event": name, "distinct_id": "u1", "uuid": str(uuid.uuid4()), "properties": {}}
        for name in names or ("e",)
    ]
    return {"api_key": API_KEY, "batch": events}


def post(
    server: LocalServer, *names: str, session: requests.Session | None = None
) -> requests.Response:
    """POST a valid batch to the server's /batch/."""
    sender = session or requests
    return sender.post(f"{server.url}/batch/", json=body(*names), timeout=30)


def refused(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:*port* is refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


class Background:
    """A POST made on a thread, so that a test can watch it wait."""

    def __init__(self, server: LocalServer) -> None:
        self.response: requests.Response | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(server,), daemon=True)
        self._thread.start()

    def _run(self, server: LocalServer) -> None:
        try:
            self.response = post(server)
        except BaseException as error:
            self.error = error

    def still_waiting_after(self, seconds: float) -> bool:
        """Whether the request is still unanswered after *seconds*."""
        self._thread.join(seconds)
        return self._thread.is_alive()

    def finished_within(self, seconds: float) -> bool:
        """Whether the request ended (answered or failed) within *seconds*."""
        self._thread.join(seconds)
        return not self._thread.is_alive()


class TestStatusFaults:
    def test_status_with_retry_after(self, server: LocalServer) -> None:
        """A status fault answers that status and its headers, stores nothing, and is recorded."""
        server.inject(Fault(status=429, headers={"Retry-After": "2"}))
        response = post(server)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "2"
        assert response.json()["code"] == "fault_injected"
        assert server.events() == []
        [record] = server.requests
        assert (record.status, record.fault, record.event_count) == (429, "status", 1)

    def test_script_runs_in_order_then_normal(self, server: LocalServer) -> None:
        """Scripted faults are met in order, one per request, then requests are served normally."""
        server.inject(Fault(status=500), Fault(status=503))
        assert [post(server, f"e{i}").status_code for i in range(4)] == [500, 503, 200, 200]
        assert [e["event"] for e in server.events()] == ["e2", "e3"]
        assert [r.fault for r in server.requests] == ["status", "status", None, None]

    def test_times_repeats_the_whole_sequence(self, server: LocalServer) -> None:
        """inject(a, b, times=2) scripts a, b, a, b; Fault() is a pass-through placeholder."""
        server.inject(Fault(status=500), Fault(), times=2)
        assert [post(server).status_code for _ in range(5)] == [500, 200, 500, 200, 200]
        assert server.store.count() == 3

    def test_standing_fault_until_cleared(self, server: LocalServer) -> None:
        """A standing fault meets every request until clear_faults(), then service is normal."""
        server.inject(Fault(status=503), times=None)
        assert [post(server).status_code for _ in range(3)] == [503, 503, 503]
        server.clear_faults()
        assert post(server).status_code == 200
        assert server.store.count() == 1

    def test_standing_fault_comes_after_the_script(self, server: LocalServer) -> None:
        """The standing fault applies once the scripted faults have run out."""
        server.inject(Fault(status=503), times=None)
        server.inject(Fault(status=500))
        assert [post(server).status_code for _ in range(3)] == [500, 503, 503]

    def test_clear_faults_empties_the_script(self, server: LocalServer) -> None:
        """clear_faults() also forgets scripted faults not yet met."""
        server.inject(Fault(status=500), times=3)
        server.clear_faults()
        assert post(server).status_code == 200

    def test_only_capture_posts_are_faulted(self, server: LocalServer) -> None:
        """GET / and POSTs to other routes neither meet nor use up a fault."""
        server.inject(Fault(status=503))
        assert requests.get(server.url, timeout=30).status_code == 200
        assert requests.post(f"{server.url}/decide/", json={}, timeout=30).status_code == 404
        assert requests.get(f"{server.url}/batch/", timeout=30).status_code == 405
        assert post(server).status_code == 503
        # GET / (the web view) is not recorded; the others are
        assert [r.fault for r in server.requests] == [None, None, "status"]

    def test_headers_on_a_normal_answer(self, server: LocalServer) -> None:
        """A fault with headers only adds them to a normal answer; the events are stored."""
        server.inject(Fault(headers={"X-Fault": "yes", "content-type": "application/x-test"}))
        response = post(server)
        assert response.status_code == 200
        assert response.headers["X-Fault"] == "yes"
        assert response.headers["Content-Type"] == "application/x-test"
        assert server.store.count() == 1
        assert server.requests[0].fault == "headers"

    def test_keep_alive_connection_survives_a_status_fault(self, server: LocalServer) -> None:
        """After a faulted answer the same keep-alive connection serves the next request."""
        server.inject(Fault(status=500))
        with requests.Session() as session:
            assert post(server, session=session).status_code == 500
            assert post(server, session=session).status_code == 200
        assert server.store.count() == 1


class TestSlowFaults:
    def test_delay_then_stored(self, server: LocalServer) -> None:
        """A delay without a status answers 200 after at least that long and stores the events."""
        server.inject(Fault(delay=0.3))
        start = time.monotonic()
        assert post(server).status_code == 200
        assert time.monotonic() - start >= 0.25
        assert server.store.count() == 1
        assert server.requests[0].fault == "delay"

    def test_delay_with_status(self, server: LocalServer) -> None:
        """A delay with a status answers that status late and stores nothing."""
        server.inject(Fault(delay=0.1, status=502))
        assert post(server).status_code == 502
        assert server.store.count() == 0
        assert server.requests[0].fault == "delay+status"

    def test_hold_blocks_until_released(self, server: LocalServer) -> None:
        """A held request gets no answer and stores nothing until its event is set."""
        release = threading.Event()
        server.inject(Fault(hold=release))
        request = Background(server)
        assert request.still_waiting_after(0.3)
        assert server.store.count() == 0
        release.set()
        assert request.finished_within(10)
        assert request.response is not None and request.response.status_code == 200
        assert server.store.count() == 1
        assert server.requests[0].fault == "hold"

    def test_hold_then_status(self, server: LocalServer) -> None:
        """A hold with a status answers that status once released."""
        release = threading.Event()
        server.inject(Fault(hold=release, status=503, headers={"Retry-After": "1"}))
        request = Background(server)
        assert request.still_waiting_after(0.2)
        release.set()
        assert request.finished_within(10)
        assert request.response is not None and request.response.status_code == 503
        assert request.response.headers["Retry-After"] == "1"
        assert server.store.count() == 0

    def test_other_requests_are_served_while_one_is_held(self, server: LocalServer) -> None:
        """Holding one request does not stall the server for the next ones."""
        release = threading.Event()
        server.inject(Fault(hold=release))
        request = Background(server)
        assert request.still_waiting_after(0.2)
        assert post(server).status_code == 200
        release.set()
        assert request.finished_within(10)
        assert server.store.count() == 2


class TestDrop:
    def test_drop_disconnects_and_stores_nothing(self, server: LocalServer) -> None:
        """A dropped request ends in a ConnectionError; nothing is stored; it is recorded as 0."""
        server.inject(Fault(drop=True))
        with pytest.raises(requests.ConnectionError):
            post(server)
        assert server.store.count() == 0
        [record] = server.requests
        assert (record.status, record.fault, record.event_count) == (0, "drop", 1)
        assert post(server).status_code == 200

    def test_drop_on_a_keep_alive_session(self, server: LocalServer) -> None:
        """A session whose connection was dropped connects anew for its next request."""
        with requests.Session() as session:
            assert post(server, session=session).status_code == 200
            server.inject(Fault(drop=True))
            with pytest.raises(requests.ConnectionError):
                post(server, session=session)
            assert post(server, session=session).status_code == 200
        assert server.store.count() == 2


class TestDownAndUp:
    def test_down_refuses_connections(self, server: LocalServer) -> None:
        """After down() connections are refused and is_up is False."""
        assert server.is_up
        server.down()
        assert not server.is_up
        assert refused(server.port)
        with pytest.raises(requests.ConnectionError):
            post(server)

    def test_up_serves_on_the_same_port_with_earlier_events(self, server: LocalServer) -> None:
        """up() listens on the same address again; events and records from before are kept."""
        url = server.url
        assert post(server, "before").status_code == 200
        server.down()
        server.up()
        assert server.is_up
        assert server.url == url
        assert post(server, "after").status_code == 200
        assert [e["event"] for e in server.events()] == ["before", "after"]
        assert [r.status for r in server.requests] == [200, 200]

    def test_down_and_up_five_times(self, server: LocalServer) -> None:
        """The same port can be given up and taken back repeatedly."""
        port = server.port
        for i in range(5):
            assert post(server, f"e{i}").status_code == 200
            server.down()
            assert refused(port)
            server.up()
            assert server.port == port
        assert server.store.count() == 5

    def test_down_and_up_are_idempotent(self, server: LocalServer) -> None:
        """A second down() or up() in a row does nothing."""
        server.down()
        server.down()
        assert not server.is_up
        server.up()
        server.up()
        assert server.is_up
        assert post(server).status_code == 200

    def test_down_closes_keep_alive_connections(self, server: LocalServer) -> None:
        """down() closes connections a client keeps open; after up() the client reconnects."""
        with requests.Session() as session:
            assert post(server, session=session).status_code == 200
            server.down()
            with pytest.raises(requests.ConnectionError):
                post(server, session=session)
            server.up()
            assert post(server, session=session).status_code == 200

    def test_down_releases_a_held_request(self, server: LocalServer) -> None:
        """down() ends a held request at once by closing its connection, unanswered."""
        server.inject(Fault(hold=threading.Event()))  # never set
        request = Background(server)
        assert request.still_waiting_after(0.2)
        start = time.monotonic()
        server.down()
        assert time.monotonic() - start < 10
        assert request.finished_within(10)
        assert isinstance(request.error, requests.ConnectionError)
        assert server.store.count() == 0
        assert [(r.status, r.fault) for r in server.requests] == [(0, "hold")]

    def test_down_ends_a_long_delay(self, server: LocalServer) -> None:
        """down() ends a request waiting out a delay, so it never stores its events."""
        server.inject(Fault(delay=120))
        request = Background(server)
        assert request.still_waiting_after(0.2)
        server.down()
        assert request.finished_within(10)
        assert isinstance(request.error, requests.ConnectionError)
        assert server.store.count() == 0

    def test_faults_are_kept_across_down_and_up(self, server: LocalServer) -> None:
        """Faults scripted before down() are met after up()."""
        server.inject(Fault(status=503))
        server.down()
        server.up()
        assert post(server).status_code == 503

    def test_start_after_down_is_up(self, server: LocalServer) -> None:
        """start() on a server that is down brings it up on the same port."""
        port = server.port
        server.down()
        assert server.start() is server
        assert server.is_up and server.port == port
        assert post(server).status_code == 200

    def test_up_on_a_server_never_started(self, tmp_path: pathlib.Path) -> None:
        """up() on a new server serves, as start() does; down() before serving works too."""
        srv = LocalServer(data_dir=tmp_path)
        try:
            srv.down()
            assert refused(srv.port)
            srv.up()
            assert post(srv).status_code == 200
        finally:
            srv.stop()

    def test_wait_for_events_mentions_faults_left_and_down(self, server: LocalServer) -> None:
        """The TimeoutError of wait_for_events says what faults are left and that it is down."""
        server.inject(Fault(status=500), times=3)
        server.inject(Fault(status=503), times=None)
        assert post(server).status_code == 500
        server.down()
        with pytest.raises(TimeoutError) as raised:
            server.wait_for_events(1, timeout=0.05)
        message = str(raised.value)
        assert "1 x 500" in message
        assert "2 scripted and a standing fault" in message
        assert "down" in message


class TestStop:
    def test_stop_after_down(self, tmp_path: pathlib.Path) -> None:
        """stop() after down() works, twice, and the server cannot come up again."""
        srv = LocalServer(data_dir=tmp_path).start()
        srv.down()
        srv.stop()
        srv.stop()
        assert not srv.is_up
        with pytest.raises(RuntimeError):
            srv.up()

    def test_stop_after_down_and_up(self, tmp_path: pathlib.Path) -> None:
        """stop() after down() and up() closes the port again."""
        srv = LocalServer(data_dir=tmp_path).start()
        srv.down()
        srv.up()
        srv.stop()
        assert not srv.is_up
        assert refused(srv.port)

    def test_stop_releases_a_held_request(self, tmp_path: pathlib.Path) -> None:
        """stop() does not hang on a held request: its connection is closed unanswered."""
        srv = LocalServer(data_dir=tmp_path).start()
        srv.inject(Fault(hold=threading.Event()))  # never set
        request = Background(srv)
        assert request.still_waiting_after(0.2)
        start = time.monotonic()
        srv.stop()
        assert time.monotonic() - start < 10
        assert request.finished_within(10)
        assert isinstance(request.error, requests.ConnectionError)

    def test_down_is_a_no_op_after_stop(self, tmp_path: pathlib.Path) -> None:
        """down() after stop() does nothing."""
        srv = LocalServer(data_dir=tmp_path).start()
        srv.stop()
        srv.down()
        assert not srv.is_up

    def test_serve_forever_outlives_down_and_up(self, tmp_path: pathlib.Path) -> None:
        """serve_forever() keeps waiting through down() and up(), and returns at stop()."""
        srv = LocalServer(data_dir=tmp_path)
        runner = threading.Thread(target=srv.serve_forever, daemon=True)
        runner.start()
        try:
            assert post(srv, "first").status_code == 200
            srv.down()
            runner.join(0.2)
            assert runner.is_alive()
            srv.up()
            assert post(srv, "second").status_code == 200
            assert srv.store.count() == 2
        finally:
            srv.stop()
            runner.join(10)
        assert not runner.is_alive()


class TestFaultArguments:
    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"status": 99}, ValueError),
            ({"status": 600}, ValueError),
            ({"status": True}, ValueError),
            ({"delay": -1}, ValueError),
            ({"delay": float("nan")}, ValueError),
            ({"delay": float("inf")}, ValueError),
            ({"delay": "1"}, TypeError),
            ({"hold": True}, TypeError),
            ({"headers": {"Content-Length": "3"}}, ValueError),
            ({"headers": {"Connection": "close"}}, ValueError),
            ({"headers": {"Bad Name": "x"}}, ValueError),
            ({"headers": {"X-Split": "a\r\nInjected: yes"}}, ValueError),
            ({"drop": True, "status": 500}, ValueError),
            ({"drop": True, "headers": {"Retry-After": "1"}}, ValueError),
        ],
    )
    def test_bad_fault_is_refused(self, options: dict[str, Any], error: type[Exception]) -> None:
        """A Fault that could not be served as asked raises at construction."""
        with pytest.raises(error):
            Fault(**options)

    def test_http_status_is_accepted_as_int(self, server: LocalServer) -> None:
        """An HTTPStatus member is accepted as a status and recorded as a plain int."""
        fault = Fault(status=HTTPStatus.SERVICE_UNAVAILABLE)
        assert type(fault.status) is int
        server.inject(fault)
        assert post(server).status_code == 503
        assert type(server.requests[0].status) is int

    def test_headers_are_copied(self) -> None:
        """Changing the headers dict after building a Fault does not change the Fault."""
        headers = {"Retry-After": "1"}
        fault = Fault(status=429, headers=headers)
        headers["Retry-After"] = "9"
        assert fault.headers == {"Retry-After": "1"}
        assert hash(fault) == hash(Fault(status=429, headers={"Retry-After": "1"}))

    @pytest.mark.parametrize(
        ("faults", "times", "error"),
        [
            ((), 1, TypeError),
            (("503",), 1, TypeError),
            ((Fault(status=500), Fault(status=503)), None, ValueError),
            ((Fault(status=500),), -1, ValueError),
        ],
    )
    def test_bad_inject_is_refused(
        self, server: LocalServer, faults: tuple[Any, ...], times: Any, error: type[Exception]
    ) -> None:
        """inject() refuses no faults, non-Faults, several standing faults and negative times."""
        with pytest.raises(error):
            server.inject(*faults, times=times)
        assert post(server).status_code == 200
