"""What a limiter checks (LimitSpec), what it answers (Admission), and the client-facing wording."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Windows are 60 one-second buckets: a request or token counts from its second until that
# second is 60 s old, so "N per minute" holds over any 60 consecutive seconds.
WINDOW_S = 60
CONCURRENCY_RETRY_S = 1.0
UNAVAILABLE_RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class LimitSpec:
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None  # "day" | "month"; a budget without a period is monthly
    label: str | None = None  # shown in messages instead of the scope id (e.g. the key's name)

    @classmethod
    def of(cls, obj: Any, label: str | None = None) -> LimitSpec:
        """From anything with rpm/tpm/max_concurrent/budget_usd/budget_period attributes (a
        KeyEntry, a config key, a LimitSpec model)."""
        return cls(
            rpm=getattr(obj, "rpm", None),
            tpm=getattr(obj, "tpm", None),
            max_concurrent=getattr(obj, "max_concurrent", None),
            budget_usd=getattr(obj, "budget_usd", None),
            budget_period=getattr(obj, "budget_period", None),
            label=label,
        )

    @property
    def empty(self) -> bool:
        return not (self.rpm or self.tpm or self.max_concurrent or self.budget_usd)

    @property
    def period(self) -> str:
        return self.budget_period or "month"


@dataclass(slots=True)
class Admission:
    ok: bool
    retry_after_s: float = 0.0
    reason: str | None = None  # "rpm" | "tpm" | "concurrency" | "budget" | "limits_unavailable"
    message: str = ""
    scope: str | None = None  # the scope that refused
    scopes: list[tuple[str, LimitSpec]] = field(default_factory=list)  # what settle() updates
    lease: str = ""  # concurrency lease id (Redis)
    degraded: bool = False  # admitted without a check: backend unreachable, failing open
    settled: bool = False

    @property
    def retry_after_header(self) -> str:
        """The `retry-after` value: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after_s - 1e-9)))


def active(scopes: list[tuple[str, LimitSpec]]) -> list[tuple[str, LimitSpec]]:
    return [(s, spec) for s, spec in scopes if not spec.empty]


_PERIOD_KEYS: dict[tuple[str, int], str] = {}


def period_key(period: str, now: float) -> str:
    """`d2026-11-22` / `m2026-11` (UTC); cached per day, as it is on the request path."""
    cache_key = (period, int(now // 86400))
    key = _PERIOD_KEYS.get(cache_key)
    if key is None:
        t = time.gmtime(now)
        key = (
            f"d{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            if period == "day"
            else f"m{t.tm_year:04d}-{t.tm_mon:02d}"
        )
        if len(_PERIOD_KEYS) > 64:
            _PERIOD_KEYS.clear()
        _PERIOD_KEYS[cache_key] = key
    return key


def period_start(period: str, now: float) -> float:
    """Unix time the current UTC day / month began."""
    t = time.gmtime(now)
    day = 1 if period != "day" else t.tm_mday
    return datetime(t.tm_year, t.tm_mon, day, tzinfo=UTC).timestamp()


def period_end(period: str, now: float) -> float:
    """Unix time the current UTC day / month ends (the budget resets)."""
    t = time.gmtime(now)
    if period == "day":
        start = datetime(t.tm_year, t.tm_mon, t.tm_mday, tzinfo=UTC).timestamp()
        return start + 86400.0
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


def _who(scope: str, spec: LimitSpec) -> str:
    kind, _, ident = scope.partition(":")
    return f"{kind} {spec.label or ident}" if ident else (spec.label or kind)


def refusal(scope: str, spec: LimitSpec, reason: str, retry_after_s: float, now: float) -> Admission:
    who = _who(scope, spec)
    secs = max(1, math.ceil(retry_after_s - 1e-9))
    if reason == "rpm":
        msg = f"Rate limit of {spec.rpm} requests per minute exceeded for {who}; retry after {secs} s"
    elif reason == "tpm":
        msg = f"Rate limit of {spec.tpm} tokens per minute exceeded for {who}; retry after {secs} s"
    elif reason == "concurrency":
        msg = (
            f"Concurrency limit of {spec.max_concurrent} requests in flight reached for {who};"
            f" retry after {secs} s"
        )
    else:
        resets = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now + retry_after_s))
        msg = f"Budget of ${spec.budget_usd:.2f} per {spec.period} exhausted for {who}; it resets at {resets}"
    return Admission(False, retry_after_s, reason, msg, scope)


def unavailable() -> Admission:
    return Admission(
        False,
        UNAVAILABLE_RETRY_S,
        "limits_unavailable",
        "Limits cannot be checked right now (limits backend unavailable);"
        f" retry after {UNAVAILABLE_RETRY_S:.0f} s",
    )
