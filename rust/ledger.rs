//! The ledger's SQLite writer: a batch of usage records inserted in one transaction, the values
//! read from the records in one pass under the GIL and the SQLite work done without it.
//!
//! Python decides (usage/ledger.py): the schema, the statement, the record fields in column
//! order, when to write and what to do on an error. This moves the values: Python's driver spent
//! ~4 us a row of the gateway's core binding 31 parameters through its adaptation protocol, on
//! top of SQLite's own ~4 us (measured on the same table and rows).
//!
//! One copy of SQLite in the process: the crate links the system library dynamically, the same
//! file Python's sqlite3 module runs on when Python is built against it. Two copies in one
//! process must not share a database file (closing a file in one drops the POSIX locks the other
//! holds on it), so Python uses this writer only when `sqlite_libversion_address` is the address
//! its own module resolves `sqlite3_libversion` to (usage/native_sqlite.py).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use rusqlite::{Connection, OpenFlags};

use crate::py_value::{kind_of, PyValue};
use crate::sqlite_static::StaticInsert;

/// One bound value; text is a range of the batch's shared buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(usize, usize),
}

/// A batch's values, row after row, `width` cells a row.
#[derive(Debug, Default)]
pub struct Rows {
    pub width: usize,
    pub cells: Vec<Cell>,
    pub text: String,
}

impl Rows {
    pub fn new(width: usize) -> Self {
        Rows {
            width,
            cells: Vec::new(),
            text: String::new(),
        }
    }

    pub fn push_text(&mut self, s: &str) {
        let start = self.text.len();
        self.text.push_str(s);
        self.cells.push(Cell::Text(start, self.text.len()));
    }

    pub fn len(&self) -> usize {
        self.cells.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The UTC day of a unix time as "YYYY-MM-DD", the ledger's `day` column (what
/// `time.strftime("%Y-%m-%d", time.gmtime(ts))` gives), appended to `out`.
pub fn push_utc_day(ts: f64, out: &mut String) {
    let days = (ts / 86400.0).floor() as i64;
    // Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    out.push_str(&format!("{year:04}-{month:02}-{day:02}"));
}

/// A connection and its INSERTs: (rows a statement carries, the statement), most rows first,
/// the last one of one row. Several rows a statement cost SQLite less than one: ~3 vs ~4.4 us a
/// row in C on this table (measured), the statement's own work (its cursors, the AUTOINCREMENT
/// counter read and written back) paid once for all of them.
pub struct Writer {
    // Before the connection: fields drop in order, and the statements must go first.
    inserts: Vec<(usize, StaticInsert)>,
    conn: Connection,
}

impl Writer {
    pub fn open(
        path: &std::path::Path,
        mut inserts: Vec<(usize, String)>,
        busy_timeout: Duration,
    ) -> rusqlite::Result<Self> {
        inserts.retain(|(rows, _)| *rows > 0);
        inserts.sort_by_key(|(rows, _)| std::cmp::Reverse(*rows));
        if inserts.last().map(|(rows, _)| *rows) != Some(1) {
            return Err(rusqlite::Error::InvalidQuery);
        }
        // NO_MUTEX: the connection is only ever used under the writer's own lock.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(busy_timeout)?;
        // The same settings as the Python side's connections (usage/_db.py).
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous=NORMAL")?;
        let inserts = inserts
            .into_iter()
            .map(|(rows, sql)| StaticInsert::prepare(&conn, &sql).map(|stmt| (rows, stmt)))
            .collect::<rusqlite::Result<_>>()?;
        Ok(Writer { inserts, conn })
    }

    /// All of `rows` in one transaction, or none of them.
    pub fn write(&mut self, rows: &Rows) -> rusqlite::Result<usize> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let inserted = self
            .insert_all(rows)
            .and_then(|()| self.conn.execute_batch("COMMIT"));
        if let Err(e) = inserted {
            // A failed COMMIT (busy) leaves the transaction open too.
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            return Err(e);
        }
        Ok(rows.len())
    }

    fn insert_all(&mut self, rows: &Rows) -> rusqlite::Result<()> {
        let width = rows.width.max(1);
        let mut done = 0;
        while done < rows.len() {
            let left = rows.len() - done;
            let Some((n, stmt)) = self.inserts.iter_mut().find(|(n, _)| *n <= left) else {
                return Err(rusqlite::Error::InvalidQuery);
            };
            let cells = rows
                .cells
                .get(done * width..(done + *n) * width)
                .unwrap_or_default();
            stmt.execute(rows, cells)?;
            done += *n;
        }
        Ok(())
    }
}

/// `SqliteLedgerWriter(path, inserts, width, busy_timeout_ms)`: `inserts` are (rows, INSERT of
/// that many rows of `width + 1` parameters each), one of them of one row. Records are tuples of
/// `width` values; a row's first parameter is the UTC day of the first value (the unix time),
/// then the values in order.
#[pyclass(module = "sluicegate._native", frozen)]
pub struct SqliteLedgerWriter {
    writer: Mutex<Option<Writer>>,
    width: usize,
}

#[pymethods]
impl SqliteLedgerWriter {
    #[new]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        inserts: Vec<(usize, String)>,
        width: usize,
        busy_timeout_ms: u64,
    ) -> PyResult<Self> {
        if width == 0 {
            return Err(PyValueError::new_err(
                "width: at least the unix time is needed",
            ));
        }
        // Writer::open refuses this too; here it gets a message that names the argument.
        if !inserts.iter().any(|(rows, _)| *rows == 1) {
            return Err(PyValueError::new_err("inserts: one of one row is needed"));
        }
        let timeout = Duration::from_millis(busy_timeout_ms);
        let writer = py
            .detach(|| Writer::open(&path, inserts, timeout))
            .map_err(|e| to_py_err(py, e))?;
        Ok(SqliteLedgerWriter {
            writer: Mutex::new(Some(writer)),
            width,
        })
    }

