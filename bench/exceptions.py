"""What error tracking costs the thread that logs, side by side in one run.

    python bench/exceptions.py             # 5 interleaved repeats, medians
    python bench/exceptions.py --repeats 9

Each case is a log call made many times on the caller's thread, with a client whose
sender stays asleep (it builds and sends nothing during the loop), so the figure is what
the application's thread pays: taking the snapshot, the locals, the steps. Building the
event happens later on the sender's thread and is not counted here (``bench/run.py``
counts a whole pipeline). Cases:

- ``marked``: a marked record (an event), the reference;
- ``exception``: ``log.exception`` of an exception raised three calls deep;
- ``exception+locals``: the same with ``capture_exception_code_variables``;
- ``flooded``: the same once its kind has used up its flood-control bucket (dropped);
- ``error-line``: ``log.error`` without an exception (a synthetic exception);
- ``info``: an unmarked ``log.info`` below every level that sends;
- ``info+step``: the same with ``exception_steps_level="INFO"`` (recorded as a step);
- ``locals-5``, ``locals-10M``: ``take_variables`` alone, on a frame with five small
  locals and on one holding a list of ten million items.

Repeats are interleaved (repeat 1 of every case, then repeat 2, ...) so that a noisy
moment slows all cases alike; the table gives medians of CPU microseconds per call.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from posthog_logging import Client, PostHogHandler, new_context
from posthog_logging.code_variables import VariableRules, take_variables
from posthog_logging.delivery.transport import SendResult

QUIET = {"flush_at": 10**9, "flush_interval": 3600, "max_queue_size": 10**7}


class Answering:
    """A transport that answers every batch at once (nothing is sent during the loop)."""

    def send(self, records: Any, kind: Any, timeout: float) -> SendResult:
        return SendResult(status=200)

    def abort(self) -> None: ...

    def close(self) -> None: ...

    def reset_after_fork(self) -> None: ...


def _logger(name: str, **handler_options: Any) -> tuple[logging.Logger, Client]:
    client_options = {
        key: handler_options.pop(key)
        for key in list(handler_options)
        if key in ("capture_exception_code_variables", "exception_rate_limit")
    }
    client = Client("phc_bench", transport=Answering(), **QUIET, **client_options)
    log = logging.getLogger(f"bench.{name}")
    log.handlers[:] = [PostHogHandler(client=client, **handler_options)]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log, client


def _deep(order: int, amount: float) -> None:
    customer = {"id": order, "plan": "pro"}
    attempt = 2
    _charge(order, amount, customer, attempt)


def _charge(order: int, amount: float, customer: dict[str, Any], attempt: int) -> None:
    provider = "acme"
    _refuse(order, provider)


def _refuse(order: int, provider: str) -> None:
    raise ValueError(f"card declined for order {order} by {provider}")


def _exception_case(log: logging.Logger) -> Callable[[int], None]:
    def run(n: int) -> None:
        for i in range(n):
            try:
                _deep(i, 49.9)
            except ValueError:
                log.exception("payment failed")

    return run


def case_marked() -> Callable[[int], None]:
    log, _ = _logger("marked")
    extra = {"event": True, "page": "/pricing", "plan": "pro"}

    def run(n: int) -> None:
        for _ in range(n):
            log.info("page_viewed", extra=extra)

    return run


def case_exception() -> Callable[[int], None]:
    return _exception_case(_logger("exception", exception_rate_limit=False)[0])


def case_exception_locals() -> Callable[[int], None]:
    log, _ = _logger("locals", exception_rate_limit=False, capture_exception_code_variables=True)
    return _exception_case(log)


def case_flooded() -> Callable[[int], None]:
    log, client = _logger("flooded")
    _exception_case(log)(100)  # uses up the bucket of this kind of exception
    assert client.stats.dropped.get("exception_rate_limited"), "the bucket is not empty"
    return _exception_case(log)


def case_error_line() -> Callable[[int], None]:
    log, _ = _logger("error", exception_rate_limit=False)

    def run(n: int) -> None:
        for i in range(n):
            log.error("payment failed for order %s", i)

    return run


def _info(log: logging.Logger) -> Callable[[int], None]:
    def run(n: int) -> None:
        with new_context():
            for i in range(n):
                log.info("cart has %d items", i)

    return run


def case_info() -> Callable[[int], None]:
    return _info(_logger("info")[0])


def case_info_step() -> Callable[[int], None]:
    return _info(_logger("step", exception_steps_level="INFO")[0])


def _frame_of(make: Callable[[], None]) -> Any:
    try:
        make()
    except ValueError as exc:
        return [frame for frame, _ in traceback.walk_tb(exc.__traceback__)][-1]
    raise AssertionError("no exception")


def _small_locals() -> None:
    count, name, ratio, ok, path = 3, "bob", 0.5, True, "/srv/app/views.py"
    raise ValueError((count, name, ratio, ok, path))


def _big_local() -> None:
    items = list(range(10_000_000))
    raise ValueError(len(items))


def _locals_case(make: Callable[[], None]) -> Callable[[int], None]:
    frames = [_frame_of(make)]
    rules = VariableRules()

    def run(n: int) -> None:
        for _ in range(n):
            take_variables(frames, rules)

    return run


CASES: dict[str, tuple[Callable[[], Callable[[int], None]], int]] = {
    "marked": (case_marked, 20_000),
    "exception": (case_exception, 5_000),
    "exception+locals": (case_exception_locals, 5_000),
    "flooded": (case_flooded, 5_000),
    "error-line": (case_error_line, 5_000),
    "info": (case_info, 20_000),
    "info+step": (case_info_step, 20_000),
    "locals-5": (lambda: _locals_case(_small_locals), 20_000),
    "locals-10M": (lambda: _locals_case(_big_local), 20_000),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = {name: make() for name, (make, _) in CASES.items()}
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):
        for name, run in runs.items():
            calls = CASES[name][1]
            start = time.thread_time()
            run(calls)
            times[name].append((time.thread_time() - start) / calls * 1e6)
    marked = statistics.median(times["marked"])
    print(f"Python {sys.version.split()[0]}, {args.repeats} interleaved repeats, medians\n")
    print("| case | caller CPU µs per call | vs marked |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / marked:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
