//! The front's PyO3 face: the connection's protocol core and the request the app is handed.
//!
//! `python/sluicegate/front/connection.py` subclasses `FrontCore`: uvloop calls its
//! `data_received` directly, which parses requests here and hands each complete one to
//! Python's `_dispatch` as a `Request`. The app gets that one object as both RSGI scope and
//! protocol (`path`, `headers`, `await proto()`, `response_bytes`, `response_stream`, ...), and
//! a stream's `send_bytes` writes the chunk to the transport on the loop thread, at once.
use std::time::Instant;

use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyStopAsyncIteration, PyStopIteration};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use pyo3::PyTraverseError;

use super::parse::{parse_head, ChunkedBody, Framing, Refusal, RequestHead};
use super::response::{chunk_size_line, push_chunk, write_head, BodyFraming, DateCache};

pyo3::create_exception!(
    sluicegate._native,
    ClientClosed,
    pyo3::exceptions::PyConnectionError,
    "The client closed the connection (or its side of it) before the body or the answer was complete."
);

/// Bytes queued behind a request in progress (pipelining) before the front stops reading.
const PIPELINE_LIMIT: usize = 256 * 1024;
/// How long a refused request's connection reads and drops what its client still sends.
const LINGER_S: f64 = 2.0;

/// An awaitable whose value is already known: the request body, or (one per connection, its
/// value None) what `send_bytes` returns, there being nothing to wait for.
#[pyclass(module = "sluicegate._native")]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<()> {
        let value = self.value.take().unwrap_or_else(|| py.None());
        Err(PyStopIteration::new_err((value,)))
    }
}

/// `async for chunk in proto`: the body, buffered already, as one chunk.
#[pyclass(module = "sluicegate._native")]
pub struct BodyChunks {
    body: Option<Py<PyBytes>>,
}

#[pymethods]
impl BodyChunks {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__(&mut self, py: Python<'_>) -> PyResult<Ready> {
        match self.body.take() {
            Some(b) if !b.bind(py).as_bytes().is_empty() => Ok(Ready {
                value: Some(b.into_any()),
            }),
            _ => Err(PyStopAsyncIteration::new_err(())),
        }
    }
}

/// The request's headers, names lower-cased, in the order sent (RSGI's `scope.headers`).
#[pyclass(module = "sluicegate._native", frozen)]
pub struct Headers {
    items: Vec<(String, String)>,
}

impl Headers {
    fn find<'a>(&'a self, key: &str) -> Option<&'a str> {
        if key.bytes().any(|b| b.is_ascii_uppercase()) {
            let key = key.to_ascii_lowercase();
            return self
                .items
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str());
        }
        self.items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[pymethods]
impl Headers {
    #[pyo3(signature = (key, default = None))]
    fn get(&self, py: Python<'_>, key: &str, default: Option<Py<PyAny>>) -> Py<PyAny> {
        match self.find(key) {
            Some(v) => PyString::new(py, v).into_any().unbind(),
            None => default.unwrap_or_else(|| py.None()),
        }
    }

    fn get_all(&self, key: &str) -> Vec<String> {
        let key = key.to_ascii_lowercase();
        self.items
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn items(&self) -> Vec<(String, String)> {
        self.items.clone()
    }

    fn keys(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.items.len());
        for (k, _) in &self.items {
            if !out.contains(k) {
                out.push(k.clone());
            }
        }
        out
    }

    fn values(&self) -> Vec<String> {
        self.items.iter().map(|(_, v)| v.clone()).collect()
    }

