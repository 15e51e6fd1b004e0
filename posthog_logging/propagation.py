"""Propagation: the current context's person and session, sent on with outgoing requests.

When one service calls another on behalf of a user, the second service's events, errors
and log lines belong to the same person and the same session replay. The web
middlewares (:mod:`posthog_logging.wsgi`, :mod:`~posthog_logging.asgi`,
:mod:`~posthog_logging.django`) read them from the ``X-POSTHOG-DISTINCT-ID`` and
``X-POSTHOG-SESSION-ID`` headers, which PostHog's JavaScript SDK sends from the
browser. This module sends the same headers from Python:

- :func:`context_headers` gives them for the current context, to put on a request or a
  message by hand; :class:`context_from_headers` opens a context from them on the
  receiving side (a queue consumer, say).
- :func:`instrument_requests` and :func:`instrument_httpx` add them to every outgoing
  request of those libraries, and :class:`PropagatingAdapter` (one ``requests``
  session) and :class:`httpx_request_hook` (one ``httpx`` client) to those of one client.

A distinct id is personal data, so nothing is sent unless the application names the
hosts that may receive it: only a request to a host on ``allowed_hosts`` gets the
headers, each hop of a redirect decided on its own (a redirect to another host does not
carry them on). A header the caller set is never replaced. The library's own requests
to PostHog never carry them. A value that is not a safe HTTP header value (a line
break, non-ASCII text, more than :data:`MAX_VALUE_LENGTH` characters) is left out, with
one warning, rather than sent mangled or allowed to break the request.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import requests.adapters

from .contexts import effective_state, identify_context, new_context, set_context_session
from .diagnostics import Warner, logger
from .reentry import this_thread
from .web import DISTINCT_ID_HEADER, SESSION_ID_HEADER

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DISTINCT_ID",
    "MAX_VALUE_LENGTH",
    "SESSION_ID",
    "PropagatingAdapter",
    "context_from_headers",
    "context_headers",
    "httpx_request_hook",
    "instrument_httpx",
    "instrument_requests",
    "uninstrument_httpx",
    "uninstrument_requests",
]

#: The header names as sent, spelled as PostHog's JavaScript SDK spells them (HTTP
#: header names are case-insensitive; the middlewares read them in any case).
DISTINCT_ID = DISTINCT_ID_HEADER.upper()
SESSION_ID = SESSION_ID_HEADER.upper()

#: A longer value is not sent: servers refuse requests with oversized headers.
MAX_VALUE_LENGTH = 1000

_unsafe = Warner(interval=None)  # once per header, for good
_failed = Warner()


def context_headers() -> dict[str, str]:
    """The ``X-POSTHOG-DISTINCT-ID`` / ``X-POSTHOG-SESSION-ID`` headers of the current
    context: a key is absent when the context has no such value (``{}`` outside any
    context), or when the value is not a safe header value (see the module's notes)."""
    state = effective_state()
    headers: dict[str, str] = {}
    if (distinct_id := _safe(DISTINCT_ID, state.distinct_id)) is not None:
        headers[DISTINCT_ID] = distinct_id
    if (session_id := _safe(SESSION_ID, state.session_id)) is not None:
        headers[SESSION_ID] = session_id
    return headers


def _safe(name: str, value: str | None) -> str | None:
    """``value`` when it can be sent as it is in any HTTP/1.1 or HTTP/2 header: printable
    ASCII, no surrounding spaces, not too long. Otherwise None (and a warning, once)."""
    if not value:
        return None
    if (
        len(value) <= MAX_VALUE_LENGTH
        and value.isascii()
        and value.isprintable()
        and value == value.strip()
    ):
        return value
    # The value itself is never logged: it is personal data, and could be anything.
    _unsafe.warn(
        name,
        "the context's %s value is not sent: it is not a safe HTTP header "
        "value (line breaks or other control characters, non-ASCII text, surrounding "
        "spaces, or more than %d characters)",
        name,
        MAX_VALUE_LENGTH,
    )
    return None


class context_from_headers:
    """``with context_from_headers(headers):`` runs a block in a new context identified
    from headers that :func:`context_headers` made: the receiving side of a queue, or of
    any transport without one of the web middlewares.

    ``headers`` is a mapping or a sequence of ``(name, value)`` pairs (Kafka's shape);
    names are matched in any case, values may be text or UTF-8 bytes. The context starts
    empty (``fresh``), as a request's does: what the consumer's own context held does not
    leak into the message's. With ``capture_exceptions`` (the default) an exception
    leaving the block is sent once as an ``$exception`` with the message's person, then
    re-raised, as with :class:`~posthog_logging.new_context`.
    """

    __slots__ = ("_context", "_distinct_id", "_session_id")

    def __init__(
        self,
        headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
        *,
        capture_exceptions: bool = True,
    ) -> None:
        found = _read_headers(headers)
        self._distinct_id = found.get(DISTINCT_ID_HEADER)
        self._session_id = found.get(SESSION_ID_HEADER)
        self._context = new_context(fresh=True, capture_exceptions=capture_exceptions)

    def __enter__(self) -> context_from_headers:
        self._context.__enter__()
        if self._distinct_id:
            identify_context(self._distinct_id)
        if self._session_id:
            set_context_session(self._session_id)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._context.__exit__(exc_type, exc, tb)


def _read_headers(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    """Our two headers out of ``headers``, by lower-case name, as stripped text."""
    found: dict[str, str] = {}
    if not headers:
        return found
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    try:
        for name, value in pairs:
            key = name.decode("latin-1") if isinstance(name, bytes) else str(name)
            key = key.lower()
            if key not in (DISTINCT_ID_HEADER, SESSION_ID_HEADER) or value is None:
                continue
            if isinstance(value, (bytes, bytearray)):
                text = bytes(value).decode("utf-8", errors="replace")
            else:
                text = str(value)
            if text := text.strip():
                found[key] = text
    except Exception:  # headers of a shape we cannot read: an anonymous context
        _failed.warn("read", "could not read context headers", exc_info=True)
    return found


# -- the allow-list ---------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class _Hosts:
    """The hosts that may receive the headers.

    An entry is a host name or an IP address (``api.internal``, ``10.0.0.7``, ``::1`` or
    ``[::1]``), matched exactly in any case, on any port; with ``:port``, on that port only
    (a URL without one has its scheme's: 80 for http, 443 for https). ``*.example.com``
    matches the subdomains of example.com at any depth, not example.com itself.
    """

    exact: frozenset[tuple[str, int | None]]
    suffixes: tuple[tuple[str, int | None], ...]

    @classmethod
    def parse(cls, allowed_hosts: Iterable[str]) -> _Hosts:
        if isinstance(allowed_hosts, (str, bytes)):
            raise TypeError(
                f"allowed_hosts must be a list of host names, not one string: [{allowed_hosts!r}]?"
            )
        exact: set[tuple[str, int | None]] = set()
        suffixes: list[tuple[str, int | None]] = []
        for entry in allowed_hosts:
            host, port = _parse_entry(entry)
            if host.startswith("*."):
                suffixes.append((host[1:], port))
            else:
                exact.add((host, port))
        return cls(frozenset(exact), tuple(suffixes))

    def __bool__(self) -> bool:
        return bool(self.exact or self.suffixes)

    def allow(self, url: str) -> bool:
        """Whether a request to ``url`` may carry the headers."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:  # a port that is not a number: nobody we know
            return False
        if not host:
            return False
        host = _normal_host(host)
        if port is None:
            port = _DEFAULT_PORTS.get(parts.scheme.lower())
        if (host, None) in self.exact or (host, port) in self.exact:
            return True
        return any(
            host.endswith(suffix) and (wanted is None or wanted == port)
            for suffix, wanted in self.suffixes
        )


def _parse_entry(entry: object) -> tuple[str, int | None]:
    """An allow-list entry as ``(host, port or None)``; ValueError for anything else."""
    if not isinstance(entry, str):
        raise TypeError(f"allowed_hosts entries must be host names (str), got {entry!r}")
    text = entry.strip().lower()
    usage = "give a host name or IP address, optionally with :port, or *.domain"
    if not text or any(char in text for char in "/@?#\\ "):
        raise ValueError(f"allowed_hosts entry {entry!r} is not a host: {usage}")
    host, port_text = text, None
    if text.startswith("["):  # [IPv6] or [IPv6]:port
        end = text.find("]")
        rest = text[end + 1 :] if end > 0 else "?"
        if rest and not rest.startswith(":"):
            raise ValueError(f"allowed_hosts entry {entry!r} is not a host: {usage}")
        host, port_text = text[1:end], rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    # else: a name, or an IPv6 address without brackets (and so without a port)
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"allowed_hosts entry {entry!r} has no valid port: {usage}")
        port = int(port_text)
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if not name.strip(".") or "*" in name:
        hint = " (list the hosts: every host is never allowed)" if "*" in host else ""
        raise ValueError(f"allowed_hosts entry {entry!r} is not a host{hint}: {usage}")
    try:
        name = _normal_host(name)
    except UnicodeError:
        raise ValueError(f"allowed_hosts entry {entry!r} is not a valid host name") from None
    return ("*." + name if wildcard else name), port


def _normal_host(host: str) -> str:
    """Lower case, without a trailing dot, internationalised names in their ASCII form."""
    host = host.lower().rstrip(".")
    return host if host.isascii() else host.encode("idna").decode("ascii")


# -- adding the headers to one request --------------------------------------------------------


def _missing(url: str, present: Callable[[str], bool], hosts: _Hosts) -> dict[str, str]:
    """The headers a request to ``url`` should get that it does not have yet."""
    if this_thread.in_library or not hosts:  # never on the library's own requests
        return {}
    headers = context_headers()  # outside any context: {}, and nothing else is done
    if not headers or not hosts.allow(url):
        return {}
    return {name: value for name, value in headers.items() if not present(name)}


def _requests_with_context(
    request: requests.PreparedRequest, hosts: _Hosts
) -> requests.PreparedRequest:
    """``request``, or a copy of it with the headers. The caller's request is never
    changed: ``requests`` builds a redirect's request from it, and a redirect to a host
    that is not allowed must not carry them on."""
    try:
        url, current = request.url, request.headers
        if url is None or current is None:
            return request
        missing = _missing(str(url), current.__contains__, hosts)
        if not missing:
            return request
        copy = request.copy()
        copy.headers.update(missing)
        return copy
    except Exception:  # never fail a request for its headers
        _failed.warn("requests", "could not add context headers", exc_info=True)
        return request


def _httpx_with_context(request: httpx.Request, hosts: _Hosts) -> httpx.Request:
    """``request``, or a copy of it with the headers (the client's own request, from
    which a redirect's is built, is left as it was)."""
    try:
        missing = _missing(str(request.url), request.headers.__contains__, hosts)
        if not missing:
            return request
        headers = request.headers.copy()
        headers.update(missing)
        return type(request)(
            request.method,
            request.url,
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )
    except Exception:
        _failed.warn("httpx", "could not add context headers", exc_info=True)
        return request


# -- instrumenting every client ---------------------------------------------------------------

_lock = threading.Lock()


class _Patch:
    """One method of a class, replaced by a wrapper while instrumented.

    The wrapper reads :attr:`hosts` on each call; None makes it pass requests through
    untouched. Removing it restores the original method, unless something else wrapped
    the method since: then ours stays in the chain, passing through, and instrumenting
    again turns it back on (never a second wrapper).
    """

    def __init__(self) -> None:
        self.hosts: _Hosts | None = None
        self._owner: type | None = None
        self._name = ""
        self._original: Any = None
        self._wrapper: Any = None
        self._own = False  # whether the class itself defined the method (not a base)

    def install(
        self, owner: type, name: str, wrap: Callable[[Any, _Patch], Any], hosts: _Hosts
    ) -> None:
        self.hosts = hosts
        if self._wrapper is not None:
            return
        self._own = name in owner.__dict__
        original = owner.__dict__[name] if self._own else getattr(owner, name)
        wrapper = wrap(original, self)
        setattr(owner, name, wrapper)
        self._owner, self._name, self._original, self._wrapper = owner, name, original, wrapper

    def remove(self) -> None:
        self.hosts = None
        owner = self._owner
        if owner is None or owner.__dict__.get(self._name) is not self._wrapper:
            return  # never installed, or wrapped again by someone else: stays, passing through
        if self._own:
            setattr(owner, self._name, self._original)
        else:
            delattr(owner, self._name)
        self._owner = self._original = self._wrapper = None


_requests_patch = _Patch()
_httpx_sync_patch = _Patch()
_httpx_async_patch = _Patch()


def instrument_requests(allowed_hosts: Iterable[str] = ()) -> None:
    """Add the context's headers to the requests ``requests`` makes to ``allowed_hosts``
    (sessions made before the call included). Calling it again replaces the list; the
    headers are still added once. An empty list sends nothing anywhere.

    ``allowed_hosts``: host names or IP addresses, each optionally with ``:port``, or
    ``*.example.com`` for the subdomains of example.com; see docs/propagation.md.
    It hooks :meth:`requests.adapters.HTTPAdapter.send`, so each hop of a redirect is
    decided on its own (an adapter that does not derive from it is not covered).
    """
    hosts = _Hosts.parse(allowed_hosts)  # checked before anything changes
    if not hosts:
        logger.debug("instrument_requests() without allowed_hosts sends nothing")
    with _lock:
        _requests_patch.install(requests.adapters.HTTPAdapter, "send", _wrap_requests, hosts)


def uninstrument_requests() -> None:
    """Stop adding the headers to ``requests``' requests (and restore its method)."""
    with _lock:
        _requests_patch.remove()


def _wrap_requests(original: Callable[..., requests.Response], patch: _Patch) -> Any:
    @functools.wraps(original)
    def send(
        self: requests.adapters.HTTPAdapter,
        request: requests.PreparedRequest,
        *args: Any,
        **kwargs: Any,
    ) -> requests.Response:
        hosts = patch.hosts
        if hosts is not None:
            request = _requests_with_context(request, hosts)
        return original(self, request, *args, **kwargs)

    return send


def instrument_httpx(allowed_hosts: Iterable[str] = ()) -> None:
    """Add the context's headers to the requests ``httpx`` clients (``Client`` and
    ``AsyncClient``, those made before the call included) make to ``allowed_hosts``.
    Calling it again replaces the list; the headers are still added once. An empty
    list sends nothing anywhere.

    It hooks ``httpx.HTTPTransport`` and ``httpx.AsyncHTTPTransport`` (what every client
    sends through unless given another transport), so each hop of a redirect is decided
    on its own. For a client with its own transport, use :func:`httpx_request_hook`.
    """
    hosts = _Hosts.parse(allowed_hosts)
    if not hosts:
        logger.debug("instrument_httpx() without allowed_hosts sends nothing")
    try:
        import httpx
    except ImportError as exc:  # httpx is the application's, not a dependency of ours
        raise ImportError("instrument_httpx() needs httpx: pip install httpx") from exc
    with _lock:
        _httpx_sync_patch.install(httpx.HTTPTransport, "handle_request", _wrap_httpx, hosts)
        _httpx_async_patch.install(
            httpx.AsyncHTTPTransport, "handle_async_request", _wrap_httpx_async, hosts
        )


def uninstrument_httpx() -> None:
    """Stop adding the headers to ``httpx``'s requests (and restore its methods)."""
    with _lock:
        _httpx_sync_patch.remove()
        _httpx_async_patch.remove()


def _wrap_httpx(original: Callable[..., httpx.Response], patch: _Patch) -> Any:
    @functools.wraps(original)
    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        hosts = patch.hosts
        if hosts is not None:
            request = _httpx_with_context(request, hosts)
        return original(self, request)

    return handle_request


def _wrap_httpx_async(original: Callable[..., Awaitable[httpx.Response]], patch: _Patch) -> Any:
    @functools.wraps(original)
    async def handle_async_request(
        self: httpx.AsyncHTTPTransport, request: httpx.Request
    ) -> httpx.Response:
        hosts = patch.hosts
        if hosts is not None:
            request = _httpx_with_context(request, hosts)
        return await original(self, request)

    return handle_async_request


# -- instrumenting one client -----------------------------------------------------------------


class PropagatingAdapter(requests.adapters.HTTPAdapter):
    """A ``requests`` transport adapter that adds the context's headers to the requests
    it sends to ``allowed_hosts``; for one session, without instrumenting every one::

        session.mount("https://", PropagatingAdapter(allowed_hosts=["api.internal"]))
        session.mount("http://", PropagatingAdapter(allowed_hosts=["api.internal"]))

    Any other keyword is :class:`requests.adapters.HTTPAdapter`'s (``max_retries``, ...).
    """

    __attrs__ = [*requests.adapters.HTTPAdapter.__attrs__, "allowed_hosts"]

    def __init__(self, allowed_hosts: Iterable[str] = (), **kwargs: Any) -> None:
        self.allowed_hosts = _Hosts.parse(allowed_hosts)
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        """Send ``request``, with the headers when its host is allowed."""
        request = _requests_with_context(request, self.allowed_hosts)
        return super().send(request, *args, **kwargs)


#: Where a request hook notes the headers it added, so that a redirect's request (which
#: ``httpx`` builds from the previous one, extensions included) can have them taken back.
_ADDED = "posthog_logging.added_headers"


class _Done:
    """An awaitable that is already done: what the request hook returns, so that the same
    hook serves ``httpx.Client`` (which ignores it) and ``httpx.AsyncClient`` (which
    awaits it)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()


_DONE = _Done()


class httpx_request_hook:
    """An ``httpx`` request event hook that adds the context's headers to the requests
    one client sends to ``allowed_hosts``; the same hook serves ``httpx.Client`` and
    ``httpx.AsyncClient``::

        hook = httpx_request_hook(allowed_hosts=["api.internal"])
        client = httpx.Client(event_hooks={"request": [hook]})
        async_client = httpx.AsyncClient(event_hooks={"request": [hook]})

    ``httpx`` calls it for each hop of a redirect: a hop to a host that is not allowed
    has the headers this hook added taken off again.
    """

    __slots__ = ("allowed_hosts",)

    def __init__(self, allowed_hosts: Iterable[str] = ()) -> None:
        self.allowed_hosts = _Hosts.parse(allowed_hosts)

    def __call__(self, request: httpx.Request) -> Awaitable[None]:
        try:
            self._apply(request)
        except Exception:
            _failed.warn("hook", "could not add context headers", exc_info=True)
        return _DONE

    def _apply(self, request: httpx.Request) -> None:
        headers = request.headers
        added: dict[str, str] = request.extensions.get(_ADDED) or {}
        url = str(request.url)
        if added and (this_thread.in_library or not self.allowed_hosts.allow(url)):
            for name, value in added.items():  # a redirect away from the allowed hosts
                if headers.get(name) == value:
                    del headers[name]
            request.extensions[_ADDED] = {}
            return
        missing = _missing(url, headers.__contains__, self.allowed_hosts)
        if missing:
            headers.update(missing)
            request.extensions[_ADDED] = {**added, **missing}

    def __repr__(self) -> str:
        return f"<httpx_request_hook {self.allowed_hosts!r}>"