    /// Insert one row per record in one transaction; the records' count. Raises the sqlite3
    /// module's own exception classes, so callers tell a busy store from a bad row as they do
    /// for its driver.
    fn write(&self, py: Python<'_>, records: Vec<Bound<'_, PyTuple>>) -> PyResult<usize> {
        let rows = self.extract(py, &records)?;
        let written = py.detach(|| match self.writer.lock() {
            Ok(mut guard) => match guard.as_mut() {
                Some(writer) => Ok(writer.write(&rows)),
                None => Err("closed"),
            },
            Err(_) => Err("poisoned"),
        });
        match written {
            Ok(result) => result.map_err(|e| to_py_err(py, e)),
            Err(why) => Err(sqlite_exception(
                py,
                "ProgrammingError",
                &format!("ledger writer {why}"),
            )),
        }
    }

    fn close(&self, py: Python<'_>) {
        // Closing the last connection checkpoints the WAL: not with the GIL held.
        py.detach(|| drop(self.writer.lock().ok().and_then(|mut guard| guard.take())));
    }
}

impl SqliteLedgerWriter {
    fn extract(&self, py: Python<'_>, records: &[Bound<'_, PyTuple>]) -> PyResult<Rows> {
        let mut rows = Rows::new(self.width + 1);
        rows.cells.reserve(records.len() * rows.width);
        rows.text.reserve(records.len() * 160);
        // The UTC day last written: [start, end) of it in unix time, and its text's cell. Rows
        // of one day share one copy of its name (formatting it cost ~1,300 instructions a row).
        let mut day: Option<(f64, f64, Cell)> = None;
        for rec in records {
            if rec.len() != self.width {
                let msg = format!("a record of {} values, not {}", rec.len(), self.width);
                return Err(sqlite_exception(py, "ProgrammingError", &msg));
            }
            for i in 0..self.width {
                // Borrowed: no reference count taken and dropped per value.
                let value = rec.get_borrowed_item(i)?;
                if i == 0 {
                    // Years 1-9999 only: past them the driver's day would not be a date either.
                    let ts: f64 = value
                        .extract()
                        .ok()
                        .filter(|ts: &f64| (-62_135_596_800.0..253_402_300_800.0).contains(ts))
                        .ok_or_else(|| {
                            let msg =
                                "the first field (the unix time) is not a time in years 1-9999";
                            sqlite_exception(py, "ProgrammingError", msg)
                        })?;
                    let cell = match day {
                        Some((start, end, cell)) if start <= ts && ts < end => cell,
                        _ => {
                            let start_of_day = (ts / 86400.0).floor() * 86400.0;
                            let at = rows.text.len();
                            push_utc_day(ts, &mut rows.text);
                            let cell = Cell::Text(at, rows.text.len());
                            day = Some((start_of_day, start_of_day + 86400.0, cell));
                            cell
                        }
                    };
                    rows.cells.push(cell);
                }
                push_value(py, &mut rows, &value, i + 2)?;
            }
        }
        Ok(rows)
    }
}

