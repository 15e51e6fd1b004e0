"""The official SDK's API, where this library differs from it: one place for what it
accepts and leaves alone.

Code written for the official ``posthog`` package runs after
``import posthog_logging as posthog`` (docs/migrating.md). Its options that have no
meaning here (feature flags, LLM analytics, ...) are accepted, and said once, as a
warning, with what to do instead (:data:`OFFICIAL_ONLY_OPTIONS`, :func:`note_official_only`);
its feature flag functions raise :class:`FeatureFlagsNotSupported`. The client and the
package's module use what is here; nothing here knows either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from .diagnostics import Warner

__all__ = [
    "FEATURE_FLAG_METHODS",
    "OFFICIAL_ONLY_OPTIONS",
    "FeatureFlagsNotSupported",
    "flags_method",
    "flags_not_supported",
    "note_flag_arguments",
    "note_official_only",
]

_FLAGS_ADVICE = (
    "feature flags stay with the official SDK: keep a posthog.Posthog client for them "
    "beside this library (docs/migrating.md)"
)

#: Options of the official SDK (``posthog.Posthog(...)`` and the ``posthog`` module
#: attributes) that this library accepts but does not act on: the values that change
#: nothing (its defaults), and what to do instead. Any other value is said once, as a
#: warning, per option and process.
OFFICIAL_ONLY_OPTIONS: dict[str, tuple[tuple[Any, ...], str]] = {
    **{
        name: (defaults, _FLAGS_ADVICE)
        for name, defaults in (
            ("personal_api_key", (None,)),
            ("secret_key", (None,)),
            ("poll_interval", (30,)),
            ("feature_flags_request_timeout_seconds", (3,)),
            ("feature_flags_request_max_retries", (1,)),
            ("enable_local_evaluation", (True,)),
            ("flag_definition_cache_provider", (None,)),
            ("flag_fallback_cache_url", (None,)),
        )
    },
    "privacy_mode": ((False,), "LLM analytics stay with the official SDK"),
    "enable_full_ai_capture": ((False,), "LLM analytics stay with the official SDK"),
    "metrics": ((None,), "metrics stay with the official SDK"),
    "traces": ((None,), "tracing stays with the official SDK (or OpenTelemetry)"),
    "capture_mode": ((None,), "events are sent to /batch/"),
    "capture_compression": ((None,), "use gzip=True or False"),
    "thread": ((1,), "one sender thread sends everything"),
    "historical_migration": ((False,), "not supported"),
    "app_host": ((None,), "not needed"),
    "email_request_timeout_seconds": ((15,), "emails stay with the official SDK"),
    "email_request_max_retries": ((2,), "emails stay with the official SDK"),
    "migrated_from": ((None,), "not needed"),
    "is_server": (
        (True,),
        "events are always sent with $is_server: true; set it in before_send to change it",
    ),
    "log_captured_exceptions": (
        (False,),
        "log the exception yourself (logger.exception(...)); this library sends what is "
        "logged, not the other way round",
    ),
    "project_root": ((None,), "use in_app_include / in_app_exclude (module prefixes)"),
    "in_app_modules": ((None,), "use in_app_include=[...] (module prefixes)"),
    "capture_trace_context": (
        (False, True),
        "$trace_id and $span_id are always sent from inside an OpenTelemetry span",
    ),
    "code_variables_mask_url_credentials": (
        (None, True),
        "values are masked by code_variables_mask_patterns and redact_keys",
    ),
    "code_variables_detect_secrets": (
        (None, True),
        "values are masked by code_variables_mask_patterns and redact_keys",
    ),
    "enable_exception_autocapture_rate_limiting": (
        (False, True),
        "exceptions are rate limited by default (exception_rate_limit=True)",
    ),
    "exception_autocapture_bucket_size": ((None, 50), "use exception_bucket_size"),
    "exception_autocapture_refill_rate": ((None, 10), "use exception_refill_rate"),
    "exception_autocapture_refill_interval_seconds": (
        (None, 10, 10.0),
        "use exception_refill_interval",
    ),
}

#: Said once per process: an option of the official SDK, or a feature flag argument.
_official_warner = Warner(interval=None)


def note_official_only(name: str, value: Any, where: str) -> None:
    """``name`` (an option of :data:`OFFICIAL_ONLY_OPTIONS`) was given ``value``
    (``where`` is said before the name): say once that it is ignored, and what to do
    instead, unless it is a value that changes nothing."""
    defaults, advice = OFFICIAL_ONLY_OPTIONS[name]
    try:
        harmless = any(value is d or (type(value) is type(d) and value == d) for d in defaults)
    except Exception:  # a value whose == raises is not a default
        harmless = False
    if not harmless:
        _official_warner.warn(name, "%s%s is ignored: %s", where, name, advice)


def note_flag_arguments(send_feature_flags: Any, flags: Any) -> None:
    """``capture(send_feature_flags=..., flags=...)``: said once that they are ignored."""
    if send_feature_flags or flags is not None:
        _official_warner.warn(
            "capture_flags",
            "capture(send_feature_flags=/flags=) is ignored: events carry no feature flags; %s",
            _FLAGS_ADVICE,
        )


class FeatureFlagsNotSupported(NotImplementedError):
    """Raised by the feature flag methods of the official SDK's API (``feature_enabled``,
    ``get_feature_flag``, ...): this library does not evaluate feature flags. Keep the
    official SDK's client for them, beside this library (docs/migrating.md)."""

    def __init__(self, method: str) -> None:
        super().__init__(
            f"posthog_logging does not evaluate feature flags ({method}()): keep the "
            "official SDK for them and run both side by side: "
            "flags = posthog.Posthog('phc_...', host=...) for flags, posthog_logging for "
            "logs, events and exceptions (see docs/migrating.md)"
        )
        self.method = method


#: The feature flag methods of the official SDK (on its module and its client).
FEATURE_FLAG_METHODS = (
    "feature_enabled",
    "get_feature_flag",
    "get_feature_flag_result",
    "get_feature_flag_payload",
    "get_remote_config_payload",
    "get_all_flags",
    "get_all_flags_and_payloads",
    "evaluate_flags",
    "feature_flag_definitions",
    "load_feature_flags",
    "get_feature_variants",
    "get_feature_payloads",
    "get_feature_flags_and_payloads",
    "get_flags_decision",
    "get_feature_flag_evaluation_runtime",
    "get_feature_flag_keys_by_evaluation_runtime",
)


def flags_not_supported(name: str) -> Callable[..., NoReturn]:
    """A stand-in for the feature flag function ``name``: raises
    :class:`FeatureFlagsNotSupported`."""

    def not_supported(*args: Any, **kwargs: Any) -> NoReturn:
        raise FeatureFlagsNotSupported(name)

    not_supported.__name__ = not_supported.__qualname__ = name
    not_supported.__doc__ = f"Not supported: raises :class:`FeatureFlagsNotSupported` ({name})."
    return not_supported


def flags_method(name: str) -> Callable[..., NoReturn]:
    """The same, as a method of the client."""

    def not_supported(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
        raise FeatureFlagsNotSupported(name)

    not_supported.__name__ = name
    not_supported.__qualname__ = f"Client.{name}"
    not_supported.__doc__ = f"Not supported: raises :class:`FeatureFlagsNotSupported` ({name})."
    return not_supported
