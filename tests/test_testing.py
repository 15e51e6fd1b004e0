"""Tests for posthog_logging.testing and its pytest plugin: capturing events in memory.

The plugin is exercised the way a user gets it: ``pytester`` writes a user's test file and
runs pytest in a subprocess, where the plugin loads through its ``pytest11`` entry point.
``capture_events()`` is exercised from a plain script and from ``unittest``, also in
subprocesses, and in-process against the local server for what must not reach the wire.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import posthog_logging
from posthog_logging import Client
from posthog_logging.server import LocalServer
from posthog_logging.testing import CapturedEvents, capture_events

pytest_plugins = ["pytester"]

#: Generous: a subprocess starts an interpreter and pytest.
RUN_TIMEOUT = 60.0
WAIT = 5.0

# What a user's conftest might do: attach a handler, no API key anywhere.
USER_CONFTEST = """
import logging

import pytest

import posthog_logging


@pytest.fixture
def log():
    logger = logging.getLogger("app")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = posthog_logging.PostHogHandler()
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)
"""


@pytest.fixture
def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A user's project directory with the plugin auto-loading as it would once installed."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("PYTEST_PLUGINS", raising=False)
    pytester.makeconftest(USER_CONFTEST)
    return pytester


def run_user_tests(project: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    """Write ``source`` as the user's test file and run pytest on it in a subprocess."""
    project.makepyfile(test_user=textwrap.dedent(source))
    return project.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args, timeout=RUN_TIMEOUT)


