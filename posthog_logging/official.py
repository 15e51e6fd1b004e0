"""Beside the official SDK: sending through a ``posthog.Posthog`` client the application
already configured.

A codebase that uses the official ``posthog`` package has a client with its key, host,
``before_send`` and ``super_properties`` set. ``PostHogHandler(client=<posthog.Posthog>)``
(and the structlog and loguru front-ends) takes it as is: :func:`as_client` wraps it in
one of ours whose delivery hands each built event to the official client's ``capture()``
(:class:`ThroughOfficialClient`), so events and ``$exception`` events (with our
``$exception_list``, flood control, locals and steps) go out through its queue and its
hooks. The limits, written down in docs/logging.md:

- log lines for PostHog Logs, which the official SDK does not send, go with a transport
  of ours to the same host with the same key;
- the official client sets ``$lib`` to its own name, and applies its own
  ``super_properties`` and ``before_send``, as for any of its events;
- an event is built here, then handed over: it costs what ours costs on the sender
  thread plus what ``capture()`` costs there.

Reading the official SDK's context (``posthog.new_context()``, ``identify_context()``)
is :func:`posthog_logging.contexts.effective_state`'s job, for every client.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from .client import Client
from .delivery.http import HTTPTransport
from .delivery.kinds import EVENTS, Kind
from .delivery.transport import SendResult
from .diagnostics import Warner

__all__ = ["ThroughOfficialClient", "as_client", "is_official_client"]

_wrapped: weakref.WeakKeyDictionary[Any, Client] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def is_official_client(value: Any) -> bool:
    """Whether ``value`` is a client of the official ``posthog`` package (a subclass of
    it too). Never imports the package: a client of it means it was imported."""
    module = sys.modules.get("posthog.client")
    official = getattr(module, "Client", None)
    return isinstance(official, type) and isinstance(value, official)


def as_client(value: Any) -> Client:
    """``value`` as a client of ours: itself, or for an official ``posthog`` client, the
    one of ours that sends through it (made once per official client)."""
    if isinstance(value, Client):
        return value
    if not is_official_client(value):
        raise TypeError(
            "client must be a posthog_logging.Client or a posthog.Posthog client, "
            f"got {type(value).__name__}"
        )
    with _lock:
        client = _wrapped.get(value)
        if client is None:
            client = _wrapped[value] = _wrap(value)
    return client


def _wrap(official: Any) -> Client:
    host = str(getattr(official, "host", "") or "") or None
    api_key = str(getattr(official, "api_key", "") or "") or None
    client = Client(
        api_key,
        host,
        transport=ThroughOfficialClient(official, host=host, api_key=api_key),
        disabled=bool(getattr(official, "disabled", False)),
    )
    # Shut down before the official client's own exit hook (registered when it was
    # made, earlier than this one, so it runs later): what is queued here must reach its
    # queue while it still sends.
    atexit.register(client.shutdown)
    return client


class ThroughOfficialClient:
    """A transport that hands events to an official client's ``capture()``, and sends log
    lines itself (over HTTP, to the same host with the same key)."""

    def __init__(self, official: Any, *, host: str | None, api_key: str | None) -> None:
        self.official = official
        self._lines = HTTPTransport(host or "https://us.i.posthog.com", api_key or "")
        self._warner = Warner()

    def send(self, records: Sequence[bytes], kind: Kind, timeout: float) -> SendResult:
        """Events: each to ``capture()``, which queues it (never raises: an event it
        refuses is left, with a warning once a minute). Log lines: over HTTP."""
        if kind is not EVENTS:
            return self._lines.send(records, kind, timeout)
        for record in records:
            try:
                data = json.loads(record)
                self.official.capture(
                    data["event"],
                    distinct_id=data["distinct_id"],
                    properties=data["properties"],
                    timestamp=data["timestamp"],
                    uuid=data["uuid"],
                )
            except Exception as exc:
                self._warner.warn(
                    "capture",
                    "the official client's capture() refused an event (%s: %s); it is not sent",
                    type(exc).__name__,
                    exc,
                )
        return SendResult(status=200)

    def abort(self) -> None:
        """Stop what is in flight (log lines; events are in the official client's hands)."""
        self._lines.abort()

    def close(self) -> None:
        """Close the transport of the log lines."""
        self._lines.close()

    def reset_after_fork(self) -> None:
        """A forked child starts its own connections."""
        self._lines.reset_after_fork()
