"""The local server's life: `LocalServer` binds, serves, goes down and comes back up, stops.

It owns one `HTTPServer` at a time (a new one on the same address after `LocalServer.down`
and `LocalServer.up`), and a `ServerState` that outlives them: the store, the fault
script, the recorded requests and the open connections.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import Counter
from types import TracebackType
from typing import Any

from .faults import Fault
from .http import HTTPServer
from .state import RequestRecord, ServerState
from .store import EventStore

__all__ = ["LocalServer"]

_RELEASE_WAIT = 5.0  # seconds down() and stop() wait for requests in a fault's wait to end


class LocalServer:
    """A PostHog-compatible capture server on a local port, for development, demos and tests.

    The socket is bound on construction (``port=0`` picks a free port); `start` serves on a
    background thread, `serve_forever` in the foreground. Events go to *store*, or to an
    `EventStore` opened in *data_dir* (see `default_data_dir`), which `stop` then closes.
    With ``quiet=False`` each request is logged to stderr, without its key.

    For tests of a client's failure handling, `inject` scripts faults (see `Fault`) for the
    next capture requests, and `down` and `up` take the server off its port and put it back.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        store: EventStore | None = None,
        quiet: bool = True,
    ) -> None:
        if store is not None and data_dir is not None:
            raise ValueError("pass data_dir or store, not both: a store has its own directory")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 (any free port) and 65535, not {port!r}")
        self._owns_store = store is None
        self._state = ServerState(store if store is not None else EventStore(data_dir), quiet)
        self._lifecycle = threading.Lock()  # serialises start, up, down and stop
        self._thread: threading.Thread | None = None
        self._serving = False  # a serve_forever loop runs, or was started, on the socket
        self._up = True  # the socket is open
        self._stopped = False
        self._finished = threading.Event()  # set once stop has run
        try:
            self._httpd = HTTPServer((host, port), self._state)
        except BaseException:
            if self._owns_store:
                self._state.store.close()
            raise

    @property
    def quiet(self) -> bool:
        """Whether requests go unlogged; with False, each is logged to stderr, without its key."""
        return self._state.quiet

    @quiet.setter
    def quiet(self, quiet: bool) -> None:
        self._state.quiet = quiet

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on (the one picked when created with ``port=0``)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to give a client as its host, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def store(self) -> EventStore:
        """Where accepted events are kept."""
        return self._state.store

    @property
    def requests(self) -> list[RequestRecord]:
        """The last 1000 requests received, oldest first."""
        return self._state.requests()

    @property
    def is_up(self) -> bool:
        """Whether the server listens on its port: from creation, or `up`, until `down` or
        `stop`."""
        return self._up

    def start(self) -> LocalServer:
        """Serve on a background daemon thread and return at once (the socket is listening).

        Does nothing when already serving; after `down`, it is `up`.
        """
        self.up()
        return self

    def up(self) -> None:
        """Listen again, after `down`, on the same host and port, and serve on a background
        daemon thread; the events stored and requests recorded meanwhile are kept.

        Does nothing when already up and serving. Raises `RuntimeError` after `stop`, and
        `OSError` when something else took the port while the server was down.
        """
        with self._lifecycle:
            if self._stopped:
                raise RuntimeError("this LocalServer was stopped; create a new one")
            self._bind()
            if self._serving:
                return
            self._serving = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"posthog-logging-server-{self.port}",
                daemon=True,
            )
            self._thread.start()

    def down(self) -> None:
        """Stop accepting, as a server that crashed or was taken off the network: close the
        listening socket and every open connection, so that new connections are refused.

        Requests waiting on a `Fault` (hold or delay) are ended by closing their connection,
        unanswered. The store, the recorded requests and the injected faults are kept, and
        `up` listens again on the same port. Does nothing when already down.
        """
        with self._lifecycle:
            if not self._stopped and self._up:
                self._close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop` is called from another one or Ctrl-C.

        After `down` it returns only at `stop` (or Ctrl-C); `up` serves on a background thread.
        """
        with self._lifecycle:
            if self._stopped or self._serving:
                raise RuntimeError("this LocalServer is already serving or was stopped")
            self._bind()
            self._serving = True
            httpd = self._httpd
        try:
            httpd.serve_forever(poll_interval=0.05)
            self._finished.wait()  # down() ended the loop early; wait for stop()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, close the socket and open connections, and close an owned store.

        Requests waiting on a `Fault` are ended by closing their connection. Calling it again,
        or after `down`, does nothing more.
        """
        with self._lifecycle:
            if self._stopped:
                return
            self._stopped = True
            if self._up:
                self._close()
            if self._owns_store:
                self._state.store.close()
        self._finished.set()

    def inject(self, *faults: Fault, times: int | None = 1) -> None:
        """Script *faults* for the next POSTs to capture routes, after those already scripted.

        Each such request takes the next scripted fault, in order; *times* repeats the whole
        sequence (``inject(a, b, times=2)`` scripts a, b, a, b). With ``times=None`` the one
        fault given becomes the standing fault, met by every request once the script has run
        out, until `clear_faults` (a later standing fault replaces it). Requests that find no
        fault are served normally; ``GET /`` and other routes are never faulted.
        """
        self._state.faults.add(faults, times)

    def clear_faults(self) -> None:
        """Forget every scripted fault and the standing one: requests are served normally."""
        self._state.faults.clear()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def events(
        self,
        limit: int | None = None,
        *,
        event: str | None = None,
        distinct_id: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Stored events, as `EventStore.events`."""
        return self._state.store.events(limit, event=event, distinct_id=distinct_id, since=since)

    def wait_for_events(
        self,
        n: int,
        timeout: float = 10.0,
        *,
        event: str | None = None,
        distinct_id: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until at least *n* stored events match the filters and return all that match.

        Raises `TimeoutError`, saying how many arrived, what the server answered and which
        injected faults are left, when *timeout* seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(event=event, distinct_id=distinct_id, since=since)
            if len(found) >= n or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if len(found) >= n:
            return found
        filters = {"event": event, "distinct_id": distinct_id, "since": since}
        wanted = ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None)
        statuses = Counter(record.status for record in self.requests)
        answered = ", ".join(
            f"{count} x {status or 'no answer'}" for status, count in sorted(statuses.items())
        )
        scripted, standing = self._state.faults.left()
        pending = [f"{scripted} scripted"] if scripted else []
        pending += ["a standing fault"] if standing else []
        raise TimeoutError(
            f"waited {timeout:g}s for {n} event(s){f' matching {wanted}' if wanted else ''}:"
            f" {len(found)} arrived; requests answered: {answered or 'none'}"
            + (f"; injected faults left: {' and '.join(pending)}" if pending else "")
            + ("" if self._up else "; the server is down")
        )

    def clear(self) -> None:
        """Forget every stored event and recorded request."""
        self._state.store.clear()
        self._state.clear_requests()

    def _bind(self) -> None:
        """Open a new listening socket on the same address if down. Hold `_lifecycle`."""
        if not self._up:
            self._httpd = HTTPServer((self.host, self.port), self._state)
            self._up, self._serving = True, False

    def _close(self) -> None:
        """Close the listening socket and every connection, ending fault waits. Hold
        `_lifecycle`."""
        httpd, serving, thread = self._httpd, self._serving, self._thread
        self._up = self._serving = False
        self._state.release(httpd.released)  # a connection tracked from now on is closed
        if serving:
            httpd.shutdown()  # returns once serve_forever has
        httpd.server_close()
        connections = self._state.settle(_RELEASE_WAIT)  # released waits end at once
        for connection in connections:  # idle keep-alive connections would be served on
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._thread = None
