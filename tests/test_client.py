"""The client: event building, batching, flush, shutdown, bad input (faults: test_delivery)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import posthog_logging
from posthog_logging import Client, new_context
from posthog_logging.ids import uuid7
from posthog_logging.server import Fault, LocalServer

from .conftest import API_KEY
from .helpers import delivered
from .polling import wait_until

REQUEST_THREAD = "posthog_logging.request"

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class TestEventBuilding:
    def test_uuid_is_v7_and_returned(self, client: Client, server: LocalServer) -> None:
        """capture() returns the event's UUIDv7, the one the server stores."""
        uid = client.capture("signed_up", distinct_id="u1")
        assert uid is not None and UUID7.match(uid)
        [event] = delivered(client, server, 1, timeout=10)
        assert event["uuid"] == uid

    def test_uuid7_is_time_ordered(self) -> None:
        """UUIDv7s made later sort later (millisecond resolution)."""
        a = uuid7(1_700_000_000.0)
        b = uuid7(1_700_000_000.002)
        assert a < b and UUID7.match(a)

    def test_given_uuid_and_timestamp_are_kept(self, client: Client, server: LocalServer) -> None:
        """An explicit uuid and timestamp (datetime with offset) are sent as given."""
        when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        uid = "01890a5d-ac96-774b-b9aa-9a1c1e2f3a4b"
        client.capture("imported", distinct_id="u1", timestamp=when, uuid=uid)
        [event] = delivered(client, server, 1, timeout=10)
        assert event["uuid"] == uid
        assert event["timestamp"] == "2024-05-01T10:00:00.000000+00:00"

    def test_timestamp_is_capture_time(self, client: Client, server: LocalServer) -> None:
        """The timestamp is when capture() was called, in UTC."""
        before = time.time()
        client.capture("clicked", distinct_id="u1")
        after = time.time()
        [event] = delivered(client, server, 1, timeout=10)
        sent = dt.datetime.fromisoformat(event["timestamp"]).timestamp()
        assert before - 0.001 <= sent <= after + 0.001
        assert event["timestamp"].endswith("+00:00")

    def test_library_properties(self, client: Client, server: LocalServer) -> None:
        """$lib, $lib_version and the server-side defaults are on every event."""
        client.capture("x", distinct_id="u1")
        props = delivered(client, server, 1, timeout=10)[0]["properties"]
        assert props["$lib"] == "posthog-logging"
        assert props["$lib_version"] == posthog_logging.__version__
        assert props["$geoip_disable"] is True
        assert props["$python_version"]

    def test_precedence(self, make_client: Callable[..., Client], server: LocalServer) -> None:
        """Explicit properties > tags > super properties; the library owns $lib."""
        client = make_client(super_properties={"a": "super", "b": "super", "c": "super"})
        with new_context():
            posthog_logging.identify_context("u1")
            posthog_logging.set_context_session("s-ctx")
            posthog_logging.tag("a", "tag")
            posthog_logging.tag("b", "tag")
            client.capture("x", {"a": "explicit", "$lib": "mine", "$session_id": "s-given"})
        props = delivered(client, server, 1, timeout=10)[0]["properties"]
        assert (props["a"], props["b"], props["c"]) == ("explicit", "tag", "super")
        assert props["$lib"] == "posthog-logging"
        assert props["$session_id"] == "s-given"

    def test_session_and_distinct_id_from_context(
        self, client: Client, server: LocalServer
    ) -> None:
        """A context's identity and session reach the event; explicit distinct_id wins."""
        with new_context():
            posthog_logging.identify_context("ctx-user")
            posthog_logging.set_context_session("sess-1")
            client.capture("a")
            client.capture("b", distinct_id="explicit-user")
        events = {e["event"]: e for e in delivered(client, server, 2, timeout=10)}
        assert events["a"]["distinct_id"] == "ctx-user"
        assert events["a"]["properties"]["$session_id"] == "sess-1"
        assert events["b"]["distinct_id"] == "explicit-user"

    def test_personless(self, client: Client, server: LocalServer) -> None:
        """No distinct_id anywhere: sent with a generated id and no person profile."""
        client.capture("anonymous_thing")
        [event] = delivered(client, server, 1, timeout=10)
        assert event["distinct_id"]
        assert event["properties"]["$process_person_profile"] is False

    def test_groups(self, client: Client, server: LocalServer) -> None:
        """groups= becomes $groups."""
        client.capture("x", distinct_id="u1", groups={"company": "acme"})
        groups = delivered(client, server, 1, timeout=10)[0]["properties"]["$groups"]
        assert groups == {"company": "acme"}

    def test_set_and_set_once(self, client: Client, server: LocalServer) -> None:
        """set()/set_once() send $set/$set_once events for the person."""
        client.set({"plan": "pro"}, distinct_id="u1")
        client.set_once({"first_seen": "2024"}, distinct_id="u1")
        events = {e["event"]: e for e in delivered(client, server, 2, timeout=10)}
        assert events["$set"]["properties"]["$set"] == {"plan": "pro"}
        assert events["$set_once"]["properties"]["$set_once"] == {"first_seen": "2024"}

    def test_set_without_person_is_dropped(self, client: Client) -> None:
        """set() with no distinct_id anywhere is dropped and counted, not raised."""
        assert client.set({"plan": "pro"}) is None
        assert client.stats.dropped["no_distinct_id"] == 1

    def test_properties_snapshot_at_call(self, client: Client, server: LocalServer) -> None:
        """Changing the properties dict after capture() does not change the event."""
        props = {"step": 1}
        client.capture("x", props, distinct_id="u1")
        props["step"] = 2
        assert delivered(client, server, 1, timeout=10)[0]["properties"]["step"] == 1


