//! The per-chunk half of the upstream connection's asyncio protocol.
//!
//! `python/sluicegate/upstream/connection.py` subclasses `ProtocolCore`: Python keeps the
//! request's control flow (start, waits, timers, failures) and this type keeps the one callback
//! that runs for every chunk the upstream sends. uvloop calls `data_received` here directly, so
//! a relayed event costs no interpreter frame: the chunk goes to the `Exchange` and the bytes
//! it returns go to the client's `sink` (Granian's `send_bytes`) from Rust. Anything that is
//! not the steady state (bytes before the relay began, a send that did not simply succeed, a
//! parse error, the end of the body) calls back into Python by method name, so the rules for
//! those stay in one place. The first byte needs no call: the request's one timer reads
//! `received` when it fires.
use std::time::Instant;

use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};
use pyo3::PyTraverseError;

use crate::exchange::Exchange;

#[pyclass(module = "sluicegate._native", subclass)]
pub struct ProtocolCore {
    exchange: Option<Py<Exchange>>,
    sink: Option<Py<PyAny>>,
    /// The type of a send result that means "queued, nothing to await" (Granian's empty
    /// awaitable): learnt from Python's classification the first time one is seen.
    sent_type: Option<Py<PyType>>,
    received: bool,
    last_rx: Option<Instant>,
}

impl ProtocolCore {
    /// Bytes arrived (the native relay reads the socket itself): what `data_received` records.
    pub(crate) fn touch(&mut self) {
        self.last_rx = Some(Instant::now());
        self.received = true;
    }
}

#[pymethods]
impl ProtocolCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyAny>, _kwargs: Option<&Bound<'_, PyAny>>) -> Self {
        ProtocolCore {
            exchange: None,
            sink: None,
            sent_type: None,
            received: false,
            last_rx: None,
        }
    }

    // The sink is a closure of the request, which may reach this connection again: the cycle
    // collector has to see these references, as it saw them when they were Python attributes.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.exchange)?;
        visit.call(&self.sink)?;
        visit.call(&self.sent_type)?;
        Ok(())
    }

    fn __clear__(&mut self) {
        self.exchange = None;
        self.sink = None;
        self.sent_type = None;
    }

    /// The response being read; None between requests.
    #[getter]
    fn exchange(&self, py: Python<'_>) -> Option<Py<Exchange>> {
        self.exchange.as_ref().map(|e| e.clone_ref(py))
    }

    #[setter]
    fn set_exchange(&mut self, exchange: Option<Py<Exchange>>) {
        self.exchange = exchange;
    }

    /// While relaying: the callable complete events go to, straight from `data_received`.
    #[getter]
    fn sink(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.sink.as_ref().map(|s| s.clone_ref(py))
    }

    #[setter]
    fn set_sink(&mut self, sink: Option<Py<PyAny>>) {
        self.sink = sink;
    }

    /// Whether any byte of the current response has arrived.
    #[getter]
    fn received(&self) -> bool {
        self.received
    }

    #[setter]
    fn set_received(&mut self, received: bool) {
        self.received = received;
    }

    /// Seconds since the last bytes arrived (infinite when none have).
    fn rx_idle_s(&self) -> f64 {
        self.last_rx
            .map_or(f64::INFINITY, |t| t.elapsed().as_secs_f64())
    }

    /// Remember `kind` as the type of a send result that needs nothing more.
    fn _learn_sent_type(&mut self, kind: Py<PyType>) {
        self.sent_type = Some(kind);
    }

    fn data_received(slf: &Bound<'_, Self>, data: &Bound<'_, PyBytes>) -> PyResult<()> {
        let py = slf.py();
        let (exchange, sink) = {
            let mut this = slf.borrow_mut();
            let Some(exchange) = this.exchange.as_ref().map(|e| e.clone_ref(py)) else {
                drop(this);
                // Bytes on an idle keep-alive connection: Python drops the connection.
                slf.call_method0(intern!(py, "_stray_bytes"))?;
                return Ok(());
            };
            this.last_rx = Some(Instant::now());
            this.received = true;
            (exchange, this.sink.as_ref().map(|s| s.clone_ref(py)))
        };
        let (chunk, done, has_head) = {
            let mut ex = exchange.bind(py).borrow_mut();
            match ex.feed_bytes(data) {
                Ok(chunk) => (chunk, ex.is_done(), ex.has_head()),
                Err(err) => {
                    drop(ex);
                    slf.call_method1(intern!(py, "_invalid_response"), (err.value(py),))?;
                    return Ok(());
                }
            }
        };
        match (chunk, sink) {
            (Some(chunk), Some(sink)) => {
                match sink.bind(py).call1((chunk,)) {
                    Ok(result) => {
                        let sent = slf
                            .borrow()
                            .sent_type
                            .as_ref()
                            .is_some_and(|t| result.get_type().is(t.bind(py)));
                        if !sent {
                            slf.call_method1(intern!(py, "_sent"), (result,))?;
                        }
                    }
                    Err(_) => {
                        slf.call_method1(intern!(py, "_client_gone"), (py.None(),))?;
                    }
                }
                if done {
                    slf.call_method0(intern!(py, "_wake"))?;
                }
            }
            (Some(chunk), None) => {
                slf.call_method1(intern!(py, "_buffer"), (chunk,))?;
            }
            (None, sink) => {
                if done || (has_head && sink.is_none()) {
                    slf.call_method0(intern!(py, "_wake"))?;
                }
            }
        }
        Ok(())
    }
}
