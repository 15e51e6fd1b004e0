"""Which log lines go to PostHog Logs: per-logger levels, sampling, and lines held back.

PostHog Logs is billed and kept by volume, and one ``logs_level`` for a whole process is
too blunt: a chatty library drowns the application's lines, and the debug lines that
would explain a failure are too many to send always. :class:`LineRules` is what a
front-end's options say about lines, in one place:

- **per-logger levels** (``logs_levels``): a mapping of logger-name prefix to level; the
  longest prefix that matches a logger decides, else ``logs_level``;
- **sampling** (``logs_sample_rates``): a ratio per level (a level with none configured
  takes the ratio of the nearest configured level below it; 1 when there is none); a
  line left out is counted (``logs_sampled``), never warned about;
- **held lines** (``logs_hold_level``): a line at or above it but below its send level is
  held by its context (:mod:`posthog_logging.held_lines`), sent if the context logs at or
  above ``logs_release_level`` or ends with an exception, else forgotten and counted
  (``logs_not_kept``). Outside any context there is nothing to hold it: it is not sent.

The :class:`~posthog_logging.entries.Router` asks; events, exceptions and steps are not
affected.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from .held_lines import DEFAULT_MAX_HELD
from .levels import NEVER, parse_level

__all__ = ["LineRules"]

_MAX_KNOWN_LOGGERS = 10_000


class LineRules:
    """What a front-end's options say about log lines (see the module's docstring)."""

    __slots__ = (
        "_levels",
        "_rates",
        "_thresholds",
        "floor",
        "hold_level",
        "logs_threshold",
        "max_held",
        "release_level",
        "simple",
    )

    def __init__(
        self,
        *,
        logs_level: int | None = None,
        logs_levels: Mapping[str, int | str] | None = None,
        logs_sample_rates: Mapping[Any, Any] | None = None,
        logs_hold_level: int | str | None = None,
        logs_release_level: int | str = logging.ERROR,
        logs_hold_max: int = DEFAULT_MAX_HELD,
        parse: Callable[[Any, str], int] = parse_level,
    ) -> None:
        self.logs_threshold = NEVER if logs_level is None else logs_level
        if logs_levels is not None and not isinstance(logs_levels, Mapping):
            raise TypeError(
                f"logs_levels must be a mapping of logger to level, got {logs_levels!r}"
            )
        self._levels = {
            str(prefix).strip(): parse(level, f"logs_levels[{prefix!r}]")
            for prefix, level in (logs_levels or {}).items()
        }
        self._rates = _rates(logs_sample_rates, parse)
        self.hold_level = (
            NEVER if logs_hold_level is None else parse(logs_hold_level, "logs_hold_level")
        )
        self.release_level = parse(logs_release_level, "logs_release_level")
        if (
            isinstance(logs_hold_max, bool)
            or not isinstance(logs_hold_max, int)
            or logs_hold_max < 1
        ):
            raise ValueError(f"logs_hold_max must be a positive int, got {logs_hold_max!r}")
        self.max_held = logs_hold_max
        self._thresholds: dict[str | None, int] = {}
        #: No option beyond logs_level: every line at or above it is sent.
        self.simple = not (self._levels or self._rates or logs_hold_level is not None)
        #: The lowest level at which a line may be sent or held.
        self.floor = min(self.logs_threshold, self.hold_level, *self._levels.values())

    def threshold(self, logger_name: str | None) -> int:
        """The level from which ``logger_name``'s lines are sent."""
        known = self._thresholds.get(logger_name)
        if known is not None:
            return known
        level, longest = self.logs_threshold, -1
        name = logger_name or ""
        for prefix, prefix_level in self._levels.items():
            matches = prefix in ("", "root") or name == prefix or name.startswith(prefix + ".")
            if matches and len(prefix) > longest:
                level, longest = prefix_level, len(prefix)
        if len(self._thresholds) < _MAX_KNOWN_LOGGERS:
            self._thresholds[logger_name] = level
        return level

    def sampled_out(self, levelno: int) -> bool:
        """Whether a line at ``levelno`` is left out by sampling."""
        if not self._rates:
            return False
        rate = 1.0
        for level, level_rate in self._rates:  # highest level first
            if levelno >= level:
                rate = level_rate
                break
        return rate < 1.0 and random.random() >= rate


def _rates(
    rates: Mapping[Any, Any] | None, parse: Callable[[Any, str], int]
) -> tuple[tuple[int, float], ...]:
    if rates is None:
        return ()
    if not isinstance(rates, Mapping):
        raise TypeError(f"logs_sample_rates must be a mapping of level to ratio, got {rates!r}")
    out = []
    for level, rate in rates.items():
        number = parse(level, "logs_sample_rates")
        if isinstance(rate, str):
            try:
                rate = float(rate)
            except ValueError:
                rate = -1.0
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(
                f"logs_sample_rates[{level!r}] must be a ratio from 0 to 1, got {rate!r}"
            )
        out.append((number, float(rate)))
    return tuple(sorted(out, reverse=True))
