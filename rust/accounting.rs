//! The end of a request on the event loop: its access log line and its metrics, both from the
//! ledger row Python builds once for it (a tuple in usage/record.py's field order).
//!
//! Python decides: which fields the row has and in what order, the line's keys and what each
//! shows, the histogram bounds, whether the line and the metrics are wanted at all. This reads
//! the row once and does the rest. In Python the line was a 26-key dict through orjson (~3.4 us)
//! and the metrics dict updates and bisects ~1.8 us; both together take ~2 us here (micro-
//! benchmarks on the gateway's core). The lines are kept here until log.py takes them; the
//! counters accumulate until Python's Metrics drains them (at a scrape, or when a worker
//! publishes its view), so the rendering and the merging of workers stay in Python.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use pyo3::Borrowed;

use crate::json_float::{push_f64, push_scaled};
use crate::ledger_batch::Val;
use crate::py_value::{kind_of, PyValue};
use crate::record_text::{push_val, RecordText};
use crate::row_queue::RowQueue;
use crate::translate::json_out::{push_block, push_str, push_u64};

thread_local! {
    /// The last request's record text, kept for its capacity: the next writes into it.
    static RECORD_TEXT: std::cell::Cell<RecordText> = std::cell::Cell::default();
}

/// What the line and the counters read of a value (a type they have no use for reads as none).
fn text_of<'v>(v: &Val<'v>) -> Option<&'v str> {
    match *v {
        Val::Text(s) => Some(s),
        _ => None,
    }
}

fn int_of(v: &Val<'_>) -> i64 {
    match *v {
        Val::Int(n) => n,
        Val::Bool(b) => i64::from(b),
        _ => 0,
    }
}

fn real_of(v: &Val<'_>) -> f64 {
    match *v {
        Val::Real(x) => x,
        Val::Int(n) => n as f64,
        _ => 0.0,
    }
}

