"""The key store's tables: keys (hashes only, never a token) and a version row bumped on every change."""

from __future__ import annotations

from collections.abc import Sequence

from ..usage._db import Database, Migration


def _v1(db: Database) -> Sequence[str]:
    return [
        """CREATE TABLE IF NOT EXISTS sluicegate_keys (
            key_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            token_sha256 TEXT NOT NULL,
            user_name TEXT,
            project TEXT,
            env TEXT,
            models TEXT NOT NULL,
            rpm INTEGER,
            tpm INTEGER,
            max_concurrent INTEGER,
            budget_usd DOUBLE PRECISION,
            budget_period TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            revoked_at DOUBLE PRECISION
        )""",
        # Replicas poll this one row; they reload the keys only when it changed.
        "CREATE TABLE IF NOT EXISTS sluicegate_keys_version"
        " (id INTEGER PRIMARY KEY, version BIGINT NOT NULL)",
        "INSERT INTO sluicegate_keys_version (id, version) VALUES (1, 0)",
    ]


MIGRATIONS: list[Migration] = [(1, _v1)]
COMPONENT = "keys"
