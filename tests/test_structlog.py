"""Tests for posthog_logging.structlog: the processors, alone and behind structlog's stdlib
integration.

Property shapes, names and levels are checked in memory with the ``posthog_events``
fixture (exactly what would go on the wire); the end-to-end set-ups at the bottom go
through the real local server. Every test configures structlog itself; an autouse
fixture restores structlog's defaults and clears its context variables afterwards.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture
from structlog.typing import Processor

import posthog_logging
from posthog_logging import Client, PostHogHandler, default_client
from posthog_logging.reentry import library_code
from posthog_logging.server import LocalServer
from posthog_logging.structlog import PostHogProcessor, merge_posthog_context
from posthog_logging.testing import CapturedEvents

from .helpers import Unprintable, delivered, unique_name
from .polling import wait_until

#: Keys structlog (or its stdlib integration) puts in an entry to describe it.
RESERVED = ("event", "level", "timestamp", "logger", "exc_info", "exception", "stack_info")


# -- fixtures and helpers --------------------------------------------------------------


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test configures structlog itself; leave it as a fresh import would."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def configure_capture(processors: Sequence[Processor]) -> LogCapture:
    """Configure structlog with ``processors`` followed by an in-memory ``LogCapture``."""
    cap = LogCapture()
    structlog.configure(
        processors=[*processors, cap],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    return cap


def configure_json(processors: Sequence[Processor]) -> io.StringIO:
    """Configure structlog with ``processors`` followed by ``JSONRenderer`` into a buffer."""
    out = io.StringIO()
    structlog.configure(
        processors=[*processors, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    return out


def rendered(out: io.StringIO) -> list[dict[str, Any]]:
    """The JSON lines written to ``out``."""
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def own_props(event: dict[str, Any]) -> dict[str, Any]:
    """An event's properties without the ``$`` ones the library adds."""
    return {k: v for k, v in event["properties"].items() if not k.startswith("$")}


def raise_value_error(message: str = "boom") -> None:
    raise ValueError(message)


def caught(message: str = "boom") -> ValueError:
    """A ValueError that was raised and caught, so it has a traceback."""
    try:
        raise_value_error(message)
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


class Ambiguous:
    """An object whose truth value cannot be decided (like a numpy array)."""

    def __bool__(self) -> bool:
        raise ValueError("the truth value is ambiguous")


# -- 1. marked entries -----------------------------------------------------------------


class TestMarkedEntries:
    def test_capture_true_sends_event_named_after_message(
        self, posthog_events: CapturedEvents
    ) -> None:
        """log.info("page_viewed", capture=True, page="/") sends page_viewed with page."""
        configure_capture([PostHogProcessor()])
        structlog.get_logger().info("page_viewed", capture=True, page="/")
        event = posthog_events.assert_captured("page_viewed", count=1, page="/")
        assert "capture" not in event["properties"]

    def test_capture_string_names_the_event(self, posthog_events: CapturedEvents) -> None:
        """capture="signup" sends an event named signup, whatever the message says."""
        configure_capture([PostHogProcessor()])
        structlog.get_logger().info("user %s signed up", capture="signup", plan="free")
        posthog_events.assert_captured("signup", count=1, plan="free")
        assert posthog_events.names == ["signup"]

    def test_truthy_non_string_marker_uses_the_message(
        self, posthog_events: CapturedEvents
    ) -> None:
        """A truthy marker that is not a string (capture=1) names the event after the message."""
        configure_capture([PostHogProcessor()])
        structlog.get_logger().info("report_exported", capture=1)
        assert posthog_events.names == ["report_exported"]

    @pytest.mark.parametrize("marker", [None, False, "", 0])
    def test_unmarked_or_falsy_marked_entries_send_nothing(
        self, posthog_events: CapturedEvents, marker: Any
    ) -> None:
        """Entries without the marker, or with a falsy one, send no event but still
        render (an error without an exception is only a synthetic ``$exception``)."""
        cap = configure_capture([PostHogProcessor()])
        log = structlog.get_logger()
        log.info("cache warmed", size=3)
        log.info("not an event", capture=marker)
        log.error("an error without an exception")
        assert posthog_events.names == ["$exception"]
        [entry] = posthog_events.exceptions[0]["properties"]["$exception_list"]
        assert entry["mechanism"]["synthetic"] is True
        assert [e["event"] for e in cap.entries] == [
            "cache warmed",
            "not an event",
            "an error without an exception",
        ]

    def test_marker_is_consumed_and_entry_is_rendered(self, posthog_events: CapturedEvents) -> None:
        """The marker is not in the rendered line; everything else is, for the renderer."""
        out = configure_json([structlog.processors.add_log_level, PostHogProcessor()])
        structlog.get_logger().info("page_viewed", capture=True, page="/")
        structlog.get_logger().info("signup", capture="signed_up", plan="pro")
        lines = rendered(out)
        assert lines == [
            {"event": "page_viewed", "page": "/", "level": "info"},
            {"event": "signup", "plan": "pro", "level": "info"},
        ]
        assert posthog_events.names == ["page_viewed", "signed_up"]

    def test_processor_returns_the_event_dict(self, posthog_events: CapturedEvents) -> None:
        """The processor hands the same event dict on, so the next processor sees it."""
        processor = PostHogProcessor()
        for entry in (
            {"event": "page_viewed", "capture": True, "page": "/"},
            {"event": "plain", "page": "/"},
            {"event": "failed", "exc_info": caught()},
        ):
            returned = processor(None, "error", entry)
            assert returned is entry
            assert "capture" not in returned
            assert returned["event"] in ("page_viewed", "plain", "failed")
        # "plain" is an error without an exception: a synthetic one
        assert sorted(posthog_events.names) == ["$exception", "$exception", "page_viewed"]

    def test_custom_event_key(self, posthog_events: CapturedEvents) -> None:
        """With event_key="track", track=True marks the entry and capture=True does not."""
        out = configure_json([PostHogProcessor(event_key="track")])
        log = structlog.get_logger()
        log.info("clicked", track=True, button="buy")
        log.info("not_tracked", capture=True)
        assert posthog_events.names == ["clicked"]
        posthog_events.assert_captured("clicked", button="buy")
        assert rendered(out) == [
            {"event": "clicked", "button": "buy"},
            {"event": "not_tracked", "capture": True},
        ]

    @pytest.mark.parametrize("bad", ["", None, 1])
    def test_bad_event_key_is_refused_at_configuration(self, bad: Any) -> None:
        """A non-string or empty event_key fails when the processor is made."""
        with pytest.raises(ValueError, match="event_key"):
            PostHogProcessor(event_key=bad)

    def test_bad_client_is_refused_at_configuration(self) -> None:
        """A client that is not a posthog_logging.Client fails when the processor is made."""
        with pytest.raises(TypeError, match="client"):
            PostHogProcessor(client=object())  # type: ignore[arg-type]


