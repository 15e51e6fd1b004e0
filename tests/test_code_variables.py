"""Tests for posthog_logging.code_variables: frames' locals as PostHog shows them.

Each test raises inside a function holding the locals it is about, catches the
exception and reads the frames of its traceback, as error tracking does: what is taken,
in which order and shape (the official SDK's), what is masked, and what the size and
time limits leave out.
"""

# The functions below assign locals only to be read from their frames.
# ruff: noqa: F841

from __future__ import annotations

import collections
import dataclasses
import enum
import hashlib
import json
import logging
import math
import traceback
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posthog_logging import code_variables
from posthog_logging.code_variables import (
    DEFAULT_IGNORE_PATTERNS,
    DEFAULT_MASK_PATTERNS,
    REDACTED,
    TOO_LONG,
    VariableRules,
    take_variables,
)
from posthog_logging.serialisation import Redactor

RULES = VariableRules()

# -- frames to read, and a clock -------------------------------------------------------


class Boom(Exception):
    pass


def frames_of(fn: Callable[[], object]) -> list[types.FrameType]:
    """The frames ``fn`` raised through, outermost first (this function's own left out)."""
    try:
        fn()
    except Boom as exc:
        return [frame for frame, _ in traceback.walk_tb(exc.__traceback__)][1:]
    raise AssertionError("expected Boom")


def variables_of(fn: Callable[[], object], rules: VariableRules = RULES) -> dict[str, Any]:
    """What is taken of the locals of ``fn``'s frame (the one that raised)."""
    [taken] = take_variables(frames_of(fn)[-1:], rules)
    assert taken is not None
    json.dumps(taken, allow_nan=False)  # plain JSON, always
    return taken


class Clock:
    """Stands in for ``perf_counter``: time passes only when a test says so."""

    now = 0.0

    def __call__(self) -> float:
        return Clock.now


class Slow:
    """A value whose ``repr`` takes a second of :class:`Clock` time."""

    __slots__ = ()

    def __repr__(self) -> str:
        Clock.now += 1.0
        return "slow"


class Watched:
    """A value that records being read."""

    reads: list[str] = []

    def __repr__(self) -> str:
        self.reads.append("repr")
        return "watched"

    def __iter__(self) -> Iterator[int]:
        self.reads.append("iter")
        return iter(())


# -- what is taken, and in which shape --------------------------------------------------


def test_numbers_are_raw_other_simple_values_are_text_in_name_order() -> None:
    def fn() -> None:
        zeta = 3
        alpha = 1.5
        flag = True
        nothing = None
        nan = math.nan
        inf = -math.inf
        huge = 2**70
        text = "it's here"
        items = [1, 2]
        config = {"a": 1}
        raise Boom

    taken = variables_of(fn)

    assert taken == {
        "alpha": 1.5,
        "flag": "True",
        "huge": str(2**70),  # beyond 64 bits: as text
        "inf": "-inf",
        "nan": "nan",
        "nothing": "None",
        "text": "it's here",  # the string itself, not its repr
        "zeta": 3,
        "config": '{"a":1}',
        "items": "[1,2]",
    }
    # simple values first, then containers and objects, each in name order
    assert list(taken) == [
        "alpha", "flag", "huge", "inf", "nan", "nothing", "text", "zeta", "config", "items"
    ]  # fmt: skip


def test_the_frame_that_caught_the_exception_is_read_while_it_runs() -> None:
    count = 5
    try:
        raise Boom
    except Boom as exc:
        [frame] = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
        [taken] = take_variables([frame], RULES)

    assert taken is not None
    assert taken["count"] == 5
    assert taken["exc"] == "Boom()"


def test_dunder_names_are_left_out() -> None:
    def fn() -> None:
        __hidden = 1
        shown = 2
        raise Boom

    assert variables_of(fn) == {"shown": 2}


def test_a_frame_not_wanted_is_none_and_the_others_are_taken() -> None:
    def fn() -> None:
        n = 1
        raise Boom

    frame = frames_of(fn)[-1]
    assert take_variables([None, frame, None], RULES) == [None, {"n": 1}, None]


def test_a_frame_with_nothing_to_take_is_none() -> None:
    def fn() -> None:
        __only_a_dunder = 1
        raise Boom

    assert take_variables(frames_of(fn)[-1:], RULES) == [None]


