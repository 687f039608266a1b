//! A Python value of a ledger row by its kind, the one type dispatch that the access line and
//! counters (accounting.rs) and the SQLite writer (ledger.rs) share.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

pub enum PyValue<'a, 'py> {
    None,
    Bool(bool),
    /// An int, not yet converted: callers differ on one past 64 bits.
    Int(&'a Bound<'py, PyAny>),
    Real(f64),
    Text(&'a Bound<'py, PyString>),
    Other,
}

/// By exact type first (one pointer compare each under the stable ABI, where the subclass
/// checks are calls), then by the subclass checks, in the order the sqlite3 module adapts them
/// (bool before int).
#[inline]
pub fn kind_of<'a, 'py>(value: &'a Bound<'py, PyAny>) -> PyValue<'a, 'py> {
    if value.is_none() {
        PyValue::None
    } else if let Ok(s) = value.cast_exact::<PyString>() {
        PyValue::Text(s)
    } else if value.is_exact_instance_of::<PyInt>() {
        PyValue::Int(value)
    } else if let Ok(f) = value.cast_exact::<PyFloat>() {
        PyValue::Real(f.value())
    } else if let Ok(b) = value.cast::<PyBool>() {
        PyValue::Bool(b.is_true())
    } else if value.is_instance_of::<PyInt>() {
        PyValue::Int(value)
    } else if let Ok(f) = value.cast::<PyFloat>() {
        PyValue::Real(f.value())
    } else if let Ok(s) = value.cast::<PyString>() {
        PyValue::Text(s)
    } else {
        PyValue::Other
    }
}