class TestProperties:
    def test_entry_bound_and_contextvar_values_are_properties(
        self, posthog_events: CapturedEvents
    ) -> None:
        """Own keys, bind() values and bind_contextvars() values (unmerged) are properties."""
        configure_capture([PostHogProcessor()])  # no merge_contextvars in the chain
        structlog.contextvars.bind_contextvars(request_id="req-1", region="eu")
        log = structlog.get_logger().bind(user_agent="curl", region="us")
        log.info("page_viewed", capture=True, page="/")
        event = posthog_events.assert_captured("page_viewed", count=1)
        assert own_props(event) == {
            "page": "/",
            "user_agent": "curl",
            "request_id": "req-1",
            "region": "us",  # the entry's own value wins over the context variable
        }

    def test_entry_value_wins_over_context_variable(self, posthog_events: CapturedEvents) -> None:
        """A key given in the call wins over the same key bound as a context variable."""
        configure_capture([structlog.contextvars.merge_contextvars, PostHogProcessor()])
        structlog.contextvars.bind_contextvars(page="/bound")
        structlog.get_logger().info("page_viewed", capture=True, page="/given")
        posthog_events.assert_captured("page_viewed", count=1, page="/given")

    def test_reserved_and_underscored_keys_are_not_properties(
        self, posthog_events: CapturedEvents
    ) -> None:
        """structlog's own keys, _-prefixed keys and the context stamps are not properties."""
        configure_capture(
            [
                structlog.contextvars.merge_contextvars,
                merge_posthog_context,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                PostHogProcessor(),
            ]
        )
        structlog.contextvars.bind_contextvars(_internal="hidden")
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_1")
            posthog_logging.set_context_session("sess_1")
            posthog_logging.tag("team", "growth")
            structlog.get_logger().info(
                "page_viewed",
                capture=True,
                page="/",
                logger="shop",
                logger_name="shop",
                log_level="info",
                exception="rendered traceback text",
                stack="rendered stack",
                stack_info=False,
                exc_info=False,
                positional_args=(),
                _private=1,
            )
        event = posthog_events.assert_captured("page_viewed", count=1)
        assert own_props(event) == {"page": "/", "team": "growth"}
        for key in (*RESERVED, "posthog_distinct_id", "posthog_session_id", "posthog_tags"):
            assert key not in event["properties"], key

    def test_distinct_id_groups_and_properties_are_routed(
        self, posthog_events: CapturedEvents
    ) -> None:
        """distinct_id, groups and properties mean what they mean in capture()."""
        configure_capture([PostHogProcessor()])
        structlog.get_logger().info(
            "upgraded",
            capture=True,
            distinct_id="user_9",
            groups={"company": "acme"},
            properties={"plan": "pro", "seats": 3},
            seats=5,
        )
        event = posthog_events.assert_captured("upgraded", distinct_id="user_9", count=1)
        assert event["properties"]["$groups"] == {"company": "acme"}
        assert own_props(event) == {"plan": "pro", "seats": 5}

    def test_non_mapping_groups_and_properties_stay_properties(
        self, posthog_events: CapturedEvents
    ) -> None:
        """A groups or properties value that is not a mapping is kept as a plain property."""
        configure_capture([PostHogProcessor()])
        structlog.get_logger().info("odd", capture=True, groups="acme", properties=[1, 2])
        event = posthog_events.assert_captured("odd", count=1)
        assert own_props(event) == {"groups": "acme", "properties": [1, 2]}
        assert "$groups" not in event["properties"]

    def test_distinct_id_bound_as_context_variable_is_routed(
        self, posthog_events: CapturedEvents
    ) -> None:
        """A distinct_id bound with bind_contextvars() is the event's person."""
        configure_capture([PostHogProcessor()])
        structlog.contextvars.bind_contextvars(distinct_id="user_cv")
        structlog.get_logger().info("page_viewed", capture=True)
        event = posthog_events.assert_captured("page_viewed", distinct_id="user_cv", count=1)
        assert "distinct_id" not in event["properties"]


class TestContext:
    def test_identity_session_and_tags_reach_the_event(
        self, posthog_events: CapturedEvents
    ) -> None:
        """new_context() identity, session and tags are on the event, merged or not."""
        configure_capture([PostHogProcessor()])
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_42")
            posthog_logging.set_context_session("sess_42")
            posthog_logging.tag("team", "growth")
            structlog.get_logger().info("page_viewed", capture=True)
        event = posthog_events.assert_captured(
            "page_viewed", distinct_id="user_42", count=1, team="growth"
        )
        assert event["properties"]["$session_id"] == "sess_42"

    def test_no_context_sends_a_personless_event(self, posthog_events: CapturedEvents) -> None:
        """Outside any context the event has no person (and is still sent)."""
        configure_capture([merge_posthog_context, PostHogProcessor()])
        structlog.get_logger().info("page_viewed", capture=True)
        event = posthog_events.assert_captured("page_viewed", count=1)
        assert event["properties"]["$process_person_profile"] is False
        assert "$session_id" not in event["properties"]

    def test_merge_posthog_context_adds_only_what_is_set(self) -> None:
        """merge_posthog_context adds posthog_* keys to the rendered line only when set."""
        out = configure_json([merge_posthog_context])
        log = structlog.get_logger()
        log.info("outside")
        with posthog_logging.new_context():
            log.info("empty context")
            posthog_logging.identify_context("user_1")
            log.info("identified")
            posthog_logging.set_context_session("sess_1")
            posthog_logging.tag("team", "growth")
            log.info("everything")
        assert rendered(out) == [
            {"event": "outside"},
            {"event": "empty context"},
            {"event": "identified", "posthog_distinct_id": "user_1"},
            {
                "event": "everything",
                "posthog_distinct_id": "user_1",
                "posthog_session_id": "sess_1",
                "posthog_tags": {"team": "growth"},
            },
        ]

    def test_merge_posthog_context_keeps_keys_already_there(self) -> None:
        """A posthog_distinct_id already in the entry is kept rather than overwritten."""
        out = configure_json([merge_posthog_context])
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_ctx")
            structlog.get_logger().info("x", posthog_distinct_id="user_given")
        assert rendered(out) == [{"event": "x", "posthog_distinct_id": "user_given"}]

    def test_stamped_context_is_used_where_the_entry_is_processed(
        self, posthog_events: CapturedEvents
    ) -> None:
        """An entry stamped by merge_posthog_context keeps its identity when sent elsewhere."""
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_logged")
            posthog_logging.set_context_session("sess_logged")
            posthog_logging.tag("team", "core")
            entry = merge_posthog_context(None, "info", {"event": "job_done", "capture": True})
        # Processed later, on another thread, in no context at all.
        worker = threading.Thread(target=PostHogProcessor(), args=(None, "info", entry))
        worker.start()
        worker.join()
        event = posthog_events.assert_captured(
            "job_done", distinct_id="user_logged", count=1, team="core"
        )
        assert event["properties"]["$session_id"] == "sess_logged"


