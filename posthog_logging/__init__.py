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

Code written for the official SDK (``import posthog``) mostly runs unchanged after
``import posthog_logging as posthog``: its module attributes, ``Posthog``, ``capture``,
``set``, ``alias``, ``group_identify``, ``flush(timeout_seconds=)``, ``join``. Feature
flags stay with the official SDK (:class:`FeatureFlagsNotSupported`); docs/migrating.md
has the whole list.
"""

from __future__ import annotations

import contextlib as _contextlib
import datetime as _dt
import sys as _sys
import types as _types
from collections.abc import Callable, Mapping
from typing import Any

from . import default_client
from ._version import __version__
from .client import Client, Stats
from .compat import OFFICIAL_ONLY_OPTIONS as _OFFICIAL_ONLY_OPTIONS
from .compat import FeatureFlagsNotSupported
from .compat import flags_not_supported as _flags_not_supported
from .compat import note_official_only as _note_official_only
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
    "FeatureFlagsNotSupported",
    "PostHogHandler",
    "Posthog",
    "Stats",
    "UnsafeSpoolDirectory",
    "__version__",
    "add_exception_step",
    "alias",
    "api_key",
    "before_send",
    "capture",
    "capture_exception",
    "capture_exception_code_variables",
    "code_variables_ignore_patterns",
    "code_variables_mask_patterns",
    "configure",
    "context_headers",
    "debug",
    "disable_geoip",
    "disabled",
    "enable_exception_autocapture",
    "feature_enabled",
    "flush",
    "get_all_flags",
    "get_client",
    "get_context_distinct_id",
    "get_context_session_id",
    "get_feature_flag",
    "get_feature_flag_payload",
    "get_tags",
    "group_identify",
    "host",
    "identify_context",
    "join",
    "new_context",
    "on_error",
    "project_api_key",
    "scoped",
    "send",
    "set",
    "set_context_session",
    "set_once",
    "shutdown",
    "super_properties",
    "sync_mode",
    "tag",
]

#: The official SDK's name for :class:`Client`.
Posthog = Client

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
#: The official SDK's name for ``api_key``; wins over it when both are set.
project_api_key: str | None = None
#: Properties added to every event of the default client (``Client(super_properties=)``).
super_properties: dict[str, Any] | None = None
#: ``Client(before_send=)`` of the default client.
before_send: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
#: ``Client(on_error=)`` of the default client.
on_error: Callable[[Exception, list[dict[str, Any]]], object] | None = None
#: Send on the caller's thread (``Client(sync_mode=)``).
sync_mode: bool = False
#: False lets PostHog geolocate the default client's events (``Client(disable_geoip=)``).
disable_geoip: bool = True
#: False sends nothing, as ``disabled = True`` (the official SDK's switch).
send: bool = True
#: Patterns of variable names whose values are masked (None: the default ones).
code_variables_mask_patterns: list[str] | None = None
#: Patterns of variable names left out (None: the default ones).
code_variables_ignore_patterns: list[str] | None = None

# Module attributes of the official SDK that are accepted and ignored (setting one to
# anything but its default says once what to do instead): see OFFICIAL_ONLY_OPTIONS.
personal_api_key: Any = None
secret_key: Any = None
poll_interval: Any = 30
feature_flags_request_timeout_seconds: Any = 3
feature_flags_request_max_retries: Any = 1
enable_local_evaluation: Any = True
flag_definition_cache_provider: Any = None
privacy_mode: Any = False
enable_full_ai_capture: Any = False
metrics: Any = None
traces: Any = None
capture_mode: Any = None
is_server: Any = True
log_captured_exceptions: Any = False
project_root: Any = None
in_app_modules: Any = None
capture_trace_context: Any = False
code_variables_mask_url_credentials: Any = True
code_variables_detect_secrets: Any = True
enable_exception_autocapture_rate_limiting: Any = False
exception_autocapture_bucket_size: Any = 50
exception_autocapture_refill_rate: Any = 10
exception_autocapture_refill_interval_seconds: Any = 10

get_client = default_client.get_client
configure = default_client.configure


def capture(
    event: str,
    properties: Mapping[str, Any] | None = None,
    *,
    distinct_id: Any = None,
    groups: Mapping[str, Any] | None = None,
    timestamp: _dt.datetime | float | str | None = None,
    uuid: str | None = None,
    disable_geoip: bool | None = None,
    send_feature_flags: Any = False,
    flags: Any = None,
) -> str | None:
    """Capture an event with the default client. See :meth:`Client.capture`."""
    return default_client.get_client().capture(
        event,
        properties,
        distinct_id=distinct_id,
        groups=groups,
        timestamp=timestamp,
        uuid=uuid,
        disable_geoip=disable_geoip,
        send_feature_flags=send_feature_flags,
        flags=flags,
    )


def capture_exception(
    exception: BaseException | tuple[Any, Any, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
    *,
    distinct_id: Any = None,
    groups: Mapping[str, Any] | None = None,
    timestamp: _dt.datetime | float | str | None = None,
    uuid: str | None = None,
    disable_geoip: bool | None = None,
    send_feature_flags: Any = False,
    flags: Any = None,
) -> str | None:
    """Capture an exception with the default client. See :meth:`Client.capture_exception`."""
    return default_client.get_client().capture_exception(
        exception,
        properties,
        distinct_id=distinct_id,
        groups=groups,
        timestamp=timestamp,
        uuid=uuid,
        disable_geoip=disable_geoip,
        send_feature_flags=send_feature_flags,
        flags=flags,
    )


def set(
    properties: Mapping[str, Any],
    *,
    distinct_id: Any = None,
    timestamp: _dt.datetime | float | str | None = None,
    uuid: str | None = None,
    disable_geoip: bool | None = None,
) -> str | None:
    """Set person properties with the default client. See :meth:`Client.set`."""
    return default_client.get_client().set(
        properties,
        distinct_id=distinct_id,
        timestamp=timestamp,
        uuid=uuid,
        disable_geoip=disable_geoip,
    )


def set_once(
    properties: Mapping[str, Any],
    *,
    distinct_id: Any = None,
    timestamp: _dt.datetime | float | str | None = None,
    uuid: str | None = None,
    disable_geoip: bool | None = None,
) -> str | None:
    """Set person properties once with the default client. See :meth:`Client.set_once`."""
    return default_client.get_client().set_once(
        properties,
        distinct_id=distinct_id,
        timestamp=timestamp,
        uuid=uuid,
        disable_geoip=disable_geoip,
    )


def alias(
    previous_id: Any,
    distinct_id: Any = None,
    timestamp: _dt.datetime | float | str | None = None,
    uuid: str | None = None,
    disable_geoip: bool | None = None,
) -> str | None:
    """Alias ``previous_id`` to ``distinct_id`` with the default client. See
    :meth:`Client.alias`."""
    return default_client.get_client().alias(
        previous_id, distinct_id, timestamp, uuid, disable_geoip
    )


def group_identify(
    group_type: Any,
    group_key: Any,
    properties: Mapping[str, Any] | None = None,
    timestamp: _dt.datetime | float | str | None = None,
    uuid: str | None = None,
    disable_geoip: bool | None = None,
    distinct_id: Any = None,
) -> str | None:
    """Set a group's properties with the default client. See :meth:`Client.group_identify`."""
    return default_client.get_client().group_identify(
        group_type, group_key, properties, timestamp, uuid, disable_geoip, distinct_id
    )


