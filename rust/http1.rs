//! Incremental HTTP/1.1 response parser (client side).
//!
//! Fed whatever the socket delivered; hands de-framed body bytes to a `BodySink` as soon as they
//! are known to be body. Handles `Content-Length`, chunked (extensions, trailers) and
//! close-delimited bodies, skips 1xx interim responses, and refuses responses that are not
//! HTTP so a confused upstream fails loudly instead of corrupting a stream.

use core::fmt;

use memchr::memchr;

/// The response head may not be larger than this.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// A chunk-size line or a trailer section longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError(pub String);

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, HttpError> {
    Err(HttpError(msg.into()))
}

/// A parsed response head.
#[derive(Clone, Debug, Default)]
pub struct Head {
    pub status: u16,
    /// Headers for the client: original order and case, minus hop-by-hop and framing headers.
    pub headers: Vec<(String, String)>,
    /// Lower-cased media type without parameters, empty when absent.
    pub content_type: String,
    pub keep_alive: bool,
}

/// Receives what the parser finds, in order: one head, then body bytes.
pub trait BodySink {
    fn head(&mut self, head: &Head);
    /// Body bytes, de-framed; an error stops the parse.
    fn body(&mut self, bytes: &[u8]) -> Result<(), HttpError>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    /// Remaining bytes of a `Content-Length` body.
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    Close,
    Done,
}

/// One response on a connection.
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    /// Head bytes, or a partial chunk-size / trailer line, not yet complete.
    buf: Vec<u8>,
    /// How far `buf` was already searched for the end of the head.
    searched: usize,
    head: Option<Head>,
    truncated: bool,
    keep_alive: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        ResponseParser::new()
    }
}

impl ResponseParser {
    pub fn new() -> Self {
        ResponseParser {
            state: State::Head,
            buf: Vec::new(),
            searched: 0,
            head: None,
            truncated: false,
            keep_alive: false,
        }
    }

    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn keep_alive(&self) -> bool {
        self.keep_alive && self.state == State::Done
    }

    /// True when the next body bytes are exactly the next socket bytes (no chunk framing),
    /// so a caller may pass the socket bytes on without copying.
    pub fn body_is_raw(&self, len: usize) -> bool {
        match self.state {
            State::Close => true,
            State::Length(n) => len as u64 <= n,
            _ => false,
        }
    }

