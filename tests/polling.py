"""Waiting for what happens on other threads and processes: poll with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "it",
    details: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    Fails (AssertionError) after ``timeout`` seconds, saying ``what`` was awaited and,
    when ``details`` is given, what it returns then (a worker's output, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            message = f"waited {timeout:g}s for {what}"
            raise AssertionError(f"{message}\n{details()}" if details else message)
        time.sleep(0.01)
