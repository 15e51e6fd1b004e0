"""A real HTTP server on loopback that answers with scripted faults.

For the failure paths the local server never produces by itself (500s, 429 with
``Retry-After``, 413, 400, slow answers). Each request takes the next scripted answer;
when the script runs out it answers 200. Every batch received is kept, decoded.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    """One scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class ScriptedServer:
    """``with ScriptedServer([Answer(500), Answer(200)]) as srv: ...``"""

    def __init__(self, script: list[Answer] | None = None) -> None:
        self.script: deque[Answer] = deque(script or [])
        self.batches: list[list[dict[str, Any]]] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner._lock:
                    answer = owner.script.popleft() if owner.script else Answer()
                if answer.delay:
                    time.sleep(answer.delay)
                if body[:2] == b"\x1f\x8b":
                    body = gzip.decompress(body)
                with owner._lock:
                    owner.statuses.append(answer.status)
                    if answer.status == 200:
                        owner.batches.append(json.loads(body)["batch"])
                payload = b'{"status": 1}'
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up waiting
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event of every accepted batch."""
        with self._lock:
            return [e for batch in self.batches for e in batch]

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Poll until ``n`` events were accepted; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.events) >= n:
                return self.events
            time.sleep(0.01)
        raise TimeoutError(f"{len(self.events)} of {n} events arrived; statuses {self.statuses}")

    def __enter__(self) -> ScriptedServer:
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
