//! The ledger's INSERT statements through SQLite's C API, binding text without a copy.
//!
//! rusqlite binds every text `SQLITE_TRANSIENT`: SQLite copies it into memory of its own, and
//! frees that copy when the parameter is bound again or cleared. For a ledger row that is a
//! malloc, a copy and a free for each of its dozen texts; measured with callgrind on the
//! gateway's writer thread, binding and clearing the texts took ~9,500 of the ~29,500
//! instructions a row cost. Here a batch's texts live in one buffer (`Rows::text`) that outlives
//! the statement's use of it: each is bound `SQLITE_STATIC` (no copy), and the bindings are
//! cleared before `execute` returns, so no pointer into the buffer stays with SQLite.
//!
//! The only module of the crate with `unsafe` code (the network path has none): FFI calls, each
//! with what makes it sound next to it.
#![allow(unsafe_code)]

use std::ffi::{c_int, CStr, CString};
use std::ptr::{self, NonNull};

use rusqlite::{ffi, Connection};

use crate::ledger::{Cell, Rows};

/// One prepared statement of the connection it was prepared on.
pub struct StaticInsert {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db: NonNull<ffi::sqlite3>,
    params: usize,
}

// SAFETY: the connection is opened without SQLite's mutexes (multi-thread mode), where a
// connection and its statements may be used from any thread as long as no two threads use them
// at once; the ledger's writer keeps its connection and statements under one Mutex.
unsafe impl Send for StaticInsert {}

impl StaticInsert {
    /// Prepare `sql` on `conn`. Finalize it (drop it) before the connection closes; rusqlite
    /// closes with `sqlite3_close_v2`, which would otherwise wait for it.
    pub fn prepare(conn: &Connection, sql: &str) -> rusqlite::Result<Self> {
        let c_sql = CString::new(sql).map_err(rusqlite::Error::NulError)?;
        // SAFETY: the handle is the live connection's, used on this thread under the writer's lock.
        let db = unsafe { conn.handle() };
        let db = NonNull::new(db).ok_or(rusqlite::Error::InvalidQuery)?;
        let mut stmt: *mut ffi::sqlite3_stmt = ptr::null_mut();
        // SAFETY: c_sql is NUL-terminated and lives across the call; stmt is an out pointer.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(db.as_ptr(), c_sql.as_ptr(), -1, &mut stmt, ptr::null_mut())
        };
        if rc != ffi::SQLITE_OK {
            return Err(error(db, rc));
        }
        let stmt = NonNull::new(stmt).ok_or(rusqlite::Error::InvalidQuery)?;
        // SAFETY: stmt is the statement just prepared.
        let params = unsafe { ffi::sqlite3_bind_parameter_count(stmt.as_ptr()) };
        Ok(StaticInsert {
            stmt,
            db,
            params: usize::try_from(params).unwrap_or(0),
        })
    }

    pub fn parameter_count(&self) -> usize {
        self.params
    }

    /// Bind `cells` (their texts in `rows.text`), step once, and reset the statement with its
    /// bindings cleared, whatever happened.
    pub fn execute(&mut self, rows: &Rows, cells: &[Cell]) -> rusqlite::Result<()> {
        if cells.len() != self.params {
            return Err(rusqlite::Error::InvalidParameterCount(
                cells.len(),
                self.params,
            ));
        }
        let stmt = self.stmt.as_ptr();
        let mut rc = ffi::SQLITE_OK;
        for (i, cell) in cells.iter().enumerate() {
            let at = c_int::try_from(i + 1).unwrap_or(c_int::MAX);
            // SAFETY: stmt is live; each index is within its parameter count (checked above).
            rc = unsafe {
                match *cell {
                    // Parameters are NULL until bound: a new statement's are, and every
                    // execute ends by clearing them.
                    Cell::Null => continue,
                    Cell::Int(v) => ffi::sqlite3_bind_int64(stmt, at, v),
                    Cell::Real(v) => ffi::sqlite3_bind_double(stmt, at, v),
                    Cell::Text(a, b) => {
                        // An empty text is bound to a literal: the buffer's pointer may dangle
                        // when it holds nothing.
                        let text = match rows.text.as_bytes().get(a..b) {
                            Some(t) if !t.is_empty() => t,
                            _ => b"".as_slice(),
                        };
                        let len = c_int::try_from(text.len()).unwrap_or(c_int::MAX);
                        // SQLITE_STATIC: SQLite reads the bytes in place until the binding is
                        // cleared, which happens below, before `rows` can go away.
                        ffi::sqlite3_bind_text(
                            stmt,
                            at,
                            text.as_ptr().cast(),
                            len,
                            ffi::SQLITE_STATIC(),
                        )
                    }
                }
            };
            if rc != ffi::SQLITE_OK {
                break;
            }
        }
        if rc == ffi::SQLITE_OK {
            // SAFETY: every parameter is bound to live memory.
            rc = match unsafe { ffi::sqlite3_step(stmt) } {
                ffi::SQLITE_DONE => ffi::SQLITE_OK,
                ffi::SQLITE_ROW => ffi::SQLITE_MISUSE,
                other => other,
            };
        }
        // SAFETY: stmt is live. After these no binding points into `rows`.
        unsafe {
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
        }
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(error(self.db, rc))
        }
    }
}

impl Drop for StaticInsert {
    fn drop(&mut self) {
        // SAFETY: the statement is finalized once, here; nothing uses it after.
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

/// rusqlite's error for a result code, with the connection's message.
fn error(db: NonNull<ffi::sqlite3>, rc: c_int) -> rusqlite::Error {
    // SAFETY: db is live; sqlite3_errmsg returns a NUL-terminated string SQLite owns, copied here.
    let message = unsafe {
        let msg = ffi::sqlite3_errmsg(db.as_ptr());
        (!msg.is_null()).then(|| CStr::from_ptr(msg).to_string_lossy().into_owned())
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(rc), message)
}
