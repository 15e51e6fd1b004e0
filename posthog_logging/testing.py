"""Capture, in memory, the events your application sends: for your own test suite.

With pytest, the ``posthog_events`` fixture (this package registers it as a pytest
plugin) does it for the duration of a test::

    def test_signup_is_tracked(posthog_events):
        signup(email="ada@example.com")
        event = posthog_events.assert_captured("signup_completed", plan="free")
        assert event["distinct_id"] == "ada@example.com"

With another test runner, use :func:`capture_events`::

    with capture_events() as events:
        signup(email="ada@example.com")
    events.assert_captured("signup_completed")

While capturing, every client (the default one, those of handlers and processors, and
those made meanwhile) sends its batches here instead of over HTTP, even without an API
key: :class:`CapturedEvents` is an in-memory
:class:`~posthog_logging.delivery.Transport`, installed through
:func:`posthog_logging.delivery.redirected`. What is recorded is exactly what would go
on the wire: after contexts, super properties, redaction and ``before_send``, as the
JSON PostHog would receive. A single client can also be given one:
``Client(transport=CapturedEvents())``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from .delivery import lifecycle
from .delivery.kinds import EVENTS, Kind
from .delivery.transport import SendResult

__all__ = ["CapturedEvents", "capture_events"]

#: How long reading the events waits for senders to hand over what they hold.
FLUSH_TIMEOUT = 5.0


class CapturedEvents:
    """The events sent while capturing, oldest first, each as PostHog receives it:
    ``{"event", "distinct_id", "properties", "timestamp", "uuid"}``.

    Reading (``events``, iteration, the helpers) first flushes every client, so an event
    logged just before is there.
    """

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._logs: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def send(self, records: Sequence[bytes], kind: Kind, timeout: float) -> SendResult:
        """Take a batch where a transport would post it (the clients call this)."""
        parsed = [json.loads(record) for record in records]
        with self._lock:
            (self._events if kind is EVENTS else self._logs).extend(parsed)
        return SendResult(status=200)

    def abort(self) -> None:
        """Nothing is ever in flight here."""

    def close(self) -> None:
        """Nothing to let go of."""

    def reset_after_fork(self) -> None:
        """A forked child keeps what was captured before the fork."""

    @property
    def logs(self) -> list[dict[str, Any]]:
        """Every log line captured so far for PostHog Logs, as OTLP ``LogRecord`` dicts."""
        _flush_all()
        with self._lock:
            return list(self._logs)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event captured so far."""
        _flush_all()
        with self._lock:
            return list(self._events)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        with self._lock:
            names = [e.get("event") for e in self._events]
        return f"<CapturedEvents {names!r}>"

    @property
    def names(self) -> list[str]:
        """The events' names, in order."""
        return [e["event"] for e in self.events]

    @property
    def exceptions(self) -> list[dict[str, Any]]:
        """The ``$exception`` events."""
        return self.find("$exception")

    def find(
        self, event: str | None = None, *, distinct_id: str | None = None, **properties: Any
    ) -> list[dict[str, Any]]:
        """Events with this name (any if None), person and property values."""
        return [
            e
            for e in self.events
            if (event is None or e["event"] == event)
            and (distinct_id is None or e["distinct_id"] == distinct_id)
            and all(
                key in e["properties"] and e["properties"][key] == value
                for key, value in properties.items()
            )
        ]

    def assert_captured(
        self,
        event: str,
        *,
        distinct_id: str | None = None,
        count: int | None = None,
        **properties: Any,
    ) -> dict[str, Any]:
        """Assert ``event`` was sent (``count`` times, if given) with this person and these
        property values; return the last such event. The failure message lists what was
        sent instead."""
        __tracebackhide__ = True
        found = self.find(event, distinct_id=distinct_id, **properties)
        if found and (count is None or len(found) == count):
            return found[-1]
        wanted = [repr(event)]
        if distinct_id is not None:
            wanted.append(f"distinct_id={distinct_id!r}")
        wanted += [f"{k}={v!r}" for k, v in properties.items()]
        times = "" if count is None else f" {count} time(s)"
        raise AssertionError(
            f"expected {', '.join(wanted)}{times}; found {len(found)} matching."
            f"\nevents sent:\n{self._listing()}"
        )

    def assert_not_captured(self, event: str, **properties: Any) -> None:
        """Assert no ``event`` with these property values was sent."""
        __tracebackhide__ = True
        found = self.find(event, **properties)
        if found:
            raise AssertionError(
                f"{event!r} was sent {len(found)} time(s):\n{self._listing(found)}"
            )

    def clear(self) -> None:
        """Forget what was captured so far."""
        _flush_all()
        with self._lock:
            self._events.clear()
            self._logs.clear()

    def _listing(self, events: list[dict[str, Any]] | None = None) -> str:
        shown = self.events if events is None else events
        if not shown:
            return "  (none)"
        lines = []
        for e in shown:
            props = {k: v for k, v in e["properties"].items() if not k.startswith("$")}
            lines.append(f"  {e['event']} distinct_id={e['distinct_id']!r} {props!r}")
        return "\n".join(lines)


@contextlib.contextmanager
def capture_events() -> Iterator[CapturedEvents]:
    """Capture every event sent inside the ``with`` block, in memory, instead of sending it.

    Events queued before the block (and not yet sent) are discarded, so that what is
    captured belongs to the block. Blocks nest: the inner one captures what is sent
    inside it.
    """
    recorder = CapturedEvents()
    outer = lifecycle.redirection()
    if outer is not None:
        _flush_all()  # what an outer block captured so far stays the outer block's
    with lifecycle.redirected(recorder):
        if outer is None:
            recorder.clear()  # what was queued before belongs to nobody: discarded
        yield recorder
        _flush_all()


def _flush_all() -> None:
    for sender in lifecycle.live():
        sender.flush(FLUSH_TIMEOUT)
