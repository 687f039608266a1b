//! One upstream response: HTTP/1.1 parsing, SSE splitting, relay or translation, and tally.
//!
//! Python's asyncio protocol hands every received chunk to `Exchange.feed` and forwards what
//! comes back; everything per byte happens here. In relay modes the complete events go out
//! unchanged (and when a socket read holds exactly complete events, the very same `bytes`
//! object is returned, without a copy).

use std::sync::{LazyLock, Mutex, PoisonError};

use memchr::memmem;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::http1::{BodySink, Head, HttpError, ResponseParser};
use crate::sse::SseSplitter;
use crate::tally::Tally;
use crate::translate::{SseEvent, StreamTranslator};

pub const RELAY_ANTHROPIC: u8 = 0;
pub const RELAY_OPENAI: u8 = 1;
pub const OPENAI_TO_ANTHROPIC: u8 = 2;
pub const ANTHROPIC_TO_OPENAI: u8 = 3;

/// The `translator_options` dict, read once per exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TranslatorSettings {
    /// The OpenAI-compatible server kind: vllm, ollama, llamacpp, lmstudio, sglang, generic.
    pub flavor: String,
    /// The model name reported to the client.
    pub model: String,
    /// Ask for / send the final usage chunk of an OpenAI stream.
    pub include_usage: bool,
}

/// Builds the stream translator for a translation mode (`rust/translate/` owns translators).
pub fn new_translator(
    mode: u8,
    s: &TranslatorSettings,
) -> Result<Box<dyn StreamTranslator>, String> {
    let opts =
        crate::translate::TranslateOptions::from_parts(&s.flavor, &s.model, s.include_usage)?;
    crate::translate::new_stream_translator(mode, &opts)
        .ok_or_else(|| format!("mode {mode} does not translate"))
}

/// The upstream speaks Anthropic's format in these modes (OpenAI's otherwise).
fn upstream_is_anthropic(mode: u8) -> bool {
    mode == RELAY_ANTHROPIC || mode == ANTHROPIC_TO_OPENAI
}

// Built once: a `memmem::find` call builds its searcher each time, which costs more than the
// search on a short chunk.
static USAGE_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
static DELTA_KEY: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"delta\""));

/// The final usage chunk of an OpenAI stream (`choices: []` and a `usage` object), which
/// only a client that asked for it (`stream_options.include_usage`) should see. Probed by
/// bytes first: only a chunk that mentions `"usage"` is parsed (one per stream).
pub fn is_usage_only_chunk(data: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Chunk {
        choices: Option<Vec<serde::de::IgnoredAny>>,
        usage: Option<serde::de::IgnoredAny>,
    }
    if USAGE_KEY.find(data).is_none() {
        return false;
    }
    serde_json::from_slice::<Chunk>(data)
        .is_ok_and(|c| c.usage.is_some() && c.choices.is_none_or(|ch| ch.is_empty()))
}

/// An OpenAI chunk with a non-empty `delta` (generated text, reasoning or a tool-call piece;
/// also the first chunk, with the role): the unit of the output estimate for servers that
/// report no usage. One byte probe per chunk, no parse.
pub fn is_content_chunk(data: &[u8]) -> bool {
    let ws = |c: Option<&u8>| matches!(c, Some(b' ' | b'\t' | b'\r' | b'\n'));
    let Some(off) = DELTA_KEY.find(data) else {
        return false;
    };
    let mut i = off + b"\"delta\"".len();
    for expect in [b':', b'{'] {
        while ws(data.get(i)) {
            i += 1;
        }
        if data.get(i) != Some(&expect) {
            return false;
        }
        i += 1;
    }
    while ws(data.get(i)) {
        i += 1;
    }
    data.get(i).is_some_and(|&c| c != b'}')
}

