"""Rate limits, concurrency and budgets per key, project and group: in-process or in Redis."""

from ._base import Limiter
from .memory import MemoryLimiter
from .redis_backend import RedisLimiter
from .spec import Admission, LimitSpec, period_end, period_key, period_start

from_config = Limiter.from_config

__all__ = [
    "Admission",
    "LimitSpec",
    "Limiter",
    "MemoryLimiter",
    "RedisLimiter",
    "from_config",
    "period_end",
    "period_key",
    "period_start",
]
