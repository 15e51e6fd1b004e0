"""Malformed requests to the local server, sent as raw bytes on real sockets.

What a user sees: each malformed request is answered with a status (400, or 414, 431, 501,
505 where HTTP has one for it) and a short JSON body, the connection is closed cleanly
(the answer arrives, then the end of the stream, never a reset), the server writes one
line to stderr for it and never a traceback, and it serves the next request as before.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from posthog_logging.server import EventStore, LocalServer
from posthog_logging.server import http as server_http

from .conftest import API_KEY


def batch_body() -> bytes:
    """A valid /batch/ body with one event."""
    event = {"event": "still served", "distinct_id": "u1", "uuid": str(uuid.uuid4())}
    return json.dumps({"api_key": API_KEY, "batch": [event]}).encode()


def client_hello() -> bytes:
    """The first bytes an https:// client sends: a real TLS ClientHello."""
    context = ssl.create_default_context()
    tls = context.wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16"
    return hello


@dataclass
class Reply:
    """Everything the server sent on one connection, up to its end."""

    raw: bytes

    @property
    def status_line(self) -> str:
        return self.raw.split(b"\r\n", 1)[0].decode("latin-1")

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    @property
    def headers(self) -> dict[str, str]:
        head = self.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        fields = [line.partition(":") for line in head.split("\r\n")[1:]]
        return {name.strip().lower(): value.strip() for name, _, value in fields}

    @property
    def body(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[1]

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(port: int, data: bytes, *, stop_sending: bool = False, timeout: float = 10) -> Reply:
    """Send *data* on a new connection (then, with *stop_sending*, half-close it) and read
    until the server ends the connection. A server that keeps it open past *timeout*, or
    resets it, fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if stop_sending:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return Reply(received)


def assert_refused(reply: Reply, status: int, code: str) -> None:
    """*reply* is one complete JSON answer of *status* that closes the connection."""
    assert reply.status_line.startswith(f"HTTP/1.1 {status} "), reply.raw[:200]
    assert reply.headers["connection"] == "close"
    assert reply.headers["content-type"] == "application/json"
    assert int(reply.headers["content-length"]) == len(reply.body)  # nothing after the answer
    assert reply.json()["code"] == code


def good_post(server: LocalServer) -> None:
    """A valid batch on a new connection is accepted and stored."""
    before = server.store.count()
    response = requests.post(f"{server.url}/batch/", data=batch_body(), timeout=10)
    assert response.status_code == 200
    assert server.store.count() == before + 1


def log_lines(capfd: pytest.CaptureFixture[str]) -> list[str]:
    """What the server wrote to stderr since the last call, as lines; never a traceback."""
    err = capfd.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    status: int
    code: str
    logged: str
    """What the server's line for it says."""


def head(*lines: bytes, method: bytes = b"POST", version: bytes = b"HTTP/1.1") -> bytes:
    """A request head to /batch/ with *lines* as its header lines."""
    return b"\r\n".join([method + b" /batch/ " + version, b"Host: 127.0.0.1", *lines, b"", b""])


KEY = API_KEY.encode()
CASES = [
    Case("garbage", b"GARBAGE\r\n\r\n", 400, "malformed_request_line", '"GARBAGE" 400 '),
    Case("http_0_9", b"GET /\r\n", 400, "malformed_request_line", '"GET /" 400 '),
    Case(
        "version_9_9",
        b"GET /batch/?api_key=" + KEY + b" HTTP/9.9\r\nHost: x\r\n\r\n",
        505,
        "http_version_not_supported",
        '"GET /batch/" 505 HTTP/9.9 is not served here',
    ),
    Case(
        "http2_prior_knowledge",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        505,
        "http_version_not_supported",
        '"PRI * HTTP/2.0" 505 ',
    ),
    Case("bad_version", b"GET / HTTP/1.x\r\n\r\n", 400, "malformed_request_line", " 400 "),
    Case("empty_lines", b"\r\n\r\n", 400, "malformed_request_line", '"-" 400 '),
    Case(
        "control_bytes_in_target",
        b"GET /caf\xc3\xa9\x01 HTTP/1.1\r\n\r\n",
        400,
        "malformed_request_line",
        "visible ASCII",
    ),
    Case(
        "target_not_a_url",
        b"GET http://[::1/ HTTP/1.1\r\n\r\n",
        400,
        "malformed_request_line",
        "not a URL",
    ),
    Case(
        "request_line_of_100_kb",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        "request_line_too_long",
        '\u2026" 414 the request line is over 64 KB',
    ),
    Case(
        "header_without_colon",
        head(b"Authorization Bearer " + KEY),
        400,
        "malformed_header",
        '"POST /batch/" 400 header line 2 has no colon',
    ),
    Case(
        "space_before_colon",
        head(b"Content-Length : 2") + b"{}",
        400,
        "malformed_header",
        "header line 2: the field name",
    ),
    Case(
        "folded_header",
        head(b"X-Note: one", b"  two"),
        400,
        "malformed_header",
        "folded",
    ),
    Case("nul_in_value", head(b"X-Note: a\x00b"), 400, "malformed_header", "NUL or CR"),
    Case(
        "header_section_of_80_kb",
        head(*(b"X-Filler-%02d: %s" % (i, b"v" * 900) for i in range(90))),
        431,
        "header_fields_too_large",
        "header section is over 64 KB",
    ),
    Case(
        "header_line_of_70_kb",
        head(b"X-Filler: " + b"v" * 70_000),
        431,
        "header_fields_too_large",
        "header section is over 64 KB",
    ),
    Case(
        "101_header_fields",
        head(*(b"X-Filler-%03d: v" % i for i in range(101))),
        431,
        "header_fields_too_large",
        "over 100 header fields",
    ),
    Case(
        "negative_content_length",
        head(b"Content-Length: -5"),
        400,
        "invalid_content_length",
        '"POST /batch/" 400 Content-Length',
    ),
    Case(
        "content_length_not_a_number",
        head(b"Content-Length: ten"),
        400,
        "invalid_content_length",
        '"POST /batch/" 400 Content-Length',
    ),
    Case(
        "two_content_lengths",
        head(b"Content-Length: 2", b"Content-Length: 3") + b"{}",
        400,
        "invalid_content_length",
        '"POST /batch/" 400 Content-Length',
    ),
    Case(
        "content_length_and_chunked",
        head(b"Content-Length: 2", b"Transfer-Encoding: chunked") + b"0\r\n\r\n",
        400,
        "invalid_content_length",
        "not both",
    ),
    Case(
        "last_coding_not_chunked",
        head(b"Transfer-Encoding: gzip") + b"\x1f\x8b",
        400,
        "invalid_transfer_encoding",
        "not chunked",
    ),
    Case(
        "coding_besides_chunked",
        head(b"Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n",
        501,
        "unsupported_transfer_encoding",
        '"POST /batch/" 501 ',
    ),
    Case(
        "chunked_in_http_1_0",
        head(b"Transfer-Encoding: chunked", version=b"HTTP/1.0") + b"0\r\n\r\n",
        400,
        "invalid_transfer_encoding",
        "HTTP/1.0",
    ),
    Case(
        "unknown_method",
        head(b"Content-Length: 2", method=b"BREW") + b"{}",
        501,
        "method_not_implemented",
        '"BREW /batch/" 501 ',
    ),
    Case("tls_handshake", client_hello(), 400, "not_http", '"-" 400 this port speaks plain HTTP'),
]


@pytest.fixture
def loud(server: LocalServer) -> LocalServer:
    """The local server, logging each request to stderr."""
    server.quiet = False
    return server


class TestMalformedRequests:
    @pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
    def test_answered_closed_and_logged_once(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str], case: Case
    ) -> None:
        """The client gets the status and a JSON body saying what was wrong, then the end
        of the connection; the server writes one line for it, without the key, and then
        serves a good request."""
        log_lines(capfd)
        assert_refused(exchange(loud.port, case.data), case.status, case.code)
        [line] = log_lines(capfd)
        assert case.logged in line
        assert API_KEY not in line
        assert loud.requests == []  # refused before any route: not a capture request
        assert loud.store.count() == 0
        good_post(loud)

    @pytest.mark.parametrize(
        ("data", "status"),
        [
            (b"GET /" + b"a" * (8 << 20) + b" HTTP/1.1\r\n\r\n", 414),
            (head(b"X-Filler: " + b"v" * (8 << 20)), 431),
        ],
        ids=["request_line_of_8_mb", "header_section_of_8_mb"],
    )
    def test_client_still_sending_reads_the_answer(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str], data: bytes, status: int
    ) -> None:
        """A client still sending megabytes the server will not read finishes sending and
        reads the answer (not a broken pipe or a reset): the server drops the rest of the
        request before it closes."""
        log_lines(capfd)
        reply = exchange(loud.port, data)
        assert reply.status == status
        assert reply.headers["connection"] == "close"
        assert len(log_lines(capfd)) == 1
        good_post(loud)

    def test_quiet_server_answers_the_same_and_writes_nothing(
        self, server: LocalServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """The default quiet server answers every malformed request as the loud one does,
        and writes nothing at all to stderr."""
        log_lines(capfd)
        for case in CASES:
            assert_refused(exchange(server.port, case.data), case.status, case.code)
        good_post(server)
        assert capfd.readouterr().err == ""

    def test_https_client_fails_at_once(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """An https:// URL pointed at the plain-HTTP port fails at once with a TLS error,
        not after a read timeout, and the server writes one line saying why."""
        log_lines(capfd)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"https://127.0.0.1:{loud.port}/", timeout=10)
        [line] = log_lines(capfd)
        assert "this port speaks plain HTTP, not TLS" in line

    def test_head_is_refused_without_a_body(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """HEAD, not served here, is answered 501 with no body, as HEAD requires."""
        log_lines(capfd)
        reply = exchange(loud.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.status_line.startswith("HTTP/1.1 501 ")
        assert reply.headers["connection"] == "close"
        assert reply.body == b""
        [line] = log_lines(capfd)
        assert '"HEAD /" 501 ' in line

    def test_malformed_request_after_a_good_one_on_the_same_connection(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """On a keep-alive connection a good request is answered and stored, the malformed
        one after it is answered 400, and only then does the connection close."""
        log_lines(capfd)
        body = batch_body()
        good = head(b"Content-Length: %d" % len(body)) + body
        reply = exchange(loud.port, good + b"GARBAGE\r\n\r\n")
        first, second = re.split(rb"(?=HTTP/1\.1 )", reply.raw)[1:]
        assert first.startswith(b"HTTP/1.1 200 ")
        assert b"connection: close" not in first.lower()
        assert_refused(Reply(second), 400, "malformed_request_line")
        assert loud.store.count() == 1
        lines = log_lines(capfd)
        assert len(lines) == 2
        assert '"POST /batch/" 200' in lines[0]
        assert '"GARBAGE" 400 ' in lines[1]

    def test_one_empty_line_before_a_request_is_ignored(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A stray empty line before a request (RFC 9112 asks servers to ignore one) does
        not make it malformed."""
        log_lines(capfd)
        body = batch_body()
        reply = exchange(
            loud.port, b"\r\n" + head(b"Content-Length: %d" % len(body)) + body, stop_sending=True
        )
        assert reply.status_line.startswith("HTTP/1.1 200 ")
        assert loud.store.count() == 1
        [line] = log_lines(capfd)
        assert '"POST /batch/" 200' in line

    def test_chunked_body_is_refused_with_411(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A chunked body, never sent by PostHog's SDKs, is answered 411 (send a
        Content-Length), recorded, and the connection closed cleanly."""
        log_lines(capfd)
        data = head(b"Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\n\r\n"
        assert_refused(exchange(loud.port, data), 411, "length_required")
        [line] = log_lines(capfd)
        assert '"POST /batch/" 411' in line
        assert [r.status for r in loud.requests] == [411]
        good_post(loud)


class TestClientsThatStop:
    def test_body_shorter_than_its_content_length(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A client that stops sending before its Content-Length is reached gets 400 and
        nothing is stored, even though what arrived is a valid batch."""
        log_lines(capfd)
        body = batch_body()
        data = head(b"Content-Length: %d" % (len(body) + 10)) + body
        reply = exchange(loud.port, data, stop_sending=True)
        assert_refused(reply, 400, "incomplete_body")
        assert f"after {len(body)} of the {len(body) + 10} bytes" in reply.json()["detail"]
        assert loud.store.count() == 0
        [record] = loud.requests
        assert (record.status, record.body_size) == (400, len(body))
        [line] = log_lines(capfd)
        assert '"POST /batch/" 400' in line
        good_post(loud)

    def test_connects_and_sends_nothing(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A client that connects and closes without a byte gets no answer, and the server
        writes nothing."""
        log_lines(capfd)
        assert exchange(loud.port, b"", stop_sending=True).raw == b""
        assert log_lines(capfd) == []
        good_post(loud)

    @pytest.mark.parametrize(
        ("data", "logged"),
        [
            (b"POST /batch/ HT", '"POST /batch/ HT" - the client closed the connection'),
            (b"POST /batch/?api_key=" + KEY + b" HTTP/1.1\r\nContent-Le", '"POST /batch/" - '),
        ],
        ids=["in_the_request_line", "in_the_headers"],
    )
    def test_stops_mid_request(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str], data: bytes, logged: str
    ) -> None:
        """A client that stops sending in the middle of a request's head gets no answer
        (there is nothing to answer) and the server writes one line, without the key."""
        log_lines(capfd)
        assert exchange(loud.port, data, stop_sending=True).raw == b""
        [line] = log_lines(capfd)
        assert logged in line
        assert API_KEY not in line
        good_post(loud)

    def test_stalled_request_and_idle_connection_time_out(
        self, loud: LocalServer, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the handler's timeout, a stalled half request is closed with one line, and
        an idle connection (nothing sent) is closed without one."""
        monkeypatch.setattr(server_http._Handler, "timeout", 0.3)
        log_lines(capfd)
        assert exchange(loud.port, b"POST /batch/ HTTP/1.1\r\nHost: x\r\n").raw == b""
        [line] = log_lines(capfd)
        assert '"POST /batch/" - no complete request within 0.3 s' in line
        assert exchange(loud.port, b"").raw == b""
        assert log_lines(capfd) == []


IN_A_ROW = {
    "garbage",
    "version_9_9",
    "tls_handshake",
    "request_line_of_100_kb",
    "header_without_colon",
    "header_section_of_80_kb",
    "negative_content_length",
    "coding_besides_chunked",
}


def test_serve_subprocess_survives_malformed_requests(tmp_path: Path) -> None:
    """`python -m posthog_logging serve -v`, as a user runs it: a series of malformed
    requests and clients that give up (one resetting the connection) are answered or
    dropped, one stderr line each at most and no traceback, and a good batch after them is
    accepted and stored."""
    command = ["serve", "--port", "0", "--verbose", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "posthog_logging", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        found = re.search(r"on http://127\.0\.0\.1:(\d+)", banner)
        assert found, banner
        port = int(found.group(1))

        exchange(port, b"", stop_sending=True)  # connects, sends nothing
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head(b"Content-Length: 1000") + b'{"api_key"')
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # closed above with a reset, mid-body
        sent = [case for case in CASES if case.name in IN_A_ROW]
        for case in sent:
            assert_refused(exchange(port, case.data), case.status, case.code)
        body = batch_body()
        short = head(b"Content-Length: %d" % (len(body) + 1)) + body
        assert_refused(exchange(port, short, stop_sending=True), 400, "incomplete_body")
        response = requests.post(f"http://127.0.0.1:{port}/batch/", data=body, timeout=10)
        assert response.status_code == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = err.splitlines()
    # One line per answered request, in order; the silent client and the reset one, none.
    answered = [int(re.findall(r'" (\d{3})\b', line)[0]) for line in lines]
    assert answered == [*(case.status for case in sent), 400, 200], err
    assert API_KEY not in err
    store = EventStore(tmp_path)
    try:
        assert store.count() == 1
    finally:
        store.close()
