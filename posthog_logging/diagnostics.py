"""What the library says about itself: its logger, and warnings that never flood.

Everything the library logs goes to the ``posthog_logging`` logger (which the logging
bridge never sends to PostHog). A warning about something that can happen on every call
(a full queue, a placeholder distinct_id, a tag set outside a context) goes through a
:class:`Warner`, which says it once per key, or once per interval per key.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["LOGGER_NAME", "Warner", "logger"]

LOGGER_NAME = "posthog_logging"
logger = logging.getLogger(LOGGER_NAME)


class Warner:
    """Log a warning at most once per ``interval`` seconds for each key; with
    ``interval=None``, once for good. At most ``max_keys`` keys are remembered (a key
    made of user data, such as an event name, must not grow memory without bound); past
    that, new keys are not warned about.

    Takes no lock: a race between threads may say a warning twice, never block one.
    """

    def __init__(self, interval: float | None = 60.0, max_keys: int = 1000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[str, float] = {}

    def warn(
        self,
        key: str,
        message: str,
        *args: Any,
        exc_info: bool = False,
        level: int = logging.WARNING,
    ) -> bool:
        """Log ``message % args`` (at ``level``) unless ``key`` was warned about too
        recently; True when it was logged."""
        if not self.due(key):
            return False
        logger.log(level, message, *args, exc_info=exc_info)
        return True

    def said(self, key: str) -> None:
        """Count ``key`` as warned about just now (by other means)."""
        self._last[key] = time.monotonic()

    def due(self, key: str) -> bool:
        """Whether ``key`` may be warned about now; if so, it counts as warned."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and (self.interval is None or now - last < self.interval):
            return False
        if last is None and len(self._last) >= self.max_keys:
            return False
        self._last[key] = now
        return True
