"""Tests for posthog_logging.contexts, end to end through a real local server.

Every example of the upstream reference (``shared/reference/context-management.md``) runs
here with ``import posthog_logging as posthog``, adapted only where it calls helpers it
does not define (small local stand-ins) or sleeps (``asyncio.sleep(0)``). Then: isolation
per thread and per asyncio task, restoring the parent, exceptions, ``scoped``, manual
``__enter__``/``__exit__``, calls outside any context, and which value wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, g, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import posthog_logging as posthog
from posthog_logging import contexts
from posthog_logging.client import Client
from posthog_logging.diagnostics import Warner
from posthog_logging.server import LocalServer

from .helpers import Event, delivered, one_delivered


@pytest.fixture(autouse=True)
def _deliver_leftovers(default_client: Client) -> Iterator[None]:
    """Every test runs against the default client; what it leaves queued is sent at the end.

    This runs before the server stops, so the default client's shutdown in teardown never
    waits for a server that is gone.
    """
    yield
    default_client.flush(timeout=2)


# -- helpers -------------------------------------------------------------------------------


def by_name(events: list[Event]) -> dict[str, Event]:
    """Events keyed by name (each name must occur once)."""
    names = [e["event"] for e in events]
    assert len(names) == len(set(names)), f"duplicate event names: {names}"
    return {e["event"]: e for e in events}


def stored_after_flush(server: LocalServer) -> list[Event]:
    """Everything the server holds once all captured so far has been delivered.

    A sentinel event, captured last and waited for, proves the pipeline has drained.
    """
    posthog.capture("sentinel", distinct_id="sentinel")
    delivered(posthog, server, 1, event="sentinel")
    return [e for e in server.events() if e["event"] != "sentinel"]


def exception_types(event: Event) -> list[tuple[str, str]]:
    """(type, value) of each entry of an ``$exception`` event's ``$exception_list``."""
    return [(e["type"], e["value"]) for e in event["properties"]["$exception_list"]]


def readers() -> tuple[str | None, str | None, dict[str, Any]]:
    """The current context as its three public readers see it."""
    return (
        posthog.get_context_distinct_id(),
        posthog.get_context_session_id(),
        posthog.get_tags(),
    )


EMPTY = (None, None, {})


def assert_personless(event: Event) -> None:
    """The event was sent without a person: generated distinct_id, no person profile."""
    assert isinstance(event["distinct_id"], str)
    assert event["distinct_id"] not in ("", "None", "null")
    assert event["properties"]["$process_person_profile"] is False


def assert_has_person(event: Event, distinct_id: str) -> None:
    """The event belongs to ``distinct_id`` and is processed as that person's."""
    assert event["distinct_id"] == distinct_id
    assert event["properties"].get("$process_person_profile", True) is not False


# -- the reference examples ------------------------------------------------------------------


class TestReferenceBasicUsage:
    """'Basic Context Usage' of the reference."""

    def test_identified_context(self, server: LocalServer) -> None:
        """Events and set() in an identified context all carry user123; no session."""
        posthog.api_key = "phc_your_project_api_key"

        # Simple context with user identification
        with posthog.new_context():
            posthog.identify_context("user123")

            # All events automatically include user123
            posthog.capture("page_viewed", {"page": "dashboard"})
            posthog.capture("button_clicked", {"button": "export"})
            posthog.set({"last_active": "2024-09-07"})

        events = by_name(delivered(posthog, server, 3))
        assert set(events) == {"page_viewed", "button_clicked", "$set"}
        for event in events.values():
            assert_has_person(event, "user123")
            assert "$session_id" not in event["properties"]
        assert events["page_viewed"]["properties"]["page"] == "dashboard"
        assert events["button_clicked"]["properties"]["button"] == "export"
        assert events["$set"]["properties"]["$set"] == {"last_active": "2024-09-07"}
        assert readers() == EMPTY

    def test_session_context(self, server: LocalServer) -> None:
        """Events in a context with a session carry both user456 and $session_id."""
        # Context with session tracking
        with posthog.new_context():
            posthog.identify_context("user456")
            posthog.set_context_session("session_abc123")

            # Events include both user ID and session ID
            posthog.capture("session_started")
            posthog.capture("feature_used", {"feature": "reports"})
            posthog.capture("session_ended")

        events = by_name(delivered(posthog, server, 3))
        assert set(events) == {"session_started", "feature_used", "session_ended"}
        for event in events.values():
            assert_has_person(event, "user456")
            assert event["properties"]["$session_id"] == "session_abc123"
        assert events["feature_used"]["properties"]["feature"] == "reports"
        assert readers() == EMPTY


class TestReferenceTagging:
    """'Context Tagging' of the reference."""

    def test_tags_merged_with_explicit_properties(self, server: LocalServer) -> None:
        """Both events carry user789, all four tags and their own explicit properties."""
        # Context with multiple tags
        with posthog.new_context():
            posthog.identify_context("user789")
            posthog.tag("request_id", "req_12345")
            posthog.tag("user_segment", "premium")
            posthog.tag("ab_test_group", "variant_b")
            posthog.tag("feature_flag_new_ui", True)

            # All events automatically include these tags
            posthog.capture("api_request", {"endpoint": "/api/data", "method": "GET"})

            # Tags are merged with explicit properties
            posthog.capture("error_occurred", {"error_type": "validation", "error_code": 400})
            # Final event includes: user_id, request_id, user_segment, ab_test_group,
            # feature_flag_new_ui, error_type, error_code

        events = by_name(delivered(posthog, server, 2, distinct_id="user789"))
        tags = {
            "request_id": "req_12345",
            "user_segment": "premium",
            "ab_test_group": "variant_b",
            "feature_flag_new_ui": True,
        }
        api, error = events["api_request"]["properties"], events["error_occurred"]["properties"]
        assert api.items() >= {**tags, "endpoint": "/api/data", "method": "GET"}.items()
        assert error.items() >= {**tags, "error_type": "validation", "error_code": 400}.items()
        assert "error_type" not in api
        assert "endpoint" not in error


class TestReferenceNestedContexts:
    """'Nested Contexts' of the reference."""

    def test_children_inherit_and_parent_is_restored(self, server: LocalServer) -> None:
        """Each level adds its tag to the parent's; back in the parent, child tags are gone."""
        # Parent context
        with posthog.new_context():
            posthog.identify_context("user123")
            posthog.tag("request_type", "api")

            posthog.capture("request_started")

            # Child context inherits parent data
            with posthog.new_context():
                posthog.tag("operation", "data_processing")

                posthog.capture("processing_started")
                # Includes: user123, request_type=api, operation=data_processing

                # Another child context
                with posthog.new_context():
                    posthog.tag("step", "validation")

                    posthog.capture("validation_completed")
                    # Includes: user123, request_type=api, operation=data_processing,
                    # step=validation

            posthog.capture("request_completed")
            # Back to parent context: user123, request_type=api

        events = by_name(delivered(posthog, server, 4, distinct_id="user123"))
        props = {name: e["properties"] for name, e in events.items()}
        assert props["request_started"]["request_type"] == "api"
        assert "operation" not in props["request_started"]
        assert props["processing_started"]["request_type"] == "api"
        assert props["processing_started"]["operation"] == "data_processing"
        assert "step" not in props["processing_started"]
        assert (
            props["validation_completed"].items()
            >= {
                "request_type": "api",
                "operation": "data_processing",
                "step": "validation",
            }.items()
        )
        assert props["request_completed"]["request_type"] == "api"
        assert "operation" not in props["request_completed"]
        assert "step" not in props["request_completed"]


