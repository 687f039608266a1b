"""What a finished request leaves behind: one ledger row, one access line, its metrics.

The row is a tuple in UsageRecord's field order, built once here; the extension's RequestSink
(rust/accounting.rs) reads it once for the access line and the metrics' counters, and the ledger
queues the same tuple. This module says what the line holds; the sink writes it and keeps it
until log.py writes the access lines out.
"""

from __future__ import annotations

from typing import Any

from . import _native, log
from .context import RequestContext
from .metrics import DURATION_BUCKETS, TTFB_BUCKETS
from .usage.record import FIELDS

# The access line, key by key: (its key, what it shows, scale). What it shows is a row field,
# "=text" for that text, or "attempts" (the request's upstream attempts); a scale > 0 rounds a
# number half up to 1/scale (milliseconds for the time, hundredths for durations).
ACCESS_LINE: tuple[tuple[str, str, float], ...] = (
    ("ts", "ts", 1000.0),
    ("event", "=request", 0.0),
    ("request_id", "request_id", 0.0),
    ("endpoint", "endpoint", 0.0),
    ("key", "key_name", 0.0),
    ("key_id", "key_id", 0.0),
    ("user", "user", 0.0),
    ("group", "group", 0.0),
    ("target", "target", 0.0),
    ("model", "requested_model", 0.0),
    ("upstream_model", "upstream_model", 0.0),
    ("status", "status", 0.0),
    ("stream", "stream", 0.0),
    ("ttfb_ms", "ttfb_ms", 100.0),
    ("duration_ms", "duration_ms", 100.0),
    ("input_tokens", "input_tokens", 0.0),
    ("output_tokens", "output_tokens", 0.0),
    ("cache_creation_tokens", "cache_creation_tokens", 0.0),
    ("cache_read_tokens", "cache_read_tokens", 0.0),
    ("usage_estimated", "usage_estimated", 0.0),
    ("session_id", "session_id", 0.0),
    ("agent_id", "agent_id", 0.0),
    ("parent_agent_id", "parent_agent_id", 0.0),
    ("error", "error_type", 0.0),
    ("client_disconnected", "client_disconnected", 0.0),
    ("attempts", "attempts", 0.0),
)


def new_sink() -> Any:
    """A sink whose access lines log.py writes out with the rest of the access log."""
    sink = _native.RequestSink(
        list(FIELDS), list(ACCESS_LINE), list(TTFB_BUCKETS), list(DURATION_BUCKETS), log.BUFFER_MAX
    )
    log.add_access_source(sink.take_access)
    return sink


def usage_row(ctx: RequestContext, cost: float, duration_s: float) -> tuple[Any, ...]:
    """The ledger's row of a finished request, in UsageRecord's field order (FIELDS); a tuple,
    not a UsageRecord: its 29 fields by keyword cost ~2.4 us, the tuple ~0.3 (measured).
    tests/test_request_end.py checks the order."""
    key, u = ctx.key, ctx.usage
    if key is None:
        key_id = key_name = user = project = env = None
    else:
        key_id, key_name, user, project, env = key.key_id, key.name, key.user, key.project, key.env
    ttfb = ctx.ttfb
    return (
        ctx.ts,
        ctx.request_id,
        ctx.endpoint,
        key_id,
        key_name,
        user,
        project,
        env,
        ctx.group,
        ctx.target,
        ctx.upstream_model,
        ctx.requested_model,
        ctx.session_id,
        ctx.agent_id,
        ctx.parent_agent_id,
        ctx.status,
        ctx.stream,
        u[0],  # input_tokens
        u[1],  # output_tokens
        u[2],  # cache_creation_tokens
        u[3],  # cache_read_tokens
        ctx.image_count,
        cost,  # cost_usd
        ctx.upstream_cost,  # upstream_cost_usd
        ttfb * 1000 if ttfb is not None else None,  # ttfb_ms
        duration_s * 1000,  # duration_ms
        ctx.error_type,
        ctx.client_disconnected,
        ctx.usage_estimated,
    )
