//! The ledger's SQLite writer: a batch of usage records stored as one row (ledger_batch.rs makes
//! it) and added to the daily rollups, in one transaction, the values read from the records in
//! one pass under the GIL and the SQLite work done without it.
//!
//! Python decides (usage/ledger.py, usage/_schema.py): the schema, the statements, the record
//! fields in order, when to write and what to do on an error.
//!
//! One copy of SQLite in the process: the crate links the system library dynamically, the same
//! file Python's sqlite3 module runs on when Python is built against it. Two copies in one
//! process must not share a database file (closing a file in one drops the POSIX locks the other
//! holds on it), so Python uses this writer only when `sqlite_libversion_address` is the address
//! its own module resolves `sqlite3_libversion` to (usage/native_sqlite.py).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyMemoryError, PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{params, params_from_iter, Connection, OpenFlags};

use crate::civil_date::civil_from_days;
use crate::ledger_batch::{Batch, Refusal, Sums};
use crate::ledger_shape::{Shape, ShapeArg};
use crate::row_queue::LedgerBatch;

/// The UTC day of a unix time as "YYYY-MM-DD", the ledger's `day` column (what
/// `time.strftime("%Y-%m-%d", time.gmtime(ts))` gives), appended to `out`.
pub fn push_utc_day(ts: f64, out: &mut String) {
    let (year, month, day) = civil_from_days((ts / 86400.0).floor() as i64);
    out.push_str(&format!("{year:04}-{month:02}-{day:02}"));
}

/// A connection and the two statements a batch takes: the batch's row (its parameters: first
/// time, first request id, least and greatest time, records, the records' text) and a rollup
/// upsert (the day, the dimensions, then the sums in `Sums` order).
pub struct Writer {
    conn: Connection,
    batch_sql: String,
    rollup_sql: String,
}

impl Writer {
    pub fn open(
        path: &std::path::Path,
        batch_sql: String,
        rollup_sql: String,
        busy_timeout: Duration,
    ) -> rusqlite::Result<Self> {
        // NO_MUTEX: the connection is only ever used under the writer's own lock.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(busy_timeout)?;
        // The same settings as the Python side's connections (usage/_db.py).
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous=NORMAL")?;
        // Prepared now, so a wrong statement fails at connect and not at the first batch.
        conn.prepare_cached(&batch_sql)?;
        conn.prepare_cached(&rollup_sql)?;
        Ok(Writer {
            conn,
            batch_sql,
            rollup_sql,
        })
    }

