"""A raw-socket HTTP server on loopback for answers no well-behaved server gives.

Each connection is served on a thread of its own: the request is read (headers and a
``Content-Length`` body), recorded, and the socket is handed to the ``answer`` callable,
which writes whatever bytes it likes, as slowly as it likes. It returns True to read the
next request on the same connection, False to close it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Connection:
    """What happened on one connection."""

    requests: list[RawRequest] = field(default_factory=list)
    bytes_sent: int = 0
    closed_by_peer: bool = False
    """The client closed (or reset) the connection while we still wrote or waited."""
    ended: threading.Event = field(default_factory=threading.Event)


Answer = Callable[[socket.socket, RawRequest, Connection], bool]


class RawServer:
    """``with RawServer(answer) as server: ... server.url``"""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections: list[Connection] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def requests(self) -> list[RawRequest]:
        return [r for c in list(self.connections) for r in c.requests]

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection = Connection()
            self.connections.append(connection)
            threading.Thread(target=self._serve, args=(sock, connection), daemon=True).start()

    def _serve(self, sock: socket.socket, connection: Connection) -> None:
        buffer = b""
        try:
            sock.settimeout(30)
            while not self._stop.is_set():
                request, buffer = _read_request(sock, buffer)
                if request is None:
                    connection.closed_by_peer = True
                    return
                connection.requests.append(request)
                if not self.answer(sock, request, connection):
                    return
        except (ConnectionError, TimeoutError, OSError):
            connection.closed_by_peer = True
        finally:
            sock.close()
            connection.ended.set()


def _read_request(sock: socket.socket, buffer: bytes) -> tuple[RawRequest | None, bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return RawRequest(method, path, headers, rest[:length]), rest[length:]


def send(sock: socket.socket, data: bytes, connection: Connection) -> None:
    sock.sendall(data)
    connection.bytes_sent += len(data)


def answer(status: int, reason: str = "", headers: dict[str, Any] | None = None) -> Answer:
    """An answer of ``status`` with an empty body (keep-alive)."""

    def respond(sock: socket.socket, request: RawRequest, connection: Connection) -> bool:
        lines = [f"HTTP/1.1 {status} {reason or 'Status'}", "Content-Length: 0"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        send(sock, ("\r\n".join(lines) + "\r\n\r\n").encode(), connection)
        return True

    return respond


def ok(sock: socket.socket, request: RawRequest, connection: Connection) -> bool:
    body = b'{"status":1}'
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    send(sock, head + body, connection)
    return True


def drip(interval: float, length: int = 1_000_000, *, headers_too: bool = False) -> Answer:
    """Headers at once (or, ``headers_too``, byte by byte as well), then one byte of the
    body every ``interval`` seconds."""

    def respond(sock: socket.socket, request: RawRequest, connection: Connection) -> bool:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()
        if headers_too:
            for i in range(len(head)):
                send(sock, head[i : i + 1], connection)
                time.sleep(interval)
        else:
            send(sock, head, connection)
        for _ in range(length):
            time.sleep(interval)
            send(sock, b" ", connection)
        return False

    return respond


def never_answer(sock: socket.socket, request: RawRequest, connection: Connection) -> bool:
    """Read the request, then wait until the client goes away."""
    sock.settimeout(120)
    if sock.recv(1) == b"":
        connection.closed_by_peer = True
    return False


def huge_body(status: int, size: int, chunk: int = 1 << 20) -> Answer:
    """``status`` with a body of ``size`` bytes, written as fast as the client reads."""

    def respond(sock: socket.socket, request: RawRequest, connection: Connection) -> bool:
        head = f"HTTP/1.1 {status} Bad\r\nContent-Length: {size}\r\n\r\n".encode()
        send(sock, head, connection)
        block = b"x" * chunk
        left = size
        while left > 0:
            part = block[: min(chunk, left)]
            send(sock, part, connection)
            left -= len(part)
        return False

    return respond
