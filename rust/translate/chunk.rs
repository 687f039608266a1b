//! An OpenAI `chat.completion.chunk` as the stream translator reads it (stream_to_anthropic.rs):
//! by serde, or, for the chunks that are most of a stream, by a scan that builds the same value.
//!
//! serde spends ~4,900 instructions on a ~190-byte content chunk (callgrind): every key and
//! string goes through its string reader and a UTF-8 check, every field through the derive's
//! visitor. `scan` reads the same bytes in one pass and builds the same `Chunk` for the shapes it
//! knows (ids, text, reasoning, the finish reason, any extra scalar or nested field skipped);
//! anything else (tool calls, a usage object, an error, a stop string, a duplicate key, any
//! doubt about the grammar) returns None and serde decides, so a chunk reads as serde reads it.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::borrowed::Text;
use super::json_out::escape_mask;

#[derive(Deserialize)]
pub(super) struct Chunk<'a> {
    #[serde(borrow, default)]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(super) choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    pub(super) usage: Option<ChunkUsage>,
    #[serde(borrow, default)]
    pub(super) error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(super) object: Option<Text<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Choice<'a> {
    #[serde(default)]
    pub(super) index: u32,
    #[serde(borrow, default)]
    pub(super) delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    pub(super) finish_reason: Option<Text<'a>>,
    /// vLLM: the stop string that matched (or a token id).
    #[serde(borrow, default)]
    pub(super) stop_reason: Option<&'a RawValue>,
    /// SGLang: the stop string that matched (or a token id).
    #[serde(borrow, default)]
    pub(super) matched_stop: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct Delta<'a> {
    #[serde(borrow, default)]
    pub(super) content: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(super) reasoning_content: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(super) reasoning: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(super) tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct ToolCallDelta<'a> {
    #[serde(default)]
    pub(super) index: Option<u32>,
    #[serde(borrow, default)]
    pub(super) id: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub(super) function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
pub(super) struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    pub(super) name: Option<Text<'a>>,
    /// A string as the spec says; some servers send the arguments as an object.
    #[serde(borrow, default)]
    pub(super) arguments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct ChunkUsage {
    #[serde(default)]
    pub(super) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(super) completion_tokens: Option<u64>,
    #[serde(default)]
    pub(super) prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
pub(super) struct PromptDetails {
    #[serde(default)]
    pub(super) cached_tokens: Option<u64>,
}

/// The chunk as serde would read it, or None to let serde decide. (The translator reads chunks
/// through chunk_template.rs, which scans with spans, else leaves them to serde.)
#[cfg(test)]
fn scan(data: &[u8]) -> Option<Chunk<'_>> {
    scan_with_spans(data).map(|(chunk, _)| chunk)
}

/// Which of a delta's text fields a string is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TextField {
    Content,
    ReasoningContent,
    Reasoning,
}

/// Where `scan` found the values a chunk template (chunk_template.rs) rebuilds: each as
/// [start, end) of its whole token (a string's quotes included, or `null`). The delta's are
/// those of the last choice read.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Spans {
    pub(super) id: Option<(usize, usize)>,
    pub(super) object: Option<(usize, usize)>,
    pub(super) content: Option<(usize, usize)>,
    pub(super) reasoning_content: Option<(usize, usize)>,
    pub(super) reasoning: Option<(usize, usize)>,
}

/// A JSON string token starting at `at` (its opening quote), read as `scan` reads one: the text
/// and where the token ends (just past its closing quote). None where serde would refuse it.
pub(super) fn text_token(data: &[u8], at: usize) -> Option<(Text<'_>, usize)> {
    let mut p = Scan { b: data, i: at };
    if data.get(at) != Some(&b'"') {
        return None;
    }
    let text = p.opt_text()??;
    Some((text, p.i))
}