    fn __contains__(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    fn __getitem__(&self, key: &str) -> PyResult<String> {
        self.find(key)
            .map(str::to_owned)
            .ok_or_else(|| PyKeyError::new_err(key.to_owned()))
    }

    fn __len__(&self) -> usize {
        self.items.len()
    }
}

struct Pending {
    head: RequestHead,
    body: Vec<u8>,
    /// Bytes of a `Content-Length` body still to come.
    left: u64,
    chunked: Option<ChunkedBody>,
}

enum Step {
    Wait,
    Again,
    Dispatch(Box<Pending>),
}

enum Phase {
    /// Between requests: reading a head.
    Idle,
    /// Head read, body arriving.
    Body(Box<Pending>),
    /// Handed to the app; bytes that arrive wait in `buf`.
    Busy,
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    NotStarted,
    Streaming { chunked: bool },
    Done,
}

#[pyclass(module = "sluicegate._native", subclass)]
pub struct FrontCore {
    transport: Option<Py<PyAny>>,
    /// `transport.write`, looked up once: it runs for every chunk of a stream.
    writer: Option<Py<PyAny>>,
    buf: Vec<u8>,
    phase: Phase,
    answer: Answer,
    /// Of the request in hand.
    http10: bool,
    keep_alive: bool,
    head_request: bool,
    /// Which request of this connection the app holds; a stale `Request` cannot answer.
    seq: u64,
    max_body: usize,
    draining: bool,
    paused: bool,
    last_active: Instant,
    dates: DateCache,
    /// The `Ready` every `send_bytes` returns.
    sent: Option<Py<Ready>>,
    client: String,
    server: String,
    /// The socket's descriptor (-1 when unknown): the native relay writes to it directly.
    fd: i32,
    /// A refusal answered inside a borrow, for Python's `_refused` once the borrow ends.
    refused: Option<(u16, String)>,
}

impl FrontCore {
    fn write(&self, py: Python<'_>, bytes: &[u8]) -> PyResult<()> {
        self.write_object(&PyBytes::new(py, bytes))
    }

    fn write_object(&self, bytes: &Bound<'_, PyBytes>) -> PyResult<()> {
        if let Some(w) = &self.writer {
            w.bind(bytes.py()).call1((bytes,))?;
        }
        Ok(())
    }

    /// The native relay wrote this chunked answer's last chunk itself (with its last event):
    /// the answer is complete, and `_finish` must not write another.
    pub(crate) fn body_ended(&mut self, seq: u64) {
        if seq == self.seq && self.answer == (Answer::Streaming { chunked: true }) {
            self.answer = Answer::Done;
        }
    }

    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(t) = self.end() {
            t.bind(py).call_method0(intern!(py, "close"))?;
        }
        Ok(())
    }

    /// The connection is done with: no more requests read from it; its transport, to end.
    fn end(&mut self) -> Option<Py<PyAny>> {
        self.phase = Phase::Closed;
        self.buf = Vec::new();
        self.writer = None;
        self.transport.take()
    }

    /// `_expire`'s work: an idle keep-alive connection closes; a half-sent request gets 408.
    fn expire(&mut self, py: Python<'_>) -> PyResult<()> {
        match &self.phase {
            Phase::Idle if self.buf.is_empty() => self.close(py),
            Phase::Idle | Phase::Body(_) => {
                let r = Refusal {
                    status: 408,
                    message: "the request did not arrive in time".to_owned(),
                };
                let openai = match &self.phase {
                    Phase::Body(p) => p.head.path.starts_with("/v1/chat/"),
                    _ => self.buf.starts_with(b"POST /v1/chat/"),
                };
                self.refuse(py, &r, openai)
            }
            Phase::Busy | Phase::Closed => Ok(()),
        }
    }

