"""Tests for posthog_logging.serialisation: any value becomes JSON, secrets stay out.

Unit tests of :func:`to_jsonable`, :func:`dumps` and :class:`Redactor`, a hypothesis
property over arbitrary nested values, and end-to-end checks through a real client and
the local server (what the server accepts and stores, what is dropped and counted).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json
import logging
import math
import pathlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posthog_logging.client import Client
from posthog_logging.serialisation import (
    DEFAULT_REDACT_KEYS,
    FILTERED,
    MAX_DEPTH,
    MAX_ITEMS,
    MAX_STRING_LENGTH,
    Redactor,
    dumps,
    to_jsonable,
)
from posthog_logging.server import LocalServer

from .helpers import Unprintable, delivered

# -- helpers ---------------------------------------------------------------------------


def strict_json(value: Any) -> str:
    """``value`` as JSON the way PostHog wants it: no NaN, no Infinity."""
    return json.dumps(value, allow_nan=False)


def roundtrip(value: Any, **options: Any) -> Any:
    """``to_jsonable`` then ``dumps`` then parse: what the server would read."""
    converted = to_jsonable(value, **options)
    strict_json(converted)
    return json.loads(dumps(converted).decode("utf-8"))


class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 3


class Fruit(str, enum.Enum):
    """A StrEnum-like enum (``enum.StrEnum`` is 3.11+)."""

    APPLE = "apple"


class Name(str):
    """A str subclass with its own ``__str__``."""

    def __str__(self) -> str:
        return "overridden"


@dataclasses.dataclass
class Point:
    x: int
    y: float
    label: str = "p"


@dataclasses.dataclass
class Node:
    name: str
    child: Any = None


# -- to_jsonable -----------------------------------------------------------------------


class TestCycles:
    def test_dict_in_itself(self) -> None:
        """A dict that contains itself becomes "[Circular]" where it recurs."""
        d: dict[str, Any] = {"a": 1}
        d["self"] = d
        assert roundtrip(d) == {"a": 1, "self": "[Circular]"}

    def test_list_in_itself(self) -> None:
        """A list that contains itself becomes "[Circular]" where it recurs."""
        items: list[Any] = [1]
        items.append(items)
        assert roundtrip(items) == [1, "[Circular]"]

    def test_mutual_cycle(self) -> None:
        """Two containers that contain each other are cut at the second visit."""
        a: dict[str, Any] = {}
        b: list[Any] = [a]
        a["b"] = b
        assert roundtrip(a) == {"b": ["[Circular]"]}
        assert roundtrip(b) == [{"b": "[Circular]"}]

    def test_shared_reference_is_not_a_cycle(self) -> None:
        """The same object twice side by side is repeated, not marked circular."""
        shared = {"k": 1}
        assert roundtrip({"a": shared, "b": shared, "c": [shared, shared]}) == {
            "a": {"k": 1},
            "b": {"k": 1},
            "c": [{"k": 1}, {"k": 1}],
        }

    def test_dataclass_cycle(self) -> None:
        """A dataclass that refers to itself does not raise and gives valid JSON."""
        node = Node("root")
        node.child = node
        result = roundtrip(node)
        assert result is not None


class TestNumbers:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")],
    )
    def test_non_finite_floats(self, value: float, expected: str) -> None:
        """NaN and infinities, invalid in JSON, become strings."""
        assert to_jsonable(value) == expected
        assert roundtrip({"v": [value]}) == {"v": [expected]}

    def test_finite_floats_and_ints_unchanged(self) -> None:
        """Ordinary numbers and booleans pass through as they are."""
        value = [0, -1, 2**63, 1.5, -0.0, True, False, None]
        assert to_jsonable(value) == value

    def test_decimal_finite(self) -> None:
        """A finite Decimal becomes a float."""
        result = to_jsonable(decimal.Decimal("12.25"))
        assert result == 12.25
        assert isinstance(result, float)

    def test_decimal_beyond_float_range_keeps_its_text(self) -> None:
        """A finite Decimal too large for a float is sent as its text, not "Infinity"."""
        assert to_jsonable({"n": decimal.Decimal("1E+400")}) == {"n": "1E+400"}
        assert dumps(to_jsonable(decimal.Decimal("-1E+400"))) == b'"-1E+400"'

    @pytest.mark.parametrize("text", ["NaN", "sNaN", "Infinity", "-Infinity"])
    def test_decimal_non_finite(self, text: str) -> None:
        """A non-finite Decimal (even a signalling NaN) becomes a string, never raises."""
        result = to_jsonable(decimal.Decimal(text))
        assert isinstance(result, str)
        strict_json(result)

    def test_float_and_int_subclasses(self) -> None:
        """Subclasses of int and float become plain numbers; bools stay bools."""

        class MyInt(int):
            pass

        class MyFloat(float):
            pass

        assert roundtrip([MyInt(7), MyFloat(2.5), MyFloat("nan")]) == [7, 2.5, "NaN"]

    def test_huge_int_is_valid_json(self) -> None:
        """An int too long for ``str()`` (over 4300 digits) still yields valid JSON."""
        huge = 10**5000
        result = to_jsonable({"n": huge, "l": [huge]})
        strict_json(result)
        dumps(result)

    def test_huge_int_key(self) -> None:
        """An int too long for ``str()`` as a key does not wipe out its dict."""
        result = to_jsonable({10**5000: 1, "other": 2})
        assert isinstance(result, dict)
        assert result["other"] == 2


class TestKnownTypes:
    def test_bytes(self) -> None:
        """bytes and bytearray become base64 text that decodes back to them."""
        raw = b"\xff\x00binary\xfe"
        result = roundtrip({"b": raw, "ba": bytearray(raw)})
        assert base64.urlsafe_b64decode(result["b"]) == raw
        assert base64.urlsafe_b64decode(result["ba"]) == raw

    def test_sets_and_frozensets(self) -> None:
        """Sets become lists, sorted when their items can be sorted."""
        assert roundtrip({3, 1, 2}) == [1, 2, 3]
        assert roundtrip(frozenset({"b", "a"})) == ["a", "b"]
        assert sorted(roundtrip({1, "a", None}), key=repr) == sorted([1, "a", None], key=repr)

    def test_tuples(self) -> None:
        """Tuples become lists."""
        assert roundtrip((1, (2, "x"))) == [1, [2, "x"]]

    def test_datetimes(self) -> None:
        """datetimes, dates and times become ISO 8601 strings."""
        moment = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc)
        result = roundtrip(
            {
                "dt": moment,
                "naive": moment.replace(tzinfo=None),
                "d": moment.date(),
                "t": moment.time(),
            }
        )
        assert dt.datetime.fromisoformat(result["dt"]) == moment
        assert result["naive"] == "2024-05-01T12:30:15.123456"
        assert result["d"] == "2024-05-01"
        assert result["t"] == "12:30:15.123456"

    def test_dataclass(self) -> None:
        """A dataclass becomes a dict of its fields."""
        assert roundtrip({"p": Point(1, 2.5)}) == {"p": {"x": 1, "y": 2.5, "label": "p"}}

    def test_dataclass_fields_are_coerced(self) -> None:
        """Odd values inside a dataclass are coerced too."""
        result = roundtrip(Node("n", child={"nan": math.nan, "s": {1}}))
        assert result == {"name": "n", "child": {"nan": "NaN", "s": [1]}}

    def test_enums(self) -> None:
        """Enums become their value: Enum, IntEnum and str-mixin enums alike."""
        result = roundtrip([Colour.RED, Colour.BLUE, Size.LARGE, Fruit.APPLE])
        assert result == ["red", 2, 3, "apple"]

    def test_exception(self) -> None:
        """An exception becomes a string naming its type and message."""
        result = roundtrip({"e": ValueError("bad input")})
        assert isinstance(result["e"], str)
        assert "ValueError" in result["e"]
        assert "bad input" in result["e"]

    def test_uuid(self) -> None:
        """A UUID becomes its canonical string."""
        value = uuid.UUID("12345678-1234-5678-1234-567812345678")
        assert roundtrip({"u": value}) == {"u": "12345678-1234-5678-1234-567812345678"}

    def test_str_subclass(self) -> None:
        """A str subclass becomes a plain str of its content, not its ``__str__``."""
        result = to_jsonable({"n": Name("content")})
        assert result == {"n": "content"}
        assert type(result["n"]) is str

    def test_broken_str(self) -> None:
        """An object whose ``__str__``/``__repr__`` raise becomes a string, not null."""
        result = roundtrip({"obj": Unprintable(), "list": [Unprintable()]})
        assert isinstance(result["obj"], str)
        assert result["obj"]
        assert isinstance(result["list"][0], str)

    def test_exception_with_broken_str(self) -> None:
        """An exception whose ``__str__`` raises becomes a string."""

        class Bad(Exception):
            def __str__(self) -> str:
                raise RuntimeError("nope")

        assert isinstance(roundtrip({"e": Bad()})["e"], str)

    def test_unknown_objects_become_strings(self) -> None:
        """Objects JSON knows nothing about become their ``str()``."""
        result = roundtrip({"c": complex(1, 2), "r": range(3), "o": object()})
        assert result["c"] == "(1+2j)"
        assert result["r"] == "range(0, 3)"
        assert result["o"].startswith("<object object at")


class TestKeys:
    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            (1, "1"),
            (None, "null"),
            (True, "true"),
            (False, "false"),
            (1.5, "1.5"),
            ((1, "a"), "(1, 'a')"),
        ],
    )
    def test_non_string_keys(self, key: Any, expected: str) -> None:
        """Non-string keys become strings, without losing the value."""
        assert roundtrip({key: "v"}) == {expected: "v"}

    @pytest.mark.parametrize("key", [math.nan, math.inf, -math.inf])
    def test_non_finite_float_keys(self, key: float) -> None:
        """NaN and infinite float keys become string keys."""
        result = roundtrip({key: 1})
        [(name, value)] = result.items()
        assert isinstance(name, str)
        assert value == 1

    def test_key_with_broken_str(self) -> None:
        """A key whose ``__str__`` raises still becomes a string key."""

        class BadKey:
            def __str__(self) -> str:
                raise RuntimeError("no")

        result = roundtrip({BadKey(): 1})
        [(name, value)] = result.items()
        assert isinstance(name, str)
        assert value == 1

    def test_huge_key_truncated(self) -> None:
        """A key longer than the string limit is cut like a value."""
        result = to_jsonable({"k" * 100: 1}, max_string_length=10)
        [key] = result
        assert key.startswith("k" * 10)
        assert len(key) < 100


class TestLimits:
    def test_huge_string_truncated_with_marker(self) -> None:
        """A string over the limit is cut, with a marker saying how much went."""
        text = "x" * (MAX_STRING_LENGTH + 5000)
        result = to_jsonable({"s": text})["s"]
        assert result.startswith("x" * MAX_STRING_LENGTH)
        assert len(result) < len(text)
        assert "truncated" in result
        assert "5000" in result

    def test_string_at_limit_untouched(self) -> None:
        """A string exactly at the limit is kept whole."""
        text = "y" * MAX_STRING_LENGTH
        assert to_jsonable(text) == text

    def test_custom_string_limit(self) -> None:
        """``max_string_length`` sets the cut."""
        result = to_jsonable(["abcdefghij" * 10], max_string_length=20)[0]
        assert result.startswith("abcdefghij" * 2)
        assert "truncated" in result

    def test_deep_nesting(self) -> None:
        """Nesting deeper than the limit ends in "[MaxDepth]", without recursion errors."""
        deep: list[Any] = []
        current = deep
        for _ in range(5000):
            nested: list[Any] = []
            current.append(nested)
            current = nested
        result = roundtrip(deep)
        depth = 0
        while isinstance(result, list):
            depth += 1
            result = result[0]
        assert result == "[MaxDepth]"
        assert depth <= MAX_DEPTH

    def test_deep_dict_nesting(self) -> None:
        """Deeply nested dicts are cut too, with valid JSON all the way."""
        deep: dict[str, Any] = {}
        current = deep
        for _ in range(2000):
            current["d"] = {}
            current = current["d"]
        assert "[MaxDepth]" in json.dumps(roundtrip(deep))

    def test_huge_list_truncated(self) -> None:
        """A list over the item limit keeps the first items and says how many went."""
        result = roundtrip(list(range(MAX_ITEMS + 500)))
        assert result[:MAX_ITEMS] == list(range(MAX_ITEMS))
        assert len(result) == MAX_ITEMS + 1
        assert "500" in result[-1]

    def test_huge_dict_truncated(self) -> None:
        """A dict over the item limit keeps the first items and says how many went."""
        result = roundtrip({f"k{i}": i for i in range(MAX_ITEMS + 500)})
        assert len(result) == MAX_ITEMS + 1
        assert result["k0"] == 0
        assert any("500" in str(v) for k, v in result.items() if not k.startswith("k"))

    def test_huge_set_truncated(self) -> None:
        """A set over the item limit is truncated like a list."""
        result = roundtrip(set(range(MAX_ITEMS + 500)))
        assert len(result) == MAX_ITEMS + 1


def _refuse(name: str) -> None:
    raise AssertionError(f"invalid JSON constant {name}")


class TestDumps:
    def test_lone_surrogates_give_valid_utf8(self) -> None:
        """Lone surrogates in values and keys survive ``dumps`` as valid UTF-8 JSON."""
        value = {"bad\ud800key": "a\udfffb", "list": ["\ud83d"]}
        payload = dumps(to_jsonable(value))
        text = payload.decode("utf-8")  # strict: raises on invalid UTF-8
        parsed = json.loads(text)
        assert len(parsed) == 2
        assert parsed["list"][0] != ""
        text.encode("utf-8")  # no surrogate left in the parsed text either

    def test_valid_surrogate_pairs_kept(self) -> None:
        """Real non-BMP characters (emoji) are kept as they are."""
        payload = dumps(to_jsonable({"emoji": "\U0001f600 ok"}))
        assert json.loads(payload) == {"emoji": "\U0001f600 ok"}

    def test_nonfinite_floats_stay_valid_json(self) -> None:
        """Raw NaN and infinities never make invalid JSON. Properties reach ``dumps``
        through ``to_jsonable``, which keeps them as text; a raw one is written null."""
        payload = dumps({"x": math.nan, "y": [math.inf, -math.inf]})
        assert json.loads(payload, parse_constant=_refuse) == {"x": None, "y": [None, None]}
        assert json.loads(dumps(to_jsonable({"x": math.nan}))) == {"x": "NaN"}

    def test_unencodable_values_fall_back_to_to_jsonable(self) -> None:
        """What the C encoder has no rule for (big ints, bytes, sets, cycles) is sent
        as ``to_jsonable`` would make it, not refused."""
        loop: list[object] = []
        loop.append(loop)
        value = {"big": 2**70, "raw": b"ab", "set": {3, 1}, "loop": loop}
        assert json.loads(dumps(value)) == to_jsonable(value)

    @pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="reads VmRSS")
    def test_encoded_records_hold_only_their_size(self) -> None:
        """A burst's built records are held until sent: 20,000 of 500 bytes take about
        10 MB, not the encoder's 4 KiB working buffer each (80 MB)."""

        def rss_mb() -> float:
            for line in pathlib.Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1000
            raise AssertionError("no VmRSS")

        event = {"event": "page_viewed", "properties": {f"key_{i}": "v" * 20 for i in range(16)}}
        before = rss_mb()
        held = [dumps({**event, "uuid": i}) for i in range(20_000)]
        grown = rss_mb() - before
        assert 400 < len(held[0]) < 600
        assert grown < 30, f"{grown:.0f} MB for 20,000 records of {len(held[0])} bytes"

    def test_compact_bytes(self) -> None:
        """``dumps`` returns compact UTF-8 bytes."""
        assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()


