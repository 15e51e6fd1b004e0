"""Exceptions as PostHog error tracking wants them: the ``$exception_list`` format.

Work is split in two so that the application's thread does as little as possible:

- :func:`snapshot_exception` runs where the exception is caught. It walks the chain
  (``__cause__``, ``__context__``, exception groups) and each traceback, keeping only
  plain, picklable data: names, messages, file names and line numbers, and, when asked,
  the local variables of the application's frames (:mod:`posthog_logging.code_variables`),
  which could change once the caller goes on. No file is read.
- :func:`build_exception_list` runs on the sender thread. It adds source context
  (5 lines each side, read through :mod:`linecache`), module-relative file names and
  ``in_app``, and produces the list PostHog expects: the exception that was caught
  first, the root cause last, frames outermost first and the raise site last.

:func:`mark_captured` is the single rule behind "one exception object is captured once",
however many contexts it crosses and however many times it is logged.
:func:`synthetic_exception` makes one for an error logged without an exception, and
:func:`exception_key` / :func:`chain_key` say which exceptions are "the same" for flood
control.
"""

from __future__ import annotations

import contextlib
import hashlib
import linecache
import os
import sys
import sysconfig
import traceback
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from .code_variables import VariableRules, take_variables

__all__ = [
    "ExceptionSnapshot",
    "FrameSnapshot",
    "InAppRules",
    "build_exception_list",
    "chain_key",
    "exception_key",
    "mark_captured",
    "message_fingerprint",
    "snapshot_exception",
    "synthetic_exception",
]

CONTEXT_LINES = 5
MAX_EXCEPTIONS = 32
MAX_FRAMES = 100
MAX_VALUE_LENGTH = 8_192
MAX_TYPE_LENGTH = 200

_CAPTURED_ATTR = "__posthog_captured__"


def mark_captured(exc: BaseException) -> bool:
    """Mark ``exc`` as captured. False if it already was (so: do not send it again).

    Never raises: an exception whose ``__getattr__`` or ``__setattr__`` fails counts as
    not captured yet.
    """
    with contextlib.suppress(Exception):
        if getattr(exc, _CAPTURED_ATTR, False) is True:
            return False
    with contextlib.suppress(Exception):  # a type with __slots__ and no __dict__, say
        setattr(exc, _CAPTURED_ATTR, True)
    return True


@dataclass(frozen=True)
class FrameSnapshot:
    """One traceback frame, as plain data."""

    abs_path: str
    lineno: int
    function: str
    module: str | None
    variables: Mapping[str, Any] | None = None
    """Its local variables, taken where the exception was caught (``code_variables``)."""


@dataclass(frozen=True)
class ExceptionSnapshot:
    """One exception of a chain, as plain data (picklable, no live objects)."""

    type: str
    value: str
    module: str | None
    frames: tuple[FrameSnapshot, ...]
    exception_id: int
    parent_id: int | None
    source: str | None
    """How it hangs off its parent: ``cause``, ``context`` or ``member``."""
    is_exception_group: bool
    synthetic: bool = False
    """Made by the library (an error logged without an exception), not raised."""


