"""The scripts in examples/ run as documented and their events reach the server."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from posthog_logging.server import LocalServer

from .conftest import API_KEY

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, server: LocalServer) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, POSTHOG_API_KEY=API_KEY, POSTHOG_HOST=server.url)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), EXAMPLES / name)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestScripts:
    def test_plain_logging(self, server: LocalServer) -> None:
        """plain_logging.py sends its two events and the logged exception, for user_1."""
        run_example("plain_logging.py", server)
        events = server.wait_for_events(3)
        assert sorted(e["event"] for e in events) == [
            "$exception",
            "import_finished",
            "import_started",
        ]
        assert {e["distinct_id"] for e in events} == {"user_1"}
        assert all(e["properties"]["source"] == "csv" for e in events)

    def test_dict_config(self, server: LocalServer) -> None:
        """dict_config.py sends its event and exception with identity and session."""
        proc = run_example("dict_config.py", server)
        events = server.wait_for_events(2)
        assert sorted(e["event"] for e in events) == ["$exception", "report_exported"]
        assert {e["properties"]["$session_id"] for e in events} == {
            "0190b9a0-0000-7000-8000-000000000001"
        }
        assert "[user_2]" in proc.stderr  # ContextFilter stamped the console lines


class TestStructlogSetups:
    def test_structlog_native(self, server: LocalServer) -> None:
        """structlog_native.py: two events and one $exception, with identity, session, tags."""
        proc = run_example("structlog_native.py", server)
        events = server.wait_for_events(3)
        assert sorted(e["event"] for e in events) == [
            "$exception",
            "checkout_completed",
            "checkout_started",
        ]
        assert {e["distinct_id"] for e in events} == {"user_9"}
        assert {e["properties"]["plan"] for e in events} == {"pro"}
        assert {e["properties"]["request_id"] for e in events} == {"req_7f3a"}
        [started] = [e for e in events if e["event"] == "checkout_started"]
        assert started["properties"]["items"] == 2
        assert started["properties"]["$session_id"] == "01929b3a-7f3a-7c3a-9c3a-3f3a7f3a7f3a"
        assert '"capture"' not in proc.stdout  # the marker is consumed, not rendered
        assert "ConnectionError: payment provider unreachable" in proc.stdout

    def test_structlog_over_stdlib(self, server: LocalServer) -> None:
        """structlog_over_stdlib.py: each entry once, although processor and handler see it."""
        proc = run_example("structlog_over_stdlib.py", server)
        events = server.wait_for_events(3)
        assert sorted(e["event"] for e in events) == [
            "$exception",
            "legacy_call",
            "project_renamed",
        ]
        assert sum(r.event_count for r in server.requests if r.status == 200) == 3
        assert {e["distinct_id"] for e in events} == {"user_5"}
        [error] = server.events(event="$exception")
        assert error["properties"]["$exception_source"] == "python.structlog"
        assert '"event": "project_renamed"' in proc.stderr  # rendered by ProcessorFormatter

    def test_stdlib_rendered_by_structlog(self, server: LocalServer) -> None:
        """stdlib_rendered_by_structlog.py: plain records are sent; structlog renders them."""
        proc = run_example("stdlib_rendered_by_structlog.py", server)
        events = server.wait_for_events(2)
        assert sorted(e["event"] for e in events) == ["$exception", "report_exported"]
        assert {e["distinct_id"] for e in events} == {"user_3"}
        [error] = server.events(event="$exception")
        assert error["properties"]["$exception_source"] == "python.logging"
        assert "posthog_distinct_id=user_3" in proc.stderr


class TestLoguruSetup:
    def test_loguru_app(self, server: LocalServer) -> None:
        """loguru_app.py: two events, the logged exception with its traceback and the
        error without one, each with identity, session, tags and the bound and
        contextualized values; every record is also a log line for PostHog Logs."""
        proc = run_example("loguru_app.py", server)
        events = server.wait_for_events(4)
        assert sorted(e["event"] for e in events) == [
            "$exception",
            "$exception",
            "checkout_completed",
            "checkout_started",
        ]
        assert {e["distinct_id"] for e in events} == {"user_11"}
        assert {e["properties"]["$session_id"] for e in events} == {
            "01929b3a-7f3a-7c3a-9c3a-3f3a7f3a7f3b"
        }
        assert {e["properties"]["plan"] for e in events} == {"pro"}
        assert {e["properties"]["request_id"] for e in events} == {"req_8c1d"}
        assert {e["properties"]["items"] for e in events} == {2}
        [started] = server.events(event="checkout_started")
        assert started["properties"]["total"] == 24.9
        assert "event" not in started["properties"]
        raised, declined = sorted(
            server.events(event="$exception"),
            key=lambda e: "$exception_fingerprint" in e["properties"],
        )
        [entry] = raised["properties"]["$exception_list"]
        assert (entry["type"], entry["value"]) == (
            "ConnectionError",
            "inventory service unreachable",
        )
        assert entry["stacktrace"]["frames"][-1]["function"] == "reserve_stock"
        assert declined["properties"]["$exception_list"][0]["type"] == (
            "payment declined for card ending {}"
        )
        assert {e["properties"]["$exception_source"] for e in (raised, declined)} == {
            "python.loguru"
        }
        lines = server.store.logs()
        assert [line["body"] for line in lines] == [
            "checkout_started",
            "stock reservation failed",
            "payment declined for card ending 4242",
            "order placed",
        ]
        assert {line["distinct_id"] for line in lines} == {"user_11"}
        assert "checkout_started {'request_id': 'req_8c1d', 'items': 2" in proc.stderr


def run_python(code: str, server: LocalServer) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that can import the examples."""
    env = dict(os.environ, POSTHOG_API_KEY=API_KEY, POSTHOG_HOST=server.url)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXAMPLES), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