# -- property ----------------------------------------------------------------------------

_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text
    | st.binary(max_size=20)
)
_hashables = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _text | st.binary(max_size=8),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(_hashables, inner, max_size=5)
        | st.sets(_hashables, max_size=5)
        | st.tuples(inner, inner)
    ),
    max_leaves=30,
)


class TestProperty:
    @settings(deadline=None)
    @given(value=_values)
    def test_any_value_becomes_valid_json(self, value: Any) -> None:
        """For arbitrary nested values, to_jsonable never raises and dumps gives valid JSON."""
        converted = to_jsonable(value, redactor=Redactor())
        strict_json(converted)
        json.loads(dumps(converted).decode("utf-8"))

    @settings(deadline=None)
    @given(value=_values)
    def test_conversion_is_stable(self, value: Any) -> None:
        """Converting already converted data changes nothing."""
        once = to_jsonable(value)
        assert to_jsonable(once) == once


# -- redaction ---------------------------------------------------------------------------

SECRET_KEYS = [
    "password",
    "userPassword",
    "X-Api-Key",
    "api_key",
    "apiKey",
    "access_token",
    "set-cookie",
    "Authorization",
    "client_secret",
]
INNOCENT_KEYS = ["tokens_used", "author", "$session_id", "session_id", "passage"]