/// A row's value as the record, the line and the counters take it; an int past 64 bits is
/// `Other` (the line writes null, the ledger refuses the record). The text is the UTF-8 Python
/// keeps of the string, borrowed; None for a string with lone surrogates (`lossy_text`).
#[inline]
pub fn read_val<'a>(value: Borrowed<'a, '_, PyAny>) -> Option<Val<'a>> {
    Some(match kind_of(&value) {
        PyValue::None => Val::Null,
        PyValue::Bool(b) => Val::Bool(b),
        PyValue::Int(v) => v.extract().map_or(Val::Other, Val::Int),
        PyValue::Real(v) => Val::Real(v),
        // Extracted from the borrowed item: the text lives as long as the row, not this call.
        PyValue::Text(_) => Val::Text(value.extract::<&'a str>().ok()?),
        PyValue::Other => Val::Other,
    })
}

/// A string `read_val` could not borrow, with each lone surrogate replaced.
fn lossy_text(value: &Bound<'_, PyAny>) -> String {
    value
        .cast::<PyString>()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What an access line entry shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A row field, rounded to 1/scale when scale > 0.
    Field(usize, f64),
    /// A fixed string.
    Literal(String),
    /// The request's upstream attempts (not a ledger column).
    Attempts,
}

/// The bytes an entry starts with (its key, and a fixed value), padded to a fixed size when
/// short: a fixed-size copy and a truncate are a few moves, where a slice of any length goes
/// through a call to memcpy (~26 of them a line).
#[derive(Debug, Clone, PartialEq)]
struct Head {
    padded: [u8; 32],
    len: usize,
    long: Vec<u8>,
}

impl Head {
    fn new(bytes: Vec<u8>) -> Self {
        let mut padded = [0u8; 32];
        match padded.get_mut(..bytes.len()) {
            Some(slot) => {
                slot.copy_from_slice(&bytes);
                Head {
                    padded,
                    len: bytes.len(),
                    long: Vec::new(),
                }
            }
            None => Head {
                padded,
                len: 0,
                long: bytes,
            },
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        if self.long.is_empty() {
            push_block(out, &self.padded, self.len);
        } else {
            out.extend_from_slice(&self.long);
        }
    }
}

/// Each entry's key already written out (`"key":`, with the comma before all but the first),
/// a fixed value with it; `None`: nothing more to write.
#[derive(Debug, Clone, PartialEq)]
pub struct LineSpec {
    entries: Vec<(Head, Option<Source>)>,
}

impl LineSpec {
    pub fn new(entries: Vec<(String, Source)>) -> Self {
        let entries = entries
            .into_iter()
            .enumerate()
            .map(|(i, (key, source))| {
                let mut head = if i == 0 { Vec::new() } else { vec![b','] };
                push_str(&mut head, &key);
                head.push(b':');
                match source {
                    Source::Literal(text) => {
                        push_str(&mut head, &text);
                        (Head::new(head), None)
                    }
                    other => (Head::new(head), Some(other)),
                }
            })
            .collect();
        LineSpec { entries }
    }

    /// Which of a row's `width` fields the line shows as they are written (`RecordText::write`'s
    /// `wanted`); a rounded field is written here from its number.
    pub fn shown_as_written(&self, width: usize) -> Vec<bool> {
        let mut wanted = vec![false; width];
        for (_, source) in &self.entries {
            if let Some(Source::Field(i, scale)) = source {
                if *scale <= 0.0 {
                    if let Some(w) = wanted.get_mut(*i) {
                        *w = true;
                    }
                }
            }
        }
        wanted
    }

    /// `{...}` and a newline; `tail` is raw JSON (`,"key":value...`) put before the brace. A
    /// field's value is copied from `record` (written from the same values, with at least the
    /// fields `shown_as_written`), but for a rounded number.
    pub fn write(
        &self,
        vals: &[Val<'_>],
        record: &RecordText,
        attempts: i64,
        tail: &[u8],
        out: &mut Vec<u8>,
    ) {
        out.push(b'{');
        for (head, source) in &self.entries {
            head.write(out);
            match source {
                None | Some(Source::Literal(_)) => {}
                Some(Source::Attempts) => push_i64(out, attempts),
                Some(Source::Field(i, scale)) if *scale > 0.0 => {
                    push_rounded(out, vals.get(*i).unwrap_or(&Val::Null), *scale);
                }
                Some(Source::Field(i, _)) => match record.value_block(*i) {
                    Some((block, len)) => push_block(out, block, len),
                    None => match record.value(*i) {
                        b"" => out.extend_from_slice(b"null"),
                        written => out.extend_from_slice(written),
                    },
                },
            }
        }
        out.extend_from_slice(tail);
        out.extend_from_slice(b"}\n");
    }
}

/// A number to 1/scale; anything else as the record writes it.
fn push_rounded(out: &mut Vec<u8>, v: &Val<'_>, scale: f64) {
    match v {
        Val::Int(_) | Val::Real(_) => match decimals_of(scale) {
            Some(d) => push_scaled(out, (real_of(v) * scale + 0.5).trunc(), d),
            None => push_f64(out, round_to(real_of(v), scale)),
        },
        other => push_val(out, *other),
    }
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// The decimals of a scale that is a power of ten up to 10^5 (1000.0: 3).
fn decimals_of(scale: f64) -> Option<u32> {
    [1.0, 10.0, 100.0, 1e3, 1e4, 1e5]
        .iter()
        .position(|&p| p == scale)
        .map(|d| d as u32)
}

/// x (>= 0) to the nearest 1/scale, as Python's `int(x * scale + 0.5) / scale` gives it (app.py).
pub fn round_to(x: f64, scale: f64) -> f64 {
    (x * scale + 0.5).trunc() / scale
}

/// A histogram in Python's layout (metrics.py): a count per bound (not cumulative), the count
/// above the last bound, then the sum.
fn observe(hist: &mut Option<Vec<f64>>, bounds: &[f64], v: f64) {
    let h = hist.get_or_insert_with(|| vec![0.0; bounds.len() + 2]);
    // bisect_left: the first bound >= v.
    let i = bounds.partition_point(|b| *b < v);
    if let Some(slot) = h.get_mut(i) {
        *slot += 1.0;
    }
    if let Some(sum) = h.last_mut() {
        *sum += v;
    }
}

/// What one (model group, target) pair gathered since the last drain.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PairStats {
    pub statuses: Vec<(i64, u64)>,
    pub errors: Vec<(String, u64)>,
    pub ttfb: Option<Vec<f64>>,
    pub duration: Option<Vec<f64>>,
    pub tokens: Option<[i64; 4]>,
    pub cost: Option<f64>,
}

/// The row fields the counters read.
#[derive(Debug, Clone, Copy)]
struct MetricFields {
    group: usize,
    target: usize,
    status: usize,
    tokens: [usize; 4],
    cost: usize,
    error_type: usize,
}

/// FNV-1a, eight bytes a step: group and target names (and the ledger's rollup keys, names
/// from the config and the key store) are hashed on every request; the standard SipHash
/// resists hash flooding, which names from the operator's config do not call for.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const PRIME: u64 = 0x0100_0000_01b3;
        let words = bytes.chunks_exact(8);
        let rest = words.remainder();
        for w in words {
            let w = <[u8; 8]>::try_from(w).map_or(0, u64::from_le_bytes);
            // The rotation carries a word's high bytes into the low ones the next step mixes.
            self.0 = (self.0 ^ w).wrapping_mul(PRIME).rotate_left(29);
        }
        for b in rest {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(PRIME);
        }
    }
}

type ByName<V> = HashMap<String, V, BuildHasherDefault<Fnv>>;

#[derive(Debug, Default)]
pub struct Counters {
    pairs: ByName<ByName<PairStats>>,
}

impl Counters {
    /// The same updates as Metrics.request_done (metrics.py), for one request.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        ttfb_bounds: &[f64],
        duration_bounds: &[f64],
        group: &str,
        target: &str,
        status: i64,
        ttfb_s: Option<f64>,
        duration_s: f64,
        tokens: [i64; 4],
        cost: f64,
        error_type: Option<&str>,
    ) {
        let by_target = match self.pairs.get_mut(group) {
            Some(m) => m,
            None => self.pairs.entry(group.to_owned()).or_default(),
        };
        let s = match by_target.get_mut(target) {
            Some(s) => s,
            None => by_target.entry(target.to_owned()).or_default(),
        };
        match s.statuses.iter_mut().find(|(st, _)| *st == status) {
            Some((_, n)) => *n += 1,
            None => s.statuses.push((status, 1)),
        }
        if error_type.is_some() || status >= 400 {
            let kind: Cow<'_, str> = match error_type {
                Some(e) if !e.is_empty() => Cow::Borrowed(e),
                _ => Cow::Owned(format!("http_{status}")),
            };
            match s.errors.iter_mut().find(|(e, _)| *e == kind) {
                Some((_, n)) => *n += 1,
                None => s.errors.push((kind.into_owned(), 1)),
            }
        }
        if let Some(t) = ttfb_s {
            observe(&mut s.ttfb, ttfb_bounds, t);
        }
        observe(&mut s.duration, duration_bounds, duration_s);
        if tokens.iter().any(|t| *t != 0) {
            let acc = s.tokens.get_or_insert([0; 4]);
            for (a, t) in acc.iter_mut().zip(tokens) {
                *a += t;
            }
        }
        if cost != 0.0 {
            *s.cost.get_or_insert(0.0) += cost;
        }
    }

    pub fn take(&mut self) -> Vec<(String, String, PairStats)> {
        let mut out = Vec::new();
        for (group, targets) in self.pairs.drain() {
            for (target, stats) in targets {
                out.push((group.clone(), target, stats));
            }
        }
        out
    }
}