class TestReferenceFreshContexts:
    """'Fresh Contexts' of the reference."""

    def test_fresh_context_ignores_parent(self, server: LocalServer) -> None:
        """admin_action has only admin456 and admin_operation; user_action only the parent's."""
        # Parent context with data
        with posthog.new_context():
            posthog.identify_context("user123")
            posthog.tag("parent_tag", "value")

            # Fresh context ignores parent data
            with posthog.new_context(fresh=True):
                posthog.identify_context("admin456")
                posthog.tag("admin_operation", True)

                posthog.capture("admin_action")
                # Only includes: admin456, admin_operation=True
                # Does NOT include user123 or parent_tag

            # Back to parent context
            posthog.capture("user_action")
            # Includes: user123, parent_tag=value

        events = by_name(delivered(posthog, server, 2))
        admin, user = events["admin_action"], events["user_action"]
        assert_has_person(admin, "admin456")
        assert admin["properties"]["admin_operation"] is True
        assert "parent_tag" not in admin["properties"]
        assert_has_person(user, "user123")
        assert user["properties"]["parent_tag"] == "value"
        assert "admin_operation" not in user["properties"]


def handle_request(request_data: dict[str, Any]) -> dict[str, Any]:
    """Stand-in for the reference's undefined request handler."""
    return {"success": True, "duration": 0.01, "id": request_data["id"]}


def perform_cleanup() -> list[str]:
    """Stand-in for the reference's undefined cleanup."""
    return ["tmp/a", "tmp/b", "tmp/c"]


# Decorator for automatic context management
@posthog.scoped()
def process_user_request(user_id: str, request_data: dict[str, Any]) -> dict[str, Any]:
    posthog.identify_context(user_id)
    posthog.tag("operation", "user_request")
    posthog.tag("request_id", request_data.get("id"))

    posthog.capture("request_processing_started")

    # Process request...
    result = handle_request(request_data)

    posthog.capture(
        "request_processing_completed",
        {"success": result["success"], "processing_time": result["duration"]},
    )

    return result


# Background task with fresh context
@posthog.scoped(fresh=True)
def background_cleanup_task() -> None:
    posthog.identify_context("system")
    posthog.tag("task_type", "cleanup")

    posthog.capture("cleanup_started")

    # Perform cleanup...
    cleaned_items = perform_cleanup()

    posthog.capture("cleanup_completed", {"items_cleaned": len(cleaned_items)})


class TestReferenceFunctionLevelContexts:
    """'Function-Level Contexts' of the reference."""

    def test_scoped_request_and_background_task(self, server: LocalServer) -> None:
        """Each decorated call runs in its own context; the return value comes back."""
        # Usage
        user_data = {"id": "req_123", "user": "user456"}
        result = process_user_request("user456", user_data)

        # Run background task
        background_cleanup_task()

        assert result == {"success": True, "duration": 0.01, "id": "req_123"}
        assert readers() == EMPTY
        events = by_name(delivered(posthog, server, 4))
        for name in ("request_processing_started", "request_processing_completed"):
            assert_has_person(events[name], "user456")
            props = events[name]["properties"]
            assert props["operation"] == "user_request"
            assert props["request_id"] == "req_123"
            assert "task_type" not in props
        completed = events["request_processing_completed"]["properties"]
        assert completed["success"] is True
        assert completed["processing_time"] == 0.01
        for name in ("cleanup_started", "cleanup_completed"):
            assert_has_person(events[name], "system")
            assert events[name]["properties"]["task_type"] == "cleanup"
            assert "request_id" not in events[name]["properties"]
        assert events["cleanup_completed"]["properties"]["items_cleaned"] == 3

    def test_fresh_background_task_inside_a_request(self, server: LocalServer) -> None:
        """A scoped(fresh=True) task called inside a request context sees nothing of it."""
        with posthog.new_context():
            posthog.identify_context("user123")
            posthog.tag("request_id", "req_outer")
            background_cleanup_task()
            assert readers() == ("user123", None, {"request_id": "req_outer"})

        events = delivered(posthog, server, 2, distinct_id="system")
        assert len(events) == 2
        for event in events:
            assert "request_id" not in event["properties"]


class DangerousOperationError(Exception):
    """Raised by the stand-in for the reference's undefined dangerous_operation()."""


def dangerous_operation() -> None:
    """Stand-in for the reference's undefined helper: it fails."""
    raise DangerousOperationError("dangerous operation failed")


class TestReferenceExceptionHandling:
    """'Exception Handling with Contexts' of the reference."""

    def test_literal_block_events(self, server: LocalServer) -> None:
        """Both events of the automatic-capture block carry user123 and the operation tag."""
        # Automatic exception capture (default behavior)
        with posthog.new_context():
            posthog.identify_context("user123")
            posthog.tag("operation", "risky_operation")

            try:
                posthog.capture("operation_started")

                # This exception is automatically captured by context
                raise ValueError("Something went wrong")

            except ValueError:
                # Exception was already captured by context
                posthog.capture("operation_failed", {"error_handled": True})

        started = one_delivered(posthog, server, "operation_started")
        failed = one_delivered(posthog, server, "operation_failed")
        for event in (started, failed):
            assert_has_person(event, "user123")
            assert event["properties"]["operation"] == "risky_operation"
        assert failed["properties"]["error_handled"] is True

    def test_exception_handled_inside_the_block_never_leaves_it(self, server: LocalServer) -> None:
        """In the literal block the ValueError is caught inside, so no $exception is sent.

        The reference's comment says "automatically captured", but upstream (like this
        library) only captures an exception that propagates out of the context.
        """
        with posthog.new_context():
            posthog.identify_context("user123")
            try:
                raise ValueError("Something went wrong")
            except ValueError:
                pass

        assert [e["event"] for e in stored_after_flush(server)] == []

    def test_exception_leaving_the_context_is_captured_once(self, server: LocalServer) -> None:
        """A ValueError leaving the context arrives once, as user123, with the operation tag."""
        try:
            with posthog.new_context():
                posthog.identify_context("user123")
                posthog.tag("operation", "risky_operation")
                posthog.capture("operation_started")
                raise ValueError("Something went wrong")
        except ValueError:
            posthog.capture("operation_failed", {"error_handled": True})

        exception = one_delivered(posthog, server, "$exception")
        assert_has_person(exception, "user123")
        assert exception["properties"]["operation"] == "risky_operation"
        assert exception_types(exception) == [("ValueError", "Something went wrong")]
        mechanism = exception["properties"]["$exception_list"][0]["mechanism"]
        assert mechanism["handled"] is False
        # Outside the context again: the handler's event is personless and untagged.
        failed = one_delivered(posthog, server, "operation_failed")
        assert_personless(failed)
        assert "operation" not in failed["properties"]

    def test_capture_exceptions_false_with_manual_capture(self, server: LocalServer) -> None:
        """With capture_exceptions=False only the manual capture_exception(e) goes, as user456."""
        # Disable automatic exception capture
        with posthog.new_context(capture_exceptions=False):
            posthog.identify_context("user456")

            try:
                dangerous_operation()
            except Exception as e:
                # Manual exception capture since auto-capture is disabled
                posthog.capture_exception(e)

        exception = one_delivered(posthog, server, "$exception")
        assert_has_person(exception, "user456")
        assert exception_types(exception) == [
            ("DangerousOperationError", "dangerous operation failed")
        ]

    def test_capture_exceptions_false_sends_nothing_automatically(
        self, server: LocalServer
    ) -> None:
        """An exception leaving a capture_exceptions=False context is re-raised, not sent."""
        with (
            pytest.raises(DangerousOperationError),
            posthog.new_context(capture_exceptions=False),
        ):
            posthog.identify_context("user456")
            dangerous_operation()

        assert stored_after_flush(server) == []

    def test_scoped_function_exception(self, server: LocalServer) -> None:
        """risky_function's RuntimeError is re-raised and captured once, as user789."""

        # Function-level exception handling
        @posthog.scoped(capture_exceptions=True)
        def risky_function() -> None:
            posthog.identify_context("user789")
            posthog.capture("function_started")

            # Any exception here is automatically captured
            raise RuntimeError("Function failed")

        raised = False
        try:
            risky_function()
        except RuntimeError:
            # Exception was already captured by the scoped decorator
            raised = True

        assert raised
        assert_has_person(one_delivered(posthog, server, "function_started"), "user789")
        exception = one_delivered(posthog, server, "$exception")
        assert_has_person(exception, "user789")
        assert exception_types(exception) == [("RuntimeError", "Function failed")]


