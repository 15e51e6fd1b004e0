"""The HTTP transport: one POST of a batch to PostHog's capture API, and what came of it.

It knows bytes, URLs and status codes; nothing about logging, contexts or queues.
One keep-alive :class:`requests.Session` per transport. The API key travels in the
body, as PostHog expects, and never appears in ``repr``, log lines or errors.
"""

from __future__ import annotations

import email.utils
import gzip as gzip_module
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import requests

from ._version import __version__
from .otlp import default_service_name, logs_body

__all__ = ["DEFAULT_HOST", "SendResult", "Transport", "parse_retry_after"]

DEFAULT_HOST = "https://us.i.posthog.com"
USER_AGENT = f"posthog-logging/{__version__}"


@dataclass(frozen=True)
class SendResult:
    """What one request came to. ``status`` is None when no answer arrived."""

    status: int | None
    retry_after: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The server accepted the batch."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Worth sending again later: no answer, 408, 429 or a 5xx."""
        return self.status is None or self.status in (408, 429) or self.status >= 500

    def describe(self) -> str:
        """A short text for log lines (never contains the API key)."""
        if self.status is None:
            return f"no answer ({self.error})"
        return f"HTTP {self.status}" + (f" ({self.error})" if self.error else "")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


#: What a batch carries, and so where it goes: events, or log lines for PostHog Logs.
EVENTS = "events"
LOGS = "logs"


class Transport:
    """Posts batches of already-serialised events to ``{host}/batch/``, and of log
    records (OTLP JSON) to ``{host}/i/v1/logs``."""

    def __init__(
        self,
        host: str,
        api_key: str,
        *,
        gzip: bool = True,
        timeout: float = 10.0,
        service_name: str | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.url = self.host + "/batch/"
        self.logs_url = self.host + "/i/v1/logs"
        self.service_name = service_name or default_service_name()
        self.gzip = gzip
        self.timeout = timeout
        self._key_json = json.dumps(api_key).encode()
        self._api_key = api_key
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"<Transport {self.url} gzip={self.gzip}>"

    def body(self, events: Sequence[bytes], sent_at: str) -> bytes:
        """The JSON body for ``events`` (each already JSON)."""
        return b"".join(
            (
                b'{"api_key":',
                self._key_json,
                b',"batch":[',
                b",".join(events),
                b'],"sent_at":"',
                sent_at.encode(),
                b'","historical_migration":false}',
            )
        )

    def send(
        self,
        events: Sequence[bytes],
        sent_at: str,
        timeout: float | None = None,
        kind: str = EVENTS,
    ) -> SendResult:
        """POST one batch. Never raises: failures come back as a :class:`SendResult`."""
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if kind == LOGS:  # the key goes in a header here, as OTLP exporters send it
            url, data = self.logs_url, logs_body(events, self.service_name)
            headers["Authorization"] = f"Bearer {self._api_key}"
        else:
            url, data = self.url, self.body(events, sent_at)
        if self.gzip:
            # Level 1: event JSON is repetitive enough that it compresses about 20 times
            # at the fastest level, nearly as well as at 6, in under half the time.
            data = gzip_module.compress(data, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        if self._session is None:
            self._session = requests.Session()
        try:
            response = self._session.post(
                url, data=data, headers=headers, timeout=timeout or self.timeout
            )
        except requests.RequestException as exc:
            # Only the exception's class: its text can contain the URL, never the key
            # (the key is in the body), but keep log lines short and predictable.
            return SendResult(status=None, error=type(exc).__name__)
        try:
            status = response.status_code
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            error = None if status < 400 else _error_detail(response, self._api_key)
        finally:
            response.close()
        return SendResult(status=status, retry_after=retry_after, error=error)

    def close(self) -> None:
        """Close the keep-alive connections."""
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def reset_after_fork(self) -> None:
        """Forget connections inherited from the parent process (never reuse its sockets)."""
        self._session = None


def _error_detail(response: requests.Response, secret: str) -> str | None:
    try:
        text = response.text  # whole: a key cut in two by a limit would escape the filter
    except Exception:
        return None
    if secret:  # a proxy could echo the body back: never let the key into a log line
        text = text.replace(secret, "[Filtered]")
    try:
        detail = json.loads(text).get("detail")
        text = str(detail) if detail else ""
    except (ValueError, AttributeError):
        pass
    return text.strip()[:200] or None