type Drained = (
    String,
    String,
    Vec<(String, u64)>,
    Vec<(String, u64)>,
    Option<Vec<f64>>,
    Option<Vec<f64>>,
    Option<Vec<i64>>,
    Option<f64>,
);

/// `RequestSink(fields, line, ttfb_bounds, duration_bounds, access_buffer_max)`: `fields` are the
/// row's field names in order; `line` the access line's entries, (key, source, scale): source a
/// field name, `"=text"` for a fixed string, or `"attempts"`; scale > 0 rounds a number to
/// 1/scale. Access lines are kept here until `take_access` (log.py writes them out).
#[pyclass(module = "sluicegate._native", frozen)]
pub struct RequestSink {
    width: usize,
    line: LineSpec,
    /// The fields the line copies as the record writes them (LineSpec::shown_as_written).
    shown_as_written: Vec<bool>,
    fields: MetricFields,
    ttfb_bounds: Vec<f64>,
    duration_bounds: Vec<f64>,
    counters: Mutex<Counters>,
    lines: Mutex<Vec<u8>>,
    access_buffer_max: usize,
}

/// What `done` tells the caller about the access lines kept.
const LINES_UNCHANGED: u8 = 0;
const LINES_FIRST: u8 = 1; // the first since the last take: arm a flush
const LINES_FULL: u8 = 2; // past the bound: take them now

