"""A Flask app with one context per request: identity, session and tags for every event.

    python -m posthog_logging serve &
    POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local python examples/flask_app.py
    curl -H 'X-User-Id: user_3' http://127.0.0.1:5000/checkout/42
    curl -H 'X-User-Id: user_3' http://127.0.0.1:5000/fail

The context opens in ``before_request`` and closes in ``teardown_request``, which Flask
calls even when the view raised, so contexts never leak between requests.
"""

from __future__ import annotations

import logging

from flask import Flask, g, request

import posthog_logging as posthog

log = logging.getLogger("example.flask")

app = Flask(__name__)


@app.before_request
def open_posthog_context() -> None:
    g.posthog_context = posthog.new_context(capture_exceptions=False)
    g.posthog_context.__enter__()
    user_id = request.headers.get("X-User-Id")
    if user_id:
        posthog.identify_context(user_id)
    session_id = request.headers.get("X-POSTHOG-SESSION-ID")
    if session_id:
        posthog.set_context_session(session_id)
    posthog.tag("request_id", request.headers.get("X-Request-ID", "unknown"))
    posthog.tag("$request_path", request.path)


@app.teardown_request
def close_posthog_context(error: BaseException | None) -> None:
    if error is not None:  # an unhandled error in the view: send it with the context
        posthog.capture_exception(error)
    context = g.pop("posthog_context", None)
    if context is not None:
        context.__exit__(None, None, None)


@app.route("/checkout/<int:order_id>")
def checkout(order_id: int) -> dict[str, object]:
    log.info("checkout_viewed", extra={"event": True, "order_id": order_id})
    return {"order": order_id}


@app.route("/fail")
def fail() -> str:
    raise RuntimeError("the view failed")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO)
    logging.getLogger().addHandler(posthog.PostHogHandler())


if __name__ == "__main__":
    setup_logging()
    app.run(port=5000)