/// Where body bytes go once the head is known.
struct Body {
    mode: u8,
    /// A 2xx `text/event-stream` response: split and relay (or translate) as it arrives.
    stream: bool,
    splitter: SseSplitter,
    /// Bytes for the client from the current call.
    out: Vec<u8>,
    /// Raw event bytes in translation modes, where they are not forwarded.
    scratch: Vec<u8>,
    /// A whole non-stream body.
    buffered: Vec<u8>,
    tally: Tally,
    event_count: u64,
    /// OpenAI-format upstream chunks with a non-empty delta (for the usage estimate).
    content_chunks: u64,
    /// Leave the usage-only chunk out of what the client gets (it did not ask for it; the
    /// gateway did, for the ledger).
    drop_usage_chunk: bool,
    // A `Mutex` only to make the (Send, not Sync) translator shareable with Python; it is
    // always reached through `&mut`, so it is never locked.
    translator: Option<Mutex<Box<dyn StreamTranslator>>>,
    finished: bool,
}

impl BodySink for Body {
    fn head(&mut self, head: &Head) {
        self.stream = (200..300).contains(&head.status) && head.content_type == "text/event-stream";
    }

    fn body(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        if !self.stream {
            self.buffered.extend_from_slice(bytes);
            return Ok(());
        }
        let anthropic = upstream_is_anthropic(self.mode);
        let Body {
            splitter,
            out,
            scratch,
            tally,
            event_count,
            content_chunks,
            drop_usage_chunk,
            translator,
            ..
        } = self;
        let drop_usage = *drop_usage_chunk;
        let result = match translator {
            None => splitter.feed_filtered(bytes, out, |ev| {
                *event_count += 1;
                if anthropic {
                    tally.anthropic_event(ev);
                    return true;
                }
                tally.openai_event(ev);
                if is_content_chunk(ev.data) {
                    *content_chunks += 1;
                }
                !(drop_usage && is_usage_only_chunk(ev.data))
            }),
            Some(t) => {
                let t = t.get_mut().unwrap_or_else(PoisonError::into_inner);
                let r = splitter.feed(bytes, scratch, |ev: &SseEvent<'_>| {
                    *event_count += 1;
                    t.on_event(ev, out);
                    if anthropic {
                        tally.anthropic_event(ev);
                    } else if t.last_was_templated() {
                        // A delta with a text and no usage: what the searches below would find.
                        *content_chunks += 1;
                    } else {
                        tally.openai_translated_event(ev);
                        if is_content_chunk(ev.data) {
                            *content_chunks += 1;
                        }
                    }
                });
                scratch.clear();
                r
            }
        };
        result.map_err(|_| {
            HttpError(format!(
                "an SSE event is larger than {} MiB",
                crate::sse::MAX_PENDING >> 20
            ))
        })
    }
}

impl Body {
    /// Lets a translator close the client's stream once, and takes its view of the usage.
    fn finish(&mut self, complete: bool) {
        if !self.stream || self.finished {
            return;
        }
        if let Some(t) = &mut self.translator {
            let t = t.get_mut().unwrap_or_else(PoisonError::into_inner);
            t.finish(complete, &mut self.out);
            self.finished = true;
        }
    }

    fn sync_translator(&mut self) {
        if let (true, Some(t)) = (self.stream, &mut self.translator) {
            let t = t.get_mut().unwrap_or_else(PoisonError::into_inner);
            self.tally.usage = t.usage();
            self.tally.error_event |= t.failed();
            if t.stop_reason() != self.tally.stop_reason.as_deref() {
                self.tally.stop_reason = t.stop_reason().map(str::to_owned);
            }
        }
    }
}

/// The plain-Rust exchange; `Exchange` is its Python face.
pub struct ExchangeCore {
    parser: ResponseParser,
    body: Body,
    body_tallied: bool,
}

impl ExchangeCore {
    /// As `new`, for a relay that leaves the usage-only chunk out of the client's stream.
    pub fn dropping_usage_chunk(mode: u8) -> Self {
        let mut ex = ExchangeCore::new(mode, None);
        ex.body.drop_usage_chunk = true;
        ex
    }

    pub fn new(mode: u8, translator: Option<Box<dyn StreamTranslator>>) -> Self {
        ExchangeCore {
            parser: ResponseParser::new(),
            body: Body {
                mode,
                stream: false,
                splitter: SseSplitter::new(),
                out: Vec::new(),
                scratch: Vec::new(),
                buffered: Vec::new(),
                tally: Tally::default(),
                event_count: 0,
                content_chunks: 0,
                drop_usage_chunk: false,
                translator: translator.map(Mutex::new),
                finished: false,
            },
            body_tallied: false,
        }
    }

