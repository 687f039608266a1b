//! One validating pass over a request body, picking out what routing needs.
//!
//! A full parse would build a tree for a body that is forwarded byte for byte, so instead a
//! hand-written scanner checks the JSON grammar (RFC 8259) and records the few facts the
//! control plane asks for: the top-level `model` (and where its bytes are, so it can be
//! swapped without re-serializing), `stream`, whether `tools` is non-empty, and how many image
//! parts there are at any depth. String bodies, which are most of a coding agent's request,
//! are skipped with `memchr`.

use core::fmt;

use memchr::memchr2;

/// What `inspect_request` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// The top-level `"model"` string, unescaped; `None` when absent or not a string.
    pub model: Option<String>,
    /// Byte range `[start, end)` of the model value including its quotes.
    pub model_span: Option<(usize, usize)>,
    /// Top-level `"stream"` is `true`.
    pub stream: bool,
    /// Objects anywhere with `"type": "image"` or `"type": "image_url"`.
    pub image_count: u32,
    /// Top-level `"tools"` is a non-empty array.
    pub has_tools: bool,
    /// What the top-level `"stream_options"` says about the usage chunk of a stream.
    pub stream_options: StreamOptions,
}

/// The top-level `"stream_options"` of an OpenAI Chat Completions request, as far as the
/// final usage chunk is concerned; spans are `[start, end)` of the values' bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// `stream_options.include_usage` is `true`.
    pub include_usage: bool,
    /// The value of `"stream_options"` (any JSON value).
    pub span: Option<(usize, usize)>,
    /// The value of `"include_usage"` directly inside a `"stream_options"` object.
    pub include_usage_span: Option<(usize, usize)>,
}

/// Why a body was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanError {
    /// Not JSON: `what` went wrong at byte `offset`.
    Invalid { offset: usize, what: &'static str },
    /// Valid JSON, but the top-level value is not an object.
    NotObject,
    /// A key the gateway decides on (`key`) given twice. JSON parsers differ on which one wins
    /// (most take the last, some the first), so the gateway and the upstream could read
    /// different models: a key allowed one model served another.
    DuplicateKey { offset: usize, key: &'static str },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Invalid { offset, what } => {
                write!(f, "invalid JSON at byte {offset}: {what}")
            }
            ScanError::NotObject => f.write_str("request body must be a JSON object"),
            ScanError::DuplicateKey { offset, key } => write!(
                f,
                "the key \"{key}\" appears twice in the request body (again at byte {offset}): give it once"
            ),
        }
    }
}

/// A key whose value the scanner must look at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    None,
    Model,
    Stream,
    Tools,
    Type,
    StreamOptions,
    IncludeUsage,
}

impl Watch {
    /// For a key that may appear only once: its bit among the seen keys, and its name.
    fn once(self) -> Option<(u8, &'static str)> {
        match self {
            Watch::None | Watch::Type => None,
            Watch::Model => Some((1, "model")),
            Watch::Stream => Some((2, "stream")),
            Watch::Tools => Some((4, "tools")),
            Watch::StreamOptions => Some((8, "stream_options")),
            Watch::IncludeUsage => Some((16, "include_usage")),
        }
    }
}

// Stack entries: what the open container is.
const ARRAY: u8 = 0;
const OBJECT: u8 = 1;
const IMAGE_OBJECT: u8 = 2;

