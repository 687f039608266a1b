"""The interface both limiters implement, and the factory that picks one from the config."""

from __future__ import annotations

from typing import Any

from .spec import Admission, LimitSpec


class Limiter:
    """admit() before the upstream call, settle() exactly once after it (in a finally block)."""

    backend = "none"
    backend_errors = 0
    degraded_decisions = 0
    available = True

    async def admit(self, scopes: list[tuple[str, LimitSpec]]) -> Admission:
        raise NotImplementedError

    async def settle(self, adm: Admission, tokens: int, cost_usd: float) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass

    @staticmethod
    def from_config(section: Any | None) -> Limiter:
        """`limits: {backend: memory | redis://..., on_backend_error: open | closed}` -> a limiter."""
        from .memory import MemoryLimiter
        from .redis_backend import RedisLimiter

        backend = getattr(section, "backend", "memory") if section is not None else "memory"
        if backend == "memory":
            return MemoryLimiter()
        return RedisLimiter(
            backend,
            on_backend_error=getattr(section, "on_backend_error", "open"),
            timeout_s=getattr(section, "timeout_s", 0.5),
            concurrency_lease_s=getattr(section, "concurrency_lease_s", 900.0),
            key_prefix=getattr(section, "key_prefix", "sluicegate"),
        )
