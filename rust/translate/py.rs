//! Python bindings of the translators: whole bodies per request, and a stream translator
//! object for callers that feed events themselves (tests, the mock provider).

use std::sync::Mutex;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{
    anthropic_error_to_openai, anthropic_request_to_openai, anthropic_response_to_openai,
    estimate_tokens, new_stream_translator, openai_error_to_anthropic, openai_request_to_anthropic,
    openai_response_to_anthropic, SseEvent, StreamTranslator, TranslateOptions, Translated,
};

type UsageTuple = (u64, u64, u64, u64);

fn usage_tuple(u: super::Usage) -> UsageTuple {
    (u.input, u.output, u.cache_creation, u.cache_read)
}

fn translated<'py>(
    py: Python<'py>,
    t: Translated,
) -> (Bound<'py, PyBytes>, UsageTuple, Option<String>) {
    (
        PyBytes::new(py, &t.body),
        usage_tuple(t.usage),
        t.stop_reason,
    )
}

/// An Anthropic Messages request body as an OpenAI Chat Completions body for `flavor`.
#[pyfunction]
#[pyo3(name = "anthropic_request_to_openai", signature = (body, model, flavor, include_usage, max_tokens_cap=None))]
fn py_anthropic_request_to_openai<'py>(
    py: Python<'py>,
    body: &[u8],
    model: &str,
    flavor: &str,
    include_usage: bool,
    max_tokens_cap: Option<u64>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut opts =
        TranslateOptions::from_parts(flavor, "", include_usage).map_err(PyValueError::new_err)?;
    opts.max_tokens_cap = max_tokens_cap;
    let out = anthropic_request_to_openai(body, model, &opts).map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &out))
}

/// An OpenAI Chat Completions request body as an Anthropic Messages body.
#[pyfunction]
#[pyo3(name = "openai_request_to_anthropic")]
fn py_openai_request_to_anthropic<'py>(
    py: Python<'py>,
    body: &[u8],
    model: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let out = openai_request_to_anthropic(body, model).map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &out))
}

/// An OpenAI `chat.completion` body as an Anthropic `message`, with usage and stop reason.
#[pyfunction]
#[pyo3(name = "openai_response_to_anthropic")]
fn py_openai_response_to_anthropic<'py>(
    py: Python<'py>,
    body: &[u8],
    model: &str,
) -> PyResult<(Bound<'py, PyBytes>, UsageTuple, Option<String>)> {
    let t = openai_response_to_anthropic(body, model).map_err(PyValueError::new_err)?;
    Ok(translated(py, t))
}

/// An Anthropic `message` body as an OpenAI `chat.completion`, with usage and stop reason.
#[pyfunction]
#[pyo3(name = "anthropic_response_to_openai")]
fn py_anthropic_response_to_openai<'py>(
    py: Python<'py>,
    body: &[u8],
    model: &str,
) -> PyResult<(Bound<'py, PyBytes>, UsageTuple, Option<String>)> {
    let t = anthropic_response_to_openai(body, model).map_err(PyValueError::new_err)?;
    Ok(translated(py, t))
}

/// An OpenAI-compatible server's error body in Anthropic's error shape.
#[pyfunction]
#[pyo3(name = "openai_error_to_anthropic")]
fn py_openai_error_to_anthropic<'py>(
    py: Python<'py>,
    status: u16,
    body: &[u8],
) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &openai_error_to_anthropic(status, body))
}

/// An Anthropic error body in OpenAI's error shape.
#[pyfunction]
#[pyo3(name = "anthropic_error_to_openai")]
fn py_anthropic_error_to_openai<'py>(
    py: Python<'py>,
    status: u16,
    body: &[u8],
) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &anthropic_error_to_openai(status, body))
}

/// A local estimate of a Messages request's input tokens.
#[pyfunction]
fn count_tokens_estimate(body: &[u8]) -> PyResult<u64> {
    estimate_tokens(body).map_err(PyValueError::new_err)
}

/// One streamed response's translator (mode 2: OpenAI chunks to Anthropic events; mode 3:
/// Anthropic events to OpenAI chunks).
#[pyclass(name = "StreamTranslator", module = "sluicegate._native")]
struct StreamTranslatorPy {
    inner: Mutex<Box<dyn StreamTranslator>>,
}

impl StreamTranslatorPy {
    fn with<R>(&self, f: impl FnOnce(&mut dyn StreamTranslator) -> R) -> PyResult<R> {
        let mut guard = self.inner.lock().map_err(|_| {
            PyRuntimeError::new_err("stream translator poisoned by an earlier panic")
        })?;
        Ok(f(guard.as_mut()))
    }
}

#[pymethods]
impl StreamTranslatorPy {
    #[new]
    fn new(mode: u8, model: &str, flavor: &str, include_usage: bool) -> PyResult<Self> {
        let opts = TranslateOptions::from_parts(flavor, model, include_usage)
            .map_err(PyValueError::new_err)?;
        let inner = new_stream_translator(mode, &opts).ok_or_else(|| {
            PyValueError::new_err(format!("mode {mode} does not translate (expected 2 or 3)"))
        })?;
        Ok(StreamTranslatorPy {
            inner: Mutex::new(inner),
        })
    }

    /// Translates one complete upstream event (its `event:` name, if any, and its data).
    #[pyo3(signature = (event, data))]
    fn feed_event<'py>(
        &self,
        py: Python<'py>,
        event: Option<&str>,
        data: &[u8],
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::new();
        self.with(|t| t.on_event(&SseEvent { event, data }, &mut out))?;
        Ok(PyBytes::new(py, &out))
    }

    /// Ends the stream: `complete` is false when the upstream body was cut short.
    fn finish<'py>(&self, py: Python<'py>, complete: bool) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::new();
        self.with(|t| t.finish(complete, &mut out))?;
        Ok(PyBytes::new(py, &out))
    }

    /// (input, output, cache_creation, cache_read) so far; `input` excludes cached tokens.
    #[getter]
    fn usage(&self) -> PyResult<UsageTuple> {
        self.with(|t| usage_tuple(t.usage()))
    }

    /// The stop reason in the client's vocabulary, once known.
    #[getter]
    fn stop_reason(&self) -> PyResult<Option<String>> {
        self.with(|t| t.stop_reason().map(str::to_owned))
    }
}

/// Adds the translation functions and `StreamTranslator` to the `_native` module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_anthropic_request_to_openai, m)?)?;
    m.add_function(wrap_pyfunction!(py_openai_request_to_anthropic, m)?)?;
    m.add_function(wrap_pyfunction!(py_openai_response_to_anthropic, m)?)?;
    m.add_function(wrap_pyfunction!(py_anthropic_response_to_openai, m)?)?;
    m.add_function(wrap_pyfunction!(py_openai_error_to_anthropic, m)?)?;
    m.add_function(wrap_pyfunction!(py_anthropic_error_to_openai, m)?)?;
    m.add_function(wrap_pyfunction!(count_tokens_estimate, m)?)?;
    m.add_class::<StreamTranslatorPy>()?;
    Ok(())
}