    /// Parses more response bytes; afterwards `out()` holds the bytes for the client.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), HttpError> {
        self.body.out.clear();
        self.parser.feed(data, &mut self.body)?;
        if self.parser.done() {
            self.body.finish(true);
        }
        if self.body.translator.is_some() {
            self.body.sync_translator();
        }
        Ok(())
    }

    /// The connection closed; afterwards `out()` holds any final bytes for the client.
    pub fn eof(&mut self) {
        self.body.out.clear();
        self.parser.eof();
        let complete = self.parser.done();
        self.body.finish(complete);
        if self.body.translator.is_some() {
            self.body.sync_translator();
        }
    }

    /// True when the next `feed(data)` passes `data` through unchanged if it holds exactly
    /// complete events.
    pub fn passthrough_candidate(&self, len: usize) -> bool {
        self.body.stream
            && self.body.translator.is_none()
            && self.body.splitter.is_clear()
            && self.parser.body_is_raw(len)
    }

    pub fn out(&self) -> &[u8] {
        &self.body.out
    }

    pub fn head(&self) -> Option<&Head> {
        self.parser.head()
    }

    pub fn is_event_stream(&self) -> bool {
        self.body.stream
    }

    pub fn done(&self) -> bool {
        self.parser.done()
    }

    pub fn truncated(&self) -> bool {
        self.parser.truncated()
    }

    pub fn keep_alive(&self) -> bool {
        self.parser.keep_alive()
    }

    pub fn tally(&self) -> &Tally {
        &self.body.tally
    }

    pub fn event_count(&self) -> u64 {
        self.body.event_count
    }

    /// An OpenAI-format stream that reported no usage at all (a server that does not send the
    /// usage chunk): `usage()` is then an estimate of the output, one token per chunk with a
    /// non-empty delta (vLLM, llama.cpp, SGLang and Ollama stream about one token per chunk).
    pub fn usage_estimated(&self) -> bool {
        let b = &self.body;
        b.stream
            && !upstream_is_anthropic(b.mode)
            && b.content_chunks > 0
            && b.tally.usage == crate::translate::Usage::default()
    }

    /// Token usage as reported by the upstream, or the output estimate (see `usage_estimated`).
    pub fn usage(&self) -> crate::translate::Usage {
        if self.usage_estimated() {
            return crate::translate::Usage {
                output: self.body.content_chunks,
                ..crate::translate::Usage::default()
            };
        }
        self.body.tally.usage
    }

    /// The whole body of a non-stream response, tallied on first call.
    pub fn take_body(&mut self) -> Vec<u8> {
        let body = core::mem::take(&mut self.body.buffered);
        if !self.body_tallied && !self.body.stream && self.parser.done() {
            self.body_tallied = true;
            if upstream_is_anthropic(self.body.mode) {
                self.body.tally.anthropic_body(&body);
            } else {
                self.body.tally.openai_body(&body);
            }
        }
        body
    }
}

/// Reads the relay modes' options (`drop_usage_chunk`); unknown keys are refused.
fn relay_drops_usage_chunk(mode: u8, options: Option<&Bound<'_, PyDict>>) -> PyResult<bool> {
    let mut drop = false;
    let Some(d) = options else {
        return Ok(false);
    };
    for (k, v) in d.iter() {
        let key = k
            .cast::<PyString>()
            .map_err(|_| PyValueError::new_err("exchange option keys must be str"))?;
        match key.to_str()? {
            "drop_usage_chunk" if mode == RELAY_OPENAI => drop = v.extract()?,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown option {other:?} for exchange mode {mode}"
                )))
            }
        }
    }
    Ok(drop)
}

