"""Code written for the official SDK (``import posthog``), run after
``import posthog_logging as posthog``: what reaches PostHog (docs/migrating.md)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import posthog_logging
import posthog_logging as posthog
from posthog_logging import Client, DeliveryError, FeatureFlagsNotSupported, compat
from posthog_logging.compat import FEATURE_FLAG_METHODS, OFFICIAL_ONLY_OPTIONS
from posthog_logging.diagnostics import Warner
from posthog_logging.server import Fault, LocalServer

from .conftest import API_KEY
from .helpers import delivered, one_delivered
from .polling import wait_until

WAIT = 10.0


@pytest.fixture
def official(monkeypatch: pytest.MonkeyPatch, server: LocalServer) -> Iterator[LocalServer]:
    """The module configured as the official SDK's README does it, to the local server.
    Every module attribute a test sets goes through ``monkeypatch``, so it is put back."""
    monkeypatch.setattr(posthog, "project_api_key", API_KEY)
    monkeypatch.setattr(posthog, "host", server.url)
    yield server
    posthog_logging.default_client.reset()  # while the server still runs


@pytest.fixture
def warnings_said_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    """The once-per-process warnings about the official SDK's options, as in a new
    process (another test may have said them already)."""
    monkeypatch.setattr(compat, "_official_warner", Warner(interval=None))


def said(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    """The library's warnings that mention ``text``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "posthog_logging" and r.levelno >= logging.WARNING and text in r.getMessage()
    ]


def module_flush() -> None:
    assert posthog.flush(timeout_seconds=WAIT), "flush(timeout_seconds=...) did not finish"


