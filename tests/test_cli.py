"""The command line: serve, events and demo, run as a user would run them."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from posthog_logging import (
    Client,
    PostHogHandler,
    identify_context,
    new_context,
    set_context_session,
)

from .conftest import API_KEY


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "posthog_logging", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`python -m posthog_logging serve` running in a subprocess."""
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "posthog_logging",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"serve did not start: {proc.communicate()}") from None
            time.sleep(0.05)
    yield url, data
    proc.terminate()
    proc.wait(timeout=10)


class TestServeAndEvents:
    def test_round_trip(self, served: tuple[str, Path]) -> None:
        """Events sent to `serve` are listed by `events`, as a table and as JSON."""
        url, data = served
        client = Client(API_KEY, host=url, sync_mode=True)
        client.capture("cli_checked", {"plan": "pro"}, distinct_id="user_9")
        client.shutdown()

        table = cli("events", "--data-dir", str(data))
        assert table.returncode == 0
        assert "cli_checked" in table.stdout and "user_9" in table.stdout

        as_json = cli("events", "--json", "--limit", "5", "--data-dir", str(data))
        [event] = json.loads(as_json.stdout)
        assert event["event"] == "cli_checked"
        assert event["properties"]["plan"] == "pro"

    def test_logs_round_trip(self, served: tuple[str, Path]) -> None:
        """Log lines sent to `serve` are listed by `logs`, with their person and session,
        filtered by level, person and session, and as JSON."""
        url, data = served
        client = Client(API_KEY, host=url, service_name="cli-test")
        log = logging.getLogger("tests.cli.logs")
        log.propagate = False
        log.setLevel(logging.DEBUG)
        handler = PostHogHandler(client=client, logs_level="INFO")
        log.addHandler(handler)
        try:
            with new_context():
                identify_context("user_9")
                set_context_session("sess_9")
                log.info("cart has %d items", 3)
                log.warning("stock is low")
            log.error("no context here")
            client.shutdown()
        finally:
            log.removeHandler(handler)

        table = cli("logs", "--data-dir", str(data))
        assert table.returncode == 0
        rows = {line.split("  ")[-1].strip(): line for line in table.stdout.splitlines()[2:]}
        assert set(rows) == {"cart has 3 items", "stock is low", "no context here"}
        assert "user_9" in rows["stock is low"] and "sess_9" in rows["stock is low"]
        assert "WARNING" in rows["stock is low"] and "cli-test" in rows["stock is low"]

        warnings = cli("logs", "--level", "WARNING", "--json", "--data-dir", str(data))
        assert [line["body"] for line in json.loads(warnings.stdout)] == [
            "stock is low",
            "no context here",
        ]
        person = cli("logs", "--person", "user_9", "--json", "--data-dir", str(data))
        assert [line["body"] for line in json.loads(person.stdout)] == [
            "cart has 3 items",
            "stock is low",
        ]
        session = cli("logs", "--session", "sess_9", "--limit", "1", "--data-dir", str(data))
        assert "stock is low" in session.stdout and "cart has" not in session.stdout

    def test_logs_when_empty(self, tmp_path: Path) -> None:
        """`logs` on an empty data dir says so."""
        result = cli("logs", "--data-dir", str(tmp_path))
        assert result.returncode == 0
        assert "no log lines" in result.stdout

    def test_events_when_empty(self, tmp_path: Path) -> None:
        """`events` on an empty data dir says so."""
        result = cli("events", "--data-dir", str(tmp_path))
        assert result.returncode == 0
        assert "no events" in result.stdout


class TestDemo:
    def test_demo(self, tmp_path: Path) -> None:
        """The demo runs offline, and prints the events and exceptions that arrived: a
        logged exception, one leaving a context, an error logged without one, and the
        crash of a job that died of one."""
        env = dict(os.environ)
        env.pop("POSTHOG_API_KEY", None)
        result = subprocess.run(
            [sys.executable, "-m", "posthog_logging", "demo", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout
        for expected in (
            "page_viewed",
            "checkout_started",
            "checkout_completed",
            "PaymentDeclined: could not charge 49.90 EUR (+1 chained)",
            "TimeoutError: mail server did not answer",
            "stock sync failed: the supplier feed answered 503  (logged error)",
            "ZeroDivisionError: division by zero",
            "nightly report job crashed with a ZeroDivisionError, exit status 1",
            "user_42",
            '"[Filtered]"',
            "4 events and log lines kept in the spool",
            "signup_completed",
            "user_7",
            "sent 14 (of them 8 log lines), spooled 4 and sent after the restart 4, dropped 0",
        ):
            assert expected in out
        events, _, lines = out.partition("log lines for PostHog Logs")
        assert "what PostHog received: 9 events" in events
        assert "cart has 3 items" not in events.partition("what PostHog received")[2]
        # ...an ordinary line is not an event, but it is a line for PostHog Logs, of the
        # same person and session, as is the visit made while the server was down
        assert "and 10 log lines for PostHog Logs" in out
        cart = next(line for line in lines.splitlines() if "cart has 3 items" in line)
        assert "INFO" in cart and "demo-shop" in cart and "user_42" in cart
        assert sum("user_7" in line for line in lines.splitlines()) == 2


def read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 30) -> str:
    """Read the process's stdout line by line until one contains ``marker``."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} never printed; output so far:\n{''.join(seen)}")


class TestWebView:
    def test_demo_keep_serves_the_view_until_interrupted(self, tmp_path: Path) -> None:
        """demo --keep prints the view's address, serves it with the demo's events, and
        stops cleanly on Ctrl-C."""
        import signal

        import requests

        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "posthog_logging",
                "demo",
                "--keep",
                "--data-dir",
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C must reach it even when this run was started in the background,
            # where the shell has it ignored (and the child would inherit that).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            out = read_until(proc, "keeps running")
            [url] = [
                line.split(": ", 1)[1].strip() for line in out.splitlines() if "web view:" in line
            ]
            page = requests.get(url, timeout=10)
            assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
            feed = requests.get(url + "api/events", timeout=10).json()["events"]
            assert {e["event"] for e in feed} >= {
                "checkout_started",
                "$exception",
                "signup_completed",
            }
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def test_serve_beyond_loopback_warns(self, tmp_path: Path) -> None:
        """serve --host with a non-loopback address says on stderr that the view is open."""
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "posthog_logging",
                "serve",
                "--host",
                "0.0.0.0",
                "--port",
                str(free_port()),
                "--data-dir",
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            read_until(proc, "web view:")
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
        assert "warning: serving on 0.0.0.0" in err
