"""Per-worker accounting services: key store, limiter, usage ledger and metrics.

Created in each worker process after it forks (threads and sockets do not survive a fork)
and closed when it stops. The request path touches them only through cheap calls: a dict
look-up for store keys, one limiter admit/settle when a limit applies, and a non-blocking
queue put for the usage record.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import threading
import time
from concurrent.futures import Future
from typing import Any

import orjson

from . import log
from .config.ops_sections import (
    AdminSection,
    KeystoreSection,
    LedgerSection,
    LimitsSection,
    MetricsSection,
    keystore_url,
    ledger_url,
    state_dir,
)
from .context import RequestContext
from .errors import GatewayError
from .limits import Limiter, LimitSpec, MemoryLimiter, period_start
from .metrics import Metrics
from .request_end import new_sink, usage_row
from .snapshot import KeyInfo, Snapshot
from .usage.ledger import Ledger, NullLedger
from .usage.pricing import cost_usd


class StoreKeyInfo(KeyInfo):
    """A key from the key store; its `models` may hold `*` patterns over group names."""

    __slots__ = ("patterns",)

    def __init__(self, entry: Any) -> None:
        models = tuple(entry.models)
        exact = None if "*" in models else frozenset(m for m in models if "*" not in m)
        super().__init__(
            key_id=entry.key_id,
            name=entry.name,
            user=entry.user,
            project=entry.project,
            env=entry.env,
            allowed=exact,
            rpm=entry.rpm,
            tpm=entry.tpm,
            max_concurrent=entry.max_concurrent,
            budget_usd=entry.budget_usd,
            budget_period=entry.budget_period,
        )
        self.patterns = tuple(m for m in models if "*" in m and m != "*")

    def may_use(self, group: str) -> bool:
        if self.allowed is None or group in self.allowed:
            return True
        return any(fnmatch.fnmatchcase(group, p) for p in self.patterns)


def _section(model: Any, data: Any) -> Any:
    return model.model_validate(data) if data is not None else None


def check_sections(snap: Snapshot) -> None:
    """Validate the operational sections as resolved from the environment (raises ValueError)."""
    ops = snap.ops
    for name, model in (
        ("ledger", LedgerSection),
        ("keystore", KeystoreSection),
        ("limits", LimitsSection),
        ("metrics", MetricsSection),
        ("admin", AdminSection),
    ):
        try:
            _section(model, ops.get(name))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None


# Budgeted requests wait for the ledger's spend at most this long after start-up; after that
# (the store is slow or down) budgets go on from what this process has seen.
BUDGET_SEED_WAIT_S = 5.0
_SEED_SCOPES = (("key", "key:"), ("project", "project:"), ("group", "group:"))


def load_budget_spend(ledger: Any, now: float) -> dict[str, dict[str, float]]:
    """USD per budget scope spent so far this UTC day and this month, from the ledger."""
    day0, month0 = period_start("day", now), period_start("month", now)
    spent: dict[str, dict[str, float]] = {"day": {}, "month": {}}
    for by, prefix in _SEED_SCOPES:
        for value, (day, month) in ledger.spend_by_period(by, day0, month0).items():
            if day > 0:
                spent["day"][prefix + value] = day
            if month > 0:
                spent["month"][prefix + value] = month
    return spent


def _breaker_states() -> dict[str, str]:
    """This worker's circuit state per target (what its scrapes and its published file show)."""
    from .health import all_health

    return {name: h.state for name, h in list(all_health().items())}


def _seed_in_background(ledger: Any) -> Future[tuple[float, dict[str, dict[str, float]], float]]:
    """Query the ledger in a thread (a month of records can take a while) so start-up and
    requests without budgets never wait for it."""
    fut: Future[tuple[float, dict[str, dict[str, float]], float]] = Future()

    def run() -> None:
        started = time.monotonic()
        now = time.time()
        try:
            spent = load_budget_spend(ledger, now)
        except Exception as exc:
            fut.set_exception(exc)
        else:
            fut.set_result((now, spent, time.monotonic() - started))

    threading.Thread(target=run, name="sluicegate-budget-seed", daemon=True).start()
    return fut


