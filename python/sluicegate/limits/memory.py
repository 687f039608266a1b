"""In-process limits for one gateway process (the embedded default).

State lives in plain dicts touched only from the worker's event loop, and admit/settle never
await, so check-then-take is atomic without locks. Each Granian worker process has its own
state: with more than one worker (or replica) use the Redis backend for limits that hold in total.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from ._base import Limiter
from .spec import CONCURRENCY_RETRY_S as _CONC_RETRY
from .spec import WINDOW_S, Admission, LimitSpec, active, period_end, period_key, refusal


class _Window:
    """A sliding window of one-second buckets: [second, amount] oldest first, and their total."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: collections.deque[list[int]] = collections.deque()
        self.total = 0

    def expire(self, sec: int) -> None:
        cutoff = sec - (WINDOW_S - 1)
        b = self.buckets
        while b and b[0][0] < cutoff:
            self.total -= b.popleft()[1]

    def add(self, sec: int, amount: int) -> None:
        b = self.buckets
        if b and b[-1][0] == sec:
            b[-1][1] += amount
        else:
            b.append([sec, amount])
        self.total += amount

    def retry_after(self, limit: int, now: float) -> float:
        """Seconds until enough old buckets have left the window for the total to drop below limit."""
        acc = 0
        for sec, amount in self.buckets:
            acc += amount
            if self.total - acc < limit:
                return max(0.0, sec + WINDOW_S - now)
        return float(WINDOW_S)


class _Scope:
    __slots__ = ("budget_key", "inflight", "requests", "spent", "tokens")

    def __init__(self) -> None:
        self.requests = _Window()
        self.tokens = _Window()
        self.inflight = 0
        self.budget_key = ""
        self.spent = 0.0


class MemoryLimiter(Limiter):
    backend = "memory"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._scopes: dict[str, _Scope] = {}
        # Spend up to a restart, from the ledger: period key -> scope -> USD (seed_budgets()).
        self._seeds: dict[str, dict[str, float]] = {}
        self.backend_errors = 0
        self.degraded_decisions = 0

    def _scope(self, name: str) -> _Scope:
        st = self._scopes.get(name)
        if st is None:
            st = self._scopes[name] = _Scope()
        return st

    async def admit(self, scopes: list[tuple[str, LimitSpec]]) -> Admission:
        return self.admit_now(scopes)

    def admit_now(self, scopes: list[tuple[str, LimitSpec]]) -> Admission:
        """The synchronous body of admit() (it never waits on anything)."""
        todo = active(scopes)
        if not todo:
            return Admission(True)
        now = self._clock()
        sec = int(now)
        worst: Admission | None = None
        for name, spec in todo:
            st = self._scope(name)
            fails: list[tuple[str, float]] = []
            if spec.rpm:
                st.requests.expire(sec)
                if st.requests.total >= spec.rpm:
                    fails.append(("rpm", st.requests.retry_after(spec.rpm, now)))
            if spec.tpm:
                st.tokens.expire(sec)
                if st.tokens.total >= spec.tpm:
                    fails.append(("tpm", st.tokens.retry_after(spec.tpm, now)))
            if spec.max_concurrent and st.inflight >= spec.max_concurrent:
                fails.append(("concurrency", _CONC_RETRY))
            budget = spec.budget_usd
            if budget:
                pkey = period_key(spec.period, now)
                if st.budget_key != pkey:
                    self._new_period(name, st, pkey)
                if st.spent >= budget:
                    fails.append(("budget", period_end(spec.period, now) - now))
            for reason, retry in fails:
                if worst is None or retry > worst.retry_after_s:
                    worst = refusal(name, spec, reason, retry, now)
        if worst is not None:
            return worst
        for name, spec in todo:
            st = self._scopes[name]
            if spec.rpm:
                st.requests.add(sec, 1)
            if spec.max_concurrent:
                st.inflight += 1
        return Admission(True, scopes=todo)

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        self.settle_now(adm, tokens, cost_usd)

    def settle_now(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        if not adm.ok or adm.settled or not adm.scopes:
            return
        adm.settled = True
        now = self._clock()
        sec = int(now)
        for name, spec in adm.scopes:
            st = self._scope(name)
            if spec.tpm and tokens > 0:
                st.tokens.expire(sec)
                st.tokens.add(sec, tokens)
            if spec.max_concurrent and st.inflight > 0:
                st.inflight -= 1
            if spec.budget_usd and cost_usd > 0:
                key = period_key(spec.period, now)
                if st.budget_key != key:
                    self._new_period(name, st, key)
                st.spent += cost_usd

    def _new_period(self, name: str, st: _Scope, pkey: str) -> None:
        """A scope's first budget check in a period: start from what the ledger says it spent
        in that period before this process started (0 for a new period)."""
        seeds = self._seeds.get(pkey)
        st.budget_key, st.spent = pkey, (seeds.get(name, 0.0) if seeds else 0.0)

    def seed_budgets(self, spent: dict[str, dict[str, float]], at: float) -> None:
        """What each scope spent before this process started, from the ledger:
        `spent["day"|"month"][scope]` is its USD from the start of that period up to `at`.

        Each scope takes its seed at its first budget check in that period (so no scope needs
        to be known in advance); a scope that already settled spend here adds the seed to it.
        """
        for period, by_scope in spent.items():
            pkey = period_key(period, at)
            self._seeds[pkey] = {**self._seeds.get(pkey, {}), **by_scope}
            for name, usd in by_scope.items():
                st = self._scopes.get(name)
                if st is not None and st.budget_key == pkey:
                    st.spent += usd

    def inflight(self, scope: str) -> int:
        st = self._scopes.get(scope)
        return st.inflight if st else 0

    async def aclose(self) -> None:
        pass