def run_python(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the interpreter of this test run in ``cwd``, with no PostHog configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


# -- the pytest plugin, as a user gets it ----------------------------------------------


class TestPluginRegistration:
    def test_registered_under_its_entry_point_name(self, user_project: pytest.Pytester) -> None:
        """Installing the package makes pytest load the plugin as ``posthog_logging``."""
        result = run_user_tests(user_project, "def test_nothing():\n    pass\n", "--trace-config")
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines(
            ["*active plugins:*", "*posthog_logging*:*posthog_logging*pytest_plugin.py*"]
        )
        config = user_project.parseconfigure()
        assert config.pluginmanager.get_plugin("posthog_logging") is not None

    def test_disabled_with_p_no(self, user_project: pytest.Pytester) -> None:
        """``-p no:posthog_logging`` turns the plugin off: the fixture is not found."""
        source = """
            def test_uses_fixture(posthog_events):
                pass
        """
        result = run_user_tests(user_project, source, "-p", "no:posthog_logging")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*fixture 'posthog_events' not found*"])


class TestPluginFixture:
    def test_marked_record_with_context_identity(self, user_project: pytest.Pytester) -> None:
        """A marked record through ``PostHogHandler()`` is captured with the context's
        identity and tags, with no API key configured and nothing imported from the plugin."""
        source = """
            import posthog_logging as posthog

            def test_page_view_is_tracked(log, posthog_events):
                assert posthog.get_client().api_key is None
                with posthog.new_context():
                    posthog.identify_context("user_123")
                    posthog.tag("plan", "pro")
                    log.info("page_viewed", extra={"event": True, "page": "/pricing"})
                    log.info("not an event")
                event = posthog_events.assert_captured(
                    "page_viewed", distinct_id="user_123", page="/pricing", plan="pro"
                )
                assert set(event) == {"event", "distinct_id", "properties", "timestamp", "uuid"}
                assert posthog_events.names == ["page_viewed"]
                assert len(posthog_events) == 1
        """
        result = run_user_tests(user_project, source)
        result.assert_outcomes(passed=1)

    def test_module_level_capture(self, user_project: pytest.Pytester) -> None:
        """``posthog.capture`` on the default client is captured."""
        source = """
            import posthog_logging as posthog

            def test_signup(posthog_events):
                posthog.capture("signup_completed", {"plan": "free"}, distinct_id="ada")
                event = posthog_events.assert_captured("signup_completed", plan="free")
                assert event["distinct_id"] == "ada"
                assert posthog_events.find(distinct_id="ada") == [event]
        """
        result = run_user_tests(user_project, source)
        result.assert_outcomes(passed=1)

    def test_logged_exception(self, user_project: pytest.Pytester) -> None:
        """``logger.exception`` is captured as an ``$exception`` event."""
        source = """
            import posthog_logging as posthog

            def test_failure_is_reported(log, posthog_events):
                with posthog.new_context():
                    posthog.identify_context("user_9")
                    try:
                        {}["missing"]
                    except KeyError:
                        log.exception("lookup failed")
                [event] = posthog_events.exceptions
                assert event["distinct_id"] == "user_9"
                [exc] = event["properties"]["$exception_list"]
                assert exc["type"] == "KeyError"
                posthog_events.assert_captured("$exception", log_message="lookup failed")
        """
        result = run_user_tests(user_project, source)
        result.assert_outcomes(passed=1)

    def test_redaction_and_before_send(self, user_project: pytest.Pytester) -> None:
        """What is captured is what would go on the wire: secrets redacted, super
        properties added, ``before_send`` changes applied and its drops missing."""
        source = """
            import logging

            import posthog_logging as posthog

            def before_send(event):
                if event["event"] == "health_check":
                    return None
                event["properties"]["release"] = "1.2.3"
                return event

            def test_default_client(posthog_events):
                posthog.configure(before_send=before_send, super_properties={"service": "web"})
                posthog.capture("health_check", distinct_id="u1")
                posthog.capture(
                    "signed_in", {"password": "hunter2", "method": "sso"}, distinct_id="u1"
                )
                event = posthog_events.assert_captured(
                    "signed_in", release="1.2.3", service="web", method="sso"
                )
                assert event["properties"]["password"] == "[Filtered]"
                posthog_events.assert_not_captured("health_check")
                assert posthog_events.names == ["signed_in"]

            def test_handler_own_client(posthog_events):
                log = logging.getLogger("app.own")
                log.setLevel(logging.INFO)
                log.propagate = False
                handler = posthog.PostHogHandler(before_send=before_send)
                log.addHandler(handler)
                try:
                    log.info("health_check", extra={"event": True})
                    log.info("login", extra={"event": True, "api_token": "t0k"})
                finally:
                    log.removeHandler(handler)
                event = posthog_events.assert_captured("login", release="1.2.3")
                assert event["properties"]["api_token"] == "[Filtered]"
                assert posthog_events.names == ["login"]
        """
        result = run_user_tests(user_project, source)
        result.assert_outcomes(passed=2)

    def test_assert_captured_failure_lists_events_sent(self, user_project: pytest.Pytester) -> None:
        """A failing ``assert_captured`` says what was expected and lists what was sent."""
        source = """
            import posthog_logging as posthog

            def test_wrong_expectation(posthog_events):
                posthog.capture("page_viewed", {"page": "/"}, distinct_id="user_1")
                posthog.capture("clicked", {"button": "buy"}, distinct_id="user_2")
                posthog_events.assert_captured("signup_completed", plan="pro")

            def test_nothing_sent(posthog_events):
                posthog_events.assert_captured("signup_completed")
        """
        result = run_user_tests(user_project, source)
        result.assert_outcomes(failed=2)
        result.stdout.fnmatch_lines(
            [
                "*_ test_wrong_expectation _*",
                "*expected 'signup_completed', plan='pro'; found 0 matching.",
                "*events sent:",
                "*page_viewed distinct_id='user_1' {'page': '/'}",
                "*clicked distinct_id='user_2' {'button': 'buy'}",
                "*_ test_nothing_sent _*",
                "*expected 'signup_completed'; found 0 matching.",
                "*events sent:",
                "*(none)",
            ]
        )

    def test_assert_not_captured(self, user_project: pytest.Pytester) -> None:
        """``assert_not_captured`` passes when the event was not sent (or not with those
        values) and fails, listing the matches, when it was."""
        source = """
            import posthog_logging as posthog

            def test_passes(posthog_events):
                posthog.capture("checkout", {"step": 1}, distinct_id="u")
                posthog_events.assert_not_captured("refund")
                posthog_events.assert_not_captured("checkout", step=2)

            def test_fails(posthog_events):
                posthog.capture("refund", {"amount": 5}, distinct_id="u")
                posthog_events.assert_not_captured("refund")
        """
        result = run_user_tests(user_project, source)
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            ["*'refund' was sent 1 time(s):*", "*refund distinct_id='u' {'amount': 5}"]
        )

    def test_count(self, user_project: pytest.Pytester) -> None:
        """``count=`` passes only for the exact number of matching events."""
        source = """
            import pytest

            def test_count(log, posthog_events):
                for item in ("a", "b", "a"):
                    log.info("added", extra={"event": True, "item": item})
                posthog_events.assert_captured("added", count=3)
                posthog_events.assert_captured("added", count=2, item="a")
                with pytest.raises(AssertionError, match="2 time"):
                    posthog_events.assert_captured("added", count=2)

            def test_count_fails(log, posthog_events):
                log.info("added", extra={"event": True})
                posthog_events.assert_captured("added", count=2)
        """
        result = run_user_tests(user_project, source)
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*expected 'added' 2 time(s); found 1 matching.*"])

    def test_no_leak_between_tests(self, user_project: pytest.Pytester) -> None:
        """Each test sees only its own events, even when an earlier test left events queued
        on a client with a long flush interval, with or without the fixture."""
        source = """
            import posthog_logging as posthog

            slow = posthog.Client(flush_interval=60, flush_at=10_000)
            slow_keyed = posthog.Client(
                "phc_user", host="http://127.0.0.1:9", flush_interval=60, flush_at=10_000
            )

            def test_first(log, posthog_events):
                slow.capture("from_first", distinct_id="u")
                log.info("from_first_log", extra={"event": True})
                posthog.capture("from_first_default", distinct_id="u")

            def test_between_without_fixture():
                slow_keyed.capture("from_between", distinct_id="u")
                assert slow_keyed.stats.pending == 1

            def test_second(posthog_events):
                assert posthog_events.events == []
                slow.capture("from_second", distinct_id="u")
                slow_keyed.capture("from_second_keyed", distinct_id="u")
                assert sorted(posthog_events.names) == ["from_second", "from_second_keyed"]

            def test_third(posthog_events):
                assert posthog_events.names == []
        """
        result = run_user_tests(user_project, source)
        result.assert_outcomes(passed=4)


