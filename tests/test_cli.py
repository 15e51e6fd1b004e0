"""The command line (``python -m posthog_logging``, the ``posthog-logging`` script): serve,
events, logs, clear, check and demo, run as a user would run them, in subprocesses."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import posthog_logging
from posthog_logging import (
    Client,
    PostHogHandler,
    identify_context,
    new_context,
    set_context_session,
)
from posthog_logging.ids import uuid7
from posthog_logging.server import Fault, LocalServer

from .conftest import API_KEY
from .helpers import delivered, wait_for_lines

MODULE = [sys.executable, "-m", "posthog_logging"]

#: Runs the CLI as a user whom file permissions apply to: when the tests run as root,
#: without the capabilities that let root read and write anything (CAP_DAC_OVERRIDE,
#: CAP_DAC_READ_SEARCH), dropped from the bounding set so that the exec'd CLI lacks them.
WITHOUT_OVERRIDE = [
    sys.executable,
    "-c",
    """
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            sys.exit(77)
os.execv(sys.executable, [sys.executable, "-m", "posthog_logging", *sys.argv[1:]])
""",
]


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    command: Sequence[str] = MODULE,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the command line to its end, with no terminal on stdin."""
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a user error prints on stderr (exit status 2, nothing on stdout)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("posthog-logging: error: ")
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    """`python -m posthog_logging serve` running in a subprocess."""
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [*MODULE, "serve", "--port", str(port), "--data-dir", str(data)],
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
    yield url, data, proc
    proc.terminate()
    proc.wait(timeout=10)


def data_dir(server: LocalServer) -> str:
    """The --data-dir of the in-process server."""
    return str(server.store.path.parent)


def send_visits(
    client: Client, server: LocalServer, sessions: Sequence[str], persons: Sequence[str] = ()
) -> None:
    """One visit per session, of the person at the same place in *persons* (default
    ``user_0``, ``user_1``, ...): a page_viewed event and a WARNING line for PostHog Logs,
    stored by the server before this returns."""
    log = logging.getLogger(f"tests.cli.{uuid7()}")
    log.propagate = False
    handler = PostHogHandler(client=client, logs_level="INFO")
    log.addHandler(handler)
    try:
        for n, session in enumerate(sessions):
            with new_context():
                identify_context(persons[n] if persons else f"user_{n}")
                set_context_session(session)
                client.capture("page_viewed", {"page": f"/p{n}"})
                log.warning("visit %d", n)
        delivered(client, server, len(sessions), event="page_viewed")
        wait_for_lines(server, len(sessions))
    finally:
        log.removeHandler(handler)


class TestServeAndEvents:
    def test_round_trip(self, served: tuple[str, Path, subprocess.Popen[str]]) -> None:
        """Events sent to `serve` are listed by `events`, as a table and as JSON; `serve`
        says how to list them, with the --data-dir it was given."""
        url, data, proc = served
        hint = read_until(proc, "list what arrived")
        assert f"python -m posthog_logging events --data-dir {data} " in hint
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

    def test_logs_round_trip(self, served: tuple[str, Path, subprocess.Popen[str]]) -> None:
        """Log lines sent to `serve` are listed by `logs`, with their person and session,
        filtered by level, person and session, and as JSON."""
        url, data, _ = served
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

    @pytest.mark.parametrize(("command", "what"), [("events", "events"), ("logs", "log lines")])
    def test_when_nothing_is_stored(self, tmp_path: Path, command: str, what: str) -> None:
        """`events` and `logs` on a data directory with no store say nothing is stored yet
        (as JSON: an empty list), and create nothing there."""
        result = cli(command, "--data-dir", str(tmp_path / "new"))
        assert result.returncode == 0
        assert result.stdout == f"no {what} stored yet in {tmp_path / 'new' / 'events.sqlite3'}\n"
        assert cli(command, "--json", "--data-dir", str(tmp_path / "new")).stdout == "[]\n"
        assert not (tmp_path / "new").exists()


