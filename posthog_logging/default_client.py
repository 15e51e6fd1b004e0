"""The process-wide default client behind the module-level functions.

Built lazily, on first use, from (in order of precedence) ``configure(...)``, the
module attributes users set (``posthog_logging.api_key = ...`` or, as the official SDK
names it, ``project_api_key``; the other :data:`SETTINGS`; ``disabled``/``send`` and
``enable_exception_autocapture``), then the environment (``POSTHOG_API_KEY``,
``POSTHOG_HOST``). Changing one of the settings later builds a new client for the events
that follow (``disabled`` and ``send`` apply to the current one at its next call).

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
_lazy_key: tuple[Any, ...] | None = None
#: How many times a setting was set (:func:`settings_changed`); the settings are read
#: again when it moved, not at every call.
_generation = 0
_lazy_generation = -1

#: The module attributes a default client is made from, each the Client option of its
#: name (besides the key: ``project_api_key``, else ``api_key``).
SETTINGS = (
    "host",
    "debug",
    "sync_mode",
    "super_properties",
    "before_send",
    "on_error",
    "disable_geoip",
    "capture_exception_code_variables",
    "code_variables_mask_patterns",
    "code_variables_ignore_patterns",
)
#: Default clients made for a configuration that could not make one: never enabled.
_unusable: weakref.WeakSet[Client] = weakref.WeakSet()


def _package() -> Any:
    return sys.modules[__package__]


def settings_changed() -> None:
    """A module attribute of :data:`SETTINGS` (or the key) was set: read them again."""
    global _generation
    _generation += 1


def _settings(pkg: Any) -> tuple[Any, ...]:
    """The key, then the :data:`SETTINGS` in their order (a dict or list copied: the
    client keeps what was set when it was built)."""
    key = pkg.project_api_key if _text(pkg.project_api_key) else pkg.api_key
    values = []
    for name in SETTINGS:
        value = getattr(pkg, name)
        if isinstance(value, dict):
            value = dict(value)
        elif isinstance(value, list):
            value = tuple(value)
        values.append(value)
    return (key, *values)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def get_client() -> Client:
    """The default client, built on first use."""
    global _lazy, _lazy_key, _lazy_generation
    client = _configured
    if client is not None:
        return client
    pkg = _package()
    client = _lazy
    if client is None or _lazy_generation != _generation:
        with _lock:
            generation = _generation
            settings = _settings(pkg)
            if _lazy is None or settings != _lazy_key:
                old = _lazy
                _lazy = _made(settings)
                _lazy_key = settings
                if old is not None:  # send what it holds, without blocking this caller
                    threading.Thread(target=old.shutdown, daemon=True).start()
            _lazy_generation = generation
            client = _lazy
    client.disabled = bool(pkg.disabled) or not pkg.send or client in _unusable
    return client


def _made(settings: tuple[Any, ...]) -> Client:
    """The default client from the module attributes and the environment. A
    configuration that cannot make one (a host without its scheme, say) is said once, as
    an error, and gives a disabled client: the log call that got here must not raise."""
    # Not enable_exception_autocapture: the module attribute installs the hooks itself
    # (autocapture_set), for whichever default client is current.
    options: dict[str, Any] = dict(zip(SETTINGS, settings[1:], strict=True))
    options["debug"] = bool(options["debug"])
    options["sync_mode"] = bool(options["sync_mode"])
    options["capture_exception_code_variables"] = bool(options["capture_exception_code_variables"])
    try:
        return Client(api_key=settings[0], **options)
    except (TypeError, ValueError) as exc:
        logger.error("the default client is not configured right: %s", exc)
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


def replace(client: Client | None) -> None:
    """``posthog_logging.default_client = client`` (as the official SDK lets one set
    ``posthog.default_client``): ``client`` is the default from now on; None forgets the
    default client, which is built again at the next call."""
    global _configured
    if client is None:
        reset()
        return
    if not isinstance(client, Client):
        raise TypeError(f"default_client must be a posthog_logging.Client, got {client!r}")
    with _lock:
        old, _configured = _configured, client
    if old is not None and old is not client:
        old.shutdown()


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
