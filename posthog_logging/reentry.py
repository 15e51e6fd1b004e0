"""Whether the library's own code is running on this thread.

The logging bridges must not turn what the library itself does into events: its sender
thread, a request in flight, or a hook it calls (``before_send``, ``on_error``, a
property's ``__str__``) may log, and sending that could feed a loop. So library code
marks its thread, and the bridges ask. A finaliser is the exception: the garbage
collector runs it on whichever thread allocates, the library's own included, and what
it logs is the application's.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType

__all__ = [
    "in_finaliser",
    "in_library_code",
    "library_code",
    "mark_library_thread",
    "this_thread",
]


class _ThisThread(threading.local):
    # A class default: a miss would raise and catch AttributeError on every log call.
    in_library = False
    """Whether the library's own code is running on this thread."""


#: This thread's mark; ``this_thread.in_library`` is :func:`in_library_code` for hot paths.
this_thread = _ThisThread()


def in_library_code() -> bool:
    """True on the library's own threads and while it runs on the caller's."""
    return this_thread.in_library


def mark_library_thread() -> None:
    """This thread runs nothing but library code (a sender, a request in flight)."""
    this_thread.in_library = True


class library_code:
    """``with library_code():`` marks the block as the library's own, then restores the
    thread's mark as it was (blocks nest)."""

    __slots__ = ("_was",)

    def __enter__(self) -> None:
        self._was = this_thread.in_library
        this_thread.in_library = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        this_thread.in_library = self._was


def in_finaliser(depth: int = 40) -> bool:
    """True when a ``__del__`` method is among the callers (at most ``depth`` frames up).

    What a finaliser logs is the application's wherever it runs, and sent: each object
    is finalised once, so it cannot feed a loop.
    """
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame.f_code.co_name == "__del__":
            return True
        if frame.f_back is None:
            return False
        frame = frame.f_back
    return False
