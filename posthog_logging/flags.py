"""Switches: one rule for what counts as on and off.

Options reach the library from code (``True``), from ``dictConfig`` read out of a file,
and from the environment, where a switch is text. ``bool("false")`` is true, so text is
read here instead: ``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0`` in any
case; anything else is a ``ValueError`` naming the option, not a silent "on".
"""

from __future__ import annotations

from typing import Any

__all__ = ["parse_flag"]

_ON = frozenset({"true", "yes", "on", "1"})
_OFF = frozenset({"false", "no", "off", "0", ""})


def parse_flag(value: Any, name: str) -> bool:
    """``value`` as a switch: a bool, 0 or 1, or one of the words above."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _ON:
            return True
        if word in _OFF:
            return False
    raise ValueError(f"{name} must be True or False, got {value!r}")
