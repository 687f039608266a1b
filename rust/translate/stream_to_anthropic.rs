//! OpenAI `chat.completion.chunk` events as Anthropic Messages stream events (mode 2).
//!
//! Anthropic content blocks are strictly sequential (start, deltas, stop, then the next
//! index), while OpenAI interleaves reasoning, text and tool calls by `index` freely. The
//! rule that keeps both the event order valid and every tool input exact:
//!
//! * One block is open at a time; anything for another block closes it first.
//! * A `tool_use` block, once open, stays open until its arguments form a closed JSON
//!   object (after which only whitespace can validly follow) or the response ends.
//! * While an open tool block is still incomplete, everything else (text, reasoning, pieces
//!   of other tool calls) waits in arrival order and is sent as soon as that block closes.
//!
//! So calls that arrive one after another (vLLM, llama.cpp, SGLang, Ollama) stream live, and
//! interleaved parallel calls are still reassembled exactly, the later ones slightly later.
//!
//! Usage arrives after `finish_reason` when `include_usage` is on, so `message_delta` and
//! `message_stop` are sent on `[DONE]` (or a complete end of the body), not on the finish
//! chunk. Thinking blocks carry an empty `signature` and no `signature_delta`: the SDKs
//! accumulate a thinking block without one, and no signature could be valid for Anthropic.

use std::borrow::Cow;
use std::collections::VecDeque;

use serde_json::{json, Value};

use super::borrowed::Text;
use super::chunk::{Chunk, ChunkUsage};
use super::chunk_template::Template;
use super::error::{message_of, status_of};
use super::ids::{message_id, tool_use_id};
use super::json_out::{begin_event, end_frame, event_value, push_str, push_u64};
use super::json_scan::JsonCompletion;
use super::options::TranslateOptions;
use super::stop::{anthropic_error_type, anthropic_stop_reason};
use super::{SseEvent, StreamTranslator, Usage};

/// A `content_block_delta`'s bytes between its index and its text, by the delta's type.
const TEXT_DELTA: &[u8] = b",\"delta\":{\"type\":\"text_delta\",\"text\":";
const THINKING_DELTA: &[u8] = b",\"delta\":{\"type\":\"thinking_delta\",\"thinking\":";
const JSON_DELTA: &[u8] = b",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    None,
    Text(u32),
    Thinking(u32),
    Tool(usize, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Waiting,
    Open,
    Closed,
}

struct ToolSlot {
    id: String,
    name: String,
    /// Argument text received while the block could not be opened yet.
    buf: String,
    state: SlotState,
    queued: bool,
    scan: JsonCompletion,
}

enum Pending {
    Text(String),
    Thinking(String),
    Tool(usize),
}

pub(crate) struct OpenAiToAnthropic {
    model: String,
    msg_id: String,
    started: bool,
    done: bool,
    next_block: u32,
    open: Open,
    tools: Vec<ToolSlot>,
    /// Upstream tool call index → slot, latest first wins.
    index_map: Vec<(u32, usize)>,
    backlog: VecDeque<Pending>,
    /// The last content chunk's bytes around its text: the next like it is read without a scan.
    template: Template,
    finish_reason: Option<String>,
    stop_sequence: Option<String>,
    stop_reason: Option<&'static str>,
    usage: Usage,
    usage_seen: bool,
    failed: bool,
}

impl OpenAiToAnthropic {
    pub(crate) fn new(options: &TranslateOptions) -> Self {
        OpenAiToAnthropic {
            model: options.model.clone(),
            msg_id: String::new(),
            started: false,
            done: false,
            next_block: 0,
            open: Open::None,
            tools: Vec::new(),
            index_map: Vec::new(),
            backlog: VecDeque::new(),
            template: Template::default(),
            finish_reason: None,
            stop_sequence: None,
            stop_reason: None,
            usage: Usage::default(),
            usage_seen: false,
            failed: false,
        }
    }

