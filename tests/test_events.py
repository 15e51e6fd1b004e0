"""The event builder: its short way (JSON spliced from remembered pieces) sends exactly
what the general way (one dict, serialised) sends, whatever the properties and context."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from types import MappingProxyType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from posthog_logging.contexts import ContextState
from posthog_logging.events import EventBuilder, PendingEvent
from posthog_logging.ids import uuid7
from posthog_logging.serialisation import DEFAULT_REDACT_KEYS, Redactor, dumps, plain_json

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


def general(builder: EventBuilder, pending: PendingEvent) -> dict[str, Any]:
    """The event as the general way makes it, as the server would read it."""
    return json.loads(dumps(builder.to_dict(pending)))


def same(a: Any, b: Any) -> bool:
    """Equal, counting NaN equal to itself (it never gets this far, but be exact)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


class TestShortWay:
    @settings(max_examples=300, deadline=None)
    @given(
        name=NAMES,
        props=PROPS,
        explicit=st.one_of(st.none(), st.sampled_from(["other", 7])),
        groups=st.one_of(st.none(), st.just({"company": "acme"})),
        contexts=st.lists(CONTEXTS, min_size=1, max_size=3),
        super_properties=st.one_of(st.none(), st.just({"app": "shop", "$os": "Plan9"})),
    )
    def test_same_json_as_the_general_way(
        self,
        name: str,
        props: dict[str, Any] | None,
        explicit: Any,
        groups: dict[str, Any] | None,
        contexts: list[ContextState],
        super_properties: dict[str, Any] | None,
    ) -> None:
        """A run of events (so the remembered pieces are used, and then change) builds to
        the JSON the general way makes of each."""
        builder = EventBuilder(
            super_properties=super_properties, redactor=Redactor(DEFAULT_REDACT_KEYS)
        )
        reference = EventBuilder(
            super_properties=super_properties, redactor=Redactor(DEFAULT_REDACT_KEYS)
        )
        now = time.time()
        for context in contexts * 2:
            pending = PendingEvent(
                name, dict(props) if props else None, explicit, context, now, uuid7(now), groups
            )
            built = json.loads(builder.build(pending).payload)
            expected = general(reference, pending)
            assert built.keys() == expected.keys()
            assert built["properties"] == expected["properties"]
            for key in ("event", "distinct_id", "timestamp", "uuid"):
                assert same(built[key], expected[key])

    def test_a_tag_that_the_event_sets_too(self) -> None:
        """The event's own value wins over the context's tag of the same name, and the
        tag's value is not sent twice."""
        builder = EventBuilder()
        context = ContextState("user_42", None, MappingProxyType({"plan": "free", "a": 1}), True, 1)
        now = time.time()
        for plan in ("pro", "team"):
            pending = PendingEvent("e", {"plan": plan}, None, context, now, uuid7(now))
            payload = builder.build(pending).payload
            assert payload.count(b'"plan"') == 1
            assert json.loads(payload)["properties"]["plan"] == plan
            assert json.loads(payload)["properties"]["a"] == 1


class TestPlainJson:
    def test_flat_scalars_are_encoded_as_they_are(self) -> None:
        props = {"page": "/", "n": 3, "x": 1.5, "ok": True, "none": None}
        assert plain_json(props) == dumps(props).decode()

    def test_anything_to_convert_is_left_to_to_jsonable(self) -> None:
        """Secrets, non-string keys, containers, long strings, big ints, NaN: None."""
        redactor = Redactor(DEFAULT_REDACT_KEYS)
        for props in (
            {"password": "x"},
            {1: "x"},
            {"a": [1]},
            {"a": {"b": 1}},
            {"a": "x" * 70_000},
            {"a": 2**70},
            {"a": float("nan")},
            {"a": float("inf")},
            {"a": b"bytes"},
        ):
            assert plain_json(props, redactor) is None, props


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

    @needs_fork
    @fork_with_threads
    def test_a_forked_child_makes_other_uuids(self) -> None:
        """A child made by fork does not repeat the uuids its parent goes on to make."""
        uuid7(1.0)  # the parent's pool is in use when it forks
        child = run_in_fork(lambda: [uuid7(1.0) for _ in range(1_000)])
        parent = [uuid7(1.0) for _ in range(1_000)]
        assert not set(child) & set(parent)
