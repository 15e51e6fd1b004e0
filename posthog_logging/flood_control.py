"""Flood control for error tracking: a token bucket per kind of exception.

A loop that fails the same way thousands of times a second would otherwise send
thousands of identical ``$exception`` events: the first few tell the story, the rest
cost quota and bury other issues. Each fingerprint (see
:func:`posthog_logging.error_tracking.exception_key`) has a bucket of ``bucket_size``
tokens, refilled by ``refill_rate`` tokens every ``refill_interval`` seconds; an
exception that finds its bucket empty is dropped, and the client counts it.

The defaults (a burst of 50, then 10 every 10 seconds) are the official SDK's, which it
chose for server processes that serve many users at once. Unlike the official SDK the
limit applies to every way an exception is captured, not only to the uncaught ones, and
the call that takes the last token is let through.

Takes no lock, so that a signal handler may capture too: two threads racing for one
bucket may each take its last token. Log lines are not limited.
"""

from __future__ import annotations

import contextlib
import time

__all__ = [
    "DEFAULT_BUCKET_SIZE",
    "DEFAULT_REFILL_INTERVAL",
    "DEFAULT_REFILL_RATE",
    "ExceptionRateLimiter",
]

DEFAULT_BUCKET_SIZE = 50
DEFAULT_REFILL_RATE = 10.0
DEFAULT_REFILL_INTERVAL = 10.0

#: Fingerprints remembered at most. Past that, the buckets that have refilled go first
#: (they hold nothing a new one would not), then those used least recently: a flood in
#: progress uses its bucket all the time, so many other kinds of error cannot push it out
#: and start it over.
MAX_KEYS = 1000


class ExceptionRateLimiter:
    """A token bucket per fingerprint."""

    __slots__ = ("_buckets", "bucket_size", "refill_interval", "refill_rate")

    def __init__(
        self,
        bucket_size: int = DEFAULT_BUCKET_SIZE,
        refill_rate: float = DEFAULT_REFILL_RATE,
        refill_interval: float = DEFAULT_REFILL_INTERVAL,
    ) -> None:
        for name, value in (
            ("exception_bucket_size", bucket_size),
            ("exception_refill_rate", refill_rate),
            ("exception_refill_interval", refill_interval),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.bucket_size = float(bucket_size)
        self.refill_rate = float(refill_rate)
        self.refill_interval = float(refill_interval)
        #: fingerprint -> [tokens left, when the last refill was counted]
        self._buckets: dict[str, list[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take a token from ``key``'s bucket: True when there was one."""
        if now is None:
            now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_KEYS:
                self._forget_refilled(now)
            self._buckets[key] = [self.bucket_size - 1, now]
            return True
        tokens, since = bucket
        refills = int((now - since) // self.refill_interval)
        if refills > 0:
            tokens = min(self.bucket_size, tokens + refills * self.refill_rate)
            since += refills * self.refill_interval  # the part of an interval carries over
        allowed = tokens >= 1
        bucket[0], bucket[1] = tokens - 1 if allowed else tokens, since
        with contextlib.suppress(KeyError):  # most recently used last (see MAX_KEYS)
            self._buckets[key] = self._buckets.pop(key)
        return allowed

    def _forget_refilled(self, now: float) -> None:
        """Make room: forget the buckets that would be full again, and if that is not
        half of them, the half used least recently."""
        buckets = self._buckets
        full_after = (self.bucket_size / self.refill_rate) * self.refill_interval
        items = list(buckets.items())  # least recently used first
        stale = [key for key, (_, since) in items if now - since >= full_after]
        if len(stale) < len(items) // 2:
            stale = [key for key, _ in items[: len(items) // 2]]
        for key in stale:
            buckets.pop(key, None)
