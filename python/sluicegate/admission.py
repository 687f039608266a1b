"""The steps every model request takes before any upstream is chosen, for both API formats:
key, body, model name, group, permission, eligible targets in attempt order, limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _native
from .context import RequestContext
from .errors import GatewayError
from .routing import attempt_order, eligible_targets
from .snapshot import KeyInfo, Snapshot, Target

if TYPE_CHECKING:
    from .app import Gateway


PROMPT_LOG_BYTES = 16 * 1024
# Client-chosen names that reach the access line, the usage record and error messages: bounded,
# so that a client cannot make a log line (or a ledger row) as long as it likes. Model ids and
# Claude Code's session and agent ids (UUIDs) are far shorter.
MAX_MODEL_CHARS = 256
MAX_ID_CHARS = 256


@dataclass(slots=True)
class Admitted:
    key: KeyInfo
    body: bytes
    info: Any  # _native.RequestInfo
    model: str
    targets: list[Target]
    deadline_s: float | None


def attribute(ctx: RequestContext, headers: Any) -> None:
    """Claude Code's session and agent ids, for the log line and the usage record."""
    ctx.session_id = _bounded_id(headers.get("x-claude-code-session-id"))
    ctx.agent_id = _bounded_id(headers.get("x-claude-code-agent-id"))
    ctx.parent_agent_id = _bounded_id(headers.get("x-claude-code-parent-agent-id"))


def _bounded_id(value: str | None) -> str | None:
    """An id header's value; one longer than any id a client sends is left out (not an id)."""
    return value if value is None or len(value) <= MAX_ID_CHARS else None


async def admit_request(
    gw: Gateway, ctx: RequestContext, scope: Any, proto: Any, snap: Snapshot | None
) -> Admitted:
    """Raises GatewayError (rendered in the caller's API shape) when the request cannot go on."""
    if snap is None:
        raise GatewayError(503, "gateway is starting: no config loaded yet")
    headers = scope.headers
    attribute(ctx, headers)
    key = ctx.key = gw.authenticate(snap, headers)
    body = await gw.read_body(scope, proto, snap)
    if snap.server["log_prompts"]:
        # Only when an operator turned it on: the request body, cut to a bounded size.
        ctx.prompt_log = body[:PROMPT_LOG_BYTES].decode("utf-8", "replace")
    try:
        info = _native.inspect_request(body)
    except ValueError as exc:
        raise GatewayError(400, f"invalid request body: {exc}") from None
    model = info.model
    if not model:
        raise GatewayError(400, "model: a model name (string) is required")
    if len(model) > MAX_MODEL_CHARS:
        raise GatewayError(
            400, f"model: a model name is at most {MAX_MODEL_CHARS} characters; this one has {len(model)}"
        )
    ctx.requested_model = model
    ctx.stream = info.stream and ctx.endpoint != "count_tokens"
    ctx.image_count = info.image_count
    gname = snap.resolve(model)
    if gname is None:
        raise GatewayError(404, f"model '{model}' is not served by this gateway", "not_found_error")
    ctx.group = gname
    if not key.may_use(gname):
        raise GatewayError(403, f"this key may not use model group '{gname}'", "permission_error")
    group = snap.groups[gname]
    eligible = eligible_targets(group, info.image_count, info.has_tools)
    targets = attempt_order(group, eligible, ctx.session_id)
    if gw.services is not None:
        await gw.services.admit(ctx, key, gname)
    return Admitted(key, body, info, model, targets, group.deadline_s)
