"""Delivery's parts on their own: the rule for how big a batch grows, what each kind
sends and accepts back, and counters any code may bump."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from posthog_logging import Client
from posthog_logging.delivery.batcher import Batcher, record_size
from posthog_logging.delivery.kinds import EVENTS, KINDS, LOGS
from posthog_logging.delivery.stats import Counters
from posthog_logging.testing import CapturedEvents


def record(i: int, pad: int = 0) -> bytes:
    return json.dumps(
        {
            "event": "e",
            "distinct_id": "u",
            "properties": {"pad": "x" * pad},
            "timestamp": "2026-01-01T00:00:00.000000+00:00",
            "uuid": str(uuid.UUID(int=i)),
        }
    ).encode()


class TestBatcher:
    def test_a_batch_fills_at_flush_at(self) -> None:
        batcher = Batcher(flush_at=3, max_queue_bytes=1 << 20)
        sealed = [
            batcher.add(record(i), EVENTS, record_size(record(i)), grow=False) for i in range(7)
        ]
        full = [batch for batch in sealed if batch is not None]
        assert [len(batch) for batch in full] == [3, 3]
        assert [len(batch) for batch in batcher.seal()] == [1]

    def test_it_grows_past_flush_at_while_a_request_is_in_flight(self) -> None:
        batcher = Batcher(flush_at=3, max_queue_bytes=1 << 20)
        for i in range(10):
            assert batcher.add(record(i), EVENTS, record_size(record(i)), grow=True) is None
        assert [len(batch) for batch in batcher.seal_full()] == [10]

    def test_the_byte_limit_is_an_eighth_of_memory_and_the_kinds(self) -> None:
        assert Batcher(100, 32 << 20).limit(EVENTS) == (32 << 20) // 8  # 4 MiB, under 5 MB
        small = Batcher(100, 8000)
        assert small.limit(EVENTS) == 1000 and small.limit(LOGS) == 1000
        assert Batcher(100, 1 << 40).limit(LOGS) == LOGS.max_batch_bytes

    def test_chunking_follows_the_same_rule(self) -> None:
        batcher = Batcher(flush_at=4, max_queue_bytes=8 * 1000)  # batches of 1,000 bytes
        records = [record(i, pad=200) for i in range(10)]
        chunks = batcher.chunk(records, EVENTS)
        assert [r for batch in chunks for r in batch.records] == records
        assert all(batch.size <= 1000 and len(batch) <= 4 for batch in chunks)
        assert all(batch.size == sum(map(record_size, batch.records)) for batch in chunks)

    def test_a_record_that_does_not_fit_seals_the_batch_first(self) -> None:
        batcher = Batcher(flush_at=100, max_queue_bytes=8 * 1000)
        first = record(1, pad=600)
        batcher.add(first, EVENTS, record_size(first), grow=False)
        second = record(2, pad=600)
        assert batcher.must_seal_before(EVENTS, record_size(second))
        assert [batch.records for batch in batcher.seal(EVENTS)] == [[first]]

    def test_halves_keep_the_retry_state(self) -> None:
        batch = Batcher(100, 1 << 20).chunk([record(i) for i in range(5)], EVENTS)[0]
        batch.attempts = 2
        left, right = batch.halves()
        assert (len(left), len(right), left.attempts, right.attempts) == (2, 3, 2, 2)


class TestKinds:
    def test_events_body_carries_the_key_and_the_records(self) -> None:
        body, headers = EVENTS.request([record(1), record(2)], api_key="phc_k", service_name="s")
        data = json.loads(body)
        assert data["api_key"] == "phc_k" and len(data["batch"]) == 2 and "sent_at" in data
        assert headers == {}

    def test_logs_body_is_an_otlp_request_with_the_key_in_a_header(self) -> None:
        line = b'{"timeUnixNano":"1","severityNumber":9,"body":{"stringValue":"x"},"attributes":[]}'
        body, headers = LOGS.request([line], api_key="phc_k", service_name="shop")
        data = json.loads(body)
        resource = data["resourceLogs"][0]["resource"]["attributes"]
        assert {"key": "service.name", "value": {"stringValue": "shop"}} in resource
        assert data["resourceLogs"][0]["scopeLogs"][0]["logRecords"] == [json.loads(line)]
        assert headers == {"Authorization": "Bearer phc_k"} and b"phc_k" not in body

    @pytest.mark.parametrize(
        "line",
        [b"", b"not json", b"[]", b'{"event": ""}', b'{"event": "e", "uuid": "nope"}'],
    )
    def test_an_events_record_is_checked(self, line: bytes) -> None:
        assert not EVENTS.is_record(line)
        assert EVENTS.is_record(record(1))

    def test_each_kind_has_its_own_spool_tag(self) -> None:
        assert len({kind.spool_tag for kind in KINDS}) == len(KINDS)


def test_counters_lose_nothing_across_threads() -> None:
    counters = Counters()

    def bump() -> None:
        for _ in range(20_000):
            counters.add("n")
            counters.add("m", 2)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    reads = [counters.totals() for _ in range(50)]  # reads while they count
    for thread in threads:
        thread.join()
    assert counters.totals() == {"n": 80_000, "m": 160_000}
    assert all(read.get("n", 0) <= 80_000 for read in reads)


def test_a_client_sends_through_the_transport_it_is_given() -> None:
    """An in-memory transport through the supported hook: the same building, batching
    and delivery as over HTTP, and no network."""
    recorder = CapturedEvents()
    client = Client("phc_k", host="http://127.0.0.1:9", transport=recorder)
    try:
        client.capture("e", {"n": 1}, distinct_id="u")
        assert client.flush(5)
        (event,) = recorder.events
        assert (event["event"], event["properties"]["n"]) == ("e", 1)
        assert client.stats.sent == 1
    finally:
        client.shutdown(1)
