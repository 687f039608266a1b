//! Server-side HTTP/1.1 request parsing for the front: the head, and the body's framing.
//!
//! Plain Rust (no Python) so `cargo test` covers the cases a client can get wrong. A request the
//! front cannot read safely is refused with the status it should get (400, 408, 431) and
//! the connection closed: in particular both `Content-Length` and `Transfer-Encoding`, or two
//! different lengths, which is how requests are smuggled past a proxy.

use core::fmt;

use memchr::memchr;

/// A request head may not be larger than this (431 beyond it); hyper, under Granian, allows ~400 KB.
pub const MAX_HEAD: usize = 256 * 1024;
const MAX_HEADERS: usize = 128;
/// A chunk-size line or a trailer section longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

/// Why a request cannot be read: the status to answer with, and what to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

fn refuse<T>(status: u16, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        status,
        message: message.into(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: String,
    /// Percent-decoded (as Granian gives it), without the query.
    pub path: String,
    /// As sent, without the `?`.
    pub query: String,
    /// Host of an absolute-form target, else None.
    pub authority: Option<String>,
    pub http10: bool,
    /// Names lower-cased, in the order sent; values trimmed.
    pub headers: Vec<(String, String)>,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub framing: Framing,
}

/// Parse a request head from the start of `buf`: Ok(None) while it is incomplete, else the
/// head and how many bytes it took.
pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, Refusal> {
    // Leading empty lines before a request line are tolerated (RFC 9112 §2.2).
    let skip = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let buf = &buf[skip..];
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return refuse(431, "request head too large");
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return refuse(431, "too many request headers"),
        Err(e) => return refuse(400, format!("malformed request: {e}")),
    };
    if used > MAX_HEAD {
        return refuse(431, "request head too large");
    }
    let method = req.method.unwrap_or("GET").to_owned();
    let http10 = req.version == Some(0);
    let target = req.path.unwrap_or("/");
    let (authority, origin) = split_target(target)?;
    let (raw_path, query) = match memchr(b'?', origin.as_bytes()) {
        Some(q) => (&origin[..q], &origin[q + 1..]),
        None => (origin, ""),
    };
    let mut headers = Vec::with_capacity(req.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut close = http10;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = String::from_utf8_lossy(h.value).trim().to_owned();
        match name.as_str() {
            "content-length" => {
                let n = parse_length(&value)?;
                if length.is_some_and(|prev| prev != n) {
                    return refuse(400, "two different Content-Length headers");
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                te_seen = true;
                // Only chunked, last, is a framing the front can read (RFC 9112 §6.3).
                let last = value.rsplit(',').next().unwrap_or("").trim();
                chunked = last.eq_ignore_ascii_case("chunked");
                if !chunked {
                    // 400 rather than RFC 9112's 501: the client's request is what cannot be read.
                    return refuse(400, format!("transfer coding {value:?} is not supported"));
                }
            }
            "connection" => {
                for token in value.split(',') {
                    let token = token.trim();
                    if token.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                        close = false;
                    }
                }
            }
            "expect" => expect_continue = value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
        headers.push((name, value));
    }
    if te_seen && length.is_some() {
        return refuse(400, "both Content-Length and Transfer-Encoding given");
    }
    if te_seen && http10 {
        return refuse(400, "Transfer-Encoding in an HTTP/1.0 request");
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    Ok(Some((
        RequestHead {
            method,
            path: percent_decode(raw_path),
            query: query.to_owned(),
            authority,
            http10,
            headers,
            keep_alive: !close,
            expect_continue: expect_continue && framing != Framing::None,
            framing,
        },
        skip + used,
    )))
}

fn parse_length(value: &str) -> Result<u64, Refusal> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return refuse(400, "Content-Length is not a number");
    }
    value
        .parse()
        .or_else(|_| refuse(400, "Content-Length is not a number"))
}

