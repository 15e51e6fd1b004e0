"""Command line: ``posthog-logging {serve,events,logs,clear,check,demo}``.

The console script ``posthog-logging`` and ``python -m posthog_logging`` are the same
program:

- ``serve`` runs the local PostHog-compatible server until interrupted;
- ``events`` lists the events it has stored, ``logs`` the log lines, and ``clear``
  deletes both;
- ``check`` sends one test event and one log line to a PostHog host with a project key,
  and says whether they were accepted;
- ``demo`` starts a server on a free loopback port, runs a small application through
  the logging bridge, and prints what arrived. No PostHog account, no network.

A mistake in how a command is run (a port in use, a bad option value, a data directory
that cannot be used) is said in one line on stderr, with exit status 2: commands raise
`UsageError`, and `main` says it. The tables are made in `posthog_logging.cli.formatting`;
the demo's application is `posthog_logging.cli.demo`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import socket
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from .._version import __version__
from ..levels import parse_level, severity_number
from .formatting import format_events, format_logs

if TYPE_CHECKING:
    from ..exceptions import DeliveryError
    from ..server import EventStore

__all__ = ["UsageError", "format_events", "format_logs", "main"]

NAME = "posthog-logging"
DEFAULT_PORT = 8990
STORE_FILE = "events.sqlite3"  # as EventStore names it

_T = TypeVar("_T")


class UsageError(Exception):
    """A mistake in how the command was run: `main` says it in one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 1 failed, 2 a usage error)."""
    started = time.monotonic()
    try:
        args = _parser().parse_args(argv)
        status: int = args.func(args)
    except UsageError as exc:
        print(f"{NAME}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... events | head`): nothing more to say, and Python
        # must not try again to flush stdout on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if args.command == "demo":
        print(f"\n(demo took {time.monotonic() - started:.1f}s)", file=sys.stderr)
    return status


# -- the commands -----------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..server import LocalServer

    store = _open_store(args.data_dir)
    try:
        server = _listening(
            args.host,
            args.port,
            lambda: LocalServer(args.host, args.port, store=store, quiet=not args.verbose),
        )
    except BaseException:
        store.close()
        raise
    if not _is_loopback(args.host):
        print(
            f"warning: serving on {args.host}: anyone who can reach this address can send "
            "events and read every stored event in the web view",
            file=sys.stderr,
            flush=True,
        )
    command = _command_name()
    print(f"{NAME} local server on {server.url}", flush=True)
    print(f"  web view: {server.url}/", flush=True)
    print(f"  data: {store.path}", flush=True)
    print(
        f"  send to it with POSTHOG_HOST={server.url} POSTHOG_API_KEY=phc_local "
        "(any phc_ key is accepted)",
        flush=True,
    )
    print(
        f"  list what arrived: {command} events{_data_dir_option(args.data_dir)}   (Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        store.close()
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    directory = _data_dir(args.data_dir)
    store = _stored(directory)
    if store is None:
        print("[]" if args.json else f"no events stored yet in {directory / STORE_FILE}")
        return 0
    try:
        events = store.page(
            limit=args.limit or sys.maxsize,
            event=args.event,
            distinct_id=args.person,
            session_id=args.session,
        )
        stored = store.count() if not events else len(events)
    finally:
        store.close()
    for event in events:
        del event["seq"]  # the web view's cursor, not the event's
    if args.json:
        print(_json(events))
    elif events:
        print(format_events(events))
    else:
        print(_nothing_listed("event", stored, store.path, _filters(args, "event")))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    directory = _data_dir(args.data_dir)
    store = _stored(directory)
    if store is None:
        print("[]" if args.json else f"no log lines stored yet in {directory / STORE_FILE}")
        return 0
    try:
        lines = store.logs(
            limit=args.limit or None,
            distinct_id=args.person,
            session_id=args.session,
            min_severity=severity_number(args.level) if args.level is not None else 0,
        )
        stored = store.log_count() if not lines else len(lines)
    finally:
        store.close()
    if args.json:
        print(_json(lines))
    elif lines:
        print(format_logs(lines))
    else:
        print(_nothing_listed("log line", stored, store.path, _filters(args, "level")))
    return 0


def _cmd_clear(args: argparse.Namespace) -> int:
    if not args.yes and not sys.stdin.isatty():
        raise UsageError(
            "clear asks before deleting, and stdin is not a terminal: "
            "pass --yes to delete without asking"
        )
    directory = _data_dir(args.data_dir)
    store = _stored(directory)
    if store is None:
        print(f"nothing to clear: no events or log lines stored in {directory / STORE_FILE}")
        return 0
    try:
        events, lines = store.count(), store.log_count()
        if not events and not lines:
            print(f"nothing to clear: no events or log lines stored in {store.path}")
            return 0
        what = f"{_counted(events, 'event')} and {_counted(lines, 'log line')}"
        if not args.yes and not _confirm(f"delete {what} from {store.path}?"):
            print("nothing deleted")
            return 1
        store.clear()
    finally:
        store.close()
    print(f"deleted {what} from {store.path}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    host, api_key = _check_target(args)
    accepted, failures, answered = _send_check(host, api_key, args.timeout)
    outcomes = {
        kind: "accepted" if accepted[kind] else _failure(kind, failures, answered, args.timeout)
        for kind in ("event", "line")
    }
    event, line = outcomes["event"], outcomes["line"]
    said = event if event == line else f"the event: {event}; the log line: {line}"
    print(f"sent 1 event and 1 log line to {host}: {said}", flush=True)
    return 0 if event == line == "accepted" else 1


def _check_target(args: argparse.Namespace) -> tuple[str, str]:
    """The host and project key `check` sends to: its options, else the environment."""
    from ..delivery.http import DEFAULT_HOST

    api_key = (
        (args.api_key or "").strip()
        or os.environ.get("POSTHOG_API_KEY", "").strip()
        or os.environ.get("POSTHOG_PROJECT_API_KEY", "").strip()
    )
    if not api_key:
        raise UsageError("no API key: pass --api-key, or set POSTHOG_API_KEY")
    host = (args.host or os.environ.get("POSTHOG_HOST") or DEFAULT_HOST).strip().rstrip("/")
    parts = urllib.parse.urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        hint = f" (did you mean 'https://{host}'?)" if "://" not in host else ""
        raise UsageError(f"the host must be an http:// or https:// URL, not {host!r}{hint}")
    return host, api_key


def _send_check(
    host: str, api_key: str, timeout: float
) -> tuple[dict[str, bool], list[tuple[str, DeliveryError]], bool]:
    """Send one test event and one log line, without retries, and wait for the answers:
    which were accepted (``"event"``, ``"line"``), the failures given to ``on_error``
    (by kind), and whether everything was answered in time."""
    from ..client import Client
    from ..exceptions import DeliveryError
    from ..stdlib import PostHogHandler

    failures: list[tuple[str, DeliveryError]] = []

    def on_error(error: Exception, records: list[dict[str, Any]]) -> None:
        if isinstance(error, DeliveryError):
            # An event has its name; a log line (an OTLP LogRecord) has none.
            failures.append(("event" if any("event" in r for r in records) else "line", error))

    # What the client would warn about is said by `check` itself, once, in plain words.
    logging.getLogger("posthog_logging").addHandler(logging.NullHandler())
    try:
        client = Client(
            api_key,
            host,
            max_retries=0,
            timeout=timeout,
            flush_interval=0.05,
            on_error=on_error,
            service_name=f"{NAME}-check",
        )
    except ValueError as exc:  # a key the client cannot send with (a personal key, ...)
        raise UsageError(str(exc)) from None
    lines = logging.getLogger(f"{NAME}.check")
    lines.propagate = False
    lines.setLevel(logging.INFO)
    handler = PostHogHandler(client=client, logs_level="INFO")
    lines.addHandler(handler)
    try:
        client.capture(
            "posthog_logging_check",
            {"$process_person_profile": False, "version": __version__},
            distinct_id=f"{NAME}-check",
        )
        lines.info("%s check: a test line sent by `%s check`", NAME, NAME)
        answered = client.flush(timeout + 2)
        stats = client.stats
    finally:
        lines.removeHandler(handler)
        client.shutdown(1)
    accepted = {"event": stats.sent > stats.logs_sent, "line": stats.logs_sent > 0}
    return accepted, failures, answered


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _open_store(args.data_dir).close()  # say now, in one line, if the directory cannot be used
    return _listening(
        "127.0.0.1",
        args.port,
        lambda: run_demo(
            data_dir=args.data_dir, port=args.port, keep=args.keep, command=_command_name()
        ),
    )


# -- the parser -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, saying a mistake in one line (with where to find help) like the commands do."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    command = _command_name()
    parser = _Parser(
        prog=command,
        description="posthog-logging: check a PostHog project key, run a local "
        "PostHog-compatible server, list what it received, and a demo. "
        "`posthog-logging` and `python -m posthog_logging` are the same command.",
        epilog=f"'{command} COMMAND --help' describes a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{NAME} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=description)
        return p

    def data_dir_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="where events are stored (default: $POSTHOG_LOGGING_DATA_DIR, "
            "else $XDG_DATA_HOME/posthog-logging, else ~/.local/share/posthog-logging)",
        )

    def filters(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--json", action="store_true", help="print them as JSON")
        p.add_argument("--limit", type=_limit, default=50, help="the newest N (default 50; 0: all)")
        p.add_argument("--person", default=None, help=f"only {what} of this distinct_id")
        p.add_argument("--session", default=None, help=f"only {what} of this session id")

    serve = add(
        "serve",
        "run the local PostHog-compatible server",
        "Run a PostHog-compatible capture server (events and PostHog Logs lines) with a web "
        "view of what arrives, until Ctrl-C. Point an application at it with "
        "POSTHOG_HOST=http://127.0.0.1:8990 and any phc_ key.",
    )
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0: a free one"
    )
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log each request")
    data_dir_option(serve)
    serve.set_defaults(func=_cmd_serve)

    events = add(
        "events",
        "list the events the local server stored",
        "List the events the local server stored, oldest first, as a table or as JSON.",
    )
    filters(events, "events")
    events.add_argument("--event", default=None, help="only events with this name")
    data_dir_option(events)
    events.set_defaults(func=_cmd_events)

    logs = add(
        "logs",
        "list the log lines the local server stored",
        "List the log lines (PostHog Logs) the local server stored, oldest first, as a "
        "table or as JSON.",
    )
    filters(logs, "lines")
    logs.add_argument(
        "--level", type=_level, default=None, help="only lines at or above this level (INFO, ...)"
    )
    data_dir_option(logs)
    logs.set_defaults(func=_cmd_logs)

    clear = add(
        "clear",
        "delete every event and log line the local server stored",
        "Delete every event and log line in the local server's store, after asking "
        "(on a terminal) or with --yes.",
    )
    clear.add_argument("-y", "--yes", action="store_true", help="delete without asking")
    data_dir_option(clear)
    clear.set_defaults(func=_cmd_clear)

    check = add(
        "check",
        "send a test event and log line to PostHog, and say if they were accepted",
        "Send one test event and one log line to a PostHog host with a project API key, "
        "wait for the answer, and say what happened. Exit status 0 when both were "
        "accepted, 1 when not, 2 without a key.",
    )
    check.add_argument(
        "--host", default=None, help="default: $POSTHOG_HOST, else https://us.i.posthog.com"
    )
    check.add_argument(
        "--api-key", default=None, help="the project API key (default: $POSTHOG_API_KEY)"
    )
    check.add_argument(
        "--timeout", type=_seconds, default=10.0, help="seconds to wait for the answer (default 10)"
    )
    check.set_defaults(func=_cmd_check)

    demo = add(
        "demo",
        "run the demo against an embedded local server",
        "Run a small application whose logging goes to an embedded local server, then "
        "print what arrived. Offline: no PostHog account needed.",
    )
    demo.add_argument("--port", type=_port, default=0, help="default: a free port")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the server (and its web view) running until Ctrl-C",
    )
    data_dir_option(demo)
    demo.set_defaults(func=_cmd_demo)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return port


def _limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: give 0 (all) or more")
    return limit


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return seconds


def _level(text: str) -> int:
    try:
        return parse_level(int(text) if text.strip().isdigit() else text, "--level")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a logging level: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        ) from None


# -- the store and the port -------------------------------------------------------------------


def _data_dir(data_dir: Path | None) -> Path:
    from ..server import default_data_dir

    return data_dir if data_dir is not None else default_data_dir()


def _open_store(data_dir: Path | None) -> EventStore:
    """The store in the data directory, created if missing; a `UsageError` saying why when
    the directory cannot be used."""
    from ..server import EventStore

    directory = _data_dir(data_dir)
    try:
        return EventStore(directory)
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(_store_problem(directory, exc)) from None


def _stored(directory: Path) -> EventStore | None:
    """The store in *directory* if there is one, else None: reading creates nothing."""
    try:
        os.stat(directory / STORE_FILE)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(_store_problem(directory, exc)) from None
    return _open_store(directory)


def _store_problem(directory: Path, exc: BaseException) -> str:
    """Why the data directory cannot be used, in one line."""
    if os.path.isfile(directory):
        return f"the data directory {directory} is a file; give a directory with --data-dir"
    if isinstance(exc, NotADirectoryError):
        return f"cannot use {directory} as the data directory: a part of that path is a file"
    usable = os.access(directory, os.R_OK | os.W_OK | os.X_OK)
    if isinstance(exc, PermissionError) or (os.path.isdir(directory) and not usable):
        return (
            f"no permission to use {directory} as the data directory (it must be readable "
            "and writable); give another with --data-dir"
        )
    if isinstance(exc, sqlite3.Error):
        return f"cannot read the store {directory / STORE_FILE}: {exc}"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot use {directory} as the data directory: {reason}"


def _listening(host: str, port: int, start: Callable[[], _T]) -> _T:
    """``start()``, with a failure to listen on *host* and *port* said as a `UsageError`."""
    try:
        return start()
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}: {exc.strerror}") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} is in use; choose another with --port") from None
        if exc.errno == errno.EACCES:
            raise UsageError(
                f"no permission to listen on port {port}; choose one above 1023 with --port"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"cannot listen on {host}: not an address of this machine") from None
        raise


# -- what commands say ------------------------------------------------------------------------


def _command_name() -> str:
    """How the user ran us: the console script, or ``python -m posthog_logging``; the hints
    name the same."""
    return NAME if Path(sys.argv[0]).name.startswith(NAME) else "python -m posthog_logging"


def _data_dir_option(data_dir: Path | None) -> str:
    return f" --data-dir {shlex.quote(str(data_dir))}" if data_dir is not None else ""


def _json(items: Sequence[dict[str, Any]]) -> str:
    import json

    return json.dumps(items, indent=2, ensure_ascii=False)


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _filters(args: argparse.Namespace, own: str) -> list[str]:
    """The filter options given, as they were typed (a level by its name)."""
    given = []
    for name in (own, "person", "session"):
        value = getattr(args, name)
        if value is not None:
            shown = logging.getLevelName(value) if name == "level" else shlex.quote(value)
            given.append(f"--{name} {shown}")
    return given


def _nothing_listed(noun: str, stored: int, path: Path, filters: Sequence[str]) -> str:
    """Why nothing was listed: nothing stored yet, or nothing that matches the filters."""
    if not stored or not filters:
        return f"no {noun}s stored yet in {path}"
    return f"no {noun}s match {' '.join(filters)} ({_counted(stored, noun)} stored in {path})"


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


_MEANING = {
    400: "the host could not read the request",
    401: "the project API key is not valid for this host",
    403: "the host does not allow it",
    404: "nothing at this address takes it: check the host",
    413: "too large",
    429: "too many requests; try again later",
}


def _failure(
    kind: str, failures: Sequence[tuple[str, DeliveryError]], answered: bool, timeout: float
) -> str:
    """Why the test event (*kind* ``"event"``) or log line (``"line"``) was not accepted."""
    error = next((error for k, error in failures if k == kind), None)
    if error is None:
        return f"no answer within {timeout:g}s" if not answered else "not sent"
    message, status = str(error), error.status
    if status is None:
        if "deadline passed" in message:
            return f"no answer within {timeout:g}s"
        return f"could not connect: {message}"
    detail = message.removeprefix(f"HTTP {status}").strip().removeprefix("(").removesuffix(")")
    meaning = _MEANING.get(status) or (
        "the host failed; try again later"
        if status >= 500
        else "redirected"
        if status < 400
        else ""
    )
    said = "; ".join(part for part in (meaning, detail and f"the host said: {detail}") if part)
    return f"refused: {status}" + (f" ({said})" if said else "")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
