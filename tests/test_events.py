"""The event builder: the documented precedence whatever the properties and context,
and values the JSON encoder has no rule for made safe by the library's own."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import threading
import time
import uuid
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posthog_logging.contexts import ContextState
from posthog_logging.events import EventBuilder, PendingEvent
from posthog_logging.ids import uuid7
from posthog_logging.serialisation import DEFAULT_REDACT_KEYS, Redactor, is_plain, to_jsonable

from .forking import fork_with_threads, needs_fork, run_in_fork

# Keys that collide with the layers above and below an event's own properties.
KEYS = st.one_of(
    st.sampled_from(["page", "plan", "$os", "$lib", "$session_id", "password", "n", ""]),
    st.text(max_size=8),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
)
VALUES = st.one_of(
    SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(KEYS, SCALARS, max_size=3)
)
PROPS = st.one_of(st.none(), st.dictionaries(KEYS, VALUES, max_size=6))
NAMES = st.text(min_size=1, max_size=10)
CONTEXTS = st.builds(
    ContextState,
    distinct_id=st.one_of(st.none(), st.sampled_from(["user_42", "null", "x" * 250])),
    session_id=st.one_of(st.none(), st.just("01929c8e-0000-7000-8000-000000000001")),
    tags=st.dictionaries(KEYS, VALUES, max_size=3).map(MappingProxyType),
)


LIBRARY_OWNED = {"$lib", "$lib_version", "$is_server", "$groups", "$process_person_profile"}


def expected_properties(
    super_properties: dict[str, Any] | None,
    context: ContextState,
    props: dict[str, Any] | None,
    groups: dict[str, Any] | None,
    personless: bool,
) -> dict[str, Any]:
    """The documented precedence, written out on its own: library defaults, then
    super_properties, the context's tags, its session, the call's own, what the library
    owns; each layer made JSON-safe by the usual rules, as the server reads them."""
    redactor = Redactor(DEFAULT_REDACT_KEYS)
    merged: dict[str, Any] = {}
    for layer in (
        super_properties or {},
        dict(context.tags),
        {"$session_id": context.session_id} if context.session_id else {},
        props or {},
    ):
        merged.update(to_jsonable(layer, redactor=redactor))
    merged.update({"$lib": "posthog-logging", "$is_server": True})
    if groups:
        merged["$groups"] = groups
    if personless:
        merged["$process_person_profile"] = False
    return merged


def same(a: Any, b: Any) -> bool:
    """Equal, counting NaN equal to itself (it never gets this far, but be exact)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def strict_json(payload: bytes) -> Any:
    """Parse as PostHog does: NaN and infinities are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in the payload")

    return json.loads(payload.decode("utf-8"), parse_constant=refuse)


class TestPrecedence:
    @settings(max_examples=300, deadline=None)
    @given(
        name=NAMES,
        props=PROPS,
        explicit=st.one_of(st.none(), st.sampled_from(["other", 7])),
        groups=st.one_of(st.none(), st.just({"company": "acme"})),
        contexts=st.lists(CONTEXTS, min_size=1, max_size=3),
        super_properties=st.one_of(st.none(), st.just({"app": "shop", "$os": "Plan9"})),
    )
    def test_each_layer_in_its_place(
        self,
        name: str,
        props: dict[str, Any] | None,
        explicit: Any,
        groups: dict[str, Any] | None,
        contexts: list[ContextState],
        super_properties: dict[str, Any] | None,
    ) -> None:
        """Whatever the properties, context and super_properties (keys that collide
        across layers, secrets, NaN, big integers, nested values), the event carries
        the documented precedence, as strict JSON."""
        builder = EventBuilder(
            super_properties=super_properties, redactor=Redactor(DEFAULT_REDACT_KEYS)
        )
        now = time.time()
        for context in contexts * 2:
            pending = PendingEvent(
                name, dict(props) if props else None, explicit, context, now, uuid7(now), groups
            )
            built = strict_json(builder.build(pending))
            person = "other" if explicit == "other" else "7" if explicit == 7 else None
            person = person or context.distinct_id
            expected = expected_properties(
                super_properties, context, props, groups, personless=person is None
            )
            got = built["properties"]
            for key, value in expected.items():
                assert same(got[key], value), key
            assert set(got) - set(expected) <= {
                "$python_version",
                "$python_runtime",
                "$os",
                "$os_version",
                "$geoip_disable",
                "$lib_version",
                "$context_tags",
            }
            if context.tags:  # the names of the tags it got, as the official SDK sends
                assert got["$context_tags"] == [str(key) for key in context.tags]
            else:
                assert "$context_tags" not in got
            assert built["event"] == name
            assert built["uuid"] == pending.uuid
            assert built["distinct_id"] == (person[:200] if person else pending.uuid)

    def test_a_tag_that_the_event_sets_too(self) -> None:
        """The event's own value wins over the context's tag of the same name, and the
        tag's value is not sent twice."""
        builder = EventBuilder()
        context = ContextState("user_42", None, MappingProxyType({"plan": "free", "a": 1}), True, 1)
        now = time.time()
        for plan in ("pro", "team"):
            pending = PendingEvent("e", {"plan": plan}, None, context, now, uuid7(now))
            payload = builder.build(pending)
            assert payload.count(b'"plan":') == 1
            assert json.loads(payload)["properties"]["plan"] == plan
            assert json.loads(payload)["properties"]["a"] == 1

    def test_what_the_library_owns_wins(self) -> None:
        """``$lib`` and the person flag cannot be overridden by the call or the tags."""
        builder = EventBuilder(super_properties={"$lib": "mine"})
        context = ContextState(None, None, MappingProxyType({"$lib": "tag"}), True, 1)
        own = {"$lib": "own", "$process_person_profile": True, "$is_server": False}
        built = json.loads(builder.build(PendingEvent("e", own, None, context, 1.7e9, None)))
        props = built["properties"]
        assert props["$lib"] == "posthog-logging"
        assert props["$process_person_profile"] is False and props["$is_server"] is True


