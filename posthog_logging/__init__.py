"""posthog-logging: log it once, see it in PostHog.

Turns an application's own logging into PostHog product analytics (marked records
become events), error tracking (logged exceptions become ``$exception`` events), with
contexts that carry identity, session and tags to every event::

    import logging
    import posthog_logging as posthog

    posthog.api_key = "phc_..."
    logging.getLogger().addHandler(posthog.PostHogHandler())

    with posthog.new_context():
        posthog.identify_context("user_123")
        logging.getLogger(__name__).info("page_viewed", extra={"event": True, "page": "/"})

The module-level functions act on a default client built on first use from
``configure(...)``, the module attributes below, or the environment.
"""

from __future__ import annotations

import contextlib as _contextlib
import datetime as _dt
import sys as _sys
import types as _types
from collections.abc import Mapping
from typing import Any

from . import default_client
from ._version import __version__
from .client import Client, Stats
from .contexts import (
    current_trail as _current_trail,
)
from .contexts import (
    get_context_distinct_id,
    get_context_session_id,
    get_tags,
    identify_context,
    new_context,
    scoped,
    set_context_session,
    tag,
)
from .exceptions import DeliveryError, UnsafeSpoolDirectory
from .propagation import context_headers
from .stdlib import ContextFilter, PostHogHandler

__all__ = [
    "Client",
    "ContextFilter",
    "DeliveryError",
    "PostHogHandler",
    "Stats",
    "UnsafeSpoolDirectory",
    "__version__",
    "add_exception_step",
    "api_key",
    "capture",
    "capture_exception",
    "capture_exception_code_variables",
    "configure",
    "context_headers",
    "debug",
    "disabled",
    "enable_exception_autocapture",
    "flush",
    "get_client",
    "get_context_distinct_id",
    "get_context_session_id",
    "get_tags",
    "host",
    "identify_context",
    "new_context",
    "scoped",
    "set",
    "set_context_session",
    "set_once",
    "shutdown",
    "tag",
]

#: Project API key for the default client (else ``POSTHOG_API_KEY``).
api_key: str | None = None
#: PostHog host for the default client (else ``POSTHOG_HOST``, else PostHog US cloud).
host: str | None = None
#: Log what the default client does at DEBUG level.
debug: bool = False
#: Send nothing from the default client.
disabled: bool = False
#: Send uncaught exceptions (of the process, of threads, of asyncio tasks) with the
#: default client; takes effect when set (docs/exceptions.md).
enable_exception_autocapture: bool = False
#: Send the local variables of the application's frames with exceptions (masked).
capture_exception_code_variables: bool = False

get_client = default_client.get_client
configure = default_client.configure


def capture(
    event: str,
    properties: Mapping[str, Any] | None = None,
    *,
    distinct_id: Any = None,
    groups: Mapping[str, Any] | None = None,
    timestamp: _dt.datetime | float | None = None,
    uuid: str | None = None,
) -> str | None:
    """Capture an event with the default client. See :meth:`Client.capture`."""
    return default_client.get_client().capture(
        event, properties, distinct_id=distinct_id, groups=groups, timestamp=timestamp, uuid=uuid
    )


def capture_exception(
    exception: BaseException | None = None,
    properties: Mapping[str, Any] | None = None,
    *,
    distinct_id: Any = None,
) -> str | None:
    """Capture an exception with the default client. See :meth:`Client.capture_exception`."""
    return default_client.get_client().capture_exception(
        exception, properties, distinct_id=distinct_id
    )


def set(properties: Mapping[str, Any], *, distinct_id: Any = None) -> str | None:
    """Set person properties with the default client. See :meth:`Client.set`."""
    return default_client.get_client().set(properties, distinct_id=distinct_id)


def set_once(properties: Mapping[str, Any], *, distinct_id: Any = None) -> str | None:
    """Set person properties once with the default client. See :meth:`Client.set_once`."""
    return default_client.get_client().set_once(properties, distinct_id=distinct_id)


def flush(timeout: float | None = None) -> bool:
    """Send what the default client has queued. See :meth:`Client.flush`."""
    client = default_client.existing()
    return True if client is None else client.flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop the default client. See :meth:`Client.shutdown`."""
    client = default_client.existing()
    return True if client is None else client.shutdown(timeout)


def add_exception_step(message: str, properties: Mapping[str, Any] | None = None) -> None:
    """Record a step of the current context (of this thread, outside any): the next
    ``$exception`` sent from it carries the steps recorded so far (``$exception_steps``,
    see docs/exceptions.md). An empty message is ignored; never raises."""
    if not isinstance(message, str) or not message:
        return
    with _contextlib.suppress(Exception):  # properties that cannot be copied: left out
        copied = dict(properties) if properties else None
        _current_trail().add(message, properties=copied)


class _Module(_types.ModuleType):
    """The package as a module whose switches act when they are set."""

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "enable_exception_autocapture":
            default_client.autocapture_set(bool(value))


_sys.modules[__name__].__class__ = _Module
