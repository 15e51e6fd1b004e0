"""Tests for posthog_logging.error_tracking: the ``$exception_list`` PostHog error tracking reads.

Unit tests of :func:`snapshot_exception` and :func:`build_exception_list`, then the same
format end to end: ``client.capture_exception(...)`` and ``logger.exception(...)`` through
a real client to the local server.
"""

from __future__ import annotations

import builtins
import json
import linecache
import logging
import os
import pickle
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import pytest
import requests

from posthog_logging.client import Client
from posthog_logging.error_tracking import (
    MAX_FRAMES,
    MAX_VALUE_LENGTH,
    ExceptionSnapshot,
    FrameSnapshot,
    InAppRules,
    build_exception_list,
    snapshot_exception,
)
from posthog_logging.server import LocalServer
from posthog_logging.stdlib import PostHogHandler

from .helpers import delivered, one_delivered

FRAME_KEYS = {
    "platform",
    "filename",
    "abs_path",
    "function",
    "module",
    "lineno",
    "pre_context",
    "context_line",
    "post_context",
    "in_app",
}

#: The builtin ExceptionGroup (Python 3.11+), looked up so that this module imports on 3.10.
ExcGroup: Any = getattr(builtins, "ExceptionGroup", None)
needs_groups = pytest.mark.skipif(ExcGroup is None, reason="ExceptionGroup is Python 3.11+")


# -- exceptions raised from known places ---------------------------------------------------


class CustomError(Exception):
    """An exception class defined in this module."""


class Outer:
    class InnerError(Exception):
        """An exception class nested in a class: its qualified name has a dot."""


