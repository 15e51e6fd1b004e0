"""Uncaught exceptions: the ones that end the process, end a thread, or that an asyncio
loop reports because no one retrieved them.

With ``enable_exception_autocapture`` on, three hooks send such an exception as an
``$exception`` event and then do what was done before them:

========================  ==================================  =======  ==============
hook                      ``$exception_source``               level    mechanism type
========================  ==================================  =======  ==============
``sys.excepthook``        ``python.sys_excepthook``           fatal    onuncaughtexception
``threading.excepthook``  ``python.threading_excepthook``     error    onuncaughtexception
asyncio's loop handler    ``python.asyncio_exception_handler`` error   task (callback:
                                                                       onuncaughtexception)
========================  ==================================  =======  ==============

always with ``handled: false``, as PostHog's SDK specification names them. The process
hook only queues the event: the exit hook of :mod:`posthog_logging.delivery.lifecycle`
sends it on the way out, within ``shutdown_timeout``.

Only errors are sent (``Exception``): ``KeyboardInterrupt`` and ``SystemExit`` are how
programs stop, and an interactive session's typos are no one's issue.

**Installing and removing.** Each client that asks registers itself here, the newest
first; the hooks send to the newest that is still running. The hooks are installed once,
each wrapping what was there before. Removing the last client puts the previous hook
back when ours is still the one installed; when another library has wrapped ours since,
ours stays in its chain and only passes exceptions on (taking it out would cut theirs).
A forked child keeps the hooks, and its client sends from the child.

asyncio has no global hook: ``BaseEventLoop.call_exception_handler`` is wrapped, which
every loop of the standard library calls, whatever handler the application set. Loops
that do not derive from it (uvloop's) are not covered; their handler can call
:func:`capture_loop_exception`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .diagnostics import logger
from .events import ExceptionInfo

__all__ = ["Target", "capture_loop_exception", "install", "installed", "remove"]

PROCESS = ExceptionInfo(
    mechanism_type="onuncaughtexception",
    handled=False,
    level="fatal",
    source="python.sys_excepthook",
)
THREAD = ExceptionInfo(
    mechanism_type="onuncaughtexception",
    handled=False,
    level="error",
    source="python.threading_excepthook",
)
LOOP_TASK = ExceptionInfo(
    mechanism_type="task",
    handled=False,
    level="error",
    source="python.asyncio_exception_handler",
)
LOOP_CALLBACK = ExceptionInfo(
    mechanism_type="onuncaughtexception",
    handled=False,
    level="error",
    source="python.asyncio_exception_handler",
)


class Target(Protocol):
    """What the hooks send to: a :class:`~posthog_logging.Client`."""

    def submit_exception(
        self,
        exception: BaseException | None,
        info: ExceptionInfo,
        properties: Mapping[str, Any] | None = None,
    ) -> str | None: ...


Resolver = Callable[[], "Target | None"]

#: Who asked, newest last: a resolver gives the target, or None once it is gone.
_targets: list[tuple[object, Resolver]] = []
_lock = threading.Lock()


def install(client: Target, resolve: Resolver | None = None) -> None:
    """Send uncaught exceptions to ``client`` (by ``resolve()``, when given: the default
    client resolves to whichever is current when an exception arrives)."""
    if resolve is None:
        ref = weakref.ref(client)
        resolve = ref
    with _lock:
        _targets[:] = [(key, r) for key, r in _targets if key is not client]
        _targets.append((client, resolve))
        _install_hooks()


def remove(client: object) -> None:
    """Stop sending to ``client``; the hooks go when no one is left."""
    with _lock:
        before = len(_targets)
        _targets[:] = [(key, r) for key, r in _targets if key is not client]
        if before and not _targets:
            _remove_hooks()


def installed() -> bool:
    """Whether some client receives uncaught exceptions now."""
    return bool(_targets)


def _target() -> Target | None:
    for _, resolve in reversed(list(_targets)):
        target = resolve()
        if target is not None:
            return target
    return None


def _capture(
    exc: BaseException | None, info: ExceptionInfo, properties: dict[str, Any] | None = None
) -> None:
    """Send ``exc`` to the newest client. Never raises: a hook must always go on to the
    previous one."""
    if not isinstance(exc, Exception):
        return
    try:
        target = _target()
        if target is not None:
            target.submit_exception(exc, info, properties)
    except Exception:
        with contextlib.suppress(Exception):
            logger.debug("could not capture an uncaught exception", exc_info=True)


class _ProcessHook:
    """``sys.excepthook``: capture, then the hook that was there before."""

    def __init__(self, previous: Callable[..., Any]) -> None:
        self.previous = previous

    def __call__(
        self,
        exc_type: type[BaseException],
        exc: BaseException,
        tb: types.TracebackType | None,
    ) -> Any:
        if _targets and not hasattr(sys, "ps1"):  # ps1: an interactive session
            _capture(exc, PROCESS)
        return self.previous(exc_type, exc, tb)


class _ThreadHook:
    """``threading.excepthook``: capture, then the hook that was there before."""

    def __init__(self, previous: Callable[[Any], Any]) -> None:
        self.previous = previous

    def __call__(self, args: Any) -> Any:
        if _targets:
            thread = getattr(args, "thread", None)
            name = getattr(thread, "name", None)
            _capture(args.exc_value, THREAD, {"thread_name": name} if name else None)
        return self.previous(args)


def capture_loop_exception(context: Mapping[str, Any]) -> None:
    """Send the exception of an asyncio exception-handler ``context``, if it has one:
    for a loop's handler to call when the loop is not one the hook reaches."""
    exc = context.get("exception")
    if not isinstance(exc, Exception) or not _targets:
        return
    task = context.get("task") or context.get("future")
    properties: dict[str, Any] = {}
    message = context.get("message")
    if isinstance(message, str):
        properties["asyncio_message"] = message
    get_name = getattr(task, "get_name", None)
    if callable(get_name):
        with contextlib.suppress(Exception):
            properties["asyncio_task"] = get_name()
    _capture(exc, LOOP_TASK if task is not None else LOOP_CALLBACK, properties or None)


