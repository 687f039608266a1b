//! The ledger's queue of rows between the event loop and the writer thread.
//!
//! Python decides (usage/ledger.py): the bound, the batch size, when to write, what a failure
//! means. This holds the rows: `push` is the ledger's only call on the request path, a bound
//! check and an append without an interpreter frame (the Python method it replaces cost ~3,000
//! instructions a request, measured with callgrind), and it wakes the writer when a batch is full.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use pyo3::prelude::*;

#[derive(Default)]
struct State {
    rows: VecDeque<Py<PyAny>>,
    inflight: usize,
    dropped: u64,
    closed: bool,
}

/// `RowQueue(queue_max, batch_max, wake)`: at most `queue_max` rows queued or being written;
/// `wake()` is called when `batch_max` rows are waiting.
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
}

#[pymethods]
impl RowQueue {
    #[new]
    fn new(queue_max: usize, batch_max: usize, wake: Py<PyAny>) -> Self {
        RowQueue {
            state: Mutex::new(State::default()),
            queue_max: queue_max.max(1),
            batch_max: batch_max.max(1),
            wake,
        }
    }

    /// Queue a row; past the bound, or once closed, it is dropped and counted. Never raises.
    fn push(&self, py: Python<'_>, row: Py<PyAny>) {
        let full = match self.lock() {
            Some(mut s) => {
                if s.closed || s.rows.len() + s.inflight >= self.queue_max {
                    s.dropped += 1;
                    false
                } else {
                    s.rows.push_back(row);
                    s.rows.len() == self.batch_max
                }
            }
            None => false,
        };
        if full {
            // A wake-up that fails is not the request's problem: the writer wakes on its interval.
            let _ = self.wake.call0(py);
        }
    }

    /// Up to `n` rows, oldest first; they count against the bound until `done`.
    fn take(&self, n: usize) -> Vec<Py<PyAny>> {
        match self.lock() {
            Some(mut s) => {
                let k = n.min(s.rows.len());
                s.inflight += k;
                s.rows.drain(..k).collect()
            }
            None => Vec::new(),
        }
    }

    /// `n` taken rows are written (or given up).
    fn done(&self, n: usize) {
        if let Some(mut s) = self.lock() {
            s.inflight = s.inflight.saturating_sub(n);
        }
    }

    /// Rows dropped from now on.
    fn close(&self) {
        if let Some(mut s) = self.lock() {
            s.closed = true;
        }
    }

    /// Rows waiting to be taken.
    #[getter]
    fn waiting(&self) -> usize {
        self.lock().map_or(0, |s| s.rows.len())
    }

    /// Rows waiting or being written.
    #[getter]
    fn depth(&self) -> usize {
        self.lock().map_or(0, |s| s.rows.len() + s.inflight)
    }

    #[getter]
    fn dropped(&self) -> u64 {
        self.lock().map_or(0, |s| s.dropped)
    }
}
