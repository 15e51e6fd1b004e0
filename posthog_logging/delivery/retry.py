"""When a batch is tried again, and when not: a value object, as urllib3's ``Retry`` is.

:meth:`RetryPolicy.decide` turns what a request came to into what to do with its batch;
:meth:`RetryPolicy.delay` says how long to wait before the next try: exponential backoff
with full jitter (a random wait between 0 and ``backoff_base * 2**attempt``, capped at
``backoff_cap``), and at least what the server asked with ``Retry-After``, up to
``retry_after_cap`` (a longer wait would hold events in memory, or a process from
exiting, on the word of a misbehaving proxy).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .transport import SendResult

__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "RETRY_AFTER_CAP", "Decision", "RetryPolicy"]

#: The defaults of a :class:`RetryPolicy` made without them (read when one is made).
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
RETRY_AFTER_CAP = 60.0


class Decision(enum.Enum):
    """What to do with a batch once its request is answered (or is not)."""

    DONE = "done"
    """Accepted: the batch is sent."""
    SPLIT = "split"
    """413: too large; send it in halves (a single record refused alone is dropped)."""
    REFUSE = "refuse"
    """Refused for good (400, 401, 403, other 4xx, a redirect): counted as failed."""
    RETRY = "retry"
    """No answer, 408, 429 or 5xx, and tries are left: wait, then send it again."""
    EXHAUSTED = "exhausted"
    """As RETRY, but out of tries."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing batch is retried. Immutable; the attempt count lives on the batch."""

    max_retries: int = 3
    backoff_base: float = field(default_factory=lambda: BACKOFF_BASE)
    backoff_cap: float = field(default_factory=lambda: BACKOFF_CAP)
    retry_after_cap: float = field(default_factory=lambda: RETRY_AFTER_CAP)

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ValueError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        for name in ("backoff_base", "backoff_cap", "retry_after_cap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    def decide(self, result: SendResult, attempts: int) -> Decision:
        """What to do with a batch whose latest request came to ``result``, after
        ``attempts`` earlier failed tries."""
        if result.ok:
            return Decision.DONE
        if result.status == 413:
            return Decision.SPLIT
        if not result.retryable:
            return Decision.REFUSE
        return Decision.EXHAUSTED if attempts + 1 > self.max_retries else Decision.RETRY

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        uniform: Callable[[float, float], float] | None = None,
    ) -> float:
        """Seconds to wait before try number ``attempt + 1`` (``attempt`` >= 1 tries have
        failed), given the server's ``Retry-After``, if any. ``uniform`` draws the jitter
        (default :func:`random.uniform`)."""
        draw = random.uniform if uniform is None else uniform
        wait = draw(0.0, min(self.backoff_cap, self.backoff_base * 2**attempt))
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_cap))
        return wait
