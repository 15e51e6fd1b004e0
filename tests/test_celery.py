"""Celery: the producer's context travels with each task, each task runs in its own,
failures are sent once, and prefork children flush before they exit.

Two set-ups:

- an in-process worker (``celery.contrib.testing.worker.start_worker``, on a thread of
  this process, brokered in memory): events are checked with ``posthog_events``;
- a real prefork worker in a subprocess (``celery -A tests._celery_app worker``), with
  kombu's filesystem transport as the broker: events are checked on the local server.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

import posthog_logging
import posthog_logging.celery
from posthog_logging import PostHogHandler
from posthog_logging.contexts import current_state
from posthog_logging.server import LocalServer
from posthog_logging.testing import CapturedEvents

from . import _celery_app
from .conftest import API_KEY, Records
from .helpers import assert_anonymous, only
from .polling import wait_until

REPO = Path(__file__).resolve().parent.parent
LOGGER_NAME = "tests.celery_tasks"
log = logging.getLogger(LOGGER_NAME)

CAPTURE = "tests.capture"
IDENTIFY = "tests.identify_and_capture"
FAIL = "tests.fail"
SLOW = "tests.slow_capture"


def seen() -> dict[str, Any]:
    """The context a task runs in, as it sees it."""
    state = current_state()
    return {
        "distinct_id": state.distinct_id,
        "session_id": state.session_id,
        "tags": dict(state.tags),
        "thread": threading.get_ident(),
    }


def make_app(queue: str) -> Celery:
    app = Celery(f"tests_{queue}", set_as_current=False)
    app.conf.update(
        broker_url="memory://",
        result_backend="cache+memory://",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        broker_transport_options={"polling_interval": 0.01},
        worker_hijack_root_logger=False,
    )

    @app.task(name=CAPTURE, shared=False)  # type: ignore[untyped-decorator]
    def capture(label: str) -> dict[str, Any]:
        posthog_logging.capture("task_ran", {"label": label})
        log.info("task_logged", extra={"event": True, "label": label})
        return seen()

    @app.task(name=IDENTIFY, shared=False)  # type: ignore[untyped-decorator]
    def identify_and_capture(label: str, user: str) -> dict[str, Any]:
        posthog_logging.identify_context(user)
        posthog_logging.set_context_session("set-in-task")
        posthog_logging.tag("set_in_task", True)
        posthog_logging.capture("task_ran", {"label": label})
        return seen()

    @app.task(name=FAIL, shared=False)  # type: ignore[untyped-decorator]
    def fail(label: str) -> None:
        raise _celery_app.TaskFailed(f"task {label} failed")

    @app.task(name=SLOW, shared=False)  # type: ignore[untyped-decorator]
    def slow_capture(label: str, delay: float) -> dict[str, Any]:
        time.sleep(delay)
        posthog_logging.capture("task_ran", {"label": label})
        return seen()

    return app


def started(app: Celery, **options: Any) -> Any:
    """``start_worker`` that leaves the root logger as it was (Celery configures it)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    worker = start_worker(app, perform_ping_check=False, shutdown_timeout=15, **options)
    worker.__enter__()
    root.handlers[:] = handlers
    root.setLevel(level)
    return worker


@pytest.fixture(scope="module")
def app() -> Iterator[Celery]:
    """An app with a solo worker on a thread of this process: every task runs on it."""
    posthog_logging.celery.instrument()
    app = make_app(f"solo-{uuid.uuid4().hex[:8]}")
    worker = started(app, pool="solo")
    try:
        yield app
    finally:
        worker.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _instrumented() -> Iterator[None]:
    posthog_logging.celery.instrument()
    yield
    posthog_logging.celery.instrument()  # back to the defaults


@pytest.fixture(autouse=True)
def tasks_logger(attach: Callable[..., logging.Logger]) -> logging.Logger:
    """The tasks' logger sends its marked records through the default client."""
    return attach(PostHogHandler(), name=LOGGER_NAME)


def task_tags(name: str, task_id: str) -> dict[str, Any]:
    return {"celery_task": name, "celery_task_id": task_id}


def failure_logged(records: Records, task_id: str) -> Callable[[], list[logging.LogRecord]]:
    """Celery's own error line for ``task_id`` (logged after the failure signal)."""
    return lambda: [
        r for r in records.records if r.exc_info and task_id in r.getMessage() and r.levelno >= 40
    ]


# -- an in-process worker -------------------------------------------------------------------


