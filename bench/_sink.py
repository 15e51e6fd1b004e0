"""The benchmark's sink: the package's local server, in a process of its own.

Running the server in another process keeps its work (parsing, storing) off the measured
process's GIL, as a real PostHog would be. The measuring side reads the server's SQLite
store directly for how many events, or log lines, arrived.

    python bench/_sink.py DATA_DIR      # prints the port, then serves until killed
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType


class Sink:
    """Start a local server in a child process; ``url``, ``count()``, ``wait_for()``."""

    #: The store's tables: events, and log lines for PostHog Logs.
    TABLES = ("events", "logs")

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="posthog-bench-")
        self._proc = subprocess.Popen(
            [sys.executable, __file__, self._dir.name],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"the sink did not start: {line!r}")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"
        self._db = Path(self._dir.name) / "events.sqlite3"

    def count(self, table: str = "events") -> int:
        """Rows stored so far in ``table`` ("events" or "logs")."""
        if table not in self.TABLES:
            raise ValueError(f"no table {table!r} in the sink's store")
        conn = sqlite3.connect(f"file:{self._db}?mode=ro", uri=True, timeout=10)
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] or 0)
        finally:
            conn.close()

    def wait_for(
        self, expected: int, timeout: float, settle: float = 3.0, table: str = "events"
    ) -> int:
        """Poll until ``expected`` rows arrived in ``table``, or the count stops moving
        for ``settle`` seconds, or ``timeout``; return the count."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now = self.count(table)
            if now >= expected:
                return now
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > settle:
                return now
            time.sleep(0.05)
        return self.count(table)

    def close(self) -> None:
        """Stop the server and delete its data."""
        self._proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(10)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._dir.cleanup()

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def dead_url() -> str:
    """A loopback URL where nothing listens: connections are refused (a server that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _serve(data_dir: str) -> None:
    from posthog_logging.server import LocalServer

    server = LocalServer(data_dir=data_dir).start()
    print(server.port, flush=True)
    while True:  # until SIGTERM ends the process; SQLite's WAL keeps the store sound
        time.sleep(3600)


if __name__ == "__main__":
    _serve(sys.argv[1])
