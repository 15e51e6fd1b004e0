"""Errors logged without an exception: ``log.error("payment failed for order %s", 1)``.

With ``capture_errors_without_exception`` (on by default) an unmarked record or structlog
entry at or above ``exception_level`` that carries no exception becomes an ``$exception``
event of the library's making: its message template is the type, the formatted message
the value, the line that logged it the one frame, and ``$exception_fingerprint`` groups
every call of one template in one logger into one group, whatever the arguments.

Everything here goes end to end through the local server. "Nothing was sent" is checked
by logging a marked sentinel after the records under test and looking at what arrived
before it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import logging.config
import logging.handlers
import queue
import re
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import structlog
from structlog.typing import Processor

import posthog_logging
from posthog_logging import Client, ContextFilter, PostHogHandler
from posthog_logging.server import LocalServer
from posthog_logging.structlog import PostHogProcessor

from .conftest import API_KEY
from .helpers import Event, delivered, unique_name, wait_for_lines
from .test_structlog import configure_json

FINGERPRINT = re.compile(r"[0-9a-f]{32}")
SYNTHETIC_MECHANISM = {"type": "logger", "handled": True, "synthetic": True, "exception_id": 0}


# -- shared set-up ----------------------------------------------------------------------


def next_line() -> int:
    """The number of the line after the caller's: where its next statement logs."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno + 1


def events_before_sentinel(log: logging.Logger, client: Client, server: LocalServer) -> list[Event]:
    """Log a marked sentinel record, wait for it, return every other stored event."""
    log.info("sentinel", extra={"event": True})
    delivered(client, server, 1, event="sentinel")
    return [e for e in server.events() if e["event"] != "sentinel"]


def exceptions_delivered(client: Client, server: LocalServer, n: int) -> list[Event]:
    """Flush, wait for ``n`` ``$exception`` events and return them (exactly ``n``)."""
    found = delivered(client, server, n, event="$exception")
    assert len(found) == n, [e["properties"].get("log_message") for e in found]
    return found


def synthetic(event: Event) -> dict[str, Any]:
    """The one exception of a synthetic ``$exception`` event, checked to be one."""
    assert event["event"] == "$exception"
    entries: list[dict[str, Any]] = event["properties"]["$exception_list"]
    [entry] = entries
    assert entry["mechanism"] == SYNTHETIC_MECHANISM
    assert FINGERPRINT.fullmatch(event["properties"]["$exception_fingerprint"])
    return entry


def only_frame(entry: dict[str, Any]) -> dict[str, Any]:
    """The one frame of a synthetic exception."""
    frames: list[dict[str, Any]] = entry["stacktrace"]["frames"]
    [frame] = frames
    return frame


def fingerprint(event: Event) -> str:
    """An event's ``$exception_fingerprint``."""
    fp: str = event["properties"]["$exception_fingerprint"]
    return fp


