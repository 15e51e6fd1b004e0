"""The HTTP transport: one POST of a batch to PostHog, and what came of it.

It knows bytes, URLs and status codes; nothing about logging, contexts or queues.
One keep-alive :class:`requests.Session` per transport. The API key goes where each
kind's endpoint wants it (see :mod:`~posthog_logging.delivery.kinds`) and never appears
in ``repr``, log lines or errors.

What a server can do to a request is bounded:

- **Redirects are not followed.** A 3xx is an error that names the ``Location``: following
  it would turn the POST into a GET (the batch lost, yet counted sent) or send the body,
  API key included, to whatever host the answer names.
- **A request has a total deadline**, not only one per read: ``requests`` times each read,
  so a server that drips a byte at a time could hold a request for as long as it likes.
  At the deadline a watchdog shuts the connection's socket, which ends any read or write
  in progress; :meth:`HTTPTransport.abort` does the same at once.
- **Only the first** :data:`MAX_ANSWER_BYTES` **of an answer are read**: enough for an
  error's detail; the connection of a longer answer is closed, not drained.
"""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import json
import socket
import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import requests
import requests.adapters
import urllib3.exceptions
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager, ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection

from .._version import __version__
from .kinds import Kind, default_service_name
from .transport import SendResult, parse_retry_after

__all__ = ["DEFAULT_HOST", "HTTPTransport"]

DEFAULT_HOST = "https://us.i.posthog.com"
USER_AGENT = f"posthog-logging/{__version__}"
#: Of an answer's body, at most this much is read.
MAX_ANSWER_BYTES = 64 * 1024


