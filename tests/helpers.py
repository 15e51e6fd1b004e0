"""Helpers shared by the test modules: what reached the local server, checks on stored
events and log lines, and objects that misbehave on purpose.

Waiting in general (poll a predicate with a deadline) is in :mod:`tests.polling`.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from posthog_logging.server import LocalServer

from .polling import wait_until

#: An event as the local server stores it.
Event = dict[str, Any]

#: Seconds to wait for a flush, and then for the server to store what it was sent.
WAIT = 5.0


class Flushable(Protocol):
    """Something whose queue can be flushed: a ``Client``, or the ``posthog_logging``
    module itself (its ``flush`` flushes the default client)."""

    def flush(self, timeout: float | None = None) -> bool: ...


# -- what reached the server ------------------------------------------------------------------


def delivered(
    client: Flushable, server: LocalServer, n: int = 1, *, timeout: float = WAIT, **filters: Any
) -> list[Event]:
    """Flush ``client`` (failing unless it finishes within ``timeout``), then wait up to
    ``timeout`` for at least ``n`` events matching ``filters`` on ``server``; return all
    that match."""
    assert client.flush(timeout), f"flush() did not finish within {timeout:g}s"
    return server.wait_for_events(n, timeout=timeout, **filters)


def one_delivered(
    client: Flushable, server: LocalServer, event: str, *, timeout: float = WAIT, **filters: Any
) -> Event:
    """:func:`delivered` for the event named ``event``: the single one stored; fails when
    there are none or several."""
    found = delivered(client, server, 1, timeout=timeout, event=event, **filters)
    seen = [(e["event"], e["distinct_id"]) for e in found]
    assert len(found) == 1, f"expected exactly one {event!r}, got {len(found)}: {seen}"
    return found[0]


def accepted_event_count(server: LocalServer) -> int:
    """Events in the requests the server answered 200 (duplicates included)."""
    return sum(r.event_count for r in server.requests if r.status == 200)


def assert_each_sent_once(server: LocalServer) -> list[Event]:
    """All stored events, after checking that no accepted request carried one twice."""
    events = server.events()
    uuids = [event["uuid"] for event in events]
    assert len(set(uuids)) == len(uuids)
    carried = sum(r.event_count for r in server.requests if r.method == "POST" and r.status == 200)
    assert carried == len(events), f"{carried} events sent for {len(events)} stored: duplicates"
    return events


def wait_for_lines(server: LocalServer, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The log lines the server stored, oldest first, once there are at least ``n``."""
    wait_until(lambda: len(server.store.logs()) >= n, timeout, f"{n} stored log lines")
    return server.store.logs()


def stored_line(server: LocalServer, body: str) -> dict[str, Any]:
    """The one stored log line whose body is ``body``; fails when there are none or several."""
    [line] = [line for line in server.store.logs() if line["body"] == body]
    return line


# -- checks on events -------------------------------------------------------------------------


def only(events: list[Event]) -> Event:
    """The one event of ``events``; fails when there are none or several."""
    assert len(events) == 1, events
    return events[0]


def assert_anonymous(event: Event) -> None:
    """No identity: PostHog gets the event's uuid as distinct_id, and no person."""
    assert event["distinct_id"] == event["uuid"]
    assert event["properties"]["$process_person_profile"] is False


# -- names and awkward objects ----------------------------------------------------------------


def unique_name(prefix: str) -> str:
    """A logger name under ``prefix`` that no other test uses."""
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


class Unprintable:
    """An object whose ``str()`` and ``repr()`` both raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class ReprOnly:
    """An object whose ``str()`` raises but whose ``repr()`` works (hypothesis shows the
    values of a failing example with ``repr``)."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        return "ReprOnly()"
