"""Fuzzing delivery end to end: whatever is captured is accepted by the server.

Hypothesis generates arbitrary event names, distinct_ids and property values (nested
values of any kind, huge ints, NaN, lone surrogates, bytes, sets, non-string keys,
datetimes, Decimals, very deep nesting, strings of several MB, cycles) and sends them
through a real client, or through the logging bridge, to the local server. The
properties: ``capture()`` never raises (except the documented TypeError/ValueError for a
bad event name), every captured event is stored, and no request is refused.

One server (and one client of each kind) serves every example of the module, so that
examples stay cheap; each example starts by clearing the server.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonjsonlogger.core import RESERVED_ATTRS

from posthog_logging import Client, PostHogHandler
from posthog_logging.server import LocalServer

from .conftest import API_KEY
from .helpers import ReprOnly

# -- fixtures: one server and one client of each kind for the whole module ----------------


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A local server shared by every example of the module."""
    with LocalServer("127.0.0.1", 0, data_dir=tmp_path_factory.mktemp("fuzz")) as srv:
        yield srv


@pytest.fixture(scope="module")
def sync_client(fuzz_server: LocalServer) -> Iterator[Client]:
    """A client that sends each event in its own request before ``capture()`` returns."""
    client = Client(API_KEY, host=fuzz_server.url, sync_mode=True)
    yield client
    client.shutdown(timeout=2)


@pytest.fixture(scope="module")
def batch_client(fuzz_server: LocalServer) -> Iterator[Client]:
    """A client that batches events on its sender thread."""
    client = Client(API_KEY, host=fuzz_server.url, flush_interval=0.05, flush_at=50)
    yield client
    client.shutdown(timeout=2)


@pytest.fixture(scope="module")
def fuzz_logger(sync_client: Client) -> Iterator[logging.Logger]:
    """A logger whose records go to a PostHogHandler on ``sync_client``, and nowhere else.

    It is made outside logging's registry, so that pytest's log capture does not attach to
    it: the fuzzed messages hold lone surrogates, which a test report cannot carry.
    """
    handler = PostHogHandler(client=sync_client)
    log = logging.Logger(f"test.fuzz.{uuid.uuid4().hex[:8]}", logging.DEBUG)
    log.propagate = False
    log.addHandler(handler)
    yield log
    log.removeHandler(handler)
    handler.close()


# -- helpers ------------------------------------------------------------------------------


def on_the_wire(text: str) -> str:
    """``text`` as the server stores it: lone surrogates, invalid in UTF-8, become ``?``."""
    return text.encode("utf-8", "replace").decode("utf-8")


def expected_distinct_id(distinct_id: Any) -> str | None:
    """The distinct_id the server should store, or None for a personless event."""
    if distinct_id is None or (isinstance(distinct_id, str) and distinct_id == ""):
        return None
    text = distinct_id if isinstance(distinct_id, str) else str(distinct_id)
    return on_the_wire(text[:200])


def fresh(server: LocalServer) -> None:
    """Forget what earlier examples left on the server."""
    server.clear()


def assert_nothing_refused(server: LocalServer) -> None:
    """Every request since the last clear was answered 200."""
    statuses = [r.status for r in server.requests]
    assert statuses, "no request reached the server"
    assert set(statuses) == {200}, statuses


def check_stored(
    event: dict[str, Any],
    name: str,
    distinct_id: Any,
    properties: Any,
) -> None:
    """``event`` as stored matches what was captured."""
    assert event["event"] == on_the_wire(name[:200])
    expected = expected_distinct_id(distinct_id)
    props = event["properties"]
    if expected is None:
        assert event["distinct_id"] == event["uuid"]
        assert props["$process_person_profile"] is False
    else:
        assert event["distinct_id"] == expected
    if isinstance(properties, dict):
        for key in properties:
            # PostHog reads a "token" property as the project key and does not store it.
            if isinstance(key, str) and key != "token":
                assert on_the_wire(key) in props, key