class TestBadArguments:
    @pytest.mark.parametrize("name", [None, 1, b"x", ["x"]])
    def test_event_name_type(self, client: Client, name: Any) -> None:
        """An event name that is not a str raises TypeError."""
        with pytest.raises(TypeError, match="event must be a non-empty str"):
            client.capture(name)

    def test_empty_event_name(self, client: Client) -> None:
        """An empty event name raises ValueError."""
        with pytest.raises(ValueError, match="non-empty"):
            client.capture("")

    def test_properties_not_mapping(self, client: Client) -> None:
        """Properties that are not a mapping raise TypeError."""
        with pytest.raises(TypeError, match="properties must be a mapping"):
            client.capture("x", ["a", "b"])  # type: ignore[arg-type]

    def test_bad_uuid(self, client: Client) -> None:
        """A uuid that is not a UUID raises ValueError (the server would refuse the batch)."""
        with pytest.raises(ValueError, match="uuid must be a UUID"):
            client.capture("x", distinct_id="u1", uuid="not-a-uuid")

    # (text is parsed as ISO 8601, as the official SDK does: tests/test_migration.py)
    @pytest.mark.parametrize("when", [True, object()])
    def test_bad_timestamp(self, client: Client, when: Any) -> None:
        """A timestamp that is not a datetime or a number raises TypeError."""
        with pytest.raises(TypeError, match="timestamp must be"):
            client.capture("x", distinct_id="u1", timestamp=when)

    @pytest.mark.parametrize(
        ("option", "value"),
        [("flush_at", 0), ("flush_interval", -1), ("max_queue_size", 0), ("max_retries", -1)],
    )
    def test_bad_options(self, option: str, value: Any) -> None:
        """Constructor options out of range raise a ValueError naming the option."""
        with pytest.raises(ValueError, match=option):
            Client(api_key=API_KEY, **{option: value})