class TestFrameworkExamples:
    def test_fastapi_app(self, server: LocalServer) -> None:
        """fastapi_app.py: route, streamed export, websocket and error carry the caller."""
        run_python(
            """
import logging, posthog_logging as posthog
from fastapi.testclient import TestClient
import fastapi_app
logging.getLogger().addHandler(posthog.PostHogHandler())
logging.getLogger().setLevel(logging.INFO)
client = TestClient(fastapi_app.app, raise_server_exceptions=False)
me = {"X-POSTHOG-DISTINCT-ID": "user_8", "X-POSTHOG-SESSION-ID": "s_8"}
assert client.get("/reports/7", headers=me).json() == {"report": 7}
assert client.get("/reports/7/export", headers=me).text.count("row") == 3
with client.websocket_connect("/live", headers=me) as ws:
    ws.send_text("hi")
    assert ws.receive_text() == "HI"
assert client.get("/boom", headers=me).status_code == 500
posthog.shutdown()
""",
            server,
        )
        events = server.wait_for_events(4)
        assert sorted(e["event"] for e in events) == [
            "$exception",
            "live_message",
            "report_exported",
            "report_viewed",
        ]
        assert {e["distinct_id"] for e in events} == {"user_8"}
        assert {e["properties"]["$session_id"] for e in events} == {"s_8"}
        [error] = server.events(event="$exception")
        assert error["properties"]["$request_path"] == "/boom"
        assert error["properties"]["$exception_source"] == "asgi.middleware"

    def test_django_app(self, server: LocalServer) -> None:
        """django_app.py: a view's event and error carry the user and the request."""
        run_python(
            """
import django, django_app
django.setup()
from django.test import Client
import posthog_logging as posthog
client = Client(raise_request_exception=False)
assert client.get("/invoices/9", headers={"X-User-Id": "user_4"}).status_code == 200
assert client.get("/invoices/9/pay", headers={"X-User-Id": "user_4"}).status_code == 500
posthog.shutdown()
""",
            server,
        )
        events = server.wait_for_events(2)
        assert sorted(e["event"] for e in events) == ["$exception", "invoice_viewed"]
        assert {e["distinct_id"] for e in events} == {"user_4"}
        [error] = server.events(event="$exception")
        assert error["properties"]["$request_path"] == "/invoices/9/pay"
        assert error["properties"]["$exception_source"] == "django.middleware"

    def test_celery_app(self, server: LocalServer) -> None:
        """celery_app.py: the task's event and failure carry the caller's person and tags."""
        run_example("celery_app.py", server)
        events = server.wait_for_events(2)
        assert sorted(e["event"] for e in events) == ["$exception", "invoice_sent"]
        assert {e["distinct_id"] for e in events} == {"user_6"}
        assert {e["properties"]["plan"] for e in events} == {"team"}
        [error] = server.events(event="$exception")
        assert error["properties"]["celery_task"] == "example.charge_card"


class TestFlaskApp:
    @pytest.fixture
    def app_client(self, default_client: object) -> Iterator[Any]:
        module = load("flask_app.py")
        root = logging.getLogger()
        handler = module.posthog.PostHogHandler()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        yield module.app.test_client()
        root.removeHandler(handler)

    def test_requests_are_isolated(self, app_client: Any, server: LocalServer) -> None:
        """Each request's events carry its own user and request id, never another's."""
        for user in ("alice", "bob"):
            response = app_client.get(
                "/checkout/7", headers={"X-User-Id": user, "X-Request-ID": f"req-{user}"}
            )
            assert response.status_code == 200
        import posthog_logging

        assert posthog_logging.flush(5)
        events = server.wait_for_events(2, event="checkout_viewed")
        assert {(e["distinct_id"], e["properties"]["request_id"]) for e in events} == {
            ("alice", "req-alice"),
            ("bob", "req-bob"),
        }

    def test_view_error_captured_once(self, app_client: Any, server: LocalServer) -> None:
        """An error in a view is sent once, as the requesting user's $exception."""
        response = app_client.get("/fail", headers={"X-User-Id": "carol"})
        assert response.status_code == 500
        import posthog_logging

        assert posthog_logging.flush(5)
        [event] = server.wait_for_events(1, event="$exception")
        assert event["distinct_id"] == "carol"
        assert event["properties"]["$request_path"] == "/fail"
        assert event["properties"]["$exception_list"][0]["value"] == "the view failed"
        assert len(server.events(event="$exception")) == 1