class BadStrError(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str")


class SlottedError(Exception):
    """An exception that refuses new attributes (so it cannot be marked captured)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(name)


def raise_value_error(message: str = "boom") -> NoReturn:
    """Raise ``ValueError(message)`` from the line ``RAISE_LINE``."""
    raise ValueError(message)  # the raise site


RAISE_LINE = raise_value_error.__code__.co_firstlineno + 2
RAISE_SOURCE = "    raise ValueError(message)  # the raise site"


def outer_function() -> None:
    """Call ``middle_function``: an extra frame between the test and the raise site."""
    middle_function()


def middle_function() -> None:
    """Call ``raise_value_error``."""
    raise_value_error("from the middle")


def recurse(depth: int) -> int:
    """Recurse until Python raises RecursionError."""
    return recurse(depth + 1) + 1


def caught(func: Callable[[], object]) -> BaseException:
    """The exception ``func`` raises, with its traceback."""
    try:
        func()
    except BaseException as exc:
        return exc
    raise AssertionError(f"{func} did not raise")


def exception_list(exc: BaseException, **options: Any) -> list[dict[str, Any]]:
    """``$exception_list`` for ``exc``, built the way the sender builds it."""
    return build_exception_list(snapshot_exception(exc), **options)


def file_lines(path: str) -> list[str]:
    """The lines of ``path`` without line endings."""
    return [line.rstrip("\r\n") for line in linecache.getlines(path)]


# -- fixtures and end-to-end helpers ----------------------------------------------------------


@pytest.fixture
def make_logger(
    client: Client, attach: Callable[..., logging.Logger]
) -> Callable[..., logging.Logger]:
    """Build uniquely named loggers with a PostHogHandler(client=client, **options)."""
    return lambda **options: attach(PostHogHandler(client=client, **options))


def exception_properties(server: LocalServer, client: Client) -> dict[str, Any]:
    """Flush and return the properties of the single ``$exception`` event stored, after
    checking that the server accepted every request."""
    event = one_delivered(client, server, "$exception", timeout=10)
    assert {record.status for record in server.requests} == {200}
    return event["properties"]


# -- the entries of $exception_list -----------------------------------------------------------


class TestEntries:
    def test_builtin_exception(self) -> None:
        """A builtin exception has its name as type, its message as value, module None."""
        [entry] = exception_list(caught(raise_value_error))
        assert entry["type"] == "ValueError"
        assert entry["value"] == "boom"
        assert entry["module"] is None

    def test_custom_exception_module(self) -> None:
        """A custom exception class carries the module it was defined in."""

        def fail() -> None:
            raise CustomError("custom")

        [entry] = exception_list(caught(fail))
        assert entry["type"] == "CustomError"
        assert entry["module"] == __name__
        assert entry["value"] == "custom"

    def test_qualified_name(self) -> None:
        """The type is the class's qualified name (``Outer.InnerError``)."""

        def fail() -> None:
            raise Outer.InnerError("inner")

        [entry] = exception_list(caught(fail))
        assert entry["type"] == "Outer.InnerError"
        assert entry["module"] == __name__

    def test_stdlib_exception_module(self) -> None:
        """An exception class from the standard library carries its module."""
        [entry] = exception_list(caught(lambda: json.loads("{")))
        assert entry["type"] == "JSONDecodeError"
        assert entry["module"] == "json.decoder"

    def test_mechanism_unknown_handled_left_out(self) -> None:
        """With ``handled`` unknown the key is left out, never sent as false."""
        [entry] = exception_list(caught(raise_value_error))
        mechanism = entry["mechanism"]
        assert mechanism["type"] == "generic"
        assert mechanism["synthetic"] is False
        assert "handled" not in mechanism

    @pytest.mark.parametrize("handled", [True, False])
    def test_mechanism_handled(self, handled: bool) -> None:
        """A known ``handled`` and the mechanism type are sent as given."""
        [entry] = exception_list(
            caught(raise_value_error), mechanism_type="logger", handled=handled
        )
        assert entry["mechanism"]["type"] == "logger"
        assert entry["mechanism"]["handled"] is handled
        assert entry["mechanism"]["synthetic"] is False

    def test_exception_without_traceback(self) -> None:
        """An exception that was never raised gives an entry with no frames."""
        [entry] = exception_list(ValueError("never raised"))
        assert entry["value"] == "never raised"
        assert entry["stacktrace"] == {"type": "raw", "frames": []}

    def test_str_raising(self) -> None:
        """An exception whose ``str()`` raises still gives an entry with a string value."""

        def fail() -> None:
            raise BadStrError()

        [entry] = exception_list(caught(fail))
        assert entry["type"] == "BadStrError"
        assert isinstance(entry["value"], str)

    def test_huge_message_truncated(self) -> None:
        """A huge message is cut to a bounded length."""
        [entry] = exception_list(caught(lambda: raise_value_error("m" * 1_000_000)))
        assert entry["value"].startswith("m" * 100)
        assert len(entry["value"]) <= MAX_VALUE_LENGTH + 100

    def test_snapshot_is_plain_picklable_data(self) -> None:
        """A snapshot holds no live objects: it pickles and compares equal after."""
        chain = snapshot_exception(caught(outer_function))
        assert all(isinstance(s, ExceptionSnapshot) for s in chain)
        assert pickle.loads(pickle.dumps(chain)) == chain
        assert build_exception_list(pickle.loads(pickle.dumps(chain))) == build_exception_list(
            chain
        )

    def test_output_is_json(self) -> None:
        """The built list is plain JSON data."""
        result = exception_list(caught(outer_function), handled=True)
        assert json.loads(json.dumps(result, allow_nan=False)) == result


# -- stack traces ------------------------------------------------------------------------------


class TestStacktrace:
    def test_frame_shape(self) -> None:
        """The stack trace is raw, and every frame carries the keys PostHog reads."""
        [entry] = exception_list(caught(outer_function))
        stacktrace = entry["stacktrace"]
        assert stacktrace["type"] == "raw"
        assert stacktrace["frames"]
        for frame in stacktrace["frames"]:
            assert set(frame) >= FRAME_KEYS, frame
            assert frame["platform"] == "python"
            assert isinstance(frame["lineno"], int)

    def test_outermost_first_raise_site_last(self) -> None:
        """Frames go from the catching frame to the raise site."""
        try:
            outer_function()
        except ValueError as exc:
            [entry] = exception_list(exc)
        functions = [f["function"] for f in entry["stacktrace"]["frames"]]
        assert functions == [
            "test_outermost_first_raise_site_last",
            "outer_function",
            "middle_function",
            "raise_value_error",
        ]

    def test_raise_site_source_context(self) -> None:
        """The last frame's context_line is the raising line, with 5 lines either side."""
        [entry] = exception_list(caught(outer_function))
        frame = entry["stacktrace"]["frames"][-1]
        lines = file_lines(__file__)
        assert frame["lineno"] == RAISE_LINE
        assert frame["context_line"] == RAISE_SOURCE
        assert lines[RAISE_LINE - 1] == RAISE_SOURCE
        assert frame["pre_context"] == lines[RAISE_LINE - 6 : RAISE_LINE - 1]
        assert frame["post_context"] == lines[RAISE_LINE : RAISE_LINE + 5]
        assert len(frame["pre_context"]) == 5
        assert len(frame["post_context"]) == 5

    def test_calling_frames_context(self) -> None:
        """Each calling frame's context_line is the line that made the call."""
        [entry] = exception_list(caught(outer_function))
        frames = {f["function"]: f for f in entry["stacktrace"]["frames"]}
        assert frames["outer_function"]["context_line"].strip() == "middle_function()"
        assert (
            frames["middle_function"]["context_line"].strip()
            == 'raise_value_error("from the middle")'
        )

    def test_file_module_and_function(self) -> None:
        """Frames name their absolute path, a relative filename, module and function."""
        [entry] = exception_list(caught(outer_function))
        frame = entry["stacktrace"]["frames"][-1]
        assert os.path.samefile(frame["abs_path"], __file__)
        assert not os.path.isabs(frame["filename"])
        assert frame["abs_path"].endswith(frame["filename"])
        assert frame["module"] == __name__
        assert frame["function"] == "raise_value_error"

    def test_test_code_in_app(self) -> None:
        """Frames in the project's own code are in_app."""
        [entry] = exception_list(caught(outer_function))
        assert all(f["in_app"] is True for f in entry["stacktrace"]["frames"])

    def test_stdlib_frame_not_in_app(self) -> None:
        """A frame inside the standard library (json.loads) is not in_app."""
        try:
            json.loads("{")
        except ValueError as exc:
            [entry] = exception_list(exc)
        frames = entry["stacktrace"]["frames"]
        assert frames[0]["function"] == "test_stdlib_frame_not_in_app"
        assert frames[0]["in_app"] is True
        last = frames[-1]
        assert last["module"] == "json.decoder"
        assert last["filename"] == os.path.join("json", "decoder.py")
        assert last["in_app"] is False
        assert all(f["in_app"] is False for f in frames[1:])

    def test_site_packages_frame_not_in_app(self) -> None:
        """A frame inside an installed package (under site-packages) is not in_app."""
        try:
            requests.models.PreparedRequest().prepare_url("example.com/path", None)
        except requests.exceptions.MissingSchema as exc:
            [entry] = exception_list(exc)
        frames = entry["stacktrace"]["frames"]
        assert frames[0]["in_app"] is True
        last = frames[-1]
        assert last["module"].startswith("requests")
        assert "site-packages" in last["abs_path"].replace("\\", "/").split("/")
        assert last["filename"] == os.path.join("requests", "models.py")
        assert last["in_app"] is False

    @pytest.mark.parametrize(
        ("path", "module", "expected"),
        [
            ("/srv/app/handlers.py", "app.handlers", True),
            ("/usr/lib/python3/site-packages/lib/x.py", "lib.x", False),
            ("/usr/lib/python3/dist-packages/lib/x.py", "lib.x", False),
            (json.__file__, "json", False),
            ("<frozen importlib._bootstrap>", "importlib._bootstrap", False),
        ],
    )
    def test_in_app_rules(self, path: str, module: str, expected: bool) -> None:
        """in_app is false under site-packages, dist-packages and the stdlib, true elsewhere."""
        assert InAppRules()(FrameSnapshot(path, 1, "f", module)) is expected

    def test_in_app_include_exclude(self) -> None:
        """Module prefixes force frames in or out; include wins over exclude."""
        vendored = FrameSnapshot("/usr/lib/site-packages/mylib/a.py", 1, "f", "mylib.a")
        own = FrameSnapshot("/srv/app/vendor/x.py", 1, "f", "app.vendor.x")
        assert InAppRules(include=("mylib",))(vendored) is True
        assert InAppRules(exclude=("app.vendor",))(own) is False
        assert InAppRules(include=("app",), exclude=("app.vendor",))(own) is True
        assert InAppRules(include=("myli",))(vendored) is False  # a prefix of names, not chars

    def test_recursion_error_bounded(self) -> None:
        """A RecursionError keeps a bounded number of frames, both ends included."""
        try:
            recurse(0)
        except RecursionError as exc:
            [entry] = exception_list(exc)
        frames = entry["stacktrace"]["frames"]
        assert 2 <= len(frames) <= MAX_FRAMES
        assert frames[0]["function"] == "test_recursion_error_bounded"
        assert frames[-1]["function"] == "recurse"


# -- chains ---------------------------------------------------------------------------------


class TestChains:
    def test_explicit_cause(self) -> None:
        """``raise B from A`` gives [B, A]: A is ``chained`` to its parent B, by ``cause``,
        with no ``handled`` of its own (PostHog's SDK specification)."""
        try:
            try:
                raise_value_error("root cause")
            except ValueError as a:
                raise CustomError("outer") from a
        except CustomError as exc:
            entries = exception_list(exc, handled=True)
        assert [e["type"] for e in entries] == ["CustomError", "ValueError"]
        assert [e["value"] for e in entries] == ["outer", "root cause"]
        outer, root = (e["mechanism"] for e in entries)
        assert "parent_id" not in outer
        assert root["source"] == "cause"
        assert root["type"] == "chained"
        assert "handled" not in root
        assert outer["handled"] is True
        assert root["parent_id"] == outer["exception_id"]
        assert root["exception_id"] != outer["exception_id"]
        assert entries[1]["stacktrace"]["frames"][-1]["function"] == "raise_value_error"

    def test_implicit_context(self) -> None:
        """An exception raised while handling another chains to it with ``__context__``."""
        try:
            try:
                raise_value_error("first")
            except ValueError:
                raise KeyError("second")  # noqa: B904 - the implicit chain is the point
        except KeyError as exc:
            entries = exception_list(exc)
        assert [e["type"] for e in entries] == ["KeyError", "ValueError"]
        assert entries[1]["mechanism"]["source"] == "context"
        assert entries[1]["mechanism"]["parent_id"] == entries[0]["mechanism"]["exception_id"]

    def test_cause_wins_over_context(self) -> None:
        """With both a cause and a context, the cause is followed."""
        try:
            try:
                raise_value_error("context")
            except ValueError:
                raise KeyError("outer") from TypeError("cause")
        except KeyError as exc:
            entries = exception_list(exc)
        assert [e["type"] for e in entries] == ["KeyError", "TypeError"]
        assert entries[1]["mechanism"]["source"] == "cause"

    def test_from_none(self) -> None:
        """``raise ... from None`` sends only the outer exception."""
        try:
            try:
                raise_value_error("hidden")
            except ValueError:
                raise CustomError("shown") from None
        except CustomError as exc:
            entries = exception_list(exc)
        assert [e["type"] for e in entries] == ["CustomError"]

    def test_three_deep_chain(self) -> None:
        """A chain of three is listed outermost first, each pointing at the one before."""
        try:
            try:
                try:
                    raise_value_error("a")
                except ValueError as a:
                    raise KeyError("b") from a
            except KeyError as b:
                raise CustomError("c") from b
        except CustomError as exc:
            entries = exception_list(exc)
        assert [e["type"] for e in entries] == ["CustomError", "KeyError", "ValueError"]
        ids = [e["mechanism"]["exception_id"] for e in entries]
        assert entries[1]["mechanism"]["parent_id"] == ids[0]
        assert entries[2]["mechanism"]["parent_id"] == ids[1]

    def test_cyclic_chain_terminates(self) -> None:
        """A chain whose context points back at itself is walked once, without hanging."""
        a = caught(lambda: raise_value_error("a"))
        b = caught(lambda: raise_value_error("b"))
        a.__context__ = b
        b.__context__ = a
        result: list[list[dict[str, Any]]] = []
        worker = threading.Thread(target=lambda: result.append(exception_list(a)), daemon=True)
        worker.start()
        worker.join(timeout=5)
        assert not worker.is_alive(), "walking a cyclic chain hung"
        [entries] = result
        assert [e["value"] for e in entries] == ["a", "b"]

    def test_self_cause(self) -> None:
        """An exception that is its own cause gives one entry."""
        exc = caught(raise_value_error)
        exc.__cause__ = exc
        assert len(exception_list(exc)) == 1

    @needs_groups
    def test_exception_group(self) -> None:
        """A group comes first, flagged, then each member, in order, naming its parent."""
        try:
            raise ExcGroup("g", [ValueError("v"), TypeError("t")])
        except Exception as exc:
            entries = exception_list(exc)
        assert [e["type"] for e in entries] == ["ExceptionGroup", "ValueError", "TypeError"]
        group, first, second = (e["mechanism"] for e in entries)
        assert group["is_exception_group"] is True
        assert "parent_id" not in group
        assert first["source"] == second["source"] == "member"
        assert first["parent_id"] == group["exception_id"]
        assert second["parent_id"] == group["exception_id"]
        assert "is_exception_group" not in first
        assert entries[1]["value"] == "v"
        assert entries[2]["value"] == "t"

    @needs_groups
    def test_nested_exception_group(self) -> None:
        """Sub-exceptions of a nested group point at the nested group."""
        inner = ExcGroup("inner", [KeyError("k")])
        try:
            raise ExcGroup("outer", [inner, ValueError("v")])
        except Exception as exc:
            entries = exception_list(exc)
        by_value = {e["value"]: e["mechanism"] for e in entries}
        assert entries[0]["type"] == "ExceptionGroup"
        inner_mech = next(
            e["mechanism"] for e in entries[1:] if e["mechanism"].get("is_exception_group")
        )
        assert inner_mech["source"] == "member"
        assert by_value["'k'"]["parent_id"] == inner_mech["exception_id"]
        assert by_value["'k'"]["source"] == "member"
        assert by_value["v"]["source"] == "member"
        assert by_value["v"]["parent_id"] == entries[0]["mechanism"]["exception_id"]


# -- capture_exception, end to end -----------------------------------------------------------


class TestCaptureException:
    def test_event_shape(self, client: Client, server: LocalServer) -> None:
        """capture_exception sends an $exception event with the full entry format."""
        exc = caught(outer_function)
        uid = client.capture_exception(exc, distinct_id="user-1")
        assert isinstance(uid, str)
        props = exception_properties(server, client)
        [entry] = props["$exception_list"]
        assert entry["type"] == "ValueError"
        assert entry["value"] == "from the middle"
        assert entry["module"] is None
        assert entry["mechanism"]["type"] == "generic"
        assert entry["mechanism"]["handled"] is True
        assert entry["mechanism"]["synthetic"] is False
        assert entry["stacktrace"]["type"] == "raw"
        frames = entry["stacktrace"]["frames"]
        assert [f["function"] for f in frames] == [
            "caught",
            "outer_function",
            "middle_function",
            "raise_value_error",
        ]
        assert frames[-1]["context_line"] == RAISE_SOURCE
        assert frames[-1]["lineno"] == RAISE_LINE
        assert all(set(f) >= FRAME_KEYS and f["in_app"] is True for f in frames)

    def test_properties_and_distinct_id(self, client: Client, server: LocalServer) -> None:
        """Properties and distinct_id given to capture_exception go with the event."""
        client.capture_exception(caught(raise_value_error), {"route": "/x"}, distinct_id="u-9")
        [event] = delivered(client, server, timeout=10, event="$exception")
        assert event["distinct_id"] == "u-9"
        assert event["properties"]["route"] == "/x"

    def test_properties_cannot_override(self, client: Client, server: LocalServer) -> None:
        """A property named $exception_list does not replace the real one."""
        client.capture_exception(
            caught(raise_value_error), {"$exception_list": "fake", "$exception_source": "x"}
        )
        props = exception_properties(server, client)
        assert isinstance(props["$exception_list"], list)
        assert props["$exception_list"][0]["type"] == "ValueError"

    def test_no_argument_in_except(self, client: Client, server: LocalServer) -> None:
        """capture_exception() inside an except block captures the exception being handled."""
        try:
            raise CustomError("current")
        except CustomError:
            uid = client.capture_exception()
        assert isinstance(uid, str)
        props = exception_properties(server, client)
        assert props["$exception_list"][0]["type"] == "CustomError"
        assert props["$exception_list"][0]["value"] == "current"

    def test_no_argument_outside_except(self, client: Client) -> None:
        """capture_exception() outside an except block returns None and raises nothing."""
        assert client.capture_exception() is None
        assert client.flush(timeout=5)
        assert client.stats.enqueued == 0

    def test_chain_arrives(self, client: Client, server: LocalServer) -> None:
        """A chained exception arrives with every link and its source."""
        try:
            try:
                raise_value_error("root")
            except ValueError as a:
                raise CustomError("top") from a
        except CustomError as exc:
            client.capture_exception(exc)
        props = exception_properties(server, client)
        entries = props["$exception_list"]
        assert [e["type"] for e in entries] == ["CustomError", "ValueError"]
        assert entries[1]["mechanism"]["source"] == "cause"
        assert entries[1]["mechanism"]["parent_id"] == entries[0]["mechanism"]["exception_id"]

    @needs_groups
    def test_exception_group_arrives(self, client: Client, server: LocalServer) -> None:
        """An exception group arrives as the group then its sub-exceptions."""
        try:
            raise ExcGroup("g", [ValueError("v"), TypeError("t")])
        except Exception as exc:
            client.capture_exception(exc)
        props = exception_properties(server, client)
        entries = props["$exception_list"]
        assert [e["type"] for e in entries] == ["ExceptionGroup", "ValueError", "TypeError"]
        assert entries[0]["mechanism"]["is_exception_group"] is True
        assert [e["mechanism"].get("source") for e in entries] == [None, "member", "member"]

    def test_cyclic_chain_arrives(self, client: Client, server: LocalServer) -> None:
        """An exception with a cyclic chain is captured and sent without hanging."""
        a = caught(lambda: raise_value_error("a"))
        b = caught(lambda: raise_value_error("b"))
        a.__context__ = b
        b.__context__ = a
        assert client.capture_exception(a) is not None
        props = exception_properties(server, client)
        assert [e["value"] for e in props["$exception_list"]] == ["a", "b"]

    def test_recursion_error_arrives(self, client: Client, server: LocalServer) -> None:
        """A RecursionError is sent with a bounded number of frames."""
        try:
            recurse(0)
        except RecursionError as exc:
            client.capture_exception(exc)
        props = exception_properties(server, client)
        frames = props["$exception_list"][0]["stacktrace"]["frames"]
        assert len(frames) <= MAX_FRAMES
        assert frames[-1]["function"] == "recurse"

    def test_str_raising(self, client: Client, server: LocalServer) -> None:
        """An exception whose ``str()`` raises is still captured and sent."""

        try:
            raise BadStrError()
        except BadStrError as exc:
            assert client.capture_exception(exc) is not None
        props = exception_properties(server, client)
        [entry] = props["$exception_list"]
        assert entry["type"] == "BadStrError"
        assert isinstance(entry["value"], str)

    def test_huge_message_truncated(self, client: Client, server: LocalServer) -> None:
        """A huge message is sent truncated, and the event is accepted."""
        client.capture_exception(caught(lambda: raise_value_error("h" * 2_000_000)))
        props = exception_properties(server, client)
        value = props["$exception_list"][0]["value"]
        assert value.startswith("h" * 100)
        assert len(value) <= MAX_VALUE_LENGTH + 100

    def test_wrong_type_raises(self, client: Client) -> None:
        """Passing something that is not an exception is a programming error."""
        with pytest.raises(TypeError):
            client.capture_exception("not an exception")  # type: ignore[arg-type]


# -- logging, end to end -----------------------------------------------------------------


class TestLogging:
    def test_logger_exception(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """logger.exception sends level error, source python.logging, mechanism logger/handled."""
        try:
            outer_function()
        except ValueError:
            logger.exception("request failed for %s", "alice")
        props = exception_properties(server, client)
        assert props["$exception_level"] == "error"
        assert props["$exception_source"] == "python.logging"
        [entry] = props["$exception_list"]
        assert entry["type"] == "ValueError"
        assert entry["mechanism"]["type"] == "logger"
        assert entry["mechanism"]["handled"] is True
        assert entry["mechanism"]["synthetic"] is False
        assert entry["stacktrace"]["frames"][-1]["context_line"] == RAISE_SOURCE
        assert props["log_message"] == "request failed for alice"
        assert props["logger_name"] == logger.name

    def test_critical_is_fatal(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """logger.critical(..., exc_info=True) sends level fatal, still handled."""
        try:
            raise_value_error()
        except ValueError:
            logger.critical("crashed", exc_info=True)
        props = exception_properties(server, client)
        assert props["$exception_level"] == "fatal"
        assert props["$exception_source"] == "python.logging"
        mechanism = props["$exception_list"][0]["mechanism"]
        assert mechanism["type"] == "logger"
        assert mechanism["handled"] is True

    def test_warning_with_lowered_level(
        self,
        make_logger: Callable[..., logging.Logger],
        client: Client,
        server: LocalServer,
    ) -> None:
        """With exception_level WARNING, logger.warning(..., exc_info=True) sends level warning."""
        log = make_logger(exception_level=logging.WARNING)
        try:
            raise_value_error()
        except ValueError:
            log.warning("odd", exc_info=True)
        props = exception_properties(server, client)
        assert props["$exception_level"] == "warning"
        assert props["$exception_source"] == "python.logging"
        assert props["$exception_list"][0]["mechanism"]["type"] == "logger"
        assert props["$exception_list"][0]["mechanism"]["handled"] is True

    def test_warning_below_default_level_ignored(
        self, logger: logging.Logger, client: Client
    ) -> None:
        """With the default exception_level (ERROR), a warning with exc_info sends nothing."""
        try:
            raise_value_error()
        except ValueError:
            logger.warning("just a warning", exc_info=True)
        assert client.stats.enqueued == 0

    def test_extras_do_not_override(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """User extras named $exception_list/$exception_level/$exception_source are ignored."""
        try:
            raise_value_error()
        except ValueError:
            logger.exception(
                "failed",
                extra={
                    "$exception_list": [{"type": "Fake"}],
                    "$exception_level": "debug",
                    "$exception_source": "user.code",
                    "request_id": "r-1",
                },
            )
        props = exception_properties(server, client)
        assert props["$exception_level"] == "error"
        assert props["$exception_source"] == "python.logging"
        assert [e["type"] for e in props["$exception_list"]] == ["ValueError"]
        assert props["request_id"] == "r-1"


# -- captured once ------------------------------------------------------------------------------


class TestCapturedOnce:
    def test_logged_twice_then_captured(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """One exception logged twice then captured by hand gives one $exception event."""
        try:
            raise_value_error("only once")
        except ValueError as exc:
            logger.exception("first")
            assert client.stats.enqueued == 1
            logger.exception("second")
            assert client.stats.enqueued == 1
            assert client.capture_exception(exc) is None
        assert client.stats.enqueued == 1
        props = exception_properties(server, client)
        assert props["log_message"] == "first"

    def test_captured_then_logged(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """An exception captured by hand is not sent again when logged."""
        try:
            raise_value_error("manual first")
        except ValueError as exc:
            assert client.capture_exception(exc) is not None
            logger.exception("logged after")
            assert client.capture_exception(exc) is None
        props = exception_properties(server, client)
        assert "log_message" not in props
        assert props["$exception_list"][0]["mechanism"]["type"] == "generic"

    def test_distinct_exceptions_each_sent(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """Two different exception objects, even equal-looking, are both sent."""
        for _ in range(2):
            try:
                raise_value_error("same text")
            except ValueError:
                logger.exception("failed")
        events = delivered(client, server, 2, timeout=10, event="$exception")
        assert len(events) == 2
        assert len({e["uuid"] for e in events}) == 2

    def test_exception_with_slots(self, client: Client, server: LocalServer) -> None:
        """An exception that cannot take attributes is still captured (and not fatally)."""
        try:
            raise SlottedError("slots")
        except SlottedError as exc:
            assert client.capture_exception(exc) is not None
        props = exception_properties(server, client)
        assert props["$exception_list"][0]["type"] == "SlottedError"
