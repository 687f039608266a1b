"""Redis limiter against a real redis-server: the same semantics as in-process, shared between
processes, and the configured policy when Redis is down."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from typing import Any

import pytest
from _services import RedisServer, redis_server, redis_url  # noqa: F401
from sluicegate.limits import LimitSpec, RedisLimiter
from sluicegate.limits import from_config as limiter_from_config


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


def test_rpm_tpm_concurrency_budget_with_exact_retry_after(redis_url: str) -> None:  # noqa: F811
    async def main() -> None:
        clock = Clock(1_800_000_000.2)
        lim = RedisLimiter(redis_url, key_prefix=_prefix(), clock=clock)
        rpm = [("key:k1", LimitSpec(rpm=3, label="alice-laptop"))]
        for t in (1_800_000_000.2, 1_800_000_010.5, 1_800_000_020.7):
            clock.t = t
            adm = await lim.admit(rpm)
            assert adm.ok
            await lim.settle(adm, 0, 0.0)
        clock.t = 1_800_000_030.0
        adm = await lim.admit(rpm)
        assert not adm.ok and adm.reason == "rpm" and abs(adm.retry_after_s - 30.0) < 1e-3
        assert (
            adm.message
            == "Rate limit of 3 requests per minute exceeded for key alice-laptop; retry after 30 s"
        )
        clock.t = 1_800_000_059.99
        assert not (await lim.admit(rpm)).ok
        clock.t = 1_800_000_060.0
        assert (await lim.admit(rpm)).ok

        tpm = [("key:t", LimitSpec(tpm=1000))]
        clock.t = 1_800_000_100.0
        a = await lim.admit(tpm)
        clock.t = 1_800_000_105.0
        await lim.settle(a, 1200, 0.0)
        b = await lim.admit(tpm)
        assert not b.ok and b.reason == "tpm" and abs(b.retry_after_s - 60.0) < 1e-3
        clock.t = 1_800_000_165.0
        assert (await lim.admit(tpm)).ok

        conc = [("key:c", LimitSpec(max_concurrent=1))]
        c1 = await lim.admit(conc)
        assert c1.ok
        c2 = await lim.admit(conc)
        assert not c2.ok and c2.reason == "concurrency"
        await lim.settle(c1, 5, 0.0)
        assert (await lim.admit(conc)).ok

        # 2027-01-15 12:00 UTC; a daily budget resets at midnight.
        clock.t = 1_800_000_000.0 - (1_800_000_000 % 86400) + 43200
        budget = [("project:payments", LimitSpec(budget_usd=5.0, budget_period="day"))]
        d1 = await lim.admit(budget)
        await lim.settle(d1, 100, 5.25)
        d2 = await lim.admit(budget)
        assert not d2.ok and d2.reason == "budget" and abs(d2.retry_after_s - 43200) < 1e-2
        assert d2.message.startswith("Budget of $5.00 per day exhausted for project payments")
        clock.t += 43200
        assert (await lim.admit(budget)).ok
        await lim.aclose()

    asyncio.run(main())


def test_all_or_nothing_in_one_script(redis_url: str) -> None:  # noqa: F811
    async def main() -> None:
        lim = RedisLimiter(redis_url, key_prefix=_prefix())
        key = ("key:k", LimitSpec(rpm=100, max_concurrent=10))
        project = ("project:p", LimitSpec(rpm=1))
        assert (await lim.admit([key, project])).ok
        refused = await lim.admit([key, project])
        assert not refused.ok and refused.scope == "project:p" and 0 < refused.retry_after_s <= 60
        ok = [await lim.admit([key]) for _ in range(9)]
        assert all(a.ok for a in ok)  # the refused admission took no slot or request from the key
        assert (await lim.admit([key])).reason == "concurrency"
        await lim.aclose()

    asyncio.run(main())


def _worker(url: str, prefix: str, n: int, barrier: Any, out: Any) -> None:
    async def main() -> int:
        lim = RedisLimiter(url, key_prefix=prefix)
        spec = [("key:shared", LimitSpec(rpm=25))]
        await lim.admit([("key:warm-up", LimitSpec(rpm=1000))])  # connect and load the script first
        barrier.wait(10)
        admitted = 0
        for _ in range(n):
            adm = await lim.admit(spec)
            if adm.ok:
                admitted += 1
                await lim.settle(adm, 1, 0.0)
            await asyncio.sleep(0.005)  # interleave the two gateways' requests
        await lim.aclose()
        return admitted

    out.put(asyncio.run(main()))


def test_two_processes_share_one_rpm_limit(redis_url: str) -> None:  # noqa: F811
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    barrier = ctx.Barrier(2)
    prefix = _prefix()
    procs = [ctx.Process(target=_worker, args=(redis_url, prefix, 40, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    counts = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    assert sum(counts) == 25, counts
    assert all(c > 0 for c in counts), counts  # both really competed for the same window


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_redis_down_follows_policy(redis_server: RedisServer, policy: str) -> None:  # noqa: F811
    async def main() -> None:
        lim = limiter_from_config(
            type(
                "S", (), {"backend": redis_server.url, "on_backend_error": policy, "key_prefix": _prefix()}
            )()
        )
        assert isinstance(lim, RedisLimiter)
        spec = [("key:k", LimitSpec(rpm=1000, max_concurrent=5))]
        assert (await lim.admit(spec)).ok
        await lim.aclose()
        with redis_server.down():
            t0 = time.perf_counter()
            decisions = [await lim.admit(spec) for _ in range(20)]
            elapsed = time.perf_counter() - t0
            if policy == "open":
                assert all(d.ok and d.degraded for d in decisions)
            else:
                assert all(not d.ok and d.reason == "limits_unavailable" for d in decisions)
                assert decisions[0].retry_after_s > 0
            for d in decisions:
                await lim.settle(d, 10, 0.1)
            assert lim.backend_errors >= 1 and lim.degraded_decisions == 20
            assert not lim.available
            assert elapsed < 2.0  # no timeout per request during the outage
        await asyncio.sleep(1.1)  # past the cool-down, Redis is tried again
        assert (await lim.admit(spec)).ok and lim.available
        await lim.aclose()

    asyncio.run(main())
