"""Tests for posthog_logging.server: real HTTP on loopback against a LocalServer."""

from __future__ import annotations

import _thread
import gzip
import json
import pathlib
import signal
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from posthog_logging.server import (
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    EventStore,
    LocalServer,
    RequestRecord,
    default_data_dir,
)

KEY = "phc_local_test_key_0123456789"


def make_event(**fields: Any) -> dict[str, Any]:
    """A valid event as a client would send it; keyword arguments override its fields."""
    event: dict[str, Any] = {
        "event": "test event",
        "distinct_id": "user-1",
        "properties": {"$lib": "tests"},
        "timestamp": "2024-05-01T12:00:00.000000+00:00",
        "uuid": str(uuid.uuid4()),
    }
    event.update(fields)
    return event


def batch(*events: dict[str, Any], key: Any = KEY) -> dict[str, Any]:
    """A /batch/ body carrying *events* (one default event when none are given)."""
    return {
        "api_key": key,
        "batch": list(events) or [make_event()],
        "sent_at": "2024-05-01T12:00:01.000000+00:00",
        "historical_migration": False,
    }


def post(
    server: LocalServer,
    body: Any = None,
    *,
    path: str = "/batch/",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    """POST *body* as JSON (or raw *data*) to *server*."""
    if data is None:
        data = json.dumps(body).encode()
    sender = session or requests
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return sender.post(server.url + path, data=data, headers=all_headers, timeout=30)


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[LocalServer]:
    """A running server with its own data directory."""
    with LocalServer(data_dir=tmp_path) as srv:
        yield srv


def assert_rejected(response: requests.Response, status: int, code: str | None = None) -> None:
    """The response is a JSON validation error with *status* that does not quote the key."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert KEY not in response.text
    reply = response.json()
    assert reply["type"] == "validation_error"
    assert isinstance(reply["detail"], str) and reply["detail"]
    if code is not None:
        assert reply["code"] == code


class TestAccepted:
    def test_batch_is_stored_and_listed(self, server: LocalServer) -> None:
        """An accepted batch answers 200 {"status": 1} and its events are listed in order."""
        first = make_event(event="first", properties={"n": 1, "nested": {"a": [1, 2]}})
        second = make_event(event="second", distinct_id="user-2")
        response = post(server, batch(first, second))

        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {"status": 1}
        stored = server.events()
        assert [e["event"] for e in stored] == ["first", "second"]
        assert stored[0]["uuid"] == first["uuid"]
        assert stored[0]["distinct_id"] == "user-1"
        assert stored[0]["timestamp"] == first["timestamp"]
        assert stored[0]["properties"] == {"n": 1, "nested": {"a": [1, 2]}}
        assert isinstance(stored[0]["received_at"], float)
        assert abs(stored[0]["received_at"] - time.time()) < 60

    @pytest.mark.parametrize(
        "path", ["/batch", "/batch/", "/capture/", "/e", "/track/", "/i/v0/e/"]
    )
    def test_every_capture_route_accepts_a_batch(self, server: LocalServer, path: str) -> None:
        """Each capture route accepts a batch, with or without its trailing slash."""
        assert post(server, batch(), path=path).status_code == 200
        assert server.store.count() == 1

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(make_event(token=KEY), id="single-token"),
            pytest.param(make_event(api_key=KEY), id="single-api_key"),
            pytest.param(make_event(properties={"token": KEY}), id="single-properties-token"),
            pytest.param([make_event(token=KEY), make_event(token=KEY)], id="list"),
            pytest.param({"token": KEY, "batch": [make_event()]}, id="batch-token"),
            pytest.param({"batch": [make_event(token=KEY)]}, id="batch-event-token"),
        ],
    )
    @pytest.mark.parametrize("path", ["/capture/", "/e/", "/i/v0/e/", "/engage/"])
    def test_single_event_shapes_with_token(
        self, server: LocalServer, body: Any, path: str
    ) -> None:
        """A single event, a list of events, or a batch may carry the key as `token`."""
        assert post(server, body, path=path).status_code == 200
        count = len(body) if isinstance(body, list) else 1
        assert len(server.events()) == count

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"distinct_id": 42}, "42"),
            ({"distinct_id": 4.5}, "4.5"),
            ({"distinct_id": None, "$distinct_id": "dollar"}, "dollar"),
            ({"distinct_id": None, "properties": {"distinct_id": "in-props"}}, "in-props"),
        ],
    )
    def test_distinct_id_sources(
        self, server: LocalServer, fields: dict[str, Any], expected: str
    ) -> None:
        """distinct_id is read at top level, as `$distinct_id` or in properties; numbers as text."""
        assert post(server, batch(make_event(**fields))).status_code == 200
        assert server.events()[0]["distinct_id"] == expected

    def test_event_without_uuid_gets_one(self, server: LocalServer) -> None:
        """An event without a uuid (or with an empty one) is stored under a generated uuid."""
        event = make_event()
        del event["uuid"]
        assert post(server, batch(event, make_event(uuid=""))).status_code == 200
        stored = server.events()
        assert len(stored) == 2
        assert all(uuid.UUID(e["uuid"]) for e in stored)

    def test_uuid_is_stored_in_canonical_form(self, server: LocalServer) -> None:
        """An upper-case or unhyphenated uuid is accepted and stored lower-case with hyphens."""
        value = uuid.uuid4()
        assert post(server, batch(make_event(uuid=value.hex.upper()))).status_code == 200
        assert server.events()[0]["uuid"] == str(value)

    def test_missing_timestamp_is_stored_as_none(self, server: LocalServer) -> None:
        """An event without a timestamp is accepted and stored with timestamp None."""
        event = make_event()
        del event["timestamp"]
        assert post(server, batch(event)).status_code == 200
        assert server.events()[0]["timestamp"] is None

    def test_top_level_person_updates_join_properties(self, server: LocalServer) -> None:
        """Top-level `$set` and `$set_once` are kept in the stored properties."""
        event = make_event(**{"$set": {"plan": "pro"}, "$set_once": {"first": "x"}})
        assert post(server, batch(event)).status_code == 200
        properties = server.events()[0]["properties"]
        assert properties["$set"] == {"plan": "pro"}
        assert properties["$set_once"] == {"first": "x"}

    def test_api_key_is_never_stored(self, tmp_path: pathlib.Path) -> None:
        """No file in the data directory contains the API key, whichever way it was sent."""
        with LocalServer(data_dir=tmp_path) as srv:
            assert post(srv, batch()).status_code == 200
            assert post(srv, make_event(properties={"token": KEY}), path="/e/").status_code == 200
            assert post(srv, [make_event(api_key=KEY)], path="/e/").status_code == 200
            assert srv.store.count() == 3
            assert all("token" not in e["properties"] for e in srv.events())
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert files
        for path in files:
            assert KEY.encode() not in path.read_bytes(), path


class TestGzip:
    def test_gzip_by_header(self, server: LocalServer) -> None:
        """A gzipped body with `Content-Encoding: gzip` is accepted."""
        data = gzip.compress(json.dumps(batch()).encode())
        response = post(server, data=data, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 200
        assert server.store.count() == 1
        assert server.requests[-1].gzipped

    def test_gzip_by_magic_bytes(self, server: LocalServer) -> None:
        """A gzipped body without the header is recognised by gzip's magic bytes."""
        response = post(server, data=gzip.compress(json.dumps(batch()).encode()))
        assert response.status_code == 200
        assert server.store.count() == 1
        assert server.requests[-1].gzipped

    def test_corrupt_gzip_is_400(self, server: LocalServer) -> None:
        """A truncated gzip body is answered 400."""
        data = gzip.compress(json.dumps(batch()).encode())[:-10]
        assert_rejected(post(server, data=data), 400)

    def test_gzip_header_on_plain_body_is_400(self, server: LocalServer) -> None:
        """`Content-Encoding: gzip` on a body that is not gzip is answered 400."""
        data = json.dumps(batch()).encode()
        assert_rejected(post(server, data=data, headers={"Content-Encoding": "gzip"}), 400)


def _without(field: str) -> dict[str, Any]:
    event = make_event()
    del event[field]
    return event


class TestBadRequest:
    @pytest.mark.parametrize(
        "data",
        [
            pytest.param(b"", id="empty-body"),
            pytest.param(b"{not json", id="not-json"),
            pytest.param(b"\xff\xfe{}", id="not-utf8"),
            pytest.param(b'"a string"', id="json-scalar"),
            pytest.param(b'{"api_key": "%s", "batch": {}}' % KEY.encode(), id="batch-not-list"),
            pytest.param(
                b'{"api_key": "%s", "batch": [{"event": "e", "distinct_id": "d", "v": NaN}]}'
                % KEY.encode(),
                id="nan",
            ),
        ],
    )
    def test_undecodable_body_is_400(self, server: LocalServer, data: bytes) -> None:
        """A body that is empty, not UTF-8 JSON, or of no known shape is answered 400."""
        assert_rejected(post(server, data=data), 400, "invalid_payload")

    def test_empty_batch_is_400(self, server: LocalServer) -> None:
        """A batch with no events is answered 400."""
        assert_rejected(post(server, {"api_key": KEY, "batch": []}), 400)

    @pytest.mark.parametrize(
        "event",
        [
            pytest.param("not an object", id="event-not-object"),
            pytest.param(_without("event"), id="no-event-name"),
            pytest.param(make_event(event=""), id="empty-event-name"),
            pytest.param(make_event(event=7), id="event-name-not-string"),
            pytest.param(_without("distinct_id"), id="no-distinct-id"),
            pytest.param(make_event(distinct_id=""), id="empty-distinct-id"),
            pytest.param(make_event(distinct_id=None), id="null-distinct-id"),
            pytest.param(make_event(properties=["a"]), id="properties-not-object"),
            pytest.param(make_event(properties=None), id="properties-null"),
            pytest.param(make_event(uuid="not-a-uuid"), id="bad-uuid"),
            pytest.param(make_event(uuid=123), id="uuid-not-string"),
            pytest.param(make_event(timestamp=1714564800), id="timestamp-not-string"),
        ],
    )
    def test_bad_event_is_400_for_the_whole_request(self, server: LocalServer, event: Any) -> None:
        """One invalid event sinks the whole request: 400 and nothing stored."""
        response = post(server, batch(make_event(), event, make_event()))
        assert_rejected(response, 400, "invalid_payload")
        assert "event 1" in response.json()["detail"]
        assert server.store.count() == 0

    def test_lone_surrogate_is_400(self, server: LocalServer) -> None:
        """A string holding a lone surrogate escape is not valid Unicode: 400."""
        data = json.dumps(batch(make_event(properties={"x": "\ud800"}))).encode()
        assert_rejected(post(server, data=data), 400)

    def test_number_out_of_range_is_400(self, server: LocalServer) -> None:
        """1e400 is no number JSON can carry (it would be read as infinity): 400."""
        event = b'{"event": "e", "distinct_id": "u", "properties": {"n": 1e400}}'
        data = b'{"api_key": "phc_x", "batch": [' + event + b"]}"
        assert_rejected(post(server, data=data), 400, "invalid_payload")
        assert server.store.count() == 0

    def test_many_events_over_1_mb_together_are_accepted(self, server: LocalServer) -> None:
        """The 1 MB limit is per event: 5,000 events making a 2 MB body are all stored,
        non-ASCII text as it was sent."""
        events = [make_event(properties={"i": i, "text": "é" * 200}) for i in range(5_000)]
        assert len(json.dumps(batch(*events)).encode()) > 2 * MAX_EVENT_BYTES
        assert post(server, batch(*events)).status_code == 200
        assert server.store.count() == 5_000
        assert server.events(limit=1)[0]["properties"]["text"] == "é" * 200

    def test_different_keys_in_one_request_is_400(self, server: LocalServer) -> None:
        """Events of one request that carry different keys are answered 400."""
        body = [make_event(token=KEY), make_event(token=KEY + "x")]
        assert_rejected(post(server, body, path="/e/"), 400)


class TestUnauthorized:
    @pytest.mark.parametrize(
        ("body", "code"),
        [
            pytest.param({"batch": [make_event()]}, "missing_api_key", id="no-key"),
            pytest.param(make_event(), "missing_api_key", id="single-event-no-key"),
            pytest.param(batch(key=""), "invalid_api_key", id="empty"),
            pytest.param(batch(key="phc_" + "a" * 61), "invalid_api_key", id="65-chars"),
            pytest.param(batch(key="phc_clé"), "invalid_api_key", id="non-ascii"),
            pytest.param(batch(key="phc_a\0b"), "invalid_api_key", id="nul-byte"),
            pytest.param(batch(key="phx_personal_key"), "invalid_api_key", id="personal-key"),
            pytest.param(batch(key=12345), "invalid_api_key", id="not-a-string"),
        ],
    )
    def test_bad_key_is_401(self, server: LocalServer, body: Any, code: str) -> None:
        """A missing, empty, too long, non-ASCII, NUL, personal or non-string key is 401."""
        assert_rejected(post(server, body), 401, code)
        assert server.store.count() == 0

    def test_key_is_not_echoed(self, server: LocalServer) -> None:
        """A rejected key appears nowhere in the answer."""
        key = "phx_" + "secret" * 5
        response = post(server, batch(key=key))
        assert response.status_code == 401
        assert key not in response.text
        assert key not in str(response.headers)

    def test_64_character_key_is_accepted(self, server: LocalServer) -> None:
        """A key of exactly 64 characters is accepted."""
        assert post(server, batch(key="phc_" + "a" * 60)).status_code == 200

    def test_key_is_checked_before_events(self, server: LocalServer) -> None:
        """A request with both a bad key and a bad event is answered 401."""
        assert post(server, batch(make_event(event=""), key="")).status_code == 401


class TestTooLarge:
    def test_body_over_20_mb_is_413(self, server: LocalServer) -> None:
        """A body over 20 MB is answered 413 and the connection stays usable."""
        with requests.Session() as session:
            big = b'{"api_key": "%s", "batch": []}' % KEY.encode() + b" " * MAX_BODY_BYTES
            assert_rejected(post(server, data=big, session=session), 413, "payload_too_large")
            assert post(server, batch(), session=session).status_code == 200
        assert server.requests[0].body_size == len(big)
        assert server.store.count() == 1

    def test_body_over_20_mb_once_gunzipped_is_413(self, server: LocalServer) -> None:
        """A small gzip body that expands past 20 MB is answered 413."""
        event = make_event(properties={"padding": "x" * MAX_BODY_BYTES})
        data = gzip.compress(json.dumps(batch(event)).encode())
        assert len(data) < MAX_BODY_BYTES // 100
        assert_rejected(post(server, data=data), 413, "payload_too_large")

    def test_event_over_1_mb_is_413(self, server: LocalServer) -> None:
        """One event over 1 MB sinks its request with 413 and nothing is stored."""
        big = make_event(properties={"padding": "x" * MAX_EVENT_BYTES})
        assert_rejected(post(server, batch(make_event(), big)), 413, "event_too_large")
        assert server.store.count() == 0

    def test_event_of_exactly_1_mb_is_accepted(self, server: LocalServer) -> None:
        """An event whose compact JSON is exactly 1 MB is accepted."""
        event = make_event(properties={"padding": ""})
        size = len(json.dumps(event, separators=(",", ":")).encode())
        event["properties"]["padding"] = "x" * (MAX_EVENT_BYTES - size)
        assert post(server, batch(event)).status_code == 200


class TestDedup:
    def test_same_batch_twice_is_stored_once(self, server: LocalServer) -> None:
        """Resending a batch (a retry) answers 200 and stores each uuid once."""
        body = batch(make_event(), make_event())
        assert post(server, body).status_code == 200
        assert post(server, body).status_code == 200
        assert server.store.count() == 2

    def test_store_add_counts_new_events(self, tmp_path: pathlib.Path) -> None:
        """EventStore.add returns how many events were new."""
        store = EventStore(tmp_path)
        try:
            event = {"uuid": str(uuid.uuid4()), "event": "e", "distinct_id": "d"}
            assert store.add([event, {"event": "e", "distinct_id": "d"}]) == 2
            assert store.add([event]) == 0
            assert store.count() == 2
        finally:
            store.close()


class TestRouting:
    def test_unknown_path_is_404(self, server: LocalServer) -> None:
        """A POST to a path that is not a capture route is answered 404."""
        assert_rejected(post(server, batch(), path="/api/event/"), 404, "not_found")
        assert server.store.count() == 0

    def test_get_on_capture_route_is_405(self, server: LocalServer) -> None:
        """A GET on a capture route is answered 405 with `Allow: POST`."""
        response = requests.get(server.url + "/batch/", timeout=10)
        assert_rejected(response, 405, "method_not_allowed")
        assert response.headers["Allow"] == "POST"

    @pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
    def test_other_methods_on_capture_route_are_405(self, server: LocalServer, method: str) -> None:
        """PUT, PATCH and DELETE on a capture route are answered 405."""
        response = requests.request(method, server.url + "/e/", data=b"{}", timeout=10)
        assert response.status_code == 405

    def test_get_root_is_the_web_view(self, server: LocalServer) -> None:
        """GET / answers the web view's page, with a policy that allows only its own scripts."""
        response = requests.get(server.url + "/", timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/html")
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "posthog-logging" in response.text
        assert server.requests == []  # the view's requests are not recorded

    def test_get_unknown_path_is_404(self, server: LocalServer) -> None:
        """A GET on an unknown path is answered 404."""
        assert requests.get(server.url + "/nothing", timeout=10).status_code == 404

    def test_missing_content_length_is_411(self, server: LocalServer) -> None:
        """A chunked body without Content-Length is answered 411 and the connection closed."""
        chunks = iter([json.dumps(batch()).encode()])
        response = requests.post(server.url + "/batch/", data=chunks, timeout=10)
        assert response.status_code == 411
        assert response.headers["Connection"] == "close"
        assert server.store.count() == 0


class TestKeepAlive:
    def test_one_connection_serves_many_requests(self, server: LocalServer) -> None:
        """A requests.Session sends many requests, errors included, over one connection."""
        with requests.Session() as session:
            statuses = [
                post(server, batch(), session=session).status_code,
                post(server, data=b"{bad", session=session).status_code,
                post(server, batch(key=""), session=session).status_code,
                session.get(server.url + "/batch/", timeout=10).status_code,
                post(server, batch(), path="/nope/", session=session).status_code,
                post(
                    server, data=gzip.compress(json.dumps(batch()).encode()), session=session
                ).status_code,
            ]
            adapter = session.get_adapter(server.url)
            assert isinstance(adapter, requests.adapters.HTTPAdapter)
            pools = adapter.poolmanager.pools
            # urllib3's pool container refuses plain iteration, hence keys().
            assert [pools[key].num_connections for key in pools.keys()] == [1]  # noqa: SIM118
        assert statuses == [200, 400, 401, 405, 404, 200]
        assert [r.status for r in server.requests] == statuses
        assert server.store.count() == 2


class TestRequestRecords:
    def test_request_is_recorded(self, server: LocalServer) -> None:
        """Each answered request is recorded with method, path, status, headers and sizes."""
        data = gzip.compress(json.dumps(batch(make_event(), make_event())).encode())
        post(server, data=data, path="/batch/?ver=1.0", headers={"X-Custom": "yes"})
        [record] = server.requests
        assert isinstance(record, RequestRecord)
        assert (record.method, record.path, record.status) == ("POST", "/batch/", 200)
        assert record.headers["x-custom"] == "yes"
        assert record.headers["content-type"] == "application/json"
        assert record.body_size == len(data)
        assert record.gzipped is True
        assert record.event_count == 2

    def test_rejected_request_counts_its_events(self, server: LocalServer) -> None:
        """A rejected but decodable request records how many events it carried."""
        post(server, batch(make_event(), make_event(), key=""))
        [record] = server.requests
        assert (record.status, record.event_count, record.gzipped) == (401, 2, False)

    def test_credentials_in_headers_are_redacted(self, server: LocalServer) -> None:
        """An Authorization header is recorded redacted."""
        post(server, batch(), headers={"Authorization": f"Bearer {KEY}"})
        assert KEY not in repr(server.requests)
        assert server.requests[0].headers["authorization"] == "[redacted]"

    def test_records_are_bounded(self, server: LocalServer) -> None:
        """Only the last 1000 requests are kept."""
        with requests.Session() as session:
            for _ in range(1000):
                session.get(server.url + "/nothing", timeout=10)
            session.get(server.url + "/last", timeout=10)
        records = server.requests
        assert len(records) == 1000
        assert records[-1].path == "/last"

    def test_clear_empties_store_and_records(self, server: LocalServer) -> None:
        """clear() forgets stored events and recorded requests."""
        post(server, batch())
        server.clear()
        assert server.requests == []
        assert server.events() == []


class TestWaitForEvents:
    def test_returns_once_enough_events_arrive(self, server: LocalServer) -> None:
        """wait_for_events returns the matching events once enough have arrived."""
        body = batch(make_event(event="wanted"), make_event(event="other"))
        sender = threading.Thread(target=post, args=(server, body))
        sender.start()
        found = server.wait_for_events(1, timeout=10, event="wanted")
        sender.join()
        assert [e["event"] for e in found] == ["wanted"]

    def test_times_out_with_a_helpful_message(self, server: LocalServer) -> None:
        """wait_for_events raises TimeoutError saying how many events arrived."""
        post(server, batch(make_event(event="wanted")))
        post(server, batch(key=""))
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"1 arrived.*1 x 200, 1 x 401"):
            server.wait_for_events(2, timeout=0.2, event="wanted")
        assert time.monotonic() - started < 5


class TestEventStore:
    @pytest.fixture
    def store(self, tmp_path: pathlib.Path) -> Iterator[EventStore]:
        """A store holding events a..e from two distinct ids."""
        store = EventStore(tmp_path)
        store.add(
            [
                {"event": name, "distinct_id": "even" if i % 2 == 0 else "odd"}
                for i, name in enumerate("abcde")
            ]
        )
        yield store
        store.close()

    def test_limit_keeps_the_newest_oldest_first(self, store: EventStore) -> None:
        """events(limit=n) returns the newest n events, oldest first."""
        assert [e["event"] for e in store.events()] == list("abcde")
        assert [e["event"] for e in store.events(limit=2)] == ["d", "e"]
        assert store.events(limit=0) == []

    def test_filters(self, store: EventStore) -> None:
        """events() filters on event name, distinct_id and received time."""
        assert [e["event"] for e in store.events(distinct_id="even")] == ["a", "c", "e"]
        assert [e["event"] for e in store.events(event="b")] == ["b"]
        assert [e["event"] for e in store.events(1, distinct_id="odd")] == ["d"]
        assert store.events(event="b", distinct_id="even") == []
        assert store.events(since=time.time() + 60) == []
        assert len(store.events(since=0.0)) == 5

    def test_negative_limit_is_an_error(self, store: EventStore) -> None:
        """A negative limit raises ValueError."""
        with pytest.raises(ValueError, match="limit"):
            store.events(limit=-1)

    def test_clear_and_count(self, store: EventStore) -> None:
        """count() counts the stored events and clear() deletes them."""
        assert store.count() == 5
        store.clear()
        assert store.count() == 0

    def test_data_dir_is_created_private(self, tmp_path: pathlib.Path) -> None:
        """A missing data directory is created with mode 0700."""
        directory = tmp_path / "nested" / "data"
        store = EventStore(directory)
        store.close()
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert (directory / "events.sqlite3").is_file()

    def test_store_survives_a_server_restart(self, tmp_path: pathlib.Path) -> None:
        """Events stored by one server are listed by the next one on the same data dir."""
        body = batch(make_event(event="before"))
        with LocalServer(data_dir=tmp_path) as first:
            assert post(first, body).status_code == 200
        with LocalServer(data_dir=tmp_path) as second:
            assert post(second, body).status_code == 200  # a retry after the restart
            assert post(second, batch(make_event(event="after"))).status_code == 200
            assert [e["event"] for e in second.events()] == ["before", "after"]


class TestDefaultDataDir:
    @pytest.fixture(autouse=True)
    def clean_env(self, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
        """Start each test without the variables and with HOME in tmp_path."""
        monkeypatch.delenv("POSTHOG_LOGGING_DATA_DIR", raising=False)
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def test_explicit_variable_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """$POSTHOG_LOGGING_DATA_DIR is used as is, even when $XDG_DATA_HOME is set."""
        monkeypatch.setenv("POSTHOG_LOGGING_DATA_DIR", "/srv/phl")
        monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
        assert default_data_dir() == pathlib.Path("/srv/phl")

    def test_xdg_data_home(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the explicit variable, $XDG_DATA_HOME/posthog-logging is used."""
        monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
        assert default_data_dir() == pathlib.Path("/xdg/posthog-logging")

    def test_home_fallback(self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without either variable (or with empty ones), ~/.local/share/posthog-logging is used."""
        monkeypatch.setenv("XDG_DATA_HOME", "")
        expected = tmp_path / "home" / ".local" / "share" / "posthog-logging"
        assert default_data_dir() == expected

    def test_store_uses_it(self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """An EventStore without a data dir opens its file in default_data_dir()."""
        monkeypatch.setenv("POSTHOG_LOGGING_DATA_DIR", str(tmp_path / "phl"))
        store = EventStore()
        store.close()
        assert store.path == tmp_path / "phl" / "events.sqlite3"


class TestLifecycle:
    def test_url_host_and_port(self, server: LocalServer) -> None:
        """url is built from the bound host and the port picked for port=0."""
        assert server.host == "127.0.0.1"
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"

    def test_stop_closes_the_socket_and_is_idempotent(self, tmp_path: pathlib.Path) -> None:
        """After stop() (called twice) nothing listens on the port any more."""
        srv = LocalServer(data_dir=tmp_path).start()
        port = srv.port
        srv.stop()
        srv.stop()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass

    def test_stop_closes_idle_keep_alive_connections(self, tmp_path: pathlib.Path) -> None:
        """stop() also closes connections a client keeps open, so nothing is served after it."""
        with requests.Session() as session:
            with LocalServer(data_dir=tmp_path) as srv:
                assert post(srv, batch(), session=session).status_code == 200
            with pytest.raises(requests.ConnectionError):
                post(srv, batch(), session=session)

    def test_serve_forever_in_foreground(self, tmp_path: pathlib.Path) -> None:
        """serve_forever() serves in its thread until stop() is called from another."""
        srv = LocalServer(data_dir=tmp_path)
        runner = threading.Thread(target=srv.serve_forever)
        runner.start()
        try:
            assert post(srv, batch()).status_code == 200
        finally:
            srv.stop()
            runner.join(timeout=10)
        assert not runner.is_alive()

    def test_ctrl_c_stops_serve_forever_cleanly(self, tmp_path: pathlib.Path) -> None:
        """Ctrl-C (KeyboardInterrupt) ends serve_forever() without an error and stops the server."""
        srv = LocalServer(data_dir=tmp_path)
        statuses: list[int] = []

        def client() -> None:
            try:  # this thread may run before serve_forever() listens: try until it does
                deadline = time.monotonic() + 10
                while not statuses:
                    try:
                        statuses.append(post(srv, batch()).status_code)
                    except requests.ConnectionError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.01)
            finally:
                _thread.interrupt_main()  # what Ctrl-C does, once a request was served

        # Ctrl-C must raise KeyboardInterrupt even when this run was started in the
        # background, where the shell has SIGINT ignored.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            threading.Thread(target=client).start()
            srv.serve_forever()
        finally:
            signal.signal(signal.SIGINT, previous)
        assert statuses == [200]
        with pytest.raises(requests.ConnectionError):
            post(srv, batch())

    def test_given_store_stays_open(self, tmp_path: pathlib.Path) -> None:
        """A store passed in is used and left open when the server stops."""
        store = EventStore(tmp_path)
        with LocalServer(store=store) as srv:
            assert srv.store is store
            post(srv, batch())
        assert store.count() == 1
        store.close()

    def test_stopped_server_cannot_restart(self, tmp_path: pathlib.Path) -> None:
        """start() after stop() raises RuntimeError."""
        srv = LocalServer(data_dir=tmp_path)
        srv.stop()
        with pytest.raises(RuntimeError):
            srv.start()

    @pytest.mark.parametrize(
        "kwargs",
        [{"data_dir": "x", "store": "store"}, {"port": -1}, {"port": 70000}],
    )
    def test_bad_arguments(self, tmp_path: pathlib.Path, kwargs: dict[str, Any]) -> None:
        """Conflicting or out-of-range arguments raise ValueError."""
        if kwargs.get("store") == "store":
            kwargs["store"] = EventStore(tmp_path)
        try:
            with pytest.raises(ValueError):
                LocalServer(**kwargs)
        finally:
            if isinstance(kwargs.get("store"), EventStore):
                kwargs["store"].close()


class TestLogging:
    def test_quiet_server_logs_nothing(
        self, server: LocalServer, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The default quiet server writes nothing to stderr."""
        post(server, batch())
        assert capsys.readouterr().err == ""

    def test_loud_server_logs_one_line_without_the_key(
        self, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With quiet=False each request is logged as one line that does not hold the key."""
        with LocalServer(data_dir=tmp_path, quiet=False) as srv:
            post(srv, batch(), path=f"/batch/?token={KEY}")
            post(srv, batch(key=""))
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 2
        assert '"POST /batch/" 200' in lines[0]
        assert '"POST /batch/" 401' in lines[1]
        assert all(KEY not in line for line in lines)
