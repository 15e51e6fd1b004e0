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
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pythonjsonlogger.json import JsonEncoder

__all__ = [
    "DEFAULT_REDACT_KEYS",
    "FILTERED",
    "Redactor",
    "as_text",
    "dumps",
    "dumps_text",
    "plain_json",
    "quote",
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
_MAX_KNOWN_KEYS = 4096
_encoder = JsonEncoder()
_WIRE_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _wire_encode() -> Callable[[Any], str]:
    """The wire encoder's C core, made once (``json.dumps`` and ``JSONEncoder.encode`` make
    it again on every call, which costs more than encoding a small event). No cycle check:
    :func:`to_jsonable` output has no cycles, and a cycle elsewhere fails as RecursionError.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        return _WIRE_ENCODER.encode
    try:
        # (markers, default, encoder, indent, key_separator, item_separator, sort_keys,
        #  skipkeys, allow_nan), as JSONEncoder.iterencode passes them
        args = (None, _WIRE_ENCODER.default, json.encoder.encode_basestring, None)
        core = make(*args, ":", ",", False, False, False)
        sample = {"a": [1, 2.5, None, True, "é\n"], "b": {}}
        if "".join(core(sample, 0)) != _WIRE_ENCODER.encode(sample):
            raise ValueError("unexpected output")
    except Exception:  # pragma: no cover - a Python whose C encoder differs
        return _WIRE_ENCODER.encode

    def encode(data: Any) -> str:
        if type(data) is str:  # the C core encodes containers only
            return _WIRE_ENCODER.encode(data)
        return "".join(core(data, 0))

    return encode


_encode = _wire_encode()
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
        return value if -_INT_RANGE <= value < _INT_RANGE else _huge_int(value)
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
                or (cls is int and -_INT_RANGE <= v < _INT_RANGE)
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
    """JSON-encode already :func:`to_jsonable` data to UTF-8 bytes.

    Lone surrogates (invalid in UTF-8, rejected by PostHog) become ``?``.
    """
    return _encode(data).encode("utf-8", "replace")


def plain_json(mapping: dict[str, Any], redactor: Redactor = _NO_REDACTION) -> str | None:
    """The JSON text of a flat dict that :func:`to_jsonable` would leave as it is (string
    keys that are not secret, plain scalars within the limits), or None when it would
    not: the short way for the usual properties, with no copy made."""
    if not redactor.plain_keys(tuple(mapping)):
        return None
    limit = MAX_STRING_LENGTH
    for value in mapping.values():
        cls = type(value)
        if cls is str:
            if len(value) > limit:
                return None
        elif cls is float:
            if value - value != 0.0:  # NaN or an infinity
                return None
        elif cls is int:
            if not -_INT_RANGE <= value < _INT_RANGE:
                return None
        elif value is not None and cls is not bool:
            return None
    return _encode(mapping)


def dumps_text(data: Any) -> str:
    """:func:`dumps` before the UTF-8 step, for callers that join JSON texts first."""
    return _encode(data)


#: A str as a JSON string (quotes and escapes), as :func:`dumps_text` writes it.
quote: Callable[[str], str] = json.encoder.encode_basestring
