"""Ids and timestamps: event uuids (version 7) and the ISO 8601 text PostHog reads.

Both are made for every event, so both are cheap: uuids are cut from a per-thread pool
of random hex (refilled a few hundred uuids at a time, forgotten in a forked child so
that parent and child never make the same ones), and a timestamp's text is made once
per second. The pool is filled from a generator seeded by the OS (again in a forked
child), not by a system call per refill: ``os.urandom`` gives up the GIL, and a thread
that logs in a tight loop and gives up the GIL every millisecond or so keeps the sender
from ever getting it (each hand-back restarts the sender's 5 ms wait for its turn).
The checks on what a caller passes to ``capture()`` live here too.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import re
import threading
import time
import uuid as uuid_module
from typing import Any

from .diagnostics import logger

__all__ = [
    "checked_timestamp",
    "checked_uuid",
    "event_time",
    "format_timestamp",
    "uuid7",
    "uuid_for",
]

#: 10000-01-01T00:00:00Z: past it a time has no four-digit year in ISO 8601.
END_OF_TIME = 253_402_300_800.0


def uuid7(timestamp: float | None = None) -> str:
    """A time-ordered UUID (version 7) as a string, from ``timestamp`` (epoch seconds)."""
    global _last_ms
    ms = int((time.time() if timestamp is None else timestamp) * 1000) & 0xFFFF_FFFF_FFFF
    cached_ms, prefix = _last_ms
    if ms != cached_ms:  # events come in runs from the same millisecond
        h = f"{ms:012x}"
        prefix = f"{h[:8]}-{h[8:]}-7"
        _last_ms = (ms, prefix)
    # 74 random bits: 12 after the version, the RFC 4122 variant, then 62. They are cut
    # from a pool of random hex of this thread's, made a few hundred uuids at a time.
    pool = _random
    i = pool.at
    if i > _RANDOM_POOL_HEX - 19:
        pool.hex, i = _random_bits.randbytes(_RANDOM_POOL_HEX // 2).hex(), 0
    h = pool.hex
    pool.at = i + 19
    return f"{prefix}{h[i : i + 3]}-{_VARIANT[h[i + 3]]}{h[i + 4 : i + 7]}-{h[i + 7 : i + 19]}"


class _RandomPool(threading.local):
    hex = ""
    at = 8192  # _RANDOM_POOL_HEX: empty, filled on first use


_RANDOM_POOL_HEX = 8192
#: The variant's two top bits are 10: a random hex digit becomes 8, 9, a or b.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_last_ms: tuple[int, str] = (-1, "")
_random = _RandomPool()
#: Seeded from os.urandom. Not a CSPRNG: a uuid must be unique, not unpredictable.
_random_bits = random.Random()


def _forget_random_pool() -> None:
    """A forked child must not make the uuids its parent makes from the same pool."""
    _random.at = _RANDOM_POOL_HEX
    _random_bits.seed()  # from os.urandom again


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_random_pool)


def format_timestamp(value: float | dt.datetime) -> str:
    """ISO 8601 in UTC with microseconds, e.g. ``2024-05-01T12:00:00.123456+00:00``.

    A naive datetime is taken as local time, as :meth:`datetime.astimezone` does.
    """
    global _last_second
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
    # Events come in runs from the same second: its text is made once.
    second = math.floor(value)
    micros = round((value - second) * 1_000_000)
    if micros == 1_000_000:
        second, micros = second + 1, 0
    cached_second, text = _last_second
    if second != cached_second:
        text = dt.datetime.fromtimestamp(second, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (second, text)
    return f"{text}.{micros:06d}+00:00"


_last_second: tuple[int, str] = (-1, "")


def uuid_for(timestamp: dt.datetime | float) -> str:
    """A uuid7 for an event made at ``timestamp``."""
    return uuid7(timestamp if type(timestamp) is float else None)


def checked_timestamp(value: Any) -> dt.datetime | float:
    """A timestamp given to capture(), checked: a time PostHog and a uuid7 can carry."""
    if isinstance(value, bool) or not isinstance(value, (dt.datetime, int, float)):
        raise TypeError(
            f"timestamp must be a datetime or epoch seconds, got {type(value).__name__}"
        )
    try:
        seconds = value.timestamp() if isinstance(value, dt.datetime) else float(value)
    except (OverflowError, ValueError, OSError):  # past a float, or past what the OS knows
        seconds = math.nan
    if not 0.0 <= seconds < END_OF_TIME:  # NaN fails here too
        raise ValueError(
            f"timestamp must be a time from 1970 to 9999 (a datetime or epoch seconds), "
            f"got {value!r}"
        )
    return float(value) if type(value) is int else value


def checked_uuid(value: Any) -> str:
    """A uuid given to capture(), normalised; PostHog refuses a whole batch for a bad one."""
    try:
        return str(uuid_module.UUID(str(value)))
    except ValueError:
        raise ValueError(f"uuid must be a UUID, got {value!r}") from None


_DATE_ONLY = re.compile(r"\d{4}-?\d{2}-?\d{2}")
_COMPACT_OFFSET = re.compile(r"([+-]\d{2})(\d{2})$")


def event_time(value: Any) -> dt.datetime | float:
    """An event's time from what a caller gave: now for None; ISO 8601 text parsed as
    the official SDK parses it (a time without a zone is UTC; text that is not a time is
    replaced by now, with a warning); anything else checked by :func:`checked_timestamp`."""
    if value is None:
        return time.time()
    if isinstance(value, str):
        parsed = _parse_iso(value)
        if parsed is None:
            logger.warning(
                "invalid timestamp %r (not an ISO 8601 date and time); "
                "the current time is sent instead",
                value,
            )
            return time.time()
        value = parsed
    return checked_timestamp(value)


def _parse_iso(text: str) -> dt.datetime | None:
    stripped = text.strip()
    if _DATE_ONLY.fullmatch(stripped):  # a day is not a time
        return None
    try:
        parsed = dt.datetime.fromisoformat(
            _COMPACT_OFFSET.sub(r"\1:\2", stripped.replace("Z", "+00:00"))
        )
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.timezone.utc)