    /// Answer a request the front could not read, and close.
    fn refuse(&mut self, py: Python<'_>, r: &Refusal, openai: bool) -> PyResult<()> {
        let message = serde_json::to_string(&r.message).unwrap_or_else(|_| "\"\"".to_owned());
        let body = if openai {
            format!(
                "{{\"error\":{{\"message\":{message},\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}}}"
            )
        } else {
            let kind = if r.status == 413 || r.status == 431 {
                "request_too_large"
            } else {
                "invalid_request_error"
            };
            format!(
                "{{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":{message}}}}}"
            )
        };
        // The head may not have been read: an HTTP/1.1 answer.
        self.json_answer(py, false, r.status, body.as_bytes())?;
        self.refused = Some((r.status, r.message.clone()));
        self.linger(py)
    }

    /// After a refusal: the answer, then a FIN; what the client still sends (the rest of a
    /// head or body the front would not read) is dropped until it closes, or for `LINGER_S`.
    /// Closed at once, the socket would answer that data with a reset, and a client's kernel
    /// that takes the reset first drops the answer unread.
    fn linger(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(t) = self.end() else {
            return Ok(());
        };
        let t = t.bind(py);
        if !t.call_method0(intern!(py, "can_write_eof"))?.is_truthy()? {
            t.call_method0(intern!(py, "close"))?;
            return Ok(());
        }
        t.call_method0(intern!(py, "write_eof"))?;
        let running = py.import("asyncio")?.call_method0("get_running_loop")?;
        running.call_method1("call_later", (LINGER_S, t.getattr(intern!(py, "close"))?))?;
        Ok(())
    }

    /// Tell Python of a refusal (its log line), outside any borrow.
    fn report_refusal(slf: &Bound<'_, Self>) -> PyResult<()> {
        let refused = {
            let mut this = slf.borrow_mut();
            this.refused
                .take()
                .map(|(status, message)| (status, message, this.client.clone()))
        };
        if let Some(args) = refused {
            slf.call_method1(intern!(slf.py(), "_refused"), args)?;
        }
        Ok(())
    }

    /// An answer of the front's own (a refusal, or a handler that gave none): JSON, closing.
    fn json_answer(
        &mut self,
        py: Python<'_>,
        http10: bool,
        status: u16,
        body: &[u8],
    ) -> PyResult<()> {
        let mut out = Vec::with_capacity(256 + body.len());
        write_head(
            &mut out,
            http10,
            status,
            [("content-type", "application/json")],
            BodyFraming::Length(body.len()),
            false,
            self.dates.now(),
        );
        out.extend_from_slice(body);
        self.write(py, &out)
    }

    fn answer_head(
        &mut self,
        py: Python<'_>,
        seq: u64,
        status: u16,
        headers: &Bound<'_, PyAny>,
        framing: BodyFraming,
        body: &[u8],
    ) -> PyResult<()> {
        if seq != self.seq || !matches!(self.phase, Phase::Busy) {
            return Err(PyRuntimeError::new_err("this request has already ended"));
        }
        if self.answer != Answer::NotStarted {
            return Err(PyRuntimeError::new_err("the response has already started"));
        }
        let mut pairs: Vec<(String, String)> = Vec::new();
        for item in headers.try_iter()? {
            pairs.push(item?.extract()?);
        }
        let keep = self.keep_alive && !self.draining && framing != BodyFraming::Close;
        self.keep_alive = keep;
        let mut out = Vec::with_capacity(256 + body.len());
        write_head(
            &mut out,
            self.http10,
            status,
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            framing,
            keep,
            self.dates.now(),
        );
        if !self.head_request {
            out.extend_from_slice(body);
        }
        self.answer = match framing {
            BodyFraming::Length(_) => Answer::Done,
            BodyFraming::Chunked => Answer::Streaming { chunked: true },
            BodyFraming::Close => Answer::Streaming { chunked: false },
        };
        self.write(py, &out)
    }

    fn dispatch(slf: &Bound<'_, Self>, p: Pending, truncated: bool) -> PyResult<()> {
        let py = slf.py();
        let req = {
            let mut this = slf.borrow_mut();
            this.phase = Phase::Busy;
            this.answer = Answer::NotStarted;
            this.http10 = p.head.http10;
            this.head_request = p.head.method == "HEAD";
            // A body left unread (over the limit, or cut short) ends the connection.
            let complete =
                !truncated && p.left == 0 && p.chunked.as_ref().is_none_or(ChunkedBody::done);
            this.keep_alive = p.head.keep_alive && complete;
            this.seq += 1;
            Request {
                conn: slf.clone().unbind(),
                seq: this.seq,
                method: p.head.method,
                path: p.head.path,
                query: p.head.query,
                authority: p.head.authority,
                http10: p.head.http10,
                headers: Py::new(
                    py,
                    Headers {
                        items: p.head.headers,
                    },
                )?,
                body: Some(PyBytes::new(py, &p.body).unbind()),
                truncated,
                client: this.client.clone(),
                server: this.server.clone(),
            }
        };
        slf.call_method1(intern!(py, "_dispatch"), (req,))?;
        Ok(())
    }

    /// Read what `buf` holds as far as the current request allows.
    fn advance(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        loop {
            let (ready, refused) = {
                let mut this = slf.borrow_mut();
                let ready = Self::step(&mut this, py)?;
                (ready, this.refused.is_some())
            };
            match ready {
                Step::Wait if refused => return Self::report_refusal(slf),
                Step::Wait => return Ok(()),
                Step::Again => {}
                Step::Dispatch(p) => return Self::dispatch(slf, *p, false),
            }
        }
    }

    /// One step of `advance`, inside the borrow: what to do next.
    fn step(this: &mut FrontCore, py: Python<'_>) -> PyResult<Step> {
        match &mut this.phase {
            Phase::Closed => Ok(Step::Wait),
            Phase::Busy => {
                if this.buf.len() > PIPELINE_LIMIT && !this.paused {
                    this.paused = true;
                    if let Some(t) = &this.transport {
                        t.bind(py).call_method0(intern!(py, "pause_reading"))?;
                    }
                }
                Ok(Step::Wait)
            }
            Phase::Idle => {
                if this.buf.is_empty() {
                    return Ok(Step::Wait);
                }
                let (head, used) = match parse_head(&this.buf) {
                    Ok(None) => return Ok(Step::Wait),
                    Ok(Some(found)) => found,
                    Err(r) => {
                        let openai = this.buf.starts_with(b"POST /v1/chat/");
                        this.refuse(py, &r, openai)?;
                        return Ok(Step::Wait);
                    }
                };
                this.buf.drain(..used);
                let (left, chunked) = match head.framing {
                    Framing::None => (0, None),
                    Framing::Length(n) => (n, None),
                    Framing::Chunked => (0, Some(ChunkedBody::default())),
                };
                if left > this.max_body as u64 {
                    // The app refuses it by its declared length, in its API's shape.
                    let p = Pending {
                        head,
                        body: Vec::new(),
                        left,
                        chunked: None,
                    };
                    this.buf = Vec::new();
                    return Ok(Step::Dispatch(Box::new(p)));
                }
                if head.expect_continue {
                    this.write(py, b"HTTP/1.1 100 Continue\r\n\r\n")?;
                }
                // Grown as bytes come: a declared length is not yet a body.
                let capacity = usize::try_from(left).unwrap_or(0).min(1 << 20);
                this.phase = Phase::Body(Box::new(Pending {
                    head,
                    body: Vec::with_capacity(capacity),
                    left,
                    chunked,
                }));
                Ok(Step::Again)
            }
            Phase::Body(p) => {
                let over = if let Some(c) = p.chunked.as_mut() {
                    match c.feed(&this.buf, &mut p.body) {
                        Ok(n) => {
                            this.buf.drain(..n);
                        }
                        Err(r) => {
                            let openai = p.head.path.starts_with("/v1/chat/");
                            this.refuse(py, &r, openai)?;
                            return Ok(Step::Wait);
                        }
                    }
                    if !c.done() && p.body.len() <= this.max_body {
                        return Ok(Step::Wait);
                    }
                    !c.done()
                } else {
                    let take = this
                        .buf
                        .len()
                        .min(usize::try_from(p.left).unwrap_or(usize::MAX));
                    p.body.extend_from_slice(&this.buf[..take]);
                    this.buf.drain(..take);
                    p.left -= take as u64;
                    if p.left > 0 {
                        return Ok(Step::Wait);
                    }
                    false
                };
                let Phase::Body(p) = std::mem::replace(&mut this.phase, Phase::Busy) else {
                    return Ok(Step::Wait);
                };
                if over {
                    this.buf = Vec::new();
                }
                Ok(Step::Dispatch(p))
            }
        }
    }
}

