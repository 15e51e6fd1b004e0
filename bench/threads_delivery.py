"""N threads each log M marked events in their own context; check every one arrives once.

    python bench/threads_delivery.py [--threads 8] [--events 2000]

Sends through the real logging bridge to the package's local server on loopback and
prints how long the callers took, how long until the last delivery, and whether every
event arrived exactly once (by uuid) with its own thread's identity.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time

import posthog_logging as posthog
from posthog_logging.server import LocalServer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--events", type=int, default=2000, help="per thread")
    args = parser.parse_args()
    total = args.threads * args.events

    with tempfile.TemporaryDirectory() as data, LocalServer(data_dir=data) as server:
        client = posthog.Client("phc_bench", host=server.url, max_queue_size=total)
        log = logging.getLogger("bench.threads")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(posthog.PostHogHandler(client=client))

        def work(i: int) -> None:
            with posthog.new_context():
                posthog.identify_context(f"thread-{i}")
                for n in range(args.events):
                    log.info("tick", extra={"event": True, "n": n, "worker": i})

        threads = [threading.Thread(target=work, args=(i,)) for i in range(args.threads)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        callers_done = time.perf_counter() - start
        client.flush(60)
        events = server.wait_for_events(total, timeout=60)
        delivered = time.perf_counter() - start
        client.shutdown()

    uuids = {e["uuid"] for e in events}
    right_identity = all(
        e["distinct_id"] == "thread-{}".format(e["properties"]["worker"]) for e in events
    )
    print(f"{args.threads} threads x {args.events} events = {total}")
    print(f"callers done in {callers_done:.2f}s, last delivery after {delivered:.2f}s")
    print(
        f"arrived {len(events)}, distinct uuids {len(uuids)}, right identity: {right_identity}, "
        f"stats {client.stats}"
    )
    return 0 if len(events) == len(uuids) == total and right_identity else 1


if __name__ == "__main__":
    raise SystemExit(main())
