"""The usage ledger: a bounded in-process queue drained by one writer thread in batches.

`submit_row()` is the only call on the request path: the extension's RowQueue.push (a bound check
and an append, rust/row_queue.rs), never I/O, never an exception. A row is a tuple of
UsageRecord's fields in order (record.FIELDS). The writer thread owns its connection; when the
store fails it keeps the batch, retries with backoff, and lets the queue fill up to its bound
(after which records are dropped and counted). A clean `close()` writes everything queued.

On SQLite a batch is stored as one row with its daily sums (batches.py); on PostgreSQL each
record is a row (ledger_pg.py). With the native writer (the default) the queue builds the batches
itself, as records come (`batch_queue`: the request sink hands it the values it read for the
access line); the writer thread stores them without the GIL on SQLite, and hands PostgreSQL a
batch's text in one statement.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import _native, log
from ..threads import name_os_thread
from . import batches, ledger_pg
from ._db import DEFAULT_TIMEOUT_S, TRANSIENT_ERRORS, Database, Tx, migrate
from ._schema import COMPONENT, MIGRATIONS
from .record import COLUMNS, UsageRecord, record_row

# `usage --by X` and the filters `--X value`: the dimension name -> its column.
BY_COLUMNS: dict[str, str] = {
    "key": "key_id",
    "user": "user_name",
    "project": "project",
    "env": "env",
    "session": "session_id",
    "agent": "agent_id",
    "group": "model_group",
    "target": "target",
    "model": "upstream_model",
    "day": "day",
}
_FIELD_OF = {col: field for field, col in COLUMNS}
_BACKOFF_MAX_S = 5.0
_DROP_LOG_EVERY_S = 10.0


class Ledger:
    def __init__(
        self,
        db: Database,
        *,
        queue_max: int = 10000,
        batch_max: int = 500,
        flush_interval_s: float = 0.5,
        indexes: Sequence[str] = (),
        native_writer: bool = True,
    ) -> None:
        unknown = [name for name in indexes if name not in BY_COLUMNS]
        if unknown:
            raise ValueError(f"unknown index dimension {unknown[0]!r}; one of {', '.join(BY_COLUMNS)}")
        self.db = db
        self._indexes = frozenset(indexes)
        self._queue_max = max(1, queue_max)
        # A batch's records are numbered within it in the SQLite view's ids (batches.py).
        self._batch_max = min(max(1, batch_max), batches.BATCH_ID_SPAN - 1)
        self._flush_interval_s = max(0.001, flush_interval_s)
        self._wake = threading.Event()
        # "native": batches built by the extension's queue (rust/row_queue.rs), stored by its
        # writer on SQLite (rust/ledger.rs) and as one statement's text on PostgreSQL
        # (ledger_pg.py); "python": rows through the sqlite3 / psycopg drivers.
        native = native_writer and (db.dialect == "postgres" or _shared_sqlite())
        self.writer = "native" if native else "python"
        # Records queued and being written, at most queue_max; a full batch wakes the writer.
        self._q = _native.RowQueue(
            self._queue_max, self._batch_max, self._wake.set, batches.SHAPE if native else None
        )
        self.batch_queue: Any = self._q if native else None
        self.submit_row: Callable[[tuple[Any, ...]], None] = self._q.push
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._deadline = 0.0
        self._refused = 0  # rows the store refused (dropped alone)
        self._pg_batch_sql = ""  # PostgreSQL's statement for a native batch, made on connecting
        self.written = 0
        self.write_errors = 0
        self.store_up = True

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        queue_max: int = 10000,
        batch_max: int = 500,
        flush_interval_s: float = 0.5,
        indexes: Sequence[str] = (),
        native_writer: bool = True,
    ) -> Ledger:
        return cls(
            Database.from_url(url),
            queue_max=queue_max,
            batch_max=batch_max,
            flush_interval_s=flush_interval_s,
            indexes=indexes,
            native_writer=native_writer,
        )

    # -- request path ------------------------------------------------------------------------------
    def submit(self, rec: UsageRecord) -> None:
        self.submit_row(record_row(rec))

    @property
    def dropped(self) -> int:
        """Records lost: past the queue's bound or after close, refused by the batch (a value
        it does not store) or by the store."""
        return int(self._q.dropped) + int(self._q.refused[0]) + self._refused

    @property
    def queue_depth(self) -> int:
        return int(self._q.depth)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None or self._closed:
            return
        self._thread = threading.Thread(target=self._thread_main, name="sluicegate-ledger", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write everything queued (giving up after timeout_s if the store stays down), then stop."""
        if self._closed:
            return
        self._closed = True
        self._q.close()
        self._deadline = time.monotonic() + timeout_s
        if self._thread is None:
            self._run()  # never started: flush in the caller's thread
        else:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout_s + 1.0)
        lost = self.queue_depth
        if lost:
            log.error("ledger closed with records unwritten", lost=lost, store=self.db.display)

    # -- writer thread -----------------------------------------------------------------------------
    def _thread_main(self) -> None:
        name_os_thread("sluicegate-ledger")
        self._run()

    def _run(self) -> None:
        conn: Any = None
        # Rows (a list) or, from a queue that builds batches, one LedgerBatch; None: nothing.
        batch: Any = None
        failures = 0
        dropped_reported = 0
        last_drop_log = 0.0
        while True:
            stopping = self._stop.is_set() or self._closed
            if batch is None:
                if not self._q.waiting:
                    if stopping:
                        break
                    self._wake.wait(self._flush_interval_s)
                    self._wake.clear()
                    continue
                if not stopping and self._q.waiting < self._batch_max:
                    # Let a batch build up for one interval (or until it is full).
                    self._wake.wait(self._flush_interval_s)
                    self._wake.clear()
                # A wake-up from before this take (the deque was full once more while the last
                # batch was written) is spent: the rest waits for its own interval or a full batch.
                self._wake.clear()
                batch = self._take(stopping)
                if batch is None:
                    continue
            try:
                if conn is None:
                    conn = self._connect()
                written = self._write_batch(conn, batch)
            except Exception as exc:  # the store is down, locked, unreachable or not ready
                conn = _close_quietly(conn)
                failures += 1
                self.write_errors += 1
                if self.store_up:
                    self.store_up = False
                    log.error(
                        "ledger store unavailable; keeping records queued and retrying",
                        store=self.db.display,
                        error=str(exc).strip()[:300],
                        queued=self.queue_depth,
                    )
                if stopping and time.monotonic() >= self._deadline:
                    break
                delay = min(_BACKOFF_MAX_S, 0.05 * 2**failures)
                if stopping:
                    time.sleep(min(delay, max(0.0, self._deadline - time.monotonic())))
                else:
                    self._stop.wait(delay)
                continue
            if not self.store_up:
                self.store_up = True
                log.info("ledger store available again", store=self.db.display, queued=self.queue_depth)
            failures = 0
            self.written += written
            self._q.done(_count(batch))
            batch = None
            now = time.monotonic()
            if self.dropped != dropped_reported and now - last_drop_log >= _DROP_LOG_EVERY_S:
                refused, why = self._q.refused
                log.warning(
                    "ledger records dropped",
                    dropped_since_last_report=self.dropped - dropped_reported,
                    dropped_total=self.dropped,
                    queue_full=int(self._q.dropped),
                    queue_max=self._queue_max,
                    unstorable=int(refused),
                    **({"last_unstorable": why} if why else {}),
                )
                dropped_reported, last_drop_log = self.dropped, now
        _close_quietly(conn)

    def _connect(self) -> Any:
        """The writer's connection, the store migrated and its indexes the configured ones."""
        conn = self.db.connect()
        try:
            migrate(self.db, conn, COMPONENT, MIGRATIONS)
            self._sync_indexes(conn)
        except BaseException:
            _close_quietly(conn)
            raise
        if self.batch_queue is None:
            return conn
        if self.db.dialect == "postgres":
            try:
                self._pg_batch_sql = ledger_pg.batch_insert_sql(conn)
            except BaseException:
                _close_quietly(conn)
                raise
            return conn
        conn.close()
        assert self.db.path is not None
        return _native.SqliteLedgerWriter(
            str(self.db.path),
            batches.BATCH_SQL,
            batches.ROLLUP_SQL,
            batches.SHAPE,
            int(DEFAULT_TIMEOUT_S * 1000),
        )

    def _sync_indexes(self, conn: Any) -> None:
        """Make the per-dimension indexes the configured ones: each listed dimension has
        usage_records_by_<dimension> on (column, ts), and the others have none (every index is
        paid for by every row the writer inserts). PostgreSQL only: SQLite's usage_records is a
        view over batches (batches.py)."""
        if self.db.dialect == "sqlite":
            if self._indexes:
                log.info(
                    "ledger.indexes apply to PostgreSQL; on SQLite, reports of whole days read the daily sums",
                    indexes=sorted(self._indexes),
                )
            return
        with Tx(self.db, conn, immediate=True):
            if self.db.dialect == "postgres":
                # Workers starting together take turns (CREATE INDEX IF NOT EXISTS can race).
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", ("sluicegate_indexes:" + COMPONENT,)
                )
            for name, col in BY_COLUMNS.items():
                if name in self._indexes:
                    conn.execute(
                        f"CREATE INDEX IF NOT EXISTS usage_records_by_{name} ON usage_records ({col}, ts)"
                    )
                else:
                    conn.execute(f"DROP INDEX IF EXISTS usage_records_by_{name}")

    def _take(self, stopping: bool) -> Any:
        if self.batch_queue is not None:
            return self._q.take_batch()
        rows = list(self._q.take(min(int(self._q.waiting), self._batch_max)))
        return rows or None

    def _write(self, conn: Any, batch: list[tuple[Any, ...]]) -> None:
        if isinstance(conn, _native.SqliteLedgerWriter):
            # Built and stored in Rust, the SQLite work without the GIL.
            conn.write(batch)
        elif self.db.dialect == "sqlite":
            # The same batch row and daily sums, stored through the driver: a few statements a
            # batch (each one releases the GIL and waits up to the switch interval, 5 ms, to
            # take it back from a busy event loop: one per record would cost that per record).
            made = _native.ledger_batch(batch, batches.SHAPE)
            row, rollups = made[:6], made[6]
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute(batches.BATCH_SQL, row).rowcount == 1:
                    conn.executemany(batches.ROLLUP_SQL, rollups)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        else:
            ledger_pg.write_rows(conn, map(_row, batch))

    def _write_batch(self, conn: Any, batch: Any) -> int:
        """Write the batch; if the store refuses a row, write the others one by one and drop it."""
        if isinstance(batch, _native.LedgerBatch) and isinstance(conn, _native.SqliteLedgerWriter):
            # Built by the queue, whose records are all storable: a store that refuses the batch
            # for anything but being down refuses every record of it.
            try:
                return int(conn.write_batch(batch))
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                self._refused += batch.n
                log.error(
                    "ledger store rejected a batch; dropped it", dropped=batch.n, error=str(exc).strip()[:300]
                )
                return 0
        if isinstance(batch, _native.LedgerBatch):
            # PostgreSQL: the batch's text in one statement.
            text = batch.records_for_postgres()
            if text is None:
                return 0
            try:
                ledger_pg.write_batch(conn, self._pg_batch_sql, text)
                return int(batch.n)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                # A value PostgreSQL refuses (one past its column's range, say).
                return self._write_one_by_one(conn, [tuple(r) for r in json.loads(text)], exc)
        try:
            self._write(conn, batch)
            return len(batch)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            return self._write_one_by_one(conn, batch, exc)

    def _write_one_by_one(self, conn: Any, rows: list[tuple[Any, ...]], first: Exception) -> int:
        """Rows of a batch the store refused (`first`), one at a time: only those it refuses are
        dropped."""
        bad = 0
        for row in rows:
            try:
                self._write(conn, [row])
            except TRANSIENT_ERRORS:
                raise  # retried whole; rows already written are skipped by ON CONFLICT
            except Exception:
                bad += 1
        self._refused += bad
        log.error("ledger store rejected records; dropped them", dropped=bad, error=str(first).strip()[:300])
        return len(rows) - bad

    # -- reading -----------------------------------------------------------------------------------
    def _read_conn(self) -> Any:
        conn = self.db.connect()
        migrate(self.db, conn, COMPONENT, MIGRATIONS)
        return conn

    def query(
        self,
        by: str = "key",
        since: float | None = None,
        until: float | None = None,
        filters: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Requests, errors, tokens by kind and cost per value of `by` in [since, until)."""
        col = BY_COLUMNS.get(by)
        if col is None:
            raise ValueError(f"unknown --by {by!r}; one of {', '.join(BY_COLUMNS)}")
        filters = filters or {}
        _where(None, None, filters)  # an unknown filter is refused before any reading
        totals: dict[Any, list[Any]] = {}
        conn = self._read_conn()
        try:
            for sql, params in self._report_parts(col, since, until, filters):
                for value, key_name, *sums in conn.execute(self.db.sql(sql), params).fetchall():
                    _add_sums(totals, value, key_name, sums)
        finally:
            conn.close()
        out = []
        for value, (
            key_name,
            requests,
            errors,
            inp,
            outp,
            cw,
            cr,
            cost,
            upstream,
            upstreams,
        ) in totals.items():
            item: dict[str, Any] = {by: value}
            if by == "key":
                item["key_name"] = key_name
            item.update(
                requests=int(requests),
                errors=int(errors),
                input_tokens=int(inp),
                output_tokens=int(outp),
                cache_creation_tokens=int(cw),
                cache_read_tokens=int(cr),
                cost_usd=round(float(cost), 10),
                upstream_cost_usd=round(float(upstream), 10) if upstreams else None,
            )
            out.append(item)
        if by == "day":
            out.sort(key=lambda r: (r["day"] is not None, r["day"] or ""))
        else:
            out.sort(key=lambda r: (-r["cost_usd"], -r["requests"], r[by] is not None, str(r[by] or "")))
        return out

    def _report_parts(
        self, col: str, since: float | None, until: float | None, filters: dict[str, str]
    ) -> list[tuple[str, list[Any]]]:
        """The queries whose sums make a report: on SQLite the daily sums for the whole days of
        the range (when the dimension and the filters are kept there) and the records of the
        partial days at its ends; on PostgreSQL the records."""
        rows_sql = f"SELECT {col}, MAX(key_name), {_RECORD_SUMS} FROM usage_records{{where}} GROUP BY {col}"
        sqlite = self.db.dialect == "sqlite"
        daily_cols = {**_DAILY_COLUMNS, "day": "day"}
        whole = _whole_days(since, until) if sqlite else None
        if whole is None or col not in daily_cols.values() or any(f not in _DAILY_BY for f in filters):
            where, params = _where(since, until, filters, prune=sqlite)
            return [(rows_sql.format(where=where), params)]
        first, end = whole
        clauses, params = [], []
        if first is not None:
            clauses.append("day >= ?")
            params.append(_day_name(first))
        if end is not None:
            clauses.append("day < ?")
            params.append(_day_name(end))
        for name, value in filters.items():
            clauses.append(f"{BY_COLUMNS[name]} = ?")
            params.append(value)
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        parts = [
            (
                f"SELECT NULLIF({col}, ''), NULLIF(MAX(key_name), ''), {_DAILY_SUMS}"
                f" FROM usage_daily{where} GROUP BY {col}",
                params,
            )
        ]
        # The partial days before the first whole day and after the last one.
        for lo, hi in ((since, first), (end, until)):
            if lo is not None and hi is not None and lo < hi:
                where, edge_params = _where(lo, hi, filters, prune=True)
                parts.append((rows_sql.format(where=where), edge_params))
        return parts

    def spend_by_period(
        self, by: str, day_start: float, month_start: float
    ) -> dict[str, tuple[float, float]]:
        """USD spent per value of `by` since `day_start` and since `month_start`, in one pass
        over the month: what in-process budgets start from after a restart."""
        col = BY_COLUMNS.get(by)
        if col is None:
            raise ValueError(f"unknown --by {by!r}; one of {', '.join(BY_COLUMNS)}")
        since = min(day_start, month_start)
        daily = (
            self.db.dialect == "sqlite"
            and col in _DAILY_COLUMNS.values()
            and all(_whole_days(t, None) == (t, None) for t in (day_start, month_start))
        )
        if daily:
            # UTC days and months start on a day: the daily sums say it all.
            sql = (
                f"SELECT {col}, SUM(CASE WHEN day >= ? THEN cost_usd ELSE 0 END),"
                " SUM(CASE WHEN day >= ? THEN cost_usd ELSE 0 END)"
                f" FROM usage_daily WHERE day >= ? AND {col} != '' AND cost_usd > 0 GROUP BY {col}"
            )
            params: tuple[Any, ...] = (_day_name(day_start), _day_name(month_start), _day_name(since))
        else:
            prune = " AND batch_ts_max >= ?" if self.db.dialect == "sqlite" else ""
            sql = (
                f"SELECT {col}, SUM(CASE WHEN ts >= ? THEN cost_usd ELSE 0 END),"
                " SUM(CASE WHEN ts >= ? THEN cost_usd ELSE 0 END)"
                f" FROM usage_records WHERE ts >= ?{prune} AND {col} IS NOT NULL AND cost_usd > 0 GROUP BY {col}"
            )
            params = (day_start, month_start, since, since)[: 4 if prune else 3]
        conn = self._read_conn()
        try:
            rows = conn.execute(self.db.sql(sql), params).fetchall()
        finally:
            conn.close()
        return {row[0]: (float(row[1] or 0.0), float(row[2] or 0.0)) for row in rows}

    def records(
        self,
        since: float | None = None,
        until: float | None = None,
        filters: dict[str, str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Individual records in [since, until), oldest first, with the UsageRecord field names."""
        where, params = _where(since, until, filters, prune=self.db.dialect == "sqlite")
        cols = [col for _, col in COLUMNS]
        sql = f"SELECT {', '.join(cols)} FROM usage_records{where} ORDER BY ts, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        conn = self._read_conn()
        try:
            rows = conn.execute(self.db.sql(sql), params).fetchall()
        finally:
            conn.close()
        out = []
        for row in rows:
            item = {_FIELD_OF[c]: v for c, v in zip(cols, row, strict=True)}
            item["stream"] = bool(item["stream"])
            item["client_disconnected"] = bool(item["client_disconnected"])
            item["usage_estimated"] = bool(item["usage_estimated"])
            out.append(item)
        return out


class NullLedger:
    """`ledger: {enabled: false}`: the same interface, recording nothing."""

    dropped = 0
    written = 0
    queue_depth = 0
    write_errors = 0
    store_up = True

    def submit(self, rec: UsageRecord) -> None:
        pass

    def submit_row(self, row: tuple[Any, ...]) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self, timeout_s: float = 10.0) -> None:
        pass

    def query(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    def records(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    def spend_by_period(
        self, by: str, day_start: float, month_start: float
    ) -> dict[str, tuple[float, float]]:
        return {}


_day_span: list[Any] = [0.0, -1.0, ""]  # [start, end) of the UTC day last formatted, and its name


def _row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # Per record on the writer thread (the same core as the requests): the day's name
    # formatted once a day rather than once a record.
    ts = row[0]
    span = _day_span
    if not span[0] <= ts < span[1]:
        start = ts - ts % 86400
        span[:] = [start, start + 86400, _day_name(start)]
    return (span[2], *row)


# A report's sums over records (usage_records) and over daily sums (usage_daily, SQLite), in the
# same order: requests, errors, four kinds of tokens, cost, upstream cost and how many had one.
_RECORD_SUMS = (
    "COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(input_tokens), SUM(output_tokens),"
    " SUM(cache_creation_tokens), SUM(cache_read_tokens), SUM(cost_usd), SUM(upstream_cost_usd),"
    " COUNT(upstream_cost_usd)"
)
_DAILY_SUMS = (
    "SUM(requests), SUM(errors), SUM(input_tokens), SUM(output_tokens), SUM(cache_creation_tokens),"
    " SUM(cache_read_tokens), SUM(cost_usd), SUM(upstream_cost_usd), SUM(upstream_cost_usd_count)"
)
# Report dimensions the daily sums keep -> their columns.
_DAILY_COLUMNS = {name: BY_COLUMNS[name] for name in batches.ROLLUP_DIMENSIONS if name in BY_COLUMNS}
_DAILY_BY = {*_DAILY_COLUMNS, "day"}


def _add_sums(totals: dict[Any, list[Any]], value: Any, key_name: Any, sums: Sequence[Any]) -> None:
    """Add one query's sums for `value` to what other queries of the report gave for it."""
    nums = [n or 0 for n in sums]
    have = totals.get(value)
    if have is None:
        totals[value] = [key_name, *nums]
        return
    if key_name is not None and (have[0] is None or key_name > have[0]):
        have[0] = key_name  # MAX(key_name), as one query would give it
    for i, n in enumerate(nums, start=1):
        have[i] += n


def _whole_days(since: float | None, until: float | None) -> tuple[float | None, float | None] | None:
    """The UTC days wholly inside [since, until) as [first, end) (None: unbounded), or None
    when there is none."""
    first = None if since is None else -(-since // 86400) * 86400
    end = None if until is None else until // 86400 * 86400
    if first is not None and end is not None and first >= end:
        return None
    return first, end


def _day_name(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _where(
    since: float | None, until: float | None, filters: dict[str, str] | None, *, prune: bool = False
) -> tuple[str, list[Any]]:
    """WHERE for records in [since, until) with these filters; `prune`: on SQLite's view, where
    the batches' own time ranges let whole batches be skipped unread."""
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(float(since))
        if prune:
            clauses.append("batch_ts_max >= ?")
            params.append(float(since))
    if until is not None:
        clauses.append("ts < ?")
        params.append(float(until))
        if prune:
            clauses.append("batch_ts_min < ?")
            params.append(float(until))
    for name, value in (filters or {}).items():
        col = BY_COLUMNS.get(name)
        if col is None:
            raise ValueError(f"unknown filter {name!r}; one of {', '.join(BY_COLUMNS)}")
        clauses.append(f"{col} = ?")
        params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _count(batch: Any) -> int:
    return int(batch.n) if isinstance(batch, _native.LedgerBatch) else len(batch)


def _shared_sqlite() -> bool:
    """Whether the extension may open SQLite files in this process (usage/native_sqlite.py);
    says once when it may not."""
    from .native_sqlite import shared_sqlite

    if shared_sqlite():
        return True
    global _own_sqlite_logged
    if not _own_sqlite_logged:
        _own_sqlite_logged = True
        log.info(
            "ledger: the sqlite3 module runs on a SQLite of its own; rows go through its driver",
            sqlite=sqlite3.sqlite_version,
        )
    return False


_own_sqlite_logged = False


def _close_quietly(conn: Any) -> Any:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
    return None