def test_the_producers_context_travels_with_the_task(
    app: Celery, posthog_events: CapturedEvents
) -> None:
    with posthog_logging.new_context():
        posthog_logging.identify_context("producer-user")
        posthog_logging.set_context_session("producer-session")
        posthog_logging.tag("plan", "pro")
        posthog_logging.tag("cart", {"items": 3})
        result = app.tasks[CAPTURE].delay("sent-in-context")
    context = result.get(timeout=10, interval=0.01)

    tags = task_tags(CAPTURE, result.id)
    assert context["distinct_id"] == "producer-user"
    assert context["session_id"] == "producer-session"
    assert context["tags"] == {"plan": "pro", "cart": {"items": 3}, **tags}
    assert context["thread"] != threading.get_ident()
    for name in ("task_ran", "task_logged"):
        event = posthog_events.assert_captured(
            name, distinct_id="producer-user", label="sent-in-context", count=1, **tags
        )
        props = event["properties"]
        assert props["$session_id"] == "producer-session"
        assert props["plan"] == "pro"
        assert props["cart"] == {"items": 3}


def test_a_task_sent_outside_any_context_has_no_identity(
    app: Celery, posthog_events: CapturedEvents
) -> None:
    result = app.tasks[CAPTURE].delay("sent-outside")
    context = result.get(timeout=10, interval=0.01)
    assert context["distinct_id"] is None
    assert context["session_id"] is None
    assert context["tags"] == task_tags(CAPTURE, result.id)
    event = posthog_events.assert_captured("task_ran", label="sent-outside", count=1)
    assert_anonymous(event)
    assert "$session_id" not in event["properties"]
    assert event["properties"]["celery_task_id"] == result.id


def test_tasks_do_not_leak_into_each_other(app: Celery, posthog_events: CapturedEvents) -> None:
    with posthog_logging.new_context():
        posthog_logging.identify_context("producer-1")
        posthog_logging.tag("from_producer", 1)
        first = app.tasks[IDENTIFY].delay("first", "set-by-first-task")
    second = app.tasks[CAPTURE].delay("second")
    with posthog_logging.new_context():
        posthog_logging.identify_context("producer-3")
        third = app.tasks[CAPTURE].delay("third")

    seen_first, seen_second, seen_third = (
        r.get(timeout=10, interval=0.01) for r in (first, second, third)
    )
    # One worker thread ran all three, one after another.
    assert seen_first["thread"] == seen_second["thread"] == seen_third["thread"]
    assert seen_first["distinct_id"] == "set-by-first-task"
    assert seen_first["tags"]["set_in_task"] is True
    assert seen_second == {
        "distinct_id": None,
        "session_id": None,
        "tags": task_tags(CAPTURE, second.id),
        "thread": seen_first["thread"],
    }
    assert seen_third["distinct_id"] == "producer-3"
    assert seen_third["session_id"] is None
    assert seen_third["tags"] == task_tags(CAPTURE, third.id)

    posthog_events.assert_captured("task_ran", distinct_id="set-by-first-task", label="first")
    second_event = only(posthog_events.find("task_ran", label="second"))
    assert_anonymous(second_event)
    for event in (second_event, only(posthog_events.find("task_ran", label="third"))):
        assert "set_in_task" not in event["properties"]
        assert "from_producer" not in event["properties"]
        assert "$session_id" not in event["properties"]


def test_a_failing_task_is_captured_once(
    app: Celery, posthog_events: CapturedEvents, root_handlers: Records
) -> None:
    with posthog_logging.new_context():
        posthog_logging.identify_context("producer-user")
        posthog_logging.tag("plan", "pro")
        result = app.tasks[FAIL].delay("boom")
    with pytest.raises(Exception, match="task boom failed") as raised:
        result.get(timeout=10, interval=0.01)
    assert type(raised.value).__name__ == "TaskFailed"
    # Celery logs the failure (with its traceback) after the signal the capture runs on;
    # once the root logger saw that line, both had their chance to send it.
    [line] = wait_until(failure_logged(root_handlers, result.id), what="Celery's error line")
    assert line.name.startswith("celery")

    event = only(posthog_events.exceptions)
    props = event["properties"]
    assert event["distinct_id"] == "producer-user"
    assert props["$exception_source"] == "celery.task_failure"
    assert props["celery_task"] == FAIL
    assert props["celery_task_id"] == result.id
    assert props["plan"] == "pro"
    [exc] = props["$exception_list"]
    assert exc["type"] == "TaskFailed"
    assert exc["value"] == "task boom failed"


def test_failures_not_captured_when_turned_off(app: Celery, posthog_events: CapturedEvents) -> None:
    posthog_logging.celery.instrument(capture_exceptions=False)
    result = app.tasks[FAIL].delay("quiet")
    with pytest.raises(Exception, match="task quiet failed"):
        result.get(timeout=10, interval=0.01)
    # The context closes after the failure is handled: run one more task behind it.
    app.tasks[CAPTURE].delay("after").get(timeout=10, interval=0.01)
    assert posthog_events.exceptions == []