/// Validates `body` as JSON and reports what routing needs from a request object.
pub fn inspect_request(body: &[u8]) -> Result<RequestInfo, ScanError> {
    if let Err(e) = core::str::from_utf8(body) {
        return Err(invalid(e.valid_up_to(), "invalid UTF-8"));
    }
    let mut s = Scanner { b: body, pos: 0 };
    let mut info = RequestInfo::default();
    let mut stack: Vec<u8> = Vec::with_capacity(32);
    let mut watch = Watch::None;
    let mut top_is_object = false;
    // Where the container value of `stream_options` (stack depth 2) and of its `include_usage`
    // (depth 3) started, while it is open.
    let mut so_open: Option<usize> = None;
    let mut iu_open: Option<usize> = None;
    // The watched keys seen so far (one bit each; `type` is not one: it is per content block).
    let mut seen: u8 = 0;

    s.skip_ws();
    if s.pos == body.len() {
        return Err(invalid(0, "the body is empty"));
    }
    if body[s.pos..].starts_with("\u{feff}".as_bytes()) {
        // JSON text on the wire has none (RFC 8259 8.1); said plainly, not "expected a value".
        return Err(invalid(
            s.pos,
            "a byte order mark (U+FEFF) before the JSON; send it without one",
        ));
    }
    'value: loop {
        // A value starts here; `watch` says whether its key is one we care about.
        s.skip_ws();
        let w = core::mem::replace(&mut watch, Watch::None);
        let value_start = s.pos;
        if let Some((bit, key)) = w.once() {
            if seen & bit != 0 {
                return Err(ScanError::DuplicateKey {
                    offset: value_start,
                    key,
                });
            }
            seen |= bit;
        }
        if w == Watch::Type {
            // The value below says whether this content block is an image (a repeated `type`:
            // the last one).
            if let Some(top) = stack.last_mut() {
                *top = OBJECT;
            }
        }
        match s.peek() {
            Some(b'{') => {
                if stack.is_empty() {
                    top_is_object = true;
                }
                s.pos += 1;
                s.skip_ws();
                if s.peek() == Some(b'}') {
                    s.pos += 1;
                } else {
                    stack.push(OBJECT);
                    open_watched(w, value_start, &mut so_open, &mut iu_open);
                    watch = s.member_key(stack.len(), so_open.is_some())?;
                    continue 'value;
                }
            }
            Some(b'[') => {
                s.pos += 1;
                s.skip_ws();
                let empty = s.peek() == Some(b']');
                if w == Watch::Tools {
                    info.has_tools = !empty;
                }
                if empty {
                    s.pos += 1;
                } else {
                    stack.push(ARRAY);
                    open_watched(w, value_start, &mut so_open, &mut iu_open);
                    continue 'value;
                }
            }
            Some(b'"') => {
                let start = s.pos;
                let escaped = s.string()?;
                match w {
                    Watch::Model => {
                        info.model = Some(unescape(&body[start + 1..s.pos - 1], escaped));
                        info.model_span = Some((start, s.pos));
                    }
                    Watch::Type => {
                        let raw = &body[start + 1..s.pos - 1];
                        let is_image = if escaped {
                            let v = unescape(raw, true);
                            v == "image" || v == "image_url"
                        } else {
                            raw == b"image" || raw == b"image_url"
                        };
                        if let (true, Some(top)) = (is_image, stack.last_mut()) {
                            *top = IMAGE_OBJECT;
                        }
                    }
                    _ => {}
                }
            }
            Some(b't') => {
                s.literal(b"true")?;
                if w == Watch::Stream {
                    info.stream = true;
                }
                if w == Watch::IncludeUsage {
                    info.stream_options.include_usage = true;
                }
            }
            Some(b'f') => s.literal(b"false")?,
            Some(b'n') => s.literal(b"null")?,
            Some(b'-' | b'0'..=b'9') => s.number()?,
            Some(_) => return Err(invalid(s.pos, "expected a value")),
            None => return Err(invalid(s.pos, "unexpected end of input, expected a value")),
        }
        // A whole value of a watched key (a scalar or an empty container) ends here.
        match w {
            Watch::StreamOptions => info.stream_options.span = Some((value_start, s.pos)),
            Watch::IncludeUsage => {
                info.stream_options.include_usage_span = Some((value_start, s.pos));
            }
            _ => {}
        }
        // After a value: close containers or move to the next element.
        loop {
            let Some(&top) = stack.last() else {
                break 'value;
            };
            s.skip_ws();
            match (top, s.peek()) {
                (ARRAY, Some(b',')) => {
                    s.pos += 1;
                    continue 'value;
                }
                (ARRAY, Some(b']')) => {
                    s.pos += 1;
                    stack.pop();
                    close_watched(stack.len(), s.pos, &mut info, &mut so_open, &mut iu_open);
                }
                (ARRAY, Some(_)) => {
                    return Err(invalid(s.pos, "expected ',' or ']' after an array element"))
                }
                (_, Some(b',')) => {
                    s.pos += 1;
                    watch = s.member_key(stack.len(), so_open.is_some())?;
                    continue 'value;
                }
                (_, Some(b'}')) => {
                    s.pos += 1;
                    if top == IMAGE_OBJECT {
                        info.image_count += 1;
                    }
                    stack.pop();
                    close_watched(stack.len(), s.pos, &mut info, &mut so_open, &mut iu_open);
                }
                (_, Some(_)) => {
                    return Err(invalid(s.pos, "expected ',' or '}' after an object member"))
                }
                (_, None) => {
                    return Err(invalid(s.pos, "unexpected end of input inside a container"))
                }
            }
        }
    }
    s.skip_ws();
    if s.pos != body.len() {
        return Err(invalid(s.pos, "unexpected data after the top-level value"));
    }
    if !top_is_object {
        return Err(ScanError::NotObject);
    }
    Ok(info)
}

