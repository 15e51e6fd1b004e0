"""Command line: ``python -m posthog_logging {serve,events,logs,demo}``.

- ``serve`` runs the local PostHog-compatible server until interrupted;
- ``events`` lists the events it has stored, ``logs`` the log lines;
- ``demo`` starts a server on a free loopback port, runs a small application through
  the logging bridge, and prints what arrived. No PostHog account, no network.

The tables these print are made in `posthog_logging.cli.formatting`; the demo's
application is `posthog_logging.cli.demo`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..levels import parse_level, severity_number
from .formatting import format_events, format_logs

__all__ = ["format_events", "format_logs", "main"]

DEFAULT_PORT = 8990


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..server import LocalServer

    if not _is_loopback(args.host):
        print(
            f"warning: serving on {args.host}: anyone who can reach this address can send "
            "events and read every stored event in the web view",
            file=sys.stderr,
            flush=True,
        )
    server = LocalServer(args.host, args.port, data_dir=args.data_dir, quiet=not args.verbose)
    print(f"posthog-logging local server on {server.url}", flush=True)
    print(f"  web view: {server.url}/", flush=True)
    print(f"  data: {server.store.path}", flush=True)
    print(
        f"  send to it with POSTHOG_HOST={server.url} POSTHOG_API_KEY=phc_local "
        "(any phc_ key is accepted)",
        flush=True,
    )
    print("  list what arrived: python -m posthog_logging events   (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    from ..server import EventStore

    store = EventStore(args.data_dir)
    try:
        events = store.events(limit=args.limit, event=args.event, distinct_id=args.person)
    finally:
        store.close()
    if args.json:
        print(json.dumps(events, indent=2, ensure_ascii=False))
    elif not events:
        print(f"no events stored in {store.path}")
    else:
        print(format_events(events))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from ..server import EventStore

    store = EventStore(args.data_dir)
    try:
        lines = store.logs(
            limit=args.limit,
            distinct_id=args.person,
            session_id=args.session,
            min_severity=severity_number(parse_level(args.level, "--level")) if args.level else 0,
        )
    finally:
        store.close()
    if args.json:
        print(json.dumps(lines, indent=2, ensure_ascii=False))
    elif not lines:
        print(f"no log lines stored in {store.path}")
    else:
        print(format_logs(lines))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(data_dir=args.data_dir, port=args.port, keep=args.keep)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m posthog_logging",
        description="posthog-logging: a local PostHog-compatible server, and a demo.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def data_dir_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            default=None,
            help="where events are stored (default: $POSTHOG_LOGGING_DATA_DIR, "
            "else ~/.local/share/posthog-logging)",
        )

    serve = sub.add_parser("serve", help="run the local PostHog-compatible server")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log each request")
    data_dir_option(serve)
    serve.set_defaults(func=_cmd_serve)

    events = sub.add_parser("events", help="list the events the local server stored")
    events.add_argument("--json", action="store_true", help="print them as JSON")
    events.add_argument("--limit", type=int, default=50, help="the newest N (default 50)")
    events.add_argument("--event", default=None, help="only events with this name")
    events.add_argument("--person", default=None, help="only events of this distinct_id")
    data_dir_option(events)
    events.set_defaults(func=_cmd_events)

    logs = sub.add_parser("logs", help="list the log lines the local server stored")
    logs.add_argument("--json", action="store_true", help="print them as JSON")
    logs.add_argument("--limit", type=int, default=50, help="the newest N (default 50)")
    logs.add_argument("--person", default=None, help="only lines of this distinct_id")
    logs.add_argument("--session", default=None, help="only lines of this session")
    logs.add_argument("--level", default=None, help="only lines at or above this level (INFO, ...)")
    data_dir_option(logs)
    logs.set_defaults(func=_cmd_logs)

    demo = sub.add_parser("demo", help="run the demo against an embedded local server")
    demo.add_argument("--port", type=int, default=0, help="default: a free port")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the server (and its web view) running until Ctrl-C",
    )
    data_dir_option(demo)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    started = time.monotonic()
    status: int = args.func(args)
    if args.command == "demo":
        print(f"\n(demo took {time.monotonic() - started:.1f}s)", file=sys.stderr)
    return status