    /// Parses `data`, the next bytes from the socket.
    pub fn feed(&mut self, mut data: &[u8], sink: &mut impl BodySink) -> Result<(), HttpError> {
        while !data.is_empty() {
            match self.state {
                State::Head => data = self.feed_head(data, sink)?,
                State::Length(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
                    sink.body(&data[..take])?;
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                }
                State::Close => {
                    sink.body(data)?;
                    data = &[];
                }
                State::ChunkSize => data = self.chunk_size(data)?,
                State::ChunkData(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
                    sink.body(&data[..take])?;
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::ChunkEnd => data = self.chunk_end(data)?,
                State::Trailers => data = self.trailers(data)?,
                State::Done => {
                    // Bytes after the response: the connection is not in a state to reuse.
                    self.keep_alive = false;
                    data = &[];
                }
            }
        }
        Ok(())
    }

    /// The connection closed. Completes a close-delimited body; anything else is truncated.
    pub fn eof(&mut self) {
        match self.state {
            State::Done => {}
            State::Close => self.state = State::Done,
            _ => self.truncated = true,
        }
    }

    fn feed_head<'d>(
        &mut self,
        data: &'d [u8],
        sink: &mut impl BodySink,
    ) -> Result<&'d [u8], HttpError> {
        // Usually the whole head is in one read: parse it in place without copying.
        let (bytes, from_buf): (&[u8], bool) = if self.buf.is_empty() {
            (data, false)
        } else {
            self.buf.extend_from_slice(data);
            (&self.buf, true)
        };
        let start = if from_buf {
            self.searched.saturating_sub(3)
        } else {
            0
        };
        let Some(end) = find_head_end(bytes, start) else {
            if bytes.len() > MAX_HEAD {
                return err(format!("response head larger than {} KiB", MAX_HEAD / 1024));
            }
            if !from_buf {
                self.buf.extend_from_slice(data);
            }
            self.searched = self.buf.len();
            if !self
                .buf
                .starts_with(b"HTTP/"[..self.buf.len().min(5)].as_ref())
            {
                return err("not an HTTP/1.x response");
            }
            return Ok(&[]);
        };
        if end > MAX_HEAD {
            return err(format!("response head larger than {} KiB", MAX_HEAD / 1024));
        }
        let (head, framing, interim) = parse_head(&bytes[..end])?;
        // Bytes after the head, within `data`.
        let consumed_from_data = if from_buf {
            end - (self.buf.len() - data.len())
        } else {
            end
        };
        self.buf.clear();
        self.searched = 0;
        let rest = &data[consumed_from_data..];
        if interim {
            return Ok(rest); // 1xx: the real response follows
        }
        self.keep_alive = head.keep_alive;
        sink.head(&head);
        self.state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        self.head = Some(head);
        Ok(rest)
    }

    /// Collects one line (ending in LF) into `buf`; returns it (without CRLF) once complete.
    fn line<'d>(
        &mut self,
        data: &'d [u8],
        limit: usize,
        what: &str,
    ) -> Result<(Option<Vec<u8>>, &'d [u8]), HttpError> {
        match memchr(b'\n', data) {
            Some(i) => {
                self.buf.extend_from_slice(&data[..i]);
                if self.buf.len() > limit {
                    return err(format!("{what} too long"));
                }
                let mut line = core::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok((Some(line), &data[i + 1..]))
            }
            None => {
                self.buf.extend_from_slice(data);
                if self.buf.len() > limit {
                    return err(format!("{what} too long"));
                }
                Ok((None, &[]))
            }
        }
    }

    fn chunk_size<'d>(&mut self, data: &'d [u8]) -> Result<&'d [u8], HttpError> {
        let (line, rest) = self.line(data, MAX_CHUNK_LINE, "chunk-size line")?;
        let Some(line) = line else {
            return Ok(rest);
        };
        // `size [; ext]`, whitespace tolerated before the extension.
        let digits_end = line
            .iter()
            .position(|c| !c.is_ascii_hexdigit())
            .unwrap_or(line.len());
        let after = &line[digits_end..];
        let after_ok = after.iter().all(|&c| c == b' ' || c == b'\t') || {
            let t = after
                .iter()
                .position(|&c| c != b' ' && c != b'\t')
                .unwrap_or(0);
            after[t] == b';'
        };
        if digits_end == 0 || digits_end > 15 || !after_ok {
            return err(format!(
                "bad chunk size line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(40)])
            ));
        }
        let size = line[..digits_end]
            .iter()
            .fold(0u64, |acc, &c| (acc << 4) | u64::from(hex_val(c)));
        self.state = if size == 0 {
            State::Trailers
        } else {
            State::ChunkData(size)
        };
        Ok(rest)
    }

    fn chunk_end<'d>(&mut self, data: &'d [u8]) -> Result<&'d [u8], HttpError> {
        let (line, rest) = self.line(data, 2, "chunk terminator")?;
        match line {
            None => Ok(rest),
            Some(l) if l.is_empty() => {
                self.state = State::ChunkSize;
                Ok(rest)
            }
            Some(_) => err("missing CRLF after chunk data"),
        }
    }

    fn trailers<'d>(&mut self, mut data: &'d [u8]) -> Result<&'d [u8], HttpError> {
        // Trailers are read and dropped: nothing downstream uses them.
        loop {
            let (line, rest) = self.line(data, MAX_TRAILERS, "trailer section")?;
            data = rest;
            match line {
                None => return Ok(data),
                Some(l) if l.is_empty() => {
                    self.state = State::Done;
                    return Ok(data);
                }
                Some(_) => {}
            }
        }
    }
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// End of the head (after the blank line), searching from `from`. Accepts bare LF lines too.
fn find_head_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = memchr(b'\n', &b[i..]) {
        let nl = i + off;
        match b.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if b.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

/// Headers never passed to the client: connection-level and framing.
fn is_hop_by_hop(name: &str) -> bool {
    const NAMES: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    name.eq_ignore_ascii_case("content-length")
        || NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&c| c == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn header_str(v: &[u8]) -> String {
    match core::str::from_utf8(v) {
        Ok(s) => s.to_owned(),
        // Not UTF-8: keep every byte as its Latin-1 character.
        Err(_) => v.iter().map(|&c| char::from(c)).collect(),
    }
}

/// Parses a complete head; returns it, its body framing, and whether it is a 1xx interim head.
fn parse_head(bytes: &[u8]) -> Result<(Head, Framing, bool), HttpError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    match resp.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return err("incomplete response head"),
        Err(httparse::Error::TooManyHeaders) => {
            return err(format!("more than {MAX_HEADERS} response headers"))
        }
        Err(e) => return err(format!("bad response head: {e}")),
    }
    let status = resp.code.unwrap_or(0);
    let version = resp.version.unwrap_or(0);
    if (100..200).contains(&status) {
        if status == 101 {
            return err("unexpected 101 Switching Protocols");
        }
        return Ok((Head::default(), Framing::Close, true));
    }
    let mut chunked = false;
    let mut transfer_encoded = false;
    let mut length: Option<u64> = None;
    let mut close = version == 0;
    let mut keep_alive_1_0 = false;
    let mut content_type = String::new();
    let mut listed: Vec<String> = Vec::new();
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoded = true;
            // Only a final `chunked` frames the body; anything else reads to close.
            let last = h
                .value
                .rsplit(|&c| c == b',')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|&c| c == b',') {
                let part = part.trim_ascii();
                let n = parse_len(part).ok_or_else(|| HttpError("bad content-length".into()))?;
                if length.is_some_and(|l| l != n) {
                    return err("conflicting content-length values");
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(h.value, "close");
            keep_alive_1_0 |= has_token(h.value, "keep-alive");
            for t in h.value.split(|&c| c == b',') {
                let t = t.trim_ascii();
                if !t.is_empty() {
                    listed.push(String::from_utf8_lossy(t).to_ascii_lowercase());
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            let v = h
                .value
                .split(|&c| c == b';')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            content_type = String::from_utf8_lossy(v).to_ascii_lowercase();
        }
    }
    if version == 0 && keep_alive_1_0 {
        close = false;
    }
    let headers = resp
        .headers
        .iter()
        .filter(|h| {
            !is_hop_by_hop(h.name) && !listed.iter().any(|l| l.eq_ignore_ascii_case(h.name))
        })
        .map(|h| (h.name.to_owned(), header_str(h.value)))
        .collect();
    let framing = if status == 204 || status == 304 {
        Framing::Length(0)
    } else if transfer_encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    let keep_alive = !close && framing != Framing::Close;
    let head = Head {
        status,
        headers,
        content_type,
        keep_alive,
    };
    Ok((head, framing, false))
}

fn parse_len(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        v.iter()
            .fold(0u64, |acc, &c| acc * 10 + u64::from(c - b'0')),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        heads: Vec<Head>,
        body: Vec<u8>,
    }

    impl BodySink for Collect {
        fn head(&mut self, head: &Head) {
            self.heads.push(head.clone());
        }
        fn body(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
            self.body.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn feed_all(pieces: &[&[u8]]) -> (ResponseParser, Collect) {
        let mut p = ResponseParser::new();
        let mut c = Collect::default();
        for piece in pieces {
            p.feed(piece, &mut c).unwrap();
        }
        (p, c)
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
        Transfer-Encoding: chunked\r\nConnection: keep-alive\r\nX-Request-Id: abc\r\n\r\n\
        7\r\nhello, \r\n6;name=value\r\nworld!\r\nA \r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";

    #[test]
    fn chunked_every_split() {
        for i in 0..=CHUNKED.len() {
            for j in i..=CHUNKED.len() {
                let (p, c) = feed_all(&[&CHUNKED[..i], &CHUNKED[i..j], &CHUNKED[j..]]);
                assert_eq!(c.body, b"hello, world!0123456789", "split {i},{j}");
                assert!(p.done() && p.keep_alive() && !p.truncated());
                assert_eq!(c.heads.len(), 1);
            }
        }
        let h = feed_all(&[CHUNKED]).1.heads.remove(0);
        assert_eq!(h.status, 200);
        assert_eq!(h.content_type, "text/event-stream");
        assert_eq!(
            h.headers,
            vec![
                (
                    "Content-Type".to_owned(),
                    "text/event-stream; charset=utf-8".to_owned()
                ),
                ("X-Request-Id".to_owned(), "abc".to_owned()),
            ]
        );
    }

    #[test]
    fn content_length() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: Application/JSON\r\n\r\nhelloEXTRA";
        let (p, c) = feed_all(&[&r[..]]);
        assert_eq!(c.body, b"hello");
        assert!(p.done());
        assert!(
            !p.keep_alive(),
            "bytes after the body make the connection unusable"
        );
        assert_eq!(c.heads[0].content_type, "application/json");
        let (p, c) = feed_all(&[&r[..30], &r[30..r.len() - 5]]);
        assert_eq!(c.body, b"hello");
        assert!(p.done() && p.keep_alive());
        assert!(c.heads[0]
            .headers
            .iter()
            .all(|(n, _)| n != "content-length"));
    }

    #[test]
    fn close_delimited() {
        let (mut p, c) = feed_all(&[b"HTTP/1.1 200 OK\r\n\r\nabc", b"def"]);
        assert!(!p.done());
        p.eof();
        assert!(p.done() && !p.truncated() && !p.keep_alive());
        assert_eq!(c.body, b"abcdef");
    }

    #[test]
    fn truncated() {
        let (mut p, _) = feed_all(&[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]);
        p.eof();
        assert!(!p.done() && p.truncated());
        let (mut p, _) =
            feed_all(&[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n"]);
        p.eof();
        assert!(p.truncated());
        let (mut p, _) = feed_all(&[b"HTTP/1.1 200 OK\r\n"]);
        p.eof();
        assert!(p.truncated() && p.head().is_none());
    }

    #[test]
    fn interim_responses_skipped() {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok";
        for i in 0..=r.len() {
            let (p, c) = feed_all(&[&r[..i], &r[i..]]);
            assert_eq!(c.heads.len(), 1);
            assert_eq!(c.heads[0].status, 201);
            assert_eq!(c.body, b"ok");
            assert!(p.done());
        }
    }

    #[test]
    fn no_body_statuses_and_connection_close() {
        let (p, c) = feed_all(&[b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n"]);
        assert!(p.done() && p.keep_alive());
        assert_eq!(c.heads[0].status, 204);
        let (p, _) =
            feed_all(&[b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n"]);
        assert!(p.done() && !p.keep_alive());
        let (p, _) = feed_all(&[b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"]);
        assert!(p.done() && !p.keep_alive());
    }

    #[test]
    fn connection_listed_headers_dropped() {
        let (_, c) = feed_all(&[
            b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\nx-ok: 2\r\ncontent-length: 0\r\n\r\n",
        ]);
        assert_eq!(
            c.heads[0].headers,
            vec![("x-ok".to_owned(), "2".to_owned())]
        );
    }

    #[test]
    fn bad_input() {
        let bad: [&[u8]; 7] = [
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcX\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ];
        for b in bad {
            let mut p = ResponseParser::new();
            assert!(
                p.feed(b, &mut Collect::default()).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        // Early refusal of something that is not HTTP, before a blank line ever arrives.
        let mut p = ResponseParser::new();
        assert!(p.feed(b"<html>", &mut Collect::default()).is_err());
        // A head that never ends.
        let mut p = ResponseParser::new();
        let mut c = Collect::default();
        p.feed(b"HTTP/1.1 200 OK\r\n", &mut c).unwrap();
        let filler = b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut failed = false;
        for _ in 0..2000 {
            if p.feed(filler, &mut c).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
