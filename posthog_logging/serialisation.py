"""Make any Python value safe to send as a PostHog property, and keep secrets out.

:func:`to_jsonable` turns a value of any type into plain JSON data (dict, list, str,
int, float, bool, None) without ever raising. Leaf objects that JSON does not know
(datetimes, enums, bytes, dataclasses, exceptions, UUIDs, ...) go through
python-json-logger's encoder, so a property looks the same as it would in a JSON log
line. On top of that this module handles what an encoder alone cannot: cycles, NaN and
infinities (not valid JSON), non-string keys, sets, very deep nesting, huge strings, and
values under secret-looking keys, which become ``"[Filtered]"``.

:func:`dumps` is the one place a value becomes JSON text for the wire.
"""

from __future__ import annotations

import decimal
import enum
import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pythonjsonlogger.json import JsonEncoder

__all__ = [
    "DEFAULT_REDACT_KEYS",
    "FILTERED",
    "Redactor",
    "as_text",
    "dumps",
    "to_jsonable",
]

FILTERED = "[Filtered]"

#: Key words whose values are replaced by ``"[Filtered]"`` by default. A key matches when
#: these words appear in it as whole words, whatever the case or separator:
#: ``password``, ``userPassword``, ``X-Api-Key``, ``access_token`` and ``set-cookie``
#: match, while ``tokens_used`` and ``author`` do not.
DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "authorization",
    "cookie",
    "credential",
    "credentials",
    "session_key",
    "csrf",
    "xsrf",
    "jwt",
    "bearer",
    "dsn",
)

MAX_STRING_LENGTH = 65_536
MAX_DEPTH = 32
MAX_ITEMS = 10_000

_INT_RANGE = 2**64
_encoder = JsonEncoder()
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def _words(key: str) -> str:
    """``'X-ApiKey'`` -> ``'_x_api_key_'``: a key as whole words, for matching."""
    spaced = _CAMEL_BOUNDARY.sub("_", key).lower()
    return "_" + "_".join(w for w in _NON_WORD.split(spaced) if w) + "_"


class Redactor:
    """Decides which property keys hold secrets. Configured once, cheap to call."""

    __slots__ = ("_is_secret", "_patterns")

    def __init__(self, keys: Iterable[str] | None = DEFAULT_REDACT_KEYS) -> None:
        if isinstance(keys, str):
            raise TypeError("redact_keys must be a list of key words, not a single string")
        self._patterns = tuple(_words(k) for k in (keys or ()) if k.strip("_- "))
        self._is_secret = functools.lru_cache(maxsize=4096)(self._match)

    def _match(self, key: str) -> bool:
        words = _words(key)
        return any(p in words for p in self._patterns)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def is_secret(self, key: str) -> bool:
        """True when values under ``key`` must be sent as ``"[Filtered]"``."""
        return bool(self._patterns) and self._is_secret(key)


_NO_REDACTION = Redactor(())


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"...[truncated {len(text) - limit} chars]"


def _huge_int(value: int) -> str:
    """Integers beyond 64 bits: as text (PostHog would read them as lossy floats).

    Past Python's limit on int-to-decimal conversion (4,300 digits), as hex.
    """
    try:
        return str(value)
    except ValueError:
        return hex(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if type(key) is int:
        return str(key) if -_INT_RANGE <= key < _INT_RANGE else _huge_int(key)
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key) if not isinstance(key, float) or math.isfinite(key) else str(key)
    return _safe_str(key)


def as_text(value: Any) -> str:
    """``str(value)`` that never raises: integers past Python's digit limit in hex, an
    object whose ``__str__`` fails as its default ``repr``. For identifiers (distinct_ids,
    session ids), which must be text on the wire."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return _huge_int(value)
    return _safe_str(value)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return object.__repr__(value)
        except Exception:  # pragma: no cover - object.__repr__ does not fail in practice
            return "[unprintable]"


def to_jsonable(
    value: Any,
    *,
    redactor: Redactor = _NO_REDACTION,
    max_string_length: int = MAX_STRING_LENGTH,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Return ``value`` as plain JSON data. Never raises.

    - mappings become dicts with string keys; lists, tuples, sets and other iterables
      of known kinds become lists (at most ``MAX_ITEMS`` items each);
    - NaN and infinities become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
    - ``Decimal`` becomes a float when finite; other unknown objects go through
      python-json-logger's encoder (ISO dates, enum values, base64 bytes, dataclass
      fields, exception text, ``str()`` for the rest);
    - a container met again inside itself becomes ``"[Circular]"``; nesting deeper than
      ``max_depth`` becomes ``"[MaxDepth]"``; strings are cut at ``max_string_length``;
    - values under keys the ``redactor`` flags become ``"[Filtered]"``.
    """
    return _convert(value, redactor, max_string_length, max_depth, set())


