"""The demo: a small application whose logging ends up in a local PostHog-compatible server.

It shows the whole path with nothing but this package: ``dictConfig`` sets up a
console handler and a :class:`~posthog_logging.PostHogHandler`; a "checkout" runs in a
context with identity, session and tags; marked log records become events; a logged
exception (with the local variables of its frames and the lines logged before it) and an
exception leaving a context become ``$exception`` events; an error logged without an
exception becomes one too; a background job that crashes reports its crash; ordinary
log lines stay log lines, and every line also goes to PostHog Logs, linked to the same
person and session. Then the server goes down while a second visitor shops and the
application exits: the disk spool keeps those events, and the restarted application
sends them first. Finally it prints what the server received.
"""

from __future__ import annotations

import logging
import logging.config
import os
import shlex
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from .. import default_client
from ..client import Client
from ..contexts import identify_context, new_context, set_context_session, tag
from ..ids import uuid7
from ..server import LocalServer
from .formatting import format_events, format_logs

__all__ = ["run_demo"]

DEMO_API_KEY = "phc_local_demo"

log = logging.getLogger("demo.shop")


class PaymentDeclined(Exception):
    """The payment provider said no."""


def _charge(amount: Decimal) -> None:
    try:
        raise ConnectionResetError("payment provider closed the connection")
    except ConnectionResetError as exc:
        raise PaymentDeclined(f"could not charge {amount} EUR") from exc


def _send_receipt(order_id: str) -> None:
    raise TimeoutError(f"mail server did not answer for order {order_id}")


def shop_session(user_id: str, session_id: str) -> None:
    """One visit to the shop: what a request handler in a real application would log."""
    with new_context():
        identify_context(user_id)
        set_context_session(session_id)
        tag("plan", "pro")
        tag("request_id", "req_" + session_id[-6:])

        log.info("page_viewed", extra={"event": True, "page": "/pricing"})
        log.info("cart has %d items", 3)  # an ordinary log line: not an event
        log.info(
            "checkout started",
            extra={
                "event": "checkout_started",
                "cart_value": Decimal("49.90"),
                "items": 3,
                "card_token": "tok_4242",
            },  # secret-looking key: sent as [Filtered]
        )
        try:
            _charge(Decimal("49.90"))
        except PaymentDeclined:
            log.exception("payment failed")  # -> $exception, with its cause chained

        try:
            with new_context():  # a background step in a nested context
                tag("job", "send_receipt")
                _send_receipt("ord_1001")  # leaves the context -> $exception, once
        except TimeoutError:
            log.warning("receipt not sent; will retry later")

        log.info("checkout_completed", extra={"event": True, "order_id": "ord_1001"})


def stock_sync() -> None:
    """A background job that reports a failure the way most code does: an error line,
    with no exception at hand. It becomes an issue, one per message template."""
    with new_context():
        tag("job", "stock_sync")
        log.info("stock sync started for %d products", 120)
        log.error("stock sync failed: the supplier feed answered %d", 503)


def nightly_report() -> None:
    """A job run in a process of its own, which dies of an exception no one catches.

    ``enable_exception_autocapture`` reports the crash on the way out; Python still prints
    the traceback, and the process exits with status 1.
    """
    import posthog_logging

    posthog_logging.api_key = os.environ["POSTHOG_LOGGING_DEMO_KEY"]
    posthog_logging.host = os.environ["POSTHOG_LOGGING_DEMO_HOST"]
    posthog_logging.enable_exception_autocapture = True
    totals = {"orders": 12, "refunds": 0}
    print(f"refund rate: {totals['refunds'] / totals['orders']:.0%}")
    print(f"average refund: {totals['orders'] / totals['refunds']:.2f}")  # ZeroDivisionError


