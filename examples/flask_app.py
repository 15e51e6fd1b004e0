"""A Flask app behind PostHogWSGIMiddleware: one context per request.

    python -m posthog_logging serve &
    export POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local
    python examples/flask_app.py
    curl -H 'X-User-Id: user_3' -H 'X-POSTHOG-SESSION-ID: s_1' http://127.0.0.1:5000/checkout/42
    curl -H 'X-User-Id: user_3' http://127.0.0.1:5000/fail

Every event logged while a request is served carries its person (the app's own lookup,
here a header, else PostHog's ``X-POSTHOG-DISTINCT-ID``), its session and the request's
URL, method and path. Flask turns a view's error into a 500 and logs it: the
``PostHogHandler`` on the root logger sends it once, with the request's context.
"""

from __future__ import annotations

import logging

from flask import Flask, request

import posthog_logging as posthog
from posthog_logging.wsgi import PostHogWSGIMiddleware

log = logging.getLogger("example.flask")

app = Flask(__name__)


def current_user(environ: dict[str, object]) -> object:
    """The application's own user lookup (a session cookie or a token in real life)."""
    return environ.get("HTTP_X_USER_ID")


app.wsgi_app = PostHogWSGIMiddleware(app.wsgi_app, identify=current_user)  # type: ignore[method-assign]


@app.before_request
def tag_request_id() -> None:
    posthog.tag("request_id", request.headers.get("X-Request-ID", "unknown"))


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
