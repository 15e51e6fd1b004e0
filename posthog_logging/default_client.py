"""The process-wide default client behind the module-level functions.

Built lazily, on first use, from (in order of precedence) ``configure(...)``, the
module attributes users set (``posthog_logging.api_key = ...``, ``host``, ``debug``,
``disabled``, ``enable_exception_autocapture``, ``capture_exception_code_variables``),
then the environment (``POSTHOG_API_KEY``, ``POSTHOG_HOST``). Changing ``api_key``,
``host`` or ``capture_exception_code_variables`` later builds a new client for the events
that follow.

``enable_exception_autocapture`` takes effect when it is set (:func:`autocapture_set`):
a script that crashes before it sends anything else still reports the crash.
"""

from __future__ import annotations

import sys
import threading
import weakref
from typing import Any

from . import uncaught
from .client import Client
from .contexts import set_exception_hook
from .delivery.http import DEFAULT_HOST
from .diagnostics import logger
from .events import ExceptionInfo

# Reentrant: a signal handler that captures while this thread builds the client
# must not wait for itself.
_lock = threading.RLock()
_configured: Client | None = None
_lazy: Client | None = None
_lazy_key: tuple[Any, Any, bool] | None = None
#: Default clients made for a configuration that could not make one: never enabled.
_unusable: weakref.WeakSet[Client] = weakref.WeakSet()


def _package() -> Any:
    return sys.modules[__package__]


def get_client() -> Client:
    """The default client, built on first use."""
    global _lazy, _lazy_key
    client = _configured
    if client is not None:
        return client
    pkg = _package()
    key = (pkg.api_key, pkg.host, bool(pkg.capture_exception_code_variables))
    client = _lazy
    if client is None or key != _lazy_key:
        with _lock:
            if _lazy is None or key != _lazy_key:
                old = _lazy
                _lazy = _made(pkg, key[2])
                _lazy_key = key
                if old is not None:  # send what it holds, without blocking this caller
                    threading.Thread(target=old.shutdown, daemon=True).start()
            client = _lazy
    client.disabled = bool(pkg.disabled) or client in _unusable
    return client


def _made(pkg: Any, code_variables: bool) -> Client:
    """The default client from the module attributes and the environment. A
    configuration that cannot make one (a host without its scheme, say) is said once, as
    an error, and gives a disabled client: the log call that got here must not raise."""
    # Not enable_exception_autocapture: the module attribute installs the hooks itself
    # (autocapture_set), for whichever default client is current.
    try:
        return Client(
            api_key=pkg.api_key,
            host=pkg.host,
            debug=bool(pkg.debug),
            capture_exception_code_variables=code_variables,
        )
    except (TypeError, ValueError) as exc:
        logger.error("posthog_logging: the default client is not configured right: %s", exc)
        unusable = Client(disabled=True, host=DEFAULT_HOST)
        _unusable.add(unusable)  # stays disabled, whatever the module attribute says
        return unusable


def existing() -> Client | None:
    """The default client if one was built, without building one."""
    return _configured or _lazy


def configure(**options: Any) -> Client:
    """Replace the default client with ``Client(**options)``; the old one is shut down."""
    global _configured
    client = Client(**options)
    with _lock:
        old, _configured = _configured, client
    if old is not None:
        old.shutdown()
    return client


def adopt(client: Client) -> None:
    """Make ``client`` the default unless ``configure()`` already chose one.

    A :class:`~posthog_logging.PostHogHandler` configured with its own API key (say from
    ``dictConfig``) is adopted, so that contexts and module-level calls use it too.
    """
    global _configured
    with _lock:
        if _configured is None:
            _configured = client


def reset() -> None:
    """Forget the default client (shutting it down). For tests and reconfiguration."""
    global _configured, _lazy, _lazy_key
    with _lock:
        clients = [c for c in (_configured, _lazy) if c is not None]
        _configured = _lazy = _lazy_key = None
    for client in clients:
        client.shutdown()


def _autocapture_target() -> Client | None:
    """The default client, for uncaught exceptions, while the module attribute asks."""
    if not _package().enable_exception_autocapture:
        return None
    return get_client()


def autocapture_set(enabled: bool) -> None:
    """``posthog_logging.enable_exception_autocapture`` was set: install the hooks for
    the default client now (it is built when an exception arrives, if it was not yet), or
    stop sending to it."""
    if enabled:
        uncaught.install(_package(), _autocapture_target)
    else:
        uncaught.remove(_package())


def _capture_leaving_context(exc: BaseException) -> object:
    info = ExceptionInfo(mechanism_type="generic", handled=False, level="error")
    return get_client().submit_exception(exc, info) is not None


set_exception_hook(_capture_leaving_context)