def run_nightly_report(host: str) -> int:
    """Run :func:`nightly_report` in a process of its own; its exit status."""
    env = {
        **os.environ,
        "POSTHOG_LOGGING_DEMO_KEY": DEMO_API_KEY,
        "POSTHOG_LOGGING_DEMO_HOST": host,
    }
    job = subprocess.run(
        [sys.executable, "-c", "from posthog_logging.cli.demo import nightly_report as n; n()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return job.returncode


def later_visit(user_id: str) -> None:
    """A second, shorter visit: it happens while the server is down."""
    with new_context():
        identify_context(user_id)
        set_context_session(uuid7())
        tag("plan", "free")
        log.info("page_viewed", extra={"event": True, "page": "/docs"})
        log.info("signup_completed", extra={"event": True, "referrer": "newsletter"})


def run_demo(
    data_dir: Path | None = None,
    port: int = 0,
    keep: bool = False,
    command: str = "python -m posthog_logging",
) -> int:
    """Run the demo end to end and print what arrived. Returns an exit status.

    With ``keep``, the server stays up afterwards, with its web view, until Ctrl-C. The
    closing hint names the *command* that lists what arrived, and the same *data_dir*.
    """
    started = time.time()
    with LocalServer("127.0.0.1", port, data_dir=data_dir) as server:
        print(f"local PostHog-compatible server on {server.url} (data: {server.store.path})\n")
        spool_dir = server.store.path.parent / "spool"
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "filters": {"posthog_context": {"()": "posthog_logging.ContextFilter"}},
                "formatters": {
                    "console": {
                        "format": "%(levelname)-7s %(name)s: %(message)s "
                        "[person=%(posthog_distinct_id)s]"
                    }
                },
                "handlers": {
                    "console": {
                        "class": "logging.StreamHandler",
                        "formatter": "console",
                        "filters": ["posthog_context"],
                        "stream": "ext://sys.stdout",
                    },
                    "posthog": {
                        "class": "posthog_logging.PostHogHandler",
                        "api_key": DEMO_API_KEY,
                        "host": server.url,
                        "flush_interval": 0.2,
                        "spool_dir": str(spool_dir),
                        "logs_level": "INFO",  # every line to PostHog Logs as well
                        "exception_steps_level": "INFO",  # lines before an error go with it
                        "capture_exception_code_variables": True,  # and the frames' locals
                        "service_name": "demo-shop",
                    },
                },
                "root": {"level": "INFO", "handlers": ["console", "posthog"]},
            }
        )
        print("the application logs:")
        session_id = uuid7()
        shop_session("user_42", session_id)
        stock_sync()

        client = default_client.get_client()
        client.flush(10)
        status = run_nightly_report(server.url)
        print(f"  (the nightly report job crashed with a ZeroDivisionError, exit status {status})")

        print("\nthe server goes down; another visitor shops, and the application exits:")
        server.down()
        later_visit("user_7")
        client.shutdown(1)
        spooled = client.stats.spooled
        print(f"  {spooled} events and log lines kept in the spool ({spool_dir})")
        server.up()
        print("the server is back; the application starts again and sends the spool first")
        restarted = Client(
            DEMO_API_KEY, host=server.url, spool_dir=spool_dir, service_name="demo-shop"
        )
        deadline = time.monotonic() + 10
        while restarted.stats.sent < spooled and time.monotonic() < deadline:
            time.sleep(0.05)
        restarted.shutdown(5)
        stats, again = client.stats, restarted.stats
        if again.sent < spooled:
            print(f"\nonly {again.sent} of the {spooled} spooled were sent after the restart")
            return 1
        arrived = server.events(since=started)
        lines = server.store.logs(since=started)

        print(f"\nwhat PostHog received: {len(arrived)} events\n")
        print(format_events(arrived))
        print(f"\nand {len(lines)} log lines for PostHog Logs, of the same people and sessions:\n")
        print(format_logs(lines))
        print(
            f"\nsent {stats.sent} (of them {stats.logs_sent} log lines), spooled "
            f"{stats.spooled} and sent after the restart {again.sent}, dropped "
            f"{stats.dropped_total + again.dropped_total}, failed {stats.failed + again.failed}. "
            f"Session {session_id}."
        )
        where = f" --data-dir {shlex.quote(str(data_dir))}" if data_dir is not None else ""
        print(f"List them again: {command} events{where} (and: {command} logs{where})")
        print(f"See them in the web view: {server.url}/" + ("" if keep else "  (demo --keep)"))
        logging.getLogger().handlers.clear()
        default_client.reset()
        if keep:
            print("The server keeps running; Ctrl-C stops it.", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    ok = stats.sent and again.sent == stats.spooled and not (stats.failed or again.failed)
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_demo(Path(os.environ["POSTHOG_LOGGING_DATA_DIR"])))
