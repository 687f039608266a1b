//! Anthropic Messages stream events as OpenAI `chat.completion.chunk` events (mode 3).
//!
//! The first chunk carries `role`; text deltas become `content`, thinking deltas
//! `reasoning_content`, each `tool_use` block one entry of `tool_calls` (its `index` counts
//! tool calls only) whose `arguments` stream as the `input_json_delta` pieces arrive.
//! `message_delta` gives `finish_reason`; `message_stop` ends the stream with the usage chunk
//! (when the client asked for it) and `data: [DONE]`. An `error` event becomes a chunk
//! `{"error": {...}}`, which the OpenAI SDKs raise as an API error.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::borrowed::Text;
use super::error::message_of;
use super::ids::completion_id;
use super::json_out::{end_frame, push_str, push_u64, push_value, unix_now};
use super::options::TranslateOptions;
use super::response::openai_usage_value;
use super::stop::openai_finish_reason;
use super::{SseEvent, StreamTranslator, Usage};

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(borrow, default)]
    message: Option<MessageStart<'a>>,
    #[serde(borrow, default)]
    content_block: Option<ContentBlock<'a>>,
    #[serde(borrow, default)]
    delta: Option<EventDelta<'a>>,
    #[serde(default)]
    usage: Option<EventUsage>,
}

#[derive(Deserialize)]
struct MessageStart<'a> {
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    #[serde(default)]
    usage: Option<EventUsage>,
}

#[derive(Deserialize)]
struct ContentBlock<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default)]
    thinking: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct EventDelta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default)]
    thinking: Option<Text<'a>>,
    #[serde(borrow, default)]
    partial_json: Option<Text<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct EventUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    Tool(u32),
    Other,
}

pub(crate) struct AnthropicToOpenAi {
    model: String,
    include_usage: bool,
    /// `data: {"id":…,"object":…,"created":…,"model":…,` shared by every chunk.
    prefix: Vec<u8>,
    started: bool,
    done: bool,
    blocks: Vec<Block>,
    tool_calls: u32,
    finish_sent: bool,
    finish_reason: Option<&'static str>,
    usage: Usage,
    failed: bool,
}

impl AnthropicToOpenAi {
    pub(crate) fn new(options: &TranslateOptions) -> Self {
        AnthropicToOpenAi {
            model: options.model.clone(),
            include_usage: options.include_usage,
            prefix: Vec::new(),
            started: false,
            done: false,
            blocks: Vec::new(),
            tool_calls: 0,
            finish_sent: false,
            finish_reason: None,
            usage: Usage::default(),
            failed: false,
        }
    }

    fn apply_usage(&mut self, u: &EventUsage) {
        if let Some(n) = u.input_tokens {
            self.usage.input = n;
        }
        if let Some(n) = u.output_tokens {
            self.usage.output = n;
        }
        if let Some(n) = u.cache_creation_input_tokens {
            self.usage.cache_creation = n;
        }
        if let Some(n) = u.cache_read_input_tokens {
            self.usage.cache_read = n;
        }
    }

    fn ensure_prefix(&mut self, id: Option<&str>) {
        if !self.prefix.is_empty() {
            return;
        }
        let p = &mut self.prefix;
        p.extend_from_slice(b"data: {\"id\":");
        push_str(p, &completion_id(id));
        p.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        push_u64(p, unix_now());
        p.extend_from_slice(b",\"model\":");
        push_str(p, &self.model);
        p.push(b',');
    }

