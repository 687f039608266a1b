//! Token usage, stop reason and error detection from upstream responses.
//!
//! Streams carry usage in a few events only (Anthropic's `message_start` / `message_delta`,
//! OpenAI's final chunk), so each event is classified from bytes already at hand (the event
//! name, a `memmem` probe) and only those few are JSON-parsed; the many content deltas are not.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde::Deserialize;

use crate::translate::{SseEvent, Usage};

// Built once: `memmem::find` builds its searcher on every call (~1,400 instructions an OpenAI
// chunk for the three probes, callgrind), the search itself is a few dozen.
static MESSAGE_PREFIX: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"message_"));
static ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static FINISH_REASON_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"finish_reason\""));

/// What the accounting needs from one response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub usage: Usage,
    /// A cost in USD the upstream reported itself (`usage.cost`, as OpenRouter and some
    /// OpenAI-compatible routers send), kept beside the gateway's own price-table cost.
    pub upstream_cost: Option<f64>,
    pub stop_reason: Option<String>,
    /// An `event: error` (Anthropic) or a chunk with a top-level `error` (OpenAI) was seen.
    pub error_event: bool,
    /// An Anthropic stream's `message_stop` was seen: the message is complete.
    pub message_stop: bool,
}

#[derive(Deserialize, Default)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct AnthropicMessage {
    usage: Option<AnthropicUsage>,
    stop_reason: Option<String>,
}

/// `message_start`, `message_delta` or `error`; other fields are skipped by serde.
#[derive(Deserialize)]
struct AnthropicEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<AnthropicMessage>,
    delta: Option<AnthropicDelta>,
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicDelta {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct OpenAiDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    cost: Option<f64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<OpenAiDetails>,
}

#[derive(Deserialize)]
struct OpenAiChoice {
    finish_reason: Option<String>,
}

/// A chat.completion or chat.completion.chunk object.
#[derive(Deserialize)]
struct OpenAiObject {
    usage: Option<OpenAiUsage>,
    choices: Option<Vec<OpenAiChoice>>,
    error: Option<serde::de::IgnoredAny>,
}

impl Tally {
    /// One event of an Anthropic Messages stream.
    pub fn anthropic_event(&mut self, ev: &SseEvent<'_>) {
        match ev.event {
            Some("message_start" | "message_delta") => self.anthropic_json(ev.data),
            Some("message_stop") => self.message_stop = true,
            Some("error") => self.error_event = true,
            Some(_) => {}
            // Without an event name the data's `type` decides; a cheap probe first (quotes in
            // string values are escaped), the parse confirms.
            None => {
                if MESSAGE_PREFIX.find(ev.data).is_some() || ERROR_KEY.find(ev.data).is_some() {
                    self.anthropic_json(ev.data);
                }
            }
        }
    }

