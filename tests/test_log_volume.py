"""Log volume under control: per-logger levels, sampling, lines held back until a
context fails, and the service's version and environment on every line.

Everything goes through a real ``PostHogHandler`` to the local server, which stores the
log lines as PostHog Logs would; what was left out is read from the client's counters.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Callable
from typing import Any

import pytest

import posthog_logging
from posthog_logging import Client, PostHogHandler
from posthog_logging.server import LocalServer

from .conftest import API_KEY
from .helpers import unique_name, wait_for_lines

WAIT = 5.0


def bodies(server: LocalServer) -> list[str]:
    """The stored lines' messages, oldest first."""
    return [line["body"] for line in server.store.logs()]


def settle(client: Client, server: LocalServer, n: int) -> list[str]:
    """Flush, wait for ``n`` stored lines (a sentinel among them), return all bodies."""
    assert client.flush(WAIT)
    return [line["body"] for line in wait_for_lines(server, n, timeout=WAIT)]


class TestPerLoggerLevels:
    def test_a_prefix_sets_its_loggers_level_from_dictconfig(
        self, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """``logs_levels`` from ``dictConfig``: a chatty library's lines only from
        WARNING, one module of the application's down to DEBUG, the rest at
        ``logs_level``; the longest prefix decides."""
        name = unique_name("app")
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    "posthog": {
                        "class": "posthog_logging.PostHogHandler",
                        "api_key": API_KEY,
                        "host": server.url,
                        "flush_interval": 0.05,
                        "logs_level": "INFO",
                        "logs_levels": {
                            f"{name}.vendor": "WARNING",
                            f"{name}.vendor.audit": "INFO",
                            f"{name}.payments": "DEBUG",
                        },
                    }
                },
                "loggers": {name: {"level": "DEBUG", "handlers": ["posthog"], "propagate": False}},
            }
        )
        root = logging.getLogger(name)
        (handler,) = root.handlers
        attach(handler, name=name)  # detached and closed afterwards
        assert isinstance(handler, PostHogHandler)

        logging.getLogger(f"{name}.vendor").info("vendor info")
        logging.getLogger(f"{name}.vendor").warning("vendor warning")
        logging.getLogger(f"{name}.vendor.audit").info("audit info")
        logging.getLogger(f"{name}.payments").debug("payments debug")
        logging.getLogger(f"{name}.payments_extra").debug("not a child: no override")
        root.debug("app debug")
        root.info("app info")

        assert sorted(settle(handler.client, server, 4)) == [
            "app info",
            "audit info",
            "payments debug",
            "vendor warning",
        ]

    def test_a_level_that_is_not_one_is_refused(self, client: Client) -> None:
        """A typo in a level is a configuration error naming the logger."""
        with pytest.raises(ValueError, match="noisy"):
            PostHogHandler(client=client, logs_level="INFO", logs_levels={"noisy": "LOUD"})


