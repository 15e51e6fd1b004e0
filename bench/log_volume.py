"""What PostHog Logs receives from one service under each way of controlling the volume.

    python bench/log_volume.py                  # 10,000 requests
    python bench/log_volume.py --requests 50000

A simulated web service handles requests, each in its own ``new_context()``: an INFO
line when it starts and one when it ends, eight DEBUG lines of its own, three INFO lines
of a chatty database library (``sqlalchemy.engine``), and one request in a hundred fails
with an ERROR line. The same requests run under each set of ``PostHogHandler`` options
below, through a transport that answers at once and counts what would have been sent:
lines, and bytes of request bodies (OTLP JSON, and gzipped as the client sends them).
Sampling draws from a seeded generator, so a run gives the same figures every time.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import random
import sys
from collections.abc import Sequence
from typing import Any

from posthog_logging import Client, PostHogHandler, new_context
from posthog_logging.delivery.kinds import Kind
from posthog_logging.delivery.transport import SendResult

CONFIGS: dict[str, dict[str, Any]] = {
    "everything (logs_level=DEBUG)": {"logs_level": "DEBUG"},
    "logs_level=INFO": {"logs_level": "INFO"},
    "+ logs_levels={'sqlalchemy': 'WARNING'}": {
        "logs_level": "INFO",
        "logs_levels": {"sqlalchemy": "WARNING"},
    },
    "+ logs_hold_level='DEBUG'": {
        "logs_level": "INFO",
        "logs_levels": {"sqlalchemy": "WARNING"},
        "logs_hold_level": "DEBUG",
    },
    "+ logs_sample_rates={'INFO': 0.25}": {
        "logs_level": "INFO",
        "logs_levels": {"sqlalchemy": "WARNING"},
        "logs_hold_level": "DEBUG",
        "logs_sample_rates": {"INFO": 0.25, "WARNING": 1.0},
    },
}


class Counting:
    """A transport that answers every batch at once and counts what it was given."""

    def __init__(self) -> None:
        self.lines = 0
        self.body_bytes = 0
        self.gzip_bytes = 0

    def send(self, records: Sequence[bytes], kind: Kind, timeout: float) -> SendResult:
        if kind.name == "logs":
            body, _ = kind.request(records, api_key="phc_bench", service_name="shop")
            self.lines += len(records)
            self.body_bytes += len(body)
            self.gzip_bytes += len(gzip.compress(body, compresslevel=1, mtime=0))
        return SendResult(status=200)

    def abort(self) -> None: ...

    def close(self) -> None: ...

    def reset_after_fork(self) -> None: ...


def serve(requests: int) -> None:
    """The simulated service: ``requests`` requests, one in a hundred failing."""
    app = logging.getLogger("shop.views")
    db = logging.getLogger("sqlalchemy.engine")
    for i in range(requests):
        with new_context():
            app.info("GET /cart/%d started", i)
            for step in range(8):
                app.debug("cart %d: step %d of the price computation", i, step)
            for _ in range(3):
                db.info("SELECT cart_items.* FROM cart_items WHERE cart_id = %s", i)
            if i % 100 == 99:
                app.error("cart %d: the price service answered 503", i)
            app.info("GET /cart/%d done in %d ms", i, 12 + i % 30)


def measure(options: dict[str, Any], requests: int) -> Counting:
    random.seed(7)  # sampling draws from the random module: the same every run
    transport = Counting()
    client = Client("phc_bench", transport=transport, flush_at=500, flush_interval=0.05)
    handler = PostHogHandler(client=client, capture_errors_without_exception=False, **options)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)
    try:
        serve(requests)
        client.shutdown(30)
    finally:
        root.handlers[:] = []
    return transport


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    lines_per_request = 2 + 8 + 3
    print(
        f"{args.requests:,} requests, {args.requests * lines_per_request + args.requests // 100:,}"
        " lines logged\n"
    )
    print("| options | lines sent | MB sent (JSON) | MB sent (gzip) | of everything |")
    print("|---|---|---|---|---|")
    everything = None
    for name, options in CONFIGS.items():
        counted = measure(options, args.requests)
        everything = everything or counted.body_bytes
        print(
            f"| {name} | {counted.lines:,} | {counted.body_bytes / 1e6:.1f} "
            f"| {counted.gzip_bytes / 1e6:.2f} | {counted.body_bytes / everything:.1%} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