def test_celerys_error_line_is_what_sends_it_when_the_signal_does_not(
    app: Celery, posthog_events: CapturedEvents, root_handlers: Records
) -> None:
    # The counterpart of the test above: the root handler does send Celery's error line
    # when the failure was not captured first.
    posthog_logging.celery.instrument(capture_exceptions=False)
    with posthog_logging.new_context():
        posthog_logging.identify_context("producer-user")
        result = app.tasks[FAIL].delay("logged")
    with pytest.raises(Exception, match="task logged failed"):
        result.get(timeout=10, interval=0.01)
    wait_until(failure_logged(root_handlers, result.id), what="Celery's error line")
    event = only(posthog_events.exceptions)
    assert event["properties"]["$exception_source"] == "python.logging"
    assert event["distinct_id"] == "producer-user"  # logged inside the task's context


def test_instrument_twice_is_harmless(
    app: Celery, posthog_events: CapturedEvents, root_handlers: Records
) -> None:
    posthog_logging.celery.instrument()
    posthog_logging.celery.instrument()
    with posthog_logging.new_context():
        posthog_logging.identify_context("twice")
        ok = app.tasks[CAPTURE].delay("twice")
        failed = app.tasks[FAIL].delay("twice")
    context = ok.get(timeout=10, interval=0.01)
    with pytest.raises(Exception, match="task twice failed"):
        failed.get(timeout=10, interval=0.01)
    wait_until(failure_logged(root_handlers, failed.id), what="Celery's error line")

    assert context["tags"] == task_tags(CAPTURE, ok.id)
    posthog_events.assert_captured("task_ran", distinct_id="twice", count=1)
    posthog_events.assert_captured("task_logged", distinct_id="twice", count=1)
    assert only(posthog_events.exceptions)["properties"]["celery_task_id"] == failed.id


def test_eager_apply_keeps_the_callers_context(posthog_events: CapturedEvents) -> None:
    app = make_app("eager-never-consumed")
    with posthog_logging.new_context():
        posthog_logging.identify_context("caller")
        posthog_logging.set_context_session("caller-session")
        posthog_logging.tag("where", "caller")
        result = app.tasks[CAPTURE].apply(args=["eager"])
        # The task's tags do not stay behind in the caller's context.
        assert posthog_logging.get_tags() == {"where": "caller"}
        assert posthog_logging.get_context_distinct_id() == "caller"
    context = result.get()
    assert context["distinct_id"] == "caller"
    assert context["session_id"] == "caller-session"
    assert context["tags"] == {"where": "caller", **task_tags(CAPTURE, result.id)}
    assert context["thread"] == threading.get_ident()
    event = posthog_events.assert_captured("task_ran", distinct_id="caller", label="eager")
    assert event["properties"]["where"] == "caller"
    assert event["properties"]["celery_task_id"] == result.id
    assert current_state().depth == 0


def test_eager_apply_outside_any_context(posthog_events: CapturedEvents) -> None:
    app = make_app("eager-never-consumed")
    result = app.tasks[CAPTURE].apply(args=["eager-outside"])
    assert result.get()["tags"] == task_tags(CAPTURE, result.id)
    assert_anonymous(posthog_events.assert_captured("task_ran", label="eager-outside"))
    assert current_state().depth == 0


def test_eager_failure_captured_once_with_the_callers_context(
    posthog_events: CapturedEvents, root_handlers: Records
) -> None:
    app = make_app("eager-never-consumed")
    with posthog_logging.new_context():
        posthog_logging.identify_context("caller")
        result = app.tasks[FAIL].apply(args=["eager-boom"])
    assert result.failed()
    assert failure_logged(root_handlers, result.id)()
    event = only(posthog_events.exceptions)
    assert event["distinct_id"] == "caller"
    assert event["properties"]["$exception_source"] == "celery.task_failure"
    assert event["properties"]["celery_task_id"] == result.id
    assert current_state().depth == 0


def test_concurrent_tasks_on_a_thread_pool_are_isolated(
    posthog_events: CapturedEvents,
) -> None:
    app = make_app(f"threads-{uuid.uuid4().hex[:8]}")
    count = 12
    worker = started(app, pool="threads", concurrency=4)
    try:
        results = []
        for i in range(count):
            with posthog_logging.new_context():
                posthog_logging.identify_context(f"user-{i}")
                posthog_logging.tag("i", i)
                results.append(app.tasks[SLOW].delay(f"t{i}", 0.05 + 0.01 * (i % 3)))
        contexts = [r.get(timeout=10, interval=0.01) for r in results]
    finally:
        worker.__exit__(None, None, None)
    assert len({c["thread"] for c in contexts}) > 1
    for i, (result, context) in enumerate(zip(results, contexts, strict=True)):
        assert context["distinct_id"] == f"user-{i}"
        assert context["tags"] == {"i": i, **task_tags(SLOW, result.id)}
        event = posthog_events.assert_captured("task_ran", label=f"t{i}", count=1)
        assert event["distinct_id"] == f"user-{i}"
        assert event["properties"]["celery_task_id"] == result.id