    fn start_message(&mut self, id: Option<&str>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.msg_id = message_id(id);
        let v = json!({
            "type": "message_start",
            "message": {
                "id": self.msg_id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": self.usage.input,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": self.usage.cache_read,
                    "output_tokens": self.usage.output,
                },
            },
        });
        event_value(out, "message_start", &v);
    }

    fn error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        begin_event(out, "error");
        out.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":");
        push_str(out, kind);
        out.extend_from_slice(b",\"message\":");
        push_str(out, message);
        out.extend_from_slice(b"}}");
        end_frame(out);
        self.done = true;
        self.failed = true;
    }

    // ---- blocks ----

    fn start_block(&mut self, out: &mut Vec<u8>, block: &Value) -> u32 {
        let index = self.next_block;
        self.next_block += 1;
        begin_event(out, "content_block_start");
        out.extend_from_slice(b"{\"type\":\"content_block_start\",\"index\":");
        push_u64(out, u64::from(index));
        out.extend_from_slice(b",\"content_block\":");
        super::json_out::push_value(out, block);
        out.push(b'}');
        end_frame(out);
        index
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let index = match self.open {
            Open::None => return,
            Open::Text(i) | Open::Thinking(i) => i,
            Open::Tool(slot, i) => {
                self.tools[slot].state = SlotState::Closed;
                i
            }
        };
        begin_event(out, "content_block_stop");
        out.extend_from_slice(b"{\"type\":\"content_block_stop\",\"index\":");
        push_u64(out, u64::from(index));
        out.push(b'}');
        end_frame(out);
        self.open = Open::None;
    }

    /// A `content_block_delta` event; `delta` is its delta's type and field (`TEXT_DELTA`...).
    /// Its fixed bytes go out as three pieces: it is written for nearly every upstream chunk.
    fn delta(out: &mut Vec<u8>, index: u32, delta: &[u8], text: &str) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        push_u64(out, u64::from(index));
        out.extend_from_slice(delta);
        push_str(out, text);
        out.extend_from_slice(b"}}\n\n");
    }

    /// Whether new content must wait: an open tool block is still incomplete, or earlier
    /// content is already waiting.
    fn blocked(&self) -> bool {
        if !self.backlog.is_empty() {
            return true;
        }
        matches!(self.open, Open::Tool(slot, _) if !self.tools[slot].scan.is_complete())
    }

    fn emit_text(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = match self.open {
            Open::Text(i) => i,
            _ => {
                self.close(out);
                let i = self.start_block(out, &json!({"type": "text", "text": ""}));
                self.open = Open::Text(i);
                i
            }
        };
        Self::delta(out, index, TEXT_DELTA, text);
    }

    fn emit_thinking(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = match self.open {
            Open::Thinking(i) => i,
            _ => {
                self.close(out);
                let block = json!({"type": "thinking", "thinking": "", "signature": ""});
                let i = self.start_block(out, &block);
                self.open = Open::Thinking(i);
                i
            }
        };
        Self::delta(out, index, THINKING_DELTA, text);
    }

    fn open_tool(&mut self, slot: usize, out: &mut Vec<u8>) {
        self.close(out);
        let t = &mut self.tools[slot];
        let block = json!({"type": "tool_use", "id": t.id, "name": t.name, "input": {}});
        let index = self.start_block(out, &block);
        self.open = Open::Tool(slot, index);
        let t = &mut self.tools[slot];
        t.state = SlotState::Open;
        if !t.buf.is_empty() {
            let buf = std::mem::take(&mut t.buf);
            t.scan.feed(buf.as_bytes());
            Self::delta(out, index, JSON_DELTA, &buf);
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        if self.blocked() {
            if let Some(Pending::Text(s)) = self.backlog.back_mut() {
                s.push_str(text);
            } else {
                self.backlog.push_back(Pending::Text(text.to_owned()));
            }
            return;
        }
        self.emit_text(text, out);
    }

    fn thinking(&mut self, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        if self.blocked() {
            if let Some(Pending::Thinking(s)) = self.backlog.back_mut() {
                s.push_str(text);
            } else {
                self.backlog.push_back(Pending::Thinking(text.to_owned()));
            }
            return;
        }
        self.emit_thinking(text, out);
    }

    /// The slot for an upstream tool call index. A delta that carries a new id for an index
    /// already in use starts a new call (servers that number every call 0).
    fn slot_for(&mut self, index: u32, id: Option<&str>) -> usize {
        let found = self
            .index_map
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map(|(_, s)| *s);
        if let Some(slot) = found {
            let existing = &self.tools[slot].id;
            match id {
                Some(id) if !id.is_empty() && !existing.is_empty() && existing != id => {}
                _ => return slot,
            }
        }
        let slot = self.tools.len();
        self.tools.push(ToolSlot {
            id: String::new(),
            name: String::new(),
            buf: String::new(),
            state: SlotState::Waiting,
            queued: false,
            scan: JsonCompletion::default(),
        });
        self.index_map.push((index, slot));
        slot
    }

    fn tool_piece(
        &mut self,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        args: &str,
        out: &mut Vec<u8>,
    ) {
        let slot = self.slot_for(index, id);
        let seq = slot;
        let t = &mut self.tools[slot];
        if t.state == SlotState::Waiting {
            if let Some(id) = id.filter(|s| !s.is_empty()) {
                if t.id.is_empty() {
                    t.id = tool_use_id(id, seq);
                }
            }
            if let Some(name) = name.filter(|s| !s.is_empty()) {
                if t.name.is_empty() {
                    t.name = name.to_owned();
                }
            }
        }
        match t.state {
            SlotState::Open => {
                let Open::Tool(_, block) = self.open else {
                    return;
                };
                if !args.is_empty() {
                    t.scan.feed(args.as_bytes());
                    Self::delta(out, block, JSON_DELTA, args);
                }
                if t.scan.is_complete() && !self.backlog.is_empty() {
                    self.drain(false, out);
                }
            }
            // After a closed JSON object only whitespace is valid; anything else would make
            // the arguments invalid JSON whatever we did with it.
            SlotState::Closed => {}
            SlotState::Waiting => {
                t.buf.push_str(args);
                if !t.queued {
                    t.queued = true;
                    self.backlog.push_back(Pending::Tool(slot));
                }
                self.drain(false, out);
            }
        }
    }

    /// Sends waiting content in order, as far as the open block allows (all of it when
    /// `finishing`).
    fn drain(&mut self, finishing: bool, out: &mut Vec<u8>) {
        loop {
            if !finishing {
                if let Open::Tool(slot, _) = self.open {
                    if !self.tools[slot].scan.is_complete() {
                        return;
                    }
                }
                // A call is only opened once its name is known.
                if let Some(Pending::Tool(slot)) = self.backlog.front() {
                    if self.tools[*slot].name.is_empty() {
                        return;
                    }
                }
            }
            let Some(next) = self.backlog.pop_front() else {
                return;
            };
            match next {
                Pending::Text(s) => self.emit_text(&s, out),
                Pending::Thinking(s) => self.emit_thinking(&s, out),
                Pending::Tool(slot) => {
                    if self.tools[slot].id.is_empty() {
                        self.tools[slot].id = tool_use_id("", slot);
                    }
                    self.open_tool(slot, out);
                }
            }
        }
    }

    fn apply_usage(&mut self, u: &ChunkUsage) {
        let prompt = u.prompt_tokens.unwrap_or(0);
        let cached = u
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(prompt);
        self.usage = Usage {
            input: prompt - cached,
            output: u.completion_tokens.unwrap_or(0),
            cache_creation: 0,
            cache_read: cached,
        };
        self.usage_seen = true;
    }

    fn on_chunk(&mut self, chunk: Chunk<'_>, out: &mut Vec<u8>) {
        if let Some(u) = &chunk.usage {
            self.apply_usage(u);
        }
        self.start_message(chunk.id.as_deref(), out);
        let Some(choices) = chunk.choices else {
            return;
        };
        for choice in choices.into_iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                let reasoning = delta
                    .reasoning_content
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .or(delta.reasoning.as_deref());
                if let Some(r) = reasoning {
                    self.thinking(r, out);
                }
                if let Some(c) = delta.content.as_deref() {
                    self.text(c, out);
                }
                for (pos, call) in delta.tool_calls.iter().flatten().enumerate() {
                    let index = call.index.unwrap_or(pos as u32);
                    let f = call.function.as_ref();
                    let args: Cow<'_, str> = match f.and_then(|f| f.arguments) {
                        None => Cow::Borrowed(""),
                        Some(raw) => {
                            let text = raw.get();
                            if text.starts_with('"') {
                                serde_json::from_str::<Text<'_>>(text)
                                    .map(|t| t.0)
                                    .unwrap_or(Cow::Borrowed(""))
                            } else if text == "null" {
                                Cow::Borrowed("")
                            } else {
                                Cow::Borrowed(text)
                            }
                        }
                    };
                    let name = f.and_then(|f| f.name.as_deref());
                    self.tool_piece(index, call.id.as_deref(), name, &args, out);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason.0.into_owned());
                let matched = [choice.stop_reason, choice.matched_stop]
                    .into_iter()
                    .flatten()
                    .find_map(|raw| serde_json::from_str::<String>(raw.get()).ok())
                    .filter(|s| !s.is_empty());
                if matched.is_some() {
                    self.stop_sequence = matched;
                }
                self.drain(true, out);
                self.close(out);
            }
        }
    }

    /// `message_delta` and `message_stop`, after every block is closed.
    fn end_message(&mut self, out: &mut Vec<u8>) {
        self.start_message(None, out);
        self.drain(true, out);
        self.close(out);
        let reason = anthropic_stop_reason(
            self.finish_reason.as_deref(),
            self.stop_sequence.is_some(),
            !self.tools.is_empty(),
        );
        self.stop_reason = Some(reason);
        let stop_sequence = self
            .stop_sequence
            .as_deref()
            .filter(|_| reason == "stop_sequence");
        begin_event(out, "message_delta");
        out.extend_from_slice(b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":");
        push_str(out, reason);
        out.extend_from_slice(b",\"stop_sequence\":");
        super::json_out::push_opt_str(out, stop_sequence);
        out.extend_from_slice(b"},\"usage\":{");
        if self.usage_seen {
            out.extend_from_slice(b"\"input_tokens\":");
            push_u64(out, self.usage.input);
            out.extend_from_slice(b",\"cache_read_input_tokens\":");
            push_u64(out, self.usage.cache_read);
            out.push(b',');
        }
        out.extend_from_slice(b"\"output_tokens\":");
        push_u64(out, self.usage.output);
        out.extend_from_slice(b"}}");
        end_frame(out);
        event_value(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }

    fn upstream_error(&mut self, v: &Value, out: &mut Vec<u8>) {
        let message = message_of(v).unwrap_or_else(|| v.to_string());
        let kind = status_of(v).map_or("api_error", anthropic_error_type);
        self.error(kind, &message, out);
    }
}