/// (authority, origin-form part) of a request target.
fn split_target(target: &str) -> Result<(Option<String>, &str), Refusal> {
    if target.starts_with('/') || target == "*" {
        return Ok((None, target));
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return refuse(400, "request target is not a path");
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let origin = &rest[end..];
    let authority = Some(rest[..end].to_owned());
    Ok((authority, if origin.is_empty() { "/" } else { origin }))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    if memchr(b'%', bytes).is_none() {
        return raw.to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Decodes a chunked request body as it arrives.
#[derive(Debug)]
pub struct ChunkedBody {
    state: ChunkState,
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        ChunkedBody {
            state: ChunkState::Size,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }
}

impl ChunkedBody {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decode from `data` into `out` until the body ends or `data` does; returns the bytes
    /// taken (the rest belongs to the next request).
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<usize, Refusal> {
        let mut at = 0;
        while at < data.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let take = (data.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&data[at..at + take]);
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailers => {
                    let Some(nl) = memchr(b'\n', &data[at..]) else {
                        self.line.extend_from_slice(&data[at..]);
                        if self.line.len() > MAX_CHUNK_LINE {
                            return refuse(400, "chunk line too long");
                        }
                        return Ok(data.len());
                    };
                    self.line.extend_from_slice(&data[at..at + nl]);
                    at += nl + 1;
                    let line = core::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.on_line(line)?;
                }
            }
        }
        Ok(at)
    }

    fn on_line(&mut self, line: &[u8]) -> Result<(), Refusal> {
        match self.state {
            ChunkState::Size => {
                let size = line.split(|b| *b == b';').next().unwrap_or(b"");
                let size = size.trim_ascii();
                if size.is_empty() || size.len() > 15 {
                    return refuse(400, "invalid chunk size");
                }
                let mut n: u64 = 0;
                for b in size {
                    let Some(d) = hex(*b) else {
                        return refuse(400, "invalid chunk size");
                    };
                    n = n << 4 | u64::from(d);
                }
                self.state = if n == 0 {
                    ChunkState::Trailers
                } else {
                    ChunkState::Data(n)
                };
            }
            ChunkState::DataEnd => {
                if !line.is_empty() {
                    return refuse(400, "chunk data longer than its size");
                }
                self.state = ChunkState::Size;
            }
            ChunkState::Trailers => {
                self.trailer_bytes += line.len();
                if self.trailer_bytes > MAX_TRAILERS {
                    return refuse(431, "trailers too large");
                }
                if line.is_empty() {
                    self.state = ChunkState::Done;
                }
            }
            ChunkState::Data(_) | ChunkState::Done => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<(RequestHead, usize)>, Refusal> {
        parse_head(raw.as_bytes())
    }

    fn ok(raw: &str) -> RequestHead {
        match head(raw) {
            Ok(Some((h, n))) => {
                assert_eq!(n, raw.find("\r\n\r\n").map_or(0, |i| i + 4));
                h
            }
            other => unreachable!("{raw:?}: {other:?}"),
        }
    }

    fn status(raw: &str) -> u16 {
        match head(raw) {
            Err(r) => r.status,
            other => unreachable!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn reads_a_post_with_a_length() {
        let h = ok("POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nX-Api-Key: k\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/v1/messages");
        assert_eq!(h.query, "beta=true");
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive);
        assert_eq!(h.headers[1], ("x-api-key".to_owned(), "k".to_owned()));
    }

    #[test]
    fn partial_heads_wait() {
        assert!(matches!(
            head("POST /v1/messages HTTP/1.1\r\nHost"),
            Ok(None)
        ));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            400
        );
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").framing,
            Framing::Length(3)
        );
    }

    #[test]
    fn limits_and_garbage() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD + 10));
        assert_eq!(status(&big), 431);
        let many: String = (0..200).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
        assert_eq!(status("\x16\x03\x01\x02\x00\x01\x00\r\n\r\n"), 400);
        assert_eq!(status("GET nope HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn targets_decode_like_granian() {
        let h = ok("GET /a%2Fb%20c/x?q=%20 HTTP/1.1\r\n\r\n");
        assert_eq!(h.path, "/a/b c/x");
        assert_eq!(h.query, "q=%20");
        let h = ok("GET http://h:1/p?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!(
            (h.authority.as_deref(), h.path.as_str(), h.query.as_str()),
            (Some("h:1"), "/p", "x=1")
        );
        assert_eq!(ok("GET /bad%zz%4 HTTP/1.1\r\n\r\n").path, "/bad%zz%4");
    }

    #[test]
    fn expect_continue_only_with_a_body() {
        assert!(
            ok("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
                .expect_continue
        );
        assert!(!ok("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    fn decode(pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), Refusal> {
        let mut c = ChunkedBody::default();
        let mut out = Vec::new();
        let mut taken = 0;
        for p in pieces {
            taken = c.feed(p, &mut out)?;
        }
        Ok((out, taken, c.done()))
    }

    #[test]
    fn chunked_bodies_in_any_pieces() {
        let raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 1..raw.len() {
            let (a, b) = raw.split_at(split);
            let mut c = ChunkedBody::default();
            let mut out = Vec::new();
            let n1 = c.feed(a, &mut out).unwrap_or(usize::MAX);
            assert_eq!(n1, a.len().min(raw.len() - 4), "split {split}");
            let n2 = c.feed(b, &mut out).unwrap_or(usize::MAX);
            assert!(c.done(), "split {split}");
            assert_eq!(out, b"hello world");
            assert_eq!([&a[n1..], &b[n2..]].concat(), b"NEXT", "split {split}");
        }
    }

    #[test]
    fn chunked_errors() {
        assert_eq!(decode(&[b"zz\r\n"]).map_err(|r| r.status), Err(400));
        assert_eq!(decode(&[b"3\r\nabcd\r\n"]).map_err(|r| r.status), Err(400));
        let long = vec![b'1'; MAX_CHUNK_LINE + 2];
        assert_eq!(decode(&[&long]).map_err(|r| r.status), Err(400));
        assert_eq!(decode(&[b"1\r\na\r\n"]).map(|r| r.2), Ok(false));
    }
}