class TestRedactor:
    @pytest.mark.parametrize("key", SECRET_KEYS)
    def test_default_secret_keys(self, key: str) -> None:
        """The default redactor flags secret-looking keys, whatever case or separator."""
        assert Redactor().is_secret(key)
        assert Redactor(DEFAULT_REDACT_KEYS).is_secret(key)

    @pytest.mark.parametrize("key", INNOCENT_KEYS)
    def test_default_innocent_keys(self, key: str) -> None:
        """Keys that merely contain a secret word's letters are not flagged."""
        assert not Redactor().is_secret(key)

    @pytest.mark.parametrize("key", SECRET_KEYS)
    def test_filtered_in_to_jsonable(self, key: str) -> None:
        """Through to_jsonable, values under secret keys become "[Filtered]"."""
        result = to_jsonable({key: "hunter2", "other": "kept"}, redactor=Redactor())
        assert result == {key: FILTERED, "other": "kept"}

    @pytest.mark.parametrize("key", INNOCENT_KEYS)
    def test_innocent_kept_in_to_jsonable(self, key: str) -> None:
        """Through to_jsonable, values under innocent keys are kept."""
        assert to_jsonable({key: "value"}, redactor=Redactor()) == {key: "value"}

    def test_nested_dicts_and_lists(self) -> None:
        """Secrets are filtered inside nested dicts and lists of dicts."""
        value = {
            "user": {"name": "ann", "password": "p1", "auth": {"access_token": "t"}},
            "accounts": [{"id": 1, "api_key": "k1"}, {"id": 2, "client_secret": "s2"}],
            "tuple": ({"Authorization": "Bearer x"},),
        }
        assert to_jsonable(value, redactor=Redactor()) == {
            "user": {"name": "ann", "password": FILTERED, "auth": {"access_token": FILTERED}},
            "accounts": [{"id": 1, "api_key": FILTERED}, {"id": 2, "client_secret": FILTERED}],
            "tuple": [{"Authorization": FILTERED}],
        }

    def test_whole_container_filtered(self) -> None:
        """A container under a secret key is filtered as a whole."""
        result = to_jsonable({"credentials": {"user": "u", "pass": "p"}}, redactor=Redactor())
        assert result == {"credentials": FILTERED}

    def test_no_redaction_by_default_in_to_jsonable(self) -> None:
        """to_jsonable without a redactor keeps every value."""
        assert to_jsonable({"password": "p"}) == {"password": "p"}

    def test_custom_keys(self) -> None:
        """A custom key list replaces the defaults, matched as whole words."""
        redactor = Redactor(["ssn", "card_number"])
        assert redactor.is_secret("ssn")
        assert redactor.is_secret("user_ssn")
        assert redactor.is_secret("cardNumber")
        assert not redactor.is_secret("lesson")
        assert not redactor.is_secret("password")
        result = to_jsonable({"ssn": "1", "password": "p"}, redactor=redactor)
        assert result == {"ssn": FILTERED, "password": "p"}

    @pytest.mark.parametrize("keys", [(), [], None])
    def test_disabled(self, keys: Any) -> None:
        """An empty key list or None disables redaction."""
        redactor = Redactor(keys)
        assert not redactor
        assert not redactor.is_secret("password")
        assert to_jsonable({"password": "p"}, redactor=redactor) == {"password": "p"}

    def test_single_string_refused(self) -> None:
        """A single string as the key list is a mistake and raises TypeError."""
        with pytest.raises(TypeError):
            Redactor("password")  # type: ignore[arg-type]

    def test_non_string_key_redacted(self) -> None:
        """Keys that are not strings are matched once turned into strings."""
        assert to_jsonable({("password",): "p"}, redactor=Redactor()) == {"('password',)": FILTERED}


