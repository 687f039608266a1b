//! Incremental server-sent-events splitter.
//!
//! Upstream bytes arrive in arbitrary pieces: a piece may end inside a UTF-8 character, between
//! the `\r` and `\n` of a line break, or in the middle of a field. The splitter hands out each
//! complete event exactly once, and the exact bytes of every complete event so a relay can
//! forward them untouched, whatever the piece boundaries were.
//!
//! Line breaks are `\n`, `\r\n` or a lone `\r`; a blank line ends an event. A `\r` at the end of
//! a piece ends the line at once (no waiting for the next piece, which would delay the event);
//! a `\n` that then starts the next piece is recognised as the rest of that `\r\n`.

use memchr::memchr2;

use crate::translate::SseEvent;

/// An event body larger than this is refused rather than buffered without bound.
pub const MAX_PENDING: usize = 16 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Positions of the event being read, relative to the start of the pending bytes.
#[derive(Default)]
struct Partial {
    /// Start of the line not yet complete (where scanning resumes).
    line_start: usize,
    /// Where the search for the end of that line resumes.
    search_from: usize,
    name: Option<(usize, usize)>,
    data: Vec<(usize, usize)>,
}

impl Partial {
    fn rebase(&mut self, by: usize) {
        self.line_start -= by;
        self.search_from -= by;
        if let Some((a, b)) = &mut self.name {
            *a -= by;
            *b -= by;
        }
        for (a, b) in &mut self.data {
            *a -= by;
            *b -= by;
        }
    }
}

/// The event splitter for one stream.
#[derive(Default)]
pub struct SseSplitter {
    /// Bytes after the last complete event: a partial event.
    pending: Vec<u8>,
    partial: Partial,
    /// The previous line ended with a `\r` at the very end of the input seen so far.
    after_cr: bool,
    /// Still at the first bytes of the stream, where a byte-order mark may be.
    at_start: bool,
    /// Scratch for joining multi-line data.
    joined: Vec<u8>,
    /// Byte ranges (in the scanned input) of events a filtering feed leaves out.
    dropped: Vec<(usize, usize)>,
    /// A dropped event ended with a `\r` at the very end of the input: the `\n` that may
    /// start the next piece belongs to it, and is left out too.
    dropped_before_lf: bool,
}

/// The pending event grew past `MAX_PENDING`.
#[derive(Debug, PartialEq, Eq)]
pub struct EventTooLarge;

impl SseSplitter {
    pub fn new() -> Self {
        SseSplitter {
            at_start: true,
            ..SseSplitter::default()
        }
    }

    /// True when no partial event is held.
    pub fn is_clear(&self) -> bool {
        self.pending.is_empty()
    }

