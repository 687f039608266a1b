"""Limits shared by every replica through Redis: one atomic Lua script per admit and per settle.

When Redis cannot be reached the limiter follows `on_backend_error`: "open" admits (and the
admission is marked degraded, counted, logged once per outage), "closed" refuses with reason
"limits_unavailable". After an error Redis is not tried again for `cooldown_s`, so an outage
costs requests no connect timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from .. import log
from ._base import Limiter
from ._lua import ADMIT, SETTLE
from .spec import Admission, LimitSpec, active, period_end, period_key, refusal, unavailable


class RedisLimiter(Limiter):
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        on_backend_error: str = "open",
        timeout_s: float = 0.5,
        concurrency_lease_s: float = 900.0,
        key_prefix: str = "sluicegate",
        cooldown_s: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if on_backend_error not in ("open", "closed"):
            raise ValueError("on_backend_error must be 'open' or 'closed'")
        self.url = url
        self.fail_open = on_backend_error == "open"
        self.timeout_s = timeout_s
        self.lease_s = concurrency_lease_s
        # One hash tag for every key: the scripts touch several scopes' keys, and on a Redis
        # Cluster all of them must live in one slot.
        self._prefix = "{" + key_prefix + "}"
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._admit_script: Any = None
        self._settle_script: Any = None
        self._down_until = 0.0
        self.available = True
        self.backend_errors = 0
        self.degraded_decisions = 0

    # Redis asyncio connections belong to the event loop that made them (one per Granian worker).
    def _scripts(self) -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
            self._admit_script = self._client.register_script(ADMIT)
            self._settle_script = self._client.register_script(SETTLE)
            self._loop = loop
        return self._admit_script, self._settle_script

    def _key(self, kind: str, scope: str) -> str:
        return f"{self._prefix}:{kind}:{scope}"

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def _now(self) -> float:
        return time.time() if self._clock is None else self._clock()

    async def admit(self, scopes: list[tuple[str, LimitSpec]]) -> Admission:
        todo = active(scopes)
        if not todo:
            return Admission(True)
        if time.monotonic() < self._down_until:
            return self._on_error(None)
        now = self._now()
        lease = secrets.token_hex(8)
        keys: list[str] = []
        args: list[Any] = [self._now_arg(), self.lease_s, lease, len(todo)]
        for name, spec in todo:
            budget_key = self._key("budget", f"{name}:{period_key(spec.period, now)}")
            keys += [self._key("rpm", name), self._key("tpm", name), self._key("conc", name), budget_key]
            reset_in = period_end(spec.period, now) - now if spec.budget_usd else 0
            args += [
                spec.rpm or 0,
                spec.tpm or 0,
                spec.max_concurrent or 0,
                spec.budget_usd or 0,
                f"{reset_in:.3f}",
            ]
        try:
            admit_script, _ = self._scripts()
            res = await admit_script(keys=keys, args=args)
        except Exception as exc:  # redis errors, timeouts, OS errors: the configured policy decides
            return self._on_error(exc)
        self._recovered()
        if int(res[0]) == 1:
            return Admission(True, scopes=todo, lease=lease)
        name, spec = todo[int(res[1]) - 1]
        return refusal(name, spec, str(res[2]), float(res[3]), now)

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        if not adm.ok or adm.settled or not adm.scopes or adm.degraded:
            return
        adm.settled = True
        now = self._now()
        keys: list[str] = []
        args: list[Any] = [
            self._now_arg(),
            adm.lease,
            len(adm.scopes),
            max(0, int(tokens)),
            repr(float(cost_usd)),
        ]
        for name, spec in adm.scopes:
            budget_key = self._key("budget", f"{name}:{period_key(spec.period, now)}")
            keys += [self._key("tpm", name), self._key("conc", name), budget_key]
            ttl = int(period_end(spec.period, now) - now) + 86400 if spec.budget_usd else 0
            args += [1 if spec.tpm else 0, 1 if spec.max_concurrent else 0, ttl]
        if time.monotonic() < self._down_until:
            return  # the lease expires by itself; tokens and spend of this request are lost
        try:
            _, settle_script = self._scripts()
            await settle_script(keys=keys, args=args)
        except Exception as exc:
            self._error(exc)
            return
        self._recovered()

    def _error(self, exc: BaseException | None) -> None:
        if exc is not None:
            self.backend_errors += 1
            self._down_until = time.monotonic() + self._cooldown_s
        if self.available:
            self.available = False
            log.error(
                "limits backend unavailable",
                backend="redis",
                policy="fail open: admitting without limits"
                if self.fail_open
                else "fail closed: refusing requests",
                error=str(exc)[:300] if exc else None,
            )

    def _on_error(self, exc: BaseException | None) -> Admission:
        self._error(exc)
        self.degraded_decisions += 1
        if self.fail_open:
            return Admission(True, degraded=True)
        return unavailable()

    def _recovered(self) -> None:
        if not self.available:
            self.available = True
            log.info("limits backend available again", backend="redis")

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None
            self._loop = None
