"""Code that tests/test_processes.py runs in other processes.

Children started with the "spawn" method import their target by name, so it lives in a
module of its own. None of these functions flushes or shuts a client down: delivery is
left to the library at process exit.
"""

from __future__ import annotations

import os

import posthog_logging
from posthog_logging import Client

EVENT = "worker_event"


def _properties(tag: str, i: int) -> dict[str, object]:
    return {"tag": tag, "i": i, "pid": os.getpid()}


def capture_with_module_api(api_key: str, host: str, tag: str, count: int) -> int:
    """Capture ``count`` events through the module-level API; return this process's pid."""
    posthog_logging.api_key = api_key
    posthog_logging.host = host
    for i in range(count):
        posthog_logging.capture(EVENT, _properties(tag, i), distinct_id=tag)
    return os.getpid()


def capture_with_own_client(api_key: str, host: str, tag: str, count: int) -> int:
    """Capture ``count`` events with a Client made here, whose sender would wait an hour."""
    client = Client(api_key, host, flush_interval=3600, flush_at=10_000)
    for i in range(count):
        client.capture(EVENT, _properties(tag, i), distinct_id=tag)
    return os.getpid()


def capture_with(client: Client, tag: str, count: int) -> int:
    """Capture ``count`` events with ``client`` (one inherited from a forking parent)."""
    for i in range(count):
        client.capture(EVENT, _properties(tag, i), distinct_id=tag)
    return os.getpid()


def capture_with_default_client(tag: str, count: int) -> int:
    """Capture ``count`` events with whatever default client this process has."""
    for i in range(count):
        posthog_logging.capture(EVENT, _properties(tag, i), distinct_id=tag)
    return os.getpid()