# -- 2. exceptions ---------------------------------------------------------------------


class TestExceptions:
    def test_log_exception_sends_one_exception_event(self, posthog_events: CapturedEvents) -> None:
        """log.exception("boom") in an except block sends one $exception from structlog."""
        configure_capture([structlog.processors.add_log_level, PostHogProcessor()])
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_7")
            try:
                raise_value_error("card declined")
            except ValueError:
                structlog.get_logger().exception("boom", order_id=17)
        assert len(posthog_events.exceptions) == 1
        event = posthog_events.assert_captured(
            "$exception", distinct_id="user_7", count=1, order_id=17, log_message="boom"
        )
        props = event["properties"]
        assert props["$exception_source"] == "python.structlog"
        assert props["$exception_level"] == "error"
        assert props["log_level"] == "error"
        (first,) = props["$exception_list"]
        assert first["type"] == "ValueError"
        assert first["value"] == "card declined"
        assert first["mechanism"]["type"] == "logger"
        assert first["mechanism"]["handled"] is True
        assert any(f["function"] == "raise_value_error" for f in first["stacktrace"]["frames"])
        assert posthog_events.names == ["$exception"]

    @pytest.mark.parametrize("form", ["true", "instance", "tuple", "never_raised"])
    def test_exc_info_forms(self, posthog_events: CapturedEvents, form: str) -> None:
        """exc_info as True, an exception (outside except), or a sys.exc_info() tuple."""
        cap = configure_capture([PostHogProcessor()])
        log = structlog.get_logger()
        if form == "true":
            try:
                raise_value_error("as true")
            except ValueError:
                log.error("failed", exc_info=True)
        elif form == "instance":
            log.error("failed", exc_info=caught("as instance"))
        elif form == "tuple":
            try:
                raise_value_error("as tuple")
            except ValueError:
                info = sys.exc_info()
            log.error("failed", exc_info=info)
        else:
            log.error("failed", exc_info=ValueError("never raised"))
        (event,) = posthog_events.exceptions
        (first,) = event["properties"]["$exception_list"]
        assert first["type"] == "ValueError"
        assert (
            first["value"]
            == {
                "true": "as true",
                "instance": "as instance",
                "tuple": "as tuple",
                "never_raised": "never raised",
            }[form]
        )
        assert event["properties"]["log_message"] == "failed"
        assert len(cap.entries) == 1

    def test_exc_info_true_outside_an_except_block_sends_nothing(
        self, posthog_events: CapturedEvents
    ) -> None:
        """exc_info=True with no exception being handled still renders; the entry is an
        error without an exception (a synthetic one, or nothing when that is off)."""
        cap = configure_capture([PostHogProcessor(capture_errors_without_exception=False)])
        structlog.get_logger().error("nothing to report", exc_info=True)
        assert posthog_events.events == []
        assert len(cap.entries) == 1
        configure_capture([PostHogProcessor()])
        structlog.get_logger().error("nothing to report", exc_info=True)
        [entry] = posthog_events.exceptions[0]["properties"]["$exception_list"]
        assert entry["mechanism"]["synthetic"] is True

    def test_below_exception_level_sends_no_exception(self, posthog_events: CapturedEvents) -> None:
        """log.warning(..., exc_info=True) with the default level sends no $exception."""
        cap = configure_capture([PostHogProcessor()])
        log = structlog.get_logger()
        try:
            raise_value_error()
        except ValueError:
            log.warning("retrying", exc_info=True)
            log.info("retrying", exc_info=True)
        assert posthog_events.events == []
        assert len(cap.entries) == 2

    def test_lower_exception_level_sends_warnings(self, posthog_events: CapturedEvents) -> None:
        """With exception_level="warning", a warning with exc_info is a warning-level event."""
        configure_capture([PostHogProcessor(exception_level="warning")])
        try:
            raise_value_error()
        except ValueError:
            structlog.get_logger().warning("retrying", exc_info=True)
        (event,) = posthog_events.exceptions
        assert event["properties"]["$exception_level"] == "warning"

    @pytest.mark.parametrize(
        ("method", "expected"), [("error", "error"), ("exception", "error"), ("critical", "fatal")]
    )
    def test_level_comes_from_the_method(
        self, posthog_events: CapturedEvents, method: str, expected: str
    ) -> None:
        """$exception_level follows the method: error and exception are error, critical fatal."""
        configure_capture([PostHogProcessor()])
        try:
            raise_value_error()
        except ValueError:
            getattr(structlog.get_logger(), method)("failed", exc_info=True)
        (event,) = posthog_events.exceptions
        assert event["properties"]["$exception_level"] == expected

    def test_level_comes_from_the_level_key(self, posthog_events: CapturedEvents) -> None:
        """add_log_level's level key wins over the method name for the level."""
        processor = PostHogProcessor()
        processor(None, "msg", {"event": "a", "level": "critical", "exc_info": caught("a")})
        processor(None, "critical", {"event": "b", "level": "info", "exc_info": caught("b")})
        processor(None, "msg", {"event": "c", "level": "ERROR", "exc_info": caught("c")})
        levels = {
            e["properties"]["log_message"]: e["properties"]["$exception_level"]
            for e in posthog_events.exceptions
        }
        assert levels == {"a": "fatal", "c": "error"}

    def test_marked_exception_entry_sends_event_and_exception(
        self, posthog_events: CapturedEvents
    ) -> None:
        """A marked log.exception(...) sends both the event and the $exception."""
        configure_capture([PostHogProcessor()])
        try:
            raise_value_error()
        except ValueError:
            structlog.get_logger().exception("checkout_failed", capture=True, cart=3)
        assert sorted(posthog_events.names) == ["$exception", "checkout_failed"]
        posthog_events.assert_captured("checkout_failed", count=1, cart=3)
        posthog_events.assert_captured("$exception", count=1, cart=3)

    @pytest.mark.parametrize(
        "formatter",
        [structlog.processors.format_exc_info, structlog.processors.dict_tracebacks],
        ids=["format_exc_info", "dict_tracebacks"],
    )
    def test_processor_before_formatting_captures_and_traceback_renders(
        self, posthog_events: CapturedEvents, formatter: Processor
    ) -> None:
        """Before format_exc_info / dict_tracebacks: captured, and the traceback renders."""
        out = configure_json([PostHogProcessor(), formatter])
        try:
            raise_value_error("rendered too")
        except ValueError:
            structlog.get_logger().exception("boom")
        (event,) = posthog_events.exceptions
        assert event["properties"]["$exception_list"][0]["value"] == "rendered too"
        (line,) = rendered(out)
        assert "exc_info" not in line
        text = json.dumps(line["exception"])
        assert "ValueError" in text
        assert "rendered too" in text

    @pytest.mark.parametrize(
        "formatter",
        [structlog.processors.format_exc_info, structlog.processors.dict_tracebacks],
        ids=["format_exc_info", "dict_tracebacks"],
    )
    def test_processor_after_formatting_captures_no_exception(
        self, posthog_events: CapturedEvents, formatter: Processor
    ) -> None:
        """After format_exc_info / dict_tracebacks (documented limitation): the traceback
        is gone, so the error is sent as one logged without an exception."""
        out = configure_json([formatter, PostHogProcessor()])
        log = structlog.get_logger()
        try:
            raise_value_error("too late")
        except ValueError:
            log.exception("boom")
        log.info("sentinel", capture=True)
        assert posthog_events.names == ["$exception", "sentinel"]
        [entry] = posthog_events.exceptions[0]["properties"]["$exception_list"]
        assert entry["mechanism"]["synthetic"] is True
        assert entry["value"] == "boom"
        lines = rendered(out)
        assert [line["event"] for line in lines] == ["boom", "sentinel"]
        assert "too late" in json.dumps(lines[0]["exception"])

    def test_same_exception_logged_twice_is_sent_once(self, posthog_events: CapturedEvents) -> None:
        """One exception object logged twice (or re-logged up the stack) is sent once."""
        cap = configure_capture([PostHogProcessor()])
        log = structlog.get_logger()
        try:
            try:
                raise_value_error("once")
            except ValueError:
                log.exception("inner")
                raise
        except ValueError as exc:
            log.exception("outer")
            log.error("again", exc_info=exc)
        assert len(posthog_events.exceptions) == 1
        assert posthog_events.exceptions[0]["properties"]["log_message"] == "inner"
        assert len(cap.entries) == 3

    def test_exception_leaving_a_context_after_logging_is_sent_once(
        self, posthog_events: CapturedEvents
    ) -> None:
        """An exception logged, then leaving a new_context(), is one $exception."""
        configure_capture([PostHogProcessor()])
        with pytest.raises(ValueError), posthog_logging.new_context():
            try:
                raise_value_error("escapes")
            except ValueError:
                structlog.get_logger().exception("logged first")
                raise
        assert len(posthog_events.exceptions) == 1


