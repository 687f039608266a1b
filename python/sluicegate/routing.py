"""Which targets of a group may serve a request, and in what order to try them."""

from __future__ import annotations

import random
import time

from .errors import GatewayError
from .health import health_of
from .snapshot import Group, Target

_rng = random.Random()


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


def _weighted_order(targets: list[Target]) -> list[Target]:
    pool = list(targets)
    out: list[Target] = []
    while pool:
        total = sum(t.weight for t in pool)
        pick = _rng.random() * total
        for i, t in enumerate(pool):
            pick -= t.weight
            if pick <= 0 or i == len(pool) - 1:
                out.append(pool.pop(i))
                break
    return out


def attempt_order(group: Group, targets: list[Target]) -> list[Target]:
    """Order of attempts by the group's strategy, with open circuits left out.

    When every eligible target is open the one whose cool-down ends first is still tried:
    answering late beats refusing outright.
    """
    if len(targets) > 1:
        strategy = group.strategy
        if strategy == "weighted":
            targets = _weighted_order(targets)
        elif strategy == "least_inflight":
            targets = sorted(targets, key=lambda t: health_of(t.name).inflight)
        elif strategy == "latency":
            # Unmeasured targets first, so each one gets measured.
            targets = sorted(targets, key=lambda t: health_of(t.name).ttfb_ewma or 0.0)
    now = time.monotonic()
    available = [t for t in targets if health_of(t.name).available(now)]
    if not available:
        available = [min(targets, key=lambda t: health_of(t.name).open_until)]
    return available[: group.max_attempts]
