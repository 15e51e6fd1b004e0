"""The seam between batching and the network: what a transport does, and what it says.

The sender knows a :class:`Transport` and nothing of HTTP. The HTTP transport
(:mod:`posthog_logging.delivery.http`) posts to PostHog; an in-memory one
(:class:`posthog_logging.testing.CapturedEvents`) keeps what it is given, for tests. Any
object with these methods will do, as OpenTelemetry's exporters are to its batch
processor.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .kinds import Kind

__all__ = ["SendResult", "Transport", "parse_retry_after"]


@dataclass(frozen=True)
class SendResult:
    """What one request came to. ``status`` is None when no answer arrived."""

    status: int | None
    retry_after: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The server accepted the batch."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Worth sending again later: no answer, 408, 429 or a 5xx."""
        return self.status is None or self.status in (408, 429) or self.status >= 500

    def describe(self) -> str:
        """A short text for log lines (never contains the API key)."""
        if self.status is None:
            return f"no answer ({self.error})"
        return f"HTTP {self.status}" + (f" ({self.error})" if self.error else "")


class Transport(Protocol):
    """Sends one batch at a time; never raises from :meth:`send`."""

    def send(self, records: Sequence[bytes], kind: Kind, timeout: float) -> SendResult:
        """Send ``records`` (each one record's JSON) as one batch of ``kind``, within
        ``timeout`` seconds in all, and say what came of it."""
        ...

    def abort(self) -> None:
        """End the requests in flight now (they come back as failed)."""
        ...

    def close(self) -> None:
        """End the requests in flight and let go of connections."""
        ...

    def reset_after_fork(self) -> None:
        """In a forked child: forget what belongs to the parent (its sockets)."""
        ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
