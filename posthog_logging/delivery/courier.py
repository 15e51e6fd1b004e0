"""What an answer means for the batch that was sent: the retry policy, applied.

A batch the server accepted is counted sent and leaves memory. One refused with 413 is
cut in halves (alone, it is dropped as too large). One refused for good is counted failed
and handed to ``on_error``. One that met no answer, a 408, 429 or 5xx waits for its next
try, with the same bytes; out of tries it goes to the spool, or is counted failed. A
batch read back from the spool that fails again goes back to disk whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ..diagnostics import logger
from ..exceptions import DeliveryError
from .backlog import Backlog
from .batcher import Batch
from .kinds import LOGS
from .retry import Decision, RetryPolicy
from .stats import Ledger
from .transport import SendResult

__all__ = ["Courier", "OnError"]

OnError = Callable[[Exception, list[dict[str, Any]]], object]


class Courier:
    """Settles each batch by the answer its request got."""

    def __init__(
        self,
        retry: RetryPolicy,
        backlog: Backlog,
        ledger: Ledger,
        *,
        host: str,
        on_error: OnError | None = None,
        spill: bool = False,
    ) -> None:
        self.retry = retry
        self.healthy = True
        """The last answer was not a failure worth retrying: the server is up."""
        self._backlog = backlog
        self._ledger = ledger
        self._host = host
        self._on_error = on_error
        self._spill = spill  # out of retries: to the spool, rather than failed

    def settle(self, batch: Batch, result: SendResult) -> list[Batch]:
        """Apply ``result`` to ``batch``; return what must be tried again (the batch
        waiting for its next try, or its halves), empty when it is done with."""
        decision = self.retry.decide(result, batch.attempts)
        self.healthy = decision not in (Decision.RETRY, Decision.EXHAUSTED)
        if decision is Decision.DONE:
            batch.delivered = True
            self._ledger.add("sent", len(batch))
            if batch.kind is LOGS:
                self._ledger.add("logs_sent", len(batch))
            if batch.replay is not None:
                self._ledger.add("replayed", len(batch))
            logger.debug("sent %d events", len(batch))
            self._backlog.release(batch)
            return []
        if decision is Decision.SPLIT:
            if len(batch) > 1:
                return batch.halves()
            self._ledger.drop("too_large", "an event was refused as too large (HTTP 413)")
            self._backlog.release(batch)
            return []
        if decision is Decision.REFUSE:
            self.give_up(batch, "refused", result)
            return []
        if batch.replay is not None:
            # Still down: the segment stays on disk as it is, to be tried again later,
            # rather than being retried from memory and written out again.
            self._backlog.give_back(batch.replay)
            self._backlog.release(batch)
            return []
        batch.attempts += 1
        if decision is Decision.EXHAUSTED:
            if self._spill:
                self._backlog.spill(batch)
            else:
                self.give_up(batch, "retries", result)
            return []
        self._ledger.add("retried")
        delay = self.retry.delay(batch.attempts, result.retry_after)
        batch.not_before = time.monotonic() + delay
        logger.debug("%s; retrying in %.2fs", result.describe(), delay)
        return [batch]

    def give_up(self, batch: Batch, why: str, result: SendResult) -> None:
        """Count ``batch`` as failed (``why``: ``"refused"``, or out of ``"retries"``),
        say so once a minute per cause, and hand it to ``on_error``."""
        self._backlog.release(batch)
        self._ledger.add("failed", len(batch))
        if why == "retries":
            what = f"{len(batch)} events not sent after {self.retry.max_retries} retries"
        else:
            what = f"{len(batch)} events refused by {self._host}"
        self._ledger.warn(f"failed:{why}:{result.status}", f"{what}: {result.describe()}")
        if self._on_error is not None:
            try:
                records = [json.loads(record) for record in batch.records]
                self._on_error(DeliveryError(result.describe(), result.status), records)
            except Exception:
                logger.debug("on_error raised", exc_info=True)

    def late_answer(self, batch: Batch, result: SendResult) -> None:
        """A request answered after shutdown() counted its batch lost: correct that."""
        if result.ok and batch.counted_lost:
            self._ledger.add("sent", len(batch))
            self._ledger.add("dropped:shutdown_timeout", -len(batch))
