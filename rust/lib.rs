//! sluicegate's native hot path. Python decides; this crate moves bytes.
//!
//! The logic lives in plain Rust modules (`json_scan`, `headers`, `http1`, `sse`, `tally`,
//! `ledger_batch`, `ledger_shape`) that `cargo test` exercises without Python; `request`, `exchange`, `protocol`,
//! `ledger`, `row_queue` and `accounting` are the thin PyO3 faces (`translate::py` for the
//! translators), and `py_value` the type dispatch the ledger and the access line read rows by.
use pyo3::prelude::*;

pub mod accounting;
pub mod civil_date;
pub mod exchange;
pub mod front;
pub mod headers;
pub mod http1;
pub mod json_float;
pub mod json_scan;
pub mod ledger;
pub mod ledger_batch;
pub mod ledger_pg;
pub mod ledger_shape;
pub mod protocol;
pub mod py_value;
pub mod record_text;
pub mod relay_hub;
pub mod request;
pub mod row_queue;
pub mod sse;
pub mod tally;
pub mod translate;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("RELAY_ANTHROPIC", exchange::RELAY_ANTHROPIC)?;
    m.add("RELAY_OPENAI", exchange::RELAY_OPENAI)?;
    m.add("OPENAI_TO_ANTHROPIC", exchange::OPENAI_TO_ANTHROPIC)?;
    m.add("ANTHROPIC_TO_OPENAI", exchange::ANTHROPIC_TO_OPENAI)?;
    m.add_class::<request::RequestInfo>()?;
    m.add_class::<request::HeadTemplate>()?;
    m.add_class::<exchange::Exchange>()?;
    m.add_class::<protocol::ProtocolCore>()?;
    m.add_class::<ledger::SqliteLedgerWriter>()?;
    m.add_class::<accounting::RequestSink>()?;
    m.add_class::<row_queue::RowQueue>()?;
    m.add_class::<row_queue::LedgerBatch>()?;
    m.add_function(wrap_pyfunction!(ledger::sqlite_libversion_address, m)?)?;
    m.add_function(wrap_pyfunction!(ledger::sqlite_version, m)?)?;
    m.add_function(wrap_pyfunction!(ledger::ledger_batch, m)?)?;
    m.add_function(wrap_pyfunction!(request::inspect_request, m)?)?;
    m.add_function(wrap_pyfunction!(request::replace_model, m)?)?;
    m.add_function(wrap_pyfunction!(request::ask_for_usage, m)?)?;
    translate::py::register(m)?;
    front::py::register(m)?;
    relay_hub::register(m)?;
    Ok(())
}