#[pymethods]
impl FrontCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyAny>, _kwargs: Option<&Bound<'_, PyAny>>) -> Self {
        FrontCore {
            transport: None,
            writer: None,
            buf: Vec::new(),
            phase: Phase::Idle,
            answer: Answer::Done,
            http10: false,
            keep_alive: true,
            head_request: false,
            seq: 0,
            max_body: 32 << 20,
            draining: false,
            paused: false,
            last_active: Instant::now(),
            dates: DateCache::default(),
            sent: None,
            client: String::new(),
            server: String::new(),
            fd: -1,
            refused: None,
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.transport)?;
        visit.call(&self.writer)?;
        visit.call(&self.sent)?;
        Ok(())
    }

    fn __clear__(&mut self) {
        self.transport = None;
        self.writer = None;
        self.sent = None;
    }

    /// A new connection: its transport, the two ends' addresses, the body size limit.
    fn _attach(
        &mut self,
        py: Python<'_>,
        transport: Py<PyAny>,
        client: String,
        server: String,
        max_body: usize,
        fd: i32,
    ) -> PyResult<()> {
        self.writer = Some(transport.bind(py).getattr(intern!(py, "write"))?.unbind());
        self.transport = Some(transport);
        self.client = client;
        self.server = server;
        self.max_body = max_body;
        self.fd = fd;
        self.sent = Some(Py::new(py, Ready { value: None })?);
        self.last_active = Instant::now();
        Ok(())
    }

    fn data_received(slf: &Bound<'_, Self>, data: &Bound<'_, PyBytes>) -> PyResult<()> {
        {
            let mut this = slf.borrow_mut();
            if this.transport.is_none() {
                return Ok(());
            }
            this.last_active = Instant::now();
            this.buf.extend_from_slice(data.as_bytes());
        }
        Self::advance(slf)
    }

    /// The client shut its side. Returns whether to keep the transport open for the answer.
    fn _eof(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let mut this = slf.borrow_mut();
        match std::mem::replace(&mut this.phase, Phase::Busy) {
            Phase::Body(p) => {
                drop(this);
                // The app answers a body cut short (400, in its API's shape).
                Self::dispatch(slf, *p, true)?;
                Ok(true)
            }
            Phase::Busy => {
                // As hyper does under Granian: a client that shuts its side with its request
                // in hand has left, and the upstream request is ended now, not at the next
                // failed write (Claude Code's Esc closes the connection).
                this.keep_alive = false;
                Ok(false)
            }
            Phase::Idle | Phase::Closed => {
                this.close(py)?;
                Ok(false)
            }
        }
    }

    /// The transport is gone.
    fn _lost(&mut self) {
        self.transport = None;
        self.writer = None;
        self.phase = Phase::Closed;
        self.buf = Vec::new();
    }

    /// The app's handler returned (or failed): end its answer, then read the next request.
    fn _finish(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut this = slf.borrow_mut();
            if !matches!(this.phase, Phase::Busy) {
                return Ok(());
            }
            match this.answer {
                Answer::NotStarted => {
                    let body = b"{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"internal gateway error\"}}";
                    let http10 = this.http10;
                    this.json_answer(py, http10, 500, body)?;
                    this.keep_alive = false;
                }
                Answer::Streaming { chunked: true } => {
                    if !this.head_request {
                        this.write(py, b"0\r\n\r\n")?;
                    }
                }
                Answer::Streaming { chunked: false } => this.keep_alive = false,
                Answer::Done => {}
            }
            this.answer = Answer::Done;
            if !this.keep_alive || this.draining || this.transport.is_none() {
                return this.close(py);
            }
            this.phase = Phase::Idle;
            this.last_active = Instant::now();
            if this.paused {
                this.paused = false;
                if let Some(t) = &this.transport {
                    t.bind(py).call_method0(intern!(py, "resume_reading"))?;
                }
            }
        }
        Self::advance(slf)
    }

    /// Stop taking requests: an idle connection closes now, a busy one after its answer.
    fn _drain(&mut self, py: Python<'_>) -> PyResult<()> {
        self.draining = true;
        if matches!(self.phase, Phase::Idle) && self.buf.is_empty() {
            self.close(py)?;
        }
        Ok(())
    }

    /// Called by the server's sweep when nothing arrived for `idle_s()`: an idle keep-alive
    /// connection closes; a half-sent head or body is answered 408.
    fn _expire(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.borrow_mut().expire(slf.py())?;
        Self::report_refusal(slf)
    }

    /// Whether the app holds a request of this connection.
    #[getter]
    fn busy(&self) -> bool {
        matches!(self.phase, Phase::Busy)
    }

    /// Whether a request (head or body) is partly read.
    #[getter]
    fn reading(&self) -> bool {
        matches!(self.phase, Phase::Body(_))
            || (matches!(self.phase, Phase::Idle) && !self.buf.is_empty())
    }

    /// Seconds since bytes last arrived or an answer ended.
    fn idle_s(&self) -> f64 {
        self.last_active.elapsed().as_secs_f64()
    }
}

