//! Parsing translator output back into what a client sees, checking order rules on the way.

use serde_json::{json, Value};

/// One reassembled Anthropic content block.
#[derive(Debug, Default, Clone)]
pub(crate) struct Block {
    pub kind: String,
    pub text: String,
    pub thinking: String,
    pub signature: String,
    pub id: String,
    pub name: String,
    pub partial_json: String,
}

impl Block {
    /// The tool input as the SDK builds it: the joined `partial_json`, `{}` when empty.
    pub fn input(&self) -> Value {
        if self.partial_json.is_empty() {
            json!({})
        } else {
            serde_json::from_str(&self.partial_json)
                .unwrap_or_else(|e| panic!("tool input is not JSON ({e}): {}", self.partial_json))
        }
    }
}

/// An Anthropic message as reassembled from its events.
#[derive(Debug, Default)]
pub(crate) struct Message {
    pub start: Value,
    pub blocks: Vec<Block>,
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub delta_usage: Value,
    pub error: Option<Value>,
    pub stopped: bool,
    pub names: Vec<String>,
}

/// Splits `event: NAME\ndata: JSON\n\n` frames.
pub(crate) fn anthropic_frames(out: &str) -> Vec<(String, Value)> {
    assert!(
        out.is_empty() || out.ends_with("\n\n"),
        "unterminated frame: {out:?}"
    );
    out.split_terminator("\n\n")
        .map(|frame| {
            let mut lines = frame.lines();
            let event = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_owned();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            assert!(lines.next().is_none(), "extra line in frame {frame:?}");
            let v: Value = serde_json::from_str(data).unwrap();
            assert_eq!(
                v["type"],
                event.as_str(),
                "event name and data type differ: {frame}"
            );
            (event, v)
        })
        .collect()
}

/// Checks the Anthropic stream rules and reassembles the message:
/// `message_start` first; blocks start with indexes 0, 1, 2, … one at a time; every delta
/// and stop names the open block and fits its type; `message_delta` comes after the last
/// block stops; `message_stop` comes last; after an `error` nothing follows.
pub(crate) fn check_anthropic(out: &str) -> Message {
    let mut m = Message::default();
    let mut open: Option<usize> = None;
    let mut delta_seen = false;
    for (i, (name, v)) in anthropic_frames(out).into_iter().enumerate() {
        assert!(
            !m.stopped && m.error.is_none(),
            "event after the end: {name}"
        );
        m.names.push(name.clone());
        if name == "error" {
            assert!(v["error"]["type"].is_string() && v["error"]["message"].is_string());
            m.error = Some(v);
            continue;
        }
        if i == 0 {
            assert_eq!(name, "message_start", "first event");
        }
        match name.as_str() {
            "message_start" => {
                assert_eq!(i, 0, "message_start not first");
                let msg = &v["message"];
                assert_eq!(msg["type"], "message");
                assert_eq!(msg["role"], "assistant");
                assert_eq!(msg["content"], json!([]));
                assert!(msg["id"].as_str().unwrap().starts_with("msg_"));
                assert!(msg["usage"]["input_tokens"].is_u64());
                assert!(msg["usage"]["output_tokens"].is_u64());
                m.start = v;
            }
            "content_block_start" => {
                assert!(open.is_none(), "block started while {open:?} is open");
                assert!(!delta_seen, "block after message_delta");
                let index = v["index"].as_u64().unwrap() as usize;
                assert_eq!(index, m.blocks.len(), "block indexes must count up from 0");
                let cb = &v["content_block"];
                let kind = cb["type"].as_str().unwrap().to_owned();
                let mut b = Block {
                    kind: kind.clone(),
                    ..Block::default()
                };
                match kind.as_str() {
                    "text" => assert_eq!(cb["text"], ""),
                    "thinking" => {
                        assert_eq!(cb["thinking"], "");
                        assert!(cb["signature"].is_string());
                    }
                    "tool_use" => {
                        assert_eq!(cb["input"], json!({}));
                        b.id = cb["id"].as_str().unwrap().to_owned();
                        b.name = cb["name"].as_str().unwrap().to_owned();
                        assert!(
                            !b.id.is_empty()
                                && b.id
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                            "tool_use id {:?} does not match Anthropic's pattern",
                            b.id
                        );
                    }
                    other => panic!("unexpected block type {other}"),
                }
                m.blocks.push(b);
                open = Some(index);
            }
            "content_block_delta" => {
                let index = v["index"].as_u64().unwrap() as usize;
                assert_eq!(Some(index), open, "delta for a block that is not open");
                let b = &mut m.blocks[index];
                let d = &v["delta"];
                match (d["type"].as_str().unwrap(), b.kind.as_str()) {
                    ("text_delta", "text") => b.text.push_str(d["text"].as_str().unwrap()),
                    ("thinking_delta", "thinking") => {
                        b.thinking.push_str(d["thinking"].as_str().unwrap())
                    }
                    ("signature_delta", "thinking") => {
                        b.signature = d["signature"].as_str().unwrap().to_owned()
                    }
                    ("input_json_delta", "tool_use") => {
                        b.partial_json.push_str(d["partial_json"].as_str().unwrap())
                    }
                    (dt, bt) => panic!("{dt} on a {bt} block"),
                }
            }
            "content_block_stop" => {
                let index = v["index"].as_u64().unwrap() as usize;
                assert_eq!(Some(index), open, "stop for a block that is not open");
                open = None;
            }
            "message_delta" => {
                assert!(open.is_none(), "message_delta while block {open:?} is open");
                assert!(!delta_seen, "second message_delta");
                delta_seen = true;
                m.stop_reason = v["delta"]["stop_reason"].as_str().map(str::to_owned);
                m.stop_sequence = v["delta"]["stop_sequence"].as_str().map(str::to_owned);
                assert!(v["usage"]["output_tokens"].is_u64());
                m.delta_usage = v["usage"].clone();
            }
            "message_stop" => {
                assert!(delta_seen, "message_stop without message_delta");
                m.stopped = true;
            }
            "ping" => {}
            other => panic!("unknown event {other}"),
        }
    }
    m
}

