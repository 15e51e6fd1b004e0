"""Exception steps (breadcrumbs): the last lines logged in a context, kept for its errors.

PostHog's SDK specification names them ``$exception_steps``: a list of
``{"$message": ..., "$timestamp": ..., **properties}``, oldest first, bounded in bytes.
Here a step is a log line a front-end recorded (when its ``exception_steps_level`` says
so) or one the application added with :func:`posthog_logging.add_exception_step`; an
``$exception`` made in the same context carries the steps recorded before it.

A :class:`StepTrail` belongs to a context: :func:`posthog_logging.new_context` opens one
for a context without a parent's, nested contexts share it, and a thread outside any
context has one of its own. Recording is cheap and bounded in count and in bytes (the
oldest steps go first). Nothing is made JSON-safe here: the event builder does that on
the sender thread, with the client's redaction, and cuts the list to the byte limit again
once it knows the real sizes.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_STEPS",
    "MAX_MESSAGE_LENGTH",
    "Step",
    "StepTrail",
    "estimated_size",
    "thread_trail",
]

#: Steps a trail keeps unless its front-end says otherwise.
DEFAULT_MAX_STEPS = 20
#: The most a trail's steps may weigh, as PostHog's specification sets it (32 KiB).
DEFAULT_MAX_BYTES = 32 * 1024
#: A step's message is cut to this many characters.
MAX_MESSAGE_LENGTH = 1024

#: What a step costs beyond its message and properties: the keys and the timestamp.
_OVERHEAD = 64


@dataclass(frozen=True, slots=True)
class Step:
    """One step: what was logged, when, at which level, by which logger, with what."""

    timestamp: float
    message: str
    level: str | None
    logger: str | None
    properties: Mapping[str, Any] | None
    size: int
    """An estimate of its bytes once serialised (see :func:`estimated_size`)."""


def estimated_size(message: str, properties: Mapping[str, Any] | None) -> int:
    """About the bytes a step takes as JSON, without serialising it: the message, each
    key, and each value's length when it is text (16 otherwise)."""
    size = _OVERHEAD + len(message)
    if properties:
        for key, value in properties.items():
            size += len(str(key)) + (len(value) if isinstance(value, str) else 16)
    return size


class StepTrail:
    """The steps of one context, oldest first. Thread-safe without a lock (appends and
    pops of a ``deque`` are atomic), so a signal handler may record too."""

    __slots__ = ("_bytes", "_steps")

    def __init__(self) -> None:
        self._steps: collections.deque[Step] | None = None  # made at the first step
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._steps) if self._steps is not None else 0

    def add(
        self,
        message: str,
        *,
        level: str | None = None,
        logger: str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: float | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> bool:
        """Record a step; the oldest ones go until the trail is within ``max_steps`` and
        ``max_bytes``. False (and nothing kept) for a step bigger than ``max_bytes``."""
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
        size = estimated_size(message, properties)
        if size > max_bytes:
            return False
        steps = self._steps
        if steps is None:
            steps = self._steps = collections.deque()
        step = Step(
            time.time() if timestamp is None else timestamp,
            message,
            level,
            logger,
            properties,
            size,
        )
        steps.append(step)
        self._bytes += size
        try:
            while len(steps) > max_steps or self._bytes > max_bytes:
                self._bytes -= steps.popleft().size
        except IndexError:  # emptied by another thread meanwhile
            self._bytes = 0
        return True

    def snapshot(self) -> tuple[Step, ...]:
        """The steps so far, oldest first (the trail keeps them: capturing an exception
        does not use them up)."""
        steps = self._steps
        if not steps:
            return ()
        for _ in range(3):  # a copy fails if another thread appends meanwhile: try again
            try:
                return tuple(steps)
            except RuntimeError:
                continue
        return ()

    def clear(self) -> None:
        """Forget every step."""
        if self._steps is not None:
            self._steps.clear()
        self._bytes = 0


class _ThreadTrail(threading.local):
    trail: StepTrail | None = None


_outside = _ThreadTrail()


def _forget_after_fork() -> None:
    """A forked child starts with no steps: the parent's lines are not the child's."""
    global _outside
    _outside = _ThreadTrail()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def thread_trail() -> StepTrail:
    """The trail of code that runs outside any context: one per thread."""
    trail = _outside.trail
    if trail is None:
        trail = _outside.trail = StepTrail()
    return trail
