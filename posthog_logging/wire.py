"""What PostHog's capture endpoints accept: the facts the client sends by and the local
server checks by, kept once so that the two never disagree.

See ``docs/server.md`` for the whole of what the local server checks.
"""

from __future__ import annotations

__all__ = [
    "EVENTS_PATH",
    "LOGS_PATH",
    "MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_LOGS_BODY_BYTES",
]

#: Where batches of events go (``{"api_key", "batch", "sent_at"}``, JSON).
EVENTS_PATH = "/batch/"
#: Where log records go (OTLP/HTTP JSON, the key as a Bearer token).
LOGS_PATH = "/i/v1/logs"
#: One event, as compact JSON: PostHog answers 413 past about 1 MB.
MAX_EVENT_BYTES = 1_000_000
#: A capture request's body, gunzipped.
MAX_BODY_BYTES = 20 * 1024 * 1024
#: A logs request's body, gunzipped.
MAX_LOGS_BODY_BYTES = 2 * 1024 * 1024