class TestModuleAttributes:
    def test_readme_snippet(self, official: LocalServer, caplog: pytest.LogCaptureFixture) -> None:
        """The official README's set-up (``project_api_key``, ``host``) sends the event,
        with no warning about a missing API key."""
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            uid = posthog.capture(
                "user_signed_up",
                distinct_id="distinct_id_of_the_user",
                properties={"login_type": "email", "is_free_trial": "true"},
            )
            module_flush()
        [event] = official.wait_for_events(1, timeout=WAIT, event="user_signed_up")
        assert event["uuid"] == uid
        assert event["distinct_id"] == "distinct_id_of_the_user"
        assert event["properties"]["login_type"] == "email"
        assert not said(caplog, "no API key")

    def test_project_api_key_wins_over_api_key(
        self, official: LocalServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """As in the official SDK, ``project_api_key`` is used when ``api_key`` is set too."""
        monkeypatch.setattr(posthog, "api_key", "phc_some_other_project")
        posthog.capture("keyed", distinct_id="u1")
        module_flush()
        official.wait_for_events(1, timeout=WAIT, event="keyed")
        assert posthog.get_client().api_key == API_KEY

    def test_super_properties_and_before_send(
        self, official: LocalServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``super_properties`` and ``before_send`` set on the module shape the default
        client's events."""

        def before_send(event: dict[str, Any]) -> dict[str, Any] | None:
            if event["event"] == "noise":
                return None
            event["properties"]["checked"] = True
            return event

        monkeypatch.setattr(posthog, "super_properties", {"service": "shop"})
        monkeypatch.setattr(posthog, "before_send", before_send)
        posthog.capture("noise", distinct_id="u1")
        posthog.capture("order_placed", distinct_id="u1")
        module_flush()
        [event] = official.wait_for_events(1, timeout=WAIT, event="order_placed")
        assert event["properties"]["service"] == "shop"
        assert event["properties"]["checked"] is True
        assert official.events(event="noise") == []

    def test_setting_after_first_use(
        self, official: LocalServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A module attribute set after the first event applies to the events after it."""
        posthog.capture("before", distinct_id="u1")
        monkeypatch.setattr(posthog, "super_properties", {"release": "2"})
        posthog.capture("after", distinct_id="u1")
        module_flush()
        official.wait_for_events(2, timeout=WAIT)
        [before] = official.wait_for_events(1, timeout=WAIT, event="before")
        [after] = official.wait_for_events(1, timeout=WAIT, event="after")
        assert "release" not in before["properties"]
        assert after["properties"]["release"] == "2"

    def test_on_error(self, official: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """``posthog.on_error`` hears of a batch the server refused, with its events."""
        failed: list[tuple[Exception, list[dict[str, Any]]]] = []
        monkeypatch.setattr(posthog, "on_error", lambda exc, batch: failed.append((exc, batch)))
        official.inject(Fault(status=400), times=1)
        posthog.capture("refused", distinct_id="u1")
        posthog.flush(timeout_seconds=WAIT)
        wait_until(lambda: failed, WAIT, "on_error to be called")
        [(error, batch)] = failed
        assert isinstance(error, DeliveryError) and error.status == 400
        assert [e["event"] for e in batch] == ["refused"]

    def test_sync_mode(self, official: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
        """With ``posthog.sync_mode = True`` the event is stored when capture() returns."""
        monkeypatch.setattr(posthog, "sync_mode", True)
        posthog.capture("sent_at_once", distinct_id="u1")
        assert [e["event"] for e in official.events(event="sent_at_once")] == ["sent_at_once"]

    def test_send_false_sends_nothing(
        self, official: LocalServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``posthog.send = False`` (the official switch) sends nothing; True again sends."""
        monkeypatch.setattr(posthog, "send", False)
        assert posthog.capture("muted", distinct_id="u1") is None
        monkeypatch.setattr(posthog, "send", True)
        posthog.capture("heard", distinct_id="u1")
        module_flush()
        official.wait_for_events(1, timeout=WAIT, event="heard")
        assert official.events(event="muted") == []

    @pytest.mark.usefixtures("warnings_said_anew")
    def test_unsupported_attributes_warn_once(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A feature flag setting (or another the library does not act on) is said once,
        with what to do instead; setting it back to its default is not news."""
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            monkeypatch.setattr(posthog, "personal_api_key", "phx_1")
            monkeypatch.setattr(posthog, "personal_api_key", "phx_2")
            monkeypatch.setattr(posthog, "poll_interval", 10)
            monkeypatch.setattr(posthog, "privacy_mode", False)  # the default
        [flags] = said(caplog, "personal_api_key")
        assert "feature flags stay with the official SDK" in flags
        assert len(said(caplog, "poll_interval")) == 1
        assert not said(caplog, "privacy_mode")

    def test_every_official_only_option_is_a_module_attribute(self) -> None:
        """Code that reads one of the official SDK's settings finds it (at its default)."""
        missing = [
            name
            for name in OFFICIAL_ONLY_OPTIONS
            if not hasattr(posthog, name)
            and name
            not in {  # options of Posthog(...) only, not module attributes upstream
                "flag_fallback_cache_url",
                "capture_compression",
                "thread",
                "historical_migration",
                "app_host",
                "email_request_timeout_seconds",
                "email_request_max_retries",
                "migrated_from",
            }
        ]
        assert missing == []

    def test_default_client_attribute(self, server: LocalServer) -> None:
        """``posthog.default_client = Posthog(...)`` makes it the module's client."""
        mine = posthog.Posthog(API_KEY, host=server.url, flush_interval=0.05)
        posthog.default_client = mine  # type: ignore[assignment]
        try:
            posthog.capture("via_module", distinct_id="u1")
            one_delivered(mine, server, "via_module")
        finally:
            posthog_logging.default_client.reset()


class TestPosthogClass:
    def test_posthog_is_client(self, server: LocalServer) -> None:
        """``Posthog(project_api_key, host=...)`` is a Client that sends."""
        assert posthog.Posthog is Client
        client = posthog.Posthog(API_KEY, host=server.url, flush_interval=0.05)
        try:
            client.capture("movie_played", distinct_id="u1", properties={"movie_id": "123"})
            event = one_delivered(client, server, "movie_played")
            assert event["properties"]["movie_id"] == "123"
        finally:
            client.shutdown(2)

    def test_project_api_key_keyword(self, server: LocalServer) -> None:
        """``project_api_key=`` is the API key; two different keys are refused."""
        client = Client(project_api_key=API_KEY, host=server.url, flush_interval=0.05)
        try:
            client.capture("keyword_key", distinct_id="u1")
            one_delivered(client, server, "keyword_key")
        finally:
            client.shutdown(2)
        with pytest.raises(ValueError, match="differ"):
            Client(api_key=API_KEY, project_api_key="phc_other", host=server.url)

    @pytest.mark.usefixtures("warnings_said_anew")
    def test_official_options_accepted(
        self, server: LocalServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The official client's options are accepted; one that changes nothing here is
        named in one warning; a misspelt option is still a TypeError."""
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            client = posthog.Posthog(
                API_KEY, host=server.url, is_server=False, log_captured_exceptions=True
            )
            client.shutdown(2)
        assert len(said(caplog, "is_server")) == 1
        assert len(said(caplog, "log_captured_exceptions")) == 1
        with pytest.raises(TypeError, match="flush_intervall"):
            Client(API_KEY, host=server.url, flush_intervall=1)

    def test_client_disable_geoip_false(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """``Posthog(..., disable_geoip=False)`` lets PostHog geolocate every event."""
        client = make_client(disable_geoip=False)
        client.capture("located", distinct_id="u1")
        event = one_delivered(client, server, "located")
        assert event["properties"]["$geoip_disable"] is False


class TestFlushAndJoin:
    def test_client_flush_timeout_seconds(self, client: Client, server: LocalServer) -> None:
        """``client.flush(timeout_seconds=5)`` sends what is queued and says it did."""
        client.capture("flushed", distinct_id="u1")
        assert client.flush(timeout_seconds=5) is True
        server.wait_for_events(1, timeout=WAIT, event="flushed")

    def test_join_in_a_script(self, server: LocalServer) -> None:
        """A script in the official SDK's style that ends with ``posthog.join()`` has
        sent its events by the time it exits; a capture after join() sends nothing."""
        script = textwrap.dedent(
            """
            import os
            import posthog_logging as posthog

            posthog.project_api_key = os.environ["POSTHOG_API_KEY"]
            posthog.host = os.environ["POSTHOG_HOST"]
            for i in range(3):
                posthog.capture("job_step", distinct_id="worker", properties={"i": i})
            posthog.join()
            print(posthog.capture("after_join", distinct_id="worker"))
            """
        )
        env = {**os.environ, "POSTHOG_HOST": server.url, "POSTHOG_API_KEY": API_KEY}
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "None"
        steps = server.events(event="job_step")
        assert sorted(e["properties"]["i"] for e in steps) == [0, 1, 2]
        assert server.events(event="after_join") == []

    def test_module_flush_before_first_use(self) -> None:
        """``posthog.flush(timeout_seconds=5)`` with nothing captured yet just returns."""
        assert posthog.flush(timeout_seconds=5) is True

    def test_both_timeouts_refused(self, client: Client) -> None:
        """``flush(2, timeout_seconds=5)`` is a mistake, said as such."""
        with pytest.raises(TypeError, match="timeout_seconds"):
            client.flush(2, timeout_seconds=5)


class TestCaptureArguments:
    def test_iso_timestamps(self, client: Client, server: LocalServer) -> None:
        """ISO 8601 text is the event's time: ``Z``, an offset, or none (taken as UTC)."""
        client.capture("z", distinct_id="u1", timestamp="2024-01-01T00:00:00Z")
        client.capture("offset", distinct_id="u1", timestamp="2024-01-01T05:30:00+0530")
        client.capture("naive", distinct_id="u1", timestamp="2024-01-01T00:00:00")
        events = delivered(client, server, 3)
        assert {e["event"]: e["timestamp"] for e in events} == {
            "z": "2024-01-01T00:00:00.000000+00:00",
            "offset": "2024-01-01T00:00:00.000000+00:00",
            "naive": "2024-01-01T00:00:00.000000+00:00",
        }

    @pytest.mark.parametrize("text", ["yesterday", "2024-01-01"])
    def test_unparseable_timestamp_is_now(
        self, client: Client, server: LocalServer, caplog: pytest.LogCaptureFixture, text: str
    ) -> None:
        """Text that is not a date and time is replaced by the current time, with a
        warning naming it, as the official SDK does: the event is not lost."""
        started = time.time()
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            client.capture("when", distinct_id="u1", timestamp=text)
        event = one_delivered(client, server, "when")
        sent = dt.datetime.fromisoformat(event["timestamp"]).timestamp()
        assert started - 1 <= sent <= time.time() + 1
        assert said(caplog, repr(text))

    def test_disable_geoip_per_event(self, client: Client, server: LocalServer) -> None:
        """``disable_geoip=False`` lets PostHog geolocate that event; others stay as they
        are (not geolocated: a server's own address says nothing of the user)."""
        client.capture("geo", distinct_id="u1", disable_geoip=False)
        client.capture("no_geo", distinct_id="u1", disable_geoip=True)
        client.capture("default", distinct_id="u1")
        events = {e["event"]: e for e in delivered(client, server, 3)}
        assert events["geo"]["properties"]["$geoip_disable"] is False
        assert events["no_geo"]["properties"]["$geoip_disable"] is True
        assert events["default"]["properties"]["$geoip_disable"] is True

    @pytest.mark.usefixtures("warnings_said_anew")
    def test_feature_flag_arguments_are_ignored(
        self, client: Client, server: LocalServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        """``send_feature_flags=True`` does not break the call: the event is sent, without
        flags, and one warning says flags stay with the official SDK."""
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            client.capture("with_flags", distinct_id="u1", send_feature_flags=True)
            client.capture("with_flags", distinct_id="u1", send_feature_flags=True)
        events = delivered(client, server, 2, event="with_flags")
        assert not any(k.startswith("$feature") for e in events for k in e["properties"])
        [warning] = said(caplog, "send_feature_flags")
        assert "official SDK" in warning

    def test_set_and_set_once_keywords(self, client: Client, server: LocalServer) -> None:
        """``set``/``set_once`` take the official keywords: ``timestamp``, ``uuid``."""
        set_uuid, once_uuid = str(uuid.uuid4()), str(uuid.uuid4())
        client.set(
            distinct_id="u1",
            properties={"name": "Max Hedgehog"},
            timestamp="2024-02-01T12:00:00Z",
            uuid=set_uuid,
        )
        client.set_once(distinct_id="u1", properties={"initial_url": "/blog"}, uuid=once_uuid)
        events = {e["event"]: e for e in delivered(client, server, 2, distinct_id="u1")}
        assert events["$set"]["uuid"] == set_uuid
        assert events["$set"]["timestamp"] == "2024-02-01T12:00:00.000000+00:00"
        assert events["$set"]["properties"]["$set"] == {"name": "Max Hedgehog"}
        assert events["$set_once"]["uuid"] == once_uuid

    def test_capture_exception_keywords(self, client: Client, server: LocalServer) -> None:
        """``capture_exception(e, groups=, timestamp=, uuid=)`` as in the official SDK;
        a ``sys.exc_info()`` tuple is taken too."""
        given = str(uuid.uuid4())
        try:
            raise KeyError("sku_42")
        except KeyError as exc:
            client.capture_exception(
                exc,
                distinct_id="u1",
                groups={"company": "acme"},
                timestamp="2024-03-01T00:00:00Z",
                uuid=given,
            )
        try:
            raise ValueError("bad quantity")
        except ValueError:
            client.capture_exception(sys.exc_info(), distinct_id="u2")
        events = delivered(client, server, 2, event="$exception")
        first = next(e for e in events if e["distinct_id"] == "u1")
        assert first["uuid"] == given
        assert first["timestamp"] == "2024-03-01T00:00:00.000000+00:00"
        assert first["properties"]["$groups"] == {"company": "acme"}
        second = next(e for e in events if e["distinct_id"] == "u2")
        assert second["properties"]["$exception_list"][0]["type"] == "ValueError"


class TestAliasAndGroups:
    def test_alias(self, official: LocalServer) -> None:
        """``posthog.alias(previous_id, distinct_id)`` sends ``$create_alias`` as the
        official SDK does: from the previous id, naming the new one as ``alias``."""
        uid = posthog.alias(previous_id="anon_123", distinct_id="user_123")
        module_flush()
        [event] = official.wait_for_events(1, timeout=WAIT, event="$create_alias")
        assert event["uuid"] == uid
        assert event["distinct_id"] == "anon_123"
        assert event["properties"]["distinct_id"] == "anon_123"
        assert event["properties"]["alias"] == "user_123"

    def test_alias_from_context(self, client: Client, server: LocalServer) -> None:
        """Without ``distinct_id``, the context's is the new id; its session goes along,
        its tags do not."""
        with posthog.new_context():
            posthog.identify_context("user_9")
            posthog.set_context_session("sess_1")
            posthog.tag("page", "/signup")
            client.alias("anon_9")
        event = one_delivered(client, server, "$create_alias")
        assert event["properties"]["alias"] == "user_9"
        assert event["properties"]["$session_id"] == "sess_1"
        assert "page" not in event["properties"]

    def test_alias_without_ids_sends_nothing(self, client: Client, server: LocalServer) -> None:
        """An alias with no new id (none given, no identified context) is not sent."""
        assert client.alias("anon_1") is None
        assert client.alias("", "user_1") is None
        client.capture("marker", distinct_id="u1")
        delivered(client, server, 1, event="marker")
        assert server.events(event="$create_alias") == []
        assert client.stats.dropped.get("no_distinct_id") == 2

    def test_group_identify(self, official: LocalServer) -> None:
        """``posthog.group_identify(type, key, properties)`` sends ``$groupidentify`` with
        ``$group_type``, ``$group_key`` and ``$group_set``, for a person even without an id."""
        posthog.group_identify("company", "company_id_in_your_db", {"name": "Awesome Inc."})
        module_flush()
        [event] = official.wait_for_events(1, timeout=WAIT, event="$groupidentify")
        assert event["properties"]["$group_type"] == "company"
        assert event["properties"]["$group_key"] == "company_id_in_your_db"
        assert event["properties"]["$group_set"] == {"name": "Awesome Inc."}
        assert event["distinct_id"]
        assert "$process_person_profile" not in event["properties"]

    def test_group_identify_in_context(self, client: Client, server: LocalServer) -> None:
        """In an identified context, the group is set by that person."""
        with posthog.new_context():
            posthog.identify_context("user_5")
            client.group_identify("team", 42, disable_geoip=False)
        event = one_delivered(client, server, "$groupidentify")
        assert event["distinct_id"] == "user_5"
        assert event["properties"]["$group_key"] == "42"
        assert event["properties"]["$group_set"] == {}
        assert event["properties"]["$geoip_disable"] is False


class TestFeatureFlags:
    @pytest.mark.parametrize("name", FEATURE_FLAG_METHODS)
    def test_client_methods_raise(self, client: Client, name: str) -> None:
        """Each feature flag method of the official client raises one clear error."""
        with pytest.raises(FeatureFlagsNotSupported, match="official SDK"):
            getattr(client, name)("beta-feature", "u1")

    def test_module_functions_raise(self) -> None:
        """``posthog.feature_enabled(...)`` raises a NotImplementedError that says what to
        do; so do the module's other flag functions."""
        with pytest.raises(NotImplementedError, match="side by side"):
            posthog.feature_enabled("beta-feature", "u1")
        for name in ("get_feature_flag", "get_all_flags", "get_feature_flag_payload"):
            with pytest.raises(FeatureFlagsNotSupported):
                getattr(posthog, name)("beta-feature", "u1")


class TestClientContexts:
    def test_client_bound_context_helpers(self, client: Client, server: LocalServer) -> None:
        """``client.new_context()``, ``client.identify_context()``, ``client.tag()`` and
        ``client.set_context_session()`` are the module's contexts."""
        with client.new_context():
            client.identify_context("user_7")
            client.set_context_session("sess_7")
            client.tag("request_id", "req_7")
            assert client.get_tags() == {"request_id": "req_7"}
            client.capture("in_context")
        event = one_delivered(client, server, "in_context")
        assert event["distinct_id"] == "user_7"
        assert event["properties"]["$session_id"] == "sess_7"
        assert event["properties"]["request_id"] == "req_7"

    def test_client_scoped(self, client: Client, server: LocalServer) -> None:
        """``@client.scoped()`` runs each call in a new context."""

        @client.scoped()
        def handle(user: str) -> None:
            client.identify_context(user)
            client.capture("handled")

        handle("user_a")
        handle("user_b")
        events = delivered(client, server, 2, event="handled")
        assert sorted(e["distinct_id"] for e in events) == ["user_a", "user_b"]