class TestListing:
    def test_sessions_made_together_are_told_apart(
        self, client: Client, server: LocalServer
    ) -> None:
        """Two sessions begun in the same millisecond by two anonymous visitors (UUIDv7s,
        alike but for their end, as posthog-js makes them) show as two different sessions
        and persons in both tables, each by its start and its end, and --session lists
        one session's events and lines."""
        now = time.time()
        sessions, persons = [uuid7(now), uuid7(now)], [uuid7(now), uuid7(now)]
        assert sessions[0][:15] == sessions[1][:15] and persons[0][:15] == persons[1][:15]
        send_visits(client, server, sessions, persons)

        for command in ("events", "logs"):
            result = cli(command, "--data-dir", data_dir(server))
            assert result.returncode == 0, result.stderr
            rows = result.stdout.splitlines()[2:]
            for n, session in enumerate(sessions):
                [row] = [row for row in rows if f"/p{n}" in row or f"visit {n}" in row]
                assert f"{session[:4]}…{session[-8:]}" in row, (command, row)
                assert f"{persons[n][:7]}…{persons[n][-8:]}" in row, (command, row)

        one = cli("events", "--json", "--session", sessions[1], "--data-dir", data_dir(server))
        assert [e["properties"]["page"] for e in json.loads(one.stdout)] == ["/p1"]
        lines = cli("logs", "--json", "--session", sessions[0], "--data-dir", data_dir(server))
        assert [line["body"] for line in json.loads(lines.stdout)] == ["visit 0"]

    def test_nothing_matches_the_filters(self, client: Client, server: LocalServer) -> None:
        """When events and lines are stored but none match, the commands say that, with the
        filters given and how many are stored: not that nothing is stored."""
        send_visits(client, server, [uuid7(), uuid7()])
        path = server.store.path

        events = cli(
            "events", "--person", "nobody", "--event", "page_viewed", "--data-dir", data_dir(server)
        )
        assert events.stdout == (
            f"no events match --event page_viewed --person nobody (2 events stored in {path})\n"
        )
        lines = cli("logs", "--level", "error", "--session", "s 1", "--data-dir", data_dir(server))
        assert lines.stdout == (
            f"no log lines match --level ERROR --session 's 1' (2 log lines stored in {path})\n"
        )

    def test_a_reader_that_goes_away(self, client: Client, server: LocalServer) -> None:
        """`events | head`: when the reader stops reading, the listing ends quietly, without
        a traceback."""
        for n in range(1500):  # a table of about 200 kB: more than a pipe holds
            client.capture("page_viewed", {"note": f"{n} {'x' * 100}"}, distinct_id="user_1")
        delivered(client, server, 1500)
        proc = subprocess.Popen(
            [*MODULE, "events", "--limit", "0", "--data-dir", data_dir(server)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith("time (UTC)")
        proc.stdout.close()
        assert proc.wait(timeout=20) == 1
        assert proc.stderr.read() == ""


class TestClear:
    def test_clear_with_yes(self, client: Client, server: LocalServer) -> None:
        """`clear --yes` deletes every event and log line without asking, and says how many;
        the listings then say nothing is stored."""
        send_visits(client, server, [uuid7(), uuid7()])
        path = server.store.path

        result = cli("clear", "--yes", "--data-dir", data_dir(server))
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"deleted 2 events and 2 log lines from {path}\n"
        assert cli("events", "--data-dir", data_dir(server)).stdout.startswith(
            "no events stored yet"
        )
        assert cli("logs", "--data-dir", data_dir(server)).stdout.startswith(
            "no log lines stored yet"
        )

    @pytest.mark.parametrize(("answer", "kept"), [("n", True), ("y", False)])
    def test_clear_asks_on_a_terminal(
        self, client: Client, server: LocalServer, answer: str, kept: bool
    ) -> None:
        """On a terminal, `clear` asks first; only "y" deletes, anything else keeps all."""
        send_visits(client, server, [uuid7()])
        controller, terminal = pty.openpty()
        try:
            proc = subprocess.Popen(
                [*MODULE, "clear", "--data-dir", data_dir(server)],
                stdin=terminal,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            os.write(controller, f"{answer}\n".encode())
            out, err = proc.communicate(timeout=20)
        finally:
            os.close(terminal)
            os.close(controller)
        assert err == f"delete 1 event and 1 log line from {server.store.path}? [y/N] "
        deleted = f"deleted 1 event and 1 log line from {server.store.path}\n"
        assert (proc.returncode, out) == ((1, "nothing deleted\n") if kept else (0, deleted))
        assert len(server.events()) == (1 if kept else 0)
        assert len(server.store.logs()) == (1 if kept else 0)


class TestCheck:
    def test_accepted(self, server: LocalServer) -> None:
        """`check` with the host and key in the environment sends a test event and a log
        line, says they were accepted (without showing the key), and exits 0."""
        env = {**os.environ, "POSTHOG_HOST": server.url, "POSTHOG_API_KEY": API_KEY}
        result = cli("check", env=env)
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == f"sent 1 event and 1 log line to {server.url}: accepted\n"
        [event] = server.events(event="posthog_logging_check")
        assert event["properties"]["$process_person_profile"] is False
        [line] = server.store.logs()
        assert "check" in line["body"]

    def test_options_before_the_environment(self, server: LocalServer) -> None:
        """--host and --api-key are used over POSTHOG_HOST and POSTHOG_API_KEY."""
        env = {**os.environ, "POSTHOG_HOST": f"http://127.0.0.1:{free_port()}"}
        env["POSTHOG_API_KEY"] = "phc_of_another_project"
        result = cli("check", "--host", server.url, "--api-key", API_KEY, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.endswith(f"to {server.url}: accepted\n")
        assert len(server.events(event="posthog_logging_check")) == 1

    @pytest.mark.parametrize(
        ("status", "meaning"),
        [
            (401, "the project API key is not valid for this host"),
            (503, "the host failed; try again later"),
        ],
    )
    def test_refused(self, server: LocalServer, status: int, meaning: str) -> None:
        """When the host refuses, `check` says so with the status and what it means, once,
        and exits 1."""
        server.inject(Fault(status=status), times=None)
        env = {**os.environ, "POSTHOG_HOST": server.url, "POSTHOG_API_KEY": API_KEY}
        result = cli("check", env=env)
        assert (result.returncode, result.stderr) == (1, ""), result.stderr
        assert result.stdout.startswith(
            f"sent 1 event and 1 log line to {server.url}: refused: {status} ({meaning}; "
            f"the host said: injected fault: answered {status}"
        )
        assert len(result.stdout.splitlines()) == 1
        assert API_KEY not in result.stdout
        assert server.events() == [] and server.store.logs() == []

    def test_one_accepted_and_one_refused(self, server: LocalServer) -> None:
        """When the host takes one and refuses the other (a self-hosted PostHog without
        Logs, say), `check` says which was which, and exits 1."""
        server.inject(Fault(), Fault(status=404))  # the first request is served, not the second
        env = {**os.environ, "POSTHOG_HOST": server.url, "POSTHOG_API_KEY": API_KEY}
        result = cli("check", env=env)
        refused = "refused: 404 (nothing at this address takes it: check the host; "
        if server.events():  # the event's request came first
            said = f"the event: accepted; the log line: {refused}"
        else:
            assert len(server.store.logs()) == 1
            said = f"the event: {refused}"
        assert result.returncode == 1
        assert result.stdout.startswith(f"sent 1 event and 1 log line to {server.url}: {said}")
        if not server.events():
            assert result.stdout.rstrip().endswith("; the log line: accepted")

    def test_server_down(self, server: LocalServer) -> None:
        """When nothing listens at the host, `check` says it could not connect, exits 1."""
        server.down()
        env = {**os.environ, "POSTHOG_HOST": server.url, "POSTHOG_API_KEY": API_KEY}
        result = cli("check", env=env)
        assert (result.returncode, result.stderr) == (1, "")
        assert result.stdout.startswith(
            f"sent 1 event and 1 log line to {server.url}: could not connect: "
        )
        assert len(result.stdout.splitlines()) == 1


class TestUserErrors:
    @pytest.mark.parametrize(
        ("args", "said"),
        [
            (
                ["serve", "--port", "99999"],
                "argument --port: '99999' is not a port number (0 to 65535)",
            ),
            (["demo", "--port", "http"], "argument --port: 'http' is not a port number"),
            (
                ["events", "--limit", "-5"],
                "argument --limit: '-5' is not a count: give 0 (all) or more",
            ),
            (["logs", "--limit", "ten"], "argument --limit: 'ten' is not a count"),
            (
                ["logs", "--level", "LOUD"],
                "argument --level: 'LOUD' is not a logging level: use DEBUG",
            ),
            ([], "the following arguments are required: COMMAND"),
            (["tail"], "argument COMMAND: invalid choice: 'tail'"),
            (["events", "--sesion", "x"], "unrecognized arguments: --sesion x"),
            (["clear"], "stdin is not a terminal: pass --yes to delete without asking"),
            (["check"], "no API key: pass --api-key, or set POSTHOG_API_KEY"),
            (
                ["check", "--api-key", "phc_x", "--host", "eu.i.posthog.com"],
                "the host must be an http:// or https:// URL, not 'eu.i.posthog.com' "
                "(did you mean 'https://eu.i.posthog.com'?)",
            ),
            (["check", "--api-key", "phc_x", "--timeout", "0"], "argument --timeout: '0' is not"),
        ],
    )
    def test_one_line_and_status_2(self, args: list[str], said: str) -> None:
        """A mistake on the command line is said in one line on stderr, exit status 2: no
        traceback, and argparse's mistakes end with where to find help."""
        line = usage_error(cli(*args))
        assert said in line
        if "argument" in said or "COMMAND" in said:  # argparse's: where to find help
            assert re.search(r" \(see: python -m posthog_logging( [a-z]+)? --help\)$", line)

    @pytest.mark.parametrize("command", ["serve", "demo"])
    def test_port_in_use(self, tmp_path: Path, command: str) -> None:
        """`serve` and `demo` on a port something else listens on: one line naming the port
        and the option to choose another, exit status 2."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = cli(command, "--port", str(port), "--data-dir", str(tmp_path), timeout=20)
        line = usage_error(result)
        assert line == f"posthog-logging: error: port {port} is in use; choose another with --port"

    @pytest.mark.parametrize(
        "args", [["events"], ["logs"], ["clear", "--yes"], ["serve", "--port", "0"], ["demo"]]
    )
    def test_data_dir_is_a_file(self, tmp_path: Path, args: list[str]) -> None:
        """A --data-dir that is a file is said in one line, whatever the command."""
        path = tmp_path / "notes.txt"
        path.write_text("not a directory")
        line = usage_error(cli(*args, "--data-dir", str(path), timeout=20))
        assert line == (
            f"posthog-logging: error: the data directory {path} is a file; "
            "give a directory with --data-dir"
        )

    def test_data_dir_with_something_else_in_it(self, tmp_path: Path) -> None:
        """A --data-dir whose events.sqlite3 is not a store is said in one line."""
        (tmp_path / "events.sqlite3").write_text("these are my notes, not a database\n" * 100)
        line = usage_error(cli("events", "--data-dir", str(tmp_path)))
        store = tmp_path / "events.sqlite3"
        assert (
            line == f"posthog-logging: error: cannot read the store {store}: file is not a database"
        )

    @pytest.mark.parametrize(
        ("args", "mode"),
        [
            (["events"], 0o000),
            (["serve", "--port", "0"], 0o000),
            (["logs"], 0o500),
            (["clear", "--yes"], 0o500),
        ],
    )
    def test_data_dir_without_permission(self, tmp_path: Path, args: list[str], mode: int) -> None:
        """A --data-dir the user may not enter (mode 000), or may read but not write (500;
        SQLite writes beside its file even to read), with a store in it, is said in one
        line, whatever the command."""
        locked = tmp_path / "locked"
        LocalServer(data_dir=locked).stop()  # a store is there
        locked.chmod(mode)
        try:
            result = cli(*args, "--data-dir", str(locked), command=WITHOUT_OVERRIDE, timeout=20)
        finally:
            locked.chmod(stat.S_IRWXU)
        if result.returncode == 77:
            pytest.skip("running as root, and cannot drop the capability to ignore permissions")
        line = usage_error(result)
        assert line == (
            f"posthog-logging: error: no permission to use {locked} as the data directory "
            "(it must be readable and writable); give another with --data-dir"
        )


class TestHelp:
    def test_version(self) -> None:
        """--version prints the package's version."""
        result = cli("--version")
        assert (result.returncode, result.stdout) == (
            0,
            f"posthog-logging {posthog_logging.__version__}\n",
        )

    def test_help_describes_every_command(self) -> None:
        """--help lists each command with what it does and says the two ways to run it;
        each command's --help describes it and its filters."""
        top = cli("--help").stdout
        words = " ".join(top.split())
        assert "`posthog-logging` and `python -m posthog_logging` are the same command" in words
        for command, summary in [
            ("serve", "run the local PostHog-compatible server"),
            ("events", "list the events the local server stored"),
            ("logs", "list the log lines the local server stored"),
            ("clear", "delete every event and log line the local server stored"),
            ("check", "send a test event and log line to PostHog"),
            ("demo", "run the demo against an embedded local server"),
        ]:
            assert re.search(rf"^\s+{command}\s+{re.escape(summary)}", top, re.M), command
        events = cli("events", "--help").stdout
        assert "List the events the local server stored" in events
        for option in ("--event", "--person", "--session", "--limit", "--json", "--data-dir"):
            assert option in events
        logs = cli("logs", "--help").stdout
        for option in ("--level", "--person", "--session", "--limit", "--json", "--data-dir"):
            assert option in logs
        check = cli("check", "--help").stdout
        assert "Send one test event and one log line" in check and "--api-key" in check

    def test_the_console_script(self, tmp_path: Path) -> None:
        """The installed `posthog-logging` script is the same program, and names itself so in
        what it tells the user."""
        script = Path(sys.executable).parent / "posthog-logging"
        if not script.exists():
            pytest.skip(f"the console script is not installed next to {sys.executable}")
        listed = cli("events", "--data-dir", str(tmp_path), command=[str(script)])
        assert listed.stdout.startswith("no events stored yet")
        line = usage_error(cli("events", "--limit", "-1", command=[str(script)]))
        assert line.endswith("(see: posthog-logging events --help)")


class TestDemo:
    def test_demo(self, tmp_path: Path) -> None:
        """The demo runs offline, and prints the events and exceptions that arrived: a
        logged exception, one leaving a context, an error logged without one, and the
        crash of a job that died of one; its sessions can be told apart, and it says how
        to list them again, with the same --data-dir."""
        env = dict(os.environ)
        env.pop("POSTHOG_API_KEY", None)
        result = subprocess.run(
            [*MODULE, "demo", "--data-dir", str(tmp_path)],
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
            f"List them again: python -m posthog_logging events --data-dir {tmp_path} "
            f"(and: python -m posthog_logging logs --data-dir {tmp_path})",
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
        [session] = re.findall(r"Session (\S+)\.", out)
        assert f"{session[:4]}…{session[-8:]}" in cart
        later = [line for line in lines.splitlines() if "user_7" in line]
        assert len(later) == 2 and f"…{session[-8:]}" not in later[0]


class TestWebView:
    def test_demo_keep_serves_the_view_until_interrupted(self, tmp_path: Path) -> None:
        """demo --keep prints the view's address, serves it with the demo's events, and
        stops cleanly on Ctrl-C."""
        import requests

        proc = subprocess.Popen(
            [*MODULE, "demo", "--keep", "--data-dir", str(tmp_path)],
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
                *MODULE,
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