    fn anthropic_json(&mut self, data: &[u8]) {
        let Ok(ev) = serde_json::from_slice::<AnthropicEvent>(data) else {
            return;
        };
        match ev.kind.as_deref() {
            Some("message_start") => {
                if let Some(m) = ev.message {
                    if let Some(u) = m.usage {
                        self.apply_anthropic(&u);
                    }
                    if m.stop_reason.is_some() {
                        self.stop_reason = m.stop_reason;
                    }
                }
            }
            Some("message_delta") => {
                if let Some(u) = ev.usage {
                    self.apply_anthropic(&u);
                }
                if let Some(reason) = ev.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason);
                }
            }
            Some("message_stop") => self.message_stop = true,
            Some("error") => self.error_event = true,
            _ => {}
        }
    }

    /// Values present replace the running ones (`output_tokens` is cumulative).
    fn apply_anthropic(&mut self, u: &AnthropicUsage) {
        let t = &mut self.usage;
        for (slot, v) in [
            (&mut t.input, u.input_tokens),
            (&mut t.output, u.output_tokens),
            (&mut t.cache_creation, u.cache_creation_input_tokens),
            (&mut t.cache_read, u.cache_read_input_tokens),
        ] {
            if let Some(v) = v {
                *slot = v;
            }
        }
    }

    /// A whole (non-streamed) Anthropic message.
    pub fn anthropic_body(&mut self, body: &[u8]) {
        if let Ok(m) = serde_json::from_slice::<AnthropicMessage>(body) {
            if let Some(u) = m.usage {
                self.apply_anthropic(&u);
            }
            if m.stop_reason.is_some() {
                self.stop_reason = m.stop_reason;
            }
        }
    }

    /// One event of an OpenAI chat-completions stream.
    pub fn openai_event(&mut self, ev: &SseEvent<'_>) {
        let d = ev.data;
        if d == b"[DONE]" {
            return;
        }
        let wanted = has_non_null(d, &USAGE_KEY)
            || has_non_null(d, &FINISH_REASON_KEY)
            || ERROR_KEY.find(d).is_some();
        if wanted {
            self.openai_json(d, true);
        }
    }

    /// An OpenAI chunk a stream translator also reads: its usage, errors and finish reason
    /// come from the translator (exchange.rs `sync_translator`), so only a usage chunk is read
    /// here, for what the translator does not keep (an upstream's reported cost). One search a
    /// chunk where `openai_event` makes three.
    pub fn openai_translated_event(&mut self, ev: &SseEvent<'_>) {
        if has_non_null(ev.data, &USAGE_KEY) {
            self.openai_json(ev.data, true);
        }
    }

    /// A whole (non-streamed) chat.completion object.
    pub fn openai_body(&mut self, body: &[u8]) {
        self.openai_json(body, false);
    }

    fn openai_json(&mut self, data: &[u8], stream: bool) {
        let Ok(obj) = serde_json::from_slice::<OpenAiObject>(data) else {
            return;
        };
        if stream && obj.error.is_some() {
            self.error_event = true;
        }
        if let Some(u) = obj.usage {
            if u.cost.is_some() {
                self.upstream_cost = u.cost;
            }
            let prompt = u.prompt_tokens.unwrap_or(0);
            let cached = u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0);
            self.usage = Usage {
                input: prompt.saturating_sub(cached),
                output: u.completion_tokens.unwrap_or(0),
                cache_creation: 0,
                cache_read: cached,
            };
        }
        if let Some(reason) = obj
            .choices
            .and_then(|c| c.into_iter().next())
            .and_then(|c| c.finish_reason)
        {
            self.stop_reason = Some(reason);
        }
    }
}

