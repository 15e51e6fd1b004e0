"""Beside the official SDK: its contexts reach our events, exceptions and lines, and our
front-ends send through a ``posthog.Posthog`` client the application already has.

The official ``posthog`` package is real (a test-only dependency); its client sends to
the local server, which accepts what PostHog accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import posthog_logging
from posthog_logging import Client, PostHogHandler
from posthog_logging.server import LocalServer

from .conftest import API_KEY
from .helpers import delivered, one_delivered, wait_for_lines

posthog = pytest.importorskip("posthog")

WAIT = 5.0


@pytest.fixture
def official(server: LocalServer) -> Iterator[Any]:
    """An official client sending to the local server."""
    client = posthog.Posthog(API_KEY, host=server.url, flush_interval=0.05)
    yield client
    client.shutdown()


class TestItsContexts:
    def test_its_identity_session_and_tags_reach_our_events_lines_and_exceptions(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """Inside ``posthog.new_context()`` with ``identify_context``, a session and a
        tag, a marked record, a logged exception and a log line carry them."""
        log = attach(PostHogHandler(client=client, logs_level="INFO"))
        with posthog.new_context(capture_exceptions=False):
            posthog.identify_context("official_user")
            posthog.set_context_session("official_session")
            posthog.tag("plan", "enterprise")
            log.info("page_viewed", extra={"event": True})
            try:
                raise ValueError("declined")
            except ValueError:
                log.exception("payment failed")

        for name in ("page_viewed", "$exception"):
            event = one_delivered(client, server, name)
            assert event["distinct_id"] == "official_user"
            assert event["properties"]["$session_id"] == "official_session"
            assert event["properties"]["plan"] == "enterprise"
        lines = {line["body"]: line for line in wait_for_lines(server, 2, timeout=WAIT)}
        assert lines["page_viewed"]["distinct_id"] == "official_user"
        assert lines["payment failed"]["attributes"]["plan"] == "enterprise"

    def test_ours_win_where_both_say(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """Our context's person and tags win over the official SDK's; its tags that ours
        lack are still there."""
        log = attach(PostHogHandler(client=client))
        with posthog.new_context(capture_exceptions=False):
            posthog.identify_context("theirs")
            posthog.tag("plan", "theirs")
            posthog.tag("region", "eu")
            with posthog_logging.new_context():
                posthog_logging.identify_context("ours")
                posthog_logging.tag("plan", "ours")
                log.info("checkout", extra={"event": True})
        event = one_delivered(client, server, "checkout")
        assert event["distinct_id"] == "ours"
        assert event["properties"]["plan"] == "ours"
        assert event["properties"]["region"] == "eu"

    def test_capture_uses_its_context_too(self, client: Client, server: LocalServer) -> None:
        """``Client.capture()`` inside only the official context is that person's."""
        with posthog.new_context(capture_exceptions=False):
            posthog.identify_context("official_user")
            client.capture("signed_up")
        assert one_delivered(client, server, "signed_up")["distinct_id"] == "official_user"


