"""Passive health of upstream targets: a circuit breaker per target, in each worker.

Consecutive failures (connect errors, timeouts, 429/5xx/529) open a target for a cool-down
(or for the upstream's `retry-after`, when longer); after it, one probe request half-opens
it: success closes it, failure opens it again with a doubled cool-down. State is kept per
target name across snapshot reloads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import log

FAILURES_TO_OPEN = 3
BASE_COOLDOWN_S = 5.0
MAX_COOLDOWN_S = 120.0
LATENCY_ALPHA = 0.2
# A probe slot claimed by a request that never reached the target is released after this.
PROBE_TIMEOUT_S = 30.0


@dataclass(slots=True)
class TargetHealth:
    name: str
    consecutive_failures: int = 0
    open_until: float = 0.0
    cooldown_s: float = BASE_COOLDOWN_S
    probing: bool = False
    probing_since: float = 0.0
    inflight: int = 0
    ttfb_ewma: float | None = None
    opened_total: int = 0

    @property
    def state(self) -> str:
        if self.open_until == 0.0:
            return "closed"
        return "half_open" if time.monotonic() >= self.open_until else "open"

    def available(self, now: float) -> bool:
        """Whether a request may go to this target now (claims the probe slot when half-open)."""
        if self.open_until == 0.0:
            return True
        if now < self.open_until or (self.probing and now - self.probing_since < PROBE_TIMEOUT_S):
            return False
        self.probing = True
        self.probing_since = now
        return True

    def success(self, ttfb_s: float | None) -> None:
        if ttfb_s is not None:
            self.ttfb_ewma = ttfb_s if self.ttfb_ewma is None else (
                LATENCY_ALPHA * ttfb_s + (1 - LATENCY_ALPHA) * self.ttfb_ewma
            )
        if self.open_until != 0.0:
            log.info("target recovered", target=self.name)
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.cooldown_s = BASE_COOLDOWN_S
        self.probing = False

    def failure(self, reason: str, retry_after_s: float | None = None) -> None:
        self.consecutive_failures += 1
        now = time.monotonic()
        was_probe = self.probing
        self.probing = False
        if was_probe:
            self.cooldown_s = min(self.cooldown_s * 2, MAX_COOLDOWN_S)
        if was_probe or self.consecutive_failures >= FAILURES_TO_OPEN or retry_after_s:
            wait = max(self.cooldown_s, retry_after_s or 0.0)
            if self.open_until == 0.0 or was_probe or now + wait > self.open_until:
                self.open_until = now + wait
                self.opened_total += 1
                log.warning(
                    "target circuit open", target=self.name, reason=reason, cooldown_s=round(wait, 3),
                    consecutive_failures=self.consecutive_failures,
                )


_registry: dict[str, TargetHealth] = {}


def health_of(name: str) -> TargetHealth:
    h = _registry.get(name)
    if h is None:
        h = _registry[name] = TargetHealth(name)
    return h


def all_health() -> dict[str, TargetHealth]:
    return _registry


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 < seconds <= 3600 else None