    /// The batch and its rollups in one transaction, or nothing; a batch already stored (a retry
    /// of one whose commit landed) adds nothing, rollups included. Whether it was new.
    pub fn write(&mut self, batch: &Batch) -> rusqlite::Result<bool> {
        if batch.n == 0 {
            return Ok(false);
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let inserted = self
            .insert(batch)
            .and_then(|new| self.conn.execute_batch("COMMIT").map(|()| new));
        if inserted.is_err() && !self.conn.is_autocommit() {
            // A failed COMMIT (busy) leaves the transaction open too.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        inserted
    }

    fn insert(&mut self, b: &Batch) -> rusqlite::Result<bool> {
        let records = ToSqlOutput::Borrowed(ValueRef::Text(&b.records));
        let n = i64::try_from(b.n).unwrap_or(i64::MAX);
        let added = self.conn.prepare_cached(&self.batch_sql)?.execute(params![
            b.first_ts, b.first_id, b.ts_min, b.ts_max, n, records
        ])?;
        if added == 0 {
            return Ok(false);
        }
        let mut upsert = self.conn.prepare_cached(&self.rollup_sql)?;
        for (dims, sums) in &b.rollups {
            upsert.execute(params_from_iter(rollup_params(dims, sums)))?;
        }
        Ok(true)
    }
}

/// `SqliteLedgerWriter(path, batch_sql, rollup_sql, shape, busy_timeout_ms)`: `shape` is
/// usage/batches.py's SHAPE (ledger_shape.rs): records are tuples of its width of values, the
/// unix time first.
#[pyclass(module = "sluicegate._native", frozen)]
pub struct SqliteLedgerWriter {
    writer: Mutex<Option<Writer>>,
    shape: Shape,
}

/// The sqlite3 module's exception for a record the batch cannot hold.
fn refusal_err(py: Python<'_>, why: Refusal) -> PyErr {
    match why {
        Refusal::Missing(msg) => sqlite_exception(
            py,
            "IntegrityError",
            &format!("NOT NULL constraint failed: {msg}"),
        ),
        Refusal::Bad(msg) => sqlite_exception(py, "ProgrammingError", &msg),
        Refusal::TooBig(msg) => PyOverflowError::new_err(msg),
    }
}

/// The records read in one pass, with the GIL held.
fn build(py: Python<'_>, shape: &Shape, records: &[Bound<'_, PyAny>]) -> PyResult<Batch> {
    let mut b = shape.builder();
    for rec in records {
        shape
            .push_row(&mut b, rec)
            .map_err(|why| refusal_err(py, why))?;
    }
    Ok(b.finish())
}

/// A rollup row's upsert parameters: the day and the dimensions, then the sums in `Sums` order
/// (what usage/batches.py's ROLLUP_SQL binds).
fn rollup_params(dims: &[String], sums: &Sums) -> Vec<SqlValue> {
    let mut values: Vec<SqlValue> = dims.iter().map(|d| SqlValue::Text(d.clone())).collect();
    values.push(SqlValue::Integer(sums.requests));
    values.push(SqlValue::Integer(sums.errors));
    values.extend(sums.ints.iter().map(|v| SqlValue::Integer(*v)));
    values.extend(sums.reals.iter().map(|v| SqlValue::Real(*v)));
    for (sum, count) in &sums.opts {
        values.push(SqlValue::Real(*sum));
        values.push(SqlValue::Integer(*count));
    }
    values
}

#[pymethods]
impl SqliteLedgerWriter {
    #[new]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        batch_sql: String,
        rollup_sql: String,
        shape: ShapeArg,
        busy_timeout_ms: u64,
    ) -> PyResult<Self> {
        let shape = Shape::new(shape).map_err(PyValueError::new_err)?;
        let timeout = Duration::from_millis(busy_timeout_ms);
        let writer = py
            .detach(|| Writer::open(&path, batch_sql, rollup_sql, timeout))
            .map_err(|e| to_py_err(py, e))?;
        Ok(SqliteLedgerWriter {
            writer: Mutex::new(Some(writer)),
            shape,
        })
    }

    /// Store the records as one batch in one transaction; the records' count. Raises the
    /// sqlite3 module's own exception classes, so callers tell a busy store from a bad record
    /// as they do for its driver.
    fn write(&self, py: Python<'_>, records: Vec<Bound<'_, PyAny>>) -> PyResult<usize> {
        let batch = build(py, &self.shape, &records)?;
        self.store(py, &batch)
    }

    /// Store a batch the native queue built (RowQueue.take_batch), without the GIL; its records'
    /// count. Once stored the batch is empty: writing it again stores nothing. After a failure
    /// it is kept whole, for the retry.
    fn write_batch(&self, py: Python<'_>, batch: &LedgerBatch) -> PyResult<usize> {
        let taken = batch.batch.lock().ok().and_then(|mut b| b.take());
        let Some(b) = taken else {
            return Ok(0);
        };
        let stored = self.store(py, &b);
        if stored.is_err() {
            if let Ok(mut slot) = batch.batch.lock() {
                *slot = Some(b);
            }
        }
        stored
    }

    fn close(&self, py: Python<'_>) {
        // Closing the last connection checkpoints the WAL: not with the GIL held.
        py.detach(|| drop(self.writer.lock().ok().and_then(|mut guard| guard.take())));
    }
}

impl SqliteLedgerWriter {
    fn store(&self, py: Python<'_>, batch: &Batch) -> PyResult<usize> {
        let written = py.detach(|| match self.writer.lock() {
            Ok(mut guard) => match guard.as_mut() {
                Some(writer) => Ok(writer.write(batch)),
                None => Err("closed"),
            },
            Err(_) => Err("poisoned"),
        });
        match written {
            Ok(result) => result.map(|_| batch.n).map_err(|e| to_py_err(py, e)),
            Err(why) => Err(sqlite_exception(
                py,
                "ProgrammingError",
                &format!("ledger writer {why}"),
            )),
        }
    }
}

