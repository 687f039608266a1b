"""Passive health of upstream targets: a circuit breaker per target, in each worker.

Consecutive failures (connect errors, timeouts, 429/5xx/529, a stream that breaks) open a
target for a cool-down; a `retry-after` from the upstream opens it at once for that long.
When the cool-down is over the target is half-open: the next request that reaches it is the
one probe (others skip it meanwhile); success closes it, failure opens it again with a doubled
cool-down. State is kept per target name across snapshot reloads, and per worker process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from . import log

FAILURES_TO_OPEN = 3
BASE_COOLDOWN_S = 5.0
MAX_COOLDOWN_S = 120.0
MAX_RETRY_AFTER_S = 3600.0
LATENCY_ALPHA = 0.2
# A probe slot claimed by a request that never reported back is released after this.
PROBE_TIMEOUT_S = 30.0

STATES = ("closed", "open", "half_open")


@dataclass(slots=True)
class TargetHealth:
    """One target's breaker and load figures. Everything a metrics gauge needs is a plain field
    or `state` (see `gauges()`)."""

    name: str
    consecutive_failures: int = 0
    open_until: float = 0.0  # monotonic; 0.0 = closed
    cooldown_s: float = BASE_COOLDOWN_S
    probing: bool = False
    probing_since: float = 0.0
    inflight: int = 0
    ttfb_ewma: float | None = None  # seconds, moving average of successful attempts
    opened_total: int = 0
    failures_total: int = 0
    last_failure: str | None = None

    # -- reading ---------------------------------------------------------------------------------
    def state_at(self, now: float) -> str:
        if self.open_until == 0.0:
            return "closed"
        return "half_open" if now >= self.open_until else "open"

    @property
    def state(self) -> str:
        """ "closed", "open" (cooling down) or "half_open" (cool-down over, next request probes)."""
        return self.state_at(time.monotonic())

    def selectable(self, now: float) -> bool:
        """Whether routing may put this target in a request's attempt list (no side effect)."""
        if self.open_until == 0.0:
            return True
        if now < self.open_until:
            return False
        return not self._probe_busy(now)

    def gauges(self, now: float | None = None) -> dict[str, Any]:
        """A plain dict for metrics and admin views."""
        now = time.monotonic() if now is None else now
        return {
            "state": self.state_at(now),
            "consecutive_failures": self.consecutive_failures,
            "inflight": self.inflight,
            "ttfb_ewma_s": self.ttfb_ewma,
            "open_for_s": max(0.0, self.open_until - now) if self.open_until else 0.0,
            "cooldown_s": self.cooldown_s,
            "opened_total": self.opened_total,
            "failures_total": self.failures_total,
            "last_failure": self.last_failure,
        }

    # -- the request path ------------------------------------------------------------------------
    def claim(self, now: float) -> bool:
        """Called right before a request is sent to this target: False while it is open or while
        another request is probing it; when half-open, the caller becomes the probe."""
        if self.open_until == 0.0:
            return True
        if now < self.open_until or self._probe_busy(now):
            return False
        self.probing = True
        self.probing_since = now
        log.info("target half-open: sending one probe request", target=self.name)
        return True

    def abandon(self) -> None:
        """The claimed attempt ended without saying anything about the target (the client left,
        the gateway refused the request, the group deadline cut it short)."""
        self.probing = False

    def success(self, ttfb_s: float | None) -> None:
        if ttfb_s is not None:
            prev = self.ttfb_ewma
            self.ttfb_ewma = ttfb_s if prev is None else LATENCY_ALPHA * ttfb_s + (1 - LATENCY_ALPHA) * prev
        if self.open_until != 0.0:
            log.info(
                "target recovered: circuit closed", target=self.name, after_failures=self.consecutive_failures
            )
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.cooldown_s = BASE_COOLDOWN_S
        self.probing = False

    def failure(
        self,
        reason: str,
        retry_after_s: float | None = None,
        now: float | None = None,
        probe: bool | None = None,
    ) -> None:
        """`probe`: whether this attempt was the half-open probe (None: whoever holds the slot)."""
        now = time.monotonic() if now is None else now
        self.consecutive_failures += 1
        self.failures_total += 1
        self.last_failure = reason
        was_probe = self.probing if probe is None else probe
        if was_probe:
            self.probing = False
        if was_probe:
            self.cooldown_s = min(self.cooldown_s * 2, MAX_COOLDOWN_S)
        tripped = was_probe or self.consecutive_failures >= FAILURES_TO_OPEN
        if not tripped and not retry_after_s:
            return
        # The breaker's own cool-down when it trips; exactly the upstream's retry-after when
        # that alone is the reason (a 429 says how long, no need to guess longer).
        wait = max(self.cooldown_s if tripped else 0.0, retry_after_s or 0.0)
        until = now + wait
        if until <= self.open_until:
            return
        newly = self.open_until == 0.0 or now >= self.open_until
        self.open_until = until
        if newly:
            self.opened_total += 1
        log.warning(
            "target circuit open",
            target=self.name,
            reason=reason,
            open_for_s=round(wait, 3),
            retry_after_s=retry_after_s,
            consecutive_failures=self.consecutive_failures,
            probe_failed=was_probe,
        )

    def _probe_busy(self, now: float) -> bool:
        return self.probing and now - self.probing_since < PROBE_TIMEOUT_S


_registry: dict[str, TargetHealth] = {}


def health_of(name: str) -> TargetHealth:
    h = _registry.get(name)
    if h is None:
        h = _registry[name] = TargetHealth(name)
    return h


def all_health() -> dict[str, TargetHealth]:
    """Every target this worker has routed to, by target name (read-only use, e.g. /metrics)."""
    return _registry


def forget(keep: set[str]) -> None:
    """Drop the state of targets no longer in the config (call after a reload)."""
    for name in [n for n in _registry if n not in keep]:
        del _registry[name]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a `retry-after` header: delta-seconds or an HTTP date; None when absent,
    unparseable or not in the future; at most an hour (a misconfigured upstream must not park a
    target for a day)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds <= 0:  # NaN or past
        return None
    return min(seconds, MAX_RETRY_AFTER_S)
