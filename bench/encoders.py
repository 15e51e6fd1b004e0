"""Which JSON encoder for the event path: the figures behind docs/decisions.md.

Encodes one of our events (a handler's marked record in a context, as ``EventBuilder``
makes it) with the standard library, orjson and msgspec, side by side in one process
(median of repeats), then shows what each does with values JSON has no rule for.

    python bench/encoders.py
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from posthog_logging.contexts import (
    current_state,
    identify_context,
    new_context,
    set_context_session,
    tag,
)
from posthog_logging.events import EventBuilder, PendingEvent
from posthog_logging.serialisation import (
    DEFAULT_REDACT_KEYS,
    Redactor,
    jsonable_mapping,
    to_jsonable,
)

try:
    import msgspec
except ImportError:  # pragma: no cover - the bench extra installs it
    msgspec = None


def our_event() -> dict[str, Any]:
    """A marked log record's event in a context with an identity, a session and tags."""
    with new_context():
        identify_context("user_42")
        set_context_session("01929c8e-0000-7000-8000-000000000001")
        tag("plan", "pro")
        tag("request_id", "req_1")
        properties = {"page": "/pricing", "items": 3, "value": 49.9, "ok": True, "ref": None}
        pending = PendingEvent("page_viewed", properties, None, current_state(), time.time(), None)
        return EventBuilder().to_dict(pending)


def encoders() -> dict[str, Callable[[Any], bytes]]:
    found: dict[str, Callable[[Any], bytes]] = {
        "json.dumps": lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode(),
        "orjson": orjson.dumps,
    }
    if msgspec is not None:
        found["msgspec"] = msgspec.json.Encoder().encode
    return found


def per_call(fn: Callable[[Any], bytes], value: Any, number: int = 20_000) -> float:
    """Median seconds per call over 7 repeats."""
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(number):
            fn(value)
        runs.append((time.perf_counter() - start) / number)
    return statistics.median(runs)


class Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


class Tag(str):
    pass


def hostile() -> dict[str, Any]:
    loop: list[Any] = []
    loop.append(loop)
    return {
        "NaN": math.nan,
        "infinity": math.inf,
        "2**70": 2**70,
        "lone surrogate": "a\ud800b",
        "Decimal": decimal.Decimal("1.5"),
        "bytes": b"ab",
        "set": {1, 2},
        "int key": {1: "a"},
        "cycle": loop,
        "str subclass": Tag("x"),
        "enum": Colour.RED,
        "dataclass": Point(1),
        "aware datetime": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        "UUID": uuid.UUID(int=1),
    }


def outcome(fn: Callable[[Any], bytes], value: Any) -> str:
    try:
        return fn({"v": value}).decode("utf-8", "replace")[5:-1]
    except BaseException as exc:  # RecursionError too
        return f"raises {type(exc).__name__}"


def main() -> None:
    event = our_event()
    found = encoders()
    size = len(orjson.dumps(event))
    print(f"one event ({len(event['properties'])} properties, {size} bytes), per call, median:")
    times = {name: per_call(fn, event) for name, fn in found.items()}
    base = times["json.dumps"]
    for name, t in times.items():
        print(f"  {name:<12} {t * 1e6:6.2f} us   {t / base:5.2f}x json.dumps")
    # The one short way left on the event path: flat plain properties are merged as they
    # are, once is_plain says to_jsonable would leave them unchanged.
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    properties = {"page": "/pricing", "plan": "pro", "items": 3, "value": 49.9, "ok": True}
    checked = per_call(lambda p: jsonable_mapping(p, redactor), properties)
    converted = per_call(lambda p: to_jsonable(p, redactor=redactor), properties)
    print("\nfive plain properties made JSON-safe, per call, median:")
    print(f"  {'checked (is_plain)':<22} {checked * 1e6:6.2f} us")
    print(f"  {'copied (to_jsonable)':<22} {converted * 1e6:6.2f} us")
    print("\nvalues without a JSON rule:")
    names = list(found)[1:]
    print(f"  {'value':<16}" + "".join(f"{n:<28}" for n in names))
    for label, value in hostile().items():
        print(f"  {label:<16}" + "".join(f"{outcome(found[n], value)[:26]:<28}" for n in names))


if __name__ == "__main__":
    main()
