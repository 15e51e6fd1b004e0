"""loguru: PostHog events, error tracking and log lines from loguru's own logger.

Run against the local server::

    python -m posthog_logging serve &
    export POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local
    python examples/loguru_app.py
    python -m posthog_logging events
    python -m posthog_logging logs
"""

import sys

from loguru import logger

import posthog_logging as posthog
from posthog_logging.loguru import PostHogSink

logger.remove()
logger.add(sys.stderr, level="INFO", format="{level} {name}: {message} {extra}")
# Marked records become events, exceptions and errors go to error tracking, and every
# record at INFO or above also goes to PostHog Logs, linked to the person and session.
logger.add(PostHogSink(logs_level="INFO"), level="INFO")


def reserve_stock(sku: str) -> None:
    raise ConnectionError("inventory service unreachable")


def checkout(user_id: str, cart: list[float]) -> None:
    with posthog.new_context():
        posthog.identify_context(user_id)
        posthog.set_context_session("01929b3a-7f3a-7c3a-9c3a-3f3a7f3a7f3b")
        posthog.tag("plan", "pro")
        with logger.contextualize(request_id="req_8c1d"):  # a property of everything below
            order = logger.bind(items=len(cart))
            order.info("checkout_started", event=True, total=sum(cart))  # -> event
            try:
                reserve_stock("sku_1")
            except ConnectionError:
                order.exception("stock reservation failed")  # -> $exception, traceback
            # An error without an exception: one issue per message template.
            order.error("payment declined for card ending {}", "4242")
            order.info("order placed", event="checkout_completed")  # -> named event


if __name__ == "__main__":
    checkout("user_11", [19.9, 5.0])
    posthog.shutdown()