/// `scan`, and where it found what a template needs.
pub(super) fn scan_with_spans(data: &[u8]) -> Option<(Chunk<'_>, Spans)> {
    let mut p = Scan { b: data, i: 0 };
    let mut chunk = Chunk {
        id: None,
        choices: None,
        usage: None,
        error: None,
        object: None,
    };
    let mut seen = Seen::default();
    let mut spans = Spans::default();
    p.object(|p, key| {
        match key {
            b"id" => {
                seen.first(0)?;
                let (text, span) = p.opt_text_at()?;
                (chunk.id, spans.id) = (text, Some(span));
            }
            b"object" => {
                seen.first(1)?;
                let (text, span) = p.opt_text_at()?;
                (chunk.object, spans.object) = (text, Some(span));
            }
            b"choices" => {
                seen.first(2)?;
                chunk.choices = p.opt_array(|p| p.choice(&mut spans))?;
            }
            // Only absent or null here: serde reads a usage object or an error.
            b"usage" | b"error" => {
                seen.first(if key == b"usage" { 3 } else { 4 })?;
                p.null()?;
            }
            _ => p.skip_value(0)?,
        }
        Some(())
    })?;
    p.ws();
    (p.i == data.len()).then_some((chunk, spans))
}

/// The known keys of one object read so far (serde refuses a duplicate one).
#[derive(Default)]
struct Seen(u32);

