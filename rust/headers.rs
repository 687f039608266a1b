//! Upstream request heads: a template built once per target and path, rendered per request.
//!
//! Forward, don't curate: every client header goes upstream unchanged (original case, value
//! and order) except the few that are the gateway's own business: connection-level headers,
//! framing, the client's credentials, `accept-encoding` (the relay reads the body, so it must
//! be identity-encoded), cookies, and anything the target's config sets itself.

use core::fmt;

/// Client headers never forwarded, compared case-insensitively. `proxy-*` is matched apart.
const DROPPED: [&str; 12] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "x-api-key",
    "accept-encoding",
    "cookie",
];

#[derive(Debug, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fixed parts of one upstream request head.
#[derive(Clone, Debug)]
pub struct HeadParts {
    /// `METHOD path HTTP/1.1\r\nhost: h\r\n`
    prefix: Vec<u8>,
    /// Config headers, already rendered, then `content-type` when client headers are not sent.
    extra: Vec<u8>,
    /// Lower-cased names of the config headers: a client header of the same name is dropped.
    overridden: Vec<String>,
    forward_client_headers: bool,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

fn is_clean_value(v: &[u8]) -> bool {
    !v.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0)
}

impl HeadParts {
    pub fn new(
        method: &str,
        path: &str,
        host: &str,
        extra_headers: &[(String, String)],
        forward_client_headers: bool,
    ) -> Result<Self, TemplateError> {
        if !is_token(method) {
            return Err(TemplateError(format!("invalid method {method:?}")));
        }
        if path.is_empty() || path.bytes().any(|c| c <= b' ' || c == 0x7f) {
            return Err(TemplateError(format!("invalid request target {path:?}")));
        }
        if host.is_empty() || !is_clean_value(host.as_bytes()) {
            return Err(TemplateError(format!("invalid host {host:?}")));
        }
        let mut prefix = Vec::with_capacity(method.len() + path.len() + host.len() + 24);
        for part in [method, " ", path, " HTTP/1.1\r\nhost: ", host, "\r\n"] {
            prefix.extend_from_slice(part.as_bytes());
        }
        let mut extra = Vec::new();
        let mut overridden = Vec::with_capacity(extra_headers.len());
        for (name, value) in extra_headers {
            if !is_token(name) {
                return Err(TemplateError(format!("invalid header name {name:?}")));
            }
            if !is_clean_value(value.as_bytes()) {
                return Err(TemplateError(format!(
                    "header {name}: value contains CR, LF or NUL"
                )));
            }
            let lower = name.to_ascii_lowercase();
            if lower == "host" || lower == "content-length" || lower == "transfer-encoding" {
                return Err(TemplateError(format!(
                    "header {name} is set by the gateway"
                )));
            }
            for part in [name.as_str(), ": ", value.as_str(), "\r\n"] {
                extra.extend_from_slice(part.as_bytes());
            }
            overridden.push(lower);
        }
        if !forward_client_headers && !overridden.iter().any(|n| n == "content-type") {
            extra.extend_from_slice(b"content-type: application/json\r\n");
        }
        Ok(HeadParts {
            prefix,
            extra,
            overridden,
            forward_client_headers,
        })
    }

    pub fn forwards_client_headers(&self) -> bool {
        self.forward_client_headers
    }

    /// Whether a client header goes upstream.
    #[inline]
    pub fn forwards(&self, name: &str, value: &str, connection_listed: &[&str]) -> bool {
        is_token(name)
            && is_clean_value(value.as_bytes())
            && !DROPPED.iter().any(|d| d.eq_ignore_ascii_case(name))
            && !starts_with_ignore_case(name, "proxy-")
            && !self.overridden.iter().any(|o| o.eq_ignore_ascii_case(name))
            && !connection_listed
                .iter()
                .any(|o| o.eq_ignore_ascii_case(name))
    }