def _loop_hook(previous: Callable[..., Any]) -> Callable[..., Any]:
    """A ``call_exception_handler`` method: capture, then the method that was there."""

    def call_exception_handler(self: Any, context: dict[str, Any]) -> Any:
        capture_loop_exception(context)
        return previous(self, context)

    return call_exception_handler


_process_hook: _ProcessHook | None = None
_thread_hook: _ThreadHook | None = None
#: Our ``call_exception_handler``, and the one it wraps.
_loop_method: Callable[..., Any] | None = None
_loop_previous: Callable[..., Any] | None = None


def _install_hooks() -> None:
    global _process_hook, _thread_hook, _loop_method, _loop_previous
    if sys.excepthook is not _process_hook:
        _process_hook = _ProcessHook(sys.excepthook)
        sys.excepthook = _process_hook
    if threading.excepthook is not _thread_hook:
        _thread_hook = _ThreadHook(threading.excepthook)
        threading.excepthook = _thread_hook
    import asyncio  # here: an application that never uses it does not pay for its import

    loop_class: Any = asyncio.BaseEventLoop
    if loop_class.call_exception_handler is not _loop_method:
        _loop_previous = loop_class.call_exception_handler
        _loop_method = _loop_hook(loop_class.call_exception_handler)
        loop_class.call_exception_handler = _loop_method


def _remove_hooks() -> None:
    """Put back what was there, where ours is still on top. A hook of ours that another
    was installed over stays in the chain and passes everything on (``_targets`` is
    empty)."""
    global _process_hook, _thread_hook, _loop_method, _loop_previous
    if _process_hook is not None and sys.excepthook is _process_hook:
        sys.excepthook = _process_hook.previous
        _process_hook = None
    if _thread_hook is not None and threading.excepthook is _thread_hook:
        threading.excepthook = _thread_hook.previous
        _thread_hook = None
    asyncio = sys.modules.get("asyncio")
    loop_class: Any = getattr(asyncio, "BaseEventLoop", None)
    if (
        _loop_method is None
        or getattr(loop_class, "call_exception_handler", None) is not _loop_method
    ):
        return
    loop_class.call_exception_handler = _loop_previous
    _loop_method = _loop_previous = None