def this_function() -> str:
    """The name of the calling function."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_code.co_name


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Each test configures structlog itself; leave it as a fresh import would."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def structlog_over_stdlib(processors: Sequence[Processor]) -> None:
    """Configure structlog to hand its entries to logging, wrapped for ProcessorFormatter."""
    structlog.configure(
        processors=[*processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


#: A logging module of the application's own that every error goes through.
WRAPPER_SOURCE = "def report(log, message, **kw):\n    log.error(message, **kw)\n"


def wrapper_module(name: str) -> types.ModuleType:
    """A module named ``name`` (file ``/app/<name>.py``) with ``report(log, message)``,
    which logs ``message`` as an error on its line 2."""
    module = types.ModuleType(name)
    exec(compile(WRAPPER_SOURCE, f"/app/{name}.py", "exec"), module.__dict__)
    return module


# -- the standard library --------------------------------------------------------------


class TestStdlib:
    def test_one_template_is_one_group_whatever_its_arguments(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """Two calls of one template arrive as two synthetic exceptions named after the
        template, each with its own message, sharing one fingerprint."""
        logger.error("payment failed for order %s", 1)
        logger.error("payment failed for order %s", 2)

        first, second = exceptions_delivered(client, server, 2)
        values = []
        for event in (first, second):
            entry = synthetic(event)
            assert entry["type"] == "payment failed for order %s"
            values.append(entry["value"])
            props = event["properties"]
            assert props["$exception_level"] == "error"
            assert props["$exception_source"] == "python.logging"
            assert props["logger_name"] == logger.name
            assert props["log_level"] == "error"
            assert props["log_message"] == entry["value"]
        assert values == ["payment failed for order 1", "payment failed for order 2"]
        assert fingerprint(first) == fingerprint(second)

    def test_another_template_or_logger_is_another_group(
        self, client: Client, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """A different template in the same logger, or the same template in another
        logger, gets a fingerprint of its own."""
        billing = attach(PostHogHandler(client=client), name=unique_name("test.billing"))
        shipping = attach(PostHogHandler(client=client), name=unique_name("test.shipping"))
        billing.error("payment failed for order %s", 1)
        billing.error("refund failed for order %s", 1)
        shipping.error("payment failed for order %s", 1)
        billing.error("payment failed for order %s", 99)

        events = exceptions_delivered(client, server, 4)
        by_value = {(e["properties"]["logger_name"], synthetic(e)["value"]): e for e in events}
        payment = fingerprint(by_value[billing.name, "payment failed for order 1"])
        refund = fingerprint(by_value[billing.name, "refund failed for order 1"])
        elsewhere = fingerprint(by_value[shipping.name, "payment failed for order 1"])
        again = fingerprint(by_value[billing.name, "payment failed for order 99"])
        assert len({payment, refund, elsewhere}) == 3
        assert again == payment

    def test_frame_is_where_the_error_was_logged(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """The synthetic exception's one frame is the ``log.error(...)`` call: this file,
        this line, this function, in the app, with its source line."""
        line = next_line()
        logger.error("inventory sync failed for %s", "sku-1")

        [event] = exceptions_delivered(client, server, 1)
        frame = only_frame(synthetic(event))
        assert frame["abs_path"] == __file__
        assert frame["lineno"] == line
        assert frame["function"] == this_function()
        assert frame["in_app"] is True
        assert "logger.error(" in frame["context_line"]

    def test_critical_is_fatal(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """``log.critical`` without an exception arrives with ``$exception_level`` fatal."""
        logger.critical("database unreachable")

        [event] = exceptions_delivered(client, server, 1)
        assert synthetic(event)["type"] == "database unreachable"
        assert event["properties"]["$exception_level"] == "fatal"
        assert event["properties"]["log_level"] == "critical"

    def test_below_exception_level_sends_nothing(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """Warnings and infos (below the default ERROR) send no exception; the error
        logged next to them does."""
        logger.warning("disk at %d%%", 91)
        logger.info("all good")
        logger.error("disk full")

        found = events_before_sentinel(logger, client, server)
        assert [synthetic(e)["type"] for e in found] == ["disk full"]

    def test_lower_exception_level_sends_warnings(
        self, client: Client, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """With ``exception_level="WARNING"`` a warning is sent too (level warning);
        an info still is not."""
        log = attach(PostHogHandler(client=client, exception_level="WARNING"))
        log.info("all good")
        log.warning("disk at %d%%", 91)

        [event] = events_before_sentinel(log, client, server)
        entry = synthetic(event)
        assert (entry["type"], entry["value"]) == ("disk at %d%%", "disk at 91%")
        assert event["properties"]["$exception_level"] == "warning"

    def test_switched_off_sends_only_real_exceptions(
        self, client: Client, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """With ``capture_errors_without_exception=False`` an error without an exception
        sends nothing, while a logged exception still arrives."""
        log = attach(PostHogHandler(client=client, capture_errors_without_exception=False))
        log.error("payment failed for order %s", 1)
        log.critical("database unreachable")
        try:
            raise KeyError("order-1")
        except KeyError:
            log.exception("lookup failed")

        [event] = events_before_sentinel(log, client, server)
        [entry] = event["properties"]["$exception_list"]
        assert entry["type"] == "KeyError"
        assert entry["mechanism"]["synthetic"] is False
        assert "$exception_fingerprint" not in event["properties"]

    def test_marked_error_sends_the_event_only(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """An error record marked as an event is that event, not an ``$exception`` too."""
        logger.error("checkout_failed", extra={"event": True, "cart": 3})
        logger.error("refund_failed %s", 7, extra={"event": "refund_failed"})

        found = events_before_sentinel(logger, client, server)
        assert sorted(e["event"] for e in found) == ["checkout_failed", "refund_failed"]
        assert found[0]["properties"]["cart"] == 3

    def test_extras_reach_the_properties(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """``extra`` values of the record are properties of the ``$exception`` event,
        next to the message, logger name and level."""
        logger.error("payment failed for order %s", 7, extra={"order_id": 7, "shop": "s1"})

        [event] = exceptions_delivered(client, server, 1)
        props = event["properties"]
        assert (props["order_id"], props["shop"]) == (7, "s1")
        assert props["log_message"] == "payment failed for order 7"
        assert (props["logger_name"], props["log_level"]) == (logger.name, "error")

    def test_long_template_is_cut_in_the_type_but_groups_whole(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """A template longer than 200 characters is cut to 200 in the type; the value
        keeps the whole message, and two templates that differ only past the cut are
        still two groups."""
        head = "x" * 250
        logger.error(head + " first %s", 1)
        logger.error(head + " second %s", 1)

        first, second = exceptions_delivered(client, server, 2)
        for event, tail in ((first, " first 1"), (second, " second 1")):
            entry = synthetic(event)
            assert len(entry["type"]) == 200
            assert entry["type"] == "x" * 197 + "..."
            assert entry["value"] == head + tail
        assert fingerprint(first) != fingerprint(second)

    def test_error_inside_a_context_carries_the_person(
        self, logger: logging.Logger, client: Client, server: LocalServer
    ) -> None:
        """An error logged inside an identified context is linked to that person, its
        session and tags."""
        with posthog_logging.new_context():
            posthog_logging.identify_context("u1")
            posthog_logging.set_context_session("s-1")
            posthog_logging.tag("team", "payments")
            logger.error("payment failed for order %s", 1)

        [event] = exceptions_delivered(client, server, 1)
        assert event["distinct_id"] == "u1"
        assert "$process_person_profile" not in event["properties"]
        assert event["properties"]["$session_id"] == "s-1"
        assert event["properties"]["team"] == "payments"

    def test_error_is_also_a_log_line(
        self, client: Client, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """With ``logs_level="INFO"`` the error goes to PostHog Logs as a line as well as
        to error tracking; both name the same code location."""
        log = attach(PostHogHandler(client=client, logs_level="INFO"))
        line = next_line()
        log.error("payment failed for order %s", 1)

        [event] = exceptions_delivered(client, server, 1)
        [stored] = wait_for_lines(server, 1)
        assert synthetic(event)["value"] == stored["body"] == "payment failed for order 1"
        assert stored["severity_text"] == "ERROR"
        assert stored["attributes"]["code.lineno"] == line
        assert only_frame(synthetic(event))["lineno"] == line

    def test_dictconfig_can_switch_it_off(
        self, server: LocalServer, attach: Callable[..., logging.Logger]
    ) -> None:
        """``"capture_errors_without_exception": False`` in a ``dictConfig`` (strings and
        booleans only) turns it off for that handler; the default one still sends."""
        name = unique_name("test.dictconfig")

        def handler(**options: Any) -> dict[str, Any]:
            return {
                "class": "posthog_logging.PostHogHandler",
                "level": "DEBUG",
                "api_key": API_KEY,
                "host": server.url,
                "flush_interval": 0.05,
                **options,
            }

        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    "quiet": handler(capture_errors_without_exception=False),
                    "default": handler(),
                },
                "loggers": {
                    f"{name}.quiet": {"level": "DEBUG", "handlers": ["quiet"], "propagate": False},
                    f"{name}.default": {
                        "level": "DEBUG",
                        "handlers": ["default"],
                        "propagate": False,
                    },
                },
            }
        )
        quiet, default = logging.getLogger(f"{name}.quiet"), logging.getLogger(f"{name}.default")
        (quiet_handler,) = quiet.handlers
        (default_handler,) = default.handlers
        attach(quiet_handler, name=quiet.name)  # detached and closed afterwards
        attach(default_handler, name=default.name)
        assert isinstance(quiet_handler, PostHogHandler)
        assert isinstance(default_handler, PostHogHandler)
        assert quiet_handler.capture_errors_without_exception is False

        quiet.error("quiet failure")
        default.error("loud failure")
        quiet.info("sentinel", extra={"event": True})
        default.info("sentinel", extra={"event": True})
        quiet_handler.client.flush(5)
        default_handler.client.flush(5)
        server.wait_for_events(2, event="sentinel")
        found = [e for e in server.events() if e["event"] == "$exception"]
        assert [synthetic(e)["type"] for e in found] == ["loud failure"]

    def test_behind_a_queue_handler_one_template_is_still_one_group(
        self, client: Client, attach: Callable[..., logging.Logger], server: LocalServer
    ) -> None:
        """Behind ``QueueHandler`` (which puts the arguments into the message) with
        ``ContextFilter`` on it, errors of one template still share a fingerprint and are
        named by the template, framed where they were logged."""
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        queue_handler = logging.handlers.QueueHandler(records)
        queue_handler.addFilter(ContextFilter())
        listener = logging.handlers.QueueListener(records, PostHogHandler(client=client))
        log = attach(queue_handler)
        listener.start()
        try:
            log.error("payment failed for order %s", 1)
            line = inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]
            log.error("payment failed for order %s", 2)
        finally:
            listener.stop()
        found = delivered(client, server, 2, event="$exception")
        assert len({e["properties"]["$exception_fingerprint"] for e in found}) == 1
        assert {synthetic(e)["type"] for e in found} == {"payment failed for order %s"}
        assert sorted(synthetic(e)["value"] for e in found) == [
            "payment failed for order 1",
            "payment failed for order 2",
        ]
        assert line in {synthetic(e)["stacktrace"]["frames"][0]["lineno"] for e in found}

    @pytest.mark.parametrize(("text", "on"), [("false", False), ("Off", False), ("yes", True)])
    def test_switch_given_as_text_means_what_it_says(
        self, client: Client, text: str, on: bool
    ) -> None:
        """A switch read from a file arrives as text: ``"false"`` turns it off (it is not
        the true value ``bool("false")`` would make of it)."""
        handler = PostHogHandler(client=client, capture_errors_without_exception=text)
        assert handler.capture_errors_without_exception is on

    def test_switch_that_is_neither_is_refused(self, client: Client) -> None:
        """Text that is no switch is a configuration error naming the option."""
        with pytest.raises(ValueError, match="capture_errors_without_exception"):
            PostHogHandler(client=client, capture_errors_without_exception="maybe")
        with pytest.raises(ValueError, match="exception_rate_limit"):
            Client("phc_x", exception_rate_limit="sometimes")


# -- structlog -------------------------------------------------------------------------


class TestStructlog:
    def test_native_error_is_one_group_per_event_name(
        self, client: Client, server: LocalServer
    ) -> None:
        """``log.error("payment_failed", order=...)`` arrives named after the event, its
        keys as properties, one fingerprint for both calls, framed at the call."""
        configure_json([structlog.processors.add_log_level, PostHogProcessor(client=client)])
        log = structlog.get_logger()
        line = next_line()
        log.error("payment_failed", order=1)
        log.error("payment_failed", order=2)

        first, second = exceptions_delivered(client, server, 2)
        for event, order in ((first, 1), (second, 2)):
            entry = synthetic(event)
            assert (entry["type"], entry["value"]) == ("payment_failed", "payment_failed")
            props = event["properties"]
            assert props["order"] == order
            assert props["$exception_source"] == "python.structlog"
            assert props["$exception_level"] == "error"
            assert props["log_message"] == "payment_failed"
        assert fingerprint(first) == fingerprint(second)
        frame = only_frame(synthetic(first))
        assert (frame["abs_path"], frame["function"]) == (__file__, this_function())
        assert frame["lineno"] == line
        assert frame["in_app"] is True
        assert only_frame(synthetic(second))["lineno"] == line + 1

    def test_native_levels_and_loggers(self, client: Client, server: LocalServer) -> None:
        """critical is fatal, a warning is not sent, and the same event name in another
        logger is another group."""
        configure_json([structlog.processors.add_log_level, PostHogProcessor(client=client)])
        log = structlog.get_logger()
        log.warning("payment_slow")
        log.critical("payment_failed")
        log.bind(logger="billing").critical("payment_failed")
        log.critical("payment_failed")

        events = exceptions_delivered(client, server, 3)
        assert [synthetic(e)["type"] for e in events] == ["payment_failed"] * 3
        assert {e["properties"]["$exception_level"] for e in events} == {"fatal"}
        plain, billing, again = (fingerprint(e) for e in events)
        assert plain == again != billing

    def test_callsite_parameter_adder_says_where(self, client: Client, server: LocalServer) -> None:
        """With ``CallsiteParameterAdder`` before the processor, its idea of the call site
        is the frame: errors reported through an application's own logging module (which
        it is told to skip) are framed where that module was called, not inside it."""
        applog = wrapper_module(unique_name("applog"))
        configure_json([PostHogProcessor(client=client)])
        applog.report(structlog.get_logger(), "without_adder")
        configure_json(
            [
                structlog.processors.CallsiteParameterAdder(
                    {
                        structlog.processors.CallsiteParameter.PATHNAME,
                        structlog.processors.CallsiteParameter.LINENO,
                        structlog.processors.CallsiteParameter.FUNC_NAME,
                    },
                    additional_ignores=[applog.__name__],
                ),
                PostHogProcessor(client=client),
            ]
        )
        line = next_line()
        applog.report(structlog.get_logger(), "with_adder")

        without, with_adder = exceptions_delivered(client, server, 2)
        inside = only_frame(synthetic(without))
        assert (inside["abs_path"], inside["lineno"], inside["function"]) == (
            f"/app/{applog.__name__}.py",
            2,
            "report",
        )
        frame = only_frame(synthetic(with_adder))
        assert (frame["abs_path"], frame["lineno"], frame["function"]) == (
            __file__,
            line,
            this_function(),
        )

    def test_native_async_error_is_framed_at_the_call(
        self, client: Client, server: LocalServer
    ) -> None:
        """``await log.aerror(...)`` is framed at the awaiting line, as ``log.error`` is."""
        configure_json([structlog.processors.add_log_level, PostHogProcessor(client=client)])
        log = structlog.get_logger()
        line = 0

        async def handle() -> None:
            nonlocal line
            line = next_line()
            await log.aerror("payment_failed", order=1)

        asyncio.run(handle())
        [event] = exceptions_delivered(client, server, 1)
        frame = only_frame(synthetic(event))
        assert (frame["abs_path"], frame["lineno"], frame["function"]) == (
            __file__,
            line,
            "handle",
        )

    def test_over_stdlib_processor_and_handler_send_one_each(
        self,
        client: Client,
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """structlog over logging, with the processor in the chain and a PostHogHandler
        on the logger: each error entry is one synthetic ``$exception``, not two."""
        structlog_over_stdlib(
            [
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                PostHogProcessor(client=client),
            ]
        )
        name = unique_name("test.over")
        attach(PostHogHandler(client=client), name=name)
        log = structlog.get_logger(name)
        line = next_line()
        log.error("payment_failed", order=1)
        log.error("payment_failed", order=2)
        log.critical("refund_failed", order=3)
        log.info("sentinel", capture=True)

        delivered(client, server, 1, event="sentinel")
        events = [e for e in server.events() if e["event"] != "sentinel"]
        assert [synthetic(e)["type"] for e in events] == [
            "payment_failed",
            "payment_failed",
            "refund_failed",
        ]
        assert [e["properties"]["order"] for e in events] == [1, 2, 3]
        for event in events:
            assert event["properties"]["$exception_source"] == "python.structlog"
            assert event["properties"]["logger_name"] == name
        assert fingerprint(events[0]) == fingerprint(events[1]) != fingerprint(events[2])
        assert only_frame(synthetic(events[0]))["lineno"] == line
        assert only_frame(synthetic(events[0]))["abs_path"] == __file__

    def test_over_stdlib_handler_alone_sends_one_each(
        self,
        client: Client,
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """Without the processor in the chain, the PostHogHandler alone sends each error
        entry as one synthetic ``$exception``, framed at the call."""
        structlog_over_stdlib([structlog.stdlib.add_log_level])
        name = unique_name("test.over")
        attach(PostHogHandler(client=client), name=name)
        log = structlog.get_logger(name)
        line = next_line()
        log.error("payment_failed", order=1)
        log.error("payment_failed", order=2)
        log.info("sentinel", capture=True)

        delivered(client, server, 1, event="sentinel")
        events = [e for e in server.events() if e["event"] != "sentinel"]
        assert [synthetic(e)["type"] for e in events] == ["payment_failed", "payment_failed"]
        assert [e["properties"]["order"] for e in events] == [1, 2]
        assert fingerprint(events[0]) == fingerprint(events[1])
        assert events[0]["properties"]["$exception_source"] == "python.structlog"
        frame = only_frame(synthetic(events[0]))
        assert (frame["abs_path"], frame["lineno"]) == (__file__, line)

    def test_over_stdlib_exception_call_without_exception_sends_one(
        self,
        client: Client,
        server: LocalServer,
        attach: Callable[..., logging.Logger],
    ) -> None:
        """``log.exception(...)`` outside an ``except`` block (no exception to send) is
        one synthetic ``$exception`` with processor and handler both in place."""
        structlog_over_stdlib([structlog.stdlib.add_log_level, PostHogProcessor(client=client)])
        name = unique_name("test.over")
        attach(PostHogHandler(client=client), name=name)
        log = structlog.get_logger(name)
        log.exception("nothing to report")
        log.error("nothing either", exc_info=True)
        log.info("sentinel", capture=True)

        delivered(client, server, 1, event="sentinel")
        events = [e for e in server.events() if e["event"] != "sentinel"]
        assert sorted(synthetic(e)["type"] for e in events) == [
            "nothing either",
            "nothing to report",
        ]

    def test_error_inside_a_context_carries_the_person(
        self, client: Client, server: LocalServer
    ) -> None:
        """A structlog error logged inside an identified context is linked to that person."""
        configure_json([structlog.processors.add_log_level, PostHogProcessor(client=client)])
        with posthog_logging.new_context():
            posthog_logging.identify_context("u1")
            structlog.get_logger().error("payment_failed", order=1)

        [event] = exceptions_delivered(client, server, 1)
        assert event["distinct_id"] == "u1"
        assert "$process_person_profile" not in event["properties"]

    def test_error_is_also_a_log_line(self, client: Client, server: LocalServer) -> None:
        """With ``logs_level="info"`` a structlog error is both an ``$exception`` and a log line."""
        configure_json(
            [
                structlog.processors.add_log_level,
                PostHogProcessor(client=client, logs_level="info"),
            ]
        )
        structlog.get_logger().error("payment_failed", order=1)

        [event] = exceptions_delivered(client, server, 1)
        [stored] = wait_for_lines(server, 1)
        assert synthetic(event)["value"] == stored["body"] == "payment_failed"
        assert stored["severity_text"] == "ERROR"
        assert stored["attributes"]["order"] == 1

    def test_switched_off_sends_nothing(self, client: Client, server: LocalServer) -> None:
        """``PostHogProcessor(capture_errors_without_exception=False)``: an error without
        an exception sends nothing; a marked entry after it still arrives."""
        configure_json(
            [
                structlog.processors.add_log_level,
                PostHogProcessor(client=client, capture_errors_without_exception=False),
            ]
        )
        log = structlog.get_logger()
        log.error("payment_failed", order=1)
        log.info("sentinel", capture=True)

        delivered(client, server, 1, event="sentinel")
        assert [e["event"] for e in server.events()] == ["sentinel"]