def test_objects_dataclasses_and_namedtuples_are_json_text_with_their_class() -> None:
    @dataclasses.dataclass
    class Order:
        id: int
        items: list[str]

    Point = collections.namedtuple("Point", "x y")

    class Cart:
        def __init__(self) -> None:
            self.owner = "ann"
            self.total = 12.5

    class Colour(enum.Enum):
        RED = "red"

    class Size(enum.IntEnum):
        BIG = 3

    def fn() -> None:
        order = Order(7, ["tea"])
        point = Point(1, 2)
        cart = Cart()
        colour = Colour.RED
        size = Size.BIG
        when = uuid.UUID(int=1)
        raise Boom

    taken = variables_of(fn)

    assert json.loads(taken["order"]) == {
        "id": 7,
        "items": ["tea"],
        "__class__": Order.__qualname__,
    }
    assert json.loads(taken["point"]) == {"x": 1, "y": 2, "__class__": "Point"}
    assert json.loads(taken["cart"]) == {
        "owner": "ann",
        "total": 12.5,
        "__class__": Cart.__qualname__,
    }
    assert taken["colour"] == f"{Colour.__qualname__}.RED"
    assert taken["size"] == 3
    assert taken["when"] == repr(uuid.UUID(int=1))  # an opaque value: its repr


def test_keys_that_are_not_text_become_text() -> None:
    def fn() -> None:
        mixed = {1: "one", None: "none", (1, 2): "pair", 2.5: "float"}
        raise Boom

    assert json.loads(variables_of(fn)["mixed"]) == {
        "1": "one",
        "None": "none",
        "[1,2]": "pair",
        "2.5": "float",
    }


def test_cycles_are_marked() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    def fn() -> None:
        loop: list[Any] = [1]
        loop.append(loop)
        mapping: dict[str, Any] = {}
        mapping["self"] = mapping
        node = Node()
        shared = [1]
        twice = [shared, shared]  # the same list twice is not a cycle
        raise Boom

    taken = variables_of(fn)

    assert json.loads(taken["loop"]) == [1, "<circular ref>"]
    assert json.loads(taken["mapping"]) == {"self": "<circular ref>"}
    assert json.loads(taken["node"]) == {"me": "<circular ref>", "__class__": Node.__qualname__}
    assert json.loads(taken["twice"]) == [[1], [1]]


# -- masking ----------------------------------------------------------------------------


def test_values_under_secret_names_are_masked_and_not_read() -> None:
    def fn() -> None:
        password = "hunter2"
        api_key = Watched()
        my_token = 42
        DSN = "https://key@o1.ingest.example.com/1"
        userPassword = [1]
        name = "ann"
        raise Boom

    taken = variables_of(fn)

    assert taken == {
        "DSN": REDACTED,
        "my_token": REDACTED,
        "name": "ann",
        "password": REDACTED,
        "api_key": REDACTED,
        "userPassword": REDACTED,
    }
    assert Watched.reads == []


def test_names_the_redactor_calls_secret_are_masked_too() -> None:
    def fn() -> None:
        session_cookie = "abc"
        payload = {"session_cookie": "abc", "page": 1}
        raise Boom

    assert variables_of(fn)["session_cookie"] == "abc"  # not one of the SDK's patterns

    taken = variables_of(fn, VariableRules(redactor=Redactor(("session_cookie",))))

    assert taken["session_cookie"] == REDACTED
    assert json.loads(taken["payload"]) == {"session_cookie": REDACTED, "page": 1}


def test_secret_keys_are_masked_at_any_depth() -> None:
    @dataclasses.dataclass
    class Account:
        user: str
        password: str

    def fn() -> None:
        config = {
            "db": {"host": "db.internal", "password": "s3cret!", "port": 5432},
            "clients": [{"name": "a", "api_key": "k1"}],
            "password=hunter2": 1,  # the key itself holds a secret
        }
        account = Account("ann", "pw")
        raise Boom

    taken = variables_of(fn)

    config = json.loads(taken["config"])
    assert config["db"] == {"host": "db.internal", "password": REDACTED, "port": 5432}
    assert config["clients"] == [{"name": "a", "api_key": REDACTED}]
    assert "hunter2" not in taken["config"]
    assert REDACTED in config.values()
    assert json.loads(taken["account"]) == {
        "user": "ann",
        "password": REDACTED,
        "__class__": Account.__qualname__,
    }


