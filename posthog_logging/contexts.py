"""Contexts: identity, session and tags that follow the code that runs inside them.

A context is an immutable :class:`ContextState` held in a :class:`contextvars.ContextVar`.
Changing it (``tag``, ``identify_context``, ``set_context_session``) replaces the
state in the *current* :mod:`contextvars` context instead of mutating a shared
object. That one rule gives the isolation users expect:

- each thread starts with its own contextvars context, so threads never see
  each other's identity;
- each asyncio task runs in a *copy* of its parent's contextvars context, so a
  tag set inside a task never leaks back into the parent or into sibling tasks;
- leaving a context restores the parent's state exactly (``ContextVar.reset``);
- a forked child process starts outside any context, as with the official SDK: the
  identity of the request its parent was serving is not the child's. (The child gets a
  new ``ContextVar``, so every context it inherited reads as empty, and leaving one that
  was entered before the fork restores nothing.)

This module knows nothing about HTTP or logging. Exceptions leaving a context are
handed to a callback that the package installs (:func:`set_exception_hook`).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, TypeVar, cast

from .diagnostics import Warner, logger
from .held_lines import HeldLines
from .serialisation import as_text
from .steps import StepTrail, thread_trail

__all__ = [
    "ContextState",
    "current_state",
    "current_trail",
    "effective_state",
    "get_context_distinct_id",
    "get_context_session_id",
    "get_tags",
    "identify_context",
    "new_context",
    "scoped",
    "set_context_session",
    "tag",
]


_EMPTY_TAGS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class ContextState:
    """What a context carries. Immutable: a change makes a new state."""

    distinct_id: str | None = None
    session_id: str | None = None
    tags: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_TAGS)
    capture_exceptions: bool = True
    #: Depth of nesting; 0 means "outside any context".
    depth: int = 0
    #: The exception steps of this context and the contexts nested in it (see
    #: :mod:`posthog_logging.steps`); None outside any context, where each thread has its own.
    steps: StepTrail | None = field(default=None, compare=False, repr=False)
    #: The log lines held back until the context fails or ends (see
    #: :mod:`posthog_logging.held_lines`); shared like the steps.
    held: HeldLines | None = field(default=None, compare=False, repr=False)


_ROOT = ContextState()


def _new_state_var() -> contextvars.ContextVar[ContextState]:
    return contextvars.ContextVar("posthog_logging_context", default=_ROOT)


_state = _new_state_var()


def _forget_after_fork() -> None:
    global _state
    _state = _new_state_var()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)

ExceptionHook = Callable[[BaseException], object]
_exception_hook: ExceptionHook | None = None


def set_exception_hook(hook: ExceptionHook | None) -> None:
    """Install the callable that captures an exception leaving a context."""
    global _exception_hook
    _exception_hook = hook


def current_state() -> ContextState:
    """The state of the innermost context here (an empty state outside any context)."""
    return _state.get()


def effective_state() -> ContextState:
    """The context events, exceptions and lines are sent with: the current one, completed
    by the official ``posthog`` SDK's context when that package is in use (its
    ``posthog.new_context()`` / ``identify_context()`` / ``tag()``). Ours win where both
    say: its distinct_id or session only where ours has none, its tags under ours.

    Costs one dictionary look-up when the ``posthog`` package was never imported.
    """
    state = _state.get()
    official = sys.modules.get("posthog.contexts")
    if official is None:
        return state
    try:
        distinct_id = state.distinct_id or _text_or_none(official.get_context_distinct_id())
        session_id = state.session_id or _text_or_none(official.get_context_session_id())
        tags = official.get_tags()
    except Exception:  # another version, or a broken one: ours alone
        return state
    if (
        distinct_id == state.distinct_id
        and session_id == state.session_id
        and not (isinstance(tags, Mapping) and tags)
    ):
        return state
    merged = state.tags
    if isinstance(tags, Mapping) and tags:
        merged = MappingProxyType({**{as_text(k): v for k, v in tags.items()}, **state.tags})
    return dataclasses.replace(state, distinct_id=distinct_id, session_id=session_id, tags=merged)


def _text_or_none(value: Any) -> str | None:
    return as_text(value) or None if value is not None else None


def current_trail() -> StepTrail:
    """The exception steps of the innermost context here (of this thread, outside any)."""
    steps = _state.get().steps
    return thread_trail() if steps is None else steps


def get_context_distinct_id() -> str | None:
    """The distinct_id of the current context, or None."""
    return _state.get().distinct_id


def get_context_session_id() -> str | None:
    """The session id of the current context, or None."""
    return _state.get().session_id


def get_tags() -> dict[str, Any]:
    """A copy of the current context's tags."""
    return dict(_state.get().tags)


_outside = Warner(interval=None)  # once per function, for good


def _replace_inside_context(what: str, **changes: Any) -> None:
    state = _state.get()
    if state.depth == 0:
        # Outside any context there is no scope that could end, so a value set here
        # would stick to the thread (or task) for good and leak into unrelated work,
        # e.g. the next request served by the same worker thread. Ignore it, loudly.
        _outside.warn(
            what,
            "posthog_logging.%s() was called outside new_context()/@scoped and is "
            "ignored; wrap the work in `with posthog_logging.new_context():`",
            what,
        )
        return
    _state.set(_evolve(state, **changes))


