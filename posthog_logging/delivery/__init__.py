"""Delivery: records in, batches out, whatever the network does.

It knows bytes and a :class:`~posthog_logging.delivery.kinds.Kind` (events, or log lines
for PostHog Logs), nothing of logging, contexts or how events are built. The parts, in
the order a record meets them (``docs/architecture.md`` draws them):

- :mod:`.intake`: the queue between the callers and the sender;
- :mod:`.sender`: the thread that takes, builds (through a callable the client gives it),
  batches and sends, with ``flush``, ``shutdown`` and their deadlines;
- :mod:`.batcher`: batches, and the rule for how big one grows;
- :mod:`.backlog`: built records in memory, in order, and the way to and from the spool;
- :mod:`.courier` and :mod:`.retry`: what an answer means for its batch;
- :mod:`.transport`: the seam to the network, and :mod:`.http`, the HTTP transport;
- :mod:`.spool`: the disk spool;
- :mod:`.stats`: counters and the ``Stats`` view;
- :mod:`.lifecycle`: live senders, the exit and fork hooks, redirection for tests.
"""

from __future__ import annotations

from .http import DEFAULT_HOST, HTTPTransport
from .kinds import EVENTS, LOGS, Kind
from .lifecycle import redirected
from .retry import RetryPolicy
from .stats import Stats
from .transport import SendResult, Transport

__all__ = [
    "DEFAULT_HOST",
    "EVENTS",
    "LOGS",
    "HTTPTransport",
    "Kind",
    "RetryPolicy",
    "SendResult",
    "Stats",
    "Transport",
    "redirected",
]
