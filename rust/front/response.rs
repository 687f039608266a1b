//! Response heads the front writes: status line, the app's headers, framing, `date`.
//!
//! The app's headers go as given except the ones that frame the message on this hop
//! (`content-length`, `transfer-encoding`, `connection`, `keep-alive`), which only the front can
//! know, and any name or value holding CR, LF or NUL, which would split the head.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::civil_date::civil_from_days;

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Status",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Length(usize),
    Chunked,
    /// HTTP/1.0 stream: the body ends when the connection closes.
    Close,
}

fn framing_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding")
        || name.eq_ignore_ascii_case("connection")
        || name.eq_ignore_ascii_case("keep-alive")
}

fn splits_head(s: &str) -> bool {
    s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Append a response head to `out`.
pub fn write_head<'h>(
    out: &mut Vec<u8>,
    http10: bool,
    status: u16,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    framing: BodyFraming,
    keep_alive: bool,
    date: &str,
) {
    out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name.is_empty() || framing_header(name) || splits_head(name) || splits_head(value) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::Close => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(date.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// A chunk's size line (hex digits, CRLF) in `buf`: what goes before its data and CRLF.
pub fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    let mut at = 16;
    let mut n = len;
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[at..]
}

/// `data` as one chunk (size line, data, CRLF) onto `out`; nothing for no data, since an empty
/// chunk would be the body's last.
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut line = [0; 18];
    out.extend_from_slice(chunk_size_line(data.len(), &mut line));
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The `date` header's value (IMF-fixdate) for a time in whole seconds since the epoch.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `date` values, made again only when the second changes.
#[derive(Debug, Default)]
pub struct DateCache {
    secs: u64,
    text: String,
}

impl DateCache {
    pub fn now(&mut self) -> &str {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if secs != self.secs || self.text.is_empty() {
            self.secs = secs;
            self.text = http_date(secs);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_796_227_286), "Wed, 02 Dec 2026 16:01:26 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn heads_frame_and_filter() {
        let mut out = Vec::new();
        let hs = [
            ("content-type", "application/json"),
            ("Content-Length", "999"),
            ("x-evil", "a\r\nset-cookie: 1"),
            ("connection", "upgrade"),
            ("x-ok", "1"),
        ];
        write_head(&mut out, false, 200, hs, BodyFraming::Length(5), true, "D");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-ok: 1\r\ncontent-length: 5\r\ndate: D\r\n\r\n"
        );
        out.clear();
        write_head(&mut out, true, 529, [], BodyFraming::Close, false, "D");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.0 529 Overloaded\r\nconnection: close\r\ndate: D\r\n\r\n"
        );
        out.clear();
        write_head(&mut out, true, 200, [], BodyFraming::Length(0), true, "D");
        assert!(String::from_utf8_lossy(&out).contains("connection: keep-alive\r\n"));
    }

    #[test]
    fn chunk_size_lines() {
        let mut buf = [0; 18];
        assert_eq!(chunk_size_line(26, &mut buf), b"1a\r\n");
        assert_eq!(chunk_size_line(1, &mut buf), b"1\r\n");
        assert_eq!(chunk_size_line(0x10000, &mut buf), b"10000\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut buf).len(),
            2 * size_of::<usize>() + 2
        );
    }

    #[test]
    fn chunks_and_no_empty_chunk() {
        let mut out = b"head".to_vec();
        push_chunk(&mut out, b"");
        assert_eq!(out, b"head", "an empty chunk would end the body");
        push_chunk(&mut out, &[b'x'; 26]);
        assert_eq!(&out[4..8], b"1a\r\n");
        assert!(out.ends_with(b"xx\r\n") && out.len() == 4 + 4 + 26 + 2);
    }
}
