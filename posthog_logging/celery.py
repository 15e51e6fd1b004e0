"""Celery: the caller's context travels with each task, and each task runs in its own.

Call :func:`instrument` once, where both the producer and the worker import it (the
module that makes the Celery app is the usual place)::

    app = Celery("shop", broker=...)
    posthog_logging.celery.instrument()

- **Producer**: when a task is sent inside a context, its identity, session and tags
  travel in the message's ``posthog_context`` header.
- **Worker**: each task runs in a new context holding them, tagged ``celery_task`` and
  ``celery_task_id``; a task run eagerly (``apply()``, ``task_always_eager``) keeps
  the caller's context instead.
- **Failures**: an exception that fails a task is sent once, as an ``$exception`` with
  the task's name and id as properties (Celery's own error log line is not sent again).
- **Processes**: a prefork child flushes its events before it exits.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import signals

from . import default_client
from .client import Client
from .contexts import (
    effective_state,
    identify_context,
    new_context,
    set_context_session,
    tag,
)
from .delivery.lifecycle import shutdown_all
from .diagnostics import logger
from .events import ExceptionInfo
from .serialisation import to_jsonable

__all__ = ["HEADER", "instrument"]


#: The message header that carries the producer's context.
HEADER = "posthog_context"

_lock = threading.Lock()
_settings: dict[str, Any] = {"client": None, "capture_exceptions": True}
#: Contexts of the tasks running now, by task id (entered at prerun, left at postrun).
_running: dict[str, new_context] = {}


def instrument(*, client: Client | None = None, capture_exceptions: bool = True) -> None:
    """Connect the signal handlers. Calling it again only changes the options."""
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"client must be a posthog_logging.Client, got {client!r}")
    with _lock:
        _settings["client"] = client
        _settings["capture_exceptions"] = bool(capture_exceptions)
        for signal, handler in (
            (signals.before_task_publish, _before_publish),
            (signals.task_prerun, _task_prerun),
            (signals.task_postrun, _task_postrun),
            (signals.task_failure, _task_failure),
            (signals.worker_process_shutdown, _process_shutdown),
        ):
            signal.connect(handler, weak=False, dispatch_uid=f"posthog_logging.{handler.__name__}")


def _client() -> Client:
    client = _settings["client"]
    return client if client is not None else default_client.get_client()


def _before_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    state = effective_state()
    if headers is None or not (state.distinct_id or state.session_id or state.tags):
        return
    try:
        headers[HEADER] = {
            "distinct_id": state.distinct_id,
            "session_id": state.session_id,
            "tags": to_jsonable(dict(state.tags)),  # whatever the message serializer is
        }
    except Exception:  # never stop a task from being sent
        logger.debug("could not attach the context to a task", exc_info=True)


def _task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id is None or task is None:
        return
    request = getattr(task, "request", None)
    carried = _carried_context(request)
    eager = bool(getattr(request, "is_eager", False))
    context = new_context(fresh=not eager or carried is not None, capture_exceptions=False)
    context.__enter__()
    _running[task_id] = context
    try:
        if carried:
            if carried.get("distinct_id"):
                identify_context(carried["distinct_id"])
            if carried.get("session_id"):
                set_context_session(carried["session_id"])
            for name, value in (carried.get("tags") or {}).items():
                tag(name, value)
        tag("celery_task", getattr(task, "name", None))
        tag("celery_task_id", task_id)
    except Exception:
        logger.debug("could not restore a task's context", exc_info=True)


def _task_postrun(task_id: str | None = None, **_: Any) -> None:
    context = _running.pop(task_id, None) if task_id is not None else None
    if context is not None:
        context.__exit__(None, None, None)


def _task_failure(
    task_id: str | None = None,
    exception: BaseException | None = None,
    sender: Any = None,
    **_: Any,
) -> None:
    if not _settings["capture_exceptions"] or not isinstance(exception, Exception):
        return
    # As PostHog's SDK specification names a failed background task.
    info = ExceptionInfo(
        mechanism_type="task", handled=False, level="error", source="celery.task_failure"
    )
    properties = {"celery_task": getattr(sender, "name", None), "celery_task_id": task_id}
    try:
        _client().submit_exception(exception, info, properties)
    except Exception:
        logger.debug("could not capture a task failure", exc_info=True)


def _process_shutdown(**_: Any) -> None:
    shutdown_all()


def _carried_context(request: Any) -> dict[str, Any] | None:
    """The producer's context from a task request: a header, wherever Celery put it."""
    if request is None:
        return None
    value = getattr(request, HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None) or {}
        value = headers.get(HEADER) if isinstance(headers, dict) else None
    return value if isinstance(value, dict) else None