def _evolve(state: ContextState, **changes: Any) -> ContextState:
    return dataclasses.replace(state, **changes)


def identify_context(distinct_id: str) -> None:
    """Identify the current context (and the contexts it opens) with ``distinct_id``."""
    value = None if distinct_id is None else as_text(distinct_id)
    _replace_inside_context("identify_context", distinct_id=value or None)


def set_context_session(session_id: str) -> None:
    """Set the session id (sent as ``$session_id``) of the current context."""
    value = None if session_id is None else as_text(session_id)
    _replace_inside_context("set_context_session", session_id=value or None)


def tag(name: str, value: Any) -> None:
    """Add a tag to the current context; it is sent as a property of every event."""
    state = _state.get()
    tags = dict(state.tags)
    tags[as_text(name)] = value
    _replace_inside_context("tag", tags=MappingProxyType(tags))


class new_context:
    """Open a context for the duration of a ``with`` block.

    ``fresh=True`` starts empty instead of inheriting identity, session and tags.
    With ``capture_exceptions=True`` an exception leaving the block is sent once as an
    ``$exception`` event and re-raised unchanged. ``__enter__``/``__exit__`` may be
    called by hand (for request hooks), but each instance is entered once.
    """

    __slots__ = ("_capture_exceptions", "_fresh", "_held", "_parent", "_token")

    def __init__(self, fresh: bool = False, capture_exceptions: bool = True) -> None:
        self._fresh = fresh
        self._capture_exceptions = capture_exceptions
        self._token: contextvars.Token[ContextState] | None = None
        self._parent: ContextState | None = None
        self._held: HeldLines | None = None  # the held lines this context started

    def __enter__(self) -> new_context:
        if self._token is not None:
            raise RuntimeError("this new_context() is already entered; make a new one")
        parent = _state.get()
        base = _ROOT if self._fresh else parent
        # A context shares its parent's steps and held lines (the lines before it led to
        # it too); a fresh one, or the outermost, starts its own.
        steps = base.steps if base.steps is not None else StepTrail()
        held = base.held
        if held is None:
            held = self._held = HeldLines()
        state = _evolve(
            base,
            capture_exceptions=self._capture_exceptions,
            depth=parent.depth + 1,
            steps=steps,
            held=held,
        )
        self._parent = parent
        self._token = _state.set(state)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is None:
            return
        # Only errors: KeyboardInterrupt, SystemExit and task cancellation are control
        # flow, not bugs, and would flood error tracking at every Ctrl-C or timeout.
        if isinstance(exc, Exception) and self._capture_exceptions and _exception_hook is not None:
            # Captured while the context is still current, so the event carries it.
            try:
                _exception_hook(exc)
            except Exception:  # never let telemetry replace the user's exception
                logger.debug("capturing an exception leaving a context failed", exc_info=True)
        held, self._held = self._held, None
        if held is not None and len(held):  # lines held back: needed only if it failed
            try:
                if isinstance(exc, Exception):
                    held.release()
                else:
                    held.discard()
            except Exception:
                logger.debug("sending or counting held log lines failed", exc_info=True)
        token, parent = self._token, self._parent
        self._token = self._parent = None
        if token.var is not _state:
            return  # entered before this process was forked: the child has no such context
        try:
            _state.reset(token)
        except ValueError:
            # Exited in another contextvars context than it was entered in (e.g. request
            # hooks run on different tasks): restore the parent's state there instead.
            assert parent is not None
            _state.set(parent)


class restored:
    """Run a block in a context with ``state`` (taken earlier with :func:`current_state`).

    For work that continues a context after its ``with`` block has ended, such as a
    streaming response produced after the request handler returned.
    """

    __slots__ = ("_state", "_token")

    def __init__(self, state: ContextState) -> None:
        self._state = state
        self._token: contextvars.Token[ContextState] | None = None

    def __enter__(self) -> ContextState:
        self._token = _state.set(self._state)
        return self._state

    def __exit__(self, *exc: object) -> None:
        token, self._token = self._token, None
        if token is not None and token.var is _state:
            _state.reset(token)


F = TypeVar("F", bound=Callable[..., Any])


def scoped(fresh: bool = False, capture_exceptions: bool = True) -> Callable[[F], F]:
    """Decorate a function so that each call runs in its own :class:`new_context`.

    Use it as ``@scoped()`` (or bare ``@scoped``), on plain and ``async`` functions.
    Generator functions are refused with a ``TypeError``: a generator runs in its
    consumer's context between ``yield``\\ s, so a context opened around it would leak
    into the consumer. Open ``new_context()`` around the loop that consumes it instead.
    """

    def decorate(fn: F) -> F:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"@scoped cannot wrap the generator function {fn.__qualname__!r}: a "
                "generator's context would leak into its consumer between yields. "
                "Use `with new_context():` around the code that consumes it."
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with new_context(fresh=fresh, capture_exceptions=capture_exceptions):
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with new_context(fresh=fresh, capture_exceptions=capture_exceptions):
                return fn(*args, **kwargs)

        return cast(F, wrapper)

    if callable(fresh):  # used bare, as @scoped
        fn: Any = fresh
        fresh = False
        return cast(Callable[[F], F], decorate(fn))
    return decorate