/// A value as the sqlite3 module adapts it: an int past 64 bits is its OverflowError, a type it
/// does not adapt its ProgrammingError.
fn push_value(
    py: Python<'_>,
    rows: &mut Rows,
    value: &Bound<'_, PyAny>,
    param: usize,
) -> PyResult<()> {
    match kind_of(value) {
        PyValue::None => rows.cells.push(Cell::Null),
        PyValue::Bool(b) => rows.cells.push(Cell::Int(i64::from(b))),
        PyValue::Int(v) => rows.cells.push(Cell::Int(v.extract()?)),
        PyValue::Real(v) => rows.cells.push(Cell::Real(v)),
        PyValue::Text(s) => rows.push_text(s.to_str()?),
        PyValue::Other => {
            let kind = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            let msg = format!("Error binding parameter {param}: type '{kind}' is not supported");
            return Err(sqlite_exception(py, "ProgrammingError", &msg));
        }
    }
    Ok(())
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

    fn table(conn: &Connection) {
        conn.execute_batch("CREATE TABLE t (day TEXT NOT NULL, ts REAL NOT NULL, id TEXT NOT NULL, n INTEGER NOT NULL, x REAL, UNIQUE (ts, id))")
            .unwrap_or_else(|e| unreachable!("{e}"));
    }

    fn rows(values: &[(f64, &str, Option<i64>)]) -> Rows {
        let mut rows = Rows::new(5);
        for (ts, id, n) in values {
            let start = rows.text.len();
            push_utc_day(*ts, &mut rows.text);
            rows.cells.push(Cell::Text(start, rows.text.len()));
            rows.cells.push(Cell::Real(*ts));
            rows.push_text(id);
            rows.cells.push(n.map_or(Cell::Null, Cell::Int));
            rows.cells.push(Cell::Null);
        }
        rows
    }

    fn open(dir: &std::path::Path) -> Writer {
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap_or_else(|e| unreachable!("{e}"));
        table(&conn);
        let row = "(?, ?, ?, ?, ?)";
        let insert = |n: usize| {
            let values = vec![row; n].join(", ");
            (
                n,
                format!("INSERT INTO t VALUES {values} ON CONFLICT (ts, id) DO NOTHING"),
            )
        };
        Writer::open(&path, vec![insert(1), insert(2)], Duration::from_millis(50))
            .unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn count(w: &Writer) -> i64 {
        w.conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap_or(-1)
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluicegate-ledger-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    #[test]
    fn a_writer_needs_a_one_row_insert() {
        let dir = tempdir("one-row");
        let path = dir.join("t.db");
        let only_pairs = vec![(2, "INSERT INTO t VALUES (?, ?), (?, ?)".to_owned())];
        assert!(Writer::open(&path, only_pairs, Duration::from_millis(50)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_batch_lands_whole_and_a_retry_adds_nothing() {
        let dir = tempdir("retry");
        let mut w = open(&dir);
        // Five rows: two statements of two rows and one of one.
        let batch = rows(&[
            (1.0, "a", Some(1)),
            (2.0, "b", Some(2)),
            (3.0, "c", Some(3)),
            (4.0, "d", Some(4)),
            (5.0, "e", Some(5)),
        ]);
        assert_eq!(w.write(&batch).ok(), Some(5));
        assert_eq!(w.write(&batch).ok(), Some(5));
        assert_eq!(count(&w), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_row_rolls_the_whole_batch_back() {
        let dir = tempdir("rollback");
        let mut w = open(&dir);
        let batch = rows(&[(1.0, "a", Some(1)), (2.0, "b", Some(2)), (3.0, "c", None)]);
        match w.write(&batch) {
            Err(rusqlite::Error::SqliteFailure(e, _)) => assert_eq!(e.extended_code & 0xff, 19),
            other => unreachable!("expected a constraint error, got {other:?}"),
        }
        assert_eq!(count(&w), 0);
        assert!(w.conn.is_autocommit());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
