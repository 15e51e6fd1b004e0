"""Checking a capture request as PostHog's capture service does.

The body is decoded (gunzipped when it is gzip, by header or by its magic bytes), held
to PostHog's size limits, and split into its events, whatever its shape (a batch object,
a single event, or a list of events); the project key is checked, and then each event.
A request that fails is refused whole, as a `Rejection` carrying PostHog's status code,
error code and detail; details never quote the key.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import uuid
import zlib
from typing import Any

from ..wire import MAX_BODY_BYTES, MAX_EVENT_BYTES

__all__ = [
    "Rejection",
    "bearer",
    "check_key",
    "count_events",
    "decode_checked",
    "invalid",
    "split",
    "validate",
]

_MAX_KEY_LENGTH = 64
_EVENT_KEY_FIELDS = ("token", "$token", "api_key")  # where a single event may carry the key
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_UUID = re.compile(r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}|[0-9a-f]{32}", re.I)


class Rejection(Exception):
    """A request we refuse, with PostHog's status code. Details never quote the key."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail

    def body(self) -> bytes:
        reply = {"type": "validation_error", "code": self.code, "detail": self.detail}
        return json.dumps(reply).encode()


def invalid(detail: str) -> Rejection:
    return Rejection(400, "invalid_payload", detail)


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _stored_json(value: Any) -> str:
    """JSON as the store keeps it; an infinity (``1e400`` parses as one) is a ValueError."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN and Infinity; PostHog does not


def _decode(body: bytes, gzipped: bool) -> Any:
    return decode_checked(body, gzipped)[0]


def decode_checked(
    body: bytes, gzipped: bool, limit: int = MAX_BODY_BYTES
) -> tuple[Any, bool, bool]:
    """The JSON payload, and whether its events need the size check (not when the whole
    body is under the limit for one event) and the Unicode check (not when it escapes no
    lone surrogate)."""
    body = unzip_checked(body, gzipped, limit)
    try:
        text = body.decode("utf-8")
        payload = json.loads(text, parse_constant=_reject_constant)
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        raise invalid("the body is not valid UTF-8 JSON") from None
    return payload, len(body) > MAX_EVENT_BYTES, bool(_SURROGATE_ESCAPE.search(text))


def unzip_checked(body: bytes, gzipped: bool, limit: int) -> bytes:
    """The body, gunzipped if it says so, refused when empty or over ``limit`` bytes
    (before and after gunzipping)."""
    if not body:
        raise invalid("the request body is empty")
    if len(body) > limit:
        raise Rejection(413, "payload_too_large", f"the body is over {limit // 2**20} MB")
    if gzipped:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(body)) as unzipped:
                body = unzipped.read(limit + 1)  # bounded: a small body may expand a lot
        except (OSError, EOFError, zlib.error):
            raise invalid("the body is not valid gzip") from None
        if len(body) > limit:
            detail = f"the body is over {limit // 2**20} MB once gunzipped"
            raise Rejection(413, "payload_too_large", detail)
    return body


def count_events(body: bytes | Rejection, gzipped: bool) -> int:
    """How many events *body* carries, or 0 when it cannot be decoded."""
    if isinstance(body, Rejection):
        return 0
    try:
        return len(split(_decode(body, gzipped))[1])
    except Rejection:
        return 0


def split(payload: Any) -> tuple[Any, list[Any]]:
    """The request-level key (None when the events carry it) and the events, for each shape."""
    if isinstance(payload, list):
        return None, payload
    if not isinstance(payload, dict):
        raise invalid("the body is neither a JSON object nor a list of events")
    if "batch" not in payload:
        return None, [payload]
    if not isinstance(payload["batch"], list):
        raise invalid("'batch' is not a list")
    key = payload.get("api_key")
    return (key if key is not None else payload.get("token")), payload["batch"]


def _event_key(event: Any) -> Any:
    if not isinstance(event, dict):
        return None
    for name in _EVENT_KEY_FIELDS:
        if event.get(name) is not None:
            return event[name]
    properties = event.get("properties")
    if isinstance(properties, dict) and isinstance(properties.get("token"), str):
        return properties["token"]
    return None


def bearer(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    if header is None:
        return None
    scheme, _, key = header.strip().partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


def check_key(top_level_key: Any, events: list[Any]) -> None:
    keys = [top_level_key] if top_level_key is not None else [_event_key(e) for e in events]
    keys = [key for key in keys if key is not None]
    if not keys:
        raise Rejection(401, "missing_api_key", "no API key: send the project key as 'api_key'")
    if not all(isinstance(key, str) for key in keys):
        raise Rejection(401, "invalid_api_key", "the API key is not a string")
    if len(set(keys)) > 1:
        raise invalid("the events carry different API keys")
    key: str = keys[0]
    if not key:
        raise Rejection(401, "invalid_api_key", "the API key is empty")
    if len(key) > _MAX_KEY_LENGTH:
        raise Rejection(401, "invalid_api_key", "the API key is over 64 characters")
    if not key.isascii() or "\0" in key:
        raise Rejection(401, "invalid_api_key", "the API key holds non-ASCII or NUL characters")
    if key.startswith("phx_"):
        raise Rejection(
            401, "invalid_api_key", "a personal API key cannot capture: use the project key"
        )


def _event_uuid(value: Any, where: object) -> str | None:
    if value is None or value == "":  # PostHog generates one for both
        return None
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise invalid(f"{where}: 'uuid' is not a valid UUID")
    if len(value) == 36 and value.islower():
        return value  # already in the canonical form
    return str(uuid.UUID(value))


def validate(
    index: int, raw: Any, check_size: bool = True, check_unicode: bool = True
) -> dict[str, Any]:
    """Check one event as PostHog does and return it in the store's form, without the key.

    The size check can be skipped for a body under the limit for one event, the Unicode
    check for a body that escapes no lone surrogate.
    """
    where = _Where(index)
    if not isinstance(raw, dict):
        raise invalid(f"{where} is not a JSON object")
    name = raw.get("event")
    if not isinstance(name, str) or not name:
        raise invalid(f"{where} has no 'event' name (a non-empty string)")
    properties = raw.get("properties", {})
    if not isinstance(properties, dict):
        raise invalid(f"{where}: 'properties' is not an object")
    found = raw.get("distinct_id")
    if found is None:
        found = raw.get("$distinct_id")
        if found is None:
            found = properties.get("distinct_id")
    distinct_id = found if isinstance(found, str) or found is None else _compact_json(found)
    if not distinct_id:
        raise invalid(f"{where} has no 'distinct_id'")
    event_uuid = _event_uuid(raw.get("uuid"), where)
    timestamp = raw.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, str):
        raise invalid(f"{where}: 'timestamp' is not a string")
    if check_unicode:
        try:
            size = len(_compact_json(raw).encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
            raise invalid(f"{where} holds a string that is not valid Unicode") from None
        if size > MAX_EVENT_BYTES:
            raise Rejection(413, "event_too_large", f"{where} is over 1 MB")
    stored = properties
    if "token" in stored:
        stored = {key: value for key, value in properties.items() if key != "token"}
    for field in ("$set", "$set_once"):  # PostHog folds top-level person updates into properties
        if field in raw and field not in stored:
            stored = {**stored, field: raw[field]}
    try:
        text = _stored_json(stored)  # what the store keeps; no lone surrogate gets this far
    except ValueError:  # 1e400 parses as an infinity, which is not JSON
        raise invalid(f"{where} holds a number out of range") from None
    if check_size and not check_unicode and _size(raw, stored, text) > MAX_EVENT_BYTES:
        raise Rejection(413, "event_too_large", f"{where} is over 1 MB")
    return {
        "uuid": event_uuid,
        "event": name,
        "distinct_id": distinct_id,
        "timestamp": timestamp,
        "properties": stored,
        "properties_json": text,
    }


class _Where:
    """``event N`` for error messages, made only when one is."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __str__(self) -> str:
        return f"event {self.index}"


def _size(raw: dict[str, Any], stored: dict[str, Any], stored_json: str) -> int:
    """The size of an event's compact JSON, from its properties' JSON when those are
    stored as they came (they are nearly all of an event): the rest is encoded alone."""
    if stored is not raw.get("properties"):
        return len(_stored_json(raw).encode())
    rest = _stored_json({key: value for key, value in raw.items() if key != "properties"})
    comma = 1 if len(rest) > 2 else 0
    return len(rest.encode()) + comma + len('"properties":') + len(stored_json.encode())
