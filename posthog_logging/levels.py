"""Logging levels: every rule about them, in one place.

The front-ends accept levels as numbers or names (from ``dictConfig``, environment
variables and structlog's method names); PostHog wants an ``$exception_level`` word for
error tracking and OpenTelemetry a severity number for log lines. Each translation is
here once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = [
    "NEVER",
    "entry_level",
    "exception_level_name",
    "level_name",
    "parse_level",
    "severity_number",
]

#: A level no record reaches: a threshold that turns an output off.
NEVER = 1 << 62

#: structlog's method names (its ``NAME_TO_LEVEL``, with ``fatal``, ``msg`` and ``log``).
_METHOD_LEVELS: dict[str, int] = {
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "exception": logging.ERROR,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "msg": logging.INFO,
    "log": logging.INFO,
    "debug": logging.DEBUG,
    "notset": logging.NOTSET,
}


def parse_level(value: int | str, name: str) -> int:
    """A logging level from an int or a name (``"ERROR"``, ``"error"``); ``ValueError``
    naming the option ``name`` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        level = logging.getLevelName(value.strip().upper())
        if isinstance(level, int):
            return level
    raise ValueError(
        f"{name} must be a logging level (an int or a name like 'ERROR'), got {value!r}"
    )


def level_name(levelno: int) -> str:
    """The level's name, as logging names it (``"WARNING"``, ``"Level 25"``)."""
    return logging.getLevelName(levelno)


def entry_level(method_name: str, entry: Mapping[str, Any]) -> int:
    """A structlog entry's level: from ``add_log_level``'s ``level`` key if there, else
    from the method called (``log.warning`` is WARNING); INFO when neither says."""
    for name in (entry.get("level"), method_name):
        if isinstance(name, str):
            level = _METHOD_LEVELS.get(name.lower())
            if level is not None:
                return level
    return logging.INFO


def exception_level_name(levelno: int) -> str:
    """``$exception_level`` for a logging level, as PostHog's SDK specification names it."""
    if levelno >= logging.CRITICAL:
        return "fatal"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def severity_number(levelno: int) -> int:
    """OpenTelemetry's severity number for a logging level: TRACE 1, DEBUG 5, INFO 9,
    WARN 13, ERROR 17, FATAL 21, and the steps in between for levels in between."""
    if levelno >= logging.CRITICAL:
        base, step = 21, levelno - logging.CRITICAL
    elif levelno >= logging.ERROR:
        base, step = 17, levelno - logging.ERROR
    elif levelno >= logging.WARNING:
        base, step = 13, levelno - logging.WARNING
    elif levelno >= logging.INFO:
        base, step = 9, levelno - logging.INFO
    elif levelno >= logging.DEBUG:
        base, step = 5, levelno - logging.DEBUG
    else:
        base, step = 1, max(0, levelno)
    return base + min(3, step * 4 // 10)  # e.g. 25 (between INFO and WARNING) is INFO3