    /// Starts a chunk with one choice; the caller writes the delta object, then [`Self::end`].
    fn begin(&mut self, out: &mut Vec<u8>) {
        self.ensure_prefix(None);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":");
    }

    fn end(out: &mut Vec<u8>, finish_reason: Option<&str>) {
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        super::json_out::push_opt_str(out, finish_reason);
        out.extend_from_slice(b"}]}");
        end_frame(out);
    }

    fn role_chunk(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.begin(out);
        out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":\"\"}");
        Self::end(out, None);
    }

    fn text_chunk(&mut self, field: &str, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        self.role_chunk(out);
        self.begin(out);
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":");
        push_str(out, text);
        out.push(b'}');
        Self::end(out, None);
    }

    fn tool_start_chunk(
        &mut self,
        index: u32,
        id: &str,
        name: &str,
        args: &str,
        out: &mut Vec<u8>,
    ) {
        self.role_chunk(out);
        self.begin(out);
        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
        push_u64(out, u64::from(index));
        out.extend_from_slice(b",\"id\":");
        push_str(out, id);
        out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        push_str(out, name);
        out.extend_from_slice(b",\"arguments\":");
        push_str(out, args);
        out.extend_from_slice(b"}}]}");
        Self::end(out, None);
    }

    fn tool_args_chunk(&mut self, index: u32, args: &str, out: &mut Vec<u8>) {
        if args.is_empty() {
            return;
        }
        self.begin(out);
        out.extend_from_slice(b"{\"tool_calls\":[{\"index\":");
        push_u64(out, u64::from(index));
        out.extend_from_slice(b",\"function\":{\"arguments\":");
        push_str(out, args);
        out.extend_from_slice(b"}}]}");
        Self::end(out, None);
    }

    fn finish_chunk(&mut self, reason: &'static str, out: &mut Vec<u8>) {
        if self.finish_sent {
            return;
        }
        self.finish_sent = true;
        self.finish_reason = Some(reason);
        self.role_chunk(out);
        self.begin(out);
        out.extend_from_slice(b"{}");
        Self::end(out, Some(reason));
    }

    fn stop(&mut self, out: &mut Vec<u8>) {
        self.finish_chunk("stop", out);
        if self.include_usage {
            out.extend_from_slice(&self.prefix);
            out.extend_from_slice(b"\"choices\":[],\"usage\":");
            push_value(out, &openai_usage_value(&self.usage));
            out.push(b'}');
            end_frame(out);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    fn error_chunk(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: {\"error\":{\"message\":");
        push_str(out, message);
        out.extend_from_slice(b",\"type\":");
        push_str(out, kind);
        out.extend_from_slice(b",\"param\":null,\"code\":null}}");
        end_frame(out);
        self.done = true;
        self.failed = true;
    }

    fn block_start(&mut self, ev: &Event<'_>, out: &mut Vec<u8>) {
        let Some(cb) = &ev.content_block else {
            return;
        };
        let index = ev.index.map_or(self.blocks.len(), |i| i as usize);
        let block = match cb.kind.as_deref() {
            Some("text") => {
                if let Some(t) = cb.text.as_deref() {
                    self.text_chunk("content", t, out);
                }
                Block::Text
            }
            Some("thinking") => {
                if let Some(t) = cb.thinking.as_deref() {
                    self.text_chunk("reasoning_content", t, out);
                }
                Block::Thinking
            }
            Some("tool_use") => {
                let k = self.tool_calls;
                self.tool_calls += 1;
                // Anthropic starts tool_use with `input: {}` and streams the input; a
                // non-empty input here is sent whole.
                let args = cb
                    .input
                    .map(RawValue::get)
                    .filter(|s| {
                        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
                        compact != "{}"
                    })
                    .unwrap_or("");
                let id = cb.id.as_deref().unwrap_or("");
                let name = cb.name.as_deref().unwrap_or("");
                self.tool_start_chunk(k, id, name, args, out);
                Block::Tool(k)
            }
            // redacted_thinking, server_tool_use, web_search_tool_result, ...: no OpenAI form.
            _ => Block::Other,
        };
        if self.blocks.len() <= index {
            self.blocks.resize(index + 1, Block::Other);
        }
        self.blocks[index] = block;
    }

    fn block_delta(&mut self, ev: &Event<'_>, out: &mut Vec<u8>) {
        let Some(d) = &ev.delta else {
            return;
        };
        let block = ev
            .index
            .and_then(|i| self.blocks.get(i as usize).copied())
            .unwrap_or(Block::Other);
        match (d.kind.as_deref(), block) {
            (Some("text_delta"), Block::Text) => {
                if let Some(t) = d.text.as_deref() {
                    self.text_chunk("content", t, out);
                }
            }
            (Some("thinking_delta"), Block::Thinking) => {
                if let Some(t) = d.thinking.as_deref() {
                    self.text_chunk("reasoning_content", t, out);
                }
            }
            (Some("input_json_delta"), Block::Tool(k)) => {
                if let Some(p) = d.partial_json.as_deref() {
                    self.tool_args_chunk(k, p, out);
                }
            }
            // signature_delta, citations_delta, and deltas of blocks with no OpenAI form.
            _ => {}
        }
    }
}

impl StreamTranslator for AnthropicToOpenAi {
    fn on_event(&mut self, ev: &SseEvent<'_>, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let data = ev.data.trim_ascii();
        if data.is_empty() {
            return;
        }
        let Ok(parsed) = serde_json::from_slice::<Event<'_>>(data) else {
            if ev.event == Some("error") {
                let text = String::from_utf8_lossy(data);
                self.error_chunk("api_error", &text, out);
            }
            return;
        };
        let kind = parsed.kind.as_deref().or(ev.event).unwrap_or("");
        match kind {
            "message_start" => {
                if let Some(m) = &parsed.message {
                    self.ensure_prefix(m.id.as_deref());
                    if let Some(u) = &m.usage {
                        self.apply_usage(u);
                    }
                }
                self.role_chunk(out);
            }
            "content_block_start" => self.block_start(&parsed, out),
            "content_block_delta" => self.block_delta(&parsed, out),
            "message_delta" => {
                if let Some(u) = &parsed.usage {
                    self.apply_usage(u);
                }
                if let Some(reason) = parsed.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                    let r = openai_finish_reason(Some(reason));
                    self.finish_chunk(r, out);
                }
            }
            "message_stop" => self.stop(out),
            "error" => {
                let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
                let message = message_of(&v).unwrap_or_else(|| "upstream error".to_owned());
                let kind = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error")
                    .to_owned();
                self.error_chunk(&kind, &message, out);
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
    }

    fn finish(&mut self, complete: bool, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let message = if complete {
            "upstream stream ended before message_stop; the response is incomplete"
        } else {
            "upstream connection ended before the response was complete"
        };
        self.error_chunk("api_error", message, out);
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn stop_reason(&self) -> Option<&str> {
        self.finish_reason
    }

    fn failed(&self) -> bool {
        self.failed
    }
}
