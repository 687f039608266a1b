"""The ledger's PostgreSQL batches on a real PostgreSQL: a batch the queue built goes in as one
statement's JSON text (usage/ledger_pg.py) and stores what the row-at-a-time COPY stores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _services import PostgresServer, pg_db_url, postgres_server  # noqa: F401
from sluicegate import _native
from sluicegate.config import ConfigError
from sluicegate.usage import Ledger, batches
from sluicegate.usage._db import Database
from sluicegate.usage.record import record_row
from test_usage_ledger import rec
from test_usage_native_writer import _varied


def _stored(url: str) -> list[tuple[Any, ...]]:
    """Every column but the row id, in request order."""
    with psycopg.connect(url) as c:
        cols = [
            r[0]
            for r in c.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'usage_records' AND column_name != 'id' ORDER BY ordinal_position"
            )
        ]
        return c.execute(f"SELECT {', '.join(cols)} FROM usage_records ORDER BY request_id").fetchall()


def _fresh(server: PostgresServer) -> str:
    server.start()
    return server.new_database()


def test_the_native_batch_stores_what_copy_stores(postgres_server: PostgresServer) -> None:  # noqa: F811
    stored = {}
    for native in (True, False):
        url = _fresh(postgres_server)
        ledger = Ledger.from_url(url, native_writer=native)
        assert ledger.writer == ("native" if native else "python")
        for r in _varied():
            ledger.submit(r)
        ledger.close()
        assert ledger.written == 7 and ledger.dropped == 0
        stored[native] = _stored(url)
    assert stored[True] == stored[False]
    # (ts, day, ...): the UTC day of each record's time, as time.gmtime names it.
    assert [row[:2] for row in stored[True]] == [
        (r.ts, time.strftime("%Y-%m-%d", time.gmtime(r.ts))) for r in _varied()
    ]


def test_a_nul_in_a_text_is_stored_as_the_replacement_character(pg_db_url: str) -> None:  # noqa: F811
    ledger = Ledger.from_url(pg_db_url)
    ledger.submit(rec(1, user="a\x00b", project="\\u0000 stays text"))
    ledger.submit(rec(2))
    ledger.close()
    assert ledger.written == 2 and ledger.dropped == 0
    got = {r["request_id"]: r for r in ledger.records()}
    assert got["req-1"]["user"] == "a\ufffdb"
    assert got["req-1"]["project"] == "\\u0000 stays text"
    assert got["req-2"]["user"] == "alice"


def test_a_record_postgresql_refuses_is_dropped_alone(pg_db_url: str) -> None:  # noqa: F811
    ledger = Ledger.from_url(pg_db_url, batch_max=10, flush_interval_s=60)
    assert ledger.writer == "native"
    for i in range(5):
        # status is an INTEGER column: 2**40 fits the batch (an int) but not the column.
        ledger.submit(rec(i, status=2**40 if i == 2 else 200))
    ledger.close()
    assert ledger.written == 4 and ledger.dropped == 1
    assert sorted(r["request_id"] for r in ledger.records()) == ["req-0", "req-1", "req-3", "req-4"]


def test_a_retried_batch_adds_nothing(pg_db_url: str) -> None:  # noqa: F811
    ledger = Ledger.from_url(pg_db_url)
    conn = ledger._connect()
    q = _native.RowQueue(10, 10, lambda: None, batches.SHAPE)
    for i in range(3):
        q.push(tuple(record_row(rec(i, ts=1_800_000_000.0 + i))))
    batch = q.take_batch()
    assert batch is not None and batch.n == 3
    for _ in range(2):  # the commit landed but its acknowledgement was lost: written again
        assert ledger._write_batch(conn, batch) == 3
    conn.close()
    assert len(_stored(pg_db_url)) == 3


def test_the_statement_follows_the_columns_the_store_declares(pg_db_url: str) -> None:  # noqa: F811
    ledger = Ledger.from_url(pg_db_url)
    conn = ledger._connect()
    try:
        sql = ledger._pg_batch_sql
        assert "(r->>0)::double precision" in sql and "r->>1," in sql  # ts, then request_id (text)
        assert "::boolean" in sql and "::integer" in sql and "::bigint" in sql
        conn.execute("ALTER TABLE usage_records DROP COLUMN env")
        with pytest.raises(RuntimeError, match="no column 'env'"):
            ledger._connect()
    finally:
        conn.close()


@pytest.mark.parametrize(("query", "prepared"), [("", True), ("?prepare_threshold=none", False)])
def test_prepare_threshold_none_keeps_statements_unprepared(
    pg_db_url: str,  # noqa: F811
    query: str,
    prepared: bool,
) -> None:
    # For a PgBouncer in transaction mode before 1.21: each transaction may reach another server
    # connection, where a statement prepared on the first does not exist.
    db = Database.from_url(pg_db_url + query)
    assert "prepare_threshold" not in db.conninfo
    with db.connect() as conn:
        for _ in range(8):  # past psycopg's default threshold of 5
            conn.execute("SELECT %s::int + 1", (1,)).fetchone()
        n = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
    assert (n > 0) is prepared


def test_a_bad_prepare_threshold_names_its_config_path(tmp_path: Path) -> None:
    from sluicegate.compile import compile_file

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "ledger:\n  url: postgresql://u:secret@db/x?prepare_threshold=sometimes\n"
        "providers: {a: {type: anthropic, base_url: 'http://127.0.0.1:1', api_key: k}}\n"
        "models: {m: {targets: [{provider: a, model: x}]}}\n"
    )
    with pytest.raises(ConfigError) as info:
        compile_file(str(cfg))
    [issue] = info.value.issues
    assert issue.path == "ledger.url" and "prepare_threshold" in issue.message
    assert "secret" not in issue.message