def make_flask_app() -> Flask:
    """The reference's Flask app, plus a stand-in authentication hook setting g.current_user."""
    app = Flask(__name__)

    @app.before_request
    def load_current_user() -> None:
        # Stand-in for the application's authentication (the reference assumes one).
        user_id = request.headers.get("X-User-ID")
        if user_id:
            g.current_user = SimpleNamespace(id=user_id)

    @app.before_request
    def before_request() -> None:
        # Create context for each request
        g.posthog_context = posthog.new_context()
        g.posthog_context.__enter__()

        # Set up request-level tracking
        posthog.tag("request_id", request.headers.get("X-Request-ID", "unknown"))
        posthog.tag("user_agent", request.headers.get("User-Agent", "unknown"))
        posthog.tag("endpoint", request.endpoint)

        # Identify user if available
        if hasattr(g, "current_user") and g.current_user:
            posthog.identify_context(g.current_user.id)

    @app.after_request
    def after_request(response: Any) -> Any:
        # Tag response information
        posthog.tag("response_status", response.status_code)

        # Capture request completion
        posthog.capture(
            "request_completed",
            {
                "method": request.method,
                "endpoint": request.endpoint,
                "status_code": response.status_code,
            },
        )

        # Clean up context
        if hasattr(g, "posthog_context"):
            g.posthog_context.__exit__(None, None, None)

        return response

    @app.route("/api/users/<user_id>")
    def get_user(user_id: str) -> dict[str, str]:
        posthog.capture("user_profile_viewed", {"viewed_user_id": user_id})

        # Process request...
        return {"user": user_id}

    return app


class TestReferenceWebRequestPattern:
    """'Web Request Context Pattern' of the reference, with a real Flask app."""

    def test_each_request_gets_its_own_context(self, server: LocalServer) -> None:
        """Two users' requests carry their own identity and tags, never the other's."""
        client = make_flask_app().test_client()
        for user, request_id, agent, viewed in (
            ("alice", "req-a", "agent-a", "42"),
            ("bob", "req-b", "agent-b", "43"),
        ):
            headers = {"X-User-ID": user, "X-Request-ID": request_id, "User-Agent": agent}
            response = client.get(f"/api/users/{viewed}", headers=headers)
            assert response.status_code == 200
            assert response.get_json() == {"user": viewed}
            # The request's context was left: nothing sticks to the serving thread.
            assert readers() == EMPTY

        for user, request_id, agent, viewed in (
            ("alice", "req-a", "agent-a", "42"),
            ("bob", "req-b", "agent-b", "43"),
        ):
            events = by_name(delivered(posthog, server, 2, distinct_id=user))
            assert set(events) == {"user_profile_viewed", "request_completed"}
            viewed_props = events["user_profile_viewed"]["properties"]
            done_props = events["request_completed"]["properties"]
            for props in (viewed_props, done_props):
                assert props["request_id"] == request_id
                assert props["user_agent"] == agent
                assert props["endpoint"] == "get_user"
            assert viewed_props["viewed_user_id"] == viewed
            # Tagged in after_request, so only the later event has it.
            assert "response_status" not in viewed_props
            assert done_props["response_status"] == 200
            assert done_props["method"] == "GET"
            assert done_props["status_code"] == 200

    def test_anonymous_request_after_identified_one(self, server: LocalServer) -> None:
        """A request without a user is personless and carries nothing of the previous one."""
        client = make_flask_app().test_client()
        identified = {"X-User-ID": "alice", "X-Request-ID": "req-a", "User-Agent": "agent-a"}
        assert client.get("/api/users/1", headers=identified).status_code == 200
        assert client.get("/api/users/2", headers={"User-Agent": "anon"}).status_code == 200

        events = delivered(posthog, server, 4)
        assert len(events) == 4
        anonymous = [e for e in events if e["distinct_id"] != "alice"]
        assert len(anonymous) == 2
        for event in anonymous:
            assert_personless(event)
            assert event["properties"]["request_id"] == "unknown"
            assert event["properties"]["user_agent"] == "anon"


async def process_task(task_data: dict[str, Any]) -> None:
    """Stand-in for the reference's undefined async work."""
    await asyncio.sleep(0)


async def async_operation() -> None:
    # Contexts work with async operations
    with posthog.new_context():
        posthog.identify_context("async_user_123")
        posthog.tag("operation_type", "async")

        posthog.capture("async_operation_started")

        # Simulate async work
        await asyncio.sleep(0)

        posthog.capture("async_operation_completed")


# Async function decorator
@posthog.scoped()
async def async_task(task_data: dict[str, Any]) -> None:
    posthog.identify_context(task_data["user_id"])
    posthog.tag("task_id", task_data["id"])

    posthog.capture("async_task_started")

    await process_task(task_data)

    posthog.capture("async_task_completed")


class TestReferenceAsync:
    """'Async Context Management' of the reference."""

    def test_context_across_await(self, server: LocalServer) -> None:
        """Both events of async_operation carry async_user_123 and operation_type=async."""
        # Run async operation
        asyncio.run(async_operation())

        events = delivered(posthog, server, 2, distinct_id="async_user_123")
        assert {e["event"] for e in events} == {
            "async_operation_started",
            "async_operation_completed",
        }
        for event in events:
            assert event["properties"]["operation_type"] == "async"

    def test_scoped_async_task(self, server: LocalServer) -> None:
        """Awaiting the scoped async_task sends both events as user_456 with task_123."""

        async def main() -> None:
            # Usage
            await async_task({"id": "task_123", "user_id": "user_456"})
            assert readers() == EMPTY

        asyncio.run(main())

        events = delivered(posthog, server, 2, distinct_id="user_456")
        assert {e["event"] for e in events} == {"async_task_started", "async_task_completed"}
        for event in events:
            assert event["properties"]["task_id"] == "task_123"

    def test_concurrent_scoped_async_tasks(self, server: LocalServer) -> None:
        """Interleaved async_task calls under gather each keep their own user and task id."""

        async def main() -> None:
            await asyncio.gather(
                *(async_task({"id": f"task_{i}", "user_id": f"user_{i}"}) for i in range(10))
            )

        asyncio.run(main())

        events = delivered(posthog, server, 20)
        assert len(events) == 20
        for event in events:
            number = event["distinct_id"].removeprefix("user_")
            assert event["properties"]["task_id"] == f"task_{number}"


