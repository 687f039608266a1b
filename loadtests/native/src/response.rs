//! The client's HTTP/1.1 response reader: status, framing (chunked, content-length or
//! close-delimited) and a count of complete SSE events in the decoded body.
//!
//! An event ends at a blank line, as the SSE spec says; the count moves only when a read
//! completes one, which is what the load generator times (first event, gaps between events).

const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    ChunkSize,
    ChunkData(usize),
    ChunkEnd(u8),
    Trailer,
    Length(usize),
    UntilClose,
    Done,
}

#[derive(Debug)]
pub struct Response {
    phase: Phase,
    head: Vec<u8>,
    line: Vec<u8>,
    /// Bytes on the current body line so far (CR not counted): 0 at a blank line.
    line_len: usize,
    pub status: u16,
    pub events: u32,
    pub keep_alive: bool,
}

impl Default for Response {
    fn default() -> Self {
        Self::new()
    }
}

impl Response {
    pub fn new() -> Self {
        Response {
            phase: Phase::Head,
            head: Vec::new(),
            line: Vec::new(),
            line_len: 0,
            status: 0,
            events: 0,
            keep_alive: true,
        }
    }

    pub fn head_complete(&self) -> bool {
        self.phase != Phase::Head
    }

    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The connection closed: a close-delimited body ends here; anything else was cut short.
    pub fn eof(&mut self) -> bool {
        if self.phase == Phase::UntilClose {
            self.phase = Phase::Done;
        }
        self.done()
    }

    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), &'static str> {
        while !data.is_empty() {
            match self.phase {
                Phase::Head => {
                    // The head may end across reads: search from just before the new bytes.
                    let from = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(data);
                    let Some(end) = find(&self.head[from..], b"\r\n\r\n").map(|i| i + from + 4)
                    else {
                        if self.head.len() > MAX_HEAD {
                            return Err("head_too_large");
                        }
                        return Ok(());
                    };
                    let rest = self.head.split_off(end);
                    self.parse_head()?;
                    self.head.clear();
                    if rest.is_empty() {
                        return Ok(());
                    }
                    return self.feed(&rest);
                }
                Phase::ChunkSize => {
                    if !self.take_line(&mut data) {
                        return Ok(());
                    }
                    let size = chunk_size(&self.line).ok_or("bad_chunk_size")?;
                    self.line.clear();
                    self.phase = if size == 0 {
                        Phase::Trailer
                    } else {
                        Phase::ChunkData(size)
                    };
                }
                Phase::ChunkData(left) => {
                    let n = left.min(data.len());
                    self.count_events(&data[..n]);
                    data = &data[n..];
                    self.phase = if n == left {
                        Phase::ChunkEnd(2)
                    } else {
                        Phase::ChunkData(left - n)
                    };
                }
                Phase::ChunkEnd(left) => {
                    data = &data[1..];
                    self.phase = if left == 1 {
                        Phase::ChunkSize
                    } else {
                        Phase::ChunkEnd(left - 1)
                    };
                }
                Phase::Trailer => {
                    if !self.take_line(&mut data) {
                        return Ok(());
                    }
                    let blank = self.line.iter().all(|&b| b == b'\r');
                    self.line.clear();
                    if blank {
                        self.phase = Phase::Done;
                    }
                }
                Phase::Length(left) => {
                    let n = left.min(data.len());
                    self.count_events(&data[..n]);
                    data = &data[n..];
                    self.phase = if n == left {
                        Phase::Done
                    } else {
                        Phase::Length(left - n)
                    };
                }
                Phase::UntilClose => {
                    self.count_events(data);
                    return Ok(());
                }
                // Bytes after the response: the next request has not been sent, so none belong.
                Phase::Done => return Err("unexpected_bytes"),
            }
        }
        Ok(())
    }

    /// Move bytes of `data` into `line` up to the next LF (taken, not kept); false when the
    /// line goes on past `data` (all of it taken).
    fn take_line(&mut self, data: &mut &[u8]) -> bool {
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            self.line.extend_from_slice(data);
            *data = &[];
            return false;
        };
        self.line.extend_from_slice(&data[..nl]);
        *data = &data[nl + 1..];
        true
    }

    fn parse_head(&mut self) -> Result<(), &'static str> {
        let text = std::str::from_utf8(&self.head).map_err(|_| "bad_head")?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err("bad_head");
        }
        self.status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or("bad_head")?;
        self.keep_alive = version == "HTTP/1.1";
        let (mut chunked, mut length) = (false, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|_| "bad_content_length")?);
            } else if name.eq_ignore_ascii_case("connection") {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    self.keep_alive = false;
                } else if v.contains("keep-alive") {
                    self.keep_alive = true;
                }
            }
        }
        self.phase = match (chunked, length) {
            (true, _) => Phase::ChunkSize,
            (false, Some(0)) => Phase::Done,
            (false, Some(n)) => Phase::Length(n),
            (false, None) => {
                self.keep_alive = false;
                Phase::UntilClose
            }
        };
        Ok(())
    }

    fn count_events(&mut self, body: &[u8]) {
        for &b in body {
            if b == b'\n' {
                if self.line_len == 0 {
                    self.events += 1;
                }
                self.line_len = 0;
            } else if b != b'\r' {
                self.line_len += 1;
            }
        }
    }
}

fn chunk_size(line: &[u8]) -> Option<usize> {
    let line = std::str::from_utf8(line).ok()?;
    let hex = line.split(';').next()?.trim();
    usize::from_str_radix(hex, 16).ok()
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(pieces: &[&str]) -> Vec<u8> {
        let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for p in pieces {
            out.extend_from_slice(format!("{:x}\r\n{p}\r\n", p.len()).as_bytes());
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    #[test]
    fn counts_events_across_every_split() {
        // Events cut across chunks, a 16-byte chunk (two hex digits), CRLF line ends.
        let stream = chunked(&[
            "event: a\ndata:",
            " 1\n",
            "\n",
            "event: b\r\ndata: 2\r\n\r\n",
        ]);
        for cut in 0..=stream.len() {
            let mut r = Response::new();
            assert!(r.feed(&stream[..cut]).is_ok());
            assert!(r.feed(&stream[cut..]).is_ok());
            assert!(r.done(), "cut at {cut}");
            assert_eq!(
                (r.status, r.events, r.keep_alive),
                (200, 2, true),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn content_length_and_close_delimited_bodies() {
        let mut r = Response::new();
        assert!(r
            .feed(b"HTTP/1.1 429 Too Many\r\ncontent-length: 4\r\n\r\n{}\n\n")
            .is_ok());
        assert!(r.done());
        assert_eq!((r.status, r.events), (429, 1));

        let mut r = Response::new();
        assert!(r.feed(b"HTTP/1.0 200 OK\r\n\r\ndata: x\n\n").is_ok());
        assert!(!r.done() && !r.keep_alive);
        assert!(r.eof());
        assert_eq!(r.events, 1);

        let mut r = Response::new();
        assert!(r
            .feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab")
            .is_ok());
        assert!(!r.eof(), "a chunked body cut short is not complete");
    }

    #[test]
    fn rejects_what_is_not_http() {
        assert_eq!(Response::new().feed(b"SSH-2.0\r\n\r\n"), Err("bad_head"));
        let mut r = Response::new();
        assert_eq!(
            r.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"),
            Err("bad_chunk_size")
        );
    }
}
