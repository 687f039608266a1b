//! The ledger's queue of records between the event loop and the writer thread.
//!
//! Python decides (usage/ledger.py): the bound, the batch size, when to write, what a failure
//! means. This holds the records: `push` is the ledger's only call on the request path, a bound
//! check and an append without an interpreter frame (the Python method it replaces cost ~3,000
//! instructions a request, measured with callgrind), and it wakes the writer when a batch is full.
//!
//! Two kinds of queue. For the stores Python writes (PostgreSQL, SQLite through the driver) it
//! holds the rows, tuples. For the native SQLite writer it holds batches being built
//! (ledger_batch.rs): a record is written into its batch's JSON text and daily sums as it comes,
//! by `push` or by the request sink from the values it read for the access line
//! (accounting.rs), so a request's fields are read once, the tuple is freed with the request,
//! and the writer thread stores a batch without taking the GIL. A record the batch cannot hold
//! (a required field missing, a value of another type) is refused there and counted.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::ledger_batch::{Batch, BatchBuilder, Refusal, Val};
use crate::ledger_shape::{Shape, ShapeArg};

/// A sealed batch for the writer: `n` records. Taken once (`write_batch` empties it).
#[pyclass(module = "sluicegate._native", frozen)]
pub struct LedgerBatch {
    pub batch: Mutex<Option<Batch>>,
    #[pyo3(get)]
    pub n: usize,
}

// One queue a process: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Held {
    Rows(VecDeque<Py<PyAny>>),
    Batches {
        shape: Shape,
        open: Option<BatchBuilder>,
        sealed: VecDeque<Batch>,
        // The text length of the last full batch: a new batch reserves that at once rather than
        // growing to it by doubling (~10 copies of the text a batch, ~200 instructions a record).
        full_len: usize,
        refused: u64,
        last_refusal: Option<String>,
    },
}

struct State {
    held: Held,
    waiting: usize,
    inflight: usize,
    dropped: u64,
    closed: bool,
}

/// `RowQueue(queue_max, batch_max, wake, shape=None)`: at most `queue_max` records queued or
/// being written; `wake()` is called when `batch_max` records are waiting. With a `shape`
/// (usage/batches.py's SHAPE) it holds batches for the native SQLite writer (`take_batch`),
/// else rows (`take`).
#[pyclass(module = "sluicegate._native", frozen)]
pub struct RowQueue {
    state: Mutex<State>,
    queue_max: usize,
    batch_max: usize,
    wake: Py<PyAny>,
}

impl RowQueue {
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }

    /// One record from values already read (the sink's), in field order, and their text
    /// (record_text.rs, written from them). Never fails: a record the batch cannot hold is
    /// counted as refused, one past the bound as dropped.
    pub fn push_record(&self, py: Python<'_>, vals: &[Val<'_>], text: &[u8]) {
        let full = match self.lock() {
            Some(mut s) => self.admit(&mut s, |_, b| b.record(vals, text)),
            None => false,
        };
        self.woken(py, full);
    }

    /// Past the bound: dropped. Else the record goes into the open batch (sealed when it holds
    /// `batch_max`); whether a batch is now full.
    fn admit(
        &self,
        s: &mut State,
        record: impl FnOnce(&Shape, &mut BatchBuilder) -> Result<(), Refusal>,
    ) -> bool {
        // (A queue of rows is never handed values: counted, not lost without a trace.)
        if s.closed || s.waiting + s.inflight >= self.queue_max || matches!(s.held, Held::Rows(_)) {
            s.dropped += 1;
            return false;
        }
        let Held::Batches {
            shape,
            open,
            sealed,
            full_len,
            refused,
            last_refusal,
        } = &mut s.held
        else {
            return false;
        };
        let builder = match open {
            Some(b) => b,
            None => open.insert(shape.builder_with_room(*full_len + *full_len / 8)),
        };
        // (A refused record leaves the batch as it was.)
        if let Err(why) = record(shape, builder) {
            *refused += 1;
            *last_refusal = Some(match why {
                Refusal::Missing(m) => format!("a required value is missing: {m}"),
                Refusal::Bad(m) | Refusal::TooBig(m) => m,
            });
            return false;
        }
        s.waiting += 1;
        if builder.len() < self.batch_max {
            return false;
        }
        if let Some(b) = open.take() {
            let batch = b.finish();
            *full_len = batch.records.len();
            sealed.push_back(batch);
        }
        true
    }

    fn woken(&self, py: Python<'_>, full: bool) {
        if full {
            // A wake-up that fails is not the request's problem: the writer wakes on its interval.
            let _ = self.wake.call0(py);
        }
    }
}