/// `ledger_batch(records, shape)`: what the writer stores for these
/// records, for a store it does not write itself (the sqlite3 driver's): (first time, first
/// request id, least time, greatest time, count, the records' JSON text, [rollup parameters]).
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn ledger_batch<'py>(
    py: Python<'py>,
    records: Vec<Bound<'py, PyAny>>,
    shape: ShapeArg,
) -> PyResult<(
    f64,
    String,
    f64,
    f64,
    usize,
    String,
    Vec<Bound<'py, PyTuple>>,
)> {
    let shape = Shape::new(shape).map_err(PyValueError::new_err)?;
    let b = build(py, &shape, &records)?;
    let mut rollups = Vec::with_capacity(b.rollups.len());
    for (dims, sums) in &b.rollups {
        let mut values: Vec<Bound<'py, PyAny>> = Vec::new();
        for v in rollup_params(dims, sums) {
            values.push(match v {
                SqlValue::Integer(n) => n.into_pyobject(py)?.into_any(),
                SqlValue::Real(x) => x.into_pyobject(py)?.into_any(),
                SqlValue::Text(t) => t.into_pyobject(py)?.into_any(),
                SqlValue::Null | SqlValue::Blob(_) => py.None().into_bound(py),
            });
        }
        rollups.push(PyTuple::new(py, values)?);
    }
    let text = String::from_utf8(b.records)
        .map_err(|_| sqlite_exception(py, "ProgrammingError", "records are not UTF-8"))?;
    Ok((
        b.first_ts, b.first_id, b.ts_min, b.ts_max, b.n, text, rollups,
    ))
}

/// The address `sqlite3_libversion` has in this extension's SQLite: equal to the one Python's
/// sqlite3 module resolves only when both run on the same copy of the library.
#[pyfunction]
pub fn sqlite_libversion_address() -> usize {
    rusqlite::ffi::sqlite3_libversion as *const () as usize
}

/// The SQLite version this extension runs on.
#[pyfunction]
pub fn sqlite_version() -> &'static str {
    rusqlite::version()
}

/// The sqlite3 module's exception for an error code, by the mapping its own driver uses.
fn to_py_err(py: Python<'_>, e: rusqlite::Error) -> PyErr {
    let class = match &e {
        rusqlite::Error::SqliteFailure(err, _) => match err.extended_code & 0xff {
            7 => return PyMemoryError::new_err(e.to_string()),
            1 | 3 | 4 | 5 | 6 | 8 | 9 | 10 | 13 | 14 | 15 | 16 | 17 => "OperationalError",
            2 | 12 => "InternalError",
            18 => "DataError",
            19 | 20 => "IntegrityError",
            21 | 25 => "InterfaceError",
            _ => "DatabaseError",
        },
        rusqlite::Error::InvalidParameterCount(..) => "ProgrammingError",
        _ => "DatabaseError",
    };
    sqlite_exception(py, class, &e.to_string())
}

