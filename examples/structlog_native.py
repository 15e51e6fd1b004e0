"""Pure structlog: PostHog events and error tracking from structlog's own loggers.

Run against the local server::

    python -m posthog_logging serve &
    export POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local
    python examples/structlog_native.py
    python -m posthog_logging events
"""

import structlog

import posthog_logging as posthog
from posthog_logging.structlog import PostHogProcessor, merge_posthog_context

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        merge_posthog_context,  # shows whose line it is: posthog_distinct_id, ...
        structlog.processors.add_log_level,
        PostHogProcessor(),  # before format_exc_info, which turns exc_info into text
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]
)
log = structlog.get_logger("example.native")


def checkout(user_id: str, cart: list[float]) -> None:
    structlog.contextvars.bind_contextvars(request_id="req_7f3a")  # a property too
    with posthog.new_context():
        posthog.identify_context(user_id)
        posthog.set_context_session("01929b3a-7f3a-7c3a-9c3a-3f3a7f3a7f3a")
        posthog.tag("plan", "pro")
        order = log.bind(items=len(cart))
        order.info("checkout_started", capture=True, total=sum(cart))
        try:
            raise ConnectionError("payment provider unreachable")
        except ConnectionError:
            order.exception("payment failed")  # -> $exception
        order.info("order placed", capture="checkout_completed")


if __name__ == "__main__":
    checkout("user_9", [19.9, 5.0])
    posthog.shutdown()
