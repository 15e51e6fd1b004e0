"""Celery with PostHog contexts: the caller's person, session and tags follow each task.

Run a worker and send tasks (here with a broker in memory, worker in the same process):

    python -m posthog_logging serve &
    export POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local
    python examples/celery_app.py

With a real broker, start the worker as usual (``celery -A celery_app worker``): the
same ``instrument()`` call, made where the app is defined, sets up both sides.
"""

from __future__ import annotations

import logging
import os

from celery import Celery

import posthog_logging as posthog
import posthog_logging.celery

log = logging.getLogger("example.celery")

app = Celery(
    "example",
    broker=os.environ.get("CELERY_BROKER_URL", "memory://"),
    backend=os.environ.get("CELERY_RESULT_BACKEND", "cache+memory://"),
)
# A worker replaces the root logger's handlers when it starts, unless told not to;
# the alternative is to add PostHogHandler in an `after_setup_logger` signal handler.
app.conf.worker_hijack_root_logger = False
posthog_logging.celery.instrument()


@app.task(name="example.send_invoice")
def send_invoice(invoice_id: int) -> str:
    log.info("invoice_sent", extra={"event": True, "invoice_id": invoice_id})
    return f"invoice {invoice_id} sent"


@app.task(name="example.charge_card")
def charge_card(invoice_id: int) -> None:
    raise TimeoutError(f"card processor timed out for invoice {invoice_id}")


def main() -> None:
    from celery.contrib.testing.worker import start_worker

    logging.basicConfig(level=logging.WARNING)  # Celery's own INFO lines are chatty
    logging.getLogger("example").setLevel(logging.INFO)
    logging.getLogger().addHandler(posthog.PostHogHandler())
    with start_worker(app, pool="solo", perform_ping_check=False):
        with posthog.new_context():  # e.g. the web request that enqueues the work
            posthog.identify_context("user_6")
            posthog.tag("plan", "team")
            sent = send_invoice.delay(31)
            failed = charge_card.delay(31)
        print(sent.get(timeout=10))
        try:
            failed.get(timeout=10)
        except TimeoutError as exc:
            print(f"task failed: {exc}")
    posthog.shutdown()


if __name__ == "__main__":
    main()
