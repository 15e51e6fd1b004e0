"""Instructions per call, counted by valgrind's callgrind: a measure that does not move
with the machine's load, for comparing two versions of the library side by side.

    python bench/instructions.py                   # this checkout
    python bench/instructions.py --tree ../other   # another checkout, same interpreter

Each case runs twice in a fresh interpreter under callgrind (2,000 and 6,000 calls); the
difference, divided by 4,000, is what one call costs, start-up and set-up cancelling
out. ``PYTHONHASHSEED`` is fixed so that two runs count the same. Needs valgrind.

Cases (the context has an identity, a session and two tags, as in ``bench/run.py``):
``null`` and ``queue`` the same record through ``NullHandler`` and ``QueueHandler``;
``marked`` a marked record through ``PostHogHandler``, the caller's thread only (the
sender never wakes); ``unmarked`` a record that is not sent; ``line`` a record sent to
PostHog Logs; ``structlog`` a marked entry through ``PostHogProcessor``; ``capture``
``Client.capture``; ``build`` the sender building one event; ``pipeline`` a marked record
end to end, caller and sender, through a transport that answers at once.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

CASES = [
    "null",
    "queue",
    "marked",
    "unmarked",
    "line",
    "structlog",
    "capture",
    "build",
    "pipeline",
]

SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    import posthog_logging as posthog
    from posthog_logging import Client, PostHogHandler

    case, n = sys.argv[1], int(sys.argv[2])
    extra = {"page": "/pricing", "plan": "pro", "items": 3, "value": 49.9, "ok": True}
    quiet = dict(flush_at=10**9, flush_interval=3600, max_queue_size=10**7)

    def answering_client():  # its batches are answered 200 at once, without a network
        try:
            from posthog_logging.delivery.transport import SendResult
        except ImportError:  # a checkout from before the Transport protocol
            import posthog_logging.client as client_module
            from posthog_logging.transport import SendResult

            class Recorder:
                def send(self, events, sent_at, timeout=None, kind="events"):
                    return SendResult(status=200)
            client_module._recorder = Recorder()
            return Client("phc_bench", host="http://127.0.0.1:9")

        class Null:
            def send(self, records, kind, timeout): return SendResult(status=200)
            def abort(self): pass
            def close(self): pass
            def reset_after_fork(self): pass
        return Client("phc_bench", host="http://127.0.0.1:9", transport=Null())

    def logger(**options):
        log = logging.getLogger("bench.instructions")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(PostHogHandler(**options))
        return log

    with posthog.new_context():
        posthog.identify_context("user_42")
        posthog.set_context_session("01929c8e-0000-7000-8000-000000000001")
        posthog.tag("plan", "pro")
        posthog.tag("request_id", "req_1")
        if case in ("null", "queue"):  # the baselines: NullHandler, QueueHandler
            import logging.handlers, queue
            q = queue.SimpleQueue()
            log = logging.getLogger("bench.baseline")
            log.propagate = False
            log.setLevel(logging.INFO)
            log.addHandler(logging.NullHandler() if case == "null"
                           else logging.handlers.QueueHandler(q))
            for _ in range(n):
                log.info("page_viewed", extra={**extra, "event": True})
        elif case == "build":
            from posthog_logging.contexts import current_state
            from posthog_logging.events import EventBuilder, PendingEvent
            from posthog_logging.serialisation import DEFAULT_REDACT_KEYS, Redactor
            builder = EventBuilder(redactor=Redactor(DEFAULT_REDACT_KEYS))
            state = current_state()
            pending = [
                PendingEvent("page_viewed", dict(extra), None, state,
                             1.7e9 + i / 1000, None, None, None)
                for i in range(n)
            ]
            for p in pending:
                builder.build(p)
        elif case == "pipeline":
            client = answering_client()
            log = logger(client=client)
            for _ in range(n):
                log.info("page_viewed", extra={**extra, "event": True})
            assert client.flush(60) and client.stats.sent == n, client.stats
        else:
            client = Client("phc_bench", host="http://127.0.0.1:9", **quiet)
            if case == "marked":
                log = logger(client=client)
                for _ in range(n):
                    log.info("page_viewed", extra={**extra, "event": True})
            elif case == "unmarked":
                log = logger(client=client)
                for i in range(n):
                    log.info("hello %s", i, extra=extra)
            elif case == "line":
                log = logger(client=client, logs_level="INFO")
                for i in range(n):
                    log.info("hello %s", i, extra=extra)
            elif case == "structlog":
                import structlog
                from posthog_logging.structlog import PostHogProcessor
                structlog.configure(
                    processors=[PostHogProcessor(client=client),
                                structlog.processors.JSONRenderer()],
                    logger_factory=structlog.ReturnLoggerFactory(),
                )
                log = structlog.get_logger()
                for _ in range(n):
                    log.info("page_viewed", capture=True, **extra)
            elif case == "capture":
                for _ in range(n):
                    client.capture("page_viewed", extra)
    os._exit(0)  # no exit hook: what is queued is not the measure
    """
)


def count(tree: pathlib.Path, case: str, n: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", SCRIPT, case, str(n)],
        capture_output=True, text=True, env=env, cwd=tree, check=False,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{case}: callgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", default=str(pathlib.Path(__file__).resolve().parent.parent))
    parser.add_argument("cases", nargs="*", help=f"some of {', '.join(CASES)} (default: all)")
    args = parser.parse_args()
    if unknown := set(args.cases) - set(CASES):
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (Debian: apt-get install valgrind)")
    tree = pathlib.Path(args.tree).resolve()
    print(f"| case ({tree.name}) | instructions per call |\n|---|---|")
    for case in args.cases or CASES:
        per_call = (count(tree, case, 6000) - count(tree, case, 2000)) // 4000
        print(f"| {case} | {per_call:,} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
