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

from . import uncaught
from .code_variables import DEFAULT_IGNORE_PATTERNS, DEFAULT_MASK_PATTERNS, VariableRules
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
from .ids import checked_timestamp, checked_uuid, uuid_for
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
    ) -> None:
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
            if not logger.handlers:
                logger.addHandler(logging.StreamHandler())
        if self.api_key is None and not disabled and lifecycle.redirection() is None:
            self._sender.ledger.warner.said("no_api_key")  # here: not again at the capture
            logger.warning(
                "posthog_logging: no API key (pass api_key= or set POSTHOG_API_KEY); "
                "nothing will be sent"
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
        timestamp: dt.datetime | float | None = None,
        uuid: str | None = None,
    ) -> str | None:
        """Queue an event. Returns its uuid, or None when it was dropped.

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
        timestamp = time.time() if timestamp is None else checked_timestamp(timestamp)
        uuid = checked_uuid(uuid) if uuid is not None else uuid_for(timestamp)
        pending = PendingEvent(
            event,
            dict(properties) if properties else None,
            distinct_id,
            effective_state(),
            timestamp,
            uuid,
            groups,
            None,
            trace_context(),
        )
        return uuid if self.submit(pending) else None

    def capture_exception(
        self,
        exception: BaseException | None = None,
        properties: Mapping[str, Any] | None = None,
        *,
        distinct_id: Any = None,
    ) -> str | None:
        """Send ``exception`` (default: the one being handled) as an ``$exception`` event.

        An exception object is sent once: a second capture of the same object (by a
        context it leaves, a log call, or by hand) returns None.
        """
        if exception is None:
            exception = sys.exc_info()[1]
            if exception is None:
                self.count_drop("no_exception", "capture_exception() called with no exception")
                return None
        if not isinstance(exception, BaseException):
            raise TypeError(f"exception must be an exception, got {type(exception).__name__}")
        if properties is not None and not isinstance(properties, Mapping):
            raise TypeError(f"properties must be a mapping, got {type(properties).__name__}")
        return self.submit_exception(
            exception,
            ExceptionInfo(mechanism_type="generic", handled=True, level="error"),
            properties,
            distinct_id=distinct_id,
        )

    def set(self, properties: Mapping[str, Any], *, distinct_id: Any = None) -> str | None:
        """Set person properties (``$set``) on the person of the context or ``distinct_id``."""
        return self._person_update("$set", properties, distinct_id)

    def set_once(self, properties: Mapping[str, Any], *, distinct_id: Any = None) -> str | None:
        """Set person properties only where not set yet (``$set_once``)."""
        return self._person_update("$set_once", properties, distinct_id)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; wait at most ``timeout`` seconds.

        Returns True when all of it has left memory in time: sent, refused by the
        server, or (with a spool) written to disk. Events whose retries would run past
        the deadline stay queued and are tried again later. Called from a hook the
        sender runs (``on_error``), it cannot wait for that sender and returns False.
        """
        return self._sender.flush(self.shutdown_timeout if timeout is None else timeout)

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
                "posthog_logging: could not take an event (a bug); dropped",
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
        timestamp: float | None = None,
        context: ContextState | None = None,
        trace: tuple[str, str, int] | None = ACTIVE_SPAN,
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
        uuid = uuid_for(timestamp)
        pending = PendingEvent(
            "$exception",
            dict(properties) if properties else None,
            distinct_id,
            context,
            timestamp,
            uuid,
            None,
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
        self, kind: str, properties: Mapping[str, Any], distinct_id: Any
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
        timestamp = time.time()
        uuid = uuid_for(timestamp)
        person = ContextState(distinct_id=context.distinct_id)
        pending = PendingEvent(
            kind, {kind: dict(properties)}, distinct_id, person, timestamp, uuid, None, None
        )
        return uuid if self.submit(pending) else None


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