impl Seen {
    fn first(&mut self, bit: u32) -> Option<()> {
        let mask = 1 << bit;
        (self.0 & mask == 0).then(|| self.0 |= mask)
    }
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

/// Nesting deeper than this in a skipped value is left to serde.
const MAX_DEPTH: u32 = 32;

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        self.ws();
        let rest = self.b.get(self.i..)?;
        rest.starts_with(w).then(|| self.i += w.len())
    }

    fn null(&mut self) -> Option<()> {
        self.word(b"null")
    }

    /// `{ "key": value, ... }`, each value read by `field`; keys with escapes are left to serde.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let (key, escaped) = self.raw_str()?;
            if escaped || !key.is_ascii() {
                return None;
            }
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// null, or `[ item, ... ]`.
    fn opt_array<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Option<Vec<T>>> {
        if self.peek()? == b'n' {
            self.null()?;
            return Some(None);
        }
        self.eat(b'[')?;
        let mut items = Vec::new();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(Some(items));
        }
        loop {
            items.push(item(self)?);
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(Some(items));
                }
                _ => return None,
            }
        }
    }

    fn choice(&mut self, spans: &mut Spans) -> Option<Choice<'a>> {
        let mut c = Choice {
            index: 0,
            delta: None,
            finish_reason: None,
            stop_reason: None,
            matched_stop: None,
        };
        let mut seen = Seen::default();
        self.object(|p, key| {
            match key {
                b"index" => {
                    seen.first(0)?;
                    c.index = p.index()?;
                }
                b"delta" => {
                    seen.first(1)?;
                    c.delta = if p.peek()? == b'n' {
                        p.null()?;
                        None
                    } else {
                        Some(p.delta(spans)?)
                    };
                }
                b"finish_reason" => {
                    seen.first(2)?;
                    c.finish_reason = p.opt_text()?;
                }
                // Only null here: serde reads a stop string or token id.
                b"stop_reason" | b"matched_stop" => {
                    seen.first(if key == b"stop_reason" { 3 } else { 4 })?;
                    p.null()?;
                }
                _ => p.skip_value(0)?,
            }
            Some(())
        })?;
        Some(c)
    }

    fn delta(&mut self, spans: &mut Spans) -> Option<Delta<'a>> {
        let mut d = Delta {
            content: None,
            reasoning_content: None,
            reasoning: None,
            tool_calls: None,
        };
        (spans.content, spans.reasoning_content, spans.reasoning) = (None, None, None);
        let mut seen = Seen::default();
        self.object(|p, key| {
            match key {
                b"content" => {
                    seen.first(0)?;
                    let (text, span) = p.opt_text_at()?;
                    (d.content, spans.content) = (text, Some(span));
                }
                b"reasoning_content" => {
                    seen.first(1)?;
                    let (text, span) = p.opt_text_at()?;
                    (d.reasoning_content, spans.reasoning_content) = (text, Some(span));
                }
                b"reasoning" => {
                    seen.first(2)?;
                    let (text, span) = p.opt_text_at()?;
                    (d.reasoning, spans.reasoning) = (text, Some(span));
                }
                // Only null here: serde reads tool calls.
                b"tool_calls" => {
                    seen.first(3)?;
                    p.null()?;
                }
                _ => p.skip_value(0)?,
            }
            Some(())
        })?;
        Some(d)
    }

    /// `opt_text`, and [start, end) of its token.
    fn opt_text_at(&mut self) -> Option<(Option<Text<'a>>, (usize, usize))> {
        self.ws();
        let start = self.i;
        let text = self.opt_text()?;
        Some((text, (start, self.i)))
    }

    /// null or a string.
    fn opt_text(&mut self) -> Option<Option<Text<'a>>> {
        if self.peek()? == b'n' {
            self.null()?;
            return Some(None);
        }
        let (raw, escaped) = self.raw_str()?;
        let text = std::str::from_utf8(raw).ok()?;
        Some(Some(Text(if escaped {
            Cow::Owned(unescape(text)?)
        } else {
            Cow::Borrowed(text)
        })))
    }

    /// An unsigned integer that fits a u32, as serde reads `index` (no sign, fraction, exponent).
    fn index(&mut self) -> Option<u32> {
        self.ws();
        let start = self.i;
        let mut v: u32 = 0;
        while let Some(d @ b'0'..=b'9') = self.b.get(self.i) {
            v = v.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
            self.i += 1;
        }
        let digits = self.i - start;
        let leading_zero = digits > 1 && self.b.get(start) == Some(&b'0');
        let more = matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'));
        (digits > 0 && !leading_zero && !more).then_some(v)
    }

    /// The bytes between a string's quotes, and whether it has escapes. Control characters are
    /// refused (as JSON does); the escapes themselves are checked by `unescape`.
    fn raw_str(&mut self) -> Option<(&'a [u8], bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        // Eight bytes at a time to the first quote, backslash or control character (a chunk's
        // strings are short: keys, ids, a few words, where a memchr's setup costs more).
        loop {
            let word = self
                .b
                .get(self.i..self.i + 8)
                .and_then(|w| <[u8; 8]>::try_from(w).ok());
            if let Some(w) = word {
                // To the first byte that is one (past all eight when none is).
                let first = escape_mask(u64::from_le_bytes(w)).trailing_zeros() / 8;
                self.i += first as usize;
                if first == 8 {
                    continue;
                }
            }
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.i += 2;
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
        let raw = self.b.get(start..self.i)?;
        self.i += 1;
        Some((raw, escaped))
    }

    /// Any JSON value, checked as far as serde would refuse it, and dropped.
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => {
                let (raw, escaped) = self.raw_str()?;
                let text = std::str::from_utf8(raw).ok()?;
                if escaped {
                    unescape(text)?;
                }
                Some(())
            }
            b'{' => self.object(|p, _| p.skip_value(depth + 1)),
            b'[' => self.opt_array(|p| p.skip_value(depth + 1)).map(|_| ()),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.null(),
            _ => self.number(),
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let digits = |p: &mut Self| {
            let start = p.i;
            while let Some(b'0'..=b'9') = p.b.get(p.i) {
                p.i += 1;
            }
            (p.i > start).then_some(p.i - start)
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let first = self.b.get(self.i).copied();
        let n = digits(self)?;
        if first == Some(b'0') && n > 1 {
            return None;
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            digits(self)?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            digits(self)?;
        }
        Some(())
    }
}