/// Reads `translator_options`; unknown keys are refused so a typo fails at once.
fn translator_settings(options: Option<&Bound<'_, PyDict>>) -> PyResult<TranslatorSettings> {
    let mut s = TranslatorSettings {
        flavor: "generic".to_owned(),
        ..TranslatorSettings::default()
    };
    let Some(d) = options else {
        return Ok(s);
    };
    for (k, v) in d.iter() {
        let key = k
            .cast::<PyString>()
            .map_err(|_| PyValueError::new_err("translator option keys must be str"))?;
        match key.to_str()? {
            "flavor" => s.flavor = v.extract()?,
            "model" => s.model = v.extract()?,
            "include_usage" => s.include_usage = v.extract()?,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown translator option {other:?}"
                )))
            }
        }
    }
    Ok(s)
}

/// One upstream HTTP/1.1 response, fed bytes as they arrive from the socket.
#[pyclass(module = "sluicegate._native")]
pub struct Exchange {
    core: ExchangeCore,
}

fn value_error(e: HttpError) -> PyErr {
    PyValueError::new_err(e.0)
}

#[pymethods]
impl Exchange {
    #[new]
    #[pyo3(signature = (mode, translator_options = None))]
    fn new(mode: u8, translator_options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let core = match mode {
            RELAY_ANTHROPIC | RELAY_OPENAI => {
                if relay_drops_usage_chunk(mode, translator_options)? {
                    ExchangeCore::dropping_usage_chunk(mode)
                } else {
                    ExchangeCore::new(mode, None)
                }
            }
            OPENAI_TO_ANTHROPIC | ANTHROPIC_TO_OPENAI => {
                let settings = translator_settings(translator_options)?;
                let t = new_translator(mode, &settings).map_err(PyValueError::new_err)?;
                ExchangeCore::new(mode, Some(t))
            }
            _ => {
                return Err(PyValueError::new_err(format!(
                    "unknown exchange mode {mode}"
                )))
            }
        };
        Ok(Exchange { core })
    }