class TestHostileValues:
    """Values the C encoder has no rule for, or would get wrong, arrive as the rules say."""

    def build(self, props: dict[Any, Any]) -> dict[str, Any]:
        builder = EventBuilder(redactor=Redactor(DEFAULT_REDACT_KEYS))
        pending = PendingEvent("e", props, "user_42", ContextState(), 1.7e9, None)
        properties: dict[str, Any] = strict_json(builder.build(pending))["properties"]
        return properties

    def test_scalars_json_cannot_hold(self) -> None:
        got = self.build(
            {
                "nan": math.nan,
                "inf": -math.inf,
                "big": 2**70,
                "small": -(2**63) - 1,
                "u64": 2**64 - 1,
                "dec": decimal.Decimal("1.5"),
            }
        )
        assert got["nan"] == "NaN" and got["inf"] == "-Infinity"
        assert got["big"] == str(2**70) and got["small"] == str(-(2**63) - 1)
        assert got["u64"] == 2**64 - 1 and got["dec"] == 1.5

    def test_objects_and_containers(self) -> None:
        cycle: dict[str, Any] = {}
        cycle["self"] = cycle
        got = self.build(
            {
                "bytes": b"ab",
                "set": {2, 1},
                "when": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
                "id": uuid.UUID(int=1),
                "cycle": cycle,
                1: "int key",
                "nested": {"password": "x", "n": [1, math.nan]},
                "obj": object.__new__(Unprintable),
            }
        )
        assert got["bytes"] == "YWI=" and got["set"] == [1, 2]
        assert got["when"] == "2024-01-02T03:04:05+00:00"
        assert got["id"] == "00000000-0000-0000-0000-000000000001"
        assert got["cycle"] == {"self": "[Circular]"}
        assert got["1"] == "int key"
        assert got["nested"] == {"password": "[Filtered]", "n": [1, "NaN"]}
        assert got["obj"].startswith("<tests.test_events.Unprintable object")

    def test_lone_surrogates_become_question_marks(self) -> None:
        got = self.build({"text": "a\ud800b", "k\udfff": 1})
        assert got["text"] == "a?b" and got["k?"] == 1

    def test_secrets_and_long_strings(self) -> None:
        got = self.build({"api_key": "phc_x", "long": "x" * 70_000})
        assert got["api_key"] == "[Filtered]"
        assert got["long"].startswith("x" * 65_536) and "truncated" in got["long"]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


class TestIsPlain:
    def test_flat_scalars_are_plain(self) -> None:
        assert is_plain({"page": "/", "n": 3, "x": 1.5, "ok": True, "none": None})
        assert is_plain(MappingProxyType({"plan": "pro"}))

    def test_anything_to_convert_is_left_to_to_jsonable(self) -> None:
        """Secrets, non-string keys, containers, long strings, big ints, NaN: not plain."""
        redactor = Redactor(DEFAULT_REDACT_KEYS)
        for props in (
            {"password": "x"},
            {1: "x"},
            {"a": [1]},
            {"a": {"b": 1}},
            {"a": "x" * 70_000},
            {"a": 2**70},
            {"a": -(2**63) - 1},
            {"a": float("nan")},
            {"a": float("inf")},
            {"a": b"bytes"},
        ):
            assert not is_plain(props, redactor), props


class TestUuid7:
    def test_version_variant_and_time(self) -> None:
        """Every uuid is a valid version 7 uuid carrying its timestamp's milliseconds."""
        for moment in (0.0, 1.5, time.time()):
            for _ in range(2_000):
                text = uuid7(moment)
                parsed = uuid.UUID(text)
                assert str(parsed) == text
                assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
                assert int(text.replace("-", "")[:12], 16) == int(moment * 1000)

    def test_unique_across_threads(self) -> None:
        """Threads making uuids in the same millisecond never make the same one."""
        made: list[list[str]] = [[] for _ in range(4)]

        def make(into: list[str]) -> None:
            into.extend(uuid7(1.0) for _ in range(50_000))

        threads = [threading.Thread(target=make, args=(m,)) for m in made]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        every = [u for m in made for u in m]
        assert len(set(every)) == len(every) == 200_000

    def test_no_system_call_per_refill(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Making uuids never calls os.urandom, which gives up the GIL: a thread that
        logs in a tight loop would hand it back and forth and starve the sender."""

        def refused(n: int) -> bytes:
            raise AssertionError("os.urandom called while making uuids")

        monkeypatch.setattr(os, "urandom", refused)
        made = {uuid7(1.0) for _ in range(20_000)}  # refills the pool dozens of times
        assert len(made) == 20_000

    @needs_fork
    @fork_with_threads
    def test_a_forked_child_makes_other_uuids(self) -> None:
        """A child made by fork does not repeat the uuids its parent goes on to make."""
        uuid7(1.0)  # the parent's pool is in use when it forks
        child = run_in_fork(lambda: [uuid7(1.0) for _ in range(1_000)])
        parent = [uuid7(1.0) for _ in range(1_000)]
        assert not set(child) & set(parent)