class HTTPTransport:
    """Posts each batch to ``{host}{kind.path}`` over one keep-alive
    :class:`requests.Session`, gzipped. Implements
    :class:`~posthog_logging.delivery.transport.Transport`."""

    def __init__(
        self,
        host: str,
        api_key: str,
        *,
        gzip: bool = True,
        service_name: str | None = None,
        resource: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.service_name = service_name or default_service_name()
        #: More attributes of the service, on log records (``service.version``, ...).
        self.resource = dict(resource or {})
        self.gzip = gzip
        self._api_key = api_key
        self._session: requests.Session | None = None
        self._in_flight: set[_Deadline] = set()

    def __repr__(self) -> str:
        return f"<HTTPTransport {self.host} gzip={self.gzip}>"

    def send(self, records: Sequence[bytes], kind: Kind, timeout: float) -> SendResult:
        """POST one batch. Never raises: failures come back as a :class:`SendResult`."""
        data, headers = kind.request(
            records, api_key=self._api_key, service_name=self.service_name, resource=self.resource
        )
        headers.update({"Content-Type": "application/json", "User-Agent": USER_AGENT})
        if self.gzip:
            # Level 1: event JSON is repetitive enough that it compresses about 20 times
            # at the fastest level, nearly as well as at 6, in under half the time.
            data = gzip_module.compress(data, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        session = self._session
        if session is None:
            session = self._session = _session()
        deadline = _Deadline(timeout)
        self._in_flight.add(deadline)
        try:
            with deadline:
                response = session.post(
                    self.host + kind.path,
                    data=data,
                    headers=headers,
                    timeout=timeout,
                    allow_redirects=False,
                    stream=True,  # read below, up to MAX_ANSWER_BYTES
                )
                try:
                    return self._result(response)
                finally:
                    response.close()
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            # requests' errors, and urllib3's and the socket's while the answer is read.
            # Only the exception's class: its text can contain the URL, never the key
            # (the key is in the body), but keep log lines short and predictable.
            error = "deadline passed" if deadline.expired else type(exc).__name__
            return SendResult(status=None, error=error)
        finally:
            self._in_flight.discard(deadline)

    def _result(self, response: requests.Response) -> SendResult:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        body, cut = _read_answer(response)  # for an error's detail; to reuse the connection
        error: str | None
        if 300 <= status < 400:
            location = response.headers.get("Location", "nowhere")
            error = f"redirect to {location[:200]}, not followed"
        else:
            error = None if status < 400 else _error_detail(body, cut, response, self._api_key)
        return SendResult(status=status, retry_after=retry_after, error=error)

    def abort(self) -> None:
        """End the requests in flight now (they come back as failed)."""
        for deadline in list(self._in_flight):
            deadline.expire()

    def close(self) -> None:
        """End the requests in flight and close the keep-alive connections."""
        self.abort()
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def reset_after_fork(self) -> None:
        """Forget connections inherited from the parent process (never reuse its sockets)."""
        self._session = None
        self._in_flight = set()


def _read_answer(response: requests.Response) -> tuple[bytes, bool]:
    """The start of an answer's body, and whether it was cut. A body read to its end
    frees the connection for the next request; a longer one is left unread, and its
    connection is closed."""
    raw = response.raw
    data: bytes = raw.read(MAX_ANSWER_BYTES + 1, decode_content=False)
    cut = len(data) > MAX_ANSWER_BYTES
    if cut:
        data = data[:MAX_ANSWER_BYTES]
        raw.close()
    else:
        raw.release_conn()  # read to the end: the connection can serve the next request
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "deflate") and data:
        inflate = zlib.decompressobj(47)
        try:  # at most MAX_ANSWER_BYTES out, however much the body would expand
            data = inflate.decompress(data, MAX_ANSWER_BYTES)
        except zlib.error:
            return b"", cut
        cut = cut or bool(inflate.unconsumed_tail)
    return data, cut


def _error_detail(body: bytes, cut: bool, response: requests.Response, secret: str) -> str | None:
    text = body.decode(response.encoding or "utf-8", "replace")
    if secret:  # a proxy could echo the body back: never let the key into a log line
        text = text.replace(secret, "[Filtered]")
        if cut:  # the end of a cut body may hold the start of a key the cut split
            text = text[: -len(secret)]
    try:
        detail = json.loads(text).get("detail")
        text = str(detail) if detail else ""
    except (ValueError, AttributeError):
        pass
    return text.strip()[:200] or None


# -- the deadline of a request ---------------------------------------------------------------


class _Watch(threading.local):
    deadline: _Deadline | None = None  # of the request this thread is sending


_watch = _Watch()


class _Deadline:
    """A request's total deadline: when it passes (or :meth:`expire` is called), the
    socket of the connection the request uses is shut, which ends a read or a write that
    is waiting. A timer thread keeps the time; connections report themselves through
    the thread-local :data:`_watch` as the request takes them."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.connection: HTTPConnection | None = None
        self._done = False
        self._timer: threading.Timer | None = None

    def __enter__(self) -> _Deadline:
        _watch.deadline = self
        timer = threading.Timer(self.seconds, self.expire)
        timer.daemon = True
        timer.name = "posthog_logging.deadline"
        try:
            timer.start()
        except RuntimeError:  # no new threads at interpreter exit: per-read timeouts only
            return self
        self._timer = timer
        return self

    def __exit__(self, *exc: object) -> None:
        self._done = True
        _watch.deadline = None
        if self._timer is not None:
            self._timer.cancel()

    def expire(self) -> None:
        """End the request now."""
        if self._done:
            return
        self.expired = True
        connection = self.connection
        sock = None if connection is None else connection.sock
        if sock is not None:
            # socket.shutdown wakes a thread blocked on this socket, where close() does
            # not. If the request finished meanwhile and the connection went back to the
            # pool, the pool sees it dropped and opens a new one: no harm done.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _WatchedConnection(HTTPConnection):
    """Reports itself to the deadline of the request that uses it."""

    def connect(self) -> None:
        _report(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _report(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


def _report(connection: HTTPConnection) -> None:
    deadline = _watch.deadline
    if deadline is not None:
        deadline.connection = connection


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connections that report to their request's deadline,
    direct or through an HTTP(S) proxy (not SOCKS: per-read timeouts only there)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _watch_pools(manager)
        return manager


def _watch_pools(manager: PoolManager) -> None:
    if type(manager) in (PoolManager, ProxyManager):
        manager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedHTTPSPool}


def _session() -> requests.Session:
    session = requests.Session()
    adapter = _Adapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
