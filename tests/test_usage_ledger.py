"""The ledger on a real SQLite file and a real PostgreSQL: batching, the bounded queue, flushing
on close, and a stopped PostgreSQL that never blocks submit()."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _services import PostgresServer, pg_db_url, postgres_server, postgres_url  # noqa: F401
from sluicegate.usage import Ledger, UsageRecord, cost_usd
from sluicegate.usage.pricing import Price
from sluicegate.usage.record import record_row


def rec(i: int, ts: float | None = None, **kw: object) -> UsageRecord:
    base: dict[str, object] = dict(
        ts=ts if ts is not None else time.time(),
        request_id=f"req-{i}",
        endpoint="messages",
        key_id="k1",
        key_name="alice-laptop",
        user="alice",
        project="payments",
        env="dev",
        group="sonnet",
        target="anthropic/sonnet",
        upstream_model="claude-sonnet-4-5",
        requested_model="sonnet",
        session_id="s1",
        agent_id=None,
        parent_agent_id=None,
        status=200,
        stream=True,
        input_tokens=10,
        output_tokens=20,
    )
    base.update(kw)
    return UsageRecord(**base)  # type: ignore[arg-type]


def _count(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT COUNT(*) FROM usage_records").fetchone()[0])


def test_sqlite_wal_batches_and_close_flushes(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    ledger = Ledger.from_url(f"sqlite:///{path}", batch_max=50, flush_interval_s=60)
    ledger.start()
    for i in range(120):
        ledger.submit(rec(i))
    # Two full batches are written at once (the writer is woken by a full batch), the rest waits
    # for the interval...
    deadline = time.monotonic() + 5
    while ledger.written < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ledger.written == 100 and ledger.queue_depth == 20
    # ... and a clean close writes what is left.
    ledger.close()
    assert ledger.written == 120 and ledger.queue_depth == 0 and ledger.dropped == 0
    assert _count(path) == 120
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = c.execute("SELECT component, version FROM sluicegate_migrations").fetchall()
        assert ("usage", 1) in versions
    ledger.submit(rec(999))  # after close: counted as dropped, never raises
    assert ledger.dropped == 1


def test_bounded_queue_drops_and_counts(tmp_path: Path) -> None:
    ledger = Ledger.from_url(f"sqlite:///{tmp_path}/u.db", queue_max=100)
    for i in range(150):  # writer not started: nothing drains
        ledger.submit(rec(i))
    assert ledger.queue_depth == 100 and ledger.dropped == 50
    ledger.close()
    assert ledger.written == 100 and _count(tmp_path / "u.db") == 100


def _store_url(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh store of either kind for the tests parametrized over both."""
    return f"sqlite:///{tmp_path}/u.db" if store == "sqlite" else str(request.getfixturevalue("pg_db_url"))


def _store_at_version(
    version: int, store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Any, Any]:
    """A fresh store of either kind migrated to `version` only, and a connection to it."""
    from sluicegate.usage._db import Database, migrate
    from sluicegate.usage._schema import COMPONENT, MIGRATIONS

    db = Database.from_url(_store_url(store, tmp_path, request))
    conn = db.connect()
    migrate(db, conn, COMPONENT, [m for m in MIGRATIONS if m[0] <= version])
    return db, conn


