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
    /// Whether the translator ended the client's stream with an error event (an upstream
    /// error chunk, or a body that ended before the response was complete).
    fn failed(&self) -> bool {
        false
    }
    /// Whether the last event was an OpenAI chunk read from the last one's template
    /// (chunk_template.rs): one choice whose delta is one text, no usage, no error. The exchange
    /// then knows what its own searches of the chunk would find.
    fn last_was_templated(&self) -> bool {
        false
    }
}

mod borrowed;
mod chunk;
mod chunk_template;
mod count_tokens;
mod error;
mod fields;
mod ids;
pub(crate) mod json_out;
mod json_scan;
mod options;
pub mod py;
mod request_to_anthropic;
mod request_to_openai;
mod response;
mod stop;
mod stream_to_anthropic;
mod stream_to_openai;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

pub use count_tokens::estimate_tokens;
pub use error::{anthropic_error_to_openai, openai_error_to_anthropic};
pub use options::{Flavor, TranslateOptions};
pub use request_to_anthropic::openai_request_to_anthropic;
pub use request_to_openai::anthropic_request_to_openai;
pub use response::{anthropic_response_to_openai, openai_response_to_anthropic, Translated};

/// Mode number of the relay for an OpenAI-format upstream answering an Anthropic-format client.
pub const OPENAI_TO_ANTHROPIC: u8 = 2;
/// Mode number of the relay for an Anthropic-format upstream answering an OpenAI-format client.
pub const ANTHROPIC_TO_OPENAI: u8 = 3;

/// The translator for one streamed response, or `None` for a mode that does not translate.
pub fn new_stream_translator(
    mode: u8,
    options: &TranslateOptions,
) -> Option<Box<dyn StreamTranslator>> {
    match mode {
        OPENAI_TO_ANTHROPIC => Some(Box::new(stream_to_anthropic::OpenAiToAnthropic::new(
            options,
        ))),
        ANTHROPIC_TO_OPENAI => Some(Box::new(stream_to_openai::AnthropicToOpenAi::new(options))),
        _ => None,
    }
}