def _safe_str(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = f"<exception str() failed: {type(exc).__name__}>"
    return text if len(text) <= MAX_VALUE_LENGTH else text[:MAX_VALUE_LENGTH] + "..."


def _attribute(exc: BaseException, name: str, default: Any) -> Any:
    """An attribute of an exception, or ``default`` when reading it fails: an exception
    type may override anything, ``__cause__`` and ``__traceback__`` included."""
    try:
        return getattr(exc, name, default)
    except Exception:
        return default


def _walk(exc: BaseException) -> list[tuple[types.FrameType, int]]:
    """The frames of ``exc``'s traceback with their line numbers, outermost first."""
    tb = _attribute(exc, "__traceback__", None)
    if not isinstance(tb, types.TracebackType):
        return []
    walked = [(frame, lineno or 0) for frame, lineno in traceback.walk_tb(tb)]
    if len(walked) > MAX_FRAMES:  # e.g. RecursionError: keep both ends
        half = MAX_FRAMES // 2
        walked = walked[:half] + walked[-half:]
    return walked


def _frame_snapshot(frame: types.FrameType, lineno: int) -> FrameSnapshot:
    return FrameSnapshot(
        abs_path=frame.f_code.co_filename,
        lineno=lineno,
        function=frame.f_code.co_name,
        module=frame.f_globals.get("__name__"),
    )


def snapshot_exception(
    exc: BaseException,
    *,
    variables: VariableRules | None = None,
    in_app: InAppRules | None = None,
) -> tuple[ExceptionSnapshot, ...]:
    """The chain of ``exc`` as plain data: ``exc`` first, the root cause last.

    With ``variables``, the local variables of each frame in the app (by ``in_app``) are
    taken too, now: their values may change once the caller goes on.

    Never raises: what cannot be read of an exception (an attribute whose property fails)
    is left out."""
    out: list[ExceptionSnapshot] = []
    live: list[list[tuple[types.FrameType, int]]] = []
    seen: set[int] = set()

    def visit(e: BaseException, parent_id: int | None, source: str | None) -> None:
        if id(e) in seen or len(out) >= MAX_EXCEPTIONS:
            return
        seen.add(id(e))
        cls = type(e)
        module = cls.__module__
        # Also matches the `exceptiongroup` backport used on Python 3.10.
        is_group = any(c.__name__ == "BaseExceptionGroup" for c in cls.__mro__)
        this_id = len(out)
        walked = _walk(e)
        live.append(walked)
        out.append(
            ExceptionSnapshot(
                type=cls.__qualname__,
                value=_safe_str(e),
                module=None if module == "builtins" else module,
                frames=tuple(_frame_snapshot(frame, lineno) for frame, lineno in walked),
                exception_id=this_id,
                parent_id=parent_id,
                source=source,
                is_exception_group=is_group,
            )
        )
        cause = _attribute(e, "__cause__", None)
        context = _attribute(e, "__context__", None)
        if isinstance(cause, BaseException):
            visit(cause, this_id, "cause")
        elif isinstance(context, BaseException) and not _attribute(
            e, "__suppress_context__", False
        ):
            visit(context, this_id, "context")
        if is_group:
            subs = _attribute(e, "exceptions", ())
            for sub in subs if isinstance(subs, (tuple, list)) else ():
                if isinstance(sub, BaseException):
                    visit(sub, this_id, "member")

    visit(exc, None, None)
    if variables is not None:
        with contextlib.suppress(Exception):  # never lose the exception for its locals
            return _with_variables(out, live, variables, in_app or InAppRules())
    return tuple(out)


def _with_variables(
    chain: list[ExceptionSnapshot],
    live: list[list[tuple[types.FrameType, int]]],
    rules: VariableRules,
    in_app: InAppRules,
) -> tuple[ExceptionSnapshot, ...]:
    """``chain`` with the locals of its in-app frames. One budget (bytes and time) for
    all of them, spent on the frames nearest each raise site first."""
    wanted: list[tuple[int, int]] = []  # (exception, frame) positions, in budget order
    for i, snap in enumerate(chain):
        for j in range(len(snap.frames) - 1, -1, -1):
            if in_app(snap.frames[j]):
                wanted.append((i, j))
    if not wanted:
        return tuple(chain)
    taken = take_variables([live[i][j][0] for i, j in wanted], rules)
    frames = [list(snap.frames) for snap in chain]
    for (i, j), values in zip(wanted, taken, strict=False):
        if values:
            frames[i][j] = replace(frames[i][j], variables=values)
    return tuple(replace(snap, frames=tuple(f)) for snap, f in zip(chain, frames, strict=True))


def synthetic_exception(
    type_name: str,
    message: str,
    where: tuple[str, int, str] | None,
    module: str | None = None,
) -> tuple[ExceptionSnapshot, ...]:
    """An exception the library makes for an error logged without one: ``type_name``
    (cut to 200 characters), ``message`` as its value, and where it was logged (file,
    line, function) as its one frame."""
    frames: tuple[FrameSnapshot, ...] = ()
    if where is not None:
        path, lineno, function = where
        frames = (FrameSnapshot(abs_path=path, lineno=lineno, function=function, module=module),)
    if len(type_name) > MAX_TYPE_LENGTH:
        type_name = type_name[: MAX_TYPE_LENGTH - 3] + "..."
    if len(message) > MAX_VALUE_LENGTH:
        message = message[:MAX_VALUE_LENGTH] + "..."
    return (
        ExceptionSnapshot(
            type=type_name,
            value=message,
            module=None,
            frames=frames,
            exception_id=0,
            parent_id=None,
            source=None,
            is_exception_group=False,
            synthetic=True,
        ),
    )


def message_fingerprint(logger_name: str | None, template: str) -> str:
    """``$exception_fingerprint`` of an error logged without an exception: one per logger
    and message template, whatever the arguments (32 hex digits)."""
    text = f"{logger_name or ''}\x00{template}"
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


def exception_key(exc: BaseException) -> str:
    """What makes two exceptions the same for flood control: their type and where the
    innermost frame was when it was raised. Cheap: no snapshot is taken."""
    cls = type(exc)
    tb = _attribute(exc, "__traceback__", None)
    where = ""
    if isinstance(tb, types.TracebackType):
        while tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
    return f"{cls.__module__}.{cls.__qualname__}@{where}"


def chain_key(chain: tuple[ExceptionSnapshot, ...]) -> str:
    """:func:`exception_key` of a snapshot's first exception. For a synthetic one, the
    line that logged it: an f-string message makes a new "type" at every call, but it is
    still the same error."""
    first = chain[0]
    where = ""
    if first.frames:
        last = first.frames[-1]
        where = f"{last.abs_path}:{last.lineno}"
    if first.synthetic and where:
        return f"logged@{where}"
    return f"{first.module or 'builtins'}.{first.type}@{where}"


@dataclass(frozen=True)
class InAppRules:
    """Which frames are the application's own (``in_app``).

    A frame is in the app unless its file lives in the standard library or under
    ``site-packages``/``dist-packages``. Module prefixes in ``include`` force a frame in,
    prefixes in ``exclude`` force it out (``include`` wins).
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __call__(self, frame: FrameSnapshot) -> bool:
        module = frame.module or ""
        if any(_has_prefix(module, p) for p in self.include):
            return True
        if any(_has_prefix(module, p) for p in self.exclude):
            return False
        return not _is_library_path(frame.abs_path)


def _has_prefix(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get("stdlib"), paths.get("platstdlib")}
    return tuple(os.path.normcase(os.path.abspath(r)) + os.sep for r in roots if r)


_LIBRARY_ROOTS = _library_roots()


@lru_cache(maxsize=2048)
def _is_library_path(path: str) -> bool:
    if path.startswith("<"):  # <frozen ...>, <string>, <stdin>
        return "frozen" in path
    parts = path.replace("\\", "/").split("/")
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    return os.path.normcase(os.path.abspath(path)).startswith(_LIBRARY_ROOTS)


@lru_cache(maxsize=2048)
def _relative_filename(path: str) -> str:
    """The path relative to the ``sys.path`` entry it was imported from."""
    if path.startswith("<"):
        return path
    best = ""
    norm = os.path.abspath(path)
    for entry in sys.path:
        root = os.path.abspath(entry or os.getcwd())
        if norm.startswith(root + os.sep) and len(root) > len(best):
            best = root
    return os.path.relpath(norm, best) if best else os.path.basename(norm)


def _source_context(path: str, lineno: int) -> dict[str, Any]:
    lines = linecache.getlines(path)
    if not lines or not 0 < lineno <= len(lines):
        return {}
    index = lineno - 1

    def strip(items: Iterable[str]) -> list[str]:
        return [line.rstrip("\r\n") for line in items]

    return {
        "pre_context": strip(lines[max(0, index - CONTEXT_LINES) : index]),
        "context_line": lines[index].rstrip("\r\n"),
        "post_context": strip(lines[index + 1 : index + 1 + CONTEXT_LINES]),
    }


def _frame_dict(frame: FrameSnapshot, in_app: InAppRules) -> dict[str, Any]:
    out: dict[str, Any] = {
        "platform": "python",
        "filename": _relative_filename(frame.abs_path),
        "abs_path": frame.abs_path,
        "function": frame.function,
        "module": frame.module,
        "lineno": frame.lineno,
        "in_app": in_app(frame),
    }
    out.update(_source_context(frame.abs_path, frame.lineno))
    if frame.variables:
        out["code_variables"] = dict(frame.variables)
    return out


def build_exception_list(
    chain: Iterable[ExceptionSnapshot],
    *,
    mechanism_type: str = "generic",
    handled: bool | None = None,
    in_app: InAppRules | None = None,
) -> list[dict[str, Any]]:
    """The ``$exception_list`` property for a snapshot from :func:`snapshot_exception`.

    As PostHog's SDK specification has it: the first exception's ``mechanism`` says how
    it was caught (``mechanism_type``, ``handled``); the ones chained to it are of type
    ``chained``, with their ``parent_id`` and ``source`` (``cause``, ``context``,
    ``member``) and no ``handled``. ``handled`` None means unknown: the key is then left
    out rather than sent as false.
    """
    rules = in_app or InAppRules()
    result = []
    for snap in chain:
        mechanism: dict[str, Any]
        if snap.parent_id is None:
            mechanism = {"type": mechanism_type, "synthetic": snap.synthetic}
            if handled is not None:
                mechanism["handled"] = handled
        else:
            mechanism = {"type": "chained", "synthetic": snap.synthetic}
        mechanism["exception_id"] = snap.exception_id
        if snap.parent_id is not None:
            mechanism["parent_id"] = snap.parent_id
            mechanism["source"] = snap.source
        if snap.is_exception_group:
            mechanism["is_exception_group"] = True
        result.append(
            {
                "type": snap.type,
                "value": snap.value,
                "module": snap.module,
                "mechanism": mechanism,
                "stacktrace": {
                    "type": "raw",
                    "frames": [_frame_dict(f, rules) for f in snap.frames],
                },
            }
        )
    return result