# -- a prefork worker in a subprocess -------------------------------------------------------


class FilesystemWorker:
    """``celery -A tests._celery_app worker`` in a subprocess, sending to ``server``."""

    def __init__(self, server: LocalServer, base: Path, *options: str) -> None:
        self.broker = base / "broker"
        self.log_path = base / "worker.log"
        self.app = _celery_app.make_app(self.broker)
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG_")}
        env.update(
            {
                _celery_app.DATA_DIR_ENV: str(self.broker),
                _celery_app.HOST_ENV: server.url,
                _celery_app.API_KEY_ENV: API_KEY,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            }
        )
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests._celery_app",
            "worker",
            "--pool=prefork",
            "--loglevel=INFO",
            f"--hostname=fs-{uuid.uuid4().hex[:8]}@%h",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            *options,
        ]
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )

    def send(self, name: str, label: str, distinct_id: str | None = None, **tags: Any) -> str:
        with posthog_logging.new_context():
            if distinct_id is not None:
                posthog_logging.identify_context(distinct_id)
            for key, value in tags.items():
                posthog_logging.tag(key, value)
            return str(self.app.send_task(name, args=[label]).id)

    def done(self, labels: list[str]) -> bool:
        return all((self.broker / f"done-{label}").exists() for label in labels)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a warm shutdown), then wait for the worker to exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the worker did not stop within {timeout}s:\n{self.output()}")


@pytest.fixture
def fs_worker(server: LocalServer, tmp_path: Path) -> Iterator[Callable[..., FilesystemWorker]]:
    made: list[FilesystemWorker] = []

    def make(*options: str) -> FilesystemWorker:
        worker = FilesystemWorker(server, tmp_path, *options)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.stop()


def wait_for_events(
    server: LocalServer, worker: FilesystemWorker, n: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    try:
        return server.wait_for_events(n, timeout=timeout)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\nworker output:\n{worker.output()}")


def test_prefork_children_flush_before_they_exit(
    server: LocalServer, fs_worker: Callable[..., FilesystemWorker]
) -> None:
    # Each child runs one task and exits; the clients would wait an hour to send on their
    # own, so the events can only come from each child's flush as it exits.
    worker = fs_worker("--concurrency=2", "--max-tasks-per-child=1")
    ids = {f"t{i}": worker.send(_celery_app.CAPTURE, f"t{i}", f"user-{i}", i=i) for i in range(4)}
    failed_id = worker.send(_celery_app.FAIL, "f", "failing-user", plan="pro")
    events = wait_for_events(server, worker, 5)
    assert worker.process.poll() is None  # delivered while the worker still runs

    ran = [e for e in events if e["event"] == _celery_app.EVENT]
    assert sorted(e["properties"]["label"] for e in ran) == ["t0", "t1", "t2", "t3"]
    for event in ran:
        props = event["properties"]
        i = int(props["label"][1:])
        assert event["distinct_id"] == props["seen_distinct_id"] == f"user-{i}"
        assert props["i"] == i
        assert props["celery_task"] == _celery_app.CAPTURE
        assert props["celery_task_id"] == ids[props["label"]]
    pids = {e["properties"]["pid"] for e in ran}
    assert len(pids) == 4, "each task ran in a child of its own"
    assert worker.process.pid not in pids

    # Celery's error line goes to a PostHogHandler on the worker's root logger: still once.
    event = only([e for e in events if e["event"] == "$exception"])
    props = event["properties"]
    assert event["distinct_id"] == "failing-user"
    assert props["$exception_source"] == "celery.task_failure"
    assert props["celery_task"] == _celery_app.FAIL
    assert props["celery_task_id"] == failed_id
    assert props["plan"] == "pro"
    assert len(events) == 5
    assert worker.stop() == 0
    assert len(server.events()) == 5


def test_prefork_children_flush_at_warm_shutdown(
    server: LocalServer, fs_worker: Callable[..., FilesystemWorker]
) -> None:
    # A long-lived child holds its events (the client would wait an hour) until the
    # worker is stopped: SIGTERM, the pool closes, the child exits and flushes.
    worker = fs_worker("--concurrency=1")
    labels = ["a", "b", "c"]
    for label in labels:
        worker.send(_celery_app.CAPTURE, label, f"user-{label}")
    wait_until(
        lambda: worker.done(labels), timeout=20, what="the tasks to run", details=worker.output
    )
    assert server.events() == []  # nothing was sent while the child lives
    assert worker.stop() == 0
    events = wait_for_events(server, worker, 3, timeout=5)
    assert sorted(e["distinct_id"] for e in events) == ["user-a", "user-b", "user-c"]
    assert len({e["properties"]["pid"] for e in events}) == 1