    /// Bytes of a partial event being held.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Splits `chunk`: calls `on_event` for each complete event that has data, and appends
    /// the original bytes of all complete events (and comment-only blocks) to `out`.
    pub fn feed<F>(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<u8>,
        mut on_event: F,
    ) -> Result<(), EventTooLarge>
    where
        F: FnMut(&SseEvent<'_>),
    {
        self.feed_filtered(chunk, out, |ev| {
            on_event(ev);
            true
        })
    }

    /// As `feed`, but an event for which `keep` returns false is left out of `out` (its whole
    /// block: field lines, comments inside it and the blank line that ends it).
    pub fn feed_filtered<F>(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<u8>,
        mut keep: F,
    ) -> Result<(), EventTooLarge>
    where
        F: FnMut(&SseEvent<'_>) -> bool,
    {
        if self.pending.is_empty() {
            // Usual case: the piece starts at an event boundary, scan it in place.
            let done = self.scan(chunk, &mut keep);
            self.emit(&chunk[..done], out);
            let rest = &chunk[done..];
            if rest.len() > MAX_PENDING {
                return Err(EventTooLarge);
            }
            self.pending.extend_from_slice(rest);
            self.keep_after(done);
            return Ok(());
        }
        if self.pending.len() + chunk.len() > MAX_PENDING {
            return Err(EventTooLarge);
        }
        let mut pending = core::mem::take(&mut self.pending);
        pending.extend_from_slice(chunk);
        let done = self.scan(&pending, &mut keep);
        self.emit(&pending[..done], out);
        pending.drain(..done);
        self.pending = pending;
        self.keep_after(done);
        Ok(())
    }

    /// Appends the complete events `done` to `out`, minus the ranges a filter dropped.
    fn emit(&mut self, done: &[u8], out: &mut Vec<u8>) {
        if self.dropped.is_empty() {
            out.extend_from_slice(done);
            return;
        }
        let mut from = 0;
        for &(a, b) in &self.dropped {
            out.extend_from_slice(&done[from..a]);
            from = b;
        }
        out.extend_from_slice(&done[from..]);
        self.dropped.clear();
    }

    /// The first `done` bytes went out: make the partial event's positions relative to the rest.
    fn keep_after(&mut self, done: usize) {
        if self.pending.is_empty() {
            let mut data = core::mem::take(&mut self.partial.data);
            data.clear();
            self.partial = Partial {
                data,
                ..Partial::default()
            };
        } else {
            self.partial.rebase(done);
        }
    }

    /// Scans `src` (which starts at an event boundary, continuing `self.partial`) and returns
    /// the length of its prefix made of complete events.
    fn scan<F>(&mut self, src: &[u8], on_event: &mut F) -> usize
    where
        F: FnMut(&SseEvent<'_>) -> bool,
    {
        let mut boundary = 0;
        let mut pos = self.partial.line_start;
        if self.at_start {
            if src.len() < BOM.len() && BOM.starts_with(src) {
                return 0; // might be a split byte-order mark: wait for more
            }
            self.at_start = false;
            if src.starts_with(BOM) && pos == 0 {
                pos = BOM.len();
                self.partial.search_from = pos;
            }
        }
        if self.after_cr && pos < src.len() {
            self.after_cr = false;
            if src[pos] == b'\n' {
                // The rest of a `\r\n` split across pieces. When no event has started, the
                // byte goes out now instead of waiting in front of the next event.
                let empty =
                    self.partial.name.is_none() && self.partial.data.is_empty() && pos == boundary;
                pos += 1;
                if empty {
                    if self.dropped_before_lf {
                        self.dropped.push((boundary, pos));
                    }
                    boundary = pos;
                }
            }
            self.dropped_before_lf = false;
            self.partial.search_from = self.partial.search_from.max(pos);
        }
        let mut search = self.partial.search_from.max(pos);
        loop {
            let Some(off) = memchr2(b'\n', b'\r', &src[search..]) else {
                self.partial.line_start = pos;
                self.partial.search_from = src.len();
                return boundary;
            };
            let end = search + off;
            let mut next = end + 1;
            if src[end] == b'\r' {
                match src.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = &src[pos..end];
            if line.is_empty() {
                if !self.dispatch(src, on_event) {
                    self.dropped.push((boundary, next));
                    self.dropped_before_lf = self.after_cr;
                }
                boundary = next;
            } else if line[0] != b':' {
                let (name, value_start) = match memchr::memchr(b':', line) {
                    Some(colon) => {
                        let v = if line.get(colon + 1) == Some(&b' ') {
                            colon + 2
                        } else {
                            colon + 1
                        };
                        (&line[..colon], pos + v)
                    }
                    None => (line, end),
                };
                match name {
                    b"data" => self.partial.data.push((value_start, end)),
                    b"event" => self.partial.name = Some((value_start, end)),
                    _ => {} // id, retry and unknown fields do not matter here
                }
            }
            pos = next;
            search = next;
        }
    }

    /// Hands the event that just ended to `on_event`; false when it is to be left out.
    fn dispatch<F>(&mut self, src: &[u8], on_event: &mut F) -> bool
    where
        F: FnMut(&SseEvent<'_>) -> bool,
    {
        let name = self.partial.name.take();
        if self.partial.data.is_empty() {
            return true;
        }
        let event = name.and_then(|(a, b)| core::str::from_utf8(&src[a..b]).ok());
        let data: &[u8] = match self.partial.data.as_slice() {
            [(a, b)] => &src[*a..*b],
            lines => {
                self.joined.clear();
                for (i, (a, b)) in lines.iter().enumerate() {
                    if i > 0 {
                        self.joined.push(b'\n');
                    }
                    self.joined.extend_from_slice(&src[*a..*b]);
                }
                &self.joined
            }
        };
        let keep = on_event(&SseEvent { event, data });
        self.partial.data.clear();
        keep
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Ev = (Option<String>, Vec<u8>);

    fn run(pieces: &[&[u8]]) -> (Vec<Ev>, Vec<u8>) {
        let mut s = SseSplitter::new();
        let mut events = Vec::new();
        let mut out = Vec::new();
        for p in pieces {
            s.feed(p, &mut out, |e| {
                events.push((e.event.map(str::to_owned), e.data.to_vec()))
            })
            .unwrap();
        }
        (events, out)
    }

    fn ev(name: Option<&str>, data: &str) -> Ev {
        (name.map(str::to_owned), data.as_bytes().to_vec())
    }

    const STREAM: &str = "event: message_start\ndata: {\"a\":1}\n\n: comment\n\nevent: ping\ndata: {}\n\n\
        data: line1\ndata:line2\ndata:  two spaces\n\nid: 7\nretry: 10\n\nevent: delta\ndata: caf\u{e9} \u{1F600}\n\n\
        data\n\nevent: nodata\n\n";

    fn expected() -> Vec<Ev> {
        vec![
            ev(Some("message_start"), "{\"a\":1}"),
            ev(Some("ping"), "{}"),
            ev(None, "line1\nline2\n two spaces"),
            ev(Some("delta"), "caf\u{e9} \u{1F600}"),
            ev(None, ""),
        ]
    }

    #[test]
    fn whole_stream() {
        let (events, out) = run(&[STREAM.as_bytes()]);
        assert_eq!(events, expected());
        assert_eq!(out, STREAM.as_bytes());
    }

    fn every_split(stream: &[u8], want: &[Ev]) {
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let (events, out) = run(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(events, want, "split at {i},{j}");
                assert_eq!(out, stream, "split at {i},{j}");
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (events, out) = run(&bytes);
        assert_eq!(events, want, "byte by byte");
        assert_eq!(out, stream);
    }

    #[test]
    fn every_split_point_lf() {
        every_split(STREAM.as_bytes(), &expected());
    }

    #[test]
    fn every_split_point_crlf() {
        let s = STREAM.replace('\n', "\r\n");
        every_split(s.as_bytes(), &expected());
    }

    #[test]
    fn every_split_point_cr() {
        let s = STREAM.replace('\n', "\r");
        // With lone CRs the stream's last `\r` is a complete blank line: all bytes go out.
        every_split(s.as_bytes(), &expected());
    }

    #[test]
    fn mixed_line_breaks() {
        let s = b"event: a\r\ndata: 1\r\rdata: 2\n\r\ndata: 3\r\n\n";
        let want = vec![ev(Some("a"), "1"), ev(None, "2"), ev(None, "3")];
        every_split(s, &want);
    }

    #[test]
    fn partial_event_is_held() {
        let (events, out) = run(&[b"data: 1\n\ndata: 2\n"]);
        assert_eq!(events, vec![ev(None, "1")]);
        assert_eq!(out, b"data: 1\n\n");
    }

    #[test]
    fn cr_then_lf_in_next_piece_goes_out() {
        let mut s = SseSplitter::new();
        let mut out = Vec::new();
        let mut n = 0;
        s.feed(b"data: 1\r\n\r", &mut out, |_| n += 1).unwrap();
        assert_eq!((n, out.as_slice()), (1, &b"data: 1\r\n\r"[..]));
        s.feed(b"\n", &mut out, |_| n += 1).unwrap();
        assert_eq!(out, b"data: 1\r\n\r\n");
        assert!(s.is_clear());
    }

    #[test]
    fn byte_order_mark_skipped() {
        let s = b"\xEF\xBB\xBFevent: x\ndata: 1\n\n";
        every_split(s, &[ev(Some("x"), "1")]);
    }

    /// Every split of `stream`, filtered by `keep`: the output is always `want`.
    fn every_split_filtered(stream: &[u8], want: &[u8], keep: fn(&SseEvent<'_>) -> bool) {
        let run = |pieces: &[&[u8]]| {
            let mut s = SseSplitter::new();
            let mut out = Vec::new();
            for p in pieces {
                s.feed_filtered(p, &mut out, keep).unwrap();
            }
            out
        };
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let out = run(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(out, want, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn filtered_events_are_left_out_whole() {
        let drop_usage = |e: &SseEvent<'_>| !e.data.starts_with(b"{\"usage\"");
        let s = b"data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"usage\":2}\n\ndata: [DONE]\n\n";
        every_split_filtered(
            s,
            b"data: {\"a\":1}\n\n: keep-alive\n\ndata: [DONE]\n\n",
            drop_usage,
        );
        let crlf = b"data: 1\r\n\r\nevent: u\r\ndata: {\"usage\":{}}\r\n\r\ndata: 3\r\n\r\n";
        every_split_filtered(crlf, b"data: 1\r\n\r\ndata: 3\r\n\r\n", drop_usage);
        // Dropping nothing leaves every byte in place; dropping everything leaves only comments.
        every_split_filtered(s, s, |_| true);
        every_split_filtered(s, b": keep-alive\n\n", |_| false);
    }

    #[test]
    fn too_large() {
        let mut s = SseSplitter::new();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_PENDING + 1];
        assert_eq!(s.feed(&big, &mut out, |_| {}), Err(EventTooLarge));
    }
}