    /// Parse more response bytes; returns the bytes ready for the client now, or None.
    fn feed<'py>(&mut self, data: &Bound<'py, PyBytes>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.feed_bytes(data)
    }

    /// The connection closed; returns any final bytes for the client.
    fn eof<'py>(&mut self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.core.eof();
        let out = self.core.out();
        (!out.is_empty()).then(|| PyBytes::new(py, out))
    }

    /// The whole de-chunked body of a non-event-stream response (call after done).
    fn take_body<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.core.take_body())
    }

    #[getter]
    fn head_complete(&self) -> bool {
        self.has_head()
    }

    #[getter]
    fn status(&self) -> u16 {
        self.core.head().map_or(0, |h| h.status)
    }

    #[getter]
    fn headers(&self) -> Vec<(&str, &str)> {
        self.core
            .head()
            .map(|h| {
                h.headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[getter]
    fn content_type(&self) -> &str {
        self.core.head().map_or("", |h| h.content_type.as_str())
    }

    #[getter]
    fn is_event_stream(&self) -> bool {
        self.core.is_event_stream()
    }

    #[getter]
    fn done(&self) -> bool {
        self.is_done()
    }

    #[getter]
    fn truncated(&self) -> bool {
        self.core.truncated()
    }

    #[getter]
    fn keep_alive(&self) -> bool {
        self.core.keep_alive()
    }

    #[getter]
    fn usage(&self) -> (u64, u64, u64, u64) {
        let u = self.core.usage();
        (u.input, u.output, u.cache_creation, u.cache_read)
    }

    #[getter]
    fn usage_estimated(&self) -> bool {
        self.core.usage_estimated()
    }

    #[getter]
    fn stop_reason(&self) -> Option<&str> {
        self.core.tally().stop_reason.as_deref()
    }

    #[getter]
    fn upstream_cost(&self) -> Option<f64> {
        self.core.tally().upstream_cost
    }

    #[getter]
    fn event_count(&self) -> u64 {
        self.core.event_count()
    }

    #[getter]
    fn error_event(&self) -> bool {
        self.core.tally().error_event
    }

    /// An Anthropic stream's `message_stop` has been relayed.
    #[getter]
    fn message_stop(&self) -> bool {
        self.core.tally().message_stop
    }

    fn __repr__(&self) -> String {
        format!(
            "Exchange(status={}, event_stream={}, done={}, events={})",
            self.status(),
            self.core.is_event_stream(),
            self.core.done(),
            self.core.event_count()
        )
    }
}

/// The same calls for the crate's own callers (the native upstream protocol), without Python's dispatch.
impl Exchange {
    pub(crate) fn feed_bytes<'py>(
        &mut self,
        data: &Bound<'py, PyBytes>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let bytes = data.as_bytes();
        let passthrough = self.core.passthrough_candidate(bytes.len());
        self.core.feed(bytes).map_err(value_error)?;
        let out = self.core.out();
        if out.is_empty() {
            return Ok(None);
        }
        if passthrough && out.len() == bytes.len() {
            // Exactly the input: hand back the same object.
            return Ok(Some(data.clone()));
        }
        Ok(Some(PyBytes::new(data.py(), out)))
    }

    pub(crate) fn is_done(&self) -> bool {
        self.core.done()
    }

    /// The parser itself, for the native relay (rust/relay_hub.rs), which feeds it slices.
    pub(crate) fn core_mut(&mut self) -> &mut ExchangeCore {
        &mut self.core
    }

    pub(crate) fn has_head(&self) -> bool {
        self.core.head().is_some()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::translate::Usage;

    fn anthropic_stream() -> Vec<u8> {
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":10240,"output_tokens":2}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type": "ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello — "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"world ✓"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":31}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let mut s = Vec::new();
        for (name, data) in events {
            s.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
        }
        s
    }

    fn chunked(body: &[u8], size: usize) -> Vec<u8> {
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nrequest-id: req_1\r\n\r\n".to_vec();
        for c in body.chunks(size) {
            r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            r.extend_from_slice(c);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    }

    fn run(response: &[u8], piece: usize) -> (Vec<u8>, ExchangeCore) {
        let mut ex = ExchangeCore::new(RELAY_ANTHROPIC, None);
        let mut out = Vec::new();
        for p in response.chunks(piece.max(1)) {
            ex.feed(p).unwrap();
            out.extend_from_slice(ex.out());
        }
        (out, ex)
    }

    #[test]
    fn anthropic_relay_any_piece_size() {
        let body = anthropic_stream();
        for chunk in [7, 100, body.len()] {
            let resp = chunked(&body, chunk);
            for piece in [1, 2, 3, 13, 64, resp.len()] {
                let (out, ex) = run(&resp, piece);
                assert_eq!(out, body, "chunk {chunk} piece {piece}");
                assert!(ex.done() && ex.keep_alive() && ex.is_event_stream());
                assert_eq!(ex.event_count(), 8);
                assert_eq!(
                    ex.tally().usage,
                    Usage {
                        input: 472,
                        output: 31,
                        cache_creation: 0,
                        cache_read: 10240
                    }
                );
                assert_eq!(ex.tally().stop_reason.as_deref(), Some("end_turn"));
                assert!(!ex.tally().error_event);
                assert!(ex.tally().message_stop);
            }
        }
    }

    #[test]
    fn a_stream_cut_before_message_stop_is_not_complete() {
        let body = anthropic_stream();
        let cut = body.len() - b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".len();
        assert!(body[..cut].ends_with(b"\n\n"));
        for with_name in [true, false] {
            let part: Vec<u8> = if with_name {
                body[..cut].to_vec()
            } else {
                // Events without a name: the data's "type" decides.
                String::from_utf8(body.clone())
                    .unwrap()
                    .lines()
                    .filter(|l| !l.starts_with("event: "))
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
                    .into_bytes()
            };
            let (_, ex) = run(&chunked(&part, 50), 17);
            assert!(ex.done());
            assert_eq!(ex.tally().stop_reason.as_deref(), Some("end_turn"));
            assert_eq!(ex.tally().message_stop, !with_name, "with_name {with_name}");
        }
    }

    #[test]
    fn passthrough_candidate_on_raw_bodies() {
        let body = anthropic_stream();
        let mut resp = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n".to_vec();
        let head_len = resp.len();
        resp.extend_from_slice(&body);
        let mut ex = ExchangeCore::new(RELAY_ANTHROPIC, None);
        ex.feed(&resp[..head_len]).unwrap();
        assert!(ex.out().is_empty());
        assert!(ex.passthrough_candidate(body.len()));
        ex.feed(&body).unwrap();
        assert_eq!(ex.out(), &body[..]);
        assert!(!ex.done());
        ex.eof();
        assert!(ex.done() && !ex.truncated() && !ex.keep_alive());
    }

    #[test]
    fn truncated_stream_holds_partial_event() {
        let body = anthropic_stream();
        let resp = chunked(&body, 50);
        let cut = resp.len() - 30;
        let (out, mut ex) = run(&resp[..cut], 10);
        ex.eof();
        assert!(ex.truncated() && !ex.done());
        assert!(ex.out().is_empty());
        assert!(body.starts_with(&out) && out.ends_with(b"\n\n"));
    }

    #[test]
    fn json_body_tallied() {
        let json = br#"{"id":"msg_1","type":"message","content":[],"stop_reason":"max_tokens","usage":{"input_tokens":5,"output_tokens":7}}"#;
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            json.len()
        )
        .into_bytes();
        resp.extend_from_slice(json);
        let (out, mut ex) = run(&resp, 9);
        assert!(out.is_empty() && ex.done() && !ex.is_event_stream());
        assert_eq!(ex.take_body(), json);
        assert_eq!(
            ex.tally().usage,
            Usage {
                input: 5,
                output: 7,
                cache_creation: 0,
                cache_read: 0
            }
        );
        assert_eq!(ex.tally().stop_reason.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn error_status_with_event_stream_type_is_buffered() {
        let resp = b"HTTP/1.1 529 Overloaded\r\ncontent-type: text/event-stream\r\ncontent-length: 4\r\n\r\nbusy";
        let (out, mut ex) = run(resp, 100);
        assert!(out.is_empty() && !ex.is_event_stream());
        assert_eq!(ex.take_body(), b"busy");
    }

    #[test]
    fn openai_relay() {
        let body = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
            data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":32}}}\n\n\
            data: [DONE]\n\n";
        let resp = chunked(body, 33);
        let mut ex = ExchangeCore::new(RELAY_OPENAI, None);
        let mut out = Vec::new();
        for p in resp.chunks(5) {
            ex.feed(p).unwrap();
            out.extend_from_slice(ex.out());
        }
        assert_eq!(out, body);
        assert_eq!(ex.event_count(), 4);
        assert_eq!(
            ex.tally().usage,
            Usage {
                input: 18,
                output: 3,
                cache_creation: 0,
                cache_read: 32
            }
        );
        assert_eq!(ex.tally().stop_reason.as_deref(), Some("stop"));
    }

    const OPENAI_WITH_USAGE: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
        data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n\
        : keep-alive\n\n\
        data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
        data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":32}}}\n\n\
        data: [DONE]\n\n";

    fn relay_openai(
        mut ex: ExchangeCore,
        body: &[u8],
        chunk: usize,
        piece: usize,
    ) -> (Vec<u8>, ExchangeCore) {
        let resp = chunked(body, chunk);
        let mut out = Vec::new();
        for p in resp.chunks(piece) {
            ex.feed(p).unwrap();
            out.extend_from_slice(ex.out());
        }
        (out, ex)
    }

    /// Content chunks alike but for their text (a template's hits after the first), a finish
    /// chunk, then `tail`.
    fn openai_stream(texts: usize, tail: &str) -> Vec<u8> {
        let chunk = |delta: &str, finish: &str| {
            format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
            )
        };
        let mut s = chunk(r#"{"role":"assistant","content":""}"#, "null");
        for i in 0..texts {
            s.push_str(&chunk(&format!(r#"{{"content":"piece {i}"}}"#), "null"));
        }
        s.push_str(&chunk("{}", r#""stop""#));
        s.push_str(tail);
        s.push_str("data: [DONE]\n\n");
        s.into_bytes()
    }

    fn translated(body: &[u8]) -> ExchangeCore {
        let s = TranslatorSettings {
            flavor: "generic".into(),
            model: "claude-x".into(),
            include_usage: true,
        };
        let t = new_translator(OPENAI_TO_ANTHROPIC, &s).unwrap();
        let (_, ex) = relay_openai(
            ExchangeCore::new(OPENAI_TO_ANTHROPIC, Some(t)),
            body,
            64,
            100,
        );
        ex
    }

    #[test]
    fn a_translated_stream_counts_and_tallies_as_the_pass_through_does() {
        // No usage reported: the estimate counts the chunks with a non-empty delta, templated
        // or scanned alike (the role chunk too).
        let body = openai_stream(20, "");
        let (_, relayed) = relay_openai(ExchangeCore::new(RELAY_OPENAI, None), &body, 64, 100);
        let ex = translated(&body);
        assert_eq!((ex.usage_estimated(), ex.usage().output), (true, 21));
        assert_eq!(ex.usage(), relayed.usage());
        // A usage chunk with a cost: both read it.
        let usage = r#"data: {"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":21,"cost":0.25}}

"#;
        let body = openai_stream(20, usage);
        let ex = translated(&body);
        assert!(!ex.usage_estimated());
        assert_eq!((ex.usage().input, ex.usage().output), (9, 21));
        assert_eq!(ex.tally().upstream_cost, Some(0.25));
        assert_eq!(ex.tally().stop_reason.as_deref(), Some("end_turn"));
    }

    #[test]
    fn usage_chunk_tallied_but_not_relayed_when_the_client_did_not_ask() {
        let usage_line = OPENAI_WITH_USAGE
            .windows(b"data: {\"id\":\"c\",\"choices\":[],".len())
            .position(|w| w == b"data: {\"id\":\"c\",\"choices\":[],")
            .unwrap();
        let end = usage_line
            + OPENAI_WITH_USAGE[usage_line..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .unwrap()
            + 2;
        let mut want = OPENAI_WITH_USAGE[..usage_line].to_vec();
        want.extend_from_slice(&OPENAI_WITH_USAGE[end..]);
        let crlf: Vec<u8> = String::from_utf8(OPENAI_WITH_USAGE.to_vec())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes();
        let want_crlf: Vec<u8> = String::from_utf8(want.clone())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes();
        for (body, want) in [(OPENAI_WITH_USAGE, &want), (&crlf[..], &want_crlf)] {
            for chunk in [1, 7, 64, body.len()] {
                for piece in [1, 5, 100, 10_000] {
                    let ex = ExchangeCore::dropping_usage_chunk(RELAY_OPENAI);
                    let (out, ex) = relay_openai(ex, body, chunk, piece);
                    assert_eq!(&out, want, "chunk {chunk} piece {piece}");
                    let usage = Usage {
                        input: 18,
                        output: 3,
                        cache_creation: 0,
                        cache_read: 32,
                    };
                    assert_eq!((ex.usage(), ex.usage_estimated()), (usage, false));
                    assert_eq!(ex.tally().stop_reason.as_deref(), Some("stop"));
                    assert!(ex.done());
                }
            }
        }
        // Asked for by the client: relayed as it came.
        let (out, _) = relay_openai(
            ExchangeCore::new(RELAY_OPENAI, None),
            OPENAI_WITH_USAGE,
            9,
            4,
        );
        assert_eq!(out, OPENAI_WITH_USAGE);
    }

    #[test]
    fn output_estimated_when_the_server_reports_no_usage() {
        let body = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
            data: {\"choices\":[{\"delta\": { \"reasoning_content\":\"b\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n\
            data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
            data: [DONE]\n\n";
        let (out, ex) = relay_openai(
            ExchangeCore::dropping_usage_chunk(RELAY_OPENAI),
            body,
            11,
            3,
        );
        assert_eq!(out, body);
        assert!(ex.usage_estimated());
        assert_eq!(
            ex.usage(),
            Usage {
                input: 0,
                output: 4,
                cache_creation: 0,
                cache_read: 0
            }
        );
        // Translated for an Anthropic client, the same estimate reaches the ledger.
        let settings = TranslatorSettings {
            flavor: "generic".to_owned(),
            model: "claude-x".to_owned(),
            include_usage: false,
        };
        let t = new_translator(OPENAI_TO_ANTHROPIC, &settings).unwrap();
        let (out, ex) = relay_openai(ExchangeCore::new(OPENAI_TO_ANTHROPIC, Some(t)), body, 11, 3);
        assert!(out.starts_with(b"event: message_start"));
        assert!(ex.usage_estimated() && ex.usage().output == 4);
        // A real usage report, or an Anthropic upstream, is never estimated.
        let (_, ex) = relay_openai(
            ExchangeCore::new(RELAY_OPENAI, None),
            OPENAI_WITH_USAGE,
            50,
            50,
        );
        assert!(!ex.usage_estimated());
        let (_, ex) = run(&chunked(&anthropic_stream(), 40), 13);
        assert!(!ex.usage_estimated() && ex.usage().output == 31);
    }

    #[test]
    fn chunk_probes() {
        assert!(is_usage_only_chunk(
            br#"{"id":"c","choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(is_usage_only_chunk(br#"{"usage":{"prompt_tokens":1}}"#));
        assert!(!is_usage_only_chunk(
            br#"{"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(!is_usage_only_chunk(br#"{"choices":[],"usage":null}"#));
        assert!(!is_usage_only_chunk(
            br#"{"choices":[{"delta":{"content":""usage""}}]}"#
        ));
        assert!(!is_usage_only_chunk(b"[DONE]"));
        assert!(is_content_chunk(
            br#"{"choices":[{"delta":{"content":"x"}}]}"#
        ));
        assert!(is_content_chunk(
            br#"{"choices":[{"delta" : {"tool_calls":[]}}]}"#
        ));
        assert!(!is_content_chunk(
            br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#
        ));
        assert!(!is_content_chunk(br#"{"choices":[{"delta": { } }]}"#));
        assert!(!is_content_chunk(br#"{"choices":[],"usage":{}}"#));
        assert!(!is_content_chunk(b"[DONE]"));
    }

    struct Upper {
        seen: u32,
    }

    impl StreamTranslator for Upper {
        fn on_event(&mut self, ev: &SseEvent<'_>, out: &mut Vec<u8>) {
            self.seen += 1;
            out.extend_from_slice(b"data: ");
            out.extend(ev.data.iter().map(u8::to_ascii_uppercase));
            out.extend_from_slice(b"\n\n");
        }
        fn finish(&mut self, complete: bool, out: &mut Vec<u8>) {
            out.extend_from_slice(if complete {
                b"data: END\n\n"
            } else {
                b"data: CUT\n\n"
            });
        }
        fn usage(&self) -> Usage {
            Usage {
                input: 1,
                output: u64::from(self.seen),
                cache_creation: 0,
                cache_read: 0,
            }
        }
        fn stop_reason(&self) -> Option<&str> {
            Some("translated")
        }
    }

    #[test]
    fn translator_contract() {
        let body = b"data: a\n\ndata: b\n\n";
        let resp = chunked(body, 4);
        let mut ex = ExchangeCore::new(OPENAI_TO_ANTHROPIC, Some(Box::new(Upper { seen: 0 })));
        let mut out = Vec::new();
        for p in resp.chunks(3) {
            ex.feed(p).unwrap();
            out.extend_from_slice(ex.out());
        }
        assert_eq!(out, b"data: A\n\ndata: B\n\ndata: END\n\n");
        assert_eq!(ex.tally().usage.output, 2);
        assert_eq!(ex.tally().stop_reason.as_deref(), Some("translated"));
        let mut ex = ExchangeCore::new(OPENAI_TO_ANTHROPIC, Some(Box::new(Upper { seen: 0 })));
        ex.feed(&resp[..resp.len() - 12]).unwrap();
        ex.eof();
        assert_eq!(ex.out(), b"data: CUT\n\n");
        let settings = TranslatorSettings {
            flavor: "vllm".to_owned(),
            model: "claude-x".to_owned(),
            include_usage: true,
        };
        assert!(new_translator(OPENAI_TO_ANTHROPIC, &settings).is_ok());
        assert!(new_translator(ANTHROPIC_TO_OPENAI, &settings).is_ok());
        assert!(new_translator(RELAY_ANTHROPIC, &settings).is_err());
        let bad = TranslatorSettings {
            flavor: "nope".to_owned(),
            ..settings
        };
        assert!(new_translator(OPENAI_TO_ANTHROPIC, &bad).is_err());
    }
}