/// A string's escapes resolved; None for an escape JSON does not have or a lone surrogate
/// (serde refuses both).
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let c = match chars.next()? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hex = |chars: &mut std::str::Chars<'_>| -> Option<u32> {
                    let s: String = chars.by_ref().take(4).collect();
                    (s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                        .then(|| u32::from_str_radix(&s, 16).ok())
                        .flatten()
                };
                let hi = hex(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if chars.next()? != '\\' || chars.next()? != 'u' {
                        return None;
                    }
                    let lo = hex(&mut chars)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else if (0xDC00..0xE000).contains(&hi) {
                    return None;
                } else {
                    hi
                };
                char::from_u32(code)?
            }
            _ => return None,
        };
        out.push(c);
    }
    Some(out)
}

#[cfg(test)]
/// What the translator reads of a chunk, to compare two readings of it (tests: the scan's with
/// serde's here, a template's with serde's in chunk_template.rs).
pub(super) fn seen(c: &Chunk<'_>) -> String {
    let text = |t: &Option<Text<'_>>| format!("{:?}", t.as_ref().map(|t| t.0.as_ref()));
    let raw = |r: &Option<&RawValue>| format!("{:?}", r.map(RawValue::get));
    let choices = c.choices.as_ref().map(|cs| {
        cs.iter()
            .map(|ch| {
                let delta = ch.delta.as_ref().map(|d| {
                    format!(
                        "{} {} {} {}",
                        text(&d.content),
                        text(&d.reasoning_content),
                        text(&d.reasoning),
                        d.tool_calls.as_ref().map_or(0, Vec::len)
                    )
                });
                format!(
                    "{} {delta:?} {} {} {}",
                    ch.index,
                    text(&ch.finish_reason),
                    raw(&ch.stop_reason),
                    raw(&ch.matched_stop)
                )
            })
            .collect::<Vec<_>>()
    });
    format!(
        "{} {} {} {} {choices:?}",
        text(&c.id),
        text(&c.object),
        c.usage.is_some(),
        raw(&c.error)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(data: &str) -> bool {
        let by_serde = serde_json::from_slice::<Chunk<'_>>(data.as_bytes());
        match scan(data.as_bytes()) {
            Some(c) => {
                let s = by_serde.unwrap_or_else(|e| {
                    unreachable!("serde refuses what the scan read: {e}: {data}")
                });
                assert_eq!(seen(&c), seen(&s), "{data}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn the_servers_content_chunks_are_scanned_as_serde_reads_them() {
        let chunks = [
            // the bundled mock, vLLM, Ollama, llama.cpp (keys in another order), LM Studio
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1796177576,"model":"m","choices":[{"index":0,"delta":{"content":"lorem "},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-2","object":"chat.completion.chunk","created":1,"model":"q","choices":[{"index":0,"delta":{"content":"a\n\"b\" \u00e9 \ud83d\ude00"},"logprobs":null,"finish_reason":null,"stop_reason":null}]}"#,
            r#"{"id":"chatcmpl-3","object":"chat.completion.chunk","created":1,"model":"l","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":"x"},"finish_reason":null}]}"#,
            r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"y"}}],"created":1,"id":"c","model":"g","system_fingerprint":"b1-x","object":"chat.completion.chunk","timings":{"prompt_n":3,"predicted_ms":1.5e1,"x":[true,false,null,-0.5E-3]}}"#,
            r#" { "id" : "c" , "choices" : [ { "index" : 0 , "delta" : { "reasoning_content" : "think" } , "finish_reason" : null } ] , "usage" : null } "#,
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"reasoning":"r","content":null},"finish_reason":"length","matched_stop":null}]}"#,
            r#"{"id":"c","choices":[]}"#,
            r#"{"id":null,"choices":null}"#,
            r#"{}"#,
            r#"{"id":"c","choices":[{"index":1,"delta":null},{"index":0,"delta":{"content":""}}],"error":null}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a","tool_calls":null}}]}"#,
        ];
        for c in chunks {
            assert!(check(c), "not scanned: {c}");
        }
    }

    #[test]
    fn what_the_scan_does_not_know_is_left_to_serde() {
        let left = [
            // read by serde: usage, errors, stop strings, tool calls
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            r#"{"error":{"message":"x"}}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop","stop_reason":"END"}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            // refused by serde too, or in doubt
            r#"{"id":"c","id":"d"}"#,
            r#"{"id":"c","choices":[{"index":0,"index":1}]}"#,
            r#"{"id":"c","choices":[{"index":-1}]}"#,
            r#"{"id":"c","choices":[{"index":1.0}]}"#,
            r#"{"id":"c","choices":[{"index":4294967296}]}"#,
            r#"{"id":"c","choices":[{"index":01}]}"#,
            r#"{"id":5}"#,
            r#"{"id":"a\qb"}"#,
            r#"{"id":"a\ud800b"}"#,
            r#"{"id":"a\udc00"}"#,
            r#"{"id":"a\u12"}"#,
            "{\"id\":\"a\tb\"}",
            r#"{"i\u0064":"c"}"#,
            r#"{"id":"c"} x"#,
            r#"{"id":"c",}"#,
            r#"{"id":"c""choices":[]}"#,
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":-}"#,
            r#"{"x":tru}"#,
            r#"{"x":[1,]}"#,
            r#"[1]"#,
            r#""#,
            r#"{"id":"c""#,
        ];
        for c in left {
            assert!(!check(c), "scanned: {c}");
        }
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(40), "]".repeat(40));
        assert!(!check(&deep));
    }

    #[test]
    fn any_mix_of_known_shapes_reads_as_serde_reads_it() {
        // Pieces joined at random, whitespace and all: whatever the scan reads, serde reads alike.
        let values = [
            r#""plain""#,
            r#""es\"c\\a\/p\be\fd\n\r\t""#,
            r#""\u00e9\u4e2d\ud83d\ude00""#,
            r#""é中😀""#,
            "null",
            "0",
            "-12.5e+3",
            "true",
            "false",
            "[]",
            r#"{"a":[{"b":null}]}"#,
            r#""\x""#,
            "01",
            r#""\ud800""#,
            "nul",
            "[1,]",
        ];
        let keys = [
            "id",
            "object",
            "model",
            "created",
            "content",
            "reasoning",
            "reasoning_content",
            "finish_reason",
            "index",
            "role",
            "logprobs",
            "usage",
            "error",
            "tool_calls",
            "stop_reason",
            "matched_stop",
        ];
        let ws = ["", " ", "\n", "\t "];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut with_delta = 0;
        for _ in 0..20_000 {
            let object = |next: &mut dyn FnMut(usize) -> usize, inner: Option<(&str, &str)>| {
                let n = next(4);
                let mut fields: Vec<String> = (0..n)
                    .map(|_| {
                        let key = keys[next(keys.len())];
                        let value = values[next(values.len())];
                        let w = ws[next(ws.len())];
                        format!("{w}\"{key}\"{w}:{w}{value}{w}")
                    })
                    .collect();
                if let Some((key, value)) = inner {
                    if next(6) != 0 {
                        let at = next(fields.len() + 1);
                        fields.insert(at, format!("\"{key}\":{value}"));
                    }
                }
                format!("{{{}}}", fields.join(","))
            };
            let delta = object(&mut next, None);
            let choice = object(&mut next, Some(("delta", &delta)));
            let choices = format!("[{choice}]");
            let chunk = object(&mut next, Some(("choices", &choices)));
            if check(&chunk) && chunk.contains("\"delta\":{") {
                with_delta += 1;
            }
        }
        assert!(
            with_delta > 500,
            "the scan read only {with_delta} chunks with a delta"
        );
    }
}