    /// Renders a head: `headers` are the client's, in order.
    pub fn render<'h>(
        &self,
        headers: impl Iterator<Item = (&'h str, &'h str)> + Clone,
        content_length: u64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + self.extra.len() + 1024);
        out.extend_from_slice(&self.prefix);
        if self.forward_client_headers {
            // Headers the client's `Connection` names are hop-by-hop too (RFC 9110, 7.6.1).
            let mut listed: Vec<&str> = Vec::new();
            for (n, v) in headers.clone() {
                if n.eq_ignore_ascii_case("connection") {
                    listed.extend(v.split(',').map(str::trim).filter(|t| !t.is_empty()));
                }
            }
            for (n, v) in headers {
                if self.forwards(n, v, &listed) {
                    for part in [n, ": ", v, "\r\n"] {
                        out.extend_from_slice(part.as_bytes());
                    }
                }
            }
        }
        out.extend_from_slice(&self.extra);
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(content_length.to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pairs(v: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn drops_exactly_the_listed_headers() {
        let t = HeadParts::new(
            "POST",
            "/v1/messages?beta=true",
            "api.example.com",
            &pairs(&[
                ("x-api-key", "sk-upstream"),
                ("Anthropic-Version", "2023-06-01"),
            ]),
            true,
        )
        .unwrap();
        let client = [
            ("Host", "gateway.local"),
            ("Connection", "keep-alive, X-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "x"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Content-Length", "999"),
            ("Authorization", "Bearer client-key"),
            ("X-Api-Key", "client-key"),
            ("Accept-Encoding", "gzip, br"),
            ("Cookie", "a=b"),
            ("anthropic-version", "2020-01-01"),
            ("X-Hop", "1"),
            ("bad", "evil\r\nx-injected: 1"),
            ("Content-Type", "application/json"),
            (
                "anthropic-beta",
                "prompt-caching-2024-07-31,tools-2024-05-16",
            ),
            ("X-Claude-Code-Session-Id", "s-1"),
            ("User-Agent", "claude-cli/1.0 (external, cli)"),
            ("accept", "text/event-stream"),
        ];
        let head = t.render(client.iter().copied(), 42);
        let want = "POST /v1/messages?beta=true HTTP/1.1\r\nhost: api.example.com\r\n\
            Content-Type: application/json\r\n\
            anthropic-beta: prompt-caching-2024-07-31,tools-2024-05-16\r\n\
            X-Claude-Code-Session-Id: s-1\r\n\
            User-Agent: claude-cli/1.0 (external, cli)\r\n\
            accept: text/event-stream\r\n\
            x-api-key: sk-upstream\r\nAnthropic-Version: 2023-06-01\r\n\
            content-length: 42\r\n\r\n";
        assert_eq!(String::from_utf8(head).unwrap(), want);
    }

    #[test]
    fn without_client_headers() {
        let t = HeadParts::new(
            "POST",
            "/v1/chat/completions",
            "localhost:8000",
            &pairs(&[("authorization", "Bearer k")]),
            false,
        )
        .unwrap();
        let head = t.render(
            [("anthropic-beta", "x"), ("content-type", "text/plain")].into_iter(),
            0,
        );
        assert_eq!(
            head,
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost:8000\r\nauthorization: Bearer k\r\n\
              content-type: application/json\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(HeadParts::new("PO ST", "/", "h", &[], true).is_err());
        assert!(HeadParts::new("POST", "/a b", "h", &[], true).is_err());
        assert!(HeadParts::new("POST", "/", "h\r\nx: y", &[], true).is_err());
        assert!(HeadParts::new("POST", "/", "h", &pairs(&[("x", "a\nb")]), true).is_err());
        assert!(HeadParts::new("POST", "/", "h", &pairs(&[("bad name", "v")]), true).is_err());
        assert!(
            HeadParts::new("POST", "/", "h", &pairs(&[("Content-Length", "1")]), true).is_err()
        );
    }
}
