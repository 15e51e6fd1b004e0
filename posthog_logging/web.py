"""What the web middlewares share: how a request becomes a context, and how an error
leaving a request is sent. The WSGI, ASGI and Django middlewares only translate their
framework's request into a :class:`Request` and call :class:`RequestOptions`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from . import default_client
from .client import Client
from .contexts import identify_context, set_context_session, tag
from .diagnostics import Warner, logger
from .events import ExceptionInfo
from .serialisation import DEFAULT_REDACT_KEYS, FILTERED, Redactor, as_text

#: What PostHog's JavaScript SDK sends when tracing headers are on (lower-cased).
DISTINCT_ID_HEADER = "x-posthog-distinct-id"
SESSION_ID_HEADER = "x-posthog-session-id"

_query_redactor = Redactor(DEFAULT_REDACT_KEYS)

Identify = Callable[[Any], Any]


@dataclass(frozen=True)
class Request:
    """A request as every framework can describe it. Header names are lower-case."""

    method: str | None
    scheme: str
    host: str
    path: str
    query: str
    headers: Mapping[str, str]
    peer: str | None

    @property
    def url(self) -> str:
        """The full URL, with the values of secret-looking query parameters filtered."""
        url = f"{self.scheme}://{self.host}{self.path}"
        return f"{url}?{_filtered_query(self.query)}" if self.query else url


class RequestOptions:
    """The options every middleware takes, and what they do to a request's context.

    ``identify(request)`` is the application's own user lookup, given the framework's
    request object (or the ASGI scope); what it returns (not None) wins over the
    ``X-POSTHOG-DISTINCT-ID`` header. ``capture_ip`` tags ``$ip`` (and lets PostHog
    geolocate the event); behind proxies, ``trusted_proxies`` is how many of them add
    to ``X-Forwarded-For``. ``client`` receives the errors (default: the default client).
    """

    def __init__(
        self,
        *,
        identify: Identify | None = None,
        capture_ip: bool = False,
        trusted_proxies: int = 0,
        capture_exceptions: bool = True,
        client: Client | None = None,
    ) -> None:
        if identify is not None and not callable(identify):
            raise TypeError(f"identify must be callable or None, got {identify!r}")
        if isinstance(trusted_proxies, bool) or not isinstance(trusted_proxies, int):
            raise TypeError(f"trusted_proxies must be an int, got {trusted_proxies!r}")
        if trusted_proxies < 0:
            raise ValueError(f"trusted_proxies must be >= 0, got {trusted_proxies!r}")
        if client is not None and not isinstance(client, Client):
            raise TypeError(f"client must be a posthog_logging.Client, got {client!r}")
        self.identify = identify
        self.capture_ip = bool(capture_ip)
        self.trusted_proxies = trusted_proxies
        self.capture_exceptions = bool(capture_exceptions)
        self.client = client
        # A broken identify() raises on every request: its traceback once a minute.
        self._identify_failed = Warner()

    def apply(self, request: Request, native: Any) -> None:
        """Set the current context's identity, session and tags from ``request``."""
        headers = request.headers
        distinct_id: Any = headers.get(DISTINCT_ID_HEADER) or None
        if self.identify is not None:
            try:
                found = self.identify(native)
            except Exception:
                self._identify_failed.warn("identify", "identify() raised; ignored", exc_info=True)
                found = None
            if found is not None and as_text(found):
                distinct_id = found
        if distinct_id is not None:
            identify_context(distinct_id)
        if session_id := headers.get(SESSION_ID_HEADER):
            set_context_session(session_id)
        tag("$current_url", request.url)
        if request.method:
            tag("$request_method", request.method)
        tag("$request_path", request.path)
        if user_agent := headers.get("user-agent"):
            tag("$raw_user_agent", user_agent)
        if self.capture_ip and (ip := client_ip(request, self.trusted_proxies)):
            tag("$ip", ip)
            tag("$geoip_disable", False)

    def capture(self, exc: BaseException, kind: str) -> None:
        """Send an error that is leaving the request (once; it is re-raised after)."""
        if not self.capture_exceptions or not isinstance(exc, Exception):
            return
        client = self.client if self.client is not None else default_client.get_client()
        # As PostHog's SDK specification names a failure escaping a request.
        info = ExceptionInfo(
            mechanism_type="middleware", handled=False, level="error", source=f"{kind}.middleware"
        )
        try:
            client.submit_exception(exc, info)
        except Exception:  # never replace the application's error with ours
            logger.debug("could not capture a request error", exc_info=True)


class RequestMiddleware:
    """The constructor the WSGI and ASGI middlewares share: the wrapped app, then the
    :class:`RequestOptions`, keyword-only."""

    def __init__(
        self,
        app: Any,
        *,
        identify: Identify | None = None,
        capture_ip: bool = False,
        trusted_proxies: int = 0,
        capture_exceptions: bool = True,
        client: Client | None = None,
    ) -> None:
        self.app = app
        self.options = RequestOptions(
            identify=identify,
            capture_ip=capture_ip,
            trusted_proxies=trusted_proxies,
            capture_exceptions=capture_exceptions,
            client=client,
        )


def client_ip(request: Request, trusted_proxies: int) -> str | None:
    """The client's address: the peer's, or behind ``trusted_proxies`` proxies the
    address that many hops from the right of ``X-Forwarded-For`` (the ones to its left
    could be made up by the client)."""
    if trusted_proxies:
        hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",")]
        hops = [h for h in hops if h]
        if hops:
            return hops[-trusted_proxies] if len(hops) >= trusted_proxies else hops[0]
    return request.peer


def _filtered_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_query_redactor.is_secret(key) for key, _ in pairs):
        return query
    return urlencode(
        [(k, FILTERED if _query_redactor.is_secret(k) else v) for k, v in pairs], safe="[]"
    )
