"""A small PostHog-compatible capture server for local development, demos and tests.

`LocalServer` answers the routes PostHog's SDKs post events to (``/batch``, ``/capture``,
``/e``, ``/track``, ``/i/v0/e``, ``/engage``) and validates each request the way PostHog's
capture service does, with the same status codes: 400 for a malformed body or event (the whole
request is refused), 401 for a missing or malformed project key, 413 for a body over 20 MB or an
event over 1 MB. It is deliberately simple and strict, so that a client that works against it
works against PostHog: there is no ingestion pipeline behind it and no person processing.

Accepted events go to an `EventStore`, a SQLite file in the data directory, deduplicated on
their ``uuid`` as PostHog does. The API key is checked, never stored and never logged::

    with LocalServer(data_dir=tmp_path) as server:
        requests.post(f"{server.url}/batch/", json={"api_key": "phc_...", "batch": [...]})
        [event] = server.wait_for_events(1, event="$exception")

For delivery tests it can also misbehave on cue: `LocalServer.inject` scripts faults (an
error status, a slow or held answer, a dropped connection) for the next capture requests, and
`LocalServer.down` / `LocalServer.up` take the port away and bring it back::

    server.inject(Fault(status=503), Fault(status=429, headers={"Retry-After": "1"}))
    server.down()  # connections to server.url are now refused
    server.up()  # the same address again, with the events already stored

A module per job: ``lifecycle`` (`LocalServer`: start, stop, down, up, inject),
``http`` (the socket, and the request handler that routes each request), ``capture``
(checking a capture request as PostHog does), ``otlp`` (reading a PostHog Logs request),
``faults`` (`Fault` and the fault script), ``view`` (the web view's page and feeds),
``state`` (what the request handlers share with their server, and `RequestRecord`) and
``store`` (`EventStore`). The package imports nothing of the client side of the library,
only what both sides share: `posthog_logging.wire` and `posthog_logging.serialisation`.
"""

from __future__ import annotations

from ..wire import MAX_BODY_BYTES, MAX_EVENT_BYTES, MAX_LOGS_BODY_BYTES
from .faults import Fault
from .lifecycle import LocalServer
from .state import RequestRecord
from .store import EventStore, default_data_dir

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_LOGS_BODY_BYTES",
    "EventStore",
    "Fault",
    "LocalServer",
    "RequestRecord",
    "default_data_dir",
]
