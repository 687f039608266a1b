"""Which targets of a group may serve a request, and in what order to try them.

`eligible_targets` filters by what the request needs (images, tools) before any strategy runs,
so a request is never sent to a target that cannot serve it. `attempt_order` ranks what is
left by the group's strategy and leaves out targets whose circuit is open; the failover loop in
relay.py then walks that list.
"""

from __future__ import annotations

import hashlib
import math
import random
import time

from .errors import GatewayError
from .health import health_of
from .snapshot import Group, Target

# The latency strategy sends this share of requests to the runner-up first, so a target that
# was slow once is measured again instead of being written off for good.
LATENCY_EXPLORE = 0.05

_rng = random.Random()

# Strategies that choose per request keep a Claude Code session where its first request went:
# (group, session id) -> target name, per worker, the least recently routed forgotten first.
PER_REQUEST_STRATEGIES = ("least_inflight", "latency")
MAX_PINNED_SESSIONS = 50_000
_pinned: dict[tuple[str, str], str] = {}


def eligible_targets(group: Group, image_count: int, has_tools: bool) -> list[Target]:
    """Targets that can serve this request; a 400 naming the group and what is missing when none can."""
    targets = group.targets
    if not targets:
        raise GatewayError(
            503, f"model group '{group.name}' has no available target (its providers are not configured)"
        )
    if not image_count and not has_tools:
        return targets
    fit = [
        t
        for t in targets
        if (not image_count or "image" in t.modalities) and (not has_tools or t.supports_tools)
    ]
    if fit:
        return fit
    images = f"{image_count} image{'s' if image_count != 1 else ''}"
    any_image = any("image" in t.modalities for t in targets)
    any_tools = any(t.supports_tools for t in targets)
    if image_count and not any_image:
        missing = (
            f"no target that accepts image input: the request carries {images} and no target"
            " of the group lists 'image' in its input_modalities"
        )
    elif has_tools and not any_tools:
        missing = (
            "no target that supports tools: the request defines tools and every target of the"
            " group has supports_tools: false"
        )
    else:
        missing = (
            f"no target that both accepts image input and supports tools: the request carries"
            f" {images} and defines tools"
        )
    raise GatewayError(400, f"model group '{group.name}' has {missing}", "invalid_request_error")


def _weighted_random(targets: list[Target]) -> list[Target]:
    """All targets, in a random order where each place goes to a target with odds by weight."""
    # Exponential race (Efraimidis-Spirakis): sort by u^(1/w), largest first.
    return sorted(targets, key=lambda t: _rng.random() ** (1.0 / t.weight), reverse=True)


def _affinity_score(session: str, target: Target) -> float:
    digest = hashlib.blake2b(f"{session}\x00{target.name}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / 2.0**64  # in (0, 1)
    return -target.weight / math.log(u)


def _weighted_by_session(targets: list[Target], session: str) -> list[Target]:
    """Weighted rendezvous hashing: the same order for the same session in every worker and
    replica, and across sessions each target comes first with odds by weight."""
    return sorted(targets, key=lambda t: _affinity_score(session, t), reverse=True)


def _latency_key(target: Target) -> tuple[bool, float]:
    ewma = health_of(target.name).ttfb_ewma
    return (ewma is not None, ewma or 0.0)


def strategy_order(group: Group, targets: list[Target], session: str | None = None) -> list[Target]:
    """`targets` ranked by the group's strategy (circuit state not considered)."""
    if len(targets) < 2:
        return list(targets)
    strategy = group.strategy
    if strategy == "weighted":
        return _weighted_by_session(targets, session) if session else _weighted_random(targets)
    if strategy == "least_inflight":
        # Ties (commonly: all idle) are broken by weight, so idle targets share the load.
        return sorted(_weighted_random(targets), key=lambda t: health_of(t.name).inflight)
    if strategy == "latency":
        # Unmeasured targets first, so each one gets measured; then fastest first.
        ranked = sorted(targets, key=_latency_key)
        if health_of(ranked[0].name).ttfb_ewma is not None and _rng.random() < LATENCY_EXPLORE:
            ranked[0], ranked[1] = ranked[1], ranked[0]
        return ranked
    return list(targets)  # priority: as listed


def attempt_order(
    group: Group, targets: list[Target], session: str | None = None, now: float | None = None
) -> list[Target]:
    """Targets to try, in order, at most the group's `max_attempts`, with open circuits (and
    half-open ones already being probed) left out.

    `session` (Claude Code's `x-claude-code-session-id`) keeps a conversation on one target, so
    its prompt cache stays warm and its thinking signatures stay valid: under `weighted` by
    rendezvous hashing (the same in every worker), under `least_inflight` and `latency` by
    remembering where its first request went (per worker, like the figures they rank by).
    When every eligible target is open, the one whose cool-down ends first is still tried:
    answering late beats refusing outright.
    """
    ranked = strategy_order(group, targets, session)
    now = time.monotonic() if now is None else now
    available = [t for t in ranked if health_of(t.name).selectable(now)]
    if not available:
        available = [min(ranked, key=lambda t: health_of(t.name).open_until)]
    elif session and group.strategy in PER_REQUEST_STRATEGIES:
        _keep_session(group, session, targets, available)
    return available[: group.max_attempts]


def _keep_session(group: Group, session: str, eligible: list[Target], available: list[Target]) -> None:
    """Put the session's target first in `available` (in place); a new session, or one whose
    target is open or gone, is pinned to the strategy's first choice. A request its target
    cannot serve (an image to a text-only target) goes by the strategy without moving the pin."""
    key = (group.name, session)
    name = _pinned.pop(key, None)
    if name is not None:
        for i, t in enumerate(available):
            if t.name == name:
                if i:
                    available.insert(0, available.pop(i))
                _pinned[key] = name  # re-inserted: most recently routed last
                return
        if not any(t.name == name for t in eligible) and any(t.name == name for t in group.targets):
            _pinned[key] = name
            return
    elif len(_pinned) >= MAX_PINNED_SESSIONS:
        del _pinned[next(iter(_pinned))]
    _pinned[key] = available[0].name