/// The parts of an OpenAI stream a client reassembles.
#[derive(Debug, Default)]
pub(crate) struct Completion {
    pub role: Option<String>,
    pub content: String,
    pub reasoning: String,
    /// (id, name, arguments) by tool call index.
    pub tool_calls: Vec<(String, String, String)>,
    pub finish_reason: Option<String>,
    pub usage: Option<Value>,
    pub error: Option<Value>,
    pub done: bool,
    pub chunks: usize,
}

/// Checks OpenAI chunk framing (`data: JSON\n\n`, `[DONE]` last, nothing after an error)
/// and reassembles the completion as the OpenAI SDK's accumulator would.
pub(crate) fn check_openai(out: &str) -> Completion {
    assert!(
        out.is_empty() || out.ends_with("\n\n"),
        "unterminated frame: {out:?}"
    );
    let mut c = Completion::default();
    for frame in out.split_terminator("\n\n") {
        assert!(!c.done && c.error.is_none(), "data after the end: {frame}");
        let data = frame.strip_prefix("data: ").unwrap();
        assert!(!data.contains('\n'), "multi-line data");
        if data == "[DONE]" {
            c.done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(e) = v.get("error") {
            assert!(e["message"].is_string() && e["type"].is_string());
            c.error = Some(e.clone());
            continue;
        }
        c.chunks += 1;
        assert_eq!(v["object"], "chat.completion.chunk");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["model"], "claude-test");
        assert!(v["created"].is_u64());
        if !v["usage"].is_null() {
            assert_eq!(v["choices"], json!([]), "usage chunk must have no choices");
            c.usage = Some(v["usage"].clone());
            continue;
        }
        assert!(c.usage.is_none(), "chunk after the usage chunk");
        let choice = &v["choices"][0];
        assert_eq!(choice["index"], 0);
        if c.chunks == 1 {
            assert_eq!(
                choice["delta"]["role"], "assistant",
                "first chunk carries the role"
            );
        }
        if let Some(r) = choice["delta"]["role"].as_str() {
            c.role = Some(r.to_owned());
        }
        if let Some(t) = choice["delta"]["content"].as_str() {
            c.content.push_str(t);
        }
        if let Some(t) = choice["delta"]["reasoning_content"].as_str() {
            c.reasoning.push_str(t);
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let k = call["index"].as_u64().unwrap() as usize;
            if k == c.tool_calls.len() {
                assert_eq!(call["type"], "function");
                c.tool_calls.push((
                    call["id"].as_str().unwrap().to_owned(),
                    call["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            assert!(k < c.tool_calls.len(), "tool call index {k} skipped ahead");
            if let Some(a) = call["function"]["arguments"].as_str() {
                c.tool_calls[k].2.push_str(a);
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            assert!(c.finish_reason.is_none(), "second finish_reason");
            c.finish_reason = Some(f.to_owned());
        } else if c.finish_reason.is_some() {
            panic!("content after finish_reason");
        }
    }
    c
}
