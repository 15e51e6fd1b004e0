"""The lives of senders: the registry of live ones, the exit hook, the fork hooks, and the
one way to send every client's batches somewhere else (for tests).

- **At interpreter exit** an ``atexit`` hook shuts every live sender down, each within its
  client's ``shutdown_timeout``.
- **After a fork**, each sender in the child starts empty (the parent's items are the
  parent's to send). ``multiprocessing`` ends its forked children with ``os._exit()``, so
  ``atexit`` never runs there; its own exit handlers do, and the fork hook registers the
  exit hook with them.
- :func:`redirected` makes every sender, live or made meanwhile, send through a given
  transport, as OpenTelemetry's in-memory exporter is given to its processor:
  :func:`posthog_logging.testing.capture_events` records that way.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import weakref
from collections.abc import Iterator

from .sender import Sender
from .transport import Transport

__all__ = ["live", "redirected", "redirection", "register", "shutdown_all"]

_live: weakref.WeakSet[Sender] = weakref.WeakSet()
_originals: weakref.WeakKeyDictionary[Sender, Transport] = weakref.WeakKeyDictionary()
_redirection: list[Transport] = []  # the innermost redirected() is last


def register(sender: Sender) -> None:
    """Count ``sender`` among the live ones (shut down at exit, reset after a fork); it
    sends through the current redirection, if any."""
    _live.add(sender)
    if _redirection:
        _originals[sender] = sender.transport
        sender.use_transport(_redirection[-1])


def live() -> list[Sender]:
    """The live senders."""
    return list(_live)


def redirection() -> Transport | None:
    """The transport every sender sends through now, if :func:`redirected` says so."""
    return _redirection[-1] if _redirection else None


@contextlib.contextmanager
def redirected(transport: Transport) -> Iterator[Transport]:
    """Within the block, every sender (live, or made meanwhile) sends through
    ``transport``; afterwards each goes back to its own (or to an enclosing block's)."""
    _redirection.append(transport)
    for sender in live():
        _originals.setdefault(sender, sender.transport)
        sender.use_transport(transport)
    try:
        yield transport
    finally:
        _redirection.remove(transport)
        enclosing = redirection()
        for sender in live():
            if enclosing is not None:
                sender.use_transport(enclosing)
            elif (original := _originals.pop(sender, None)) is not None:
                sender.use_transport(original)


def shutdown_all() -> None:
    """Shut every live sender down, each within its own deadline (the exit hook)."""
    for sender in live():
        with contextlib.suppress(Exception):  # never fail interpreter exit
            sender.shutdown(sender.shutdown_timeout)


def _after_fork_in_child() -> None:
    for sender in live():
        sender.after_fork_in_child()
    # multiprocessing ends its forked children with os._exit(), so atexit never runs in
    # them; its own exit handlers do. They are cleared right after the fork, so register
    # ours from one of its after-fork callbacks, which run once they have been.
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(shutdown_all, _flush_at_multiprocessing_exit)


def _flush_at_multiprocessing_exit(_: object) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, shutdown_all, exitpriority=0)


atexit.register(shutdown_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