/// One request: the RSGI scope and protocol in one object.
#[pyclass(module = "sluicegate._native")]
pub struct Request {
    conn: Py<FrontCore>,
    seq: u64,
    method: String,
    path: String,
    query: String,
    authority: Option<String>,
    http10: bool,
    headers: Py<Headers>,
    body: Option<Py<PyBytes>>,
    truncated: bool,
    client: String,
    server: String,
}

impl Request {
    fn answer(
        &self,
        py: Python<'_>,
        status: u16,
        headers: &Bound<'_, PyAny>,
        framing: BodyFraming,
        body: &[u8],
    ) -> PyResult<()> {
        self.conn
            .bind(py)
            .borrow_mut()
            .answer_head(py, self.seq, status, headers, framing, body)
    }
}

#[pymethods]
impl Request {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.conn)?;
        Ok(())
    }

    #[getter]
    fn method(&self) -> &str {
        &self.method
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    #[getter]
    fn query_string(&self) -> &str {
        &self.query
    }

    #[getter]
    fn headers(&self, py: Python<'_>) -> Py<Headers> {
        self.headers.clone_ref(py)
    }

    #[getter]
    fn http_version(&self) -> &str {
        if self.http10 {
            "1"
        } else {
            "1.1"
        }
    }

    #[getter]
    fn scheme(&self) -> &str {
        "http"
    }

    #[getter]
    fn authority(&self) -> Option<&str> {
        self.authority.as_deref()
    }

    #[getter]
    fn client(&self) -> &str {
        &self.client
    }

    #[getter]
    fn server(&self) -> &str {
        &self.server
    }

    /// `await proto()`: the whole body (the front reads it before the app runs).
    fn __call__(&mut self, py: Python<'_>) -> PyResult<Ready> {
        if self.truncated {
            return Err(ClientClosed::new_err(
                "the request body ended before the length its Content-Length header gave",
            ));
        }
        Ok(Ready {
            value: Some(
                self.body
                    .take()
                    .map_or_else(|| PyBytes::new(py, b"").into_any().unbind(), Py::into_any),
            ),
        })
    }

    fn __aiter__(&mut self) -> PyResult<BodyChunks> {
        if self.truncated {
            return Err(ClientClosed::new_err(
                "the request body ended before it was complete",
            ));
        }
        Ok(BodyChunks {
            body: self.body.take(),
        })
    }

    fn response_empty(
        &self,
        py: Python<'_>,
        status: u16,
        headers: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.answer(py, status, headers, BodyFraming::Length(0), b"")
    }

    fn response_bytes(
        &self,
        py: Python<'_>,
        status: u16,
        headers: &Bound<'_, PyAny>,
        body: &Bound<'_, PyBytes>,
    ) -> PyResult<()> {
        let body = body.as_bytes();
        self.answer(py, status, headers, BodyFraming::Length(body.len()), body)
    }

    fn response_str(
        &self,
        py: Python<'_>,
        status: u16,
        headers: &Bound<'_, PyAny>,
        body: &str,
    ) -> PyResult<()> {
        self.answer(
            py,
            status,
            headers,
            BodyFraming::Length(body.len()),
            body.as_bytes(),
        )
    }

    /// Start a streaming answer. `first`, when given, is the stream's first piece, written in
    /// the same write as the head (one syscall and one client wake-up fewer per stream than
    /// the head and then `send_bytes`); it raises ClientClosed when the client is gone.
    #[pyo3(signature = (status, headers, first=None))]
    fn response_stream(
        &self,
        py: Python<'_>,
        status: u16,
        headers: &Bound<'_, PyAny>,
        first: Option<&Bound<'_, PyBytes>>,
    ) -> PyResult<Stream> {
        let framing = if self.http10 {
            BodyFraming::Close
        } else {
            BodyFraming::Chunked
        };
        let first = first.map(|b| b.as_bytes()).unwrap_or_default();
        let mut body = Vec::new();
        match framing {
            BodyFraming::Chunked => push_chunk(&mut body, first),
            _ => body.extend_from_slice(first),
        }
        self.answer(py, status, headers, framing, &body)?;
        if !first.is_empty() && self.conn.bind(py).borrow().writer.is_none() {
            return Err(ClientClosed::new_err("the client is gone"));
        }
        Ok(Stream {
            conn: self.conn.clone_ref(py),
            seq: self.seq,
            chunked: !self.http10,
        })
    }

    /// An awaitable that is done when the client is gone (Python's connection keeps it).
    fn client_disconnect(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .conn
            .bind(py)
            .call_method0(intern!(py, "_disconnect_waiter"))?
            .unbind())
    }
}