fn sqlite_exception(py: Python<'_>, class: &str, msg: &str) -> PyErr {
    let made = py
        .import("sqlite3")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((msg,)))
        .map(PyErr::from_value);
    made.unwrap_or_else(|err| err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger_batch::{BatchBuilder, RollupSpec, Val};
    use crate::record_text::RecordText;

    fn day(ts: f64) -> String {
        let mut s = String::new();
        push_utc_day(ts, &mut s);
        s
    }

    #[test]
    fn utc_days_across_boundaries() {
        assert_eq!(day(0.0), "1970-01-01");
        assert_eq!(day(86_399.999), "1970-01-01");
        assert_eq!(day(86_400.0), "1970-01-02");
        assert_eq!(day(951_782_400.0), "2000-02-29"); // a leap day of a year divisible by 400
        assert_eq!(day(4_107_542_400.0), "2100-03-01"); // 2100 is not a leap year
        assert_eq!(day(1_798_761_599.5), "2026-12-31");
        assert_eq!(day(1_798_761_600.0), "2027-01-01");
        assert_eq!(day(-1.0), "1969-12-31");
    }

    const BATCH_SQL: &str = "INSERT INTO b (first_ts, first_id, ts_min, ts_max, n, records) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (first_ts, first_id) DO NOTHING";
    const ROLLUP_SQL: &str = "INSERT INTO r VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, k) DO UPDATE SET requests = requests + excluded.requests, errors = errors + excluded.errors, tokens = tokens + excluded.tokens, cost = cost + excluded.cost, up = up + excluded.up, up_n = up_n + excluded.up_n";

    fn open(dir: &std::path::Path) -> Writer {
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
        conn.execute_batch(
            "CREATE TABLE b (id INTEGER PRIMARY KEY, first_ts REAL NOT NULL, first_id TEXT NOT NULL, ts_min REAL, ts_max REAL, n INTEGER, records TEXT NOT NULL, UNIQUE (first_ts, first_id));
             CREATE TABLE r (day TEXT, k TEXT, requests INTEGER, errors INTEGER, tokens INTEGER, cost REAL, up REAL, up_n INTEGER, PRIMARY KEY (day, k));",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        Writer::open(
            &path,
            BATCH_SQL.into(),
            ROLLUP_SQL.into(),
            Duration::from_millis(50),
        )
        .unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn batch(rows: &[(f64, &str, &str, i64)]) -> Batch {
        // Records of (ts, id, key, status, tokens, cost, upstream cost).
        let spec = RollupSpec {
            dims: vec![2],
            status: 3,
            int_sums: vec![4],
            real_sums: vec![5],
            opt_sums: vec![6],
        };
        let mut b = BatchBuilder::new(7, 1, &[3], spec).unwrap_or_else(|e| unreachable!("{e}"));
        let mut text = RecordText::default();
        for (ts, id, key, status) in rows {
            let vals = [
                Val::Real(*ts),
                Val::Text(id),
                Val::Text(key),
                Val::Int(*status),
                Val::Int(10),
                Val::Real(0.5),
                Val::Null,
            ];
            text.write(&vals, None);
            assert_eq!(b.record(&vals, text.text()), Ok(()));
        }
        b.finish()
    }

    fn query(w: &Writer, sql: &str) -> i64 {
        w.conn.query_row(sql, [], |r| r.get(0)).unwrap_or(-1)
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluicegate-ledger-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    #[test]
    fn a_batch_lands_whole_and_a_retry_adds_nothing() {
        let dir = tempdir("retry");
        let mut w = open(&dir);
        let rows = batch(&[
            (1.0, "a", "k1", 200),
            (2.0, "b", "k1", 500),
            (3.0, "c", "k2", 200),
        ]);
        assert_eq!(w.write(&rows).ok(), Some(true));
        assert_eq!(w.write(&rows).ok(), Some(false));
        assert_eq!(query(&w, "SELECT COUNT(*) FROM b"), 1);
        assert_eq!(
            query(&w, "SELECT SUM(json_array_length(records)) FROM b"),
            3
        );
        assert_eq!(
            query(
                &w,
                "SELECT requests * 100 + errors * 10 + tokens FROM r WHERE k = 'k1'"
            ),
            230
        );
        assert_eq!(query(&w, "SELECT SUM(requests) FROM r"), 3);
        // Another batch of the same day and key adds to its rollup.
        assert_eq!(w.write(&batch(&[(4.0, "d", "k1", 200)])).ok(), Some(true));
        assert_eq!(query(&w, "SELECT requests FROM r WHERE k = 'k1'"), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_rollup_rolls_the_batch_back() {
        let dir = tempdir("rollback");
        let mut w = open(&dir);
        let _ = w.conn.execute_batch(
            "CREATE TRIGGER no_k2 BEFORE INSERT ON r WHEN NEW.k = 'k2' BEGIN SELECT RAISE(ABORT, 'no'); END",
        );
        let rows = batch(&[(1.0, "a", "k1", 200), (2.0, "b", "k2", 200)]);
        assert!(w.write(&rows).is_err());
        assert_eq!(query(&w, "SELECT COUNT(*) FROM b"), 0);
        assert_eq!(query(&w, "SELECT COUNT(*) FROM r"), 0);
        assert!(w.conn.is_autocommit());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
