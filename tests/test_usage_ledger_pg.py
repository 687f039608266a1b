"""The ledger's PostgreSQL batches on a real PostgreSQL: a batch the queue built goes in as one
statement's JSON text (usage/ledger_pg.py) and stores what the row-at-a-time COPY stores."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from _services import PostgresServer, pg_db_url, postgres_server  # noqa: F401
from sluicegate import _native
from sluicegate.usage import Ledger, batches
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
