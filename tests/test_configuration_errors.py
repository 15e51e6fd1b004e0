"""Configuration mistakes are errors when the client is configured, not outages later.

A host without its scheme, or a key that is not a project key, used to be retried like a
network failure and end in "not sent before the shutdown deadline", with no cause.
"""

from __future__ import annotations

import logging
import logging.config
import re

import pytest

import posthog_logging
from posthog_logging import Client, PostHogHandler

from .conftest import API_KEY


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("127.0.0.1:8771", "did you mean 'http://127.0.0.1:8771'"),
        ("localhost", "did you mean 'http://localhost'"),
        ("ftp://posthog.example.com", "http:// or https://"),
        ("https://", "http:// or https://"),
    ],
)
def test_a_host_that_is_no_http_url_is_refused(host: str, hint: str) -> None:
    """``Client``, ``configure()`` and the handler refuse it at once, saying why."""
    with pytest.raises(ValueError, match="host must be an http") as raised:
        Client(API_KEY, host=host)
    assert hint in str(raised.value)
    with pytest.raises(ValueError, match="host must be an http"):
        posthog_logging.configure(api_key=API_KEY, host=host)
    with pytest.raises(ValueError, match="host must be an http"):
        PostHogHandler(api_key=API_KEY, host=host)


def test_a_host_from_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """``POSTHOG_HOST`` without its scheme is refused as an argument would be."""
    monkeypatch.setenv("POSTHOG_HOST", "eu.i.posthog.com")
    with pytest.raises(ValueError, match=re.escape("did you mean 'http://eu.i.posthog.com'")):
        Client(API_KEY)


def test_dictconfig_says_which_handler_and_why() -> None:
    """From ``dictConfig``, the error names the handler and carries the reason."""
    with pytest.raises(ValueError, match="posthog") as raised:
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    "posthog": {
                        "class": "posthog_logging.PostHogHandler",
                        "api_key": API_KEY,
                        "host": "127.0.0.1:8771",
                    }
                },
            }
        )
    cause = raised.value.__cause__ or raised.value.__context__
    assert cause is not None and "host must be an http" in str(cause)


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("phx_0123456789abcdef", "personal API key"),
        ("phs_0123456789abcdef", "secure API key"),
        ("phc_0123\n456789", "invisible characters"),
        ("phc_0123 456789", "spaces"),
    ],
)
def test_a_key_that_is_no_project_key_is_refused(key: str, what: str) -> None:
    """Another kind of PostHog key, or a key with a line break or a space in it."""
    with pytest.raises(ValueError, match=what):
        Client(key, host="http://127.0.0.1:1")


def test_good_hosts_are_taken_as_given() -> None:
    """http and https hosts, with a port, a path or a trailing slash, are fine."""
    for host, kept in [
        ("https://eu.i.posthog.com/", "https://eu.i.posthog.com"),
        ("http://127.0.0.1:8771", "http://127.0.0.1:8771"),
        ("https://posthog.example.com/ingest", "https://posthog.example.com/ingest"),
    ]:
        client = Client(API_KEY, host=host)
        try:
            assert client.host == kept
        finally:
            client.shutdown(timeout=1)


def test_the_default_client_with_a_bad_host_says_so_once_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Module attributes that cannot make a client: the log call or ``capture()`` does
    not raise; one error says why; nothing is sent, even with ``disabled`` left False."""
    caplog.set_level(logging.ERROR, logger="posthog_logging")
    posthog_logging.api_key = API_KEY
    posthog_logging.host = "127.0.0.1:8771"
    assert posthog_logging.capture("first") is None
    assert posthog_logging.capture("second") is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "did you mean 'http://127.0.0.1:8771'" in errors[0]
    assert posthog_logging.get_client().disabled
