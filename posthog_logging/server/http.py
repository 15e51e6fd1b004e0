"""HTTP: the local server's socket and its request handler, which routes each request.

`HTTPServer` listens on one socket, a thread per connection; `LocalServer.down` closes it
and `LocalServer.up` opens a new one on the same address. The handler serves:

- ``POST`` on PostHog's capture routes (``/batch``, ``/capture``, ``/e``, ``/track``,
  ``/i/v0/e``, ``/engage``), checked as in `posthog_logging.server.capture` and stored;
- ``POST /i/v1/logs``, PostHog Logs' route: an OTLP/HTTP JSON export, read as in
  `posthog_logging.server.otlp`, with the key as a Bearer token;
- ``GET`` for the web view's page, assets and feeds (`posthog_logging.server.view`);

and 405 for other methods on those routes, 404 elsewhere. A capture request first meets
the next scripted `Fault`, if any, and each is recorded as a `RequestRecord`, its
credentials redacted.

A request that is not HTTP/1.x as this server reads it never reaches a route. It is
answered with a JSON body (``{"type": "validation_error", "code": ..., "detail": ...}``)
and ``Connection: close``, logged as one line (when the server is not quiet), not recorded
in `LocalServer.requests`, and the connection is closed cleanly (see below); the server
serves the next connection as before:

- 400 ``malformed_request_line``: a request line that is not ``METHOD TARGET HTTP/x.y``
  (``GARBAGE``, an HTTP/0.9 ``GET /``, a target with spaces, control or non-ASCII bytes),
  or an empty line where a request line was due (one empty line before a request is
  ignored, as RFC 9112 asks);
- 400 ``not_http``: a TLS handshake sent to this plain-HTTP port (answered at once, so an
  ``https://`` client fails at once rather than waiting for a line that never ends);
- 505 ``http_version_not_supported``: a well-formed version other than HTTP/1.x
  (``HTTP/9.9``, ``HTTP/2.0`` with prior knowledge);
- 414 ``request_line_too_long``: a request line over 64 KB (RFC 9110's status for a target
  too long to parse);
- 431 ``header_fields_too_large``: a header section over 64 KB or over 100 fields;
- 400 ``malformed_header``: a header line without a colon, with whitespace or another
  character not allowed in a field name before the colon, a folded (obs-fold) line, or a
  value holding NUL or CR;
- 400 ``invalid_content_length``: a Content-Length that is not one non-negative decimal
  number (``-1``, ``abc``, ``5, 6``), or one sent with Transfer-Encoding (ambiguous framing);
- 400 ``invalid_transfer_encoding`` when the last transfer coding is not ``chunked`` or the
  request is HTTP/1.0, 501 ``unsupported_transfer_encoding`` for codings besides ``chunked``;
- 501 ``method_not_implemented``: a method that is a token but not served here (``HEAD``,
  ``OPTIONS``, ``BREW``).

A request that reaches a route is answered there and recorded: a chunked body (PostHog's
SDKs always send a Content-Length) is answered 411 ``length_required``, a body shorter than
its Content-Length when the client stops sending is answered 400 ``incomplete_body`` and
never stored.

Logging: the server writes to stderr, as `http.server` does (``address - - [date] message``,
control characters escaped), one line per request, and nothing at all when quiet. It uses
no `logging` logger, so that an application's handlers (a `PostHogHandler` on the root
logger) never send the server's own lines back to it. A client that connects and sends
nothing, closes between requests, or resets the connection is not logged; one that closes
or stalls (past `_Handler.timeout`) in the middle of a request is one line. No traceback is
written for any of these, only for a fault in the server's own code.

Closing cleanly: after an answer that ends the connection the server half-closes it and
reads and drops whatever the client still sends (for at most two seconds), so that a client
still sending a long request line, header section or body reads the answer instead of a
connection reset.
"""

from __future__ import annotations

