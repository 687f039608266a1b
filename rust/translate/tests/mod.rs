//! Tests of the translators, chunk by chunk, with checkers that hold every Anthropic event
//! sequence to the order rules the SDKs rely on and reassemble what a client would see.

mod checker;
mod errors;
mod requests;
mod responses;
mod stream_to_anthropic;
mod stream_to_openai;

use super::{new_stream_translator, Flavor, SseEvent, StreamTranslator, TranslateOptions};

/// A translator for `mode` reporting model "claude-test".
pub(super) fn translator(mode: u8, include_usage: bool) -> Box<dyn StreamTranslator> {
    let opts = TranslateOptions::new(Flavor::Vllm, "claude-test", include_usage);
    new_stream_translator(mode, &opts).unwrap()
}

/// Feeds `(event, data)` pairs, then `finish(complete)` when given; returns all output.
pub(super) fn run(
    t: &mut dyn StreamTranslator,
    events: &[(Option<&str>, String)],
    finish: Option<bool>,
) -> String {
    let mut out = Vec::new();
    for (event, data) in events {
        t.on_event(
            &SseEvent {
                event: *event,
                data: data.as_bytes(),
            },
            &mut out,
        );
    }
    if let Some(complete) = finish {
        t.finish(complete, &mut out);
    }
    String::from_utf8(out).unwrap()
}