def _usage_indexes(store: str, conn: Any) -> set[str]:
    if store == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage_records'"
    else:
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'usage_records' AND indexname != 'usage_records_pkey'"
    return {r[0] for r in conn.execute(sql)}


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_every_field_round_trips(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    ledger = Ledger.from_url(_store_url(store, tmp_path, request))
    price = Price(3.0, 15.0, 3.75, 0.3)
    r = rec(
        1,
        ts=1_800_000_000.5,
        agent_id="a1",
        parent_agent_id="a0",
        status=499,
        stream=True,
        cache_creation_tokens=2000,
        cache_read_tokens=50000,
        image_count=2,
        cost_usd=cost_usd(price, 10, 20, 2000, 50000),
        upstream_cost_usd=0.5,
        ttfb_ms=123.4,
        duration_ms=4567.8,
        error_type="client_disconnected",
        client_disconnected=True,
        usage_estimated=True,
    )
    plain = rec(2, ts=1_700_000_000.25)  # the optional fields unset: NULLs and defaults
    ledger.submit(plain)  # first in the batch: a column's array may start with NULL
    ledger.submit(r)
    ledger.close()
    assert ledger.written == 2
    assert ledger.records() == [{f: getattr(x, f) for f in x.__slots__} for x in (plain, r)]


def test_postgres_down_does_not_block_submit_and_records_land_after(
    pg_db_url: str,  # noqa: F811
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    ledger = Ledger.from_url(pg_db_url, batch_max=20, flush_interval_s=0.05)
    ledger.start()
    for i in range(10):
        ledger.submit(rec(i))
    deadline = time.monotonic() + 5
    while ledger.written < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ledger.written == 10
    with postgres_server.down():
        worst = 0.0
        for i in range(10, 210):
            t0 = time.perf_counter()
            ledger.submit(rec(i))
            worst = max(worst, time.perf_counter() - t0)
        assert worst < 0.005  # never waits on the store
        time.sleep(0.5)
        assert not ledger.store_up and ledger.write_errors >= 1
        assert ledger.written == 10 and ledger.queue_depth == 200
    # PostgreSQL is back: the queued records land without anyone asking.
    deadline = time.monotonic() + 15
    while ledger.written < 210 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.written == 210 and ledger.dropped == 0 and ledger.store_up
    ledger.close()
    assert len(ledger.records()) == 210


def test_close_under_concurrent_load_loses_nothing(pg_db_url: str) -> None:  # noqa: F811
    ledger = Ledger.from_url(pg_db_url, queue_max=1_000_000, batch_max=500, flush_interval_s=0.02)
    ledger.start()
    stop = threading.Event()
    submitted = [0, 0]

    def producer(n: int) -> None:
        i = 0
        while not stop.is_set():
            ledger.submit(rec(n * 1_000_000 + i))
            i += 1
            if i % 50 == 0:
                time.sleep(0.001)
        submitted[n] = i

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    ledger.close()
    assert ledger.dropped == 0
    assert ledger.written == sum(submitted)
    assert len(ledger.records()) == sum(submitted)


def test_bad_url_is_refused() -> None:
    with pytest.raises(ValueError):
        Ledger.from_url("mysql://x")


def test_spend_by_period_sums_the_day_and_the_month(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sluicegate.services import load_budget_spend

    now = datetime(2026, 11, 22, 15, 0, tzinfo=UTC).timestamp()
    day0 = datetime(2026, 11, 22, tzinfo=UTC).timestamp()
    month0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    ledger = Ledger.from_url(f"sqlite:///{tmp_path}/u.db")
    for i, (ts, key, project, cost) in enumerate(
        [
            (now - 60, "k1", "payments", 1.25),  # today
            (day0 + 1, "k1", "payments", 0.75),  # today, just after midnight
            (day0 - 1, "k1", "payments", 2.0),  # yesterday: this month only
            (month0 - 1, "k1", "payments", 100.0),  # last month: not at all
            (now - 30, "k2", None, 0.5),
            (now - 20, None, None, 9.0),  # unattributed (a 401): no scope
        ]
    ):
        ledger.submit(rec(i, ts=ts, key_id=key, project=project, cost_usd=cost))
    ledger.close()
    assert ledger.spend_by_period("key", day0, month0) == {"k1": (2.0, 4.0), "k2": (0.5, 0.5)}
    spent = load_budget_spend(ledger, now)
    assert spent["day"] == {"key:k1": 2.0, "key:k2": 0.5, "project:payments": 2.0, "group:sonnet": 11.5}
    assert spent["month"]["project:payments"] == 4.0 and spent["month"]["group:sonnet"] == 13.5


def test_a_version_1_store_gains_the_usage_estimated_column(tmp_path: Path) -> None:
    from sluicegate.usage._db import Database, migrate
    from sluicegate.usage._schema import COMPONENT, MIGRATIONS

    db = Database.from_url(f"sqlite:///{tmp_path}/old.db")
    conn = db.connect()
    migrate(db, conn, COMPONENT, MIGRATIONS[:1])  # a store written before the column existed
    conn.execute(
        "INSERT INTO usage_records (ts, day, request_id, endpoint, status, stream) VALUES (1.0, 'd', 'old', 'm', 200, 1)"
    )
    conn.close()
    ledger = Ledger(db)
    ledger.submit(rec(1, ts=2.0, usage_estimated=True))
    ledger.close()
    assert [(r["request_id"], r["usage_estimated"]) for r in ledger.records()] == [
        ("old", False),
        ("req-1", True),
    ]


def test_a_version_2_store_moves_to_the_time_first_retry_guard(
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # PostgreSQL's records table (SQLite's became batches in version 5: the next test).
    from sluicegate.usage._db import migrate
    from sluicegate.usage._schema import COMPONENT, MIGRATIONS

    store = "postgres"
    db, conn = _store_at_version(2, store, tmp_path, request)  # a store written before version 3
    ledger = Ledger(db)
    ledger._write(conn, [record_row(rec(1, ts=100.0))])
    migrate(db, conn, COMPONENT, MIGRATIONS)
    # A batch whose commit landed but whose acknowledgement was lost is retried whole: the
    # rows already there are skipped, by the new index, and the new one is written.
    batch = [record_row(rec(1, ts=100.0)), record_row(rec(2, ts=101.0))]
    ledger._write(conn, batch)
    ledger._write(conn, batch)
    conn.close()
    assert sorted((r["request_id"], r["ts"]) for r in ledger.records()) == [
        ("req-1", 100.0),
        ("req-2", 101.0),
    ]

    conn = db.connect()
    try:
        names = _usage_indexes(store, conn)
        (defn,) = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'usage_records_ts_request'"
        ).fetchone()
        cols = defn.partition("(")[2].rstrip(")").replace(" ", "").split(",")
    finally:
        conn.close()
    assert cols == ["ts", "request_id"]
    assert "usage_records_request" not in names and "usage_records_ts" not in names


def _old_sqlite_row(r: UsageRecord) -> tuple[Any, ...]:
    """A record as the one-row-a-record table of versions 1-4 held it: its day, then its fields."""
    row = record_row(r)
    return (time.strftime("%Y-%m-%d", time.gmtime(row[0])), *row)


def test_a_version_4_sqlite_store_moves_into_batches_and_daily_sums(tmp_path: Path) -> None:
    from sluicegate.usage._db import migrate
    from sluicegate.usage._schema import COMPONENT, MIGRATIONS
    from sluicegate.usage.ledger_pg import ROW_COLUMNS

    db, conn = _store_at_version(4, "sqlite", tmp_path, None)  # type: ignore[arg-type]
    old = [
        rec(1, ts=86_400.0 * 3 + 5, cost_usd=0.25, upstream_cost_usd=0.2),
        rec(2, ts=86_400.0 * 3 + 9, status=500, user=None, stream=False),
        rec(3, ts=86_400.0 * 4 + 1, key_id="k2", cost_usd=1.5, input_tokens=7),
    ]
    marks = ", ".join("?" for _ in ROW_COLUMNS.split(", "))
    for r in old:
        conn.execute(f"INSERT INTO usage_records ({ROW_COLUMNS}) VALUES ({marks})", _old_sqlite_row(r))
    before = conn.execute("SELECT * FROM usage_records ORDER BY id").fetchall()
    migrate(db, conn, COMPONENT, MIGRATIONS)
    (kind,) = conn.execute("SELECT type FROM sqlite_master WHERE name = 'usage_records'").fetchone()
    cols = [d[1] for d in conn.execute("PRAGMA table_info(usage_records)")]
    after = conn.execute(f"SELECT {', '.join(cols[1:-2])} FROM usage_records ORDER BY id").fetchall()
    daily = conn.execute(
        "SELECT day, key_id, user_name, requests, errors, input_tokens, cost_usd, upstream_cost_usd,"
        " upstream_cost_usd_count FROM usage_daily ORDER BY day, key_id, user_name"
    ).fetchall()
    conn.close()
    assert kind == "view"
    assert after == [tuple(r[1:]) for r in before]  # every value as it was, the old id aside
    assert daily == [
        ("1970-01-04", "k1", "", 1, 1, 10, 0.0, 0.0, 0),
        ("1970-01-04", "k1", "alice", 1, 0, 10, 0.25, 0.2, 1),
        ("1970-01-05", "k2", "alice", 1, 0, 7, 1.5, 0.0, 0),
    ]
    # The ledger writes on: new batches next to the moved one, reports over both.
    ledger = Ledger(db)
    ledger.submit(rec(4, ts=86_400.0 * 4 + 2, cost_usd=0.5))
    ledger.close()
    assert [r["request_id"] for r in ledger.records()] == ["req-1", "req-2", "req-3", "req-4"]
    by_key = {r["key"]: (r["requests"], r["cost_usd"]) for r in ledger.query("key")}
    assert by_key == {"k1": (3, 0.75), "k2": (1, 1.5)}


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_dimension_indexes_are_the_configured_ones(
    store: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if store == "sqlite":
        # SQLite's records are a view over batches: no index of a dimension to keep.
        ledger = Ledger.from_url(_store_url(store, tmp_path, request), indexes=["key", "user"])
        ledger.submit(rec(1))
        ledger.close()
        assert ledger.written == 1 and [r["request_id"] for r in ledger.records()] == ["req-1"]
        return
    db, conn = _store_at_version(3, store, tmp_path, request)  # version 1's six dimension indexes
    assert "usage_records_user" in _usage_indexes(store, conn)
    conn.close()

    ledger = Ledger(db, indexes=["key", "user"])
    ledger.submit(rec(1))
    ledger.close()  # never started: the writer runs in this thread, connects and syncs
    conn = db.connect()
    try:
        assert _usage_indexes(store, conn) == {
            "usage_records_ts_request",
            "usage_records_by_key",
            "usage_records_by_user",
        }
    finally:
        conn.close()

    # A dimension no longer listed loses its index the next time a writer connects.
    ledger = Ledger(db, indexes=["user"])
    ledger.submit(rec(2))
    ledger.close()
    conn = db.connect()
    try:
        assert _usage_indexes(store, conn) == {"usage_records_ts_request", "usage_records_by_user"}
    finally:
        conn.close()
    assert [r["request_id"] for r in ledger.records()] == ["req-1", "req-2"]


def test_an_unknown_index_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown index dimension 'colour'"):
        Ledger.from_url("sqlite:///unused.db", indexes=["colour"])


def test_index_dimensions_of_the_config_are_the_report_dimensions() -> None:
    from typing import get_args

    from sluicegate.config.ops_sections import IndexDimension
    from sluicegate.usage import BY_COLUMNS

    assert set(get_args(IndexDimension)) == set(BY_COLUMNS)


def test_bools_are_stored_as_integers(tmp_path: Path) -> None:
    # The driver adapter that skips the adaptation protocol must not change what is stored.
    path = tmp_path / "u.db"
    ledger = Ledger.from_url(f"sqlite:///{path}")
    ledger.submit(rec(1, stream=True, client_disconnected=False, usage_estimated=True))
    ledger.close()
    with sqlite3.connect(path) as c:
        row = c.execute(
            "SELECT stream, typeof(stream), client_disconnected, usage_estimated FROM usage_records"
        ).fetchone()
    assert row == (1, "integer", 0, 1)


@pytest.mark.parametrize("native", [True, False])
def test_a_batch_takes_at_most_batch_max_records(tmp_path: Path, native: bool) -> None:
    from sluicegate.usage.ledger import _count

    ledger = Ledger.from_url(f"sqlite:///{tmp_path}/u.db", batch_max=100, native_writer=native)
    assert (ledger.batch_queue is not None) == native  # the queue builds the batches itself
    for i in range(130):
        ledger.submit(rec(i))
    assert _count(ledger._take(stopping=False)) == 100
    assert ledger.queue_depth == 130  # taken records count until written
    assert _count(ledger._take(stopping=False)) == 30  # the rest, sealed when taken
    assert ledger._take(stopping=False) is None
    ledger._q.done(130)
    assert ledger.queue_depth == 0


def test_the_writer_thread_is_named_for_the_os(tmp_path: Path) -> None:
    # `top -H` / `ps -L` / the accounting probe tell the writer from the event loop by this name.
    ledger = Ledger.from_url(f"sqlite:///{tmp_path}/u.db")
    ledger.start()
    try:
        assert ledger._thread is not None
        deadline = time.monotonic() + 5
        comm = ""
        while comm != "sluicegate-ledg" and time.monotonic() < deadline:
            tid = ledger._thread.native_id
            comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            time.sleep(0.01)
        assert comm == "sluicegate-ledg"
    finally:
        ledger.close()
    assert Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip() != "sluicegate-ledg"


def test_the_row_queue_wakes_the_writer_once_a_batch_is_full_and_keeps_its_bound() -> None:
    from sluicegate import _native

    woken: list[int] = []
    q = _native.RowQueue(5, 3, lambda: woken.append(1))
    q.push((0,))
    q.push((1,))
    assert woken == [] and q.waiting == 2
    q.push((2,))
    assert woken == [1]  # a full batch
    assert q.take(2) == [(0,), (1,)] and (q.waiting, q.depth) == (1, 3)  # taken rows still count
    for i in range(3, 6):
        q.push((i,))
    assert (q.depth, q.dropped) == (5, 1)  # the bound counts rows being written
    q.done(2)
    q.close()
    q.push((6,))
    assert (q.depth, q.dropped) == (3, 2)  # after close: dropped
    assert q.take(10) == [(2,), (3,), (4,)]
