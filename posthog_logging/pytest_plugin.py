"""The pytest plugin: a ``posthog_events`` fixture for your own tests.

Registered through the ``pytest11`` entry point, so it is there once posthog-logging is
installed. See :mod:`posthog_logging.testing`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import CapturedEvents, capture_events

__all__ = ["posthog_events"]


@pytest.fixture
def posthog_events() -> Iterator[CapturedEvents]:
    """Every event the code under test sends, captured in memory instead of sent.

    Exactly what would go on the wire (after contexts, redaction and ``before_send``),
    whether or not an API key is configured. Helpers: ``assert_captured``,
    ``assert_not_captured``, ``find``, ``names``, ``exceptions``, ``clear``.
    """
    with capture_events() as events:
        yield events