# -- capture_events() without pytest ------------------------------------------------------


SIGNUP_APP = """
import logging

import posthog_logging as posthog

log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(posthog.PostHogHandler())


def signup(email):
    with posthog.new_context():
        posthog.identify_context(email)
        log.info("signup_completed", extra={"event": True, "plan": "free"})
"""


class TestWithoutPytest:
    def test_plain_script(self, tmp_path: Path) -> None:
        """``capture_events()`` works in a plain script: events captured, helpers work."""
        (tmp_path / "app.py").write_text(SIGNUP_APP)
        (tmp_path / "check.py").write_text(
            textwrap.dedent(
                """
                from posthog_logging.testing import capture_events

                from app import signup

                with capture_events() as events:
                    signup("ada@example.com")
                event = events.assert_captured("signup_completed", plan="free")
                assert event["distinct_id"] == "ada@example.com", event
                events.assert_not_captured("$exception")
                try:
                    events.assert_captured("signup_completed", plan="pro")
                except AssertionError as exc:
                    assert "signup_completed distinct_id='ada@example.com'" in str(exc), exc
                else:
                    raise SystemExit("assert_captured did not fail")
                print("captured:", events.names)
                """
            )
        )
        done = run_python(tmp_path, "check.py")
        assert done.returncode == 0, done.stderr
        assert "captured: ['signup_completed']" in done.stdout

    def test_unittest(self, tmp_path: Path) -> None:
        """A ``unittest.TestCase`` using ``capture_events()`` passes under ``python -m
        unittest``, each block seeing only its own events."""
        (tmp_path / "app.py").write_text(SIGNUP_APP)
        (tmp_path / "test_signup.py").write_text(
            textwrap.dedent(
                """
                import unittest

                import posthog_logging as posthog
                from posthog_logging.testing import capture_events

                from app import signup


                class SignupTest(unittest.TestCase):
                    def test_tracked(self):
                        with capture_events() as events:
                            signup("ada@example.com")
                        events.assert_captured(
                            "signup_completed", distinct_id="ada@example.com", plan="free"
                        )

                    def test_only_this_blocks_events(self):
                        posthog.capture("outside", distinct_id="x")
                        with capture_events() as events:
                            signup("bob@example.com")
                        self.assertEqual(events.names, ["signup_completed"])
                        self.assertEqual(events.events[0]["distinct_id"], "bob@example.com")


                if __name__ == "__main__":
                    unittest.main()
                """
            )
        )
        done = run_python(tmp_path, "-m", "unittest", "-v", "test_signup")
        assert done.returncode == 0, done.stderr
        assert "Ran 2 tests" in done.stderr
        assert done.stderr.rstrip().endswith("OK"), done.stderr


# -- in-process: what is captured, and that nothing reaches the wire ----------------------