class TestBeforeSend:
    def test_modify(self, make_client: Callable[..., Client], server: LocalServer) -> None:
        """before_send sees the final event and its changes are sent."""

        def hook(event: dict[str, Any]) -> dict[str, Any]:
            event["properties"]["added"] = True
            return event

        client = make_client(before_send=hook)
        client.capture("x", distinct_id="u1")
        assert delivered(client, server, 1, timeout=10)[0]["properties"]["added"] is True

    def test_none_drops(self, make_client: Callable[..., Client], server: LocalServer) -> None:
        """before_send returning None drops that event only, counted."""
        client = make_client(before_send=lambda e: None if e["event"] == "drop" else e)
        client.capture("drop", distinct_id="u1")
        client.capture("keep", distinct_id="u1")
        assert [e["event"] for e in delivered(client, server, 1, timeout=10)] == ["keep"]
        assert client.stats.dropped["before_send"] == 1

    def test_raising_drops(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A before_send that raises drops the event, counted and logged; capture does not raise."""

        def hook(event: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("hook bug")

        client = make_client(before_send=hook)
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            assert client.capture("x", distinct_id="u1") is not None
            assert client.flush(5)
        assert client.stats.dropped["before_send_error"] == 1
        assert "hook bug" in caplog.text
        assert server.events() == []

    def test_unusable_result_drops_only_that_event(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """A before_send result the server would refuse is dropped alone; numbers are fixed."""

        def hook(event: dict[str, Any]) -> dict[str, Any]:
            if event["event"] == "bad":
                event["distinct_id"] = {"not": "a string"}
            elif event["event"] == "numeric":
                event["distinct_id"] = 42
            return event

        client = make_client(before_send=hook, flush_at=10)
        for name in ("bad", "numeric", "good"):
            client.capture(name, distinct_id="u1")
        events = {e["event"]: e for e in delivered(client, server, 2, timeout=10)}
        assert set(events) == {"numeric", "good"}
        assert events["numeric"]["distinct_id"] == "42"
        assert client.stats.dropped["before_send_error"] == 1
        assert all(r.status == 200 for r in server.requests)


class TestBatching:
    def test_batches_and_gzip(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """Events go in batches, gzipped, with a User-Agent. At an even pace a batch
        holds flush_at events: the sender wakes when that many are waiting."""
        client = make_client(flush_at=10, flush_interval=30)
        for round_ in range(3):
            for i in range(10):
                client.capture("e", {"i": round_ * 10 + i}, distinct_id="u1")
            server.wait_for_events(10 * (round_ + 1), timeout=10)  # no flush(): flush_at
        events = server.events()
        assert sorted(e["properties"]["i"] for e in events) == list(range(30))
        batches = [r for r in server.requests if r.path.startswith("/batch")]
        assert [r.event_count for r in batches] == [10, 10, 10]
        assert all(r.gzipped for r in batches)
        assert all(r.headers["user-agent"].startswith("posthog-logging/") for r in batches)

    def test_batches_grow_while_events_wait(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """A batch is not cut at flush_at while more events wait to be built or the
        batch before is in flight: a burst, or a slow server, gets a few large requests
        rather than one per flush_at events (each request has a fixed cost)."""
        server.inject(Fault(delay=0.5), times=1)
        client = make_client(flush_at=10)
        for i in range(10):
            client.capture("first", {"i": i}, distinct_id="u1")
        for i in range(1_000):
            client.capture("more", {"i": i}, distinct_id="u1")
        delivered(client, server, 1_010, timeout=10)
        counts = [r.event_count for r in server.requests if r.path.startswith("/batch")]
        assert max(counts) > 10  # grown past flush_at
        assert len(counts) < 1_010 // 10 // 4  # far fewer requests than batches of flush_at
        assert sum(counts) == 1_010

    def test_one_request_thread_for_every_request(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """Requests are made on one thread kept for the purpose (a thread per request
        costs the sender GIL hand-overs under load), which ends with the client."""
        client = make_client(flush_at=5)
        seen: set[int] = set()
        for round_ in range(4):
            for i in range(5):
                client.capture("e", {"round": round_, "i": i}, distinct_id="u1")
            assert client.flush(5)
            seen |= {t.ident or 0 for t in threading.enumerate() if t.name == REQUEST_THREAD}
        assert len(server.wait_for_events(20)) == 20
        assert len(seen) == 1
        client.shutdown(5)
        wait_until(
            lambda: not any(t.name == REQUEST_THREAD for t in threading.enumerate()),
            what="the request thread to end after shutdown",
        )

    def test_one_keep_alive_connection(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """Successive batches reuse one keep-alive connection."""
        client = make_client(flush_at=5)
        for round_ in range(3):
            for i in range(5):
                client.capture("e", {"round": round_, "i": i}, distinct_id="u1")
            assert client.flush(5)
        assert len(server.wait_for_events(15)) == 15
        assert len([r for r in server.requests if r.path.startswith("/batch")]) >= 3
        session = client._sender.transport._session
        assert session is not None
        pools = session.get_adapter(server.url).poolmanager.pools
        keys = pools.keys()  # urllib3 refuses plain iteration of this container
        assert [pools[key].num_connections for key in keys] == [1]

    def test_no_gzip(self, make_client: Callable[..., Client], server: LocalServer) -> None:
        """gzip=False sends plain JSON."""
        client = make_client(gzip=False)
        client.capture("e", distinct_id="u1")
        delivered(client, server, 1, timeout=10)
        assert not any(r.gzipped for r in server.requests)

    def test_flush_interval_sends_without_flush(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """A lone event is sent within flush_interval, no flush() needed."""
        client = make_client(flush_interval=0.05)
        client.capture("lonely", distinct_id="u1")
        assert server.wait_for_events(1, timeout=5)[0]["event"] == "lonely"

    def test_sync_mode(self, make_client: Callable[..., Client], server: LocalServer) -> None:
        """sync_mode sends on the caller's thread: stored when capture() returns."""
        client = make_client(sync_mode=True)
        uid = client.capture("now", distinct_id="u1")
        assert [e["uuid"] for e in server.events()] == [uid]
        assert client.stats.sent == 1

    def test_stats(self, client: Client, server: LocalServer) -> None:
        """stats counts enqueued and sent events."""
        for _ in range(3):
            client.capture("e", distinct_id="u1")
        delivered(client, server, 3, timeout=10)
        stats = client.stats
        assert (stats.enqueued, stats.sent, stats.failed, stats.pending) == (3, 3, 0, 0)


class TestConfiguration:
    def test_no_api_key(self, caplog: pytest.LogCaptureFixture, server: LocalServer) -> None:
        """No key anywhere: one warning, nothing sent, nothing raised."""
        with caplog.at_level(logging.WARNING, logger="posthog_logging"):
            client = Client(host=server.url)
            for _ in range(5):
                assert client.capture("e", distinct_id="u1") is None
        assert client.stats.dropped["no_api_key"] == 5
        warnings = [r for r in caplog.records if "API key" in r.getMessage()]
        assert len(warnings) == 1
        assert server.requests == []
        client.shutdown()

    def test_env(self, monkeypatch: pytest.MonkeyPatch, server: LocalServer) -> None:
        """POSTHOG_API_KEY (or POSTHOG_PROJECT_API_KEY) and POSTHOG_HOST configure a client."""
        monkeypatch.setenv("POSTHOG_PROJECT_API_KEY", API_KEY)
        monkeypatch.setenv("POSTHOG_HOST", server.url)
        client = Client(flush_interval=0.05)
        client.capture("from_env", distinct_id="u1")
        assert delivered(client, server, 1, timeout=10)[0]["event"] == "from_env"
        client.shutdown()

    def test_precedence_of_sources(
        self, monkeypatch: pytest.MonkeyPatch, server: LocalServer
    ) -> None:
        """configure() > module attributes > environment, for the default client."""
        monkeypatch.setenv("POSTHOG_API_KEY", "phc_from_env")
        monkeypatch.setenv("POSTHOG_HOST", "http://127.0.0.1:1")
        posthog_logging.api_key = API_KEY
        posthog_logging.host = server.url
        assert posthog_logging.get_client().api_key == API_KEY
        assert posthog_logging.get_client().host == server.url
        configured = posthog_logging.configure(api_key="phc_configured", host=server.url)
        assert posthog_logging.get_client() is configured

    def test_module_level_api(self, default_client: Client, server: LocalServer) -> None:
        """The module-level functions act on the default client."""
        posthog_logging.capture("module_level", distinct_id="u1")
        assert posthog_logging.flush(5)
        assert server.wait_for_events(1)[0]["event"] == "module_level"

    def test_disabled(self, make_client: Callable[..., Client], server: LocalServer) -> None:
        """disabled=True sends nothing."""
        client = make_client(disabled=True)
        assert client.capture("e", distinct_id="u1") is None
        assert client.flush(1)
        assert server.requests == []

    def test_repr_hides_key(self, client: Client) -> None:
        """The API key is never in repr()."""
        assert API_KEY not in repr(client)
        assert API_KEY not in repr(client._sender.transport)


class TestRefusedByTheLocalServer:
    def test_401_from_local_server(
        self,
        make_client: Callable[..., Client],
        server: LocalServer,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A key the server does not know (here: longer than a project key can be) is
        refused 401: not retried, logged without the key. (A personal key is refused
        earlier, by the client itself: tests/test_configuration_errors.py.)"""
        key = "phc_" + "must_not_leak" * 6
        client = make_client(api_key=key)
        with caplog.at_level(logging.DEBUG, logger="posthog_logging"):
            client.capture("e", distinct_id="u1")
            assert client.flush(5)
        assert [r.status for r in server.requests] == [401]
        assert client.stats.failed == 1 and client.stats.retried == 0
        assert key not in caplog.text


class TestShutdown:
    def test_idempotent_and_drops_after(self, client: Client, server: LocalServer) -> None:
        """shutdown() sends what is pending, can be called twice; later captures are dropped."""
        client.capture("before", distinct_id="u1")
        assert client.shutdown()
        assert client.shutdown()
        assert client.capture("after", distinct_id="u1") is None
        assert client.stats.dropped["shutdown"] == 1
        assert [e["event"] for e in server.events()] == ["before"]

    def test_empty_flush_sends_nothing(self, client: Client, server: LocalServer) -> None:
        """flush() with nothing queued makes no request."""
        assert client.flush(1)
        assert server.requests == []

    def test_exit_hook_flushes(self, server: LocalServer, tmp_path: Any) -> None:
        """A script that never calls shutdown() still delivers at exit."""
        script = tmp_path / "app.py"
        script.write_text(
            textwrap.dedent(
                f"""
                import posthog_logging as posthog
                posthog.api_key = {API_KEY!r}
                posthog.host = {server.url!r}
                for i in range(25):
                    posthog.capture("from_script", {{"i": i}}, distinct_id="u1")
                """
            )
        )
        subprocess.run([sys.executable, str(script)], check=True, timeout=30)
        assert len(server.wait_for_events(25, event="from_script")) == 25


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
class TestFork:
    def test_child_does_not_resend_parent_events(
        self, make_client: Callable[..., Client], server: LocalServer
    ) -> None:
        """A forked child starts with an empty queue and its own sender."""
        client = make_client(host=server.url, flush_interval=10, flush_at=1000)
        client.capture("parent_pending", distinct_id="parent")
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                pending = client.stats.pending
                client.capture("from_child", distinct_id="child")
                ok = client.flush(5)
                code = 0 if pending == 0 and ok else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.flush(5)
        events = server.wait_for_events(2)
        assert sorted(e["event"] for e in events) == ["from_child", "parent_pending"]