impl StreamTranslator for OpenAiToAnthropic {
    fn on_event(&mut self, ev: &SseEvent<'_>, out: &mut Vec<u8>) {
        self.template.miss();
        if self.done {
            return;
        }
        let data = ev.data.trim_ascii();
        if data.is_empty() {
            return;
        }
        if data == b"[DONE]" {
            self.end_message(out);
            return;
        }
        if ev.event == Some("error") {
            let v: Value = serde_json::from_slice(data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()));
            let v = if v.is_string() {
                json!({ "error": v })
            } else {
                v
            };
            self.upstream_error(&v, out);
            return;
        }
        // Lines that are not chunks (keep-alive text, comments sent as data) are skipped.
        let Some(chunk) = self.template.read_chunk(data) else {
            return;
        };
        if chunk.error.is_some() || chunk.object.as_deref() == Some("error") {
            let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
            self.upstream_error(&v, out);
            return;
        }
        self.on_chunk(chunk, out);
    }

    fn finish(&mut self, complete: bool, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if complete && self.finish_reason.is_some() {
            // A server that ends the body without `[DONE]`.
            self.end_message(out);
        } else if complete {
            self.error(
                "api_error",
                "upstream stream ended without a finish_reason; the response is incomplete",
                out,
            );
        } else {
            self.error(
                "api_error",
                "upstream connection ended before the response was complete",
                out,
            );
        }
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn stop_reason(&self) -> Option<&str> {
        self.stop_reason
    }

    fn failed(&self) -> bool {
        self.failed
    }

    fn last_was_templated(&self) -> bool {
        self.template.hit()
    }
}