# -- strategies ---------------------------------------------------------------------------

# Any code point, lone surrogates included.
_chars = st.characters(codec=None, exclude_categories=())
_text = st.text(_chars, max_size=30)
_nonempty_text = st.text(_chars, min_size=1, max_size=30)

_ints = (
    st.integers()
    | st.integers(min_value=-(2**300), max_value=2**300)  # well past 64 bits
    | st.integers(4_300, 6_000).map(lambda digits: 10**digits)  # past int->str's limit
    | st.sampled_from([2**63, 2**64, -(2**64) - 1, 2**64 - 1])
)
_timezones = st.none() | st.builds(
    dt.timezone, st.timedeltas(min_value=-dt.timedelta(hours=23), max_value=dt.timedelta(hours=23))
)


class Colour(enum.Enum):
    RED = "red"
    HUGE = 10**30


class Labelled:
    """An object that prints as the text it was given."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"Labelled({self.label!r})"


def nest(depth: int, kind: str) -> Any:
    """A value nested ``depth`` levels deep (lists, dicts, tuples, or all three)."""
    value: Any = "bottom"
    for level in range(depth):
        shape = kind if kind != "mixed" else ("list", "dict", "tuple")[level % 3]
        if shape == "list":
            value = [value]
        elif shape == "dict":
            value = {f"level{level}": value}
        else:
            value = (level, value)
    return value


_deep = st.builds(nest, st.integers(33, 150), st.sampled_from(["list", "dict", "tuple", "mixed"]))


@dataclasses.dataclass(frozen=True)
class Huge:
    """Stands for a string of a few MB, made only inside the test (see `materialise`).

    Hypothesis keeps what it generated for every example; holding the placeholder instead of
    the string keeps a long run's memory flat.
    """

    piece: str
    length: int

    def make(self) -> str:
        return (self.piece * (self.length // len(self.piece) + 1))[: self.length]


def materialise(mapping: Any) -> Any:
    """``mapping`` with each `Huge` value replaced by its string (anything else as is)."""
    if not isinstance(mapping, dict):
        return mapping
    return {k: v.make() if isinstance(v, Huge) else v for k, v in mapping.items()}


# Strings of a few MB, as top-level property values.
_huge_text = st.builds(
    Huge,
    st.sampled_from(["x", "\u00e9", "\U0001f600", "\ud800", "ab\udfff"]),
    st.integers(1_000_000, 2_000_000),
)

_hashables = st.recursive(
    st.none()
    | st.booleans()
    | _ints
    | st.floats()
    | _text
    | st.binary(max_size=8)
    | st.datetimes(timezones=_timezones)
    | st.uuids(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
_keys = _text | _hashables

_leaves = (
    st.none()
    | st.booleans()
    | _ints
    | st.floats()  # NaN, inf and -inf included
    | _text
    | st.binary(max_size=16)
    | st.datetimes(timezones=_timezones)
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.decimals()  # NaN, sNaN and infinities included
    | st.sampled_from([decimal.Decimal(t) for t in ("1e400", "-1e400", "1e-400", "-sNaN")])
    | st.uuids()
    | st.complex_numbers()
    | st.sampled_from(list(Colour))
    | st.builds(Labelled, _text)
    | st.just(ReprOnly())
    | _deep
)


@st.composite
def _cycles(draw: st.DrawFn, inner: st.SearchStrategy[Any]) -> Any:
    """A container that holds itself, directly or through another one."""
    payload = draw(inner)
    kind = draw(st.sampled_from(["dict", "list", "mutual"]))
    if kind == "dict":
        d: dict[str, Any] = {"payload": payload}
        d["self"] = d
        return d
    if kind == "list":
        items: list[Any] = [payload]
        items.append(items)
        return items
    a: dict[str, Any] = {"payload": payload}
    a["b"] = [a, {"a": a}]
    return a


_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(_keys, inner, max_size=5)
        | st.sets(_hashables, max_size=5)
        | st.frozensets(_hashables, max_size=5)
        | _cycles(inner)
    ),
    max_leaves=20,
)
# Strings of several MB only at the top level: a handful per event, not dozens.
_properties = st.none() | st.dictionaries(_keys, _values | _huge_text, max_size=8)
# Smaller ones when an example captures several events.
_batch_properties = st.none() | st.dictionaries(_keys, _values | _huge_text, max_size=3)
_groups = st.none() | st.dictionaries(_text, _values, max_size=3)

# Event names: any non-empty text, lone surrogates included, up to 10,000 characters.
_names = _nonempty_text | st.builds(
    lambda seed, length: (seed * (length // len(seed) + 1))[:length],
    _nonempty_text,
    st.integers(150, 10_000),
)
_bad_names = (
    st.just("") | st.none() | st.integers() | st.binary() | st.builds(Labelled, _text) | st.floats()
)

# distinct_ids: text, ints beyond 64 bits, floats, and objects that print as something.
# (Two kinds are left out and tested on their own below: an int too long to print and
# an object that prints as empty text or cannot be printed at all.)
_distinct_ids = (
    st.none()
    | _text
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats()
    | st.booleans()
    | st.uuids()
    | st.binary(max_size=8)
    | st.tuples(_text, st.integers())
    | st.sampled_from(list(Colour))
    | st.builds(Labelled, _nonempty_text)
    | st.builds(Labelled, st.integers(201, 1_000).map(lambda n: "L" * n))
)

# Extras for the logging bridge: anything a LogRecord takes as an attribute, except the
# standard attributes and the names the handler gives a meaning of their own.
_NOT_EXTRAS = frozenset(RESERVED_ATTRS) | {
    "message",
    "asctime",
    "taskName",
    "event",
    "distinct_id",
    "groups",
    "properties",
}
_extra_keys = _nonempty_text.filter(
    lambda k: k not in _NOT_EXTRAS and not k.startswith(("_", "posthog_"))
)
_extras = st.dictionaries(_extra_keys, _values | _huge_text, max_size=6)

FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- properties ---------------------------------------------------------------------------


class TestCaptureFuzz:
    @FUZZ
    @given(name=_names, properties=_properties, distinct_id=_distinct_ids, groups=_groups)
    def test_any_capture_is_stored_and_never_refused(
        self,
        fuzz_server: LocalServer,
        sync_client: Client,
        name: str,
        properties: Any,
        distinct_id: Any,
        groups: Any,
    ) -> None:
        """Arbitrary name, distinct_id, properties and groups: stored as sent, never a 400."""
        fresh(fuzz_server)
        properties = materialise(properties)
        uid = sync_client.capture(name, properties, distinct_id=distinct_id, groups=groups)
        assert isinstance(uid, str)
        [event] = fuzz_server.events()
        assert event["uuid"] == uid
        check_stored(event, name, distinct_id, properties)
        assert_nothing_refused(fuzz_server)

    @FUZZ
    @given(name=_bad_names, properties=st.none() | st.just({"k": 1}))
    def test_bad_event_name_raises_only_the_documented_error(
        self, fuzz_server: LocalServer, sync_client: Client, name: Any, properties: Any
    ) -> None:
        """A non-str event name raises TypeError, an empty one ValueError; nothing is sent."""
        fresh(fuzz_server)
        expected = ValueError if name == "" else TypeError
        with pytest.raises(expected):
            sync_client.capture(name, properties, distinct_id="u")
        assert fuzz_server.requests == []

    @FUZZ
    @given(
        events=st.lists(st.tuples(_names, _batch_properties, _distinct_ids), min_size=1, max_size=6)
    )
    def test_batched_captures_all_stored_once(
        self, fuzz_server: LocalServer, batch_client: Client, events: list[tuple[Any, ...]]
    ) -> None:
        """Arbitrary events batched together: after flush each is stored once; no 400."""
        fresh(fuzz_server)
        events = [(name, materialise(props), distinct_id) for name, props, distinct_id in events]
        uids = [
            batch_client.capture(name, props, distinct_id=distinct_id)
            for name, props, distinct_id in events
        ]
        assert all(isinstance(u, str) for u in uids)
        assert len(set(uids)) == len(uids)
        assert batch_client.flush(timeout=10)
        stored = {e["uuid"]: e for e in fuzz_server.wait_for_events(len(uids), timeout=10)}
        assert set(stored) == set(uids)
        for uid, (name, props, distinct_id) in zip(uids, events, strict=True):
            check_stored(stored[uid], name, distinct_id, props)
        assert_nothing_refused(fuzz_server)
        assert sum(r.event_count for r in fuzz_server.requests) == len(uids)


class TestLoggingBridgeFuzz:
    @FUZZ
    @given(
        name=_names,
        extras=_extras,
        level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]),
        marker_is_name=st.booleans(),
        distinct_id=_distinct_ids,
    )
    def test_any_marked_record_is_stored_and_never_refused(
        self,
        fuzz_server: LocalServer,
        fuzz_logger: logging.Logger,
        name: str,
        extras: dict[str, Any],
        level: int,
        marker_is_name: bool,
        distinct_id: Any,
    ) -> None:
        """A marked record with arbitrary extras becomes one stored event; never a 400."""
        fresh(fuzz_server)
        extra: dict[str, Any] = materialise(extras)
        if distinct_id is not None:
            extra["distinct_id"] = distinct_id
        if marker_is_name:
            extra["event"] = name
            fuzz_logger.log(level, "a message %s", "with args", extra=extra)
        else:
            extra["event"] = True
            fuzz_logger.log(level, name, extra=extra)
        [event] = fuzz_server.events()
        check_stored(event, name, distinct_id, extras)
        assert_nothing_refused(fuzz_server)


# -- the cases the properties leave out ---------------------------------------------------


class TestAwkwardDistinctIds:
    @pytest.mark.parametrize(
        "distinct_id",
        [10**5000, -(10**4301)],
        ids=["huge-positive", "huge-negative"],
    )
    def test_int_too_long_to_print_is_still_delivered(
        self, fuzz_server: LocalServer, batch_client: Client, distinct_id: int
    ) -> None:
        """An int distinct_id past Python's int->str digit limit does not lose the event."""
        fresh(fuzz_server)
        uid = batch_client.capture("huge_id", {"n": 1}, distinct_id=distinct_id)
        assert batch_client.flush(timeout=10)
        assert batch_client.capture("sentinel", distinct_id="u") is not None
        assert batch_client.flush(timeout=10)
        fuzz_server.wait_for_events(1, timeout=10, event="sentinel")
        [event] = fuzz_server.events(event="huge_id")
        assert event["uuid"] == uid
        assert event["distinct_id"]

    @pytest.mark.parametrize(
        "distinct_id",
        [Labelled(""), ReprOnly()],
        ids=["prints-empty", "unprintable"],
    )
    def test_object_printing_badly_does_not_lose_its_batch(
        self, fuzz_server: LocalServer, batch_client: Client, distinct_id: Any
    ) -> None:
        """A distinct_id printing as "" or raising in str() loses neither its event nor others."""
        fresh(fuzz_server)
        before = batch_client.capture("neighbour", {"n": 1}, distinct_id="u")
        odd = batch_client.capture("odd_id", {"n": 2}, distinct_id=distinct_id)
        after = batch_client.capture("neighbour", {"n": 3}, distinct_id="u")
        assert batch_client.flush(timeout=10)
        assert {e["uuid"] for e in fuzz_server.events(event="neighbour")} == {before, after}
        [event] = fuzz_server.events(event="odd_id")
        assert event["uuid"] == odd
        assert_nothing_refused(fuzz_server)
