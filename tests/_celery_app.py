"""The Celery app tests/test_celery.py runs in a real prefork worker (a subprocess).

The broker is kombu's filesystem transport, in a directory both sides agree on. The
worker is started with ``celery -A tests._celery_app worker ...`` and this environment:

- ``TESTS_CELERY_DATA_DIR``: the broker's directory (without it there is no ``app``);
- ``TESTS_POSTHOG_HOST`` and ``TESTS_POSTHOG_API_KEY``: where events go. The default
  client is configured here, at import, in the worker's main process (before it forks
  its children), and it would wait an hour before sending anything on its own: only the
  flush when a process exits can deliver what the tasks capture. The root logger gets
  a PostHogHandler too, so Celery's own error line could send a failure a second time.

The test process makes the same app with :func:`make_app` to send the tasks.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

from celery import Celery, signals

import posthog_logging
import posthog_logging.celery

DATA_DIR_ENV = "TESTS_CELERY_DATA_DIR"
HOST_ENV = "TESTS_POSTHOG_HOST"
API_KEY_ENV = "TESTS_POSTHOG_API_KEY"

CAPTURE = "tests.fs.capture"
FAIL = "tests.fs.fail"
EVENT = "fs_task_ran"


class TaskFailed(Exception):
    pass


def make_app(data_dir: str | os.PathLike[str]) -> Celery:
    """The app, with its broker in ``data_dir``."""
    base = pathlib.Path(data_dir)
    queue, processed, control = base / "queue", base / "processed", base / "control"
    for folder in (queue, processed, control):
        folder.mkdir(parents=True, exist_ok=True)
    app = Celery("tests_celery_fs", set_as_current=False)
    app.conf.update(
        broker_url="filesystem://",
        broker_transport_options={
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "data_folder_processed": str(processed),
            "control_folder": str(control),  # else a "control" folder in the cwd
            "polling_interval": 0.05,
        },
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
    )

    @app.task(name=CAPTURE, shared=False)  # type: ignore[untyped-decorator]
    def capture(label: str) -> None:
        posthog_logging.capture(
            EVENT,
            {
                "label": label,
                "pid": os.getpid(),
                "seen_distinct_id": posthog_logging.get_context_distinct_id(),
            },
        )
        # Tells the test the task ran (there is no result backend).
        (base / f"done-{label}").write_text(str(os.getpid()))

    @app.task(name=FAIL, shared=False)  # type: ignore[untyped-decorator]
    def fail(label: str) -> Any:
        (base / f"done-{label}").write_text(str(os.getpid()))
        raise TaskFailed(f"task {label} failed in {os.getpid()}")

    return app


def _root_handler(logger: logging.Logger, **_: Any) -> None:
    """Send logged exceptions too (Celery's own error line included) from the worker."""
    logger.addHandler(posthog_logging.PostHogHandler())


posthog_logging.celery.instrument()

if DATA_DIR_ENV in os.environ:
    signals.after_setup_logger.connect(_root_handler, weak=False)
    app = make_app(os.environ[DATA_DIR_ENV])
    posthog_logging.configure(
        api_key=os.environ[API_KEY_ENV],
        host=os.environ[HOST_ENV],
        flush_interval=3600,
        flush_at=10_000,
    )
