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

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from . import default_client
from ._version import __version__
from .client import Client, Stats
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
from .stdlib import ContextFilter, PostHogHandler

__all__ = [
    "Client",
    "ContextFilter",
    "DeliveryError",
    "PostHogHandler",
    "Stats",
    "UnsafeSpoolDirectory",
    "__version__",
    "api_key",
    "capture",
    "capture_exception",
    "configure",
    "debug",
    "disabled",
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