class TestSampling:
    def test_a_level_sampled_at_zero_sends_none_and_counts_them(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """``logs_sample_rates={"INFO": 0}``: no INFO line is sent, each is counted as
        ``logs_sampled`` without a warning; WARNING lines (their own rate, 1) all are;
        events are not sampled."""
        log = attach(
            PostHogHandler(
                client=client,
                logs_level="INFO",
                logs_sample_rates={"INFO": 0, "WARNING": 1.0},
            )
        )
        for i in range(50):
            log.info("info %d", i)
        log.info("page_viewed", extra={"event": True})
        log.warning("kept")
        log.error("kept too")

        assert sorted(settle(client, server, 2)) == ["kept", "kept too"]
        assert client.stats.dropped["logs_sampled"] == 51  # the event's line too
        assert server.wait_for_events(1, timeout=WAIT, event="page_viewed")

    def test_a_ratio_keeps_about_that_share(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """A ratio of 0.5 keeps about half of 400 lines (between 100 and 300: anything
        outside is a chance under 1e-20), and what was left out is counted. A level with
        no ratio of its own takes the one of the nearest level below it."""
        log = attach(PostHogHandler(client=client, logs_level="DEBUG", logs_sample_rates={10: 0.5}))
        for i in range(200):
            log.debug("line %d", i)
            log.info("line %d", i)
        assert client.flush(WAIT)
        sampled = client.stats.dropped.get("logs_sampled", 0)
        sent = len(wait_for_lines(server, 400 - sampled, timeout=WAIT))
        assert sent + sampled == 400
        assert 100 <= sent <= 300

    @pytest.mark.parametrize("rate", [-0.1, 1.5, "half", True])
    def test_a_ratio_outside_zero_to_one_is_refused(self, client: Client, rate: Any) -> None:
        """A ratio that is not from 0 to 1 is a configuration error."""
        with pytest.raises(ValueError, match="logs_sample_rates"):
            PostHogHandler(client=client, logs_level="INFO", logs_sample_rates={"INFO": rate})


class TestHeldLines:
    @pytest.fixture
    def log(self, client: Client, attach: Callable[..., logging.Logger]) -> logging.Logger:
        """INFO lines are sent; DEBUG lines are held by their context."""
        return attach(
            PostHogHandler(client=client, logs_level="INFO", logs_hold_level="DEBUG"),
            name=unique_name("held"),
        )

    def test_a_context_that_ends_well_sends_no_debug_line(
        self, log: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """Debug lines of a context that ends without an error are not sent, and are
        counted as ``logs_not_kept``."""
        with posthog_logging.new_context():
            log.debug("step one")
            log.debug("step two")
            log.info("done")
        log.info("sentinel")

        assert settle(client, server, 2) == ["done", "sentinel"]
        assert client.stats.dropped["logs_not_kept"] == 2

    def test_a_context_that_fails_sends_its_debug_lines_in_order(
        self, log: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """An exception leaving the context sends the lines it held, oldest first, with
        the context's person."""
        with pytest.raises(RuntimeError), posthog_logging.new_context():
            posthog_logging.identify_context("user_9")
            log.debug("loaded cart")
            log.info("checkout")
            log.debug("charging")
            raise RuntimeError("declined")

        lines = wait_for_lines(server, 3, timeout=WAIT) if client.flush(WAIT) else []
        assert sorted(line["body"] for line in lines) == ["charging", "checkout", "loaded cart"]
        debug = [line for line in lines if line["body"] in ("loaded cart", "charging")]
        assert [line["body"] for line in debug] == ["loaded cart", "charging"]
        assert all(line["distinct_id"] == "user_9" for line in lines)

    def test_an_error_line_releases_the_context(
        self, log: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """An ERROR line sends the lines held before it, and the context's later debug
        lines are sent as they come."""
        with posthog_logging.new_context():
            log.debug("before")
            log.error("payment failed")
            log.debug("after")
        assert settle(client, server, 3) == ["before", "payment failed", "after"]

    def test_nested_contexts_hold_for_the_outermost(
        self, log: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """A nested context's lines are held with its parent's and go with the parent's
        fate: an error after the nested context ended still sends them."""
        with posthog_logging.new_context():
            with posthog_logging.new_context():
                log.debug("inner")
            log.error("outer failed")
        assert settle(client, server, 2) == ["inner", "outer failed"]

    def test_outside_any_context_debug_lines_are_not_sent(
        self, log: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """With no context to hold it, a line below the send level is not sent."""
        log.debug("alone")
        log.info("sentinel")
        assert settle(client, server, 1) == ["sentinel"]

    def test_a_context_holds_at_most_logs_hold_max(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """Past ``logs_hold_max`` the oldest held lines go (counted); the newest are
        sent when the context fails."""
        log = attach(
            PostHogHandler(
                client=client, logs_level="INFO", logs_hold_level="DEBUG", logs_hold_max=3
            )
        )
        with posthog_logging.new_context():
            for i in range(5):
                log.debug("line %d", i)
            log.error("failed")
        assert settle(client, server, 4) == ["line 2", "line 3", "line 4", "failed"]
        assert client.stats.dropped["logs_not_kept"] == 2

    def test_threads_hold_their_own_contexts_lines(
        self, log: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """Two requests on two threads: the one that fails sends its lines, the other's
        are not sent."""
        import threading

        def request(name: str, fail: bool) -> None:
            with posthog_logging.new_context():
                log.debug("%s: working", name)
                if fail:
                    log.error("%s: failed", name)

        threads = [
            threading.Thread(target=request, args=("a", True)),
            threading.Thread(target=request, args=("b", False)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        log.info("sentinel")
        assert sorted(settle(client, server, 3)) == ["a: failed", "a: working", "sentinel"]


class TestResource:
    def test_version_and_environment_from_options(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
    ) -> None:
        """``service_version`` and ``environment`` are on every line's resource, as
        OpenTelemetry names them."""
        client = make_client(service_name="shop", service_version="1.4.2", environment="staging")
        attach(PostHogHandler(client=client, logs_level="INFO")).info("hello")
        [line] = wait_for_lines(server, 1, timeout=WAIT) if client.flush(WAIT) else []
        assert line["resource"]["service.version"] == "1.4.2"
        assert line["resource"]["deployment.environment.name"] == "staging"

    def test_version_and_environment_from_otel_resource_attributes(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without the options, ``$OTEL_RESOURCE_ATTRIBUTES`` says them (the older
        ``deployment.environment`` too, values percent-decoded); an option given wins."""
        monkeypatch.setenv(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.version=2.0%2Bbuild.7, deployment.environment=prod,broken",
        )
        client = make_client()
        other = make_client(environment="canary")
        attach(PostHogHandler(client=client, logs_level="INFO")).info("from env")
        attach(PostHogHandler(client=other, logs_level="INFO")).info("from option")
        assert client.flush(WAIT) and other.flush(WAIT)
        lines = {line["body"]: line["resource"] for line in wait_for_lines(server, 2)}
        assert lines["from env"]["service.version"] == "2.0+build.7"
        assert lines["from env"]["deployment.environment.name"] == "prod"
        assert lines["from option"]["deployment.environment.name"] == "canary"

    def test_none_given_none_sent(
        self,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
        server: LocalServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Neither option nor variable: the resource has no version or environment."""
        monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
        client = make_client()
        attach(PostHogHandler(client=client, logs_level="INFO")).info("plain")
        [line] = wait_for_lines(server, 1, timeout=WAIT) if client.flush(WAIT) else []
        assert "service.version" not in line["resource"]
        assert "deployment.environment.name" not in line["resource"]


class TestStructlog:
    def test_the_processor_takes_the_same_options(
        self, client: Client, server: LocalServer
    ) -> None:
        """``PostHogProcessor`` with per-logger levels and held lines: a library's info
        entries are not sent, a failing context's entries below their level are (the
        library's among them)."""
        import structlog

        from posthog_logging.structlog import PostHogProcessor

        from .test_structlog import configure_json

        configure_json(
            [
                structlog.processors.add_log_level,
                PostHogProcessor(
                    client=client,
                    logs_level="info",
                    logs_levels={"vendor": "warning"},
                    logs_hold_level="debug",
                ),
            ]
        )
        try:
            # The logger's name, as add_logger_name or a bound "logger" key says it.
            app = structlog.get_logger().bind(logger="app")
            vendor = structlog.get_logger().bind(logger="vendor")
            vendor.info("vendor chatter, outside a context")
            with posthog_logging.new_context():
                vendor.info("vendor chatter")
                app.debug("held then sent")
                app.error("it failed")
            vendor.warning("vendor warning")
            assert settle(client, server, 4) == [
                "vendor chatter",
                "held then sent",
                "it failed",
                "vendor warning",
            ]
        finally:
            structlog.reset_defaults()


class TestLoguru:
    def test_the_sink_takes_the_same_options(self, client: Client, server: LocalServer) -> None:
        """``PostHogSink`` with a per-module level and held lines: a library module's
        INFO records are not sent, a failing context's DEBUG records are."""
        from loguru import logger

        from posthog_logging.loguru import PostHogSink

        logger.remove()
        sink_id = logger.add(
            PostHogSink(
                client,
                logs_level="INFO",
                logs_levels={"tests.test_log_volume": "WARNING"},
                logs_hold_level="DEBUG",
            ),
            level="DEBUG",
        )
        try:
            logger.info("not sent: this module is at WARNING")
            with posthog_logging.new_context():
                logger.debug("held then sent")
                logger.error("it failed")
            logger.warning("a warning")
            assert settle(client, server, 3) == ["held then sent", "it failed", "a warning"]
        finally:
            logger.remove(sink_id)
