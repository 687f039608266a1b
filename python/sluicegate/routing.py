"""Which targets of a group may serve a request, and in what order to try them."""

from __future__ import annotations

from .errors import GatewayError
from .snapshot import Group, Target


def eligible_targets(group: Group, image_count: int, has_tools: bool) -> list[Target]:
    """Targets that can serve this request; a clear 400 when none can."""
    targets = group.targets
    if not targets:
        raise GatewayError(503, f"model group '{group.name}' has no available target", "api_error")
    if image_count:
        targets = [t for t in targets if "image" in t.modalities]
        if not targets:
            raise GatewayError(
                400,
                f"model group '{group.name}' has no target that accepts image input"
                f" (the request carries {image_count} image{'s' if image_count != 1 else ''})",
            )
    if has_tools:
        with_tools = [t for t in targets if t.supports_tools]
        if not with_tools:
            raise GatewayError(400, f"model group '{group.name}' has no target that supports tools")
        targets = with_tools
    return targets


def attempt_order(group: Group, targets: list[Target]) -> list[Target]:
    """Order of attempts: `priority` keeps the configured order."""
    return targets[: group.max_attempts]
