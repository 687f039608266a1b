//! Identifiers carried across: message ids and tool call ids.

use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A tool_use id as Anthropic's pattern allows (`[a-zA-Z0-9_-]+`), so a conversation that
/// continues on an Anthropic model later is still accepted. Ids already in that form (vLLM's
/// `chatcmpl-tool-…`, `call_…`) are kept as they are; the same mapping applies to every
/// request that carries the id back, so results still match their calls.
pub(crate) fn tool_use_id(upstream: &str, fallback_seq: usize) -> String {
    if upstream.is_empty() {
        return format!("toolu_{}_{fallback_seq}", unique());
    }
    upstream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An Anthropic message id for an OpenAI completion id (`chatcmpl-abc` → `msg_abc`).
pub(crate) fn message_id(upstream: Option<&str>) -> String {
    match upstream.filter(|s| !s.is_empty()) {
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => format!("msg_{}", unique()),
    }
}

/// An OpenAI completion id for an Anthropic message id (`msg_abc` → `chatcmpl-abc`).
pub(crate) fn completion_id(upstream: Option<&str>) -> String {
    match upstream.filter(|s| !s.is_empty()) {
        Some(id) => format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id)),
        None => format!("chatcmpl-{}", unique()),
    }
}

/// A short id unique within this process (time plus a counter).
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}{n:x}")
}
