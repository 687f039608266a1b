//! A local estimate of a Messages request's input tokens, for `count_tokens` on targets that
//! have no counting endpoint (OpenAI-compatible servers).
//!
//! Claude Code uses the count for context accounting (when to compact), where counting a
//! little high is harmless and counting low lets a conversation overflow the window. So:
//!
//! * text (system, messages, tool results, thinking, tool inputs, and each tool's name,
//!   description and JSON schema) counts one token per 3.5 bytes of UTF-8. That is about
//!   right for code and a little high for English prose (~4 characters a token), and since
//!   it counts bytes, CJK text (3 bytes a character, about a token each) comes out close too;
//! * each image counts 1,600 tokens, the most an image costs on Anthropic's models after
//!   scaling (about 1.15 megapixels at 750 pixels a token); each document 3,000;
//! * each message adds 4 tokens and each tool 8 for the framing around them.

use serde_json::Value;

const BYTES_PER_TOKEN: f64 = 3.5;
const IMAGE_TOKENS: u64 = 1600;
const DOCUMENT_TOKENS: u64 = 3000;
const MESSAGE_OVERHEAD: u64 = 4;
const TOOL_OVERHEAD: u64 = 8;

#[derive(Default)]
struct Tally {
    text_bytes: usize,
    fixed: u64,
}

impl Tally {
    fn text(&mut self, s: &str) {
        self.text_bytes += s.len();
    }

    fn json(&mut self, v: &Value) {
        self.text_bytes += v.to_string().len();
    }

    fn content(&mut self, c: &Value) {
        match c {
            Value::String(s) => self.text(s),
            Value::Array(blocks) => blocks.iter().for_each(|b| self.block(b)),
            _ => {}
        }
    }

    fn block(&mut self, b: &Value) {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => self.text(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => self.text(b.get("thinking").and_then(Value::as_str).unwrap_or("")),
            Some("image") => self.fixed += IMAGE_TOKENS,
            Some("document") => self.fixed += DOCUMENT_TOKENS,
            Some("tool_use") | Some("server_tool_use") => {
                self.text(b.get("name").and_then(Value::as_str).unwrap_or(""));
                if let Some(input) = b.get("input") {
                    self.json(input);
                }
            }
            Some("tool_result") => {
                if let Some(c) = b.get("content") {
                    self.content(c);
                }
            }
            // redacted_thinking and server tool results: their size as JSON.
            Some(_) => self.json(b),
            None => {}
        }
    }

    fn total(&self) -> u64 {
        (self.text_bytes as f64 / BYTES_PER_TOKEN).ceil() as u64 + self.fixed
    }
}

/// Estimated input tokens of an Anthropic Messages (or count_tokens) request body.
pub fn estimate_tokens(body: &[u8]) -> Result<u64, String> {
    let req: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let mut t = Tally::default();
    match req.get("system") {
        Some(Value::String(s)) => t.text(s),
        Some(Value::Array(blocks)) => blocks.iter().for_each(|b| t.block(b)),
        _ => {}
    }
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: expected an array")?;
    for m in messages {
        t.fixed += MESSAGE_OVERHEAD;
        if let Some(c) = m.get("content") {
            t.content(c);
        }
    }
    for tool in req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        t.fixed += TOOL_OVERHEAD;
        t.text(tool.get("name").and_then(Value::as_str).unwrap_or(""));
        t.text(
            tool.get("description")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        if let Some(schema) = tool.get("input_schema") {
            t.json(schema);
        }
    }
    Ok(t.total())
}
