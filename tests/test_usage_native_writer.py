"""The ledger's native SQLite writer (rust/ledger.rs) on real SQLite files: it runs on the sqlite3
module's own SQLite library, stores exactly what the driver stores, fails with the driver's
exception classes, and lands a batch whole (with its daily sums) or not at all."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sluicegate import _native
from sluicegate.usage import Ledger, UsageRecord, batches, native_sqlite
from sluicegate.usage._db import TRANSIENT_ERRORS
from sluicegate.usage.record import record_row
from test_usage_ledger import rec


def _rows(path: Path) -> list[tuple[Any, ...]]:
    """Every stored value with its SQLite type, in insertion order, without the row id."""
    with sqlite3.connect(path) as c:
        skip = {"id", "batch_ts_min", "batch_ts_max"}
        cols = [r[1] for r in c.execute("PRAGMA table_info(usage_records)") if r[1] not in skip]
        select = ", ".join(f"{col}, typeof({col})" for col in cols)
        return c.execute(f"SELECT {select} FROM usage_records ORDER BY id").fetchall()


def _writer(tmp_path: Path, busy_timeout_ms: int = 50) -> tuple[Any, Path]:
    """A migrated store and a native writer on it, as the ledger builds them."""
    path = tmp_path / "u.db"
    ledger = Ledger.from_url(f"sqlite:///{path}")
    writer = ledger._connect()
    writer.close()
    made = _native.SqliteLedgerWriter(
        str(path), batches.BATCH_SQL, batches.ROLLUP_SQL, batches.SHAPE, busy_timeout_ms
    )
    return made, path


def _daily(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as c:
        return c.execute(
            "SELECT day, key_id, requests, errors, input_tokens, cost_usd FROM usage_daily ORDER BY day, key_id"
        ).fetchall()


def row(i: int, **fields: Any) -> tuple[Any, ...]:
    """What the ledger queues for rec(i, **fields): its values in field order."""
    return tuple(record_row(rec(i, **fields)))


def _varied() -> list[UsageRecord]:
    return [
        rec(1, ts=0.0),  # the first second of 1970
        rec(2, ts=86_399.999, key_name=None, user=None, session_id=None, project=""),  # its last
        rec(3, ts=951_782_400.0, stream=False, client_disconnected=True),  # 2000-02-29
        rec(4, ts=1_798_761_599.5, usage_estimated=True, error_type="overloaded_error"),
        rec(5, ts=1_798_761_600.0, cost_usd=1e-12, upstream_cost_usd=0.0, ttfb_ms=0.25),
        rec(6, ts=1_800_000_000.125, key_name="équipe-β ✓", project="日本", input_tokens=2**62),
        rec(7, ts=1_800_000_001.0, status=529, image_count=3, duration_ms=12345.678),
    ]


def test_it_runs_on_the_sqlite_library_of_the_sqlite3_module(tmp_path: Path) -> None:
    assert native_sqlite.shared_sqlite()
    assert _native.sqlite_version() == sqlite3.sqlite_version
    ledger = Ledger.from_url(f"sqlite:///{tmp_path}/u.db")
    ledger.submit(rec(1))
    ledger.close()
    assert ledger.writer == "native" and ledger.written == 1


def test_it_stores_what_the_driver_stores(tmp_path: Path) -> None:
    stored = {}
    for native in (True, False):
        path = tmp_path / f"{native}.db"
        ledger = Ledger.from_url(f"sqlite:///{path}", native_writer=native)
        for r in _varied():
            ledger.submit(r)
        ledger.close()
        assert ledger.writer == ("native" if native else "python") and ledger.written == 7
        stored[native] = _rows(path)
    assert len(stored[True]) == 7
    assert stored[True] == stored[False]
    days = [row[2] for row in stored[True]]  # (ts, its type, day, ...): v1's column order
    assert days == [
        "1970-01-01",
        "1970-01-01",
        "2000-02-29",
        "2026-12-31",
        "2027-01-01",
        "2027-01-15",
        "2027-01-15",
    ]


def test_a_retried_batch_adds_nothing(tmp_path: Path) -> None:
    writer, path = _writer(tmp_path)
    batch = [row(1, ts=100.0), row(2, ts=101.0, key_id="k2", status=500, cost_usd=0.5)]
    assert writer.write(batch) == 2
    assert writer.write(batch) == 2
    writer.close()
    assert len(_rows(path)) == 2
    assert _daily(path) == [("1970-01-01", "k1", 1, 0, 10, 0.0), ("1970-01-01", "k2", 1, 1, 10, 0.5)]


def test_a_batch_lands_whole_or_not_at_all(tmp_path: Path) -> None:
    writer, path = _writer(tmp_path)
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        writer.write([row(1), row(2, status=None)])
    assert _rows(path) == []
    # The store refuses a daily row in mid-batch: the batch's row goes too.
    with sqlite3.connect(path) as c:
        c.execute(
            "CREATE TRIGGER no_k2 BEFORE INSERT ON usage_daily WHEN NEW.key_id = 'k2'"
            " BEGIN SELECT RAISE(ABORT, 'no k2'); END"
        )
    with pytest.raises(sqlite3.IntegrityError, match="no k2"):
        writer.write([row(1), row(2, key_id="k2")])
    assert _rows(path) == [] and _daily(path) == []
    assert writer.write([row(1)]) == 1  # the failed transaction was rolled back, not left open
    writer.close()
    assert len(_rows(path)) == 1 and [d[2] for d in _daily(path)] == [1]


def test_an_unsupported_value_is_the_drivers_programming_error(tmp_path: Path) -> None:
    writer, path = _writer(tmp_path)
    with pytest.raises(sqlite3.ProgrammingError, match="type 'list' is not supported"):
        writer.write([row(1, key_name=["not", "a", "string"])])
    with pytest.raises(OverflowError):
        writer.write([row(2, input_tokens=2**64)])
    for ts in (float("nan"), float("inf"), 1e300):
        with pytest.raises(sqlite3.ProgrammingError, match="unix time"):
            writer.write([row(3, ts=ts)])
    writer.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        writer.write([row(3)])
    assert _rows(path) == []


def test_a_locked_store_is_a_transient_error_and_the_batch_lands_after(tmp_path: Path) -> None:
    writer, path = _writer(tmp_path, busy_timeout_ms=50)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    with pytest.raises(sqlite3.OperationalError, match="locked") as caught:
        writer.write([row(1)])
    assert isinstance(caught.value, TRANSIENT_ERRORS)
    other.execute("ROLLBACK")
    other.close()
    assert writer.write([row(1)]) == 1
    writer.close()
    assert len(_rows(path)) == 1


def test_the_ledger_drops_a_rejected_row_alone(tmp_path: Path) -> None:
    path = tmp_path / "u.db"
    ledger = Ledger.from_url(f"sqlite:///{path}")
    for r in (rec(1), rec(2, status=None), rec(3), rec(4, user=object())):
        ledger.submit(r)
    ledger.close()
    assert ledger.writer == "native"
    assert ledger.written == 2 and ledger.dropped == 2
    assert [row[4] for row in _rows(path)] == ["req-1", "req-3"]  # (ts, type, day, type, request_id, ...)


def test_without_a_shared_sqlite_the_driver_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python on a SQLite of its own (an embedded copy): the extension's must not touch the file.
    monkeypatch.setattr(native_sqlite._native, "sqlite_libversion_address", lambda: 0)
    native_sqlite.shared_sqlite.cache_clear()
    try:
        assert not native_sqlite.shared_sqlite()
        ledger = Ledger.from_url(f"sqlite:///{tmp_path}/u.db")
        ledger.submit(rec(1))
        ledger.close()
    finally:
        native_sqlite.shared_sqlite.cache_clear()
    assert ledger.writer == "python" and ledger.written == 1


def test_the_config_switch_its_default_and_the_stores_it_applies_to() -> None:
    from sluicegate.config.ops_sections import LedgerSection

    assert LedgerSection().native_writer is True
    assert LedgerSection.model_validate({"native_writer": False}).native_writer is False
    assert Ledger.from_url("sqlite:///unused.db", native_writer=False).writer == "python"
    # PostgreSQL takes the queue's batches too (usage/ledger_pg.py), unless switched off.
    assert Ledger.from_url("postgresql://u@127.0.0.1/db").writer == "native"
    assert Ledger.from_url("postgresql://u@127.0.0.1/db", native_writer=False).writer == "python"


def test_the_sink_hands_the_values_it_read_to_a_queue_that_builds_batches(tmp_path: Path) -> None:
    # The request path on SQLite: the sink reads a row once, for the access line and for the
    # ledger's batch; what lands is what the ledger stores for the same row queued by itself.
    from sluicegate.request_end import new_sink

    sink = new_sink()
    stored = {}
    for via_sink in (True, False):
        path = tmp_path / f"{via_sink}.db"
        ledger = Ledger.from_url(f"sqlite:///{path}")
        assert ledger.batch_queue is not None
        for r in _varied():
            if via_sink:
                sink.done(record_row(r), 0.01, 0.02, 1, None, False, False, ledger.batch_queue)
            else:
                ledger.submit(r)
        ledger.close()
        assert ledger.written == 7 and ledger.dropped == 0
        stored[via_sink] = _rows(path)
    assert stored[True] == stored[False] and len(stored[True]) == 7


def test_a_queue_that_builds_batches_refuses_what_a_batch_cannot_hold() -> None:
    woken: list[int] = []
    q = _native.RowQueue(5, 2, lambda: woken.append(1), batches.SHAPE)
    q.push(row(1))
    assert (q.waiting, woken) == (1, [])
    q.push(row(2, status=None))  # a required value missing
    q.push((1.0, "too short"))
    q.push(row(3, user=["not", "text"]))  # a type the batch does not store
    assert q.refused[0] == 3 and "type 'list' is not supported" in str(q.refused[1])
    q.push(row(4))
    assert (q.waiting, woken) == (2, [1])  # a full batch wakes the writer
    q.push(row(5))
    first = q.take_batch()
    assert first is not None and first.n == 2 and (q.waiting, q.depth) == (1, 3)
    second = q.take_batch()  # the one being built, sealed as it is taken
    assert second is not None and second.n == 1 and q.take_batch() is None
    for i in range(6, 9):
        q.push(row(i))
    assert (q.depth, q.dropped) == (5, 1)  # the bound counts records being written
    q.close()
    q.push(row(9))
    assert q.dropped == 2


def test_a_batch_the_queue_built_is_stored_once_and_kept_for_a_retry(tmp_path: Path) -> None:
    writer, path = _writer(tmp_path, busy_timeout_ms=50)
    q = _native.RowQueue(10, 10, lambda: None, batches.SHAPE)
    q.push(row(1, ts=100.0))
    q.push(row(2, ts=101.0, key_id="k2"))
    batch = q.take_batch()
    assert batch is not None
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        writer.write_batch(batch)
    other.execute("ROLLBACK")
    other.close()
    assert writer.write_batch(batch) == 2  # kept whole for the retry
    assert writer.write_batch(batch) == 0  # stored: nothing left in it
    writer.close()
    assert [r[4] for r in _rows(path)] == ["req-1", "req-2"]
    assert [(d[1], d[2]) for d in _daily(path)] == [("k1", 1), ("k2", 1)]
