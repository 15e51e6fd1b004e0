"""A one-file Django project with PostHog's middleware: a context per request.

    python -m posthog_logging serve &
    export POSTHOG_HOST=http://127.0.0.1:8990 POSTHOG_API_KEY=phc_local
    python examples/django_app.py runserver 127.0.0.1:8001 --noreload
    curl -H 'X-User-Id: user_4' http://127.0.0.1:8001/invoices/9
    curl -H 'X-User-Id: user_4' http://127.0.0.1:8001/invoices/9/pay

In a real project the settings go to settings.py: ``PostHogMiddleware`` in MIDDLEWARE
(after ``AuthenticationMiddleware``), and ``POSTHOG_LOGGING`` for its options.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

log = logging.getLogger("example.django")


def current_user(request: HttpRequest) -> Any:
    """The application's own user lookup; with contrib.auth: ``request.user.pk``."""
    return request.headers.get("X-User-Id")


def invoice(request: HttpRequest, invoice_id: int) -> JsonResponse:
    log.info("invoice_viewed", extra={"event": True, "invoice_id": invoice_id})
    return JsonResponse({"invoice": invoice_id})


def pay(request: HttpRequest, invoice_id: int) -> JsonResponse:
    raise ConnectionError(f"payment gateway down for invoice {invoice_id}")


urlpatterns = [
    path("invoices/<int:invoice_id>", invoice),
    path("invoices/<int:invoice_id>/pay", pay),
]

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="example-only",
        MIDDLEWARE=["posthog_logging.django.PostHogMiddleware"],
        POSTHOG_LOGGING={"identify": current_user},
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "console": {"class": "logging.StreamHandler"},
                "posthog": {"class": "posthog_logging.PostHogHandler"},
            },
            "root": {"handlers": ["console", "posthog"], "level": "INFO"},
        },
    )

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
