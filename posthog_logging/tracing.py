"""The active OpenTelemetry span, for events, ``$exception`` events and log lines.

PostHog links an event to a trace by ``$trace_id`` / ``$span_id`` (the official SDK's
names) and a log line by its OTLP ``traceId`` / ``spanId``; both come from here. The
``opentelemetry`` API is never required nor imported: when the application has not
imported it, no span can be active, and asking costs one dictionary look-up.
"""

from __future__ import annotations

import sys

__all__ = ["trace_context"]


def trace_context() -> tuple[str, str, int] | None:
    """The active span's trace id (32 lowercase hex digits), span id (16) and flags, or
    None when no valid span is active (or OpenTelemetry is not in use)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # not imported by the application: no span can be active
        return None
    try:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return (
            f"{context.trace_id:032x}",
            f"{context.span_id:016x}",
            int(context.trace_flags),
        )
    except Exception:  # a broken or unexpected OpenTelemetry: no ids rather than no event
        return None
