//! Mode 3: Anthropic events in, OpenAI chunks out.

use serde_json::{json, Value};

use super::checker::{check_openai, Completion};
use super::{run, translator};
use crate::translate::Usage;

fn ev(v: Value) -> (Option<&'static str>, String) {
    let name = v["type"].as_str().unwrap();
    // Leak is fine in tests: event names must outlive the call.
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    (Some(name), v.to_string())
}

fn message_start() -> (Option<&'static str>, String) {
    ev(json!({
        "type": "message_start",
        "message": {
            "id": "msg_01XYZ", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000, "output_tokens": 1},
        },
    }))
}

fn block_start(index: u32, block: Value) -> (Option<&'static str>, String) {
    ev(json!({"type": "content_block_start", "index": index, "content_block": block}))
}

fn delta(index: u32, d: Value) -> (Option<&'static str>, String) {
    ev(json!({"type": "content_block_delta", "index": index, "delta": d}))
}

fn block_stop(index: u32) -> (Option<&'static str>, String) {
    ev(json!({"type": "content_block_stop", "index": index}))
}

fn message_delta(reason: &str, output: u64) -> (Option<&'static str>, String) {
    ev(
        json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": output}}),
    )
}

fn message_stop() -> (Option<&'static str>, String) {
    ev(json!({"type": "message_stop"}))
}

fn ping() -> (Option<&'static str>, String) {
    ev(json!({"type": "ping"}))
}

fn complete(
    events: &[(Option<&str>, String)],
    include_usage: bool,
) -> (Completion, Usage, Option<String>) {
    let mut t = translator(3, include_usage);
    let out = run(t.as_mut(), events, Some(true));
    let c = check_openai(&out);
    assert!(c.done, "no [DONE]: {out}");
    assert!(c.error.is_none());
    (c, t.usage(), t.stop_reason().map(str::to_owned))
}

#[test]
fn text_stream_with_usage() {
    let (c, usage, stop) = complete(
        &[
            message_start(),
            block_start(0, json!({"type": "text", "text": ""})),
            ping(),
            delta(0, json!({"type": "text_delta", "text": "Hello"})),
            delta(0, json!({"type": "text_delta", "text": ", \"world\"\n"})),
            block_stop(0),
            message_delta("end_turn", 12),
            message_stop(),
        ],
        true,
    );
    assert_eq!(c.role.as_deref(), Some("assistant"));
    assert_eq!(c.content, "Hello, \"world\"\n");
    assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        c.usage,
        Some(json!({
            "prompt_tokens": 2125, "completion_tokens": 12, "total_tokens": 2137,
            "prompt_tokens_details": {"cached_tokens": 2000},
        }))
    );
    assert_eq!(
        usage,
        Usage {
            input: 25,
            output: 12,
            cache_creation: 100,
            cache_read: 2000
        }
    );
    assert_eq!(stop.as_deref(), Some("stop"));
}

#[test]
fn no_usage_chunk_unless_asked() {
    let (c, _, _) = complete(
        &[
            message_start(),
            block_start(0, json!({"type": "text", "text": ""})),
            delta(0, json!({"type": "text_delta", "text": "x"})),
            block_stop(0),
            message_delta("end_turn", 1),
            message_stop(),
        ],
        false,
    );
    assert!(c.usage.is_none());
}

