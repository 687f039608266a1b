"""The key store: keys in SQLite or PostgreSQL, served from an in-memory dict refreshed in the background.

`lookup()` is the request path: the key id is cut out of the token, one dict get, one sha256
(or the caller's, when it already hashed the token) and a constant-time compare; no I/O. A
background thread polls a version row every `refresh_s`
and reloads the active keys when it changed, so a revocation or rotation made by any replica or
the CLI takes effect everywhere within `refresh_s` (plus the query time). When the store is
unreachable the last loaded keys stay in force.
"""

from __future__ import annotations

import contextlib
import hmac
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .. import log
from ..usage._db import Database, Tx, migrate
from . import tokens
from ._schema import COMPONENT, MIGRATIONS

BUDGET_PERIODS = ("day", "month")
_ACTIVE = " AND revoked_at IS NULL"
_COLS = (
    "key_id, name, token_sha256, user_name, project, env, models, rpm, tpm, max_concurrent,"
    " budget_usd, budget_period, revoked_at, created_at"
)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    key_id: str
    name: str
    user: str | None
    project: str | None
    env: str | None
    models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    max_concurrent: int | None
    budget_usd: float | None
    budget_period: str | None
    revoked: bool
    created_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._by_id: dict[str, tuple[str, KeyEntry]] = {}
        self._version: int | None = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store_up = True
        self._migrated = False
        self.refresh_errors = 0

    @classmethod
    def from_url(cls, url: str) -> KeyStore:
        return cls(Database.from_url(url))

    # -- request path ------------------------------------------------------------------------------
    def lookup(self, token: str, token_sha256: str | None = None) -> KeyEntry | None:
        """The active key of `token`, or None. `token_sha256`: its hex sha256 when the caller
        already has it (the gateway hashed it to look for a config key), so it is not hashed
        twice."""
        key_id = tokens.key_id_of(token)
        if key_id is None:
            return None
        item = self._by_id.get(key_id)
        if item is None:
            return None
        digest = token_sha256 if token_sha256 is not None else tokens.hash_token(token)
        if not hmac.compare_digest(digest, item[0]):
            return None
        return item[1]

    def __len__(self) -> int:
        return len(self._by_id)

    # -- background refresh ------------------------------------------------------------------------
    def start(self, refresh_s: float = 2.0) -> None:
        if self._thread is not None:
            return
        self.refresh()
        self._thread = threading.Thread(
            target=self._run, args=(refresh_s,), name="sluicegate-keys", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None

    def _run(self, refresh_s: float) -> None:
        while not self._stop.wait(refresh_s):
            self.refresh()

    def refresh(self, force: bool = False) -> bool:
        """Reload the active keys if the store changed; False when the store could not be read."""
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                conn = self._conn
                row = conn.execute("SELECT version FROM sluicegate_keys_version WHERE id = 1").fetchone()
                version = int(row[0]) if row else 0
                if force or version != self._version:
                    rows = conn.execute(
                        f"SELECT {_COLS} FROM sluicegate_keys WHERE revoked_at IS NULL"
                    ).fetchall()
                    by_id = {r[0]: (r[2], _entry(r)) for r in rows}
                    self._by_id = by_id  # one reference swap; lookups never see a half-built dict
                    self._version = version
            except Exception as exc:
                self.refresh_errors += 1
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
                if self._store_up:
                    self._store_up = False
                    log.error(
                        "key store unreachable; serving the keys loaded last",
                        store=self.db.display,
                        keys=len(self._by_id),
                        error=str(exc).strip()[:300],
                    )
                return False
            if not self._store_up:
                self._store_up = True
                log.info("key store reachable again", store=self.db.display, keys=len(self._by_id))
            return True

    # -- administration (CLI, admin API; not the request path) --------------------------------------
    def _connect(self) -> Any:
        conn = self.db.connect()
        try:
            migrate(self.db, conn, COMPONENT, MIGRATIONS)
        except Exception:
            conn.close()
            raise
        return conn

    def _mutate(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> int:
        """Run statements in one transaction with the version bump; the row count of the first."""
        conn = self._connect()
        try:
            with Tx(self.db, conn, immediate=True):
                count = 0
                for n, (sql, params) in enumerate(statements):
                    cur = conn.execute(self.db.sql(sql), params)
                    if n == 0:
                        count = cur.rowcount
                        if count == 0:
                            return 0
                conn.execute("UPDATE sluicegate_keys_version SET version = version + 1 WHERE id = 1")
                return count
        finally:
            conn.close()
            if self._thread is not None:
                self.refresh()

    def create(
        self,
        *,
        name: str | None = None,
        user: str | None = None,
        project: str | None = None,
        env: str | None = None,
        models: Sequence[str] = ("*",),
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrent: int | None = None,
        budget_usd: float | None = None,
        budget_period: str | None = None,
    ) -> tuple[KeyEntry, str]:
        """Create a key; the token is returned here once and never stored."""
        if budget_period is not None and budget_period not in BUDGET_PERIODS:
            raise ValueError(f"budget_period must be one of {', '.join(BUDGET_PERIODS)}")
        if budget_usd is not None and budget_period is None:
            budget_period = "month"
        for label, value in (("rpm", rpm), ("tpm", tpm), ("max_concurrent", max_concurrent)):
            if value is not None and value < 1:
                raise ValueError(f"{label} must be at least 1")
        if budget_usd is not None and budget_usd <= 0:
            raise ValueError("budget_usd must be positive")
        model_list = [m.strip() for m in models if m.strip()] or ["*"]
        now = time.time()
        for _ in range(5):
            key_id = tokens.new_key_id()
            token = tokens.make_token(key_id, user, project, env)
            key_name = name or "-".join(p for p in (user, project, env) if p) or key_id
            sql = (
                f"INSERT INTO sluicegate_keys ({_COLS}, updated_at)"
                f" VALUES ({', '.join('?' * 15)})"
                " ON CONFLICT (key_id) DO NOTHING"
            )
            params = (
                key_id,
                key_name,
                tokens.hash_token(token),
                user,
                project,
                env,
                orjson.dumps(model_list).decode(),
                rpm,
                tpm,
                max_concurrent,
                budget_usd,
                budget_period,
                None,
                now,
                now,
            )
            if self._mutate([(sql, params)]):
                entry = KeyEntry(
                    key_id,
                    key_name,
                    user,
                    project,
                    env,
                    tuple(model_list),
                    rpm,
                    tpm,
                    max_concurrent,
                    budget_usd,
                    budget_period,
                    False,
                    now,
                )
                return entry, token
        raise RuntimeError("could not allocate a unique key id")  # pragma: no cover

    def get(self, key_id: str) -> tuple[KeyEntry, str] | None:
        """The entry and its stored hash, straight from the store."""
        conn = self._connect()
        try:
            row = conn.execute(
                self.db.sql(f"SELECT {_COLS} FROM sluicegate_keys WHERE key_id = ?"), (key_id,)
            ).fetchone()
        finally:
            conn.close()
        return (_entry(row), row[2]) if row else None

    def list(self) -> list[KeyEntry]:
        conn = self._connect()
        try:
            rows = conn.execute(f"SELECT {_COLS} FROM sluicegate_keys ORDER BY created_at, key_id").fetchall()
        finally:
            conn.close()
        return [_entry(r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        """True if the key was active and is now revoked."""
        now = time.time()
        sql = "UPDATE sluicegate_keys SET revoked_at = ?, updated_at = ? WHERE key_id = ?" + _ACTIVE
        return self._mutate([(sql, (now, now, key_id))]) > 0

    def rotate(self, key_id: str) -> tuple[KeyEntry, str]:
        """A new secret for the same key id (limits, budgets and usage history carry on); the old
        token stops working. Raises KeyError for an unknown or revoked key."""
        found = self.get(key_id)
        if found is None or found[0].revoked:
            raise KeyError(key_id)
        entry = found[0]
        token = tokens.make_token(key_id, entry.user, entry.project, entry.env)
        sql = "UPDATE sluicegate_keys SET token_sha256 = ?, updated_at = ? WHERE key_id = ?" + _ACTIVE
        if not self._mutate([(sql, (tokens.hash_token(token), time.time(), key_id))]):
            raise KeyError(key_id)
        return entry, token


def _entry(r: Sequence[Any]) -> KeyEntry:
    models = tuple(orjson.loads(r[6])) if r[6] else ("*",)
    return KeyEntry(
        key_id=r[0],
        name=r[1],
        user=r[3],
        project=r[4],
        env=r[5],
        models=models,
        rpm=r[7],
        tpm=r[8],
        max_concurrent=r[9],
        budget_usd=None if r[10] is None else float(r[10]),
        budget_period=r[11],
        revoked=r[12] is not None,
        created_at=float(r[13]),
    )
