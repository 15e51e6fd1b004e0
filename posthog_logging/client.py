"""The client: its options, the capture API, and the gate every record passes.

``capture()`` and its siblings snapshot the call into a
:class:`~posthog_logging.events.PendingEvent` (the front-ends make their own, and
:class:`~posthog_logging.otlp.PendingLog` lines, and hand them over with
:meth:`Client.submit`). The gate counts what it turns away; what it lets through goes to
the client's :class:`~posthog_logging.delivery.sender.Sender`, which builds records on its
own thread with the client's builders and delivers them. That is all the caller pays for.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import contexts, uncaught
from .code_variables import DEFAULT_IGNORE_PATTERNS, DEFAULT_MASK_PATTERNS, VariableRules
from .compat import (
    OFFICIAL_ONLY_OPTIONS,
    flags_method,
    note_flag_arguments,
    note_official_only,
)
from .contexts import ContextState, current_trail, effective_state
from .delivery import lifecycle
from .delivery.http import DEFAULT_HOST, HTTPTransport
from .delivery.kinds import EVENTS, LOGS, Kind, resource_attributes
from .delivery.retry import RetryPolicy
from .delivery.sender import Sender
from .delivery.spool import Spool
from .delivery.stats import Stats
from .delivery.transport import Transport
from .diagnostics import Warner, logger
from .error_tracking import (
    InAppRules,
    chain_key,
    exception_key,
    mark_captured,
    snapshot_exception,
)
from .events import DroppedEvent, EventBuilder, ExceptionInfo, PendingEvent, choose_distinct_id
from .flags import parse_flag
from .flood_control import (
    DEFAULT_BUCKET_SIZE,
    DEFAULT_REFILL_INTERVAL,
    DEFAULT_REFILL_RATE,
    ExceptionRateLimiter,
)
from .ids import checked_uuid, event_time, uuid_for
from .otlp import LogBuilder, PendingLog
from .serialisation import DEFAULT_REDACT_KEYS, Redactor
from .steps import StepTrail
from .tracing import trace_context

__all__ = ["Client", "Stats"]

OnError = Callable[[Exception, list[dict[str, Any]]], object]

#: ``trace=`` for :meth:`Client.submit_exception`: the span active where it is called.
ACTIVE_SPAN: Any = object()


class Client:
    """Sends events to PostHog. Thread-safe; one per process is usually enough.

    All options are keyword-only except ``api_key`` and ``host``. A missing ``api_key``
    is read from ``POSTHOG_API_KEY`` (or ``POSTHOG_PROJECT_API_KEY``); with none at
    all the client warns once and sends nothing. ``spool_dir`` turns on the disk spool
    (see docs/reliability.md). ``transport`` replaces HTTP with any object that
    implements :class:`~posthog_logging.delivery.Transport` (tests use an in-memory one).

    Written for the official SDK (``posthog_logging.Posthog`` is this class):
    ``project_api_key=`` is ``api_key``, ``disable_geoip=False`` lets PostHog geolocate
    the events, ``send=False`` is ``disabled=True``; its other options
    (:data:`OFFICIAL_ONLY_OPTIONS`: feature flags, LLM analytics, ...) are accepted and
    ignored, with one warning each (docs/migrating.md).
    """

    def __init__(
        self,
        api_key: str | None = None,
        host: str | None = None,
        *,
        flush_at: int = 100,
        flush_interval: float = 0.5,
        max_queue_size: int = 25_000,
        max_queue_bytes: int = 32 * 1024 * 1024,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        gzip: bool = True,
        timeout: float = 10.0,
        max_retries: int = 3,
        sync_mode: bool = False,
        disabled: bool = False,
        debug: bool = False,
        before_send: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
        on_error: OnError | None = None,
        super_properties: Mapping[str, Any] | None = None,
        shutdown_timeout: float = 5.0,
        redact_keys: Iterable[str] | None = DEFAULT_REDACT_KEYS,
        in_app_include: Iterable[str] = (),
        in_app_exclude: Iterable[str] = (),
        service_name: str | None = None,
        service_version: str | None = None,
        environment: str | None = None,
        enable_exception_autocapture: bool = False,
        capture_exception_code_variables: bool = False,
        code_variables_mask_patterns: Iterable[str] | None = None,
        code_variables_ignore_patterns: Iterable[str] | None = None,
        exception_rate_limit: bool = True,
        exception_bucket_size: int = DEFAULT_BUCKET_SIZE,
        exception_refill_rate: float = DEFAULT_REFILL_RATE,
        exception_refill_interval: float = DEFAULT_REFILL_INTERVAL,
        transport: Transport | None = None,
        project_api_key: str | None = None,
        disable_geoip: bool = True,
        send: bool = True,
        **official_options: Any,
    ) -> None:
        for name, value in official_options.items():
            if name not in OFFICIAL_ONLY_OPTIONS:
                raise TypeError(f"Client() got an unexpected keyword argument {name!r}")
            note_official_only(name, value, "the Client() option ")
        if project_api_key is not None and not isinstance(project_api_key, str):
            raise TypeError(f"project_api_key must be a str, got {type(project_api_key).__name__}")
        if project_api_key and project_api_key.strip():
            if api_key and api_key.strip() and api_key.strip() != project_api_key.strip():
                raise ValueError("api_key and project_api_key differ: give one of them")
            api_key = project_api_key
        geoip = not parse_flag(disable_geoip, "disable_geoip")
        disabled = disabled or not parse_flag(send, "send")
        _check_positive("flush_at", flush_at, integer=True)
        _check_positive("flush_interval", flush_interval)
        _check_positive("max_queue_size", max_queue_size, integer=True)
        _check_positive("max_queue_bytes", max_queue_bytes, integer=True)
        _check_positive("spool_max_bytes", spool_max_bytes, integer=True)
        if spool_dir is not None and not isinstance(spool_dir, (str, os.PathLike)):
            raise TypeError(f"spool_dir must be a path or None, got {spool_dir!r}")
        _check_positive("timeout", timeout)
        _check_positive("shutdown_timeout", shutdown_timeout)
        retry = RetryPolicy(max_retries=max_retries)  # checks max_retries
        for name, hook in (("before_send", before_send), ("on_error", on_error)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable or None, got {hook!r}")
        if super_properties is not None and not isinstance(super_properties, Mapping):
            raise TypeError("super_properties must be a mapping")
        if geoip:  # under the client's super_properties, which may say otherwise
            super_properties = {"$geoip_disable": False, **(super_properties or {})}
        autocapture = parse_flag(enable_exception_autocapture, "enable_exception_autocapture")
        take_locals = parse_flag(
            capture_exception_code_variables, "capture_exception_code_variables"
        )
        flood = None
        if parse_flag(exception_rate_limit, "exception_rate_limit"):
            flood = ExceptionRateLimiter(
                exception_bucket_size, exception_refill_rate, exception_refill_interval
            )
        in_app = InAppRules(
            _names("in_app_include", in_app_include), _names("in_app_exclude", in_app_exclude)
        )

        # A key of only whitespace is no key (as in the official SDK), and so is sent never.
        api_key = (
            (api_key or "").strip()
            or os.environ.get("POSTHOG_API_KEY", "").strip()
            or os.environ.get("POSTHOG_PROJECT_API_KEY", "").strip()
        )
        self.api_key: str | None = _checked_api_key(api_key) or None
        self.host: str = _checked_host(host or os.environ.get("POSTHOG_HOST") or DEFAULT_HOST)
        self.flush_at = flush_at
        self.flush_interval = float(flush_interval)
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        self.max_retries = max_retries
        self.sync_mode = sync_mode
        self.disabled = disabled
        self.debug = debug
        self.shutdown_timeout = float(shutdown_timeout)
        self._intake_errors = Warner()
        spool = None
        if spool_dir is not None and self.api_key is not None and not disabled:
            spool = Spool(
                spool_dir, host=self.host, api_key=self.api_key, max_bytes=spool_max_bytes
            )
        if transport is None:  # (not "or": a transport may be falsy, an empty recorder is)
            transport = HTTPTransport(
                self.host,
                self.api_key or "",
                gzip=gzip,
                service_name=service_name,
                resource=resource_attributes(service_version, environment),
            )
        self._sender = Sender(
            self._build,
            transport,
            host=self.host,
            flush_at=flush_at,
            flush_interval=self.flush_interval,
            max_queue_size=max_queue_size,
            max_queue_bytes=max_queue_bytes,
            timeout=float(timeout),
            shutdown_timeout=self.shutdown_timeout,
            retry=retry,
            spool=spool,
            on_error=on_error,
            sync_mode=sync_mode,
        )
        redactor = Redactor(redact_keys)
        self._in_app = in_app
        self._builder = EventBuilder(
            super_properties=super_properties,
            redactor=redactor,
            before_send=before_send,
            in_app=self._in_app,
            on_collision=self._property_collision,
        )
        #: How an exception's locals are taken (None: they are not).
        self._variables: VariableRules | None = None
        if take_locals:
            self._variables = VariableRules(
                mask_patterns=_names("code_variables_mask_patterns", code_variables_mask_patterns)
                if code_variables_mask_patterns is not None
                else DEFAULT_MASK_PATTERNS,
                ignore_patterns=_names(
                    "code_variables_ignore_patterns", code_variables_ignore_patterns
                )
                if code_variables_ignore_patterns is not None
                else DEFAULT_IGNORE_PATTERNS,
                redactor=redactor,
            )
        self._flood: ExceptionRateLimiter | None = flood
        self._log_builder = LogBuilder(redactor, on_collision=self._property_collision)
        if debug:
            logger.setLevel(logging.DEBUG)
            # A handler of our own only where none would show the lines (an application
            # that configured logging sees them through its own, once).
            if not logger.hasHandlers():
                logger.addHandler(logging.StreamHandler())
        if self.api_key is None and not disabled and lifecycle.redirection() is None:
            self._sender.ledger.warner.said("no_api_key")  # here: not again at the capture
            logger.warning(
                "no API key (pass api_key= or set POSTHOG_API_KEY); nothing will be sent"
            )
        lifecycle.register(self._sender)
        self.enable_exception_autocapture = autocapture
        if self.enable_exception_autocapture:
            uncaught.install(self)

    def __repr__(self) -> str:
        key = "set" if self.api_key else "missing"
        return f"<posthog_logging.Client host={self.host!r} api_key={key}>"

    # -- the capture API ----------------------------------------------------------------

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        return self._sender.stats()

    def capture(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        distinct_id: Any = None,
        groups: Mapping[str, Any] | None = None,
        timestamp: dt.datetime | float | str | None = None,
        uuid: str | None = None,
        disable_geoip: bool | None = None,
        send_feature_flags: Any = False,
        flags: Any = None,
    ) -> str | None:
        """Queue an event. Returns its uuid, or None when it was dropped.

        ``timestamp`` is a datetime, epoch seconds or ISO 8601 text (as the official SDK
        takes it: text that is not a time is replaced by the current time, with a
        warning). ``disable_geoip`` sets ``$geoip_disable`` for this event.
        ``send_feature_flags`` and ``flags`` are accepted and ignored (one warning):
        feature flags stay with the official SDK.

        Raises ``TypeError``/``ValueError`` only for programming errors: an event name
        that is not a non-empty string, properties that are not a mapping, a
        ``timestamp`` outside 1970 to 9999 or a ``uuid`` that is not one.
        """
        if not isinstance(event, str):
            raise TypeError(f"event must be a non-empty str, got {type(event).__name__}")
        if not event:
            raise ValueError("event must be a non-empty str")
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, got {type(properties).__name__}")
        if groups is not None and not isinstance(groups, Mapping):
            raise TypeError(f"groups must be a mapping, got {type(groups).__name__}")
        note_flag_arguments(send_feature_flags, flags)
        when = event_time(timestamp)
        uuid = checked_uuid(uuid) if uuid is not None else uuid_for(when)
        pending = PendingEvent(
            event,
            _with_geoip(properties, disable_geoip),
            distinct_id,
            effective_state(),
            when,
            uuid,
            groups,
            None,
            trace_context(),
        )
        return uuid if self.submit(pending) else None

    def capture_exception(
        self,
        exception: BaseException | tuple[Any, Any, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        distinct_id: Any = None,
        groups: Mapping[str, Any] | None = None,
        timestamp: dt.datetime | float | str | None = None,
        uuid: str | None = None,
        disable_geoip: bool | None = None,
        send_feature_flags: Any = False,
        flags: Any = None,
    ) -> str | None:
        """Send ``exception`` (default: the one being handled) as an ``$exception`` event.

        An exception object is sent once: a second capture of the same object (by a
        context it leaves, a log call, or by hand) returns None. ``exception`` may also
        be a ``sys.exc_info()`` tuple; the keyword arguments are those of
        :meth:`capture`.
        """
        if isinstance(exception, tuple) and len(exception) == 3:  # sys.exc_info()
            exception = exception[1]
        if exception is None:
            exception = sys.exc_info()[1]
            if exception is None:
                self.count_drop("no_exception", "capture_exception() called with no exception")
                return None
        if not isinstance(exception, BaseException):
            raise TypeError(f"exception must be an exception, got {type(exception).__name__}")
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, got {type(properties).__name__}")
        if groups is not None and not isinstance(groups, Mapping):
            raise TypeError(f"groups must be a mapping, got {type(groups).__name__}")
        note_flag_arguments(send_feature_flags, flags)
        when = None if timestamp is None else event_time(timestamp)
        return self.submit_exception(
            exception,
            ExceptionInfo(mechanism_type="generic", handled=True, level="error"),
            _with_geoip(properties, disable_geoip),
            distinct_id=distinct_id,
            timestamp=when,
            uuid=None if uuid is None else checked_uuid(uuid),
            groups=groups,
        )

    def set(
        self,
        properties: Mapping[str, Any],
        *,
        distinct_id: Any = None,
        timestamp: dt.datetime | float | str | None = None,
        uuid: str | None = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Set person properties (``$set``) on the person of the context or ``distinct_id``."""
        return self._person_update("$set", properties, distinct_id, timestamp, uuid, disable_geoip)

    def set_once(
        self,
        properties: Mapping[str, Any],
        *,
        distinct_id: Any = None,
        timestamp: dt.datetime | float | str | None = None,
        uuid: str | None = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Set person properties only where not set yet (``$set_once``)."""
        return self._person_update(
            "$set_once", properties, distinct_id, timestamp, uuid, disable_geoip
        )

    def alias(
        self,
        previous_id: Any,
        distinct_id: Any = None,
        timestamp: dt.datetime | float | str | None = None,
        uuid: str | None = None,
        disable_geoip: bool | None = None,
    ) -> str | None:
        """Make ``previous_id`` (say an anonymous id) the same person as ``distinct_id``
        (default: the context's): a ``$create_alias`` event, as the official SDK sends
        it. Without either id nothing is sent (counted as ``no_distinct_id``)."""
        previous = choose_distinct_id(previous_id, _NOBODY)
        context = effective_state()
        target = choose_distinct_id(distinct_id, context)
        if previous is None or target is None:
            self.count_drop(
                "no_distinct_id", "alias() needs a previous_id and a distinct_id; not sent"
            )
            return None
        when = event_time(timestamp)
        uuid = checked_uuid(uuid) if uuid is not None else uuid_for(when)
        properties = _with_geoip({"distinct_id": previous, "alias": target}, disable_geoip)
        pending = PendingEvent(
            "$create_alias",
            properties,
            previous,
            ContextState(session_id=context.session_id),
            when,
            uuid,
        )
        return uuid if self.submit(pending) else None

    def group_identify(
        self,
        group_type: Any,
        group_key: Any,
        properties: Mapping[str, Any] | None = None,
        timestamp: dt.datetime | float | str | None = None,
        uuid: str | None = None,
        disable_geoip: bool | None = None,
        distinct_id: Any = None,
    ) -> str | None:
        """Set properties on a group: a ``$groupidentify`` event (``$group_type``,
        ``$group_key``, ``$group_set``), as the official SDK sends it. Without a type or
        a key nothing is sent (counted as ``no_group``)."""
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, got {type(properties).__name__}")
        kind = choose_distinct_id(group_type, _NOBODY)
        key = choose_distinct_id(group_key, _NOBODY)
        if kind is None or key is None:
            self.count_drop(
                "no_group", "group_identify() needs a group_type and a group_key; not sent"
            )
            return None
        context = effective_state()
        when = event_time(timestamp)
        uuid = checked_uuid(uuid) if uuid is not None else uuid_for(when)
        # Always sent for a person, as by the official SDK: a new id when there is none.
        who = choose_distinct_id(distinct_id, context) or uuid_for(when)
        group = {"$group_type": kind, "$group_key": key, "$group_set": dict(properties or {})}
        pending = PendingEvent(
            "$groupidentify",
            _with_geoip(group, disable_geoip),
            who,
            ContextState(session_id=context.session_id),
            when,
            uuid,
        )
        return uuid if self.submit(pending) else None

    def flush(self, timeout: float | None = None, *, timeout_seconds: float | None = None) -> bool:
        """Send everything queued so far; wait at most ``timeout`` seconds (default
        ``shutdown_timeout``; ``timeout_seconds``, the official SDK's name, is the same).

        Returns True when all of it has left memory in time: sent, refused by the
        server, or (with a spool) written to disk. Events whose retries would run past
        the deadline stay queued and are tried again later. Called from a hook the
        sender runs (``on_error``), it cannot wait for that sender and returns False.
        """
        if timeout_seconds is not None:
            if timeout is not None and timeout != timeout_seconds:
                raise TypeError("give timeout or timeout_seconds, not both")
            timeout = timeout_seconds
        return self._sender.flush(self.shutdown_timeout if timeout is None else timeout)

    def join(self) -> bool:
        """As in the official SDK: send what is queued and stop, i.e. :meth:`shutdown`."""
        return self.shutdown()

    # -- the official SDK's client-bound context API: the module's own ------------------

    new_context = staticmethod(contexts.new_context)
    scoped = staticmethod(contexts.scoped)
    tag = staticmethod(contexts.tag)
    get_tags = staticmethod(contexts.get_tags)
    identify_context = staticmethod(contexts.identify_context)
    set_context_session = staticmethod(contexts.set_context_session)

    # -- feature flags: not here (FeatureFlagsNotSupported) ----------------------------

    feature_enabled = flags_method("feature_enabled")
    get_feature_flag = flags_method("get_feature_flag")
    get_feature_flag_result = flags_method("get_feature_flag_result")
    get_feature_flag_payload = flags_method("get_feature_flag_payload")
    get_remote_config_payload = flags_method("get_remote_config_payload")
    get_all_flags = flags_method("get_all_flags")
    get_all_flags_and_payloads = flags_method("get_all_flags_and_payloads")
    evaluate_flags = flags_method("evaluate_flags")
    feature_flag_definitions = flags_method("feature_flag_definitions")
    load_feature_flags = flags_method("load_feature_flags")
    get_feature_variants = flags_method("get_feature_variants")
    get_feature_payloads = flags_method("get_feature_payloads")
    get_feature_flags_and_payloads = flags_method("get_feature_flags_and_payloads")
    get_flags_decision = flags_method("get_flags_decision")
    get_feature_flag_evaluation_runtime = flags_method("get_feature_flag_evaluation_runtime")
    get_feature_flag_keys_by_evaluation_runtime = flags_method(
        "get_feature_flag_keys_by_evaluation_runtime"
    )

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default ``shutdown_timeout``), stop the sender.

        Idempotent. Events captured afterwards are dropped (counted as ``shutdown``).
        What could not be sent by the deadline is written to the spool, if there is
        one, else counted as ``shutdown_timeout``. Returns True when everything queued
        was sent (or refused by the server) in time.
        """
        uncaught.remove(self)
        return self._sender.shutdown(self.shutdown_timeout if timeout is None else timeout)

    # -- the seam for front-ends ----------------------------------------------------------

    def submit(self, item: PendingEvent | PendingLog) -> bool:
        """Hand the client an event, ``$exception`` event or log line a front-end made
        (see :mod:`posthog_logging.entries`); True when it was queued.

        Never raises: what the gate turns away (disabled, no API key, after shutdown) is
        counted, and so is a bug of the library's own while taking it, as with the
        official SDK (with ``debug=True`` that is raised, to be seen). Takes no lock: a
        signal handler or a finaliser may submit at any moment.
        """
        sender = self._sender
        if self.disabled or sender.closed or self.api_key is None:
            if self.disabled:
                return False
            if self.api_key is None and lifecycle.redirection() is None:
                self.count_drop("no_api_key", "no API key configured; events are not sent")
                return False
            if sender.closed:
                self.count_drop("shutdown", "event captured after shutdown(); not sent")
                return False
            # no key, but redirected (capture_events() records what would be sent)
        try:
            return sender.put(item)
        except Exception:
            if self.debug:
                raise
            self._sender.ledger.add("dropped:intake_error")
            self._intake_errors.warn(
                "intake_error",
                "could not take an event (a bug); dropped",
                exc_info=True,
                level=logging.ERROR,
            )
            return False

    def submit_exception(
        self,
        exception: BaseException | None,
        info: ExceptionInfo,
        properties: Mapping[str, Any] | None = None,
        *,
        distinct_id: Any = None,
        timestamp: dt.datetime | float | None = None,
        context: ContextState | None = None,
        trace: tuple[str, str, int] | None = ACTIVE_SPAN,
        uuid: str | None = None,
        groups: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Make an ``$exception`` event and queue it: the one way every front-end and
        hook sends an exception. Returns its uuid, or None when nothing was queued.

        With ``exception`` given, it is marked captured (None if it already was: one
        exception object is sent once) and its chain is snapshotted here, with the locals
        of its frames when ``capture_exception_code_variables`` is on. With None,
        ``info.chain`` (a snapshot taken earlier) is sent, and an empty chain means
        nothing is. Flood control comes first, before any of that work: an exception
        whose kind has used up its bucket is dropped and counted
        (``exception_rate_limited``).

        ``context`` None means the current one, whose exception steps the event
        carries; a context stamped elsewhere carries its own steps, if any. ``trace``
        is the span to link it to: by default the one active here.
        """
        if self.disabled:
            return None
        if exception is not None:
            if not mark_captured(exception):
                return None
            key = exception_key(exception)
        elif info.chain:
            key = chain_key(info.chain)
        else:
            return None
        if self._flood is not None and not self._flood.allow(key):
            self.count_drop(
                "exception_rate_limited",
                f"exceptions like {key} come more often than the flood limit lets through "
                "(exception_bucket_size, exception_refill_rate); the rest are dropped",
            )
            return None
        if exception is not None:
            chain = snapshot_exception(exception, variables=self._variables, in_app=self._in_app)
            info = dataclasses.replace(info, chain=chain)
        trail: StepTrail | None
        if context is None:
            context, trail = effective_state(), current_trail()
        else:
            trail = context.steps
        if trail is not None and len(trail):
            info = dataclasses.replace(info, steps=trail.snapshot())
        if timestamp is None:
            timestamp = time.time()
        if uuid is None:
            uuid = uuid_for(timestamp)
        pending = PendingEvent(
            "$exception",
            dict(properties) if properties else None,
            distinct_id,
            context,
            timestamp,
            uuid,
            groups,
            info,
            trace_context() if trace is ACTIVE_SPAN else trace,
        )
        return uuid if self.submit(pending) else None

    def count_drop(self, reason: str, message: str, n: int = 1, *, warn: bool = True) -> None:
        """Count ``n`` records a front-end could not send, for ``reason`` (a
        ``stats.dropped`` key), and say ``message`` (at most once a minute per reason);
        with ``warn=False``, only count: what the user asked to leave out (sampling, say)
        is no news."""
        if warn:
            self._sender.ledger.drop(reason, message, n)
        else:
            self._sender.ledger.add("dropped:" + reason, n)

    def use_transport(self, transport: Transport) -> None:
        """Send through ``transport`` from now on, instead of HTTP."""
        self._sender.use_transport(transport)

    # -- on the sender's thread -------------------------------------------------------

    def _build(self, item: PendingEvent | PendingLog) -> tuple[bytes, Kind] | None:
        """An event's or a log line's JSON and its kind; None when it was dropped."""
        if type(item) is PendingLog:
            try:
                return self._log_builder.build(item), LOGS
            except Exception as exc:
                self.count_drop("build_error", f"could not build a log line: {exc!r}")
                return None
        assert type(item) is PendingEvent
        try:
            return self._builder.build(item), EVENTS
        except DroppedEvent as drop:
            self.count_drop(drop.reason, drop.detail)
        except Exception as exc:
            self.count_drop("build_error", f"could not build event {item.event!r}: {exc!r}")
        return None

    def _property_collision(self, where: str, keys: list[str]) -> None:
        self._sender.ledger.add("dropped_property:duplicate_key", len(keys))
        shown = ", ".join(repr(key) for key in keys[:5])
        self._sender.ledger.warn(
            "duplicate_key",
            f"{where} has keys that are the same text once made strings ({shown}): the "
            "value under the string key is sent (else the first one), the other dropped",
        )

    def _person_update(
        self,
        kind: str,
        properties: Mapping[str, Any],
        distinct_id: Any,
        timestamp: dt.datetime | float | str | None,
        uuid: str | None,
        disable_geoip: bool | None,
    ) -> str | None:
        if not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, got {type(properties).__name__}")
        context = effective_state()
        if choose_distinct_id(distinct_id, context) is None:
            self.count_drop(
                "no_distinct_id", f"{kind} needs a distinct_id or an identified context"
            )
            return None
        # Only the given properties: the context's tags describe events, not the person.
        when = event_time(timestamp)
        uuid = checked_uuid(uuid) if uuid is not None else uuid_for(when)
        person = ContextState(distinct_id=context.distinct_id)
        pending = PendingEvent(
            kind,
            _with_geoip({kind: dict(properties)}, disable_geoip),
            distinct_id,
            person,
            when,
            uuid,
            None,
            None,
        )
        return uuid if self.submit(pending) else None


#: No one: to read an id given to alias() or group_identify() without a context's.
_NOBODY = ContextState()


def _with_geoip(
    properties: Mapping[str, Any] | None, disable_geoip: bool | None
) -> dict[str, Any] | None:
    """A copy of ``properties``, with ``$geoip_disable`` when ``disable_geoip`` is given."""
    copied = dict(properties) if properties else None
    if disable_geoip is not None:
        copied = copied or {}
        copied["$geoip_disable"] = parse_flag(disable_geoip, "disable_geoip")
    return copied


def _checked_host(host: str) -> str:
    """``host`` without a trailing slash, once it is a URL the client can send to:
    ``http://`` or ``https://`` and a host name. A host without its scheme
    (``127.0.0.1:8771``) would otherwise fail every request and look like an outage."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a URL string, got {type(host).__name__}")
    text = host.strip().rstrip("/")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        hint = f" (did you mean 'http://{text}'?)" if "://" not in text else ""
        raise ValueError(
            f"host must be an http:// or https:// URL such as {DEFAULT_HOST!r}, got {host!r}{hint}"
        )
    return text


#: Keys that are PostHog keys, but not the one events are sent with.
_NOT_PROJECT_KEYS = {
    "phx_": "a personal API key (phx_...)",
    "phs_": "a feature flags secure API key (phs_...)",
}


def _checked_api_key(api_key: str) -> str:
    """``api_key`` once it can be a project API key: not another kind of PostHog key,
    and nothing but visible characters (a key pasted with a line break in it, say)."""
    for prefix, what in _NOT_PROJECT_KEYS.items():
        if api_key.startswith(prefix):
            raise ValueError(
                f"api_key is {what}, not a project API key: use the project's key "
                "(phc_..., in PostHog under Settings > Project > Project API key)"
            )
    if not api_key.isprintable() or " " in api_key:
        raise ValueError(
            "api_key has spaces or invisible characters in it; copy the project API key "
            "again (phc_...)"
        )
    return api_key


def _names(option: str, value: Iterable[str]) -> tuple[str, ...]:
    """A list option (module prefixes, patterns) as a tuple; a single string is refused,
    since it would be taken letter by letter."""
    if isinstance(value, str):
        raise TypeError(f"{option} must be a list of strings, not a single string")
    return tuple(value)


def _check_positive(name: str, value: Any, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        what = "a positive int" if integer else "a positive number"
        raise ValueError(f"{name} must be {what}, got {value!r}")