import io
import json
import re
import socket
import socketserver
import sys
import threading
import time
from http import HTTPStatus
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from ..wire import LOGS_PATH, MAX_BODY_BYTES, MAX_LOGS_BODY_BYTES
from .capture import (
    Rejection,
    bearer,
    check_key,
    count_events,
    decode_checked,
    invalid,
    split,
    unzip_checked,
    validate,
)
from .faults import Fault, fault_label, wait_out
from .otlp import read_logs_request
from .state import RequestRecord, ServerState
from .view import FEEDS, VIEW_ASSETS, VIEW_HEADERS, feed, read_asset

__all__ = ["HTTPServer"]

_CAPTURE_PATHS = frozenset({"/batch", "/capture", "/e", "/track", "/i/v0/e", "/engage"})
# A body we refuse is still read and dropped, so that the client sees our answer rather than a
# reset connection; past this size we answer and close instead.
_DRAIN_LIMIT = 5 * MAX_BODY_BYTES
_REDACTED_HEADERS = frozenset({"authorization", "cookie"})
_MAX_REQUEST_LINE = 65536  # bytes, as http.server
_MAX_HEADER_BYTES = 65536  # the whole header section, after the request line
_MAX_HEADERS = 100  # fields, as http.client
_LINGER = 2.0  # seconds a closing connection's late input is read and dropped
_TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a ClientHello
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2
_TARGET = re.compile(r"[\x21-\x7e]+")  # visible ASCII
_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")  # RFC 9112 2.3
_LOGGED_LINE = 60  # characters of an unparsable request line quoted in the log
# Control characters (and the backslash) escaped in a log line, so that a request cannot
# forge lines or terminal escapes; as http.server does from Python 3.11.1 on.
_LOG_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_LOG_ESCAPES[ord("\\")] = "\\\\"


