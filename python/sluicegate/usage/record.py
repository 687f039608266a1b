"""One usage record per request to an API endpoint, rejected requests included."""

from __future__ import annotations

import operator
from dataclasses import dataclass


@dataclass(slots=True)
class UsageRecord:
    ts: float  # unix time the request arrived
    request_id: str
    endpoint: str  # "messages" | "count_tokens" | "chat_completions" | "models" | "unknown"
    key_id: str | None
    key_name: str | None
    user: str | None
    project: str | None
    env: str | None
    group: str | None
    target: str | None
    upstream_model: str | None
    requested_model: str | None
    session_id: str | None  # x-claude-code-session-id
    agent_id: str | None  # x-claude-code-agent-id
    parent_agent_id: str | None  # x-claude-code-parent-agent-id
    status: int
    stream: bool
    # Anthropic semantics: input_tokens excludes the cache tokens (see pricing.normalize_openai).
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    image_count: int = 0
    cost_usd: float = 0.0
    upstream_cost_usd: float | None = None
    ttfb_ms: float | None = None
    duration_ms: float = 0.0
    error_type: str | None = None
    client_disconnected: bool = False
    # The upstream reported no usage (a stream without a usage chunk): the tokens are the
    # gateway's estimate (docs/accounting.md, "Estimated usage").
    usage_estimated: bool = False


# Column order of usage_records as written by the ledger (record field -> column).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "ts"),
    ("request_id", "request_id"),
    ("endpoint", "endpoint"),
    ("key_id", "key_id"),
    ("key_name", "key_name"),
    ("user", "user_name"),
    ("project", "project"),
    ("env", "env"),
    ("group", "model_group"),
    ("target", "target"),
    ("upstream_model", "upstream_model"),
    ("requested_model", "requested_model"),
    ("session_id", "session_id"),
    ("agent_id", "agent_id"),
    ("parent_agent_id", "parent_agent_id"),
    ("status", "status"),
    ("stream", "stream"),
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_creation_tokens", "cache_creation_tokens"),
    ("cache_read_tokens", "cache_read_tokens"),
    ("image_count", "image_count"),
    ("cost_usd", "cost_usd"),
    ("upstream_cost_usd", "upstream_cost_usd"),
    ("ttfb_ms", "ttfb_ms"),
    ("duration_ms", "duration_ms"),
    ("error_type", "error_type"),
    ("client_disconnected", "client_disconnected"),
    ("usage_estimated", "usage_estimated"),
)

# The record's fields in that order: a ledger row (what the ledger queues) is a tuple of them.
FIELDS: tuple[str, ...] = tuple(field for field, _ in COLUMNS)
record_row = operator.attrgetter(*FIELDS)  # UsageRecord -> its row