class TestReferenceHierarchy:
    """'Context Hierarchy and Inheritance' of the reference."""

    def test_data_inheritance_rules(self, server: LocalServer) -> None:
        """The child inherits, overrides and adds; back in the parent the child's tags are gone."""
        # Parent context
        with posthog.new_context():
            posthog.identify_context("parent_user")
            posthog.tag("level", "parent")
            posthog.tag("shared", "parent_value")

            # Child context inherits parent data
            with posthog.new_context():
                posthog.tag("level", "child")  # Overrides parent tag
                posthog.tag("child_only", "child_value")  # New tag

                # Event includes:
                # - user: parent_user (inherited)
                # - level: child (overridden)
                # - shared: parent_value (inherited)
                # - child_only: child_value (new)
                posthog.capture("child_event")

            # Back to parent - child tags are gone
            # Event includes:
            # - user: parent_user
            # - level: parent
            # - shared: parent_value
            posthog.capture("parent_event")

        events = by_name(delivered(posthog, server, 2, distinct_id="parent_user"))
        child, parent = events["child_event"]["properties"], events["parent_event"]["properties"]
        assert (
            child.items()
            >= {
                "level": "child",
                "shared": "parent_value",
                "child_only": "child_value",
            }.items()
        )
        assert parent.items() >= {"level": "parent", "shared": "parent_value"}.items()
        assert "child_only" not in parent

    def test_sibling_isolation(self, server: LocalServer) -> None:
        """The second child's event has branch=second, never the first child's value."""
        # Sibling contexts are isolated
        with posthog.new_context():
            posthog.identify_context("parent_user")

            # First child
            with posthog.new_context():
                posthog.tag("branch", "first")
                posthog.capture("first_child_event")

            # Second child (no access to first child's data)
            with posthog.new_context():
                assert "branch" not in posthog.get_tags()
                posthog.tag("branch", "second")
                posthog.capture("second_child_event")  # Does NOT include branch=first

        events = by_name(delivered(posthog, server, 2, distinct_id="parent_user"))
        assert events["first_child_event"]["properties"]["branch"] == "first"
        assert events["second_child_event"]["properties"]["branch"] == "second"


class TestReferenceBestPractices:
    """'Best Practices' of the reference."""

    def test_context_scope_management(self, server: LocalServer) -> None:
        """A with-block and a scoped endpoint each send their events as their own user."""

        def process_user_request() -> None:  # stand-in: the reference's takes no arguments
            posthog.capture("user_request_processed")

        def get_current_user() -> str:  # stand-in for the application's own lookup
            return "endpoint_user"

        # Good - Clear context boundaries
        with posthog.new_context():
            posthog.identify_context("user123")
            process_user_request()

        # Good - Function-level contexts for discrete operations
        @posthog.scoped()
        def handle_api_endpoint() -> None:
            posthog.identify_context(get_current_user())
            # Process request
            posthog.capture("api_endpoint_handled")

        handle_api_endpoint()

        assert_has_person(one_delivered(posthog, server, "user_request_processed"), "user123")
        assert_has_person(one_delivered(posthog, server, "api_endpoint_handled"), "endpoint_user")
        assert readers() == EMPTY

    def test_tag_naming(self) -> None:
        """Both tag-naming blocks run; their tags live only inside their own block."""
        # Good - Consistent, descriptive tag names
        with posthog.new_context():
            posthog.tag("request_id", "req_123")
            posthog.tag("user_segment", "premium")
            posthog.tag("feature_flag_new_ui", True)
            posthog.tag("ab_test_variant", "control")
            assert posthog.get_tags() == {
                "request_id": "req_123",
                "user_segment": "premium",
                "feature_flag_new_ui": True,
                "ab_test_variant": "control",
            }

        # Avoid - Inconsistent or unclear tag names
        with posthog.new_context():
            posthog.tag("reqId", "req_123")  # Inconsistent naming
            posthog.tag("flag1", True)  # Unclear purpose
            posthog.tag("test", "control")  # Too generic
            assert posthog.get_tags() == {"reqId": "req_123", "flag1": True, "test": "control"}

        assert readers() == EMPTY

    @pytest.mark.parametrize("failure", ["none", "expected", "unexpected"])
    def test_exception_handling_strategy(self, server: LocalServer, failure: str) -> None:
        """Only the unexpected error of system_health_check is sent, once, by the manual capture."""

        class ExpectedError(Exception):
            pass

        class UnexpectedError(Exception):
            pass

        def check_system() -> None:  # stand-in for the reference's undefined check
            if failure == "expected":
                raise ExpectedError("disk almost full")
            if failure == "unexpected":
                raise UnexpectedError("database unreachable")

        # Enable exception capture for user-facing operations
        @posthog.scoped(capture_exceptions=True)
        def user_request_handler() -> None:
            # Exceptions automatically captured
            pass

        # Disable for internal/system operations where exceptions are expected
        @posthog.scoped(capture_exceptions=False)
        def system_health_check() -> None:
            # Handle exceptions manually
            try:
                check_system()
            except ExpectedError:
                # Don't capture expected errors
                pass
            except UnexpectedError as e:
                posthog.capture_exception(e)

        user_request_handler()
        system_health_check()

        sent = stored_after_flush(server)
        if failure == "unexpected":
            # The type is named by its qualified name, as PostHog's own SDK does.
            assert [exception_types(e) for e in sent] == [
                [(UnexpectedError.__qualname__, "database unreachable")]
            ]
        else:
            assert sent == []


class TestReferenceThreadSafety:
    """'Thread Safety' of the reference."""

    def test_five_worker_threads(self, server: LocalServer) -> None:
        """Each worker's two events carry its own id and its own thread's ident."""

        def worker_thread(worker_id: int) -> None:
            # Each thread gets its own context
            with posthog.new_context():
                posthog.identify_context(f"worker_{worker_id}")
                posthog.tag("thread_id", threading.current_thread().ident)

                posthog.capture("worker_started")
                # Do work...
                posthog.capture("worker_completed")

        # Start multiple worker threads
        threads = []
        for i in range(5):
            t = threading.Thread(target=worker_thread, args=(i,))
            threads.append(t)
            t.start()

        for t in threads:
            t.join()

        events = delivered(posthog, server, 10)
        assert len(events) == 10
        for i, thread in enumerate(threads):
            # (Idents may be recycled once a thread ends, so compare each with its own.)
            mine = [e for e in events if e["distinct_id"] == f"worker_{i}"]
            assert sorted(e["event"] for e in mine) == ["worker_completed", "worker_started"]
            assert {e["properties"]["thread_id"] for e in mine} == {thread.ident}
        assert readers() == EMPTY


# -- isolation -------------------------------------------------------------------------------


class TestThreadIsolation:
    """Each thread has its own context."""

    def test_many_concurrent_threads(self, server: LocalServer) -> None:
        """Sixteen threads, interleaved by a barrier, each see and send only their own context."""
        n_threads, n_events = 16, 5
        barrier = threading.Barrier(n_threads)

        def work(i: int) -> None:
            with posthog.new_context():
                posthog.identify_context(f"thread-{i}")
                posthog.set_context_session(f"session-{i}")
                posthog.tag("worker", i)
                barrier.wait(timeout=5)  # every thread has now set its own context
                for k in range(n_events):
                    posthog.capture("tick", {"k": k})
                    assert readers() == (f"thread-{i}", f"session-{i}", {"worker": i})
                barrier.wait(timeout=5)
            assert readers() == EMPTY

        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            for future in [pool.submit(work, i) for i in range(n_threads)]:
                future.result()

        events = delivered(posthog, server, n_threads * n_events, event="tick")
        assert len(events) == n_threads * n_events
        for event in events:
            worker = event["properties"]["worker"]
            assert event["distinct_id"] == f"thread-{worker}"
            assert event["properties"]["$session_id"] == f"session-{worker}"
        assert len({e["distinct_id"] for e in events}) == n_threads

    def test_worker_thread_does_not_see_or_change_the_main_threads_context(
        self, server: LocalServer
    ) -> None:
        """A thread started inside a context starts empty; its own context stays its own."""
        seen: list[tuple[Any, ...]] = []

        def work() -> None:
            seen.append(readers())
            with posthog.new_context():
                posthog.identify_context("worker")
                posthog.tag("side", "worker")
                posthog.capture("worker_event")

        with posthog.new_context():
            posthog.identify_context("main")
            posthog.tag("side", "main")
            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
            assert readers() == ("main", None, {"side": "main"})
            posthog.capture("main_event")

        assert seen == [EMPTY]
        worker, main = (
            one_delivered(posthog, server, "worker_event"),
            one_delivered(posthog, server, "main_event"),
        )
        assert_has_person(worker, "worker")
        assert worker["properties"]["side"] == "worker"
        assert_has_person(main, "main")
        assert main["properties"]["side"] == "main"

    def test_reused_pool_thread_starts_clean(self, server: LocalServer) -> None:
        """A pool thread that ran an identified job (even a failed one) runs the next one clean."""

        def identified_job(fail: bool) -> None:
            with posthog.new_context(capture_exceptions=False):
                posthog.identify_context("job_user")
                posthog.tag("job", "first")
                if fail:
                    raise KeyError("job failed")

        def next_job() -> tuple[Any, ...]:
            posthog.capture("next_job_event")
            return readers()

        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(identified_job, False).result()
            with pytest.raises(KeyError):
                pool.submit(identified_job, True).result()
            assert pool.submit(next_job).result() == EMPTY

        event = one_delivered(posthog, server, "next_job_event")
        assert_personless(event)
        assert "job" not in event["properties"]