def test_text_that_contains_a_secret_word_is_masked() -> None:
    def fn() -> None:
        header = "Authorization: Bearer abc"
        note = "reset your password here"
        raise Boom

    assert variables_of(fn) == {"header": REDACTED, "note": REDACTED}


def test_url_credentials_are_masked() -> None:
    def fn() -> None:
        url = "postgresql://user:p4ss@host/db"
        urls = ["redis://:pw@cache:6379/0"]
        plain = "https://example.com/a@b"
        raise Boom

    taken = variables_of(fn)

    assert taken["url"] == f"postgresql://{REDACTED}@host/db"
    assert json.loads(taken["urls"]) == [f"redis://{REDACTED}@cache:6379/0"]
    assert taken["plain"] == "https://example.com/a@b"

    kept = variables_of(fn, VariableRules(mask_url_credentials=False))
    assert kept["url"] == "postgresql://user:p4ss@host/db"


def test_authorization_credentials_in_text_are_masked() -> None:
    """A header value held apart from its name (a list of header pairs, an ASGI scope)
    keeps its scheme and loses its credential; prose that mentions a bearer or basic
    things, and names like ``basicConfig``, are kept; a signed URL's signature masks it."""

    def fn() -> None:
        headers = [("accept", "text/html"), ("x-upstream", "Bearer eyJ0eXAiOiJKV1Qi.abc-def_ghi")]
        basic = "Basic dXNlcjpwYXNzd29yZA=="
        short_pair = "basic YTpi"
        prose = "the bearer of bad news"
        call = "logging.basicConfig(level=10)"
        signed = "https://acct.blob.core.windows.net/c/f?sv=2024&sig=abcDEF123"
        raise Boom

    taken = variables_of(fn)

    assert json.loads(taken["headers"]) == [
        ["accept", "text/html"],
        ["x-upstream", f"Bearer {REDACTED}"],
    ]
    assert taken["basic"] == f"Basic {REDACTED}"
    assert taken["short_pair"] == f"basic {REDACTED}"  # decodes to a:b
    assert taken["prose"] == "the bearer of bad news"
    assert taken["call"] == "logging.basicConfig(level=10)"
    assert taken["signed"] == REDACTED


def test_secret_looking_values_are_masked_and_ordinary_text_is_kept() -> None:
    def fn() -> None:
        stripe = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
        github = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
        aws = "AKIA" + "IOSFODNN7EXAMPLE"
        jwt_value = (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
            ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        )
        random_40 = "Zq7vR2mK9wX4bN8cT1dL6fH3gJ5pY0sA-e_Ut+Wk"
        in_a_sentence = "the key is sk-proj-" + "Ab3dEf6hIj9kLm2nOp5q" + " ok"
        private_key = "-----BEGIN RSA PRIVATE KEY-----\nMIIE..."
        sentence = "the quick brown fox jumps over the lazy dog"
        path = "/usr/local/lib/python3.11/site-packages/requests/models.py"
        an_id = str(uuid.UUID("12345678-1234-5678-1234-567812345678"))
        digest = hashlib.sha256(b"x").hexdigest()
        identifier = "OrderCreatedEventHandler"
        raise Boom

    taken = variables_of(fn)

    for name in ("stripe", "github", "aws", "jwt_value", "random_40", "in_a_sentence"):
        assert taken[name] == REDACTED, name
    assert taken["private_key"] == REDACTED
    assert taken["sentence"] == "the quick brown fox jumps over the lazy dog"
    assert taken["path"] == "/usr/local/lib/python3.11/site-packages/requests/models.py"
    assert taken["an_id"] == "12345678-1234-5678-1234-567812345678"
    assert taken["digest"] == hashlib.sha256(b"x").hexdigest()
    assert taken["identifier"] == "OrderCreatedEventHandler"

    unchecked = variables_of(fn, VariableRules(detect_secrets=False))
    assert unchecked["github"].startswith("ghp_")
    assert unchecked["stripe"] == REDACTED  # still: "sk_" is one of the name patterns