class TestThroughItsClient:
    def test_events_exceptions_and_lines_through_an_official_client(
        self, official: Any, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """``PostHogHandler(client=posthog.Posthog(...))``: marked records arrive as the
        official client sends them (its ``$lib``), a logged exception with our
        ``$exception_list`` and source, and log lines at the same host."""
        handler = PostHogHandler(client=official, logs_level="INFO")
        log = attach(handler)
        with posthog_logging.new_context():
            posthog_logging.identify_context("u_official")
            log.info("page_viewed", extra={"event": True, "page": "/"})
            try:
                raise KeyError("sku")
            except KeyError:
                log.exception("lookup failed")
        assert handler.client.flush(WAIT)
        official.flush()
        found = {e["event"]: e for e in server.wait_for_events(2, timeout=WAIT)}
        viewed = found["page_viewed"]
        assert viewed["distinct_id"] == "u_official"
        assert viewed["properties"]["page"] == "/"
        assert viewed["properties"]["$lib"] == "posthog-python"
        exception = found["$exception"]
        assert exception["properties"]["$exception_source"] == "python.logging"
        assert exception["properties"]["$exception_list"][0]["type"] == "KeyError"
        lines = wait_for_lines(server, 2, timeout=WAIT)
        assert {line["body"] for line in lines} == {"page_viewed", "lookup failed"}

    def test_its_before_send_applies(
        self, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """The official client's ``before_send`` sees (and may drop) what we send
        through it."""
        seen: list[str] = []

        def drop_secret(event: dict[str, Any]) -> dict[str, Any] | None:
            seen.append(event["event"])
            return None if event["event"] == "secret_event" else event

        official = posthog.Posthog(
            API_KEY, host=server.url, flush_interval=0.05, before_send=drop_secret
        )
        try:
            handler = PostHogHandler(client=official)
            log = attach(handler)
            log.info("secret_event", extra={"event": True})
            log.info("public_event", extra={"event": True})
            assert handler.client.flush(WAIT)
            official.flush()
            [event] = server.wait_for_events(1, timeout=WAIT)
            assert event["event"] == "public_event"
            assert sorted(seen) == ["public_event", "secret_event"]
        finally:
            official.shutdown()

    def test_one_wrapper_per_official_client(self, official: Any) -> None:
        """Two handlers on one official client share the client of ours wrapped
        around it."""
        assert PostHogHandler(client=official).client is PostHogHandler(client=official).client

    def test_structlog_processor_sends_through_it(self, official: Any, server: LocalServer) -> None:
        """``PostHogProcessor(client=posthog.Posthog(...))`` sends marked entries through
        it."""
        import structlog

        from posthog_logging.structlog import PostHogProcessor

        from .test_structlog import configure_json

        processor = PostHogProcessor(client=official)
        configure_json([processor])
        try:
            structlog.get_logger().info("signed_up", capture=True, plan="pro")
            assert processor.client.flush(WAIT)
            official.flush()
            [event] = server.wait_for_events(1, timeout=WAIT, event="signed_up")
            assert event["properties"]["plan"] == "pro"
        finally:
            structlog.reset_defaults()

    def test_anything_else_is_refused(self) -> None:
        """A client that is neither ours nor the official SDK's is a TypeError."""
        with pytest.raises(TypeError, match=r"posthog\.Posthog"):
            PostHogHandler(client=object())


def test_events_sent_without_the_official_package_in_use_are_unchanged(
    client: Client, server: LocalServer
) -> None:
    """Outside any official context, nothing of it is added."""
    client.capture("plain", {"a": 1})
    [event] = delivered(client, server, 1)
    assert event["properties"]["a"] == 1
    assert "plan" not in event["properties"]


def test_its_context_travels_in_the_outgoing_headers() -> None:
    """``context_headers()`` inside only the official SDK's context carries its person
    and session to the next service."""
    with posthog.new_context(capture_exceptions=False):
        posthog.identify_context("official_user")
        posthog.set_context_session("official_session")
        assert posthog_logging.context_headers() == {
            "X-POSTHOG-DISTINCT-ID": "official_user",
            "X-POSTHOG-SESSION-ID": "official_session",
        }


def test_the_loguru_sink_sends_through_it(official: Any, server: LocalServer) -> None:
    """``PostHogSink(posthog.Posthog(...))`` sends marked records through it."""
    from loguru import logger

    from posthog_logging.loguru import PostHogSink

    sink = PostHogSink(official)
    logger.remove()
    sink_id = logger.add(sink, level="INFO")
    try:
        logger.info("signed_up", event=True, plan="pro")
        assert sink.client.flush(WAIT)
        official.flush()
        [event] = server.wait_for_events(1, timeout=WAIT, event="signed_up")
        assert event["properties"]["plan"] == "pro"
    finally:
        logger.remove(sink_id)


def test_an_event_its_capture_refuses_is_left_with_one_warning(
    server: LocalServer,
    attach: Callable[..., logging.Logger],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the official client's ``capture()`` raises for an event, that event is left
    with one warning (once a minute), nothing reaches the caller, and the next events
    still go through it."""

    class Picky(posthog.Posthog):  # type: ignore[misc]
        def capture(self, event: str, **kwargs: Any) -> Any:
            if event == "refused":
                raise ValueError("not this one")
            return super().capture(event, **kwargs)

    official = Picky(API_KEY, host=server.url, flush_interval=0.05)
    caplog.set_level(logging.WARNING, logger="posthog_logging")
    try:
        handler = PostHogHandler(client=official)
        log = attach(handler)
        for _ in range(3):
            log.info("refused", extra={"event": True})
        log.info("accepted", extra={"event": True})
        assert handler.client.flush(WAIT)
        official.flush()
        [event] = server.wait_for_events(1, timeout=WAIT)
        assert event["event"] == "accepted"
        refusals = [r for r in caplog.records if "refused an event" in r.getMessage()]
        assert len(refusals) == 1
        assert "ValueError" in refusals[0].getMessage()
    finally:
        official.shutdown()