#[pymethods]
impl RequestSink {
    #[new]
    fn new(
        fields: Vec<String>,
        line: Vec<(String, String, f64)>,
        ttfb_bounds: Vec<f64>,
        duration_bounds: Vec<f64>,
        access_buffer_max: usize,
    ) -> PyResult<Self> {
        let index = |name: &str| {
            fields
                .iter()
                .position(|f| f == name)
                .ok_or_else(|| PyValueError::new_err(format!("fields: no {name:?}")))
        };
        let mut entries = Vec::with_capacity(line.len());
        for (key, source, scale) in line {
            let source = if let Some(text) = source.strip_prefix('=') {
                Source::Literal(text.to_owned())
            } else if source == "attempts" {
                Source::Attempts
            } else {
                Source::Field(index(&source)?, scale)
            };
            entries.push((key, source));
        }
        let metric_fields = MetricFields {
            group: index("group")?,
            target: index("target")?,
            status: index("status")?,
            tokens: [
                index("input_tokens")?,
                index("output_tokens")?,
                index("cache_creation_tokens")?,
                index("cache_read_tokens")?,
            ],
            cost: index("cost_usd")?,
            error_type: index("error_type")?,
        };
        let line = LineSpec::new(entries);
        Ok(RequestSink {
            width: fields.len(),
            shown_as_written: line.shown_as_written(fields.len()),
            line,
            fields: metric_fields,
            ttfb_bounds,
            duration_bounds,
            counters: Mutex::new(Counters::default()),
            lines: Mutex::new(Vec::new()),
            access_buffer_max,
        })
    }

    /// One finished request: counts it when `metrics`, keeps its access line when `access`
    /// (`tail`, raw JSON, goes before the line's closing brace), and hands its values to the
    /// ledger's `queue` when it builds batches (row_queue.rs: the row is read once for all
    /// three). 1: the line is the first kept since the last `take_access` (arm a flush); 2: the
    /// lines kept are past the bound (take them now); else 0.
    #[pyo3(signature = (row, ttfb_s, duration_s, attempts, tail, metrics, access, queue=None))]
    #[allow(clippy::too_many_arguments)]
    fn done<'py>(
        &self,
        py: Python<'py>,
        row: &Bound<'py, PyTuple>,
        ttfb_s: Option<f64>,
        duration_s: f64,
        attempts: i64,
        tail: Option<&[u8]>,
        metrics: bool,
        access: bool,
        queue: Option<&Bound<'py, RowQueue>>,
    ) -> PyResult<u8> {
        if !metrics && !access && queue.is_none() {
            return Ok(LINES_UNCHANGED);
        }
        if row.len() != self.width {
            return Err(PyValueError::new_err(format!(
                "row: {} values, not {}",
                row.len(),
                self.width
            )));
        }
        // Borrowed: no reference count taken and dropped per value (calls, under the stable ABI).
        let mut lossy: Vec<(usize, String)> = Vec::new();
        let mut vals: Vec<Val<'_>> = Vec::with_capacity(self.width);
        for i in 0..self.width {
            let item = row.get_borrowed_item(i)?;
            vals.push(read_val(item).unwrap_or_else(|| {
                lossy.push((i, lossy_text(&item)));
                Val::Other
            }));
        }
        for (i, copy) in &lossy {
            if let Some(v) = vals.get_mut(*i) {
                *v = Val::Text(copy);
            }
        }
        if metrics {
            self.count(&vals, ttfb_s, duration_s)?;
        }
        // Taken, not borrowed: a call back into Python (the queue's wake) that came back here
        // on this thread would find it empty, not in use.
        let mut record = RECORD_TEXT.take();
        if queue.is_some() {
            record.write(&vals, None);
        } else if access {
            record.write(&vals, Some(&self.shown_as_written));
        }
        if let Some(q) = queue {
            q.get().push_record(py, &vals, record.text());
        }
        let kept = if access {
            self.keep_line(&vals, &record, attempts, tail)
        } else {
            Ok(LINES_UNCHANGED)
        };
        RECORD_TEXT.set(record);
        kept
    }

    /// The access lines kept since the last take (whole lines), or None.
    fn take_access<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        // Copied out and cleared, not taken: the buffer keeps its capacity for the next lines.
        let mut lines = self.lines.lock().ok()?;
        let taken = (!lines.is_empty()).then(|| PyBytes::new(py, &lines));
        lines.clear();
        taken
    }
    /// The counters gathered since the last drain, and zero them: per (group, target), the
    /// counts by status, by error type, the ttfb and duration histograms, tokens, cost.
    fn drain(&self) -> PyResult<Vec<Drained>> {
        let taken = self
            .counters
            .lock()
            .map_err(|_| PyValueError::new_err("metrics counters poisoned"))?
            .take();
        Ok(taken
            .into_iter()
            .map(|(g, t, s)| {
                (
                    g,
                    t,
                    s.statuses
                        .into_iter()
                        .map(|(st, n)| (st.to_string(), n))
                        .collect(),
                    s.errors,
                    s.ttfb,
                    s.duration,
                    s.tokens.map(|t| t.to_vec()),
                    s.cost,
                )
            })
            .collect())
    }
}