class TestTaskIsolation:
    """Each asyncio task runs in a copy of its parent's context: changes never leak out."""

    def test_child_task_inherits_but_does_not_leak(self, server: LocalServer) -> None:
        """A task sees its parent's context; its identify/tag never reach the parent."""
        inherited: list[tuple[Any, ...]] = []

        async def child() -> None:
            inherited.append(readers())
            posthog.identify_context("child")
            posthog.tag("origin", "child")
            posthog.tag("child_only", True)
            posthog.capture("child_event")

        async def main() -> None:
            with posthog.new_context():
                posthog.identify_context("parent")
                posthog.set_context_session("s-parent")
                posthog.tag("origin", "parent")
                await asyncio.create_task(child())
                assert readers() == ("parent", "s-parent", {"origin": "parent"})
                posthog.capture("parent_event")

        asyncio.run(main())

        assert inherited == [("parent", "s-parent", {"origin": "parent"})]
        child_event, parent_event = (
            one_delivered(posthog, server, "child_event"),
            one_delivered(posthog, server, "parent_event"),
        )
        assert_has_person(child_event, "child")
        assert child_event["properties"]["origin"] == "child"
        assert child_event["properties"]["child_only"] is True
        assert child_event["properties"]["$session_id"] == "s-parent"
        assert_has_person(parent_event, "parent")
        assert parent_event["properties"]["origin"] == "parent"
        assert "child_only" not in parent_event["properties"]

    def test_gathered_siblings_do_not_see_each_other(self, server: LocalServer) -> None:
        """Two gathered tasks that tag in turn each keep only their own identity and tags."""

        async def worker(name: str, mine: asyncio.Event, other: asyncio.Event) -> None:
            posthog.identify_context(name)
            posthog.tag("worker", name)
            mine.set()
            await other.wait()  # the sibling has tagged too by now
            assert readers() == (name, None, {"shared": "yes", "worker": name})
            posthog.capture("sibling_event")

        async def main() -> None:
            with posthog.new_context():
                posthog.tag("shared", "yes")
                a_done, b_done = asyncio.Event(), asyncio.Event()
                await asyncio.gather(worker("a", a_done, b_done), worker("b", b_done, a_done))
                assert readers() == (None, None, {"shared": "yes"})

        asyncio.run(main())

        events = delivered(posthog, server, 2, event="sibling_event")
        assert len(events) == 2
        for event in events:
            assert event["properties"]["worker"] == event["distinct_id"]
            assert event["properties"]["shared"] == "yes"

    def test_many_interleaved_tasks(self, server: LocalServer) -> None:
        """Fifty tasks that yield between every step each send only their own context."""

        async def task(i: int) -> None:
            with posthog.new_context():
                posthog.identify_context(f"task-{i}")
                await asyncio.sleep(0)
                posthog.tag("n", i)
                await asyncio.sleep(0)
                posthog.capture("task_event")
                await asyncio.sleep(0)
                assert readers() == (f"task-{i}", None, {"n": i})

        async def main() -> None:
            await asyncio.gather(*(task(i) for i in range(50)))
            assert readers() == EMPTY

        asyncio.run(main())

        events = delivered(posthog, server, 50, event="task_event")
        assert len(events) == 50
        for event in events:
            assert event["distinct_id"] == f"task-{event['properties']['n']}"

    def test_task_created_in_a_context_keeps_it_after_the_parent_leaves(
        self, server: LocalServer
    ) -> None:
        """A task outliving the block that created it keeps that block's context."""

        async def late(release: asyncio.Event) -> None:
            await release.wait()
            posthog.capture("late_event")

        async def main() -> None:
            release = asyncio.Event()
            with posthog.new_context():
                posthog.identify_context("creator")
                task = asyncio.create_task(late(release))
            assert readers() == EMPTY
            release.set()
            await task

        asyncio.run(main())
        assert_has_person(one_delivered(posthog, server, "late_event"), "creator")


# -- leaving a context -----------------------------------------------------------------------


