//! The request side as Python sees it: body inspection, model swap, upstream head templates.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::headers::HeadParts;
use crate::json_scan;

/// What routing needs from a request body.
#[pyclass(frozen, module = "sluicegate._native")]
pub struct RequestInfo {
    #[pyo3(get)]
    model: Option<String>,
    #[pyo3(get)]
    model_span: Option<(usize, usize)>,
    #[pyo3(get)]
    stream: bool,
    #[pyo3(get)]
    image_count: u32,
    #[pyo3(get)]
    has_tools: bool,
    /// Where `stream_options` and its `include_usage` are, for `ask_for_usage`.
    stream_options: json_scan::StreamOptions,
}

#[pymethods]
impl RequestInfo {
    /// Top-level `stream_options.include_usage` is true.
    #[getter]
    fn include_usage(&self) -> bool {
        self.stream_options.include_usage
    }

    fn __repr__(&self) -> String {
        let model = match &self.model {
            Some(m) => format!("{m:?}"),
            None => "None".to_owned(),
        };
        let span = match self.model_span {
            Some((a, b)) => format!("({a}, {b})"),
            None => "None".to_owned(),
        };
        let py_bool = |b: bool| if b { "True" } else { "False" };
        format!(
            "RequestInfo(model={model}, model_span={span}, stream={}, image_count={}, has_tools={}, include_usage={})",
            py_bool(self.stream),
            self.image_count,
            py_bool(self.has_tools),
            py_bool(self.stream_options.include_usage)
        )
    }
}

/// One validating pass over the body; raises ValueError when it is not a JSON object.
#[pyfunction]
pub fn inspect_request(py: Python<'_>, body: &[u8]) -> PyResult<RequestInfo> {
    // Multi-megabyte bodies take a millisecond or more: let other threads run meanwhile.
    let scanned = if body.len() > 256 * 1024 {
        py.detach(|| json_scan::inspect_request(body))
    } else {
        json_scan::inspect_request(body)
    };
    let info = scanned.map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(RequestInfo {
        model: info.model,
        model_span: info.model_span,
        stream: info.stream,
        image_count: info.image_count,
        has_tools: info.has_tools,
        stream_options: info.stream_options,
    })
}

/// The body (as `info` found it) asking for the final usage chunk of a stream, and with the
/// model swapped when `model` is given; every other byte unchanged.
#[pyfunction]
#[pyo3(signature = (body, info, model = None))]
pub fn ask_for_usage<'py>(
    py: Python<'py>,
    body: &[u8],
    info: &RequestInfo,
    model: Option<&str>,
) -> PyResult<Bound<'py, PyBytes>> {
    let facts = json_scan::RequestInfo {
        model_span: info.model_span,
        stream_options: info.stream_options,
        ..json_scan::RequestInfo::default()
    };
    let out = json_scan::with_include_usage(body, &facts, model).map_err(PyValueError::new_err)?;
    Ok(PyBytes::new(py, &out))
}

/// The body with `body[span]` replaced by `model` as a JSON string.
#[pyfunction]
pub fn replace_model<'py>(
    py: Python<'py>,
    body: &[u8],
    span: (usize, usize),
    model: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let (start, end) = span;
    if start > end || end > body.len() {
        return Err(PyValueError::new_err("span is outside the body"));
    }
    let lit = json_scan::json_string(model);
    let len = body.len() - (end - start) + lit.len();
    PyBytes::new_with(py, len, |buf| {
        let (head, rest) = buf.split_at_mut(start);
        head.copy_from_slice(&body[..start]);
        let (mid, tail) = rest.split_at_mut(lit.len());
        mid.copy_from_slice(&lit);
        tail.copy_from_slice(&body[end..]);
        Ok(())
    })
}

/// An HTTP/1.1 request head for one upstream target, built once per config snapshot.
#[pyclass(frozen, module = "sluicegate._native")]
pub struct HeadTemplate {
    parts: HeadParts,
}

#[pymethods]
impl HeadTemplate {
    #[new]
    #[pyo3(signature = (method, path, host, extra_headers, forward_client_headers = true))]
    fn new(
        method: &str,
        path: &str,
        host: &str,
        extra_headers: Vec<(String, String)>,
        forward_client_headers: bool,
    ) -> PyResult<Self> {
        let parts = HeadParts::new(method, path, host, &extra_headers, forward_client_headers)
            .map_err(|e| PyValueError::new_err(e.0))?;
        Ok(HeadTemplate { parts })
    }

    /// The request head for one request: client headers filtered, config headers, length.
    fn render<'py>(
        &self,
        py: Python<'py>,
        client_headers: &Bound<'py, PyAny>,
        content_length: u64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if !self.parts.forwards_client_headers() {
            return Ok(PyBytes::new(
                py,
                &self.parts.render(core::iter::empty(), content_length),
            ));
        }
        // Keep the str objects alive while their UTF-8 is borrowed.
        let mut objs: Vec<(Bound<'py, PyString>, Bound<'py, PyString>)> = Vec::with_capacity(32);
        let mut push = |item: Bound<'py, PyAny>| -> PyResult<()> {
            let pair = item.cast_into::<PyTuple>().map_err(|_| {
                PyValueError::new_err("client_headers must hold (name, value) tuples")
            })?;
            if pair.len() != 2 {
                return Err(PyValueError::new_err(
                    "client_headers must hold (name, value) tuples",
                ));
            }
            let name = pair
                .get_item(0)?
                .cast_into::<PyString>()
                .map_err(|_| not_str())?;
            let value = pair
                .get_item(1)?
                .cast_into::<PyString>()
                .map_err(|_| not_str())?;
            objs.push((name, value));
            Ok(())
        };
        if let Ok(list) = client_headers.cast::<PyList>() {
            for item in list.iter() {
                push(item)?;
            }
        } else {
            for item in client_headers.try_iter()? {
                push(item?)?;
            }
        }
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(objs.len());
        for (n, v) in &objs {
            pairs.push((n.to_str()?, v.to_str()?));
        }
        Ok(PyBytes::new(
            py,
            &self.parts.render(pairs.iter().copied(), content_length),
        ))
    }
}

fn not_str() -> PyErr {
    PyValueError::new_err("header names and values must be str")
}