def flush(timeout: float | None = None, *, timeout_seconds: float | None = None) -> bool:
    """Send what the default client has queued. See :meth:`Client.flush`."""
    client = default_client.existing()
    return True if client is None else client.flush(timeout, timeout_seconds=timeout_seconds)


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop the default client. See :meth:`Client.shutdown`."""
    client = default_client.existing()
    return True if client is None else client.shutdown(timeout)


def join() -> bool:
    """As in the official SDK: send what the default client has queued and stop it
    (:func:`shutdown`)."""
    return shutdown()


# The official SDK's feature flag functions: each raises FeatureFlagsNotSupported.
feature_enabled = _flags_not_supported("feature_enabled")
get_feature_flag = _flags_not_supported("get_feature_flag")
get_feature_flag_result = _flags_not_supported("get_feature_flag_result")
get_feature_flag_payload = _flags_not_supported("get_feature_flag_payload")
get_remote_config_payload = _flags_not_supported("get_remote_config_payload")
get_all_flags = _flags_not_supported("get_all_flags")
get_all_flags_and_payloads = _flags_not_supported("get_all_flags_and_payloads")
evaluate_flags = _flags_not_supported("evaluate_flags")
feature_flag_definitions = _flags_not_supported("feature_flag_definitions")
load_feature_flags = _flags_not_supported("load_feature_flags")
get_feature_flag_evaluation_runtime = _flags_not_supported("get_feature_flag_evaluation_runtime")
get_feature_flag_keys_by_evaluation_runtime = _flags_not_supported(
    "get_feature_flag_keys_by_evaluation_runtime"
)


def add_exception_step(message: str, properties: Mapping[str, Any] | None = None) -> None:
    """Record a step of the current context (of this thread, outside any): the next
    ``$exception`` sent from it carries the steps recorded so far (``$exception_steps``,
    see docs/exceptions.md). An empty message is ignored; never raises."""
    if not isinstance(message, str) or not message:
        return
    with _contextlib.suppress(Exception):  # properties that cannot be copied: left out
        copied = dict(properties) if properties else None
        _current_trail().add(message, properties=copied)


#: Module attributes the default client is made from.
_SETTINGS = frozenset(("api_key", "project_api_key", *default_client.SETTINGS))


class _Module(_types.ModuleType):
    """The package as a module whose switches act when they are set."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "default_client" and not isinstance(value, _types.ModuleType):
            default_client.replace(value)  # as posthog.default_client = Posthog(...)
            return
        super().__setattr__(name, value)
        if name == "enable_exception_autocapture":
            default_client.autocapture_set(bool(value))
        elif name in _SETTINGS:
            default_client.settings_changed()
        elif name in _OFFICIAL_ONLY_OPTIONS:
            _note_official_only(name, value, "posthog_logging.")


_sys.modules[__name__].__class__ = _Module