class TestRestore:
    """Leaving a context restores its parent exactly."""

    def test_each_level_restored(self) -> None:
        """After each nested block the readers show exactly the enclosing block's values."""
        with posthog.new_context():
            posthog.identify_context("u1")
            posthog.set_context_session("s1")
            posthog.tag("a", 1)
            with posthog.new_context():
                posthog.identify_context("u2")
                posthog.tag("a", 2)
                posthog.tag("b", 2)
                with posthog.new_context():
                    posthog.set_context_session("s3")
                    posthog.tag("c", 3)
                    assert readers() == ("u2", "s3", {"a": 2, "b": 2, "c": 3})
                assert readers() == ("u2", "s1", {"a": 2, "b": 2})
            assert readers() == ("u1", "s1", {"a": 1})
        assert readers() == EMPTY

    def test_restored_after_exception(self) -> None:
        """An exception leaving nested blocks still restores each parent on the way out."""
        with posthog.new_context():
            posthog.identify_context("outer")
            posthog.tag("level", "outer")
            with pytest.raises(LookupError), posthog.new_context():
                posthog.identify_context("inner")
                posthog.set_context_session("s-inner")
                posthog.tag("level", "inner")
                with posthog.new_context(fresh=True):
                    posthog.tag("fresh", True)
                    raise LookupError("boom")
            assert readers() == ("outer", None, {"level": "outer"})
        assert readers() == EMPTY

    def test_fresh_starts_empty(self, server: LocalServer) -> None:
        """fresh=True drops identity, session and tags: its untagged event is personless."""
        with posthog.new_context():
            posthog.identify_context("parent")
            posthog.set_context_session("s-parent")
            posthog.tag("parent_tag", 1)
            with posthog.new_context(fresh=True):
                assert readers() == EMPTY
                posthog.capture("fresh_event")
            assert readers() == ("parent", "s-parent", {"parent_tag": 1})

        event = one_delivered(posthog, server, "fresh_event")
        assert_personless(event)
        assert "parent_tag" not in event["properties"]
        assert "$session_id" not in event["properties"]

    def test_session_is_inherited(self, server: LocalServer) -> None:
        """A child context sends its parent's session id unless it sets its own."""
        with posthog.new_context():
            posthog.identify_context("u")
            posthog.set_context_session("s-parent")
            with posthog.new_context():
                posthog.capture("inherits")
            with posthog.new_context():
                posthog.set_context_session("s-child")
                posthog.capture("overrides")
            posthog.capture("parent")

        sessions = {
            e["event"]: e["properties"]["$session_id"] for e in delivered(posthog, server, 3)
        }
        assert sessions == {"inherits": "s-parent", "overrides": "s-child", "parent": "s-parent"}

    def test_get_tags_returns_a_copy(self) -> None:
        """Changing the dict get_tags() returned does not change the context."""
        with posthog.new_context():
            posthog.tag("a", 1)
            tags = posthog.get_tags()
            tags["b"] = 2
            tags["a"] = 99
            assert posthog.get_tags() == {"a": 1}

    def test_tag_in_child_does_not_touch_parent_copy(self) -> None:
        """Tags read in the parent before a child changes them stay as they were."""
        with posthog.new_context():
            posthog.tag("a", 1)
            before = posthog.get_tags()
            with posthog.new_context():
                posthog.tag("a", 2)
            assert before == posthog.get_tags() == {"a": 1}

    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        st.lists(
            st.fixed_dictionaries(
                {
                    "fresh": st.booleans(),
                    "distinct_id": st.none() | st.sampled_from(["u1", "u2", "u3"]),
                    "session_id": st.none() | st.sampled_from(["s1", "s2"]),
                    "tags": st.dictionaries(st.sampled_from("abcd"), st.integers(0, 3), max_size=3),
                }
            ),
            max_size=6,
        )
    )
    def test_any_nesting_unwinds_exactly(self, levels: list[dict[str, Any]]) -> None:
        """For any nesting of contexts, each level reads as modelled and unwinds to its parent."""
        expected: list[tuple[Any, Any, dict[str, Any]]] = [EMPTY]
        entered = []
        for level in levels:
            ctx = posthog.new_context(fresh=level["fresh"])
            ctx.__enter__()
            entered.append(ctx)
            distinct_id, session_id, tags = EMPTY if level["fresh"] else expected[-1]
            tags = dict(tags)
            if level["distinct_id"] is not None:
                posthog.identify_context(level["distinct_id"])
                distinct_id = level["distinct_id"]
            if level["session_id"] is not None:
                posthog.set_context_session(level["session_id"])
                session_id = level["session_id"]
            for name, value in level["tags"].items():
                posthog.tag(name, value)
                tags[name] = value
            expected.append((distinct_id, session_id, tags))
            assert readers() == expected[-1]
        for ctx in reversed(entered):
            ctx.__exit__(None, None, None)
            expected.pop()
            assert readers() == expected[-1]
        assert readers() == EMPTY


# -- exceptions ------------------------------------------------------------------------------


def _raise_through(make_context: Callable[[], Any], raised: list[BaseException]) -> None:
    with make_context(), make_context(), make_context():
        _fail(raised)


def _fail(raised: list[BaseException]) -> None:
    error = ValueError("deep failure")
    raised.append(error)
    raise error


def _caught(make_context: Callable[[], Any], raised: list[BaseException]) -> BaseException:
    try:
        _raise_through(make_context, raised)
    except ValueError as e:
        return e
    raise AssertionError("nothing was raised")


def _frames(error: BaseException) -> list[tuple[str, int, str]]:
    return [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(error.__traceback__)]


class TestExceptions:
    """Exceptions leaving contexts: sent once, re-raised unchanged."""

    def test_crossing_nested_contexts_sent_once_and_unchanged(self, server: LocalServer) -> None:
        """Through three contexts the error is sent once and re-raised as the same object,
        with the traceback it has without any context."""
        plain_raised: list[BaseException] = []
        plain = _caught(contextlib.nullcontext, plain_raised)
        raised: list[BaseException] = []
        with posthog.new_context(capture_exceptions=False):
            posthog.identify_context("deep_user")
            error = _caught(posthog.new_context, raised)

        assert error is raised[0]
        assert type(error) is ValueError
        assert error.args == ("deep failure",)
        assert error.__cause__ is None
        assert error.__context__ is None
        assert _frames(error) == _frames(plain)
        assert _frames(error)[-1][2] == "_fail"

        exception = one_delivered(posthog, server, "$exception")
        assert_has_person(exception, "deep_user")
        assert exception_types(exception) == [("ValueError", "deep failure")]
        frames = exception["properties"]["$exception_list"][0]["stacktrace"]["frames"]
        assert "_fail" in [f["function"] for f in frames]

    def test_captured_with_the_innermost_context(self, server: LocalServer) -> None:
        """The $exception carries the identity, session and tags of the block it was raised in."""
        with pytest.raises(ZeroDivisionError), posthog.new_context():
            posthog.identify_context("outer")
            posthog.tag("level", "outer")
            posthog.tag("outer_only", True)
            with posthog.new_context():
                posthog.identify_context("inner")
                posthog.set_context_session("s-inner")
                posthog.tag("level", "inner")
                _ = 1 / 0

        exception = one_delivered(posthog, server, "$exception")
        assert_has_person(exception, "inner")
        props = exception["properties"]
        assert (
            props.items()
            >= {
                "level": "inner",
                "outer_only": True,
                "$session_id": "s-inner",
            }.items()
        )
        assert [t for t, _ in exception_types(exception)] == ["ZeroDivisionError"]

    def test_manual_capture_after_context_capture_sends_nothing(self, server: LocalServer) -> None:
        """capture_exception(e) of an error a context already sent returns None, sends nothing."""
        with pytest.raises(ValueError) as info, posthog.new_context():
            posthog.identify_context("u")
            raise ValueError("once")

        assert posthog.capture_exception(info.value) is None
        with posthog.new_context():
            posthog.identify_context("u")
            assert posthog.capture_exception(info.value) is None

        sent = stored_after_flush(server)
        assert [e["event"] for e in sent] == ["$exception"]

    def test_manual_capture_then_context_sends_once(self, server: LocalServer) -> None:
        """An error captured by hand and re-raised out of a context is not sent again."""
        with pytest.raises(ValueError), posthog.new_context():
            posthog.identify_context("u")
            try:
                raise ValueError("handled then re-raised")
            except ValueError as e:
                assert posthog.capture_exception(e) is not None
                raise

        sent = stored_after_flush(server)
        assert [e["event"] for e in sent] == ["$exception"]
        mechanism = sent[0]["properties"]["$exception_list"][0]["mechanism"]
        assert mechanism["handled"] is True

    def test_outer_context_captures_what_an_inner_one_lets_through(
        self, server: LocalServer
    ) -> None:
        """An error leaving a capture_exceptions=False block is sent once by the enclosing one."""
        with pytest.raises(KeyError), posthog.new_context():
            posthog.identify_context("outer")
            with posthog.new_context(capture_exceptions=False):
                posthog.identify_context("inner")
                raise KeyError("missing")

        exception = one_delivered(posthog, server, "$exception")
        assert_has_person(exception, "outer")

    def test_crossing_scoped_functions_sent_once(self, server: LocalServer) -> None:
        """An error crossing three scoped functions is sent once and arrives as raised."""

        @posthog.scoped()
        def outer() -> None:
            posthog.identify_context("scoped_user")
            middle()

        @posthog.scoped()
        def middle() -> None:
            posthog.tag("middle", True)
            inner()

        @posthog.scoped()
        def inner() -> None:
            raise OSError("disk gone")

        with pytest.raises(OSError, match="disk gone"):
            outer()

        sent = stored_after_flush(server)
        assert [e["event"] for e in sent] == ["$exception"]
        assert_has_person(sent[0], "scoped_user")
        assert sent[0]["properties"]["middle"] is True

    @pytest.mark.parametrize(
        "error", [KeyboardInterrupt(), SystemExit(3)], ids=["KeyboardInterrupt", "SystemExit"]
    )
    def test_control_flow_exceptions_not_captured(
        self, server: LocalServer, error: BaseException
    ) -> None:
        """KeyboardInterrupt/SystemExit leaving a context are re-raised, not sent (as upstream,
        which captures only Exception subclasses)."""
        with pytest.raises(type(error)) as info, posthog.new_context():
            posthog.identify_context("u")
            raise error

        assert info.value is error
        assert [e["event"] for e in stored_after_flush(server)] == []

    def test_cancelled_task_not_captured(self, server: LocalServer) -> None:
        """Cancelling a task inside a scoped coroutine sends no $exception; it still cancels."""

        @posthog.scoped()
        async def handler(started: asyncio.Event) -> None:
            posthog.identify_context("u")
            started.set()
            await asyncio.Event().wait()  # until cancelled

        async def main() -> None:
            started = asyncio.Event()
            task = asyncio.create_task(handler(started))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert [e["event"] for e in stored_after_flush(server)] == []

    def test_set_does_not_copy_tags_into_person_properties(self, server: LocalServer) -> None:
        """set() in a tagged context sends only the given person properties, as its user."""
        with posthog.new_context():
            posthog.identify_context("person_user")
            posthog.tag("request_id", "req_1")
            posthog.tag("plan", "premium")
            posthog.set({"email": "a@example.com"})
            posthog.set_once({"first_seen": "2024-01-01"})

        events = by_name(delivered(posthog, server, 2, distinct_id="person_user"))
        assert events["$set"]["properties"]["$set"] == {"email": "a@example.com"}
        assert events["$set_once"]["properties"]["$set_once"] == {"first_seen": "2024-01-01"}
        for event in events.values():
            for field in ("$set", "$set_once"):
                assert "request_id" not in event["properties"].get(field, {})
                assert "plan" not in event["properties"].get(field, {})