#[pymethods]
impl RowQueue {
    #[new]
    #[pyo3(signature = (queue_max, batch_max, wake, shape=None))]
    fn new(
        queue_max: usize,
        batch_max: usize,
        wake: Py<PyAny>,
        shape: Option<ShapeArg>,
    ) -> PyResult<Self> {
        let held = match shape {
            None => Held::Rows(VecDeque::new()),
            Some(arg) => Held::Batches {
                shape: Shape::new(arg).map_err(PyValueError::new_err)?,
                open: None,
                sealed: VecDeque::new(),
                full_len: 0,
                refused: 0,
                last_refusal: None,
            },
        };
        Ok(RowQueue {
            state: Mutex::new(State {
                held,
                waiting: 0,
                inflight: 0,
                dropped: 0,
                closed: false,
            }),
            queue_max: queue_max.max(1),
            batch_max: batch_max.max(1),
            wake,
        })
    }

    /// Queue a row (a tuple of the record's fields); past the bound, or once closed, it is
    /// dropped and counted. Never raises.
    fn push(&self, py: Python<'_>, row: Bound<'_, PyAny>) {
        let full = match self.lock() {
            Some(mut s) => {
                let State {
                    held,
                    waiting,
                    inflight,
                    dropped,
                    closed,
                } = &mut *s;
                if let Held::Rows(rows) = held {
                    if *closed || *waiting + *inflight >= self.queue_max {
                        *dropped += 1;
                        false
                    } else {
                        rows.push_back(row.unbind());
                        *waiting += 1;
                        *waiting == self.batch_max
                    }
                } else {
                    self.admit(&mut s, |shape, b| shape.push_row(b, &row))
                }
            }
            None => false,
        };
        self.woken(py, full);
    }

    /// Up to `n` rows, oldest first; they count against the bound until `done`. (Rows only.)
    fn take(&self, n: usize) -> Vec<Py<PyAny>> {
        match self.lock() {
            Some(mut s) => {
                let State {
                    held,
                    waiting,
                    inflight,
                    ..
                } = &mut *s;
                let Held::Rows(rows) = held else {
                    return Vec::new();
                };
                let k = n.min(rows.len());
                *waiting -= k;
                *inflight += k;
                rows.drain(..k).collect()
            }
            None => Vec::new(),
        }
    }

    /// The oldest batch (the open one, sealed now, when none is full), or None; its records
    /// count against the bound until `done`. (Batches only.)
    fn take_batch(&self) -> Option<LedgerBatch> {
        let mut s = self.lock()?;
        let State {
            held,
            waiting,
            inflight,
            ..
        } = &mut *s;
        let Held::Batches { open, sealed, .. } = held else {
            return None;
        };
        if sealed.is_empty() {
            if let Some(b) = open.take() {
                sealed.push_back(b.finish());
            }
        }
        let batch = sealed.pop_front()?;
        *waiting -= batch.n;
        *inflight += batch.n;
        Some(LedgerBatch {
            n: batch.n,
            batch: Mutex::new(Some(batch)),
        })
    }

    /// `n` taken records are written (or given up).
    fn done(&self, n: usize) {
        if let Some(mut s) = self.lock() {
            s.inflight = s.inflight.saturating_sub(n);
        }
    }

    /// Records dropped from now on.
    fn close(&self) {
        if let Some(mut s) = self.lock() {
            s.closed = true;
        }
    }

    /// Records waiting to be taken.
    #[getter]
    fn waiting(&self) -> usize {
        self.lock().map_or(0, |s| s.waiting)
    }

    /// Records waiting or being written.
    #[getter]
    fn depth(&self) -> usize {
        self.lock().map_or(0, |s| s.waiting + s.inflight)
    }

    #[getter]
    fn dropped(&self) -> u64 {
        self.lock().map_or(0, |s| s.dropped)
    }

    /// Records a batch could not hold (their values), and why the last one could not.
    #[getter]
    fn refused(&self) -> (u64, Option<String>) {
        match self.lock().as_deref() {
            Some(State {
                held:
                    Held::Batches {
                        refused,
                        last_refusal,
                        ..
                    },
                ..
            }) => (*refused, last_refusal.clone()),
            _ => (0, None),
        }
    }
}
