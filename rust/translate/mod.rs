//! Translation between the Anthropic Messages and OpenAI Chat Completions wire formats.
//!
//! This file is the contract between the relay (`crate::exchange`) and the translators:
//! the relay splits the upstream body into server-sent events and hands each complete
//! event to a `StreamTranslator`, which appends client-facing SSE bytes to `out`.

/// Token counts as the client-facing format reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
}

/// One complete server-sent event as read from the upstream.
/// `data` is the event's data lines joined with `\n` (the SSE rule), without the final newline.
#[derive(Clone, Copy, Debug)]
pub struct SseEvent<'a> {
    pub event: Option<&'a str>,
    pub data: &'a [u8],
}

/// Turns a stream of upstream events in one format into SSE bytes in the other.
pub trait StreamTranslator: Send {
    /// Called for each complete upstream event, in order.
    fn on_event(&mut self, ev: &SseEvent<'_>, out: &mut Vec<u8>);
    /// Called once when the upstream body ends: `complete` is false when it was cut short
    /// (connection lost, idle timeout), in which case the translator emits an error event.
    fn finish(&mut self, complete: bool, out: &mut Vec<u8>);
    fn usage(&self) -> Usage;
    fn stop_reason(&self) -> Option<&str>;
}
