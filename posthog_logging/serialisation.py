"""Make any Python value safe to send as a PostHog property, and keep secrets out.

:func:`to_jsonable` turns a value of any type into plain JSON data (dict, list, str,
int, float, bool, None) without ever raising. Leaf objects that JSON does not know
(datetimes, enums, bytes, dataclasses, exceptions, UUIDs, ...) go through
python-json-logger's encoder, so a property looks the same as it would in a JSON log
line. On top of that this module handles what an encoder alone cannot: cycles, NaN and
infinities (not valid JSON), non-string keys, sets, very deep nesting, huge strings, and
values under secret-looking keys, which become ``"[Filtered]"``.

:func:`dumps` is the one place a value becomes JSON for the wire, with orjson's C
encoder (see docs/decisions.md for why that one).
"""

from __future__ import annotations

import decimal
import enum
import json
import math
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import orjson
from pythonjsonlogger.json import JsonEncoder

__all__ = [
    "DEFAULT_REDACT_KEYS",
    "FILTERED",
    "Redactor",
    "as_text",
    "dumps",
    "is_plain",
    "jsonable_mapping",
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

#: Integers in this range are sent as numbers (what the encoder takes: int64 and uint64).
_INT_MIN = -(2**63)
_INT_END = 2**64
_MAX_KNOWN_KEYS = 4096
_encoder = JsonEncoder()
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def _words(key: str) -> str:
    """``'X-ApiKey'`` -> ``'_x_api_key_'``: a key as whole words, for matching."""
    spaced = _CAMEL_BOUNDARY.sub("_", key).lower()
    return "_" + "_".join(w for w in _NON_WORD.split(spaced) if w) + "_"


class Redactor:
    """Decides which property keys hold secrets. Configured once, cheap to call."""

    __slots__ = ("_known", "_known_sets", "_patterns")

    def __init__(self, keys: Iterable[str] | None = DEFAULT_REDACT_KEYS) -> None:
        if isinstance(keys, str):
            raise TypeError("redact_keys must be a list of key words, not a single string")
        self._patterns = tuple(_words(k) for k in (keys or ()) if k.strip("_- "))
        # Keys repeat from event to event: remember each answer (a bounded number of them).
        self._known: dict[str, bool] = {}
        self._known_sets: dict[tuple[Any, ...], bool] = {}

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def plain_keys(self, keys: tuple[Any, ...]) -> bool:
        """True when every key is a string, not too long and not secret: the keys of one
        call site's properties come again and again, so the answer is remembered."""
        known = self._known_sets.get(keys)
        if known is None:
            known = all(
                type(k) is str and len(k) <= MAX_STRING_LENGTH and not self.is_secret(k)
                for k in keys
            )
            if len(self._known_sets) < _MAX_KNOWN_KEYS:
                self._known_sets[keys] = known
        return known

    def is_secret(self, key: str) -> bool:
        """True when values under ``key`` must be sent as ``"[Filtered]"``."""
        known = self._known.get(key)
        if known is None:
            words = _words(key) if self._patterns else ""
            known = any(p in words for p in self._patterns)
            if len(self._known) < _MAX_KNOWN_KEYS:
                self._known[key] = known
        return known


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
        return str(key) if _INT_MIN <= key < _INT_END else _huge_int(key)
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
    collisions: list[str] | None = None,
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
    - values under keys the ``redactor`` flags become ``"[Filtered]"``;
    - two keys that become the same text (``1`` and ``"1"``) keep one value: a string
      key's, else the first one's. The other key is added to ``collisions``, if given.
    """
    if type(value) is dict and max_depth > 0:  # what properties nearly always are
        return _convert_mapping(value, redactor, max_string_length, max_depth, set(), collisions)
    return _convert(value, redactor, max_string_length, max_depth, set(), collisions)


def _convert(
    value: Any,
    redactor: Redactor,
    limit: int,
    depth: int,
    path: set[int],
    collisions: list[str] | None,
) -> Any:
    # The common cases first, and cheaply.
    if value is None or value is True or value is False:
        return value
    cls = type(value)
    if cls is str:
        return value if len(value) <= limit else _truncate(value, limit)
    if cls is int:
        return value if _INT_MIN <= value < _INT_END else _huge_int(value)
    if cls is float:
        return value if math.isfinite(value) else _nonfinite(value)
    if depth <= 0:
        return "[MaxDepth]"
    try:
        if cls is dict or isinstance(value, Mapping):
            return _convert_mapping(value, redactor, limit, depth, path, collisions)
        if isinstance(value, (list, tuple, set, frozenset)):
            return _convert_items(value, redactor, limit, depth, path, collisions)
        if isinstance(value, str):  # str subclasses
            return _convert(str.__str__(value), redactor, limit, depth, path, collisions)
        if isinstance(value, enum.Enum):
            return _convert(value.value, redactor, limit, depth - 1, path, collisions)
        if isinstance(value, int):  # bool and other int subclasses
            if isinstance(value, bool):
                return bool(value)
            return _convert(int(value), redactor, limit, depth, path, collisions)
        if isinstance(value, float):
            return _convert(float(value), redactor, limit, depth, path, collisions)
        if isinstance(value, decimal.Decimal):
            if not value.is_finite():
                return _nonfinite(float(value))
            number = float(value)  # beyond a float's range: its text, not "Infinity"
            return number if math.isfinite(number) else _fallback(value, limit)
        encoded = _encoder.default(value)
    except Exception:
        return _fallback(value, limit)
    if encoded is value:  # an encoder that hands the object back would loop
        return _fallback(value, limit)
    return _convert(encoded, redactor, limit, depth - 1, path, collisions)


def _convert_mapping(
    value: Mapping[Any, Any],
    redactor: Redactor,
    limit: int,
    depth: int,
    path: set[int],
    collisions: list[str] | None,
) -> Any:
    ident = id(value)
    if ident in path:
        return "[Circular]"
    path.add(ident)
    try:
        out: dict[str, Any] = {}
        is_secret = redactor.is_secret
        n = 0
        for k, v in value.items():
            if n >= MAX_ITEMS:
                out["[truncated]"] = f"{len(value) - MAX_ITEMS} more items"
                break
            n += 1
            if type(k) is str:
                key = k
            else:
                key = _key(k)
                if key in out or key in value:  # "1" and 1: the str key's value wins
                    if collisions is not None:
                        collisions.append(key)
                    continue
            if len(key) > limit:
                key = _truncate(key, limit)
            if is_secret(key):
                out[key] = FILTERED
                continue
            # The scalars most properties are, without a call (as in _convert).
            cls = type(v)
            if cls is str:
                out[key] = v if len(v) <= limit else _truncate(v, limit)
            elif (
                v is None
                or cls is bool
                or (cls is int and _INT_MIN <= v < _INT_END)
                or (cls is float and v - v == 0.0)  # finite: inf - inf and nan - nan are nan
            ):
                out[key] = v
            else:
                out[key] = _convert(v, redactor, limit, depth - 1, path, collisions)
        return out
    finally:
        path.discard(ident)


def _convert_items(
    value: Iterable[Any],
    redactor: Redactor,
    limit: int,
    depth: int,
    path: set[int],
    collisions: list[str] | None,
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
            out.append(_convert(item, redactor, limit, depth - 1, path, collisions))
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
    """JSON-encode data to UTF-8 bytes: the one place a value becomes JSON for the wire.

    Plain data (:func:`is_plain` properties, :func:`to_jsonable` output) is encoded as
    it is, by orjson's C encoder. Anything it has no rule for (a big integer, a bytes
    value, a cycle) is made JSON-safe by :func:`to_jsonable` first; a lone surrogate
    (invalid in UTF-8, refused by PostHog) becomes ``?``. NaN and infinities must not
    reach here as floats: the encoder would write them as ``null``, where
    :func:`to_jsonable` keeps them as text.
    """
    try:
        encoded = orjson.dumps(data)
    except TypeError:  # orjson.JSONEncodeError: a value without an encoding rule
        safe = to_jsonable(data)
        try:
            encoded = orjson.dumps(safe)
        except TypeError:  # lone surrogates, the one thing to_jsonable leaves in place
            encoded = orjson.dumps(_without_surrogates(safe))
    # orjson hands back its whole working buffer (4 KiB at least) as the bytes object.
    # Records are held until sent, tens of thousands of them in a burst: a copy of the
    # right size keeps 500 bytes of event from holding 4 KiB of memory (8x the bound).
    return bytes(memoryview(encoded))


def _without_surrogates(data: Any) -> Any:
    """JSON-safe ``data`` with each lone surrogate in its text replaced by ``?``."""
    if type(data) is str:
        return data.encode("utf-8", "replace").decode("utf-8")
    if type(data) is dict:
        return {_without_surrogates(k): _without_surrogates(v) for k, v in data.items()}
    if type(data) is list:
        return [_without_surrogates(item) for item in data]
    return data


def is_plain(mapping: Mapping[str, Any], redactor: Redactor = _NO_REDACTION) -> bool:
    """Whether :func:`to_jsonable` would leave a flat dict as it is: string keys that
    are not secret, plain scalars within the limits. The usual properties are, and are
    then encoded with no copy made."""
    if not redactor.plain_keys(tuple(mapping)):
        return False
    limit = MAX_STRING_LENGTH
    for value in mapping.values():
        cls = type(value)
        if cls is str:
            if len(value) > limit:
                return False
        elif cls is float:
            if value - value != 0.0:  # NaN or an infinity
                return False
        elif cls is int:
            if not _INT_MIN <= value < _INT_END:
                return False
        elif value is not None and cls is not bool:
            return False
    return True


def jsonable_mapping(
    mapping: Mapping[Any, Any],
    redactor: Redactor = _NO_REDACTION,
    collisions: list[str] | None = None,
) -> Mapping[str, Any]:
    """A mapping of properties as JSON-safe data, to merge into an event: the mapping
    itself when it already is (a dict, or a context's read-only view of its tags, that
    :func:`is_plain` accepts: the usual case, no copy made), else what
    :func:`to_jsonable` makes of it."""
    if (type(mapping) is dict or type(mapping) is MappingProxyType) and is_plain(mapping, redactor):
        return mapping
    safe: dict[str, Any] = to_jsonable(mapping, redactor=redactor, collisions=collisions)
    return safe
