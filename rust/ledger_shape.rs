//! What a ledger record looks like to the batch builder (ledger_batch.rs), as Python says it
//! (usage/batches.py's SHAPE), and a record's Python values read as the builder takes them.
//! Shared by the native queue (row_queue.rs) and the SQLite writer (ledger.rs).

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::ledger_batch::{BatchBuilder, Refusal, RollupSpec, Val};
use crate::py_value::{kind_of, PyValue};
use crate::record_text::RecordText;

/// (width, request id field, required fields, (dimensions, status, int sums, real sums,
/// optional sums)), field indexes each.
pub type ShapeArg = (
    usize,
    usize,
    Vec<usize>,
    (Vec<usize>, usize, Vec<usize>, Vec<usize>, Vec<usize>),
);

/// A checked shape: new batches are copies of an empty builder made from it.
#[derive(Clone)]
pub struct Shape {
    pub width: usize,
    empty: BatchBuilder,
}

impl Shape {
    pub fn new(arg: ShapeArg) -> Result<Self, String> {
        let (width, id_field, required, spec) = arg;
        let (dims, status, int_sums, real_sums, opt_sums) = spec;
        let spec = RollupSpec {
            dims,
            status,
            int_sums,
            real_sums,
            opt_sums,
        };
        let empty = BatchBuilder::new(width, id_field, &required, spec)?;
        Ok(Shape { width, empty })
    }

    pub fn builder(&self) -> BatchBuilder {
        self.empty.clone()
    }

    /// A new batch whose text has room for `bytes` before it grows.
    pub fn builder_with_room(&self, bytes: usize) -> BatchBuilder {
        let mut b = self.empty.clone();
        b.reserve_text(bytes);
        b
    }

    /// One record from a row (a tuple of its fields), into `b`; on a refusal `b` is as before.
    /// What the queue's `push` and the writer's `write` both read rows with.
    pub fn push_row(&self, b: &mut BatchBuilder, row: &Bound<'_, PyAny>) -> Result<(), Refusal> {
        let row = match row.cast::<PyTuple>() {
            Ok(t) if t.len() == self.width => t,
            _ => {
                let msg = format!("a record is a tuple of {} values", self.width);
                return Err(Refusal::Bad(msg));
            }
        };
        // Borrowed: no reference count taken and dropped per value.
        let items = (0..self.width)
            .map(|i| row.get_borrowed_item(i))
            .collect::<PyResult<Vec<_>>>()
            .map_err(|e| Refusal::Bad(e.to_string()))?;
        let vals = items
            .iter()
            .enumerate()
            .map(|(i, item)| read_val(item, i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut text = RecordText::default();
        text.write(&vals, None);
        b.record(&vals, text.text())
    }
}

/// Field `i`'s Python value as the builder takes it.
pub fn read_val<'a>(value: &'a Bound<'_, PyAny>, i: usize) -> Result<Val<'a>, Refusal> {
    Ok(match kind_of(value) {
        PyValue::None => Val::Null,
        PyValue::Bool(x) => Val::Bool(x),
        PyValue::Int(x) => Val::Int(
            x.extract()
                .map_err(|_| Refusal::TooBig(format!("field {i}: an int past 64 bits")))?,
        ),
        PyValue::Real(x) => Val::Real(x),
        PyValue::Text(s) => Val::Text(
            s.to_str()
                .map_err(|_| Refusal::Bad(format!("field {i}: a text that is not UTF-8")))?,
        ),
        PyValue::Other => {
            let kind = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            return Err(Refusal::Bad(format!(
                "field {i}: type '{kind}' is not supported"
            )));
        }
    })
}
