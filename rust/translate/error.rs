//! Upstream error bodies in the client's error shape, the upstream's message kept verbatim.

use serde_json::{json, Value};

use super::json_out::to_bytes;
use super::stop::{anthropic_error_type, openai_error_type};

/// Longest raw (non-JSON) body text carried into a message.
const RAW_MESSAGE_LIMIT: usize = 4096;

/// An OpenAI-compatible server's error body as Anthropic's
/// `{"type":"error","error":{"type","message"}}`, the type chosen by HTTP status.
pub fn openai_error_to_anthropic(status: u16, body: &[u8]) -> Vec<u8> {
    let message = upstream_message(status, body);
    to_bytes(&json!({
        "type": "error",
        "error": {"type": anthropic_error_type(status), "message": message},
    }))
}

/// An Anthropic error body as OpenAI's `{"error":{"message","type","param","code"}}`; the
/// Anthropic error type is kept (OpenAI's SDK classifies errors by status, not by type).
pub fn anthropic_error_to_openai(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let kind = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/type"))
        .and_then(Value::as_str)
        .unwrap_or(openai_error_type(status))
        .to_owned();
    let message = upstream_message(status, body);
    to_bytes(&json!({
        "error": {"message": message, "type": kind, "param": null, "code": null},
    }))
}

/// The message of an error body in any of the shapes servers use: `{"error":{"message"}}`
/// (OpenAI, Anthropic, llama.cpp, Ollama, vLLM), `{"error":"..."}` (Ollama's native API),
/// `{"object":"error","message"}` (older vLLM, SGLang), `{"detail": ...}` (FastAPI servers);
/// otherwise the body text itself.
pub(crate) fn upstream_message(status: u16, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(m) = message_of(&v) {
            return m;
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("upstream returned HTTP {status} with an empty body");
    }
    let mut end = text.len().min(RAW_MESSAGE_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The message inside a parsed error value, if it has one.
pub(crate) fn message_of(v: &Value) -> Option<String> {
    match v.get("error") {
        Some(Value::String(s)) => return Some(s.clone()),
        Some(e @ Value::Object(_)) => {
            if let Some(m) = e.get("message").and_then(Value::as_str) {
                return Some(m.to_owned());
            }
        }
        _ => {}
    }
    if let Some(m) = v.get("message").and_then(Value::as_str) {
        return Some(m.to_owned());
    }
    match v.get("detail") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(d @ (Value::Array(_) | Value::Object(_))) => Some(d.to_string()),
        _ => None,
    }
}

/// A status code carried inside an error value (`error.code` as a number, as vLLM and
/// llama.cpp send it), used to type errors that arrive inside a 200 stream.
pub(crate) fn status_of(v: &Value) -> Option<u16> {
    let code = v
        .pointer("/error/code")
        .or_else(|| v.get("code"))
        .and_then(Value::as_u64)?;
    u16::try_from(code).ok().filter(|c| (400..600).contains(c))
}