# -- 3. never raises -------------------------------------------------------------------


class TestNeverRaises:
    def test_failing_client_never_raises(
        self, posthog_events: CapturedEvents, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A client that fails to take events: nothing raises, entries render, drops count."""
        client = Client(api_key="phc_test_key_0123456789", flush_interval=0.05)
        try:

            def fail(*args: Any, **kwargs: Any) -> None:
                raise RuntimeError("client is broken")

            monkeypatch.setattr(client, "submit", fail)
            cap = configure_capture([PostHogProcessor(client=client)])
            log = structlog.get_logger()
            log.info("page_viewed", capture=True)
            try:
                raise_value_error()
            except ValueError:
                log.exception("boom")
            assert [e["event"] for e in cap.entries] == ["page_viewed", "boom"]
            assert client.stats.dropped.get("handler_error") == 2
        finally:
            client.shutdown(timeout=1)

    def test_failing_event_builder_never_raises(
        self, posthog_events: CapturedEvents, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A client whose event builder fails: nothing raises, entries render, drops count."""
        client = Client(api_key="phc_test_key_0123456789", flush_interval=0.05)
        try:

            def fail(*args: Any, **kwargs: Any) -> None:
                raise RuntimeError("builder is broken")

            monkeypatch.setattr(client._builder, "build", fail)
            cap = configure_capture([PostHogProcessor(client=client)])
            log = structlog.get_logger()
            log.info("page_viewed", capture=True)
            try:
                raise_value_error()
            except ValueError:
                log.exception("boom")
            assert [e["event"] for e in cap.entries] == ["page_viewed", "boom"]
            client.flush(2)
            assert posthog_events.events == []
            assert client.stats.dropped.get("build_error") == 2
        finally:
            client.shutdown(timeout=1)

    def test_failing_before_send_never_raises(self, posthog_events: CapturedEvents) -> None:
        """A before_send hook that raises: nothing raises, entries render, drops count."""

        def before_send(event: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("hook is broken")

        client = Client(api_key="phc_test_key_0123456789", before_send=before_send)
        try:
            cap = configure_capture([PostHogProcessor(client=client)])
            structlog.get_logger().info("page_viewed", capture=True)
            assert len(cap.entries) == 1
            client.flush(2)
            assert posthog_events.events == []
            assert client.stats.dropped.get("before_send_error") == 1
        finally:
            client.shutdown(timeout=1)

    def test_failing_default_client_lookup_never_raises(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the default client cannot be made, logging goes on as if nothing happened."""

        def fail() -> Client:
            raise RuntimeError("no default client")

        monkeypatch.setattr(default_client, "get_client", fail)
        cap = configure_capture([PostHogProcessor()])
        log = structlog.get_logger()
        log.info("page_viewed", capture=True)
        try:
            raise_value_error()
        except ValueError:
            log.exception("boom")
        assert [e["event"] for e in cap.entries] == ["page_viewed", "boom"]

    def test_weird_values_never_raise(self, posthog_events: CapturedEvents) -> None:
        """Unprintable objects, cycles and huge ints are coerced; nothing raises."""
        cap = configure_capture([merge_posthog_context, PostHogProcessor()])
        cyclic: dict[str, Any] = {}
        cyclic["self"] = cyclic
        looped: list[Any] = []
        looped.append(looped)
        log = structlog.get_logger()
        log.info(
            "weird",
            capture=True,
            unprintable=Unprintable(),
            cyclic=cyclic,
            looped=looped,
            huge=10**5000,
            raw=b"\xff\x00",
            distinct_id=10**5000,
        )
        log.info(Unprintable(), capture=True)
        log.info("named_by_unprintable", capture=Unprintable())
        log.info(
            "odd_routing",
            capture=True,
            distinct_id=Unprintable(),
            groups=Unprintable(),
            properties=Unprintable(),
        )
        log.info("cyclic_properties", capture=True, properties=cyclic)
        log.error("weird exc_info", exc_info=(1, 2, 3))
        log.error("string exc_info", exc_info="yes")
        assert len(cap.entries) == 7
        weird = posthog_events.assert_captured("weird", count=1)
        assert isinstance(weird["distinct_id"], str)
        assert weird["distinct_id"]
        assert set(own_props(weird)) == {"unprintable", "cyclic", "looped", "huge", "raw"}
        assert "named_by_unprintable" in posthog_events.names
        assert "odd_routing" in posthog_events.names
        assert "cyclic_properties" in posthog_events.names
        # exc_info that holds no exception: errors logged without one
        assert {e["properties"]["log_message"] for e in posthog_events.exceptions} == {
            "weird exc_info",
            "string exc_info",
        }
        for event in posthog_events.exceptions:
            assert event["properties"]["$exception_list"][0]["mechanism"]["synthetic"] is True

    def test_exception_with_unprintable_message_never_raises(
        self, posthog_events: CapturedEvents
    ) -> None:
        """An exception whose str() fails is still sent, under a stand-in message."""

        class BadError(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no str")

        cap = configure_capture([PostHogProcessor()])
        try:
            raise BadError()
        except BadError:
            structlog.get_logger().exception(Unprintable())
        (event,) = posthog_events.exceptions
        (first,) = event["properties"]["$exception_list"]
        assert first["type"].endswith("BadError")
        assert "str() failed" in first["value"]
        assert len(cap.entries) == 1

    def test_marker_or_exc_info_without_truth_value_never_raises(
        self, posthog_events: CapturedEvents
    ) -> None:
        """A marker or exc_info whose truth value raises (numpy-like) does not break logging."""
        cap = configure_capture([PostHogProcessor()])
        log = structlog.get_logger()
        log.info("ambiguous marker", capture=Ambiguous())
        log.error("ambiguous exc_info", exc_info=Ambiguous())
        assert len(cap.entries) == 2

    def test_nothing_is_sent_from_library_code(self, posthog_events: CapturedEvents) -> None:
        """Entries logged while the library itself runs send nothing and still render."""
        cap = configure_capture([PostHogProcessor()])
        log = structlog.get_logger()
        with library_code():
            log.info("page_viewed", capture=True)
            try:
                raise_value_error()
            except ValueError:
                log.exception("boom")
        assert [e["event"] for e in cap.entries] == ["page_viewed", "boom"]
        assert posthog_events.events == []

    def test_never_drops_an_entry(self, posthog_events: CapturedEvents) -> None:
        """Marked, exceptional, plain and failing entries all reach the next processor."""
        seen: list[str] = []

        def next_processor(logger: Any, method: str, event_dict: Any) -> Any:
            seen.append(event_dict["event"])
            return event_dict

        configure_capture([PostHogProcessor(), next_processor])
        log = structlog.get_logger()
        log.info("a", capture=True)
        log.info("b")
        log.info("c", capture="")
        try:
            raise_value_error()
        except ValueError:
            log.exception("d")
        log.info("e", capture=True, distinct_id=Unprintable())
        assert seen == ["a", "b", "c", "d", "e"]


# -- 4. async --------------------------------------------------------------------------


class TestAsync:
    def test_ainfo_in_a_task_has_the_task_identity(self, posthog_events: CapturedEvents) -> None:
        """await log.ainfo(..., capture=True) in a task's new_context() has its identity."""
        configure_capture([merge_posthog_context, PostHogProcessor()])
        log = structlog.get_logger()

        async def handle() -> None:
            with posthog_logging.new_context():
                posthog_logging.identify_context("user_async")
                posthog_logging.tag("via", "task")
                await log.ainfo("page_viewed", capture=True, page="/async")

        async def main() -> None:
            await asyncio.create_task(handle())

        asyncio.run(main())
        posthog_events.assert_captured(
            "page_viewed", distinct_id="user_async", count=1, page="/async", via="task"
        )

    def test_aexception_in_a_task_is_sent_with_the_task_identity(
        self, posthog_events: CapturedEvents
    ) -> None:
        """await log.aexception(...) in a task sends the $exception with the task identity."""
        configure_capture([PostHogProcessor()])
        log = structlog.get_logger()

        async def handle() -> None:
            with posthog_logging.new_context():
                posthog_logging.identify_context("user_async_exc")
                try:
                    raise_value_error("async boom")
                except ValueError:
                    await log.aexception("failed")

        asyncio.run(handle())
        event = posthog_events.assert_captured(
            "$exception", distinct_id="user_async_exc", count=1, log_message="failed"
        )
        assert event["properties"]["$exception_list"][0]["value"] == "async boom"

    def test_stdlib_bound_logger_async_methods(
        self, posthog_events: CapturedEvents, attach: Callable[..., logging.Logger]
    ) -> None:
        """structlog.stdlib.BoundLogger's ainfo and AsyncBoundLogger keep the task identity."""
        out = io.StringIO()
        name = unique_name("test.structlog")
        attach(logging.StreamHandler(out), name=name)
        processors: list[Processor] = [
            merge_posthog_context,
            PostHogProcessor(),
            structlog.processors.JSONRenderer(),
        ]
        structlog.configure(
            processors=processors,
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )

        async def main() -> None:
            with posthog_logging.new_context():
                posthog_logging.identify_context("user_stdlib_async")
                await structlog.get_logger(name).ainfo("via_bound_logger", capture=True)
            if hasattr(structlog.stdlib, "AsyncBoundLogger"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    structlog.configure(wrapper_class=structlog.stdlib.AsyncBoundLogger)
                    async_log = structlog.get_logger(name)
                with posthog_logging.new_context():
                    posthog_logging.identify_context("user_async_bound")
                    await async_log.info("via_async_bound_logger", capture=True)

        asyncio.run(main())
        posthog_events.assert_captured("via_bound_logger", distinct_id="user_stdlib_async", count=1)
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert lines[0]["posthog_distinct_id"] == "user_stdlib_async"
        assert "capture" not in lines[0]
        if hasattr(structlog.stdlib, "AsyncBoundLogger"):
            posthog_events.assert_captured(
                "via_async_bound_logger", distinct_id="user_async_bound", count=1
            )

    def test_concurrent_tasks_keep_their_own_identities(
        self, posthog_events: CapturedEvents
    ) -> None:
        """100 concurrent tasks, each in its own context: every event has its task's person."""
        configure_capture([PostHogProcessor()])
        log = structlog.get_logger()

        async def handle(i: int) -> None:
            with posthog_logging.new_context():
                posthog_logging.identify_context(f"user_{i}")
                posthog_logging.tag("task", i)
                await asyncio.sleep(0)
                await log.ainfo("task_started", capture=True, i=i)
                await asyncio.sleep(0)
                await log.ainfo("task_done", capture=True, i=i)

        async def main() -> None:
            await asyncio.gather(*(handle(i) for i in range(100)))

        asyncio.run(main())
        events = posthog_events.events
        assert len(events) == 200
        assert len({e["uuid"] for e in events}) == 200
        for event in events:
            i = event["properties"]["i"]
            assert event["distinct_id"] == f"user_{i}"
            assert event["properties"]["task"] == i
        for name in ("task_started", "task_done"):
            assert sorted(e["properties"]["i"] for e in posthog_events.find(name)) == list(
                range(100)
            )


# -- 5. structlog.testing.capture_logs -------------------------------------------------


class TestCaptureLogs:
    def test_capture_logs_keeps_working(self, posthog_events: CapturedEvents) -> None:
        """capture_logs() captures entries as usual with our processors configured."""
        configure_json(
            [
                merge_posthog_context,
                structlog.processors.add_log_level,
                PostHogProcessor(),
            ]
        )
        log = structlog.get_logger()
        with structlog.testing.capture_logs() as logs:
            log.info("page_viewed", capture=True, page="/")
            log.info("plain", size=2)
        assert logs == [
            {"event": "page_viewed", "capture": True, "page": "/", "log_level": "info"},
            {"event": "plain", "size": 2, "log_level": "info"},
        ]
        # The configured chain is back afterwards.
        log.info("after", capture=True)
        assert "after" in posthog_events.names

    def test_capture_logs_with_our_processors(self, posthog_events: CapturedEvents) -> None:
        """capture_logs(processors=[...]) with ours: the event is sent, the entry captured."""
        configure_json([PostHogProcessor()])
        with (
            posthog_logging.new_context(),
            structlog.testing.capture_logs(
                processors=[merge_posthog_context, PostHogProcessor()]
            ) as logs,
        ):
            posthog_logging.identify_context("user_cl")
            structlog.get_logger().info("page_viewed", capture=True, page="/")
        assert logs == [
            {
                "event": "page_viewed",
                "page": "/",
                "posthog_distinct_id": "user_cl",
                "log_level": "info",
            }
        ]
        posthog_events.assert_captured("page_viewed", distinct_id="user_cl", count=1, page="/")


# -- 6. threads ------------------------------------------------------------------------


class TestThreads:
    def test_one_processor_shared_by_threads(self, posthog_events: CapturedEvents) -> None:
        """One processor on 8 threads: every event once, each with its thread's person."""
        processor = PostHogProcessor()
        cap = configure_capture([processor])
        threads_n, per_thread = 8, 25
        barrier = threading.Barrier(threads_n)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                log = structlog.get_logger()
                with posthog_logging.new_context():
                    posthog_logging.identify_context(f"thread_{n}")
                    barrier.wait(timeout=5)
                    for k in range(per_thread):
                        log.info("step", capture=True, thread=n, k=k)
                    try:
                        raise_value_error(f"from thread {n}")
                    except ValueError:
                        log.exception("thread failed", thread=n)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert errors == []
        assert len(cap.entries) == threads_n * (per_thread + 1)
        steps = posthog_events.find("step")
        assert len(steps) == threads_n * per_thread
        assert len({e["uuid"] for e in steps}) == len(steps)
        for event in steps:
            assert event["distinct_id"] == f"thread_{event['properties']['thread']}"
        for n in range(threads_n):
            ks = sorted(e["properties"]["k"] for e in posthog_events.find("step", thread=n))
            assert ks == list(range(per_thread))
        exceptions = posthog_events.exceptions
        assert len(exceptions) == threads_n
        for event in exceptions:
            n = event["properties"]["thread"]
            assert event["distinct_id"] == f"thread_{n}"
            assert event["properties"]["$exception_list"][0]["value"] == f"from thread {n}"


# -- 7. end to end through the local server --------------------------------------------


def stdlib_over_structlog(processors: Sequence[Processor]) -> None:
    """Configure structlog to hand its entries to logging, wrapped for ProcessorFormatter."""
    structlog.configure(
        processors=[*processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def json_console(out: io.StringIO) -> logging.Handler:
    """A console handler rendering through structlog's ProcessorFormatter as JSON."""
    console = logging.StreamHandler(out)
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                merge_posthog_context,
                structlog.stdlib.ExtraAdder(allow=["page"]),
            ],
        )
    )
    return console


class TestEndToEnd:
    def test_pure_structlog_chain(
        self, server: LocalServer, make_client: Callable[..., Client]
    ) -> None:
        """Pure structlog: a marked event and an exception arrive with identity, session, tags."""
        client = make_client()
        out = io.StringIO()
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                merge_posthog_context,
                structlog.processors.add_log_level,
                PostHogProcessor(client=client),
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=out),
            cache_logger_on_first_use=False,
        )
        log = structlog.get_logger()
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_e2e")
            posthog_logging.set_context_session("sess_e2e")
            posthog_logging.tag("team", "growth")
            structlog.contextvars.bind_contextvars(request_id="req-e2e")
            log.info("page_viewed", capture=True, page="/pricing")
            try:
                raise_value_error("e2e failure")
            except ValueError:
                log.exception("checkout failed", cart=2)
        events = delivered(client, server, 2)
        assert len(events) == 2
        by_name = {e["event"]: e for e in events}
        assert set(by_name) == {"page_viewed", "$exception"}
        for event in events:
            assert event["distinct_id"] == "user_e2e"
            assert event["properties"]["$session_id"] == "sess_e2e"
            assert event["properties"]["team"] == "growth"
            assert event["properties"]["request_id"] == "req-e2e"
        assert by_name["page_viewed"]["properties"]["page"] == "/pricing"
        props = by_name["$exception"]["properties"]
        assert props["$exception_source"] == "python.structlog"
        assert props["$exception_list"][0]["value"] == "e2e failure"
        assert props["cart"] == 2
        assert props["log_message"] == "checkout failed"
        lines = rendered(out)
        assert [line["event"] for line in lines] == ["page_viewed", "checkout failed"]
        assert all(line["posthog_distinct_id"] == "user_e2e" for line in lines)
        assert "capture" not in lines[0]
        assert "timestamp" in lines[0]
        assert "e2e failure" in lines[1]["exception"]

    def test_structlog_over_stdlib_sends_each_entry_once(
        self,
        server: LocalServer,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
    ) -> None:
        """Processor and PostHogHandler both in place: each entry and exception arrives once."""
        client = make_client()
        out = io.StringIO()
        name = unique_name("test.structlog")
        attach(json_console(out), PostHogHandler(client=client), name=name)
        stdlib_over_structlog(
            [
                structlog.contextvars.merge_contextvars,
                merge_posthog_context,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                PostHogProcessor(client=client),
            ]
        )
        log = structlog.get_logger(name)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_over")
            posthog_logging.tag("team", "core")
            log.info("project_renamed", capture=True, old="alpha", new="beta")
            log.info("project_shared", capture="shared", with_whom="team")
            for k in range(2):
                try:
                    raise_value_error(f"hook {k} failed")
                except ValueError:
                    log.exception("rename hook failed", k=k)
            log.info("just a line")
            log.info("sentinel", capture=True)
        delivered(client, server, 1, event="sentinel")
        events = server.events()
        assert sorted(e["event"] for e in events) == [
            "$exception",
            "$exception",
            "project_renamed",
            "sentinel",
            "shared",
        ]
        assert len({e["uuid"] for e in events}) == len(events) == 5
        for event in events:
            assert event["distinct_id"] == "user_over"
            assert event["properties"]["team"] == "core"
        values = sorted(
            e["properties"]["$exception_list"][0]["value"]
            for e in events
            if e["event"] == "$exception"
        )
        assert values == ["hook 0 failed", "hook 1 failed"]
        for event in events:
            if event["event"] == "$exception":
                assert event["properties"]["$exception_source"] == "python.structlog"
                assert event["properties"]["logger_name"] == name
        lines = rendered(out)
        assert [line["event"] for line in lines] == [
            "project_renamed",
            "project_shared",
            "rename hook failed",
            "rename hook failed",
            "just a line",
            "sentinel",
        ]
        assert all("capture" not in line for line in lines)
        assert "hook 0 failed" in lines[2]["exception"]
        assert lines[0]["posthog_distinct_id"] == "user_over"

    def test_structlog_over_stdlib_handler_alone(
        self,
        server: LocalServer,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
    ) -> None:
        """Without the processor, PostHogHandler reads capture and exc_info from the entry."""
        client = make_client()
        out = io.StringIO()
        name = unique_name("test.structlog")
        attach(json_console(out), PostHogHandler(client=client), name=name)
        stdlib_over_structlog(
            [
                merge_posthog_context,
                structlog.stdlib.add_log_level,
            ]
        )
        log = structlog.get_logger(name)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_handler")
            posthog_logging.set_context_session("sess_handler")
            log.info("project_renamed", capture=True, old="alpha")
            log.warning("retry", capture="retried", attempt=2)
            try:
                raise_value_error("handler only")
            except ValueError:
                log.exception("rename hook failed", k=1)
            log.info("just a line")
            log.info("sentinel", capture=True)
        delivered(client, server, 1, event="sentinel")
        events = server.events()
        assert sorted(e["event"] for e in events) == [
            "$exception",
            "project_renamed",
            "retried",
            "sentinel",
        ]
        assert len({e["uuid"] for e in events}) == len(events) == 4
        by_name = {e["event"]: e for e in events}
        for event in events:
            assert event["distinct_id"] == "user_handler"
            assert event["properties"]["$session_id"] == "sess_handler"
            for key in ("capture", "event", "level", "exc_info", "posthog_distinct_id"):
                assert key not in event["properties"], key
        assert by_name["project_renamed"]["properties"]["old"] == "alpha"
        assert by_name["retried"]["properties"]["attempt"] == 2
        props = by_name["$exception"]["properties"]
        assert props["$exception_source"] == "python.structlog"
        assert props["$exception_level"] == "error"
        assert props["$exception_list"][0]["value"] == "handler only"
        assert props["$exception_list"][0]["mechanism"]["type"] == "logger"
        assert props["log_message"] == "rename hook failed"
        assert props["k"] == 1
        lines = rendered(out)
        assert [line["event"] for line in lines] == [
            "project_renamed",
            "retry",
            "rename hook failed",
            "just a line",
            "sentinel",
        ]
        assert "handler only" in lines[2]["exception"]

    def test_plain_logging_rendered_by_processor_formatter(
        self,
        server: LocalServer,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
    ) -> None:
        """Plain logging records rendered by ProcessorFormatter still become events."""
        client = make_client()
        out = io.StringIO()
        log = attach(json_console(out), PostHogHandler(client=client))
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_plain")
            log.info("page_viewed", extra={"event": True, "page": "/"})
            try:
                raise_value_error("plain failure")
            except ValueError:
                log.exception("upload failed")
            log.info("just a line")
        events = delivered(client, server, 2)
        assert sorted(e["event"] for e in events) == ["$exception", "page_viewed"]
        by_name = {e["event"]: e for e in events}
        assert all(e["distinct_id"] == "user_plain" for e in events)
        assert by_name["page_viewed"]["properties"]["page"] == "/"
        assert by_name["$exception"]["properties"]["$exception_source"] == "python.logging"
        lines = rendered(out)
        assert [line["event"] for line in lines] == ["page_viewed", "upload failed", "just a line"]
        assert lines[0]["page"] == "/"
        assert lines[0]["posthog_distinct_id"] == "user_plain"
        assert lines[0]["level"] == "info"
        assert lines[0]["logger"] == log.name
        assert "plain failure" in lines[1]["exception"]


class TestLogLines:
    """With logs_level, entries also go to PostHog Logs, linked to person and session."""

    def test_entries_become_lines_with_context_and_keys(
        self, server: LocalServer, make_client: Callable[..., Client]
    ) -> None:
        """Entries at or above logs_level arrive as lines carrying the message, level,
        the context's person, session and tags, bound values, the call site and an
        exception's attributes; entries below it do not."""
        client = make_client(service_name="structlog-shop")
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.CallsiteParameterAdder(
                    {
                        structlog.processors.CallsiteParameter.PATHNAME,
                        structlog.processors.CallsiteParameter.LINENO,
                        structlog.processors.CallsiteParameter.FUNC_NAME,
                    }
                ),
                PostHogProcessor(client=client, logs_level="info"),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=io.StringIO()),
            cache_logger_on_first_use=False,
        )
        log = structlog.get_logger("shop")
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_lines")
            posthog_logging.set_context_session("sess_lines")
            posthog_logging.tag("team", "growth")
            structlog.contextvars.bind_contextvars(request_id="req-lines")
            log.debug("not a line")
            log.info("cart updated", items=3)
            log.info("page_viewed", capture=True, page="/")
            try:
                raise_value_error("lines failure")
            except ValueError:
                log.exception("checkout failed")
        assert client.flush(10)
        wait_until(lambda: len(server.store.logs()) >= 3, what="three lines")
        lines = {line["body"]: line for line in server.store.logs()}
        assert set(lines) == {"cart updated", "page_viewed", "checkout failed"}
        cart = lines["cart updated"]
        assert (cart["severity_number"], cart["severity_text"]) == (9, "INFO")
        assert (cart["distinct_id"], cart["session_id"]) == ("user_lines", "sess_lines")
        assert cart["service_name"] == "structlog-shop"
        attributes = cart["attributes"]
        assert attributes["items"] == 3
        assert attributes["team"] == "growth"
        assert attributes["request_id"] == "req-lines"
        assert attributes["code.function"] == "test_entries_become_lines_with_context_and_keys"
        assert attributes["code.filepath"].endswith("test_structlog.py")
        assert "capture" not in lines["page_viewed"]["attributes"]
        failed = lines["checkout failed"]
        assert failed["severity_number"] == 17
        assert failed["attributes"]["exception.type"] == "ValueError"
        assert failed["attributes"]["exception.message"] == "lines failure"
        assert "raise_value_error" in failed["attributes"]["exception.stacktrace"]
        # the event and the $exception event still arrive, once each
        assert sorted(e["event"] for e in delivered(client, server, 2)) == [
            "$exception",
            "page_viewed",
        ]

    def test_structlog_over_stdlib_lines_come_from_the_handler(
        self,
        server: LocalServer,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
    ) -> None:
        """structlog on top of logging, with logs_level on the PostHogHandler: every entry
        at or above it is a line (keys as attributes, the person and session of the
        context), and marked entries are events as before."""
        client = make_client()
        name = unique_name("test.structlog")
        attach(PostHogHandler(client=client, logs_level="INFO"), name=name)
        stdlib_over_structlog(
            [
                structlog.contextvars.merge_contextvars,
                merge_posthog_context,
                structlog.stdlib.add_log_level,
                PostHogProcessor(client=client),
            ]
        )
        log = structlog.get_logger(name)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_wrapped")
            posthog_logging.set_context_session("sess_wrapped")
            log.debug("not a line")
            log.info("cart updated", items=3)
            log.info("page_viewed", capture=True, page="/")
            try:
                raise_value_error("wrapped failure")
            except ValueError:
                log.exception("checkout failed")
        assert client.flush(10)
        wait_until(lambda: len(server.store.logs()) >= 3, what="three lines")
        lines = {line["body"]: line for line in server.store.logs()}
        assert set(lines) == {"cart updated", "page_viewed", "checkout failed"}
        cart = lines["cart updated"]
        assert (cart["distinct_id"], cart["session_id"]) == ("user_wrapped", "sess_wrapped")
        assert cart["attributes"]["items"] == 3
        assert "posthog_distinct_id" not in cart["attributes"]
        assert lines["checkout failed"]["attributes"]["exception.type"] == "ValueError"
        assert sorted(e["event"] for e in delivered(client, server, 2)) == [
            "$exception",
            "page_viewed",
        ]

    def test_no_lines_without_logs_level(
        self, server: LocalServer, make_client: Callable[..., Client]
    ) -> None:
        """Without logs_level the processor sends events and exceptions only."""
        client = make_client()
        structlog.configure(
            processors=[PostHogProcessor(client=client), structlog.processors.JSONRenderer()],
            logger_factory=structlog.PrintLoggerFactory(file=io.StringIO()),
            cache_logger_on_first_use=False,
        )
        structlog.get_logger().warning("just a line", capture=True)
        assert client.flush(10)
        delivered(client, server, 1)
        assert server.store.logs() == []
