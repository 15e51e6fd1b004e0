"""Log lines held back by a context until it is known whether anyone needs them.

Debug lines are what explain a failure and what nobody reads otherwise; sending all of
them to PostHog Logs costs what they weigh. With a hold level, the lines below the send
level are kept by their context instead (:class:`HeldLines`), and:

- sent, in order, when the context logs a line at or above the release level, or ends
  with an exception; from then on that context's lines are sent as they come;
- forgotten, and counted, when the context ends without either.

Each context that starts without a parent's (see :func:`posthog_logging.new_context`)
has its own; nested contexts share it. Bounded in lines and bytes: past either bound the
oldest go, counted. Nothing here knows HTTP or a client: what to do with a line is handed
in with it (``send``, ``drop``), so this stays below the client.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_MAX_HELD", "MAX_HELD_BYTES", "HeldLines"]

#: Lines one context holds at most (the oldest go first).
DEFAULT_MAX_HELD = 500
#: Bytes of message one context holds at most.
MAX_HELD_BYTES = 1024 * 1024

#: What to do with a held line: send it, or count it as not kept (with how many).
Send = Callable[[Any], object]
Drop = Callable[[int], object]


class HeldLines:
    """The held lines of one context. Thread-safe without a lock for what a context
    does (appends and pops of a ``deque`` are atomic); a race between a release and an
    append on two threads may send a line out of order, never lose or double it."""

    __slots__ = ("_bytes", "_lines", "released")

    def __init__(self) -> None:
        self._lines: collections.deque[tuple[Any, int, Send, Drop]] | None = None
        self._bytes = 0
        #: Released: lines of this context are sent as they come.
        self.released = False

    def __len__(self) -> int:
        return len(self._lines) if self._lines is not None else 0

    def hold(self, line: Any, size: int, send: Send, drop: Drop, max_lines: int) -> None:
        """Keep ``line`` (about ``size`` bytes) until the context says; the oldest lines
        go (``drop``) past ``max_lines`` or :data:`MAX_HELD_BYTES`."""
        lines = self._lines
        if lines is None:
            lines = self._lines = collections.deque()
        lines.append((line, size, send, drop))
        self._bytes += size
        while len(lines) > max_lines or (self._bytes > MAX_HELD_BYTES and len(lines) > 1):
            try:
                _, old_size, _, old_drop = lines.popleft()
            except IndexError:
                break
            self._bytes -= old_size
            old_drop(1)

    def release(self) -> None:
        """Send what is held, oldest first; the context's next lines are sent as they
        come."""
        self.released = True
        self._drain(send=True)

    def discard(self) -> None:
        """Forget what is held (the context ended well), counting it."""
        self._drain(send=False)

    def _drain(self, *, send: bool) -> None:
        lines = self._lines
        while lines:
            try:
                line, size, send_line, drop = lines.popleft()
            except IndexError:
                break
            self._bytes -= size
            if send:
                send_line(line)
            else:
                drop(1)