/// A streaming answer's sender (RSGI's stream transport).
#[pyclass(module = "sluicegate._native", frozen)]
pub struct Stream {
    conn: Py<FrontCore>,
    seq: u64,
    chunked: bool,
}

#[pymethods]
impl Stream {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.conn)?;
        Ok(())
    }

    /// Write `data` to the client now (uvloop writes to the socket at once when it can, and
    /// buffers the rest). Raises ClientClosed once the client is gone.
    fn send_bytes(&self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<Py<Ready>> {
        let this = self.conn.bind(py).borrow();
        let (Some(sent), Some(_)) = (this.sent.as_ref(), this.writer.as_ref()) else {
            return Err(ClientClosed::new_err("the client is gone"));
        };
        let sent = sent.clone_ref(py);
        if this.seq != self.seq || !matches!(this.answer, Answer::Streaming { .. }) {
            return Err(ClientClosed::new_err("this response has ended"));
        }
        let bytes = data.as_bytes();
        if bytes.is_empty() || this.head_request {
            return Ok(sent);
        }
        if !self.chunked {
            this.write_object(data)?;
            return Ok(sent);
        }
        // Size line, data and CRLF made straight into the one bytes object written.
        let mut line = [0; 18];
        let line = chunk_size_line(bytes.len(), &mut line);
        let chunk = PyBytes::new_with(py, line.len() + bytes.len() + 2, |out| {
            let (head, rest) = out.split_at_mut(line.len());
            let (body, tail) = rest.split_at_mut(bytes.len());
            head.copy_from_slice(line);
            body.copy_from_slice(bytes);
            tail.copy_from_slice(b"\r\n");
            Ok(())
        })?;
        this.write_object(&chunk)?;
        Ok(sent)
    }

    fn send_str(&self, py: Python<'_>, data: &str) -> PyResult<Py<Ready>> {
        self.send_bytes(py, &PyBytes::new(py, data.as_bytes()))
    }
}

