"""Shared fixtures: a real local server on loopback, clients pointed at it, clean state.

Every test starts with no default client, no module-level configuration, the root
logger as pytest left it, and no context; so test order never matters.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

import posthog_logging
from posthog_logging import default_client as defaults
from posthog_logging.client import Client
from posthog_logging.server import LocalServer
from posthog_logging.stdlib import PostHogHandler

API_KEY = "phc_test_key_0123456789"

# Property-based tests: a fixed budget by default, a long run on demand
# (HYPOTHESIS_PROFILE=long).
settings.register_profile("default", max_examples=150, deadline=None)
settings.register_profile("long", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No environment configuration, no default client, module attributes reset."""
    for name in ("POSTHOG_API_KEY", "POSTHOG_PROJECT_API_KEY", "POSTHOG_HOST"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    defaults.reset()
    yield
    defaults.reset()
    for attr, value in (
        ("api_key", None),
        ("host", None),
        ("debug", False),
        ("disabled", False),
        ("enable_exception_autocapture", False),
        ("capture_exception_code_variables", False),
        ("project_api_key", None),
        ("super_properties", None),
        ("before_send", None),
        ("on_error", None),
        ("sync_mode", False),
        ("send", True),
        ("disable_geoip", True),
        ("code_variables_mask_patterns", None),
        ("code_variables_ignore_patterns", None),
    ):
        setattr(posthog_logging, attr, value)
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("posthog_logging").setLevel(logging.NOTSET)


@pytest.fixture
def server(tmp_path: Any) -> Iterator[LocalServer]:
    """The package's own PostHog-compatible server, on a free loopback port."""
    with LocalServer("127.0.0.1", 0, data_dir=tmp_path / "server") as srv:
        yield srv


@pytest.fixture
def make_client(server: LocalServer) -> Iterator[Callable[..., Client]]:
    """Build clients that send to ``server`` quickly; all are shut down afterwards."""
    made: list[Client] = []

    def make(**options: Any) -> Client:
        options.setdefault("api_key", API_KEY)
        options.setdefault("host", server.url)
        options.setdefault("flush_interval", 0.05)
        client = Client(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown(timeout=2)


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    """A client sending to the local server."""
    return make_client()


@pytest.fixture
def default_client(server: LocalServer) -> Iterator[Client]:
    """The module-level default client, configured to send to ``server``."""
    yield posthog_logging.configure(api_key=API_KEY, host=server.url, flush_interval=0.05)
    defaults.reset()  # while the server still runs: nothing waits for a deadline


@pytest.fixture
def attach() -> Iterator[Callable[..., logging.Logger]]:
    """Attach handlers to a fresh non-propagating logger; detached and closed afterwards."""
    attached: list[tuple[logging.Logger, logging.Handler]] = []

    def make(*handlers: logging.Handler, name: str | None = None) -> logging.Logger:
        log = logging.getLogger(name or f"test.{uuid.uuid4().hex[:8]}")
        log.setLevel(logging.DEBUG)
        log.propagate = False
        for handler in handlers:
            log.addHandler(handler)
            attached.append((log, handler))
        return log

    yield make
    for log, handler in attached:
        log.removeHandler(handler)
        handler.close()


@pytest.fixture
def logger(client: Client, attach: Callable[..., logging.Logger]) -> logging.Logger:
    """A uniquely named logger whose records go to a PostHogHandler on ``client``."""
    return attach(PostHogHandler(client=client))


class Records(logging.Handler):
    """Keeps every record it sees (to show what else was logged)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_handlers() -> Iterator[Records]:
    """A PostHogHandler on the root logger (so a framework's own error log line could be
    sent too), then a handler that keeps the records the root logger saw."""
    root = logging.getLogger()
    records = Records()
    posthog = PostHogHandler()
    root.addHandler(posthog)
    root.addHandler(records)
    yield records
    root.removeHandler(posthog)
    root.removeHandler(records)
