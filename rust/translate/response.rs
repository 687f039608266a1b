//! Whole (non-streamed) response bodies, translated both ways.

use serde_json::{json, Map, Value};

use super::error::message_of;
use super::ids::{completion_id, message_id, tool_use_id};
use super::json_out::{to_bytes, unix_now};
use super::request_to_anthropic::arguments_to_input;
use super::stop::{anthropic_stop_reason, openai_finish_reason};
use super::Usage;

/// A translated body with what the caller tallies: usage (Anthropic's breakdown: `input`
/// excludes cached tokens) and the stop reason in the client's vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub struct Translated {
    pub body: Vec<u8>,
    pub usage: Usage,
    pub stop_reason: Option<String>,
}

/// Usage from an OpenAI `usage` object: cached prompt tokens are split out of `input`.
pub(crate) fn usage_from_openai(u: &Value) -> Usage {
    let prompt = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    let cached = u
        .pointer("/prompt_tokens_details/cached_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(prompt);
    Usage {
        input: prompt - cached,
        output: u
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        cache_creation: 0,
        cache_read: cached,
    }
}

/// The stop string a server reports as matched: vLLM's `stop_reason` or SGLang's
/// `matched_stop` (both are a token id, not a string, when EOS ended the output).
pub(crate) fn matched_stop(choice: &Value) -> Option<&str> {
    choice
        .get("stop_reason")
        .and_then(Value::as_str)
        .or_else(|| choice.get("matched_stop").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

fn nonempty_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// An OpenAI `chat.completion` as an Anthropic `message`.
pub fn openai_response_to_anthropic(body: &[u8], model: &str) -> Result<Translated, String> {
    let resp: Value = serde_json::from_slice(body)
        .map_err(|e| format!("upstream response is not valid JSON: {e}"))?;
    if resp.get("error").is_some() || resp.get("object").and_then(Value::as_str) == Some("error") {
        return Err(message_of(&resp).unwrap_or_else(|| "upstream returned an error".into()));
    }
    let choice = resp
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or("upstream response has no choices")?;
    let msg = choice.get("message").unwrap_or(&Value::Null);

    let mut content = Vec::new();
    if let Some(r) =
        nonempty_str(msg, "reasoning_content").or_else(|| nonempty_str(msg, "reasoning"))
    {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    let text = match msg.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    };
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    let mut has_tools = false;
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for (k, c) in calls.iter().enumerate() {
            has_tools = true;
            let id = tool_use_id(c.get("id").and_then(Value::as_str).unwrap_or(""), k);
            let name = c
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let input = match c.pointer("/function/arguments") {
                Some(Value::String(s)) => arguments_to_input(s),
                Some(v @ Value::Object(_)) => v.clone(),
                _ => json!({}),
            };
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
    }

    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let matched = matched_stop(choice);
    let stop_reason = anthropic_stop_reason(finish, matched.is_some(), has_tools);
    let stop_sequence = matched.filter(|_| stop_reason == "stop_sequence");
    let usage = resp.get("usage").map(usage_from_openai).unwrap_or_default();

    let out = json!({
        "id": message_id(resp.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": usage.input,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": usage.cache_read,
            "output_tokens": usage.output,
        },
    });
    Ok(Translated {
        body: to_bytes(&out),
        usage,
        stop_reason: Some(stop_reason.to_owned()),
    })
}

/// Usage from an Anthropic `usage` object.
pub(crate) fn usage_from_anthropic(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input: n("input_tokens"),
        output: n("output_tokens"),
        cache_creation: n("cache_creation_input_tokens"),
        cache_read: n("cache_read_input_tokens"),
    }
}

/// OpenAI's `usage` for Anthropic counts: `prompt_tokens` is every input token, cached or not.
pub(crate) fn openai_usage_value(u: &Usage) -> Value {
    let prompt = u.input + u.cache_creation + u.cache_read;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
    })
}

/// An Anthropic `message` as an OpenAI `chat.completion`. Thinking text is returned as
/// `reasoning_content`; server tool blocks and redacted thinking have no OpenAI form.
pub fn anthropic_response_to_openai(body: &[u8], model: &str) -> Result<Translated, String> {
    let resp: Value = serde_json::from_slice(body)
        .map_err(|e| format!("upstream response is not valid JSON: {e}"))?;
    if resp.get("type").and_then(Value::as_str) == Some("error") {
        return Err(message_of(&resp).unwrap_or_else(|| "upstream returned an error".into()));
    }
    let blocks = resp
        .get("content")
        .and_then(Value::as_array)
        .ok_or("upstream response has no content")?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("tool_use") => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": b.get("id").and_then(Value::as_str).unwrap_or(""),
                    "type": "function",
                    "function": {
                        "name": b.get("name").and_then(Value::as_str).unwrap_or(""),
                        "arguments": input.to_string(),
                    },
                }));
            }
            _ => {}
        }
    }
    let finish = openai_finish_reason(resp.get("stop_reason").and_then(Value::as_str));
    let usage = resp
        .get("usage")
        .map(usage_from_anthropic)
        .unwrap_or_default();

    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.into());
    }
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let out = json!({
        "id": completion_id(resp.get("id").and_then(Value::as_str)),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": Value::Object(message),
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": openai_usage_value(&usage),
    });
    Ok(Translated {
        body: to_bytes(&out),
        usage,
        stop_reason: Some(finish.to_owned()),
    })
}