#[test]
fn chunks_share_id_and_role_comes_first() {
    let mut t = translator(3, false);
    let out = run(
        t.as_mut(),
        &[
            message_start(),
            block_start(0, json!({"type": "text", "text": ""})),
            delta(0, json!({"type": "text_delta", "text": "x"})),
        ],
        None,
    );
    let ids: Vec<String> = out
        .split_terminator("\n\n")
        .map(|f| {
            serde_json::from_str::<Value>(&f[6..]).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["chatcmpl-01XYZ", "chatcmpl-01XYZ"]);
}

#[test]
fn thinking_becomes_reasoning_content() {
    let (c, _, _) = complete(
        &[
            message_start(),
            block_start(
                0,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            ),
            delta(0, json!({"type": "thinking_delta", "thinking": "Let me "})),
            delta(0, json!({"type": "thinking_delta", "thinking": "see."})),
            delta(
                0,
                json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM..."}),
            ),
            block_stop(0),
            block_start(1, json!({"type": "redacted_thinking", "data": "abc"})),
            block_stop(1),
            block_start(2, json!({"type": "text", "text": ""})),
            delta(2, json!({"type": "text_delta", "text": "Done."})),
            block_stop(2),
            message_delta("end_turn", 3),
            message_stop(),
        ],
        false,
    );
    assert_eq!(c.reasoning, "Let me see.");
    assert_eq!(c.content, "Done.");
}

#[test]
fn tool_calls_are_indexed_among_tool_calls_only() {
    let a = r#"{"command": "ls -la \"x y\""}"#;
    let mut events = vec![
        message_start(),
        block_start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "Running."})),
        block_stop(0),
        block_start(
            1,
            json!({"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {}}),
        ),
    ];
    for p in a.as_bytes().chunks(4) {
        events.push(delta(
            1,
            json!({"type": "input_json_delta", "partial_json": std::str::from_utf8(p).unwrap()}),
        ));
    }
    events.extend([
        block_stop(1),
        block_start(
            2,
            json!({"type": "tool_use", "id": "toolu_01B", "name": "Read", "input": {}}),
        ),
        delta(2, json!({"type": "input_json_delta", "partial_json": ""})),
        delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "{\"file_path\": \"/a\"}"}),
        ),
        block_stop(2),
        block_start(
            3,
            json!({"type": "tool_use", "id": "toolu_01C", "name": "NoArgs", "input": {}}),
        ),
        block_stop(3),
        message_delta("tool_use", 40),
        message_stop(),
    ]);
    let (c, _, stop) = complete(&events, true);
    assert_eq!(c.content, "Running.");
    assert_eq!(c.tool_calls.len(), 3);
    assert_eq!(
        c.tool_calls[0],
        ("toolu_01A".into(), "Bash".into(), a.into())
    );
    assert_eq!(
        c.tool_calls[1],
        (
            "toolu_01B".into(),
            "Read".into(),
            "{\"file_path\": \"/a\"}".into()
        )
    );
    assert_eq!(
        c.tool_calls[2],
        ("toolu_01C".into(), "NoArgs".into(), String::new())
    );
    assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(stop.as_deref(), Some("tool_calls"));
}

#[test]
fn finish_reasons() {
    for (reason, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ] {
        let (c, _, _) = complete(
            &[message_start(), message_delta(reason, 1), message_stop()],
            false,
        );
        assert_eq!(c.finish_reason.as_deref(), Some(finish), "{reason}");
    }
}

#[test]
fn error_event_becomes_an_error_chunk() {
    let mut t = translator(3, true);
    let out = run(
        t.as_mut(),
        &[
            message_start(),
            block_start(0, json!({"type": "text", "text": ""})),
            delta(0, json!({"type": "text_delta", "text": "par"})),
            ev(
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
            delta(0, json!({"type": "text_delta", "text": "ignored"})),
        ],
        Some(true),
    );
    let c = check_openai(&out);
    assert_eq!(c.content, "par");
    let e = c.error.unwrap();
    assert_eq!(
        e,
        json!({"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null})
    );
    assert!(!c.done);
}

#[test]
fn truncated_stream_ends_with_an_error_chunk() {
    for complete_flag in [false, true] {
        let mut t = translator(3, true);
        let out = run(
            t.as_mut(),
            &[
                message_start(),
                block_start(0, json!({"type": "text", "text": ""})),
                delta(0, json!({"type": "text_delta", "text": "Hal"})),
            ],
            Some(complete_flag),
        );
        let c = check_openai(&out);
        assert!(c.error.is_some() && !c.done);
        assert!(c.finish_reason.is_none());
        assert!(t.failed());
    }
}

#[test]
fn finish_after_done_adds_nothing() {
    let mut t = translator(3, true);
    run(
        t.as_mut(),
        &[
            message_start(),
            message_delta("end_turn", 1),
            message_stop(),
        ],
        None,
    );
    assert_eq!(run(t.as_mut(), &[], Some(false)), "");
    assert!(!t.failed());
}

#[test]
fn events_without_event_names_are_read_from_their_type() {
    let events: Vec<(Option<&str>, String)> = [
        message_start(),
        message_delta("max_tokens", 2),
        message_stop(),
    ]
    .into_iter()
    .map(|(_, d)| (None, d))
    .collect();
    let (c, _, _) = complete(&events, false);
    assert_eq!(c.finish_reason.as_deref(), Some("length"));
}
