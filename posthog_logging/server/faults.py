"""Faults the local server can be scripted to meet, for tests of a client's failure handling.

A `Fault` describes one misbehaviour (an error status, extra headers, a slow or held
answer, a dropped connection); a `FaultScript` holds the faults `LocalServer.inject`
scripted for the next capture requests, in order, and the standing fault met once they
have run out; `wait_out` is a request's wait for its fault's hold and delay.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field

__all__ = ["Fault", "FaultScript", "fault_label", "wait_out"]

_MAX_HOLD = 60.0  # seconds a held request waits for its event before it is answered anyway
_HOLD_POLL = 0.02  # seconds between checks, while holding, of whether the server went down
# Fault headers may not change how the body is framed.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True, slots=True)
class Fault:
    """A misbehaviour scripted with `LocalServer.inject`, for one capture request.

    The server reads the request, waits for *hold* and then *delay*, and then closes the
    connection without an answer (*drop*), or answers *status* without processing the request,
    or processes it as usual; *headers* are added to the answer. ``Fault()`` changes nothing,
    which makes it a placeholder in a script: ``inject(Fault(), Fault(status=500))``.
    """

    status: int | None = None
    """Answer this status (200 to 599) with a JSON error body instead of processing the
    request: nothing is stored. None processes the request as usual."""
    headers: Mapping[str, str] = dataclass_field(default_factory=dict, hash=False)
    """Extra response headers, e.g. ``{"Retry-After": "2"}``; one of ours of the same name is
    replaced. Content-Length, Transfer-Encoding and Connection cannot be set."""
    delay: float = 0.0
    """Seconds to wait before answering."""
    hold: threading.Event | None = None
    """Wait until this event is set (at most 60 s) before answering, so that a test decides
    exactly how long the server is slow. `LocalServer.down` and `LocalServer.stop` end the wait
    by closing the connection."""
    drop: bool = False
    """Close the connection without any answer: the client sees the remote end disconnect.
    Nothing is stored."""

    def __post_init__(self) -> None:
        status = self.status
        if status is not None:
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
                raise ValueError(f"status must be None or an int from 200 to 599, not {status!r}")
            object.__setattr__(self, "status", int(status))  # an HTTPStatus is recorded as int
        delay = self.delay
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise TypeError(f"delay must be a number of seconds, not {delay!r}")
        if not 0 <= delay < math.inf:
            raise ValueError(f"delay must be finite and >= 0, not {delay!r}")
        if self.hold is not None and not isinstance(self.hold, threading.Event):
            raise TypeError(f"hold must be a threading.Event or None, not {self.hold!r}")
        headers = dict(self.headers)
        for name, value in headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in _FRAMING_HEADERS:
                raise ValueError(f"the {name} header is the server's to set")
            if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"the {name} header's value is not a single-line string")
        if self.drop and (status is not None or headers):
            raise ValueError("a dropped connection has no answer: drop takes no status or headers")
        object.__setattr__(self, "headers", headers)  # a copy: later changes to theirs are ignored


def fault_label(fault: Fault) -> str | None:
    """What this fault does, for `RequestRecord.fault`."""
    parts = ["hold"] if fault.hold is not None else []
    if fault.delay:
        parts.append("delay")
    if fault.drop:
        parts.append("drop")
    elif fault.status is not None:
        parts.append("status")
    elif fault.headers:
        parts.append("headers")
    return "+".join(parts) or None


class FaultScript:
    """The faults scripted for the next capture requests, in order, and the standing fault
    met by every request once they have run out; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Fault] = deque()  # guarded by _lock, as is the one below
        self._standing: Fault | None = None

    def add(self, faults: tuple[Fault, ...], times: int | None) -> None:
        """Script *faults* after those already scripted, *times* over, or make the one fault
        given the standing fault (``times=None``); as `LocalServer.inject`."""
        if not faults:
            raise TypeError("inject() needs at least one Fault")
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"inject() takes Fault objects, not {fault!r}")
        if times is None and len(faults) != 1:
            raise ValueError("a standing fault (times=None) is a single Fault")
        if times is not None and (type(times) is not int or times < 0):
            raise ValueError(f"times must be None or an int >= 0, not {times!r}")
        with self._lock:
            if times is None:
                self._standing = faults[0]
            else:
                self._script.extend(faults * times)

    def clear(self) -> None:
        """Forget every scripted fault and the standing one."""
        with self._lock:
            self._script.clear()
            self._standing = None

    def take(self) -> Fault | None:
        """The fault the next request meets: the next scripted one, else the standing one."""
        with self._lock:
            return self._script.popleft() if self._script else self._standing

    def left(self) -> tuple[int, bool]:
        """How many scripted faults are left, and whether there is a standing one."""
        with self._lock:
            return len(self._script), self._standing is not None


def wait_out(fault: Fault, released: threading.Event) -> bool:
    """Wait for the fault's hold and delay; False when the server went down meanwhile
    (*released*, its socket's, is set)."""
    if fault.hold is not None:
        deadline = time.monotonic() + _MAX_HOLD
        while not fault.hold.wait(_HOLD_POLL):
            if released.is_set():
                return False
            if time.monotonic() >= deadline:
                break
    if fault.delay:
        return not released.wait(fault.delay)
    return not released.is_set()