/// A container value of `stream_options` or of its `include_usage` opened at `start`.
#[inline]
fn open_watched(w: Watch, start: usize, so: &mut Option<usize>, iu: &mut Option<usize>) {
    match w {
        Watch::StreamOptions => *so = Some(start),
        Watch::IncludeUsage => *iu = Some(start),
        _ => {}
    }
}

/// A container just closed, leaving `depth` open ones: it ended a watched value when that
/// value was the one open at this depth.
#[inline]
fn close_watched(
    depth: usize,
    end: usize,
    info: &mut RequestInfo,
    so: &mut Option<usize>,
    iu: &mut Option<usize>,
) {
    if depth == 1 {
        if let Some(start) = so.take() {
            info.stream_options.span = Some((start, end));
        }
    } else if depth == 2 && so.is_some() {
        if let Some(start) = iu.take() {
            info.stream_options.include_usage_span = Some((start, end));
        }
    }
}

fn invalid(offset: usize, what: &'static str) -> ScanError {
    ScanError::Invalid { offset, what }
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Reads `"key" :` at the start of an object member; returns what to watch for its value.
    /// `in_stream_options`: the top-level `stream_options` value is open.
    fn member_key(&mut self, depth: usize, in_stream_options: bool) -> Result<Watch, ScanError> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return Err(invalid(self.pos, "expected a string key"));
        }
        let start = self.pos + 1;
        let escaped = self.string()?;
        let raw = &self.b[start..self.pos - 1];
        // The longest watched key, "stream_options", is 84 bytes with every letter escaped
        // (`\u0073...`): a key past that is none of them, however it is written.
        let watch = if raw.len() > 84 {
            Watch::None
        } else if escaped {
            classify_key(unescape(raw, true).as_bytes(), depth, in_stream_options)
        } else {
            classify_key(raw, depth, in_stream_options)
        };
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(invalid(self.pos, "expected ':' after an object key"));
        }
        self.pos += 1;
        Ok(watch)
    }

    /// Skips a string starting at the opening quote; returns whether it has escapes.
    fn string(&mut self) -> Result<bool, ScanError> {
        let b = self.b;
        let open = self.pos;
        let mut i = open + 1;
        let mut escaped = false;
        loop {
            // Short runs (keys, escape-dense text) are quickest byte by byte; long runs go to
            // memchr, with control characters checked over the run afterwards.
            let short_end = (i + 16).min(b.len());
            while i < short_end && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
                i += 1;
            }
            let j = if i < short_end {
                i
            } else {
                let Some(off) = memchr2(b'"', b'\\', &b[i..]) else {
                    return Err(invalid(open, "unterminated string"));
                };
                check_control(&b[i..i + off], i)?;
                i + off
            };
            match b[j] {
                b'"' => {
                    self.pos = j + 1;
                    return Ok(escaped);
                }
                b'\\' => {}
                _ => return Err(invalid(j, "control character in string")),
            }
            escaped = true;
            match b.get(j + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i = j + 2,
                Some(b'u') => {
                    let hex = b.get(j + 2..j + 6);
                    if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                        return Err(invalid(j, "invalid \\u escape in string"));
                    }
                    i = j + 6;
                }
                Some(_) => return Err(invalid(j, "invalid escape in string")),
                None => return Err(invalid(open, "unterminated string")),
            }
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(invalid(self.pos, "expected a value"))
        }
    }

    fn number(&mut self) -> Result<(), ScanError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(invalid(start, "invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(invalid(start, "invalid number: expected a digit after '.'"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(invalid(
                    start,
                    "invalid number: expected a digit in the exponent",
                ));
            }
            self.digits();
        }
        Ok(())
    }

    #[inline]
    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

