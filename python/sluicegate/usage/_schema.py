"""The usage ledger's schema, applied as numbered migrations: a `usage_records` table of one row a
record on PostgreSQL; on SQLite, since migration 5, batches, daily sums and a `usage_records` view
over the batches (batches.py)."""

from __future__ import annotations

from collections.abc import Sequence

from . import batches
from ._db import Database, Migration


def _v1(db: Database) -> Sequence[str]:
    pk = db.types()["pk"]
    return [
        f"""CREATE TABLE IF NOT EXISTS usage_records (
            id {pk},
            ts DOUBLE PRECISION NOT NULL,
            day TEXT NOT NULL,
            request_id TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            key_id TEXT,
            key_name TEXT,
            user_name TEXT,
            project TEXT,
            env TEXT,
            model_group TEXT,
            target TEXT,
            upstream_model TEXT,
            requested_model TEXT,
            session_id TEXT,
            agent_id TEXT,
            parent_agent_id TEXT,
            status INTEGER NOT NULL,
            stream BOOLEAN NOT NULL,
            input_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            cache_creation_tokens BIGINT NOT NULL DEFAULT 0,
            cache_read_tokens BIGINT NOT NULL DEFAULT 0,
            image_count INTEGER NOT NULL DEFAULT 0,
            cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
            upstream_cost_usd DOUBLE PRECISION,
            ttfb_ms DOUBLE PRECISION,
            duration_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
            error_type TEXT,
            client_disconnected BOOLEAN NOT NULL DEFAULT FALSE
        )""",
        # A retried batch (the commit landed but its acknowledgement was lost) inserts nothing twice.
        "CREATE UNIQUE INDEX IF NOT EXISTS usage_records_request ON usage_records (request_id, ts)",
        # `usage --since/--until` ranges, and `--by X` / `--X value` for each attribution column.
        "CREATE INDEX IF NOT EXISTS usage_records_ts ON usage_records (ts)",
        "CREATE INDEX IF NOT EXISTS usage_records_day ON usage_records (day)",
        "CREATE INDEX IF NOT EXISTS usage_records_key ON usage_records (key_id, ts)",
        "CREATE INDEX IF NOT EXISTS usage_records_user ON usage_records (user_name, ts)",
        "CREATE INDEX IF NOT EXISTS usage_records_project ON usage_records (project, ts)",
        "CREATE INDEX IF NOT EXISTS usage_records_session ON usage_records (session_id, ts)",
        "CREATE INDEX IF NOT EXISTS usage_records_group ON usage_records (model_group, ts)",
    ]


def _v2(db: Database) -> Sequence[str]:
    # Tokens the gateway estimated because the upstream reported none (no usage chunk).
    return ["ALTER TABLE usage_records ADD COLUMN usage_estimated BOOLEAN NOT NULL DEFAULT FALSE"]


def _v3(db: Database) -> Sequence[str]:
    # The retry guard keyed (ts, request_id) instead of (request_id, ts): request ids are random,
    # so every row landed at a random leaf of the old index, which grew out of the page cache as
    # the table grew (measured: ~38 us a row on 20,000+ rows, ~19 with this order). Time-ordered,
    # a row is an append, and the same index serves `--since/--until`, so the ts index goes.
    # ON CONFLICT (request_id, ts) still matches it: both databases infer by the column set.
    return [
        "CREATE UNIQUE INDEX IF NOT EXISTS usage_records_ts_request ON usage_records (ts, request_id)",
        "DROP INDEX IF EXISTS usage_records_request",
        "DROP INDEX IF EXISTS usage_records_ts",
    ]


def _v4(db: Database) -> Sequence[str]:
    # The per-dimension indexes of v1 cost the writer ~7-8 us a row on the gateway's core
    # (measured on 20,000+ rows: 16-23 us a row with them, 9-13 without) for the sake of
    # filtered reports, which are rare. They are now opt-in per dimension (`ledger.indexes`,
    # named usage_records_by_<dimension>, kept by the ledger's writer); time ranges keep the
    # (ts, request_id) index.
    return [
        f"DROP INDEX IF EXISTS usage_records_{name}"
        for name in ("day", "key", "user", "project", "session", "group")
    ]


def _v5(db: Database) -> Sequence[str]:
    # SQLite: records stored a batch a row, with sums per day (usage/batches.py says why); the
    # records of the one-row-a-record table move into them and usage_records becomes a view.
    if db.dialect != "sqlite":
        return []
    return [
        *batches.schema_statements(),
        *batches.convert_rows_statements("usage_records"),
        "DROP TABLE usage_records",
        batches.view_statement(),
    ]


MIGRATIONS: list[Migration] = [(1, _v1), (2, _v2), (3, _v3), (4, _v4), (5, _v5)]
COMPONENT = "usage"