def test_custom_patterns_replace_the_defaults() -> None:
    def fn() -> None:
        password = "hunter2"
        card_1234 = "4242"
        tmp_buffer = "x"
        __dunder = "d"
        raise Boom

    rules = VariableRules(mask_patterns=(r"^card_\d+$",), ignore_patterns=("^tmp_",))

    assert variables_of(fn, rules) == {
        "__dunder": "d",
        "card_1234": REDACTED,
        "password": "hunter2",
    }


def test_the_defaults_are_the_official_sdks() -> None:
    assert "(?i)password" in DEFAULT_MASK_PATTERNS
    assert "(?i)dsn" in DEFAULT_MASK_PATTERNS
    assert DEFAULT_IGNORE_PATTERNS == (r"^__.*",)
    assert REDACTED == "$$_posthog_redacted_based_on_masking_rules_$$"
    assert TOO_LONG == "$$_posthog_value_too_long_$$"


def test_an_invalid_pattern_is_left_out_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    def fn() -> None:
        password = "hunter2"
        name = "ann"
        raise Boom

    with caplog.at_level(logging.WARNING, logger="posthog_logging"):
        rules = VariableRules(mask_patterns=("(?i)password", "([unclosed", "*bad"))

    records = [r for r in caplog.records if r.name == "posthog_logging"]
    assert len(records) == 1
    assert "([unclosed" in records[0].getMessage()
    assert variables_of(fn, rules) == {"name": "ann", "password": REDACTED}


def test_a_single_string_is_not_taken_for_a_pattern_list() -> None:
    with pytest.raises(TypeError):
        VariableRules(mask_patterns="(?i)password")  # type: ignore[arg-type]


# -- limits -----------------------------------------------------------------------------


def test_a_huge_list_is_too_long_and_only_51_items_are_read() -> None:
    read = []

    class Counted(list[int]):
        def __iter__(self) -> Iterator[int]:
            for item in super().__iter__():
                read.append(item)
                yield item

    def fn() -> None:
        big = list(range(10_000_000))
        counted = Counted(range(1_000_000))
        fifty = list(range(50))
        raise Boom

    taken = variables_of(fn)

    assert taken["big"] == TOO_LONG
    assert taken["counted"] == TOO_LONG
    assert len(read) <= 51
    assert json.loads(taken["fifty"]) == list(range(50))


def test_other_containers_are_read_51_items_at_most() -> None:
    def fn() -> None:
        big_set = set(range(100_000))
        big_dict = dict.fromkeys(range(100_000))
        big_keys = big_dict.keys()
        small_set = {1}
        raise Boom

    taken = variables_of(fn)

    assert taken["big_set"] == TOO_LONG
    assert taken["big_dict"] == TOO_LONG
    assert taken["big_keys"] == TOO_LONG
    assert taken["small_set"] == "[1]"


def test_deep_or_wide_values_are_cut() -> None:
    def fn() -> None:
        deep: list[Any] = []
        inner = deep
        for _ in range(20):
            inner.append([])
            inner = inner[0]
        wide = [[i] for i in range(50)]
        wider = {str(i): [[i], [i]] for i in range(50)}
        raise Boom

    taken = variables_of(fn)

    assert TOO_LONG in taken["deep"]
    assert taken["deep"].count("[") == 12  # 12 levels, then the marker
    assert json.loads(taken["wide"]) == [[i] for i in range(50)]
    # 100 containers per value, then each further one is the marker
    assert TOO_LONG in taken["wider"]


def test_a_failing_repr_is_the_type_name_and_a_huge_one_is_masked() -> None:
    class Broken:
        __slots__ = ()

        def __repr__(self) -> str:
            raise RuntimeError("no")

    class Huge:
        __slots__ = ()

        def __repr__(self) -> str:
            return "x" * 3000

    def fn() -> None:
        broken = Broken()
        huge = Huge()
        nested = [Broken()]
        raise Boom

    taken = variables_of(fn)

    assert taken["broken"] == f"<{Broken.__qualname__}>"
    assert taken["huge"] == REDACTED
    assert json.loads(taken["nested"]) == [f"<{Broken.__qualname__}>"]