def _convert(value: Any, redactor: Redactor, limit: int, depth: int, path: set[int]) -> Any:
    # The common cases first, and cheaply.
    if value is None or value is True or value is False:
        return value
    cls = type(value)
    if cls is str:
        return value if len(value) <= limit else _truncate(value, limit)
    if cls is int:
        return value if -_INT_RANGE <= value < _INT_RANGE else _huge_int(value)
    if cls is float:
        return value if math.isfinite(value) else _nonfinite(value)
    if depth <= 0:
        return "[MaxDepth]"
    try:
        if isinstance(value, Mapping):
            return _convert_mapping(value, redactor, limit, depth, path)
        if isinstance(value, (list, tuple, set, frozenset)):
            return _convert_items(value, redactor, limit, depth, path)
        if isinstance(value, str):  # str subclasses
            return _convert(str.__str__(value), redactor, limit, depth, path)
        if isinstance(value, enum.Enum):
            return _convert(value.value, redactor, limit, depth - 1, path)
        if isinstance(value, int):  # bool and other int subclasses
            if isinstance(value, bool):
                return bool(value)
            return _convert(int(value), redactor, limit, depth, path)
        if isinstance(value, float):
            return _convert(float(value), redactor, limit, depth, path)
        if isinstance(value, decimal.Decimal):
            return float(value) if value.is_finite() else _nonfinite(float(value))
        encoded = _encoder.default(value)
    except Exception:
        return _fallback(value, limit)
    if encoded is value:  # an encoder that hands the object back would loop
        return _fallback(value, limit)
    return _convert(encoded, redactor, limit, depth - 1, path)


def _convert_mapping(
    value: Mapping[Any, Any], redactor: Redactor, limit: int, depth: int, path: set[int]
) -> Any:
    ident = id(value)
    if ident in path:
        return "[Circular]"
    path.add(ident)
    try:
        out: dict[str, Any] = {}
        for n, (k, v) in enumerate(value.items()):
            if n >= MAX_ITEMS:
                out["[truncated]"] = f"{len(value) - MAX_ITEMS} more items"
                break
            key = _key(k)
            if len(key) > limit:
                key = _truncate(key, limit)
            if redactor and redactor.is_secret(key):
                out[key] = FILTERED
            else:
                out[key] = _convert(v, redactor, limit, depth - 1, path)
        return out
    finally:
        path.discard(ident)


def _convert_items(
    value: Iterable[Any], redactor: Redactor, limit: int, depth: int, path: set[int]
) -> Any:
    ident = id(value)
    if ident in path:
        return "[Circular]"
    path.add(ident)
    try:
        items = value
        if isinstance(value, (set, frozenset)):
            try:
                items = sorted(value)
            except Exception:
                items = list(value)
        out = []
        for n, item in enumerate(items):
            if n >= MAX_ITEMS:
                out.append(f"[truncated: {len(value) - MAX_ITEMS} more items]")  # type: ignore[arg-type]
                break
            out.append(_convert(item, redactor, limit, depth - 1, path))
        return out
    finally:
        path.discard(ident)


def _nonfinite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _fallback(value: Any, limit: int) -> str:
    text = _safe_str(value)
    return text if len(text) <= limit else _truncate(text, limit)


def dumps(data: Any) -> bytes:
    """JSON-encode already :func:`to_jsonable` data to UTF-8 bytes.

    Lone surrogates (invalid in UTF-8, rejected by PostHog) become ``?``.
    """
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8", "replace")