# -- scoped ----------------------------------------------------------------------------------


class TestScoped:
    """The @scoped decorator."""

    def test_sync_return_value_and_arguments(self) -> None:
        """A decorated function gets its arguments and returns its value."""

        @posthog.scoped()
        def add(a: int, b: int = 0, *, c: int = 0) -> tuple[int, tuple[Any, ...]]:
            posthog.tag("inside", True)
            return a + b + c, readers()

        total, inside = add(1, 2, c=3)
        assert total == 6
        assert inside == (None, None, {"inside": True})
        assert readers() == EMPTY

    def test_async_return_value(self) -> None:
        """A decorated coroutine function stays one, and its awaited value comes back."""

        @posthog.scoped()
        async def fetch(x: int) -> int:
            posthog.tag("x", x)
            await asyncio.sleep(0)
            assert posthog.get_tags() == {"x": x}
            return x * 2

        assert inspect.iscoroutinefunction(fetch)
        assert asyncio.run(fetch(21)) == 42

    @pytest.mark.parametrize("bare", [False, True], ids=["called", "bare"])
    def test_wraps_metadata(self, bare: bool) -> None:
        """Name, qualname, module, docstring and __wrapped__ are those of the function."""

        def original(x: int) -> int:
            """The original docstring."""
            return x

        async def original_async(x: int) -> int:
            """The async docstring."""
            return x

        decorator: Any = posthog.scoped if bare else posthog.scoped()
        for fn in (original, original_async):
            wrapped = decorator(fn)
            assert wrapped is not fn
            for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
                assert getattr(wrapped, attr) == getattr(fn, attr)
            assert wrapped.__wrapped__ is fn
            assert inspect.signature(wrapped) == inspect.signature(fn)

    def test_bare_decorator(self, server: LocalServer) -> None:
        """@posthog.scoped without parentheses works on sync and async functions."""

        @posthog.scoped
        def sync_job() -> str:
            posthog.identify_context("bare_sync")
            posthog.capture("bare_event")
            return "sync"

        @posthog.scoped
        async def async_job() -> str:
            posthog.identify_context("bare_async")
            await asyncio.sleep(0)
            posthog.capture("bare_event")
            return "async"

        assert sync_job() == "sync"
        assert asyncio.run(async_job()) == "async"
        assert readers() == EMPTY
        events = delivered(posthog, server, 2, event="bare_event")
        assert sorted(e["distinct_id"] for e in events) == ["bare_async", "bare_sync"]

    def test_each_call_has_its_own_context(self) -> None:
        """A call inherits its caller's context; its changes vanish when it returns."""

        @posthog.scoped()
        def job(n: int) -> tuple[Any, ...]:
            seen = readers()
            posthog.identify_context(f"job-{n}")
            posthog.tag(f"call_{n}", n)
            return seen

        with posthog.new_context():
            posthog.identify_context("caller")
            posthog.tag("caller", True)
            assert job(1) == ("caller", None, {"caller": True})
            assert job(2) == ("caller", None, {"caller": True})
            assert readers() == ("caller", None, {"caller": True})

    def test_fresh_scoped(self) -> None:
        """scoped(fresh=True) starts empty whatever the caller's context."""

        @posthog.scoped(fresh=True)
        def job() -> tuple[Any, ...]:
            return readers()

        with posthog.new_context():
            posthog.identify_context("caller")
            posthog.tag("caller", True)
            assert job() == EMPTY

    def test_async_exception_captured_once_and_reraised(self, server: LocalServer) -> None:
        """An error leaving a scoped coroutine is re-raised as is and sent once with its context."""
        errors: list[BaseException] = []

        @posthog.scoped()
        async def job() -> None:
            posthog.identify_context("async_fail")
            posthog.tag("step", "await")
            await asyncio.sleep(0)
            error = ConnectionError("peer went away")
            errors.append(error)
            raise error

        with pytest.raises(ConnectionError) as info:
            asyncio.run(job())

        assert info.value is errors[0]
        exception = one_delivered(posthog, server, "$exception")
        assert_has_person(exception, "async_fail")
        assert exception["properties"]["step"] == "await"

    @pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
    def test_capture_exceptions_false(self, server: LocalServer, is_async: bool) -> None:
        """scoped(capture_exceptions=False) re-raises and sends nothing."""

        @posthog.scoped(capture_exceptions=False)
        def sync_job() -> None:
            posthog.identify_context("u")
            raise ValueError("quiet")

        @posthog.scoped(capture_exceptions=False)
        async def async_job() -> None:
            posthog.identify_context("u")
            raise ValueError("quiet")

        with pytest.raises(ValueError, match="quiet"):
            if is_async:
                asyncio.run(async_job())
            else:
                sync_job()
        assert stored_after_flush(server) == []

    def test_concurrent_scoped_coroutines_awaited_directly(self) -> None:
        """Scoped coroutines awaited in one task, nested in each other, restore on return."""

        @posthog.scoped()
        async def inner() -> tuple[Any, ...]:
            posthog.tag("inner", True)
            await asyncio.sleep(0)
            return readers()

        @posthog.scoped()
        async def outer() -> tuple[Any, ...]:
            posthog.identify_context("outer")
            seen_inner = await inner()
            assert readers() == ("outer", None, {})
            return seen_inner

        async def main() -> tuple[Any, ...]:
            result = await outer()
            assert readers() == EMPTY
            return result

        assert asyncio.run(main()) == ("outer", None, {"inner": True})

    @pytest.mark.parametrize("bare", [False, True], ids=["called", "bare"])
    def test_generator_function_refused(self, bare: bool) -> None:
        """Decorating a generator function raises TypeError at once, saying why."""

        def numbers() -> Any:
            yield 1

        decorator: Any = posthog.scoped if bare else posthog.scoped()
        with pytest.raises(TypeError) as info:
            decorator(numbers)
        message = str(info.value)
        assert "generator" in message
        assert "numbers" in message
        assert "new_context" in message

    @pytest.mark.parametrize("bare", [False, True], ids=["called", "bare"])
    def test_async_generator_function_refused(self, bare: bool) -> None:
        """Decorating an async generator function raises TypeError at once, saying why."""

        async def stream() -> Any:
            yield 1

        decorator: Any = posthog.scoped if bare else posthog.scoped()
        with pytest.raises(TypeError) as info:
            decorator(stream)
        message = str(info.value)
        assert "generator" in message
        assert "stream" in message
        assert "new_context" in message