class Services:
    def __init__(self, snap: Snapshot) -> None:
        ops = snap.ops
        self.ledger_section: LedgerSection | None = _section(LedgerSection, ops.get("ledger"))
        self.keystore_section: KeystoreSection | None = _section(KeystoreSection, ops.get("keystore"))
        self.limits_section: LimitsSection | None = _section(LimitsSection, ops.get("limits"))
        self.metrics_section: MetricsSection = _section(
            MetricsSection, ops.get("metrics")
        ) or MetricsSection.model_validate({})
        admin: AdminSection | None = _section(AdminSection, ops.get("admin"))
        self.admin_token = admin.token if admin else None
        self._key_cache: dict[str, tuple[Any, StoreKeyInfo]] = {}
        # The limits of projects and model groups, built once from the config (a key's own are
        # its KeyInfo's `limit_spec`).
        lim = self.limits_section
        projects = lim.projects if lim is not None else {}
        groups = lim.groups if lim is not None else {}
        self._project_specs = {name: LimitSpec.of(p, label=f"project {name}") for name, p in projects.items()}
        self._group_specs = {name: LimitSpec.of(g, label=f"model group {name}") for name, g in groups.items()}

        state_dir().mkdir(parents=True, exist_ok=True)
        ls = self.ledger_section
        if ls is not None and not ls.enabled:
            self.ledger: Any = NullLedger()
        else:
            kw = {}
            if ls is not None:
                kw = {
                    "queue_max": ls.queue_max,
                    "batch_max": ls.batch_max,
                    "flush_interval_s": ls.flush_interval_s,
                    "indexes": ls.indexes,
                    "native_writer": ls.native_writer,
                }
            self.ledger = Ledger.from_url(ledger_url(ls), **kw)
        self.ledger.start()
        from .keys import KeyStore

        self.keystore = KeyStore.from_url(keystore_url(self.keystore_section))
        self.keystore.start(self.keystore_section.refresh_s if self.keystore_section else 2.0)
        self.limiter = Limiter.from_config(self.limits_section)
        # In-process budgets would restart at zero: start them from the ledger's spend. (Redis
        # keeps its counters across restarts.)
        self._budget_seed: Future[Any] | None = None
        self._seed_deadline = time.monotonic() + BUDGET_SEED_WAIT_S
        if isinstance(self.limiter, MemoryLimiter) and not isinstance(self.ledger, NullLedger):
            self._budget_seed = _seed_in_background(self.ledger)
        self.metrics_enabled = self.metrics_section.enabled
        self.metrics = Metrics(shared_dir=state_dir() / "metrics")
        # The access line and the metrics' counters of each finished request (rust/accounting.rs).
        self.sink = new_sink()
        self.metrics.drain_from(self.sink)
        # Whether a finished request leaves anything besides its access line.
        self.recording = self.metrics_enabled or not isinstance(self.ledger, NullLedger)
        # The ledger's queue when it builds batches (SQLite, the native writer): the sink hands
        # it the values it read, else the ledger queues the row itself.
        self._batch_queue = getattr(self.ledger, "batch_queue", None)
        self.metrics.watch(
            ledger=self.ledger, limiter=self.limiter, keystore=self.keystore, health=_breaker_states
        )
        # Workers publish their figures for each other's scrapes; a lone worker answers from its
        # own, and a publishing thread on its core would only delay requests.
        if self.metrics_enabled and int(os.environ.get("SLUICEGATE_WORKERS") or 1) > 1:
            self.metrics.start_publishing()

    # -- keys --------------------------------------------------------------------------------------
    def lookup_key(self, token: str, token_sha256: str | None = None) -> KeyInfo | None:
        entry = self.keystore.lookup(token, token_sha256)
        if entry is None:
            return None
        cached = self._key_cache.get(entry.key_id)
        if cached is not None and cached[0] is entry:
            return cached[1]
        info = StoreKeyInfo(entry)
        if len(self._key_cache) > 100_000:
            self._key_cache.clear()
        self._key_cache[entry.key_id] = (entry, info)
        return info

    # -- limits ------------------------------------------------------------------------------------
    async def admit(self, ctx: RequestContext, key: KeyInfo, group: str) -> None:
        """Raise the API's rate-limit / budget error when a limit says no; else remember the admission."""
        scopes: list[tuple[str, LimitSpec]] = []
        kspec = key.limit_spec
        if not kspec.empty:
            scopes.append(("key:" + key.key_id, kspec))
        if key.project and (pspec := self._project_specs.get(key.project)) is not None:
            scopes.append(("project:" + key.project, pspec))
        if (gspec := self._group_specs.get(group)) is not None:
            scopes.append(("group:" + group, gspec))
        if not scopes:
            return
        if self._budget_seed is not None:
            await self._apply_budget_seed(scopes)
        adm = await self.limiter.admit(scopes)
        self.metrics.limiter_decision(adm.reason if not adm.ok else ("degraded" if adm.degraded else None))
        if adm.ok:
            ctx.limit_admission = adm
            return
        if adm.reason == "budget":
            raise GatewayError(402, adm.message, "billing_error")
        if adm.reason == "limits_unavailable":
            raise GatewayError(503, adm.message, "api_error", [("retry-after", adm.retry_after_header)])
        raise GatewayError(429, adm.message, "rate_limit_error", [("retry-after", adm.retry_after_header)])

    async def _apply_budget_seed(self, scopes: list[tuple[str, LimitSpec]]) -> None:
        """Hand the ledger's spend to the limiter once it is loaded; a budgeted request in the
        first moments after start-up waits for it (bounded), others go on at once."""
        fut = self._budget_seed
        if fut is None:
            return
        if not fut.done():
            left = self._seed_deadline - time.monotonic()
            if left <= 0 or not any(spec.budget_usd for _, spec in scopes):
                return
            await asyncio.wait({asyncio.wrap_future(fut)}, timeout=left)
            if not fut.done() or self._budget_seed is not fut:
                return
        self._budget_seed = None
        exc = fut.exception()
        if exc is not None:
            log.warning(
                "budgets not seeded from the ledger; they count from zero in this process",
                error=type(exc).__name__,
                detail=str(exc)[:300],
            )
            return
        at, spent, seconds = fut.result()
        assert isinstance(self.limiter, MemoryLimiter)
        self.limiter.seed_budgets(spent, at)
        log.info(
            "budgets seeded from the ledger",
            day_scopes=len(spent["day"]),
            month_scopes=len(spent["month"]),
            seconds=round(seconds, 3),
        )

    # -- end of request ----------------------------------------------------------------------------
    def request_done(self, ctx: RequestContext, duration_s: float, access_log: bool) -> int:
        """Metrics, the ledger's record and (when wanted) the access line of a finished request;
        what the sink said of its access lines, for log.access_kept. What settles its limits,
        if it was admitted under any, is `settle` (to await)."""
        u = ctx.usage
        price = ctx.price
        ctx.cost = cost = cost_usd(price, u[0], u[1], u[2], u[3]) if price is not None else 0.0
        if not (self.recording or access_log):  # every accounting switch off: nothing to build
            return 0
        row = usage_row(ctx, cost, duration_s)
        tail = None if ctx.prompt_log is None else b',"request_body":' + orjson.dumps(ctx.prompt_log)
        queue = self._batch_queue
        kept: int = self.sink.done(
            row, ctx.ttfb, duration_s, ctx.attempts, tail, self.metrics_enabled, access_log, queue
        )
        if queue is None:
            self.ledger.submit_row(row)
        return kept

    async def settle(self, ctx: RequestContext) -> None:
        """The limits a finished request was admitted under get its tokens and cost."""
        adm = ctx.limit_admission
        if adm is None:
            return
        u = ctx.usage
        try:
            await self.limiter.settle(adm, u[0] + u[1], ctx.cost)
        except Exception as exc:  # never fail a finished request over accounting
            log.warning("limiter settle failed", error=type(exc).__name__)

    async def close(self) -> None:
        started = time.monotonic()
        with contextlib.suppress(Exception):
            await self.limiter.aclose()
        self.ledger.close()
        self.keystore.close()
        self.metrics.close()
        log.info(
            "accounting closed",
            ledger_written=getattr(self.ledger, "written", None),
            ledger_dropped=getattr(self.ledger, "dropped", None),
            seconds=round(time.monotonic() - started, 3),
        )