#[inline]
fn classify_key(key: &[u8], depth: usize, in_stream_options: bool) -> Watch {
    match key {
        b"type" => Watch::Type,
        b"model" if depth == 1 => Watch::Model,
        b"stream" if depth == 1 => Watch::Stream,
        b"tools" if depth == 1 => Watch::Tools,
        b"stream_options" if depth == 1 => Watch::StreamOptions,
        b"include_usage" if depth == 2 && in_stream_options => Watch::IncludeUsage,
        _ => Watch::None,
    }
}

/// Control characters (below U+0020) must be escaped inside JSON strings.
#[inline]
fn check_control(seg: &[u8], base: usize) -> Result<(), ScanError> {
    // A branch-free minimum vectorizes; the position is only searched for on error.
    if seg.iter().fold(0xff_u8, |m, &c| m.min(c)) >= 0x20 {
        return Ok(());
    }
    let at = seg.iter().position(|&c| c < 0x20).unwrap_or(0);
    Err(invalid(base + at, "control character in string"))
}

/// Decodes the inside of a JSON string the scanner already validated. Lone surrogates become
/// U+FFFD.
pub fn unescape(raw: &[u8], escaped: bool) -> String {
    if !escaped {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let Some(off) = memchr::memchr(b'\\', &raw[i..]) else {
            out.push_str(&String::from_utf8_lossy(&raw[i..]));
            break;
        };
        out.push_str(&String::from_utf8_lossy(&raw[i..i + off]));
        i += off;
        let c = raw.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        match c {
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let hi = hex4(raw, i);
                i += 4;
                let ch = if (0xD800..0xDC00).contains(&hi) && raw.get(i..i + 2) == Some(b"\\u") {
                    let lo = hex4(raw, i + 2);
                    if (0xDC00..0xE000).contains(&lo) {
                        i += 6;
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                    } else {
                        None
                    }
                } else {
                    char::from_u32(hi)
                };
                out.push(ch.unwrap_or('\u{FFFD}'));
            }
            other => out.push(char::from(other)),
        }
    }
    out
}

fn hex4(raw: &[u8], at: usize) -> u32 {
    let Some(h) = raw.get(at..at + 4) else {
        return 0xFFFD;
    };
    h.iter().fold(0, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => 0,
        };
        (acc << 4) | u32::from(d)
    })
}

/// `s` as a JSON string literal, quotes included; non-ASCII stays UTF-8.
pub fn json_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for &c in s.as_bytes() {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
            _ => out.push(c),
        }
    }
    out.push(b'"');
    out
}

/// `body` with `body[start..end]` replaced by `model` as a JSON string.
pub fn replace_model(
    body: &[u8],
    span: (usize, usize),
    model: &str,
) -> Result<Vec<u8>, &'static str> {
    let (start, end) = span;
    if start > end || end > body.len() {
        return Err("span is outside the body");
    }
    let lit = json_string(model);
    let mut out = Vec::with_capacity(body.len() - (end - start) + lit.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(&lit);
    out.extend_from_slice(&body[end..]);
    Ok(out)
}

const INCLUDE_USAGE_MEMBER: &[u8] = br#""include_usage":true"#;

