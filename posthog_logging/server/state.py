"""What a `LocalServer` shares with its request handlers, whichever socket serves them.

`ServerState` outlives `LocalServer.down` and `LocalServer.up`: the store, the fault
script, the last requests recorded (each a `RequestRecord`), the open connections (closed
when the server goes down), and the requests waiting out a fault (which going down ends
before it closes their connections).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from .faults import FaultScript
from .store import EventStore

__all__ = ["RequestRecord", "ServerState"]

_MAX_RECORDS = 1000


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the server received and answered, or closed unanswered because of a `Fault`.

    Header names are lower-case; credentials are redacted.
    """

    method: str
    path: str
    status: int
    """The status answered, or 0 when the connection was closed without an answer."""
    headers: dict[str, str]
    body_size: int
    """Bytes of body as received (before gunzip)."""
    gzipped: bool
    event_count: int
    """Events in the body when it could be decoded, whether or not they were accepted."""
    fault: str | None = None
    """The injected `Fault` the request met, by what it did: ``"hold"``, ``"delay"``,
    ``"drop"``, ``"status"`` or ``"headers"``, joined by ``+`` when several (``"delay+status"``);
    None for a request served normally."""


class ServerState:
    """A `LocalServer`'s store, fault script, recorded requests and open connections, shared
    with its request handlers; safe to share between threads.

    With ``quiet=False`` each request is logged to stderr, without its key.
    """

    def __init__(self, store: EventStore, quiet: bool) -> None:
        self.store = store
        """Where accepted events are kept."""
        self.quiet = quiet
        self.faults = FaultScript()
        """The faults scripted with `LocalServer.inject`."""
        self._lock = threading.Lock()
        self._records: deque[RequestRecord] = deque(maxlen=_MAX_RECORDS)
        self._connections: set[socket.socket] = set()
        self._waiters = 0  # requests in a fault's wait, guarded by _lock
        self._no_waiters = threading.Condition(self._lock)

    def requests(self) -> list[RequestRecord]:
        """The last 1000 requests received, oldest first."""
        with self._lock:
            return list(self._records)

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def clear_requests(self) -> None:
        """Forget every recorded request."""
        with self._lock:
            self._records.clear()

    def track(
        self, connection: socket.socket, *, add: bool, released: threading.Event | None = None
    ) -> None:
        with self._lock:
            if not add:
                self._connections.discard(connection)
            elif released is not None and released.is_set():  # accepted as the server went down
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            else:
                self._connections.add(connection)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Count a request in a fault's wait, for `settle` to let it end first."""
        with self._lock:
            self._waiters += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiters -= 1
                self._no_waiters.notify_all()

    def release(self, released: threading.Event) -> None:
        """Set *released*, a closing socket's: a connection tracked from now on is closed by
        `track`, and requests in a fault's wait end."""
        with self._lock:
            released.set()

    def settle(self, timeout: float) -> list[socket.socket]:
        """Wait, at most *timeout* seconds, for the requests in a fault's wait to end, and
        return the open connections."""
        with self._no_waiters:  # released waits end at once: recorded, then closed
            self._no_waiters.wait_for(lambda: self._waiters == 0, timeout=timeout)
            return list(self._connections)