class _HungUp(Exception):
    """The client closed the connection in the middle of a request's head."""


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: ServerState) -> None:
        self.state = state
        """What the `LocalServer` shares with its requests."""
        self.released = threading.Event()
        """Set when this socket is closed (`LocalServer.down` or `stop`): waits end."""
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # http.server.HTTPServer.server_bind also resolves the host's FQDN, which can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.released.is_set() or isinstance(sys.exc_info()[1], OSError):
            return  # the client went away, or we are closing its connection
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server_version = "posthog-logging-local"
    timeout = 60  # seconds an idle or stalled connection is kept
    disable_nagle_algorithm = True  # else headers and body, written apart, wait on delayed ACKs
    server: HTTPServer
    _body_size = 0  # bytes of the current request's body read so far
    _length: int | None = None  # the current request's Content-Length, checked
    _started = False  # some of the current request has arrived
    _status = 0  # the status answered to the current request, 0 before the answer

    def setup(self) -> None:
        super().setup()
        self.server.state.track(self.connection, add=True, released=self.server.released)

    def finish(self) -> None:
        self.server.state.track(self.connection, add=False)
        super().finish()

    def handle(self) -> None:
        super().handle()
        if self._status:  # the last request was answered, then the connection ends
            self._linger()

    def handle_one_request(self) -> None:
        """Read one request's head, then serve it on its route; a malformed head is answered
        here (see the module's documentation), a request cut short or stalled is logged."""
        self.command, self.path, self.requestline = "", "", ""
        self.request_version, self.raw_requestline = "HTTP/1.1", b""
        self._started, self._length, self._status = False, None, 0
        self.close_connection = True
        try:
            try:
                if not self._read_head():
                    return  # the client closed the connection, or the server went down
            except Rejection as rejection:
                return self._fail(rejection)
            method = getattr(self, f"do_{self.command}", None)
            if method is None:
                detail = f"{self.command} is not served here: POST events to /batch/"
                return self._fail(Rejection(501, "method_not_implemented", detail))
            method()
            self.wfile.flush()
        except _HungUp:
            self.close_connection = True
            self.log_message('"%s" - the client closed the connection mid-request', self._label())
        except TimeoutError:
            self.close_connection = True
            if self._started:  # else an idle keep-alive connection, closed quietly
                self.log_message(
                    '"%s" - no complete request within %g s: connection closed',
                    self._label(),
                    self.timeout,
                )

    def _read_head(self) -> bool:
        """Read and check the request line and headers; False when the client is gone."""
        raw = self._read_request_line()
        if raw is None:
            return False
        self._parse_request_line(raw)
        self.headers = self._read_headers()
        self._check_framing()
        tokens = {t.strip().lower() for t in self.headers.get("Connection", "").split(",")}
        if "close" in tokens:
            self.close_connection = True
        elif "keep-alive" in tokens:
            self.close_connection = False
        expect = self.headers.get("Expect", "").strip().lower()
        if expect == "100-continue" and self.request_version >= "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _read_request_line(self) -> bytes | None:
        """The request line, or None when the connection ends before one begins."""
        for blank_allowed in (True, False):
            # Waits for the first byte; a line is not read before, as TLS sends no newline.
            first = cast(io.BufferedReader, self.rfile).peek(1)[:1]
            if not first:
                return None
            self._started = True
            if first[0] == _TLS_HANDSHAKE:
                detail = "this port speaks plain HTTP, not TLS: use http://, not https://"
                raise Rejection(400, "not_http", detail)
            raw = self.rfile.readline(_MAX_REQUEST_LINE + 1)
            if len(raw) > _MAX_REQUEST_LINE:
                self.requestline = raw[: _LOGGED_LINE + 1].decode("iso-8859-1")
                detail = f"the request line is over {_MAX_REQUEST_LINE // 1024} KB"
                raise Rejection(414, "request_line_too_long", detail)
            if not raw.endswith(b"\n"):
                self.requestline = raw.decode("iso-8859-1")
                raise _HungUp
            if raw in (b"\r\n", b"\n") and blank_allowed:  # RFC 9112 2.2: ignore one
                self._started = False
                continue
            return raw
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse_request_line(self, raw: bytes) -> None:
        """Set command, path and request_version from *raw*, or raise a `Rejection`."""
        self.raw_requestline = raw
        self.requestline = line = raw.decode("iso-8859-1").rstrip("\r\n")
        words = line.split()
        if not words:
            raise Rejection(400, "malformed_request_line", "the request line is empty")
        usage = "a request line is METHOD TARGET HTTP/1.1, e.g. POST /batch/ HTTP/1.1"
        if len(words) != 3:
            raise Rejection(400, "malformed_request_line", usage)
        method, target, version = words
        matched = _VERSION.fullmatch(version)
        if matched is None:
            raise Rejection(400, "malformed_request_line", usage)
        if matched.group(1) != "1":
            detail = f"{version} is not served here: send HTTP/1.1"
            raise Rejection(505, "http_version_not_supported", detail)
        if not _TOKEN.fullmatch(method):
            raise Rejection(400, "malformed_request_line", "the method is not an HTTP token")
        if not _TARGET.fullmatch(target):
            detail = "the target holds a character that is not visible ASCII"
            raise Rejection(400, "malformed_request_line", detail)
        if target.startswith("//"):  # else urlsplit reads the first segment as a host
            target = "/" + target.lstrip("/")
        try:
            urlsplit(target)
        except ValueError:
            raise Rejection(400, "malformed_request_line", "the target is not a URL") from None
        self.command, self.path, self.request_version = method, target, version
        self.close_connection = matched.group(2) == "0"  # HTTP/1.1 keeps the connection

    def _read_headers(self) -> HTTPMessage:
        """The header section, checked field by field, or raise a `Rejection`."""
        headers = HTTPMessage()
        size = count = 0
        too_large = f"the header section is over {_MAX_HEADER_BYTES // 1024} KB"
        while True:
            if size >= _MAX_HEADER_BYTES:
                raise Rejection(431, "header_fields_too_large", too_large)
            raw = self.rfile.readline(_MAX_HEADER_BYTES - size)
            size += len(raw)
            if not raw.endswith(b"\n"):
                if size >= _MAX_HEADER_BYTES:
                    raise Rejection(431, "header_fields_too_large", too_large)
                raise _HungUp
            if raw in (b"\r\n", b"\n"):
                return headers
            count += 1
            if count > _MAX_HEADERS:
                detail = f"the request has over {_MAX_HEADERS} header fields"
                raise Rejection(431, "header_fields_too_large", detail)
            # Details name the line, never its text: it may hold a key.
            line = raw.decode("iso-8859-1").removesuffix("\n").removesuffix("\r")
            if line[:1] in (" ", "\t"):
                detail = f"header line {count} is folded onto the previous one (obs-fold)"
                raise Rejection(400, "malformed_header", detail)
            name, colon, value = line.partition(":")
            if not colon:
                raise Rejection(400, "malformed_header", f"header line {count} has no colon")
            if not _TOKEN.fullmatch(name):
                detail = (
                    f"header line {count}: the field name holds whitespace or a character"
                    " not allowed in a token"
                )
                raise Rejection(400, "malformed_header", detail)
            value = value.strip(" \t")
            if "\x00" in value or "\r" in value:
                detail = f"header line {count}: the value holds NUL or CR"
                raise Rejection(400, "malformed_header", detail)
            headers[name] = value  # appended: repeated fields are kept

    def _check_framing(self) -> None:
        """Check Content-Length and Transfer-Encoding, which say where the body ends."""
        lengths = self.headers.get_all("Content-Length") or []
        codings = [
            coding.strip().lower()
            for value in self.headers.get_all("Transfer-Encoding") or []
            for coding in value.split(",")
            if coding.strip()
        ]
        if "Transfer-Encoding" in self.headers:
            if lengths:
                detail = "send Content-Length or Transfer-Encoding, not both"
                raise Rejection(400, "invalid_content_length", detail)
            if self.request_version < "HTTP/1.1":
                detail = "Transfer-Encoding is not HTTP/1.0: send a Content-Length"
                raise Rejection(400, "invalid_transfer_encoding", detail)
            if not codings or codings[-1] != "chunked":
                detail = "the last transfer coding is not chunked: where the body ends is unknown"
                raise Rejection(400, "invalid_transfer_encoding", detail)
            if len(codings) > 1:
                detail = "only the chunked transfer coding is known here: send a Content-Length"
                raise Rejection(501, "unsupported_transfer_encoding", detail)
            return  # chunked: left to the route, which refuses it (411) or ignores it
        if lengths:
            values = {value.strip() for field in lengths for value in field.split(",")}
            (value, *others) = values
            if others or not (value.isascii() and value.isdigit()):
                detail = "Content-Length is not one number of bytes"
                raise Rejection(400, "invalid_content_length", detail)
            self._length = int(value)

    def _fail(self, rejection: Rejection) -> None:
        """Answer a request refused before its route, log it in one line, close."""
        self.close_connection = True
        self._status = rejection.status
        detail = rejection.detail if len(rejection.detail) <= 100 else rejection.detail[:99] + "…"
        self.log_message('"%s" %d %s', self._label(), rejection.status, detail)
        body = rejection.body()
        self.send_response_only(rejection.status)
        for name, value in (
            ("Server", self.version_string()),
            ("Date", self.date_time_string()),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _linger(self) -> None:
        """Half-close the connection, then read and drop what the client still sends, for at
        most `_LINGER` seconds: closing with unread input would reset the connection, and the
        client could lose our answer."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER
            while (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(1 << 16):
                    return
        except OSError:
            return

    def _label(self) -> str:
        """The request as logged: method and path without the query, or the start of what
        came when that was not a request line."""
        if self.command:
            return f"{self.command} {urlsplit(self.path).path}"
        if self._started and not self.requestline:
            return "-"  # nothing readable: TLS, or bytes without a line end
        line = self.requestline.split("?", 1)[0]  # a query may hold a key
        return line if len(line) <= _LOGGED_LINE else line[: _LOGGED_LINE - 1] + "…"

    def do_GET(self) -> None:
        route = self._route()
        if route in FEEDS:
            self._drain(self._content_length() or 0)
            status, body = feed(self.server.state.store, route, urlsplit(self.path).query)
            return self._answer(status, body, "application/json", view=True)
        if route == "/favicon.ico":  # browsers ask; there is none
            self._drain(self._content_length() or 0)
            return self._answer(204, b"", "image/x-icon", view=True)
        asset = VIEW_ASSETS.get(route)
        if asset is None:
            return self._refuse()
        self._drain(self._content_length() or 0)
        name, content_type = asset
        self._answer(200, read_asset(name), content_type, view=True)

    def do_POST(self) -> None:
        route = self._route()
        if route not in _CAPTURE_PATHS and route != LOGS_PATH:
            return self._refuse()
        fault = self.server.state.faults.take()
        try:
            body: bytes | Rejection = self._read_body()
        except Rejection as rejection:
            body = rejection
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        gzipped = isinstance(body, bytes) and (encoding == "gzip" or body.startswith(b"\x1f\x8b"))
        if fault is not None:
            with self.server.state.waiting():  # down() and stop() wait for this to end
                if not wait_out(fault, self.server.released) or fault.drop:
                    self.close_connection = True  # no answer: the connection just closes
                    return self._note(0, gzipped, count_events(body, gzipped), fault)
            if fault.status is not None:
                detail = f"injected fault: answered {fault.status} without processing the request"
                reply = {"type": "injected_fault", "code": "fault_injected", "detail": detail}
                data, count = json.dumps(reply).encode(), count_events(body, gzipped)
                return self._answer(fault.status, data, "application/json", gzipped, count, fault)
        if route == LOGS_PATH:
            status, data, count = self._capture_logs(body, gzipped)
        else:
            status, data, count = self._capture(body, gzipped)
        self._answer(status, data, "application/json", gzipped, count, fault)

    def _capture_logs(self, body: bytes | Rejection, gzipped: bool) -> tuple[int, bytes, int]:
        """PostHog Logs: validate and store an OTLP/HTTP logs export (JSON encoding)."""
        count = 0
        try:
            if isinstance(body, Rejection):
                raise body
            key = bearer(self.headers.get("Authorization"))
            if key is None:
                detail = "no API key: send the project key as 'Authorization: Bearer <key>'"
                raise Rejection(401, "missing_api_key", detail)
            check_key(key, [])
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type not in ("application/json", ""):
                detail = "only OTLP's JSON encoding is served here: send application/json"
                raise Rejection(415, "unsupported_media_type", detail)
            try:
                # orjson: strict JSON (no NaN, no lone surrogate, as PostHog's parser),
                # and quick enough for a burst of lines.
                payload = orjson.loads(unzip_checked(body, gzipped, MAX_LOGS_BODY_BYTES))
            except orjson.JSONDecodeError:
                raise invalid("the body is not valid UTF-8 JSON") from None
            try:
                rows = read_logs_request(payload)
            except ValueError as exc:
                raise invalid(str(exc)) from None
            count = len(rows)
            self.server.state.store.add_logs(rows)
        except Rejection as rejection:
            return rejection.status, rejection.body(), count
        return 200, b"{}", count

    def _capture(self, body: bytes | Rejection, gzipped: bool) -> tuple[int, bytes, int]:
        """Validate and store the events: the status, the answer and how many events came."""
        count = 0
        try:
            if isinstance(body, Rejection):
                raise body
            payload, check_size, check_unicode = decode_checked(body, gzipped)
            key, raw_events = split(payload)
            count = len(raw_events)
            check_key(key, raw_events)
            if not raw_events:
                raise invalid("the batch is empty")
            events = [validate(i, e, check_size, check_unicode) for i, e in enumerate(raw_events)]
            self.server.state.store.add(events)
        except Rejection as rejection:
            return rejection.status, rejection.body(), count
        return 200, b'{"status": 1}', count

    def _refuse(self) -> None:
        """Answer 405 on a capture route, 404 elsewhere."""
        route = self._route()
        status, code = (
            (405, "method_not_allowed")
            if route in _CAPTURE_PATHS or route == LOGS_PATH
            else (404, "not_found")
        )
        self._drain(self._content_length() or 0)
        detail = f"{self.command} {route} is not served here: POST events to /batch/"
        self._answer(status, Rejection(status, code, detail).body(), "application/json")

    do_PUT = do_PATCH = do_DELETE = _refuse

    def _route(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _content_length(self) -> int | None:
        """The declared body length, or None (closing the connection when a body may follow)."""
        if self._length is None and "Transfer-Encoding" in self.headers:
            self.close_connection = True  # a chunked body: where it ends is unknown to us
        return self._length

    def _read_body(self) -> bytes:
        self._body_size = 0
        length = self._content_length()
        if length is None:
            self.close_connection = True
            raise Rejection(411, "length_required", "send a valid Content-Length header")
        if length > MAX_BODY_BYTES:
            self._drain(length)
            raise Rejection(413, "payload_too_large", "the body is over 20 MB")
        body = self.rfile.read(length)
        self._body_size = len(body)
        if len(body) < length:
            self.close_connection = True
            detail = f"the body ended after {len(body)} of the {length} bytes of its Content-Length"
            raise Rejection(400, "incomplete_body", detail)
        return body

    def _drain(self, length: int) -> None:
        """Read and drop a body we will not use."""
        self._body_size = 0
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return
        while self._body_size < length and (
            chunk := self.rfile.read(min(length - self._body_size, 1 << 16))
        ):
            self._body_size += len(chunk)

    def _answer(
        self,
        status: int,
        body: bytes,
        content_type: str,
        gzipped: bool = False,
        events: int = 0,
        fault: Fault | None = None,
        view: bool = False,
    ) -> None:
        if not view:  # the web view polls: its requests would crowd out the capture ones
            self._note(status, gzipped, events, fault)
        self._status = status
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        if view:
            headers.update(VIEW_HEADERS)
        if status == 405:
            headers["Allow"] = "POST"
        if self.close_connection:
            headers["Connection"] = "close"
        for name, value in (fault.headers if fault is not None else {}).items():
            for ours in [ours for ours in headers if ours.lower() == name.lower()]:
                del headers[ours]
            headers[name] = value
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _note(self, status: int, gzipped: bool, events: int, fault: Fault | None) -> None:
        """Record this request in `LocalServer.requests`."""
        headers = {
            name.lower(): "[redacted]" if name.lower() in _REDACTED_HEADERS else value
            for name, value in self.headers.items()
        }
        path = urlsplit(self.path).path
        label = fault_label(fault) if fault is not None else None
        record = RequestRecord(
            self.command, path, status, headers, self._body_size, gzipped, events, label
        )
        self.server.state.record(record)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The default line repeats the raw request line; log the path without its query.
        status = int(code) if isinstance(code, int) else code  # HTTPStatus prints as its name
        self.log_message('"%s %s" %s', self.command, urlsplit(self.path).path, status)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own errors, answered and logged as ours (one line, no HTML).
        status = HTTPStatus(code)
        self._fail(Rejection(status.value, "http_error", message or status.phrase))

    def log_message(self, format: str, *args: Any) -> None:
        """Write one line to stderr, control characters escaped; nothing when quiet."""
        if self.server.state.quiet or sys.stderr is None:
            return
        message = (format % args).translate(_LOG_ESCAPES)
        sys.stderr.write(f"{self.address_string()} - - [{self.log_date_time_string()}] {message}\n")