/// `body` (as `info` describes it) with `stream_options.include_usage` set to `true`, and the
/// model value swapped for `model` when given: the usage chunk is asked for while every other
/// byte stays as the client sent it. An existing `include_usage` value becomes `true`; a
/// `stream_options` object gains the member; any other `stream_options` value is replaced; a
/// body without one gets `"stream_options":{"include_usage":true}` appended as its last member.
pub fn with_include_usage(
    body: &[u8],
    info: &RequestInfo,
    model: Option<&str>,
) -> Result<Vec<u8>, &'static str> {
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::with_capacity(2);
    if let (Some(m), Some((a, b))) = (model, info.model_span) {
        edits.push((a, b, json_string(m)));
    }
    let so = &info.stream_options;
    if !so.include_usage {
        let is_ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
        match (so.include_usage_span, so.span) {
            (Some((a, b)), _) => edits.push((a, b, b"true".to_vec())),
            (None, Some((a, b))) if body.get(a) == Some(&b'{') && b >= a + 2 => {
                let empty = body
                    .get(a + 1..b - 1)
                    .is_some_and(|inner| inner.iter().all(is_ws));
                let mut member = INCLUDE_USAGE_MEMBER.to_vec();
                if !empty {
                    member.push(b',');
                }
                edits.push((a + 1, a + 1, member));
            }
            (None, Some((a, b))) => {
                let mut obj = b"{".to_vec();
                obj.extend_from_slice(INCLUDE_USAGE_MEMBER);
                obj.push(b'}');
                edits.push((a, b, obj));
            }
            (None, None) => {
                // Before the closing brace of the top-level object.
                let close = body
                    .iter()
                    .rposition(|c| !is_ws(c))
                    .filter(|&i| body[i] == b'}')
                    .ok_or("the body is not a JSON object")?;
                let before = body[..close].iter().rposition(|c| !is_ws(c));
                let mut member = Vec::with_capacity(48);
                if before.is_some_and(|i| body[i] != b'{') {
                    member.push(b',');
                }
                member.extend_from_slice(br#""stream_options":{"#);
                member.extend_from_slice(INCLUDE_USAGE_MEMBER);
                member.push(b'}');
                edits.push((close, close, member));
            }
        }
    }
    edits.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(body.len() + 48);
    let mut from = 0;
    for (a, b, bytes) in edits {
        if a < from || b < a || b > body.len() {
            return Err("span is outside the body");
        }
        out.extend_from_slice(&body[from..a]);
        out.extend_from_slice(&bytes);
        from = b;
    }
    out.extend_from_slice(&body[from..]);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn ok(body: &str) -> RequestInfo {
        inspect_request(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    fn bad(body: &[u8]) -> ScanError {
        match inspect_request(body) {
            Ok(i) => panic!("accepted {:?}: {i:?}", String::from_utf8_lossy(body)),
            Err(e) => e,
        }
    }

    #[test]
    fn picks_out_routing_facts() {
        let body = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,
            "tools":[{"name":"Bash","input_schema":{"type":"object","properties":{"type":{"type":"string"}}}}],
            "messages":[{"role":"user","content":[{"type":"text","text":"look"},
              {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}},
              {"type":"tool_result","tool_use_id":"t1","content":[{"type":"image","source":{"type":"url","url":"https://x/y.png"}},{"type":"text","text":"ok"}]}]}]}"#;
        let info = ok(body);
        assert_eq!(info.model.as_deref(), Some("claude-sonnet-4-5"));
        let (a, b) = info.model_span.unwrap();
        assert_eq!(&body[a..b], "\"claude-sonnet-4-5\"");
        assert!(info.stream && info.has_tools);
        assert_eq!(info.image_count, 2);
    }

    #[test]
    fn openai_images_and_defaults() {
        let info = ok(
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA"}},
            {"type":"text","text":"{\"type\":\"image\"}"},{"image_url":{"url":"u"},"type":"image_url"}]}],
            "model":"gpt-4o","stream":false,"tools":[]}"#,
        );
        assert_eq!(info.image_count, 2);
        assert!(!info.stream && !info.has_tools);
        assert_eq!(info.model.as_deref(), Some("gpt-4o"));
        let info = ok(r#"{"nested":{"model":"x","stream":true,"tools":[1]},"model":7}"#);
        assert_eq!(info, RequestInfo::default());
        // A key the gateway decides on may appear once: upstreams differ on which one wins.
        // (the body, the key, its second value: where the error points)
        for (body, key, again) in [
            (r#"{"model":"a","model":null}"#, "model", "null"),
            (
                r#"{"stream":true,"x":1,"stream":"yes"}"#,
                "stream",
                r#""yes""#,
            ),
            (r#"{"tools":[],"tools":[1]}"#, "tools", "[1]"),
            (r#"{"mod\u0065l":"a","model":"b"}"#, "model", r#""b""#),
            (
                r#"{"stream_options":{"include_usage":true},"stream_options":{}}"#,
                "stream_options",
                "{}}",
            ),
            (
                r#"{"stream_options":{},"\u0073\u0074\u0072\u0065\u0061\u006d\u005f\u006f\u0070\u0074\u0069\u006f\u006e\u0073":1}"#,
                "stream_options",
                "1}",
            ),
            (
                r#"{"stream_options":{"include_usage":false , "include_usage" : true}}"#,
                "include_usage",
                "true}",
            ),
        ] {
            let offset = body.rfind(again).unwrap();
            assert_eq!(
                inspect_request(body.as_bytes()),
                Err(ScanError::DuplicateKey { offset, key }),
                "{body}"
            );
        }
        // ...at the top level: the same names further in are other things.
        let info =
            ok(r#"{"model":"a","messages":[{"model":"b","stream":1}],"metadata":{"model":"c"}}"#);
        assert_eq!(info.model.as_deref(), Some("a"));
        // A later non-image "type" overrides an earlier image one in the same object.
        assert_eq!(
            ok(r#"{"a":{"type":"image","type":"text"},"b":{"type":{"type":"image"}}}"#).image_count,
            1
        );
    }

    #[test]
    fn escaped_keys_and_values() {
        let body = r#"{"mod\u0065l":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t","c":[{"\u0074ype":"im\u0061ge"}]}"#;
        let info = ok(body);
        assert_eq!(
            info.model.as_deref(),
            Some("caf\u{e9} \u{1F600} \"q\" \\ / \u{8}\u{c}\n\r\t")
        );
        assert_eq!(info.image_count, 1);
        assert_eq!(
            ok(r#"{"model":"\ud800x"}"#).model.as_deref(),
            Some("\u{FFFD}x")
        );
    }

    #[test]
    fn valid_corpus() {
        for body in [
            "{}",
            " \t\r\n{ } \n",
            r#"{"a":[]}"#,
            r#"{"a":[[],[{}],{"b":[1,2,3]}]}"#,
            r#"{"n":[0,-0,1,-1,0.5,-0.5e+10,1E5,1e-7,12345678901234567890123,3.0e0]}"#,
            r#"{"t":true,"f":false,"z":null}"#,
            r#"{"s":"\u0000\u001f\uFFFF\uD834\uDD1E","e":"","u":"日本語 ✓"}"#,
            r#"{"":""}"#,
        ] {
            ok(body);
        }
    }

    #[test]
    fn a_byte_order_mark_is_named() {
        let e = bad("\u{feff}{\"model\":\"m\"}".as_bytes());
        assert_eq!(
            e.to_string(),
            "invalid JSON at byte 0: a byte order mark (U+FEFF) before the JSON; send it without one"
        );
    }

    #[test]
    fn invalid_corpus() {
        for body in [
            &b""[..],
            b"   ",
            b"{",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{\"a\":[1,]}",
            b"{\"a\":[1 2]}",
            b"{,}",
            b"{\"a\":1}}",
            b"{\"a\":1} x",
            b"{\"a\":1}{}",
            b"{'a':1}",
            b"{a:1}",
            b"{\"a\":01}",
            b"{\"a\":1.}",
            b"{\"a\":.5}",
            b"{\"a\":1e}",
            b"{\"a\":1e+}",
            b"{\"a\":-}",
            b"{\"a\":+1}",
            b"{\"a\":0x10}",
            b"{\"a\":NaN}",
            b"{\"a\":Infinity}",
            b"{\"a\":tru}",
            b"{\"a\":nul}",
            b"{\"a\":True}",
            b"{\"a\":\"x}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":\"\\u12G4\"}",
            b"{\"a\":\"\\u12\"}",
            b"{\"a\":\"tab\there\"}",
            b"{\"a\":\"new\nline\"}",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"\xe2\x82\"}",
            b"{\"a\" 1}",
            b"{\"a\":[}",
            b"{\"a\":{]}",
            b"\xEF\xBB\xBF{}",
        ] {
            assert!(
                matches!(bad(body), ScanError::Invalid { .. }),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn messages_name_the_byte() {
        assert_eq!(
            bad(b"{\"a\":1,}").to_string(),
            "invalid JSON at byte 7: expected a string key"
        );
        assert_eq!(
            bad(b"{\"a\": [1, 2}").to_string(),
            "invalid JSON at byte 11: expected ',' or ']' after an array element"
        );
        assert_eq!(
            bad(b"{\"a\":1} x").to_string(),
            "invalid JSON at byte 8: unexpected data after the top-level value"
        );
        for top in [
            &b"[]"[..],
            b"\"s\"",
            b"1",
            b"null",
            b" [{\"model\":\"x\"}] ",
        ] {
            assert_eq!(bad(top), ScanError::NotObject);
            assert_eq!(bad(top).to_string(), "request body must be a JSON object");
        }
        assert!(matches!(bad(b"[1,]"), ScanError::Invalid { .. }));
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let mut s = String::from("{\"a\":");
        s.push_str(&"[".repeat(100_000));
        s.push_str(&"]".repeat(100_000));
        s.push('}');
        ok(&s);
    }

    /// Differential test against serde_json on random mutations of a valid body.
    #[test]
    fn agrees_with_serde_json_on_mutations() {
        let base = br#"{"model":"m","x":[1,-2.5e3,true,false,null,"a\"b\\c\u00e9",{"type":"image"},{}],"y":{"z":[]}}"#;
        let alphabet = b"{}[]:,\"\\ -+.0123456789eEtrufalsn\x01\tx";
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut b = base.to_vec();
            for _ in 0..(next() % 3 + 1) {
                let i = (next() % b.len() as u64) as usize;
                let c = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => b[i] = c,
                    1 => b.insert(i, c),
                    _ => {
                        b.remove(i);
                    }
                }
            }
            let ours = inspect_request(&b);
            let theirs = serde_json::from_slice::<serde_json::Value>(&b);
            match (&ours, &theirs) {
                (Ok(_), Ok(v)) => assert!(v.is_object()),
                (Err(ScanError::NotObject), Ok(v)) => assert!(!v.is_object()),
                (Err(ScanError::Invalid { .. }), Err(_)) => {}
                _ => panic!(
                    "disagree on {:?}: ours {ours:?}, serde {theirs:?}",
                    String::from_utf8_lossy(&b)
                ),
            }
        }
    }

    #[test]
    fn stream_options_found_at_the_top_level_only() {
        let body = r#"{"model":"m","stream":true,"stream_options":{"x":1,"include_usage":true},"messages":[]}"#;
        let so = ok(body).stream_options;
        assert!(so.include_usage);
        let (a, b) = so.span.unwrap();
        assert_eq!(&body[a..b], r#"{"x":1,"include_usage":true}"#);
        let (a, b) = so.include_usage_span.unwrap();
        assert_eq!(&body[a..b], "true");
        for (body, value) in [
            (r#"{"stream_options":{"include_usage":false}}"#, "false"),
            (
                r#"{"stream_options":{"include_usage":{"a":[1]}}}"#,
                r#"{"a":[1]}"#,
            ),
            (r#"{"stream_options":{"include_usage":[true]}}"#, "[true]"),
            (r#"{"stream_options":{"include_usage" : null}}"#, "null"),
        ] {
            let so = ok(body).stream_options;
            assert!(!so.include_usage, "{body}");
            let (a, b) = so.include_usage_span.unwrap();
            assert_eq!(&body[a..b], value, "{body}");
        }
        for (body, value) in [
            (r#"{"stream_options":null}"#, "null"),
            (
                r#"{"stream_options":[{"include_usage":true}]}"#,
                r#"[{"include_usage":true}]"#,
            ),
            (r#"{"stream_options":{}}"#, "{}"),
            (
                r#"{"stream_options":{"n":{"include_usage":true}}}"#,
                r#"{"n":{"include_usage":true}}"#,
            ),
        ] {
            let so = ok(body).stream_options;
            assert!(
                !so.include_usage && so.include_usage_span.is_none(),
                "{body}"
            );
            let (a, b) = so.span.unwrap();
            assert_eq!(&body[a..b], value, "{body}");
        }
        let nested = ok(r#"{"x":{"stream_options":{"include_usage":true}},"include_usage":true}"#);
        assert_eq!(nested.stream_options, StreamOptions::default());
        let escaped = ok(r#"{"stream_options":{"include_usage":true}}"#);
        assert!(escaped.stream_options.include_usage);
    }

    fn asked(body: &str, model: Option<&str>) -> String {
        let info = ok(body);
        let out = with_include_usage(body.as_bytes(), &info, model).unwrap();
        let again = ok(core::str::from_utf8(&out).unwrap());
        assert!(
            again.stream_options.include_usage,
            "{}",
            String::from_utf8_lossy(&out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["stream_options"]["include_usage"],
            serde_json::Value::Bool(true)
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn include_usage_is_asked_for_with_every_other_byte_kept() {
        assert_eq!(
            asked(r#"{"model":"a","stream":true,"messages":[]}"#, None),
            r#"{"model":"a","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(
            asked("{ \"model\" : \"a\",\n \"stream\":true }\n", Some("up/b")),
            "{ \"model\" : \"up/b\",\n \"stream\":true ,\"stream_options\":{\"include_usage\":true}}\n"
        );
        assert_eq!(
            asked(
                r#"{"stream_options":{"include_usage":false,"x":1},"model":"a"}"#,
                Some("b")
            ),
            r#"{"stream_options":{"include_usage":true,"x":1},"model":"b"}"#
        );
        assert_eq!(
            asked(
                r#"{"model":"a","stream_options":{"continuous_usage_stats":true}}"#,
                None
            ),
            r#"{"model":"a","stream_options":{"include_usage":true,"continuous_usage_stats":true}}"#
        );
        assert_eq!(
            asked(r#"{"model":"a","stream_options":{ }}"#, None),
            r#"{"model":"a","stream_options":{"include_usage":true }}"#
        );
        assert_eq!(
            asked(r#"{"model":"a","stream_options":null}"#, None),
            r#"{"model":"a","stream_options":{"include_usage":true}}"#
        );
        assert_eq!(
            asked(
                r#"{"model":"a","stream_options":{"include_usage":{"deep":[1]}}}"#,
                None
            ),
            r#"{"model":"a","stream_options":{"include_usage":true}}"#
        );
        // Already asked for: only the model changes.
        let body = r#"{"model":"a","stream_options":{"include_usage":true}}"#;
        assert_eq!(asked(body, Some("z")), body.replace("\"a\"", "\"z\""));
        assert_eq!(
            asked("{}", None),
            r#"{"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn include_usage_edit_refuses_spans_outside_the_body() {
        let info = ok(r#"{"model":"a","stream_options":{"include_usage":false}}"#);
        assert!(with_include_usage(b"{}", &info, None).is_err());
        assert!(with_include_usage(b"[]", &RequestInfo::default(), None).is_err());
    }

    #[test]
    fn replace_model_keeps_every_other_byte() {
        let body = br#"{ "max_tokens": 5, "model" :  "claude-3-5-haiku-latest" , "messages": [] }"#;
        let info = inspect_request(body).unwrap();
        let span = info.model_span.unwrap();
        let out = replace_model(body, span, "us.anthropic.claude-\"q\"\n\u{e9}").unwrap();
        assert_eq!(&out[..span.0], &body[..span.0]);
        assert_eq!(&out[out.len() - (body.len() - span.1)..], &body[span.1..]);
        let again = inspect_request(&out).unwrap();
        assert_eq!(
            again.model.as_deref(),
            Some("us.anthropic.claude-\"q\"\n\u{e9}")
        );
        assert_eq!(
            &out[span.0..span.0 + again.model_span.unwrap().1 - again.model_span.unwrap().0],
            "\"us.anthropic.claude-\\\"q\\\"\\n\u{e9}\"".as_bytes()
        );
        assert_eq!(json_string("\u{1}\u{1f}"), br#""\u0001\u001f""#);
        assert!(replace_model(body, (5, 500), "x").is_err());
        assert!(replace_model(body, (6, 5), "x").is_err());
    }
}