/// What the native relay needs to write a stream's chunks to the client socket itself.
pub(crate) struct SpliceTarget {
    pub fd: i32,
    /// `transport.write`: for bytes the socket did not take by the end of the relay.
    pub writer: Py<PyAny>,
    pub chunked: bool,
    /// The connection and the answer's number, for `FrontCore::body_ended`.
    pub front: Py<FrontCore>,
    pub seq: u64,
}

impl Stream {
    /// The client socket, when this stream may be written to it directly: still the answer in
    /// progress, not a HEAD request, and nothing queued in the transport (a direct write would
    /// overtake it).
    pub(crate) fn splice_target(&self, py: Python<'_>) -> PyResult<Option<SpliceTarget>> {
        let (transport, target) = {
            let this = self.conn.bind(py).borrow();
            let (Some(transport), Some(writer)) = (this.transport.as_ref(), this.writer.as_ref())
            else {
                return Ok(None);
            };
            if this.seq != self.seq
                || this.head_request
                || this.fd < 0
                || !matches!(this.answer, Answer::Streaming { .. })
            {
                return Ok(None);
            }
            let target = SpliceTarget {
                fd: this.fd,
                writer: writer.clone_ref(py),
                chunked: self.chunked,
                front: self.conn.clone_ref(py),
                seq: self.seq,
            };
            (transport.clone_ref(py), target)
        };
        let queued: usize = transport
            .bind(py)
            .call_method0(intern!(py, "get_write_buffer_size"))?
            .extract()?;
        Ok((queued == 0).then_some(target))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FrontCore>()?;
    m.add_class::<Request>()?;
    m.add_class::<Headers>()?;
    m.add_class::<Stream>()?;
    m.add_class::<Ready>()?;
    m.add_class::<BodyChunks>()?;
    m.add("ClientClosed", m.py().get_type::<ClientClosed>())?;
    Ok(())
}
