"""In-process limiter: rpm, tpm, concurrency and budgets, with exact retry-after (fake clock)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sluicegate.limits import Admission, LimitSpec, MemoryLimiter


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_rpm_sliding_window_and_accurate_retry_after() -> None:
    clock = Clock(1000.2)
    lim = MemoryLimiter(clock=clock)
    scopes = [("key:k1", LimitSpec(rpm=3, label="alice-laptop"))]
    for t in (1000.2, 1010.5, 1020.7):
        clock.t = t
        adm = lim.admit_now(scopes)
        assert adm.ok
        lim.settle_now(adm, 0, 0.0)
    clock.t = 1030.0
    adm = lim.admit_now(scopes)
    assert not adm.ok and adm.reason == "rpm"
    # The request of second 1000 leaves the window at 1060.
    assert abs(adm.retry_after_s - 30.0) < 1e-9
    assert adm.retry_after_header == "30"
    assert (
        adm.message == "Rate limit of 3 requests per minute exceeded for key alice-laptop; retry after 30 s"
    )
    clock.t = 1059.99
    assert not lim.admit_now(scopes).ok
    clock.t = 1060.0
    assert lim.admit_now(scopes).ok
    clock.t = 1060.5
    adm = lim.admit_now(scopes)
    assert not adm.ok and abs(adm.retry_after_s - 9.5) < 1e-9  # next to leave: second 1010 at 1070


def test_tpm_settles_real_tokens_and_retries_when_they_age_out() -> None:
    clock = Clock(500.0)
    lim = MemoryLimiter(clock=clock)
    scopes = [("key:k", LimitSpec(tpm=1000))]
    a = lim.admit_now(scopes)
    assert a.ok
    clock.t = 505.0
    lim.settle_now(a, 700, 0.0)  # counted when settled: second 505
    b = lim.admit_now(scopes)
    assert b.ok  # 700 < 1000
    clock.t = 520.0
    lim.settle_now(b, 400, 0.0)
    c = lim.admit_now(scopes)
    assert not c.ok and c.reason == "tpm"
    assert abs(c.retry_after_s - (565.0 - 520.0)) < 1e-9  # the 700 tokens of second 505 leave at 565
    assert "1000 tokens per minute" in c.message
    clock.t = 565.0
    assert lim.admit_now(scopes).ok


def test_concurrency_slots_are_released_by_settle() -> None:
    lim = MemoryLimiter()
    scopes = [("key:k", LimitSpec(max_concurrent=2))]
    a, b = lim.admit_now(scopes), lim.admit_now(scopes)
    assert a.ok and b.ok
    c = lim.admit_now(scopes)
    assert not c.ok and c.reason == "concurrency" and c.retry_after_s > 0
    lim.settle_now(a, 10, 0.0)
    lim.settle_now(a, 10, 0.0)  # settling twice releases once
    assert lim.inflight("key:k") == 1
    assert lim.admit_now(scopes).ok
    assert not lim.admit_now(scopes).ok


def test_budget_stops_spending_until_the_period_resets() -> None:
    start = datetime(2026, 11, 22, 15, 0, tzinfo=UTC).timestamp()
    clock = Clock(start)
    lim = MemoryLimiter(clock=clock)
    scopes = [("project:payments", LimitSpec(budget_usd=5.0, budget_period="day"))]
    a = lim.admit_now(scopes)
    lim.settle_now(a, 100, 4.0)
    b = lim.admit_now(scopes)
    assert b.ok  # $4 < $5
    lim.settle_now(b, 100, 1.5)
    c = lim.admit_now(scopes)
    assert not c.ok and c.reason == "budget"
    assert c.message.startswith("Budget of $5.00 per day exhausted for project payments")
    assert abs(c.retry_after_s - 9 * 3600) < 1e-6  # until midnight UTC
    clock.t = datetime(2026, 11, 23, 0, 0, 1, tzinfo=UTC).timestamp()
    assert lim.admit_now(scopes).ok


def test_monthly_budget_and_seed_from_ledger() -> None:
    clock = Clock(datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp())
    lim = MemoryLimiter(clock=clock)
    scopes = [("key:k", LimitSpec(budget_usd=10.0))]  # no period: monthly
    lim.seed_budgets({"month": {"key:k": 10.0}}, clock.t)
    adm = lim.admit_now(scopes)
    assert not adm.ok and abs(adm.retry_after_s - 3600) < 1e-6
    assert "per month" in adm.message


def test_all_or_nothing_across_scopes_and_worst_retry_wins() -> None:
    clock = Clock(100.0)
    lim = MemoryLimiter(clock=clock)
    key = ("key:k", LimitSpec(rpm=10, max_concurrent=5))
    project = ("project:p", LimitSpec(rpm=1))
    assert lim.admit_now([key, project]).ok
    clock.t = 130.0
    refused = lim.admit_now([key, project])
    assert not refused.ok and refused.scope == "project:p" and abs(refused.retry_after_s - 30) < 1e-9
    # The refused admission took nothing from the key's scope.
    assert lim.inflight("key:k") == 1
    for _ in range(4):
        assert lim.admit_now([key]).ok
    assert lim.inflight("key:k") == 5
    assert lim.admit_now([key]).reason == "concurrency"


def test_empty_specs_admit_without_state() -> None:
    lim = MemoryLimiter()
    adm = run(lim.admit([("key:k", LimitSpec()), ("group:g", LimitSpec())]))
    assert isinstance(adm, Admission) and adm.ok and adm.scopes == []
    run(lim.settle(adm, 100, 1.0))


def test_budgets_seeded_from_the_ledger_apply_per_scope_and_period() -> None:
    now = datetime(2026, 11, 22, 15, 0, tzinfo=UTC).timestamp()
    clock = Clock(now)
    lim = MemoryLimiter(clock=clock)
    daily_key = [("key:k", LimitSpec(budget_usd=5.0, budget_period="day"))]
    monthly_project = [("project:p", LimitSpec(budget_usd=100.0))]
    fresh = [("key:other", LimitSpec(budget_usd=5.0, budget_period="day"))]
    # The key's own month spend (99) must not count against its daily budget.
    lim.seed_budgets({"day": {"key:k": 5.0}, "month": {"key:k": 99.0, "project:p": 100.0}}, now)
    refused = lim.admit_now(daily_key)
    assert not refused.ok and refused.reason == "budget" and refused.scope == "key:k"
    assert lim.admit_now(monthly_project).reason == "budget"
    assert lim.admit_now(fresh).ok
    # The next day the key's daily seed no longer applies; the month's still does.
    clock.t = datetime(2026, 11, 23, 0, 0, 1, tzinfo=UTC).timestamp()
    assert lim.admit_now(daily_key).ok
    assert lim.admit_now(monthly_project).reason == "budget"


def test_seed_arriving_after_local_spend_adds_to_it() -> None:
    now = datetime(2026, 11, 22, 15, 0, tzinfo=UTC).timestamp()
    lim = MemoryLimiter(clock=Clock(now))
    scopes = [("key:k", LimitSpec(budget_usd=5.0, budget_period="day"))]
    a = lim.admit_now(scopes)
    lim.settle_now(a, 10, 2.0)
    assert lim.admit_now(scopes).ok  # $2 < $5
    lim.seed_budgets({"day": {"key:k": 3.0}, "month": {}}, now)
    assert lim.admit_now(scopes).reason == "budget"  # $2 here + $3 before the restart
    # A seed taken yesterday says nothing about today.
    other = MemoryLimiter(clock=Clock(now))
    other.seed_budgets({"day": {"key:k": 50.0}, "month": {}}, now - 86400)
    assert other.admit_now(scopes).ok