class TestCaptureEvents:
    def test_no_http_while_capturing(
        self,
        server: LocalServer,
        default_client: Client,
        make_client: Callable[..., Client],
    ) -> None:
        """While capturing, clients configured for a server send nothing over HTTP."""
        client = make_client()
        with capture_events() as events:
            posthog_logging.capture("from_default", distinct_id="u")
            client.capture("from_client", distinct_id="u")
            assert sorted(events.names) == ["from_client", "from_default"]
        default_client.flush()
        client.flush()
        assert server.requests == []
        assert client.stats.sent == 1  # handed to the recorder, as a server would take it

    def test_sends_over_http_again_after(
        self, server: LocalServer, make_client: Callable[..., Client]
    ) -> None:
        """After the block, the client sends over HTTP again, and only what followed."""
        client = make_client()
        with capture_events() as events:
            client.capture("captured", distinct_id="u")
        assert events.names == ["captured"]
        client.capture("after", distinct_id="u")
        client.flush()
        server.wait_for_events(1, timeout=WAIT, event="after")
        assert [e["event"] for e in server.events()] == ["after"]
        assert events.names == ["captured"]

    def test_client_made_inside_block(
        self, server: LocalServer, make_client: Callable[..., Client]
    ) -> None:
        """Clients made inside the block are captured, with or without an API key."""
        with capture_events() as events:
            keyed = make_client()
            keyless = make_client(api_key=None)
            assert keyless.api_key is None
            keyed.capture("keyed", distinct_id="u")
            keyless.capture("keyless", distinct_id="u")
            assert sorted(events.names) == ["keyed", "keyless"]
        assert server.requests == []

    def test_sync_mode_client(
        self, server: LocalServer, make_client: Callable[..., Client]
    ) -> None:
        """A ``sync_mode`` client is captured, on the caller's thread, with no request."""
        client = make_client(sync_mode=True)
        with capture_events() as events:
            assert client.capture("sync_event", {"n": 1}, distinct_id="u") is not None
            assert events.find("sync_event", n=1)
        assert server.requests == []
        client.capture("sync_after", distinct_id="u")
        assert [e["event"] for e in server.events()] == ["sync_after"]

    def test_events_queued_before_are_not_captured(
        self, server: LocalServer, make_client: Callable[..., Client]
    ) -> None:
        """Events queued before the block are neither captured nor sent."""
        client = make_client(flush_interval=60, flush_at=10_000)
        client.capture("before", distinct_id="u")
        assert client.stats.pending == 1
        with capture_events() as events:
            client.capture("inside", distinct_id="u")
        assert events.names == ["inside"]
        client.flush()
        assert server.requests == []

    def test_nesting(self, server: LocalServer, make_client: Callable[..., Client]) -> None:
        """The inner block captures what is sent inside it; the outer one is restored
        after, and keeps what it had captured."""
        client = make_client()
        with capture_events() as outer:
            client.capture("outer_first", distinct_id="u")
            assert outer.names == ["outer_first"]  # read: sent to the outer block
            with capture_events() as inner:
                client.capture("inner_event", distinct_id="u")
            client.capture("outer_last", distinct_id="u")
        assert inner.names == ["inner_event"]
        assert outer.names == ["outer_first", "outer_last"]
        assert server.requests == []

    def test_nesting_keeps_outer_events_not_yet_read(
        self, make_client: Callable[..., Client]
    ) -> None:
        """An event logged in the outer block just before an inner block starts belongs to
        the outer block."""
        client = make_client(flush_interval=60)
        with capture_events() as outer:
            client.capture("outer_first", distinct_id="u")
            with capture_events() as inner:
                client.capture("inner_event", distinct_id="u")
        assert inner.names == ["inner_event"]
        assert outer.names == ["outer_first"]

    def test_clear_and_reading(self, make_client: Callable[..., Client]) -> None:
        """``clear`` forgets what was captured; iteration, ``len`` and ``repr`` show the
        events, oldest first."""
        client = make_client()
        with capture_events() as events:
            client.capture("a", distinct_id="u")
            client.capture("b", distinct_id="u")
            assert [e["event"] for e in events] == ["a", "b"]
            assert len(events) == 2
            assert repr(events) == "<CapturedEvents ['a', 'b']>"
            events.clear()
            assert events.events == []
            client.capture("c", distinct_id="u")
        assert events.names == ["c"]

    def test_fixture_in_own_suite(
        self, posthog_events: CapturedEvents, server: LocalServer, default_client: Client
    ) -> None:
        """The ``posthog_events`` fixture is available here too and keeps the wire quiet."""
        posthog_logging.capture("fixture_event", {"k": "v"}, distinct_id="u")
        posthog_events.assert_captured("fixture_event", distinct_id="u", count=1, k="v")
        default_client.flush()
        assert server.requests == []
