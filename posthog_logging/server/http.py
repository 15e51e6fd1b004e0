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
"""

from __future__ import annotations

import json
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
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

    def setup(self) -> None:
        super().setup()
        self.server.state.track(self.connection, add=True, released=self.server.released)

    def finish(self) -> None:
        self.server.state.track(self.connection, add=False)
        super().finish()

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
        header = self.headers.get("Content-Length", "").strip()
        if header.isascii() and header.isdigit():
            return int(header)
        if header or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # where the body ends is unknown to us
        return None

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

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.state.quiet:
            super().log_message(format, *args)
