"""Load: many threads and many asyncio tasks capturing at once, end to end.

Each worker (a thread, or a task) opens its own context with its own identity, session
and tag, and captures through a ``PostHogHandler`` logger or ``client.capture``. After a
flush, the local server must hold every event exactly once, each with its own worker's
identity: nothing lost, nothing sent twice, no context seen by another worker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable
from typing import Any

import posthog_logging
from posthog_logging import Client, PostHogHandler
from posthog_logging.server import LocalServer

from .helpers import accepted_event_count

THREADS = 8
PER_THREAD = 2_000
TASKS = 1_000
PER_TASK = 5


def session_of(worker: str) -> str:
    """A recognisable session id for ``worker``."""
    return f"session-{worker}"


def check_identity(event: dict[str, Any], worker: str) -> None:
    """``event`` carries ``worker``'s distinct_id, session and tag, and no other's."""
    props = event["properties"]
    assert event["distinct_id"] == f"user-{worker}", event
    assert props["$session_id"] == session_of(worker), event
    assert props["worker_tag"] == f"tag-{worker}", event
    assert "$process_person_profile" not in props, event


class TestThreads:
    def test_eight_threads_each_event_once_with_its_own_identity(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """8 threads x 2,000 events: all 16,000 stored once, each with its thread's identity."""
        client = make_client(max_queue_size=THREADS * PER_THREAD * 2, flush_at=500)
        log = attach(PostHogHandler(client=client))
        barrier = threading.Barrier(THREADS)
        uuids: dict[int, list[str | None]] = {}
        errors: list[BaseException] = []

        def work(t: int) -> None:
            returned: list[str | None] = []
            try:
                with posthog_logging.new_context():
                    posthog_logging.identify_context(f"user-{t}")
                    posthog_logging.set_context_session(session_of(str(t)))
                    posthog_logging.tag("worker_tag", f"tag-{t}")
                    barrier.wait(timeout=10)
                    for i in range(PER_THREAD):
                        if t % 2:
                            returned.append(client.capture("load", {"t": t, "i": i}))
                        else:
                            log.info("load", extra={"event": True, "t": t, "i": i})
            except BaseException as exc:  # reported in the main thread
                errors.append(exc)
            uuids[t] = returned

        threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)

        total = THREADS * PER_THREAD
        assert client.flush(timeout=20)
        events = server.wait_for_events(total, timeout=20, event="load")

        assert len(events) == total
        assert len({e["uuid"] for e in events}) == total
        pairs = collections.Counter((e["properties"]["t"], e["properties"]["i"]) for e in events)
        assert len(pairs) == total
        assert set(pairs) == {(t, i) for t in range(THREADS) for i in range(PER_THREAD)}
        for event in events:
            check_identity(event, str(event["properties"]["t"]))
        captured = {u for t, got in uuids.items() if t % 2 for u in got}
        assert None not in captured
        assert captured == {e["uuid"] for e in events if e["properties"]["t"] % 2}
        # Nothing was sent twice (the server would have deduplicated it silently).
        assert accepted_event_count(server) == total
        assert {r.status for r in server.requests} == {200}
        stats = client.stats
        assert (stats.sent, stats.failed, stats.pending) == (total, 0, 0)
        assert stats.dropped_total == 0


class TestAsyncTasks:
    def test_thousand_tasks_each_event_once_with_its_own_identity(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """1,000 gathered tasks yielding between identify and capture: no context bleeds."""
        client = make_client(max_queue_size=TASKS * PER_TASK * 2, flush_at=500)
        log = attach(PostHogHandler(client=client))
        returned: list[str | None] = []
        seen_wrong: list[tuple[int, Any]] = []

        async def task(n: int) -> None:
            worker = f"task-{n}"
            with posthog_logging.new_context():
                posthog_logging.identify_context(f"user-{worker}")
                posthog_logging.set_context_session(session_of(worker))
                posthog_logging.tag("worker_tag", f"tag-{worker}")
                await asyncio.sleep(0)  # every other task runs, and sets its own, here
                for k in range(PER_TASK):
                    if posthog_logging.get_context_distinct_id() != f"user-{worker}":
                        seen_wrong.append((n, posthog_logging.get_context_distinct_id()))
                    if (n + k) % 2:
                        returned.append(client.capture("task_event", {"n": n, "k": k}))
                    else:
                        log.info("task_event", extra={"event": True, "n": n, "k": k})
                    await asyncio.sleep(0)

        async def main() -> None:
            await asyncio.gather(*(task(n) for n in range(TASKS)))
            # The parent never saw any task's context.
            assert posthog_logging.get_context_distinct_id() is None
            assert posthog_logging.get_context_session_id() is None
            assert posthog_logging.get_tags() == {}

        asyncio.run(main())
        assert seen_wrong == []
        assert None not in returned

        total = TASKS * PER_TASK
        assert client.flush(timeout=20)
        events = server.wait_for_events(total, timeout=20, event="task_event")

        assert len(events) == total
        assert len({e["uuid"] for e in events}) == total
        pairs = {(e["properties"]["n"], e["properties"]["k"]) for e in events}
        assert pairs == {(n, k) for n in range(TASKS) for k in range(PER_TASK)}
        for event in events:
            check_identity(event, f"task-{event['properties']['n']}")
        assert set(returned) <= {e["uuid"] for e in events}
        assert accepted_event_count(server) == total
        assert {r.status for r in server.requests} == {200}
        assert client.stats.dropped_total == 0

    def test_tasks_inside_a_parent_context_inherit_but_never_leak_back(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """Tasks inherit the parent's tag, override identity, and the parent keeps its own."""
        client = make_client(max_queue_size=TASKS * 4, flush_at=500)

        async def task(n: int) -> None:
            with posthog_logging.new_context():
                posthog_logging.identify_context(f"user-task-{n}")
                posthog_logging.tag("worker_tag", f"tag-task-{n}")
                await asyncio.sleep(0)
                client.capture("child", {"n": n})

        async def main() -> None:
            with posthog_logging.new_context():
                posthog_logging.identify_context("user-parent")
                posthog_logging.tag("request", "parent-request")
                client.capture("parent_before")
                await asyncio.gather(*(task(n) for n in range(TASKS)))
                client.capture("parent_after")
                assert posthog_logging.get_context_distinct_id() == "user-parent"
                assert posthog_logging.get_tags() == {"request": "parent-request"}

        asyncio.run(main())
        assert client.flush(timeout=20)
        children = server.wait_for_events(TASKS, timeout=20, event="child")
        assert len(children) == TASKS
        for event in children:
            n = event["properties"]["n"]
            assert event["distinct_id"] == f"user-task-{n}"
            assert event["properties"]["worker_tag"] == f"tag-task-{n}"
            assert event["properties"]["request"] == "parent-request"
        [after] = server.wait_for_events(1, timeout=5, event="parent_after")
        assert after["distinct_id"] == "user-parent"
        assert "worker_tag" not in after["properties"]
        assert after["properties"]["request"] == "parent-request"
