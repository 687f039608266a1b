"""Config sections for accounting and operations: ledger, keystore, limits, admin, metrics, prices.

Every section is optional. With none set, state goes to SQLite files in the state directory
(`$SLUICEGATE_STATE_DIR`, else `./.sluicegate/`): `usage.db` for the ledger, `keys.db` for keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..usage._db import Database


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def state_dir() -> Path:
    """Where embedded state lives: $SLUICEGATE_STATE_DIR, else ./.sluicegate (absolute)."""
    return Path(os.environ.get("SLUICEGATE_STATE_DIR") or ".sluicegate").expanduser().resolve()


def sqlite_url(path: Path) -> str:
    return "sqlite:///" + str(path.expanduser().resolve())


def default_ledger_url() -> str:
    return sqlite_url(state_dir() / "usage.db")


def default_keystore_url() -> str:
    return sqlite_url(state_dir() / "keys.db")


def _store_url(v: str | None) -> str | None:
    if v is not None:
        Database.from_url(v)  # the scheme, and sluicegate's own parameters, checked at load time
    return v


# `usage --by X` / `--X value` dimensions (usage.ledger.BY_COLUMNS) that may have an index.
IndexDimension = Literal[
    "key", "user", "project", "env", "session", "agent", "group", "target", "model", "day"
]


class LedgerSection(_Strict):
    url: str | None = None  # None: sqlite in the state dir
    enabled: bool = True
    queue_max: int = Field(10000, ge=1)
    # Records a write; on SQLite one batch row, whose records the view numbers below 2**20.
    batch_max: int = Field(500, ge=1, le=100_000)
    flush_interval_s: float = Field(0.5, gt=0, le=60)
    # PostgreSQL: dimensions whose filtered reports get an index of their own (none by default:
    # see docs/accounting.md, "Indexes (PostgreSQL)"); time ranges always have one.
    indexes: list[IndexDimension] = Field(default_factory=list)
    # Batches built by the native extension's queue: on SQLite stored by its writer when it shares
    # the sqlite3 module's SQLite library, on PostgreSQL as one statement's text a batch
    # (docs/accounting.md, "The writer"); false: rows through the sqlite3 / psycopg drivers.
    native_writer: bool = True

    _check_url = field_validator("url")(_store_url)

    def resolved_url(self) -> str:
        return self.url or default_ledger_url()


class KeystoreSection(_Strict):
    url: str | None = None  # None: sqlite in the state dir
    refresh_s: float = Field(2.0, gt=0, le=300)

    _check_url = field_validator("url")(_store_url)

    def resolved_url(self) -> str:
        return self.url or default_keystore_url()


class LimitSpecModel(_Strict):
    """Limits for one key, project or group."""

    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, gt=0)
    # A budget without a period is monthly.
    budget_period: Literal["day", "month"] | None = None

    @model_validator(mode="after")
    def _period_needs_budget(self) -> LimitSpecModel:
        if self.budget_period is not None and self.budget_usd is None:
            raise ValueError("budget_period is set but budget_usd is not")
        return self


class LimitsSection(_Strict):
    backend: str = "memory"  # "memory" | "redis://host:port/db" | "rediss://..." | "unix://..."
    on_backend_error: Literal["open", "closed"] = "open"
    timeout_s: float = Field(0.5, gt=0, le=30)
    concurrency_lease_s: float = Field(900.0, gt=0)
    key_prefix: str = Field("sluicegate", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    projects: dict[str, LimitSpecModel] = Field(default_factory=dict)
    groups: dict[str, LimitSpecModel] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v != "memory" and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected 'memory' or a redis:// URL")
        return v


class AdminSection(_Strict):
    token: str | None = None  # unset or empty: the admin API is off (404)

    @field_validator("token")
    @classmethod
    def _long_enough(cls, v: str | None) -> str | None:
        if v and len(v) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        return v or None


class MetricsSection(_Strict):
    enabled: bool = True
    path: str = Field("/metrics", pattern=r"^/[^?#\s]*$")
    token: str | None = None  # set: scrapes need `Authorization: Bearer <token>`


class PriceModel(_Strict):
    """USD per million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    cache_write: float = Field(0.0, ge=0)
    cache_read: float = Field(0.0, ge=0)


class OpsSections(_Strict):
    """The top-level keys this module owns, as one model (the config loader mixes them in)."""

    ledger: LedgerSection | None = None
    keystore: KeystoreSection | None = None
    limits: LimitsSection | None = None
    admin: AdminSection | None = None
    metrics: MetricsSection | None = None


def ledger_url(section: LedgerSection | None) -> str:
    return section.resolved_url() if section is not None else default_ledger_url()


def keystore_url(section: KeystoreSection | None) -> str:
    return section.resolved_url() if section is not None else default_keystore_url()