/// `key` occurs followed by `:` and a value other than `null`. A key inside a string value
/// would have escaped quotes, so a hit is almost always the real key; the parse confirms.
fn has_non_null(data: &[u8], key: &Finder<'_>) -> bool {
    let mut from = 0;
    while let Some(off) = key.find(&data[from..]) {
        let mut i = from + off + key.needle().len();
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = data.get(i) {
            i += 1;
        }
        if data.get(i) == Some(&b':') {
            i += 1;
            while let Some(b' ' | b'\t' | b'\r' | b'\n') = data.get(i) {
                i += 1;
            }
            if !data[i..].starts_with(b"null") {
                return true;
            }
        }
        from = i;
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(t: &mut Tally, name: Option<&str>, data: &str) {
        t.anthropic_event(&SseEvent {
            event: name,
            data: data.as_bytes(),
        });
    }

    fn o(t: &mut Tally, data: &str) {
        t.openai_event(&SseEvent {
            event: None,
            data: data.as_bytes(),
        });
    }

    #[test]
    fn anthropic_stream() {
        let mut t = Tally::default();
        a(
            &mut t,
            Some("message_start"),
            r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1}}}"#,
        );
        assert_eq!(
            t.usage,
            Usage {
                input: 25,
                output: 1,
                cache_creation: 100,
                cache_read: 2000
            }
        );
        assert_eq!(t.stop_reason, None);
        // A delta mentioning usage in its text must not be parsed or counted.
        a(
            &mut t,
            Some("content_block_delta"),
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\"usage\": {\"output_tokens\": 99}"}}"#,
        );
        a(
            &mut t,
            Some("message_delta"),
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
        );
        assert_eq!(
            t.usage,
            Usage {
                input: 25,
                output: 15,
                cache_creation: 100,
                cache_read: 2000
            }
        );
        a(
            &mut t,
            Some("message_delta"),
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"input_tokens":30,"output_tokens":40,"cache_read_input_tokens":null}}"#,
        );
        assert_eq!(
            t.usage,
            Usage {
                input: 30,
                output: 40,
                cache_creation: 100,
                cache_read: 2000
            }
        );
        assert_eq!(t.stop_reason.as_deref(), Some("tool_use"));
        assert!(!t.error_event);
        a(
            &mut t,
            Some("error"),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert!(t.error_event);
    }

    #[test]
    fn anthropic_without_event_names() {
        let mut t = Tally::default();
        a(
            &mut t,
            None,
            r#"{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}"#,
        );
        a(
            &mut t,
            None,
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":9}}"#,
        );
        assert_eq!(
            t.usage,
            Usage {
                input: 3,
                output: 9,
                cache_creation: 0,
                cache_read: 0
            }
        );
        assert_eq!(t.stop_reason.as_deref(), Some("max_tokens"));
        a(&mut t, None, r#"{"type":"error","error":{}}"#);
        assert!(t.error_event);
    }

    #[test]
    fn anthropic_body() {
        let mut t = Tally::default();
        t.anthropic_body(
            br#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":6,"cache_creation_input_tokens":0,"cache_read_input_tokens":4}}"#,
        );
        assert_eq!(
            t.usage,
            Usage {
                input: 12,
                output: 6,
                cache_creation: 0,
                cache_read: 4
            }
        );
        assert_eq!(t.stop_reason.as_deref(), Some("end_turn"));
    }

    #[test]
    fn openai_stream() {
        let mut t = Tally::default();
        o(
            &mut t,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
        );
        o(
            &mut t,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"\"finish_reason\": \"x\""},"finish_reason":null}]}"#,
        );
        assert_eq!(t, Tally::default());
        o(
            &mut t,
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
        );
        assert_eq!(t.stop_reason.as_deref(), Some("stop"));
        o(
            &mut t,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120,"prompt_tokens_details":{"cached_tokens":64}}}"#,
        );
        assert_eq!(
            t.usage,
            Usage {
                input: 36,
                output: 20,
                cache_creation: 0,
                cache_read: 64
            }
        );
        o(&mut t, "[DONE]");
        assert!(!t.error_event);
        o(
            &mut t,
            r#"{"error":{"message":"boom","type":"server_error"}}"#,
        );
        assert!(t.error_event);
    }

    #[test]
    fn openai_body() {
        let mut t = Tally::default();
        t.openai_body(
            br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#,
        );
        assert_eq!(
            t.usage,
            Usage {
                input: 10,
                output: 5,
                cache_creation: 0,
                cache_read: 0
            }
        );
        assert_eq!(t.stop_reason.as_deref(), Some("length"));
        assert!(!t.error_event);
    }

    #[test]
    fn upstream_reported_cost() {
        let mut t = Tally::default();
        o(
            &mut t,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":2,"cost":0.00042}}"#,
        );
        assert_eq!(t.upstream_cost, Some(0.00042));
        let mut t = Tally::default();
        t.openai_body(
            br#"{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
        );
        assert_eq!(t.upstream_cost, None);
    }

    #[test]
    fn non_null_probe() {
        let key = &USAGE_KEY;
        assert!(has_non_null(br#"{"usage" : {"a":1}}"#, key));
        assert!(!has_non_null(br#"{"usage": null}"#, key));
        assert!(!has_non_null(br#"{"x":"usage"}"#, key));
        assert!(has_non_null(br#"{"usage":null,"z":{"usage":2}}"#, key));
        assert!(has_non_null(
            br#"{"finish_reason":"stop"}"#,
            &FINISH_REASON_KEY
        ));
    }
}