# -- end to end ----------------------------------------------------------------------------


def statuses(server: LocalServer) -> set[int]:
    """The status codes the server answered so far."""
    return {record.status for record in server.requests}


class TestEndToEnd:
    def test_awkward_event_accepted_and_coerced(self, client: Client, server: LocalServer) -> None:
        """An event full of awkward values is accepted (no 400) and stored coerced."""
        cycle: dict[str, Any] = {"name": "loop"}
        cycle["self"] = cycle
        uid = client.capture(
            "awkward",
            {
                "password": "hunter2",
                "nested": {"api_key": "k", "ok": 1},
                "cycle": cycle,
                "nan": math.nan,
                "inf": math.inf,
                "blob": b"\x00\xff",
                "tags": {"b", "a"},
                "broken": Unprintable(),
                "surrogate\ud800": "x\udfff",
                7: "int key",
            },
            distinct_id="user-1",
        )
        assert uid is not None
        [event] = delivered(client, server, timeout=10, event="awkward")
        props = event["properties"]
        assert props["password"] == FILTERED
        assert props["nested"] == {"api_key": FILTERED, "ok": 1}
        assert props["cycle"] == {"name": "loop", "self": "[Circular]"}
        assert props["nan"] == "NaN"
        assert props["inf"] == "Infinity"
        assert base64.urlsafe_b64decode(props["blob"]) == b"\x00\xff"
        assert props["tags"] == ["a", "b"]
        assert isinstance(props["broken"], str)
        assert props["7"] == "int key"
        assert event["uuid"] == uid
        assert statuses(server) == {200}
        assert client.stats.dropped_total == 0

    def test_capture_never_raises(self, client: Client, server: LocalServer) -> None:
        """capture() accepts any property value and every such event arrives."""
        deep: list[Any] = []
        current = deep
        for _ in range(200):
            current.append([])
            current = current[0]
        values: list[Any] = [
            object(),
            Unprintable(),
            iter([1, 2]),
            lambda: None,
            type,
            decimal.Decimal("sNaN"),
            complex(1, 1),
            memoryview(b"abc"),
            {frozenset({1}): {None: math.nan}},
            {(1, 2): [{3}]},
            deep,
            "z" * (MAX_STRING_LENGTH * 2),
            ValueError("v"),
            Point(1, math.inf),
            Colour.RED,
            dt.timedelta(seconds=3),
            uuid.uuid4(),
        ]
        uids = [client.capture("odd", {"value": v}, distinct_id="u") for v in values]
        assert all(isinstance(u, str) for u in uids)
        events = delivered(client, server, len(values), timeout=10, event="odd")
        assert {e["uuid"] for e in events} == set(uids)
        assert statuses(server) == {200}
        assert client.stats.dropped_total == 0

    def test_huge_int_event_arrives(self, client: Client, server: LocalServer) -> None:
        """An event holding an int over 4300 digits is coerced and sent, not dropped."""
        uid = client.capture("bigint", {"n": 10**5000, "ok": True}, distinct_id="u")
        assert uid is not None
        assert client.flush(timeout=10)
        assert dict(client.stats.dropped) == {}
        [event] = server.wait_for_events(1, timeout=10, event="bigint")
        assert event["properties"]["ok"] is True
        assert client.stats.dropped_total == 0

    def test_redaction_on_by_default(self, client: Client, server: LocalServer) -> None:
        """A client redacts secret-looking keys by default, innocent ones are kept."""
        client.capture(
            "login",
            {"password": "p", "Authorization": "Bearer t", "tokens_used": 3, "author": "me"},
            distinct_id="u",
        )
        [event] = delivered(client, server, timeout=10, event="login")
        props = event["properties"]
        assert props["password"] == FILTERED
        assert props["Authorization"] == FILTERED
        assert props["tokens_used"] == 3
        assert props["author"] == "me"

    def test_redaction_off(self, make_client: Callable[..., Client], server: LocalServer) -> None:
        """With ``redact_keys=None`` the password goes in clear."""
        client = make_client(redact_keys=None)
        client.capture("login", {"password": "hunter2"}, distinct_id="u")
        [event] = delivered(client, server, timeout=10, event="login")
        assert event["properties"]["password"] == "hunter2"

    def test_custom_redact_keys(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """A client's custom ``redact_keys`` replace the defaults."""
        client = make_client(redact_keys=["ssn"])
        client.capture("form", {"ssn": "123", "password": "p"}, distinct_id="u")
        [event] = delivered(client, server, timeout=10, event="form")
        assert event["properties"]["ssn"] == FILTERED
        assert event["properties"]["password"] == "p"

    def test_super_properties_redacted(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """Secrets in super properties are redacted like the call's own."""
        client = make_client(super_properties={"api_key": "secret", "region": "eu"})
        client.capture("e", distinct_id="u")
        [event] = delivered(client, server, timeout=10, event="e")
        assert event["properties"]["api_key"] == FILTERED
        assert event["properties"]["region"] == "eu"

    def test_long_strings_cut_to_fit(self, client: Client, server: LocalServer) -> None:
        """An event over 1 MB only through long strings is cut to fit and sent."""
        props = {f"k{i}": "s" * 60_000 for i in range(30)}  # ~1.8 MB, strings under the limit
        uid = client.capture("long", props, distinct_id="u")
        [event] = delivered(client, server, timeout=10, event="long")
        assert event["uuid"] == uid
        assert all(len(v) < 60_000 for k, v in event["properties"].items() if k.startswith("k"))
        assert statuses(server) == {200}

    def test_too_large_dropped_counted_logged(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """An event too big even when cut is dropped, counted and logged once; its batch arrives."""
        # 2,000 keys of 1,000 chars: ~2 MB, and no string long enough to be cut.
        big = {f"key_{i:05d}": chr(97 + i % 26) * 1000 for i in range(2000)}
        client = make_client(flush_interval=30)  # everything goes in the one flush below
        caplog.set_level(logging.WARNING, logger="posthog_logging")
        before = client.capture("small", {"n": 1}, distinct_id="u")
        assert client.capture("huge", big, distinct_id="u") is not None  # dropped later
        assert client.capture("huge", dict(big), distinct_id="u") is not None
        after = client.capture("small", {"n": 2}, distinct_id="u")
        assert client.flush(timeout=10)
        events = server.wait_for_events(2, timeout=10, event="small")
        assert [e["uuid"] for e in events] == [before, after]
        assert server.events(event="huge") == []
        assert client.stats.dropped["too_large"] == 2
        assert statuses(server) == {200}
        warnings = [
            r
            for r in caplog.records
            if r.name == "posthog_logging" and r.levelno >= logging.WARNING
        ]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "huge" in warnings[0].getMessage()