# -- manual __enter__ / __exit__ --------------------------------------------------------------


class TestManualEnterExit:
    """new_context used by hand, as request hooks do."""

    def test_manual_enter_and_exit(self) -> None:
        """__enter__ opens the context, __exit__(None, None, None) restores the parent."""
        with posthog.new_context():
            posthog.identify_context("parent")
            ctx = posthog.new_context()
            ctx.__enter__()
            posthog.identify_context("child")
            posthog.tag("t", 1)
            assert readers() == ("child", None, {"t": 1})
            ctx.__exit__(None, None, None)
            assert readers() == ("parent", None, {})

    def test_manual_exit_with_exception_captures_it(self, server: LocalServer) -> None:
        """__exit__ given an exception sends it once, with the context still current."""
        ctx = posthog.new_context()
        ctx.__enter__()
        posthog.identify_context("manual")
        try:
            raise ValueError("by hand")
        except ValueError as e:
            ctx.__exit__(type(e), e, e.__traceback__)
        assert readers() == EMPTY

        exception = one_delivered(posthog, server, "$exception")
        assert_has_person(exception, "manual")
        assert exception_types(exception) == [("ValueError", "by hand")]

    def test_entering_twice_raises(self) -> None:
        """Entering an already entered new_context raises RuntimeError and changes nothing."""
        ctx = posthog.new_context()
        with ctx:
            posthog.identify_context("first")
            with pytest.raises(RuntimeError):
                ctx.__enter__()
            assert readers() == ("first", None, {})
            with pytest.raises(RuntimeError), ctx:
                pass  # pragma: no cover - never reached
            assert readers() == ("first", None, {})
        assert readers() == EMPTY


# -- outside any context ---------------------------------------------------------------------


class TestOutsideContext:
    """identify_context, tag and set_context_session outside any context are ignored."""

    @pytest.fixture(autouse=True)
    def _forget_warnings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The warning is logged once per process: start each test as if none was logged."""
        monkeypatch.setattr(contexts, "_outside", Warner(interval=None))

    @pytest.mark.parametrize(
        ("name", "call"),
        [
            ("identify_context", lambda: posthog.identify_context("stray_user")),
            ("tag", lambda: posthog.tag("stray_tag", 1)),
            ("set_context_session", lambda: posthog.set_context_session("stray_session")),
        ],
        ids=["identify_context", "tag", "set_context_session"],
    )
    def test_ignored_with_one_warning(
        self,
        server: LocalServer,
        caplog: pytest.LogCaptureFixture,
        name: str,
        call: Callable[[], None],
    ) -> None:
        """Called twice outside a context: one warning naming it, no effect on later events."""
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            call()
            call()

        warnings = [
            r
            for r in caplog.records
            if r.name == "posthog_logging" and r.levelno == logging.WARNING
        ]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert name in warnings[0].getMessage()
        assert readers() == EMPTY

        posthog.capture("later_event")
        with posthog.new_context():
            assert readers() == EMPTY
            posthog.capture("later_in_context")

        for event in delivered(posthog, server, 2):
            assert_personless(event)
            assert "stray_tag" not in event["properties"]
            assert "$session_id" not in event["properties"]

    def test_works_again_inside_a_context(self, caplog: pytest.LogCaptureFixture) -> None:
        """After an ignored call outside, the same calls inside a context take effect."""
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            posthog.tag("a", 1)
            with posthog.new_context():
                posthog.tag("a", 2)
                posthog.identify_context("u")
                posthog.set_context_session("s")
                assert readers() == ("u", "s", {"a": 2})
        messages = [r.getMessage() for r in caplog.records if r.name == "posthog_logging"]
        assert len(messages) == 1
        assert "tag" in messages[0]


# -- which value wins ------------------------------------------------------------------------


class TestPrecedence:
    """Explicit arguments win over the context."""

    def test_explicit_property_wins_over_tag(self, server: LocalServer) -> None:
        """A property given to capture() overrides the tag of the same name; others stay."""
        with posthog.new_context():
            posthog.identify_context("u")
            posthog.tag("plan", "free")
            posthog.tag("region", "eu")
            posthog.capture("upgraded", {"plan": "pro"})

        props = one_delivered(posthog, server, "upgraded")["properties"]
        assert props["plan"] == "pro"
        assert props["region"] == "eu"

    def test_explicit_session_id_wins(self, server: LocalServer) -> None:
        """A $session_id given to capture() overrides the context's session."""
        with posthog.new_context():
            posthog.identify_context("u")
            posthog.set_context_session("s-context")
            posthog.capture("switched", {"$session_id": "s-explicit"})

        assert (
            one_delivered(posthog, server, "switched")["properties"]["$session_id"] == "s-explicit"
        )

    def test_explicit_distinct_id_wins(self, server: LocalServer) -> None:
        """distinct_id= overrides the context's identity; the context's tags still apply."""
        with posthog.new_context():
            posthog.identify_context("context_user")
            posthog.tag("request_id", "r1")
            posthog.capture("on_behalf", distinct_id="explicit_user")
            posthog.set({"role": "admin"}, distinct_id="explicit_user")

        events = by_name(delivered(posthog, server, 2, distinct_id="explicit_user"))
        assert events["on_behalf"]["properties"]["request_id"] == "r1"
        assert events["$set"]["properties"]["$set"] == {"role": "admin"}
        assert server.events(distinct_id="context_user") == []

    def test_child_identity_wins_over_parent(self, server: LocalServer) -> None:
        """identify_context in a child overrides the parent's identity there only."""
        with posthog.new_context():
            posthog.identify_context("parent")
            with posthog.new_context():
                posthog.identify_context("child")
                posthog.capture("in_child")
            posthog.capture("in_parent")

        assert_has_person(one_delivered(posthog, server, "in_child"), "child")
        assert_has_person(one_delivered(posthog, server, "in_parent"), "parent")


class TestPersonless:
    """No distinct_id anywhere: the event is still sent, without a person."""

    def test_outside_any_context(self, server: LocalServer) -> None:
        """capture() outside any context sends a personless event."""
        posthog.capture("anonymous_event", {"x": 1})

        event = one_delivered(posthog, server, "anonymous_event")
        assert_personless(event)
        assert event["properties"]["x"] == 1

    def test_context_without_identity(self, server: LocalServer) -> None:
        """A tagged context without identify_context sends personless events with its tags."""
        with posthog.new_context():
            posthog.tag("request_id", "r-anon")
            posthog.set_context_session("s-anon")
            posthog.capture("anonymous_in_context")

        event = one_delivered(posthog, server, "anonymous_in_context")
        assert_personless(event)
        assert event["properties"]["request_id"] == "r-anon"
        assert event["properties"]["$session_id"] == "s-anon"

    def test_exception_without_identity(self, server: LocalServer) -> None:
        """An error leaving an unidentified context is still sent, personless, with its tags."""
        with pytest.raises(ValueError), posthog.new_context():
            posthog.tag("job", "nightly")
            raise ValueError("no one to blame")

        exception = one_delivered(posthog, server, "$exception")
        assert_personless(exception)
        assert exception["properties"]["job"] == "nightly"