impl RequestSink {
    /// The request's metrics, into the counters.
    fn count(&self, vals: &[Val<'_>], ttfb_s: Option<f64>, duration_s: f64) -> PyResult<()> {
        let f = &self.fields;
        let at = |i: usize| vals.get(i).unwrap_or(&Val::Null);
        let mut counters = self
            .counters
            .lock()
            .map_err(|_| PyValueError::new_err("metrics counters poisoned"))?;
        counters.add(
            &self.ttfb_bounds,
            &self.duration_bounds,
            text_of(at(f.group)).unwrap_or(""),
            text_of(at(f.target)).unwrap_or(""),
            int_of(at(f.status)),
            ttfb_s,
            duration_s,
            f.tokens.map(|i| int_of(at(i))),
            real_of(at(f.cost)),
            match at(f.error_type) {
                Val::Null => None,
                other => Some(text_of(other).unwrap_or("")),
            },
        );
        Ok(())
    }

    /// The request's access line, kept; what `done` returns.
    fn keep_line(
        &self,
        vals: &[Val<'_>],
        record: &RecordText,
        attempts: i64,
        tail: Option<&[u8]>,
    ) -> PyResult<u8> {
        let mut lines = self
            .lines
            .lock()
            .map_err(|_| PyValueError::new_err("access lines poisoned"))?;
        let first = lines.is_empty();
        self.line
            .write(vals, record, attempts, tail.unwrap_or_default(), &mut lines);
        Ok(if lines.len() >= self.access_buffer_max {
            LINES_FULL
        } else if first {
            LINES_FIRST
        } else {
            LINES_UNCHANGED
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_in_the_specs_order_with_its_tail() {
        let spec = LineSpec::new(vec![
            ("ts".into(), Source::Field(0, 1000.0)),
            ("event".into(), Source::Literal("request".into())),
            ("id".into(), Source::Field(1, 0.0)),
            ("n".into(), Source::Field(2, 0.0)),
            ("gone".into(), Source::Field(3, 0.0)),
            ("ok".into(), Source::Field(4, 0.0)),
            ("attempts".into(), Source::Attempts),
        ]);
        let vals = [
            Val::Real(1_796_136_862.177_4),
            Val::Text("req\"1"),
            Val::Int(42),
            Val::Null,
            Val::Bool(true),
        ];
        let mut record = RecordText::default();
        record.write(&vals, Some(&spec.shown_as_written(vals.len())));
        let mut out = Vec::new();
        spec.write(&vals, &record, 2, b",\"x\":[1]", &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "{\"ts\":1796136862.177,\"event\":\"request\",\"id\":\"req\\\"1\",\"n\":42,\"gone\":null,\"ok\":true,\"attempts\":2,\"x\":[1]}\n"
        );
    }

    #[test]
    fn rounding_is_half_up_as_in_python() {
        assert_eq!(round_to(1.005 * 1000.0, 100.0), 1005.0);
        assert_eq!(round_to(0.125, 100.0), 0.13);
        assert_eq!(round_to(2.0, 1000.0), 2.0);
    }

    #[test]
    fn counters_follow_metrics_request_done() {
        let mut c = Counters::default();
        let bounds = [0.1, 1.0];
        c.add(
            &bounds,
            &bounds,
            "g",
            "t",
            200,
            Some(0.1),
            2.0,
            [1, 2, 0, 0],
            0.5,
            None,
        );
        c.add(
            &bounds,
            &bounds,
            "g",
            "t",
            429,
            None,
            0.25,
            [0; 4],
            0.0,
            Some("rate_limit_error"),
        );
        c.add(
            &bounds, &bounds, "g", "t", 502, None, 0.25, [0; 4], 0.0, None,
        );
        let mut taken = c.take();
        assert_eq!(taken.len(), 1);
        let (g, t, s) = taken.remove(0);
        assert_eq!((g.as_str(), t.as_str()), ("g", "t"));
        assert_eq!(s.statuses, vec![(200, 1), (429, 1), (502, 1)]);
        assert_eq!(
            s.errors,
            vec![
                ("rate_limit_error".to_owned(), 1),
                ("http_502".to_owned(), 1)
            ]
        );
        assert_eq!(s.ttfb, Some(vec![1.0, 0.0, 0.0, 0.1])); // 0.1 is in the le=0.1 bucket
        assert_eq!(s.duration, Some(vec![0.0, 2.0, 1.0, 2.5]));
        assert_eq!(s.tokens, Some([1, 2, 0, 0]));
        assert_eq!(s.cost, Some(0.5));
        assert!(c.take().is_empty());
    }
}