def test_long_values_are_cut_and_text_too_long_to_inspect_is_not_sent() -> None:
    def fn() -> None:
        long_text = "word " * 300  # 1,500 characters
        too_long = "word " * 500  # 2,500 characters: more than is inspected
        long_list = ["word " * 100] * 5
        raise Boom

    taken = variables_of(fn)

    assert len(taken["long_text"]) == 1024
    assert taken["long_text"] == long_text_cut("word " * 300)
    assert taken["too_long"] == TOO_LONG
    assert len(taken["long_list"]) == 1024
    assert taken["long_list"].endswith("...")
    assert taken["long_list"].startswith('["word word')


def long_text_cut(text: str) -> str:
    return text[:1021] + "..."


VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.text(min_size=100, max_size=400),
    lambda children: (
        st.lists(children, max_size=8)
        | st.dictionaries(st.text(max_size=20), children, max_size=8)
        | st.tuples(children, children)
    ),
    max_leaves=200,
)


@settings(max_examples=200, deadline=None)
@given(VALUES)
def test_a_value_cut_short_reads_the_same_as_one_read_in_full_then_cut(value: Any) -> None:
    """Reading stops once the text is past the length sent: what is sent is the same."""

    def fn(value: Any) -> None:
        raise Boom

    frame = frames_of(lambda: fn(value))[-1]
    cut_rules = VariableRules(max_event_bytes=10**9, time_budget=60.0)
    full_rules = VariableRules(max_value_length=10**9, max_event_bytes=10**9, time_budget=60.0)
    [cut] = take_variables([frame], cut_rules)
    [full] = take_variables([frame], full_rules)
    assert cut is not None and full is not None
    sent = full["value"]
    if type(sent) is str and len(sent) > 1024:
        sent = long_text_cut(sent)
    assert cut["value"] == sent


def test_the_byte_budget_is_shared_by_the_frames_of_an_event() -> None:
    def inner() -> None:
        n = 7
        z_text = "z" * 60
        raise Boom

    def outer() -> None:
        a_text = "a" * 60
        b_text = "b" * 60
        c = 1
        inner()

    rules = VariableRules(max_event_bytes=100)

    first, second = take_variables(frames_of(outer), rules)

    # the first frame stops at the first value that does not fit...
    assert first == {"a_text": "a" * 60}
    # ...and a later frame still takes what fits in what is left
    assert second == {"n": 7}


def test_past_the_deadline_nothing_is_taken() -> None:
    def fn() -> None:
        n = 1
        raise Boom

    assert take_variables(frames_of(fn)[-1:], VariableRules(time_budget=0.0)) == [None]


def test_a_value_read_past_the_deadline_is_too_long_and_the_rest_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Clock, "now", 0.0)
    monkeypatch.setattr(code_variables, "perf_counter", Clock())

    def inner() -> None:
        later = 1
        raise Boom

    def outer() -> None:
        a = 1
        b_slow = Slow()  # read in full: one __repr__ is not interrupted
        c_list = [Slow(), Slow()]
        d = {"x": 1}
        inner()

    rules = VariableRules(time_budget=0.5)

    assert take_variables(frames_of(outer), rules) == [{"a": 1, "b_slow": "slow"}, None]

    Clock.now = 0.0
    rules = VariableRules(time_budget=1.5)
    assert take_variables(frames_of(outer), rules) == [
        {"a": 1, "b_slow": "slow", "c_list": TOO_LONG},
        None,
    ]


# -- never raises -----------------------------------------------------------------------


def test_locals_that_cannot_be_read_leave_the_frame_out() -> None:
    class Unreadable:
        @property
        def f_locals(self) -> dict[str, Any]:
            raise RuntimeError("gone")

    def fn() -> None:
        n = 1
        raise Boom

    bad = cast(types.FrameType, Unreadable())

    assert take_variables([bad, *frames_of(fn)[-1:]], RULES) == [None, {"n": 1}]


def test_a_value_that_fails_to_read_is_left_out() -> None:
    class BadDict(dict[str, int]):
        def items(self) -> Any:
            raise RuntimeError("no")

    class BadKey:
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __hash__(self) -> int:
            return 1

    def fn() -> None:
        bad = BadDict(a=1)
        keys = {BadKey(): 1, "ok": 2}
        good = [1]
        raise Boom

    taken = variables_of(fn)

    assert "bad" not in taken
    assert taken["good"] == "[1]"
    # a key that cannot be made text: its value is masked, as it can not be vouched for
    assert json.loads(taken["keys"]) == {"$$_posthog_redacted_key_0_$$": REDACTED, "ok": 2}
