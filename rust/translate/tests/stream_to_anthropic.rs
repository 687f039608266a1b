//! Mode 2: OpenAI chunks in, Anthropic events out.

use serde_json::{json, Value};

use super::checker::{anthropic_frames, check_anthropic, Message};
use super::{run, translator};
use crate::translate::{StreamTranslator, Usage};

fn chunk(delta: Value) -> (Option<&'static str>, String) {
    let v = json!({
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "qwen3",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}],
    });
    (None, v.to_string())
}

fn finish(reason: &str) -> (Option<&'static str>, String) {
    finish_with(json!({"index": 0, "delta": {}, "finish_reason": reason}))
}

fn finish_with(choice: Value) -> (Option<&'static str>, String) {
    let v =
        json!({"id": "chatcmpl-abc123", "object": "chat.completion.chunk", "choices": [choice]});
    (None, v.to_string())
}

fn usage(prompt: u64, completion: u64, cached: u64) -> (Option<&'static str>, String) {
    let v = json!({
        "id": "chatcmpl-abc123", "object": "chat.completion.chunk", "choices": [],
        "usage": {
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    });
    (None, v.to_string())
}

fn done() -> (Option<&'static str>, String) {
    (None, "[DONE]".to_owned())
}

fn call(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Value {
    let mut f = json!({"arguments": args});
    if let Some(n) = name {
        f["name"] = n.into();
    }
    let mut c = json!({"index": index, "function": f});
    if let Some(id) = id {
        c["id"] = id.into();
        c["type"] = "function".into();
    }
    json!({"tool_calls": [c]})
}

/// Runs a complete, well-formed stream and checks the message ended properly.
fn complete(events: &[(Option<&str>, String)]) -> (Message, Box<dyn StreamTranslator>) {
    let mut t = translator(2, true);
    let out = run(t.as_mut(), events, Some(true));
    let m = check_anthropic(&out);
    assert!(m.stopped, "stream did not end with message_stop: {out}");
    assert!(m.error.is_none());
    (m, t)
}

fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

#[test]
fn text_stream() {
    let (m, t) = complete(&[
        chunk(json!({"role": "assistant", "content": ""})),
        chunk(json!({"content": "Hel"})),
        chunk(json!({"content": "lo, \"world\"\n"})),
        finish("stop"),
        usage(12, 5, 0),
        done(),
    ]);
    assert_eq!(m.names[0], "message_start");
    assert_eq!(m.start["message"]["id"], "msg_abc123");
    assert_eq!(m.start["message"]["model"], "claude-test");
    assert_eq!(m.blocks.len(), 1);
    assert_eq!(m.blocks[0].kind, "text");
    assert_eq!(m.blocks[0].text, "Hello, \"world\"\n");
    assert_eq!(m.stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(m.stop_sequence, None);
    assert_eq!(
        m.delta_usage,
        json!({"input_tokens": 12, "cache_read_input_tokens": 0, "output_tokens": 5})
    );
    assert_eq!(
        t.usage(),
        Usage {
            input: 12,
            output: 5,
            cache_creation: 0,
            cache_read: 0
        }
    );
    assert_eq!(t.stop_reason(), Some("end_turn"));
}

#[test]
fn message_start_comes_with_the_first_chunk_and_text_streams_live() {
    let mut t = translator(2, false);
    let first = run(
        t.as_mut(),
        &[chunk(json!({"role": "assistant", "content": ""}))],
        None,
    );
    assert_eq!(
        anthropic_frames(&first).len(),
        1,
        "only message_start: {first}"
    );
    let second = run(t.as_mut(), &[chunk(json!({"content": "Hi"}))], None);
    let names: Vec<String> = anthropic_frames(&second)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["content_block_start", "content_block_delta"]);
}

#[test]
fn thinking_then_text() {
    for field in ["reasoning_content", "reasoning"] {
        let (m, _) = complete(&[
            chunk(json!({"role": "assistant"})),
            chunk(json!({field: "Let me "})),
            chunk(json!({field: "think."})),
            chunk(json!({"content": "Answer."})),
            finish("stop"),
            done(),
        ]);
        assert_eq!(m.blocks.len(), 2, "{field}");
        assert_eq!(m.blocks[0].kind, "thinking");
        assert_eq!(m.blocks[0].thinking, "Let me think.");
        assert_eq!(m.blocks[0].signature, "");
        assert_eq!(m.blocks[1].kind, "text");
        assert_eq!(m.blocks[1].text, "Answer.");
    }
}

#[test]
fn reasoning_sent_under_both_names_is_not_doubled() {
    // vLLM versions that keep the old name fill both fields with the same text.
    let (m, _) = complete(&[
        chunk(json!({"reasoning": "hmm", "reasoning_content": "hmm"})),
        chunk(json!({"content": "ok"})),
        finish("stop"),
        done(),
    ]);
    assert_eq!(m.blocks[0].thinking, "hmm");
}

#[test]
fn interleaved_thinking_and_text_alternate_blocks() {
    let (m, _) = complete(&[
        chunk(json!({"reasoning_content": "a"})),
        chunk(json!({"content": "b"})),
        chunk(json!({"reasoning_content": "c"})),
        chunk(json!({"content": "d"})),
        finish("stop"),
        done(),
    ]);
    let kinds: Vec<&str> = m.blocks.iter().map(|b| b.kind.as_str()).collect();
    assert_eq!(kinds, ["thinking", "text", "thinking", "text"]);
}

#[test]
fn single_tool_call_split_into_many_pieces() {
    let args =
        r#"{"command": "ls -la \"/tmp/a b\"", "description": "List files ✓", "timeout": 5000}"#;
    let mut events = vec![
        chunk(json!({"role": "assistant", "content": null})),
        chunk(call(0, Some("chatcmpl-tool-9f1"), Some("Bash"), "")),
    ];
    for p in pieces(args, 3) {
        events.push(chunk(call(0, None, None, &p)));
    }
    events.extend([finish("tool_calls"), usage(100, 30, 60), done()]);
    let (m, t) = complete(&events);
    assert_eq!(m.blocks.len(), 1);
    let b = &m.blocks[0];
    assert_eq!(
        (b.kind.as_str(), b.id.as_str(), b.name.as_str()),
        ("tool_use", "chatcmpl-tool-9f1", "Bash")
    );
    assert_eq!(b.partial_json, args, "pieces must arrive exactly as sent");
    assert_eq!(b.input(), serde_json::from_str::<Value>(args).unwrap());
    assert_eq!(m.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        t.usage(),
        Usage {
            input: 40,
            output: 30,
            cache_creation: 0,
            cache_read: 60
        }
    );
    assert_eq!(m.delta_usage["cache_read_input_tokens"], 60);
}

#[test]
fn tool_call_arguments_whole_in_one_chunk() {
    let (m, _) = complete(&[
        chunk(call(
            0,
            Some("call_1"),
            Some("Read"),
            r#"{"file_path":"/etc/hosts"}"#,
        )),
        finish("tool_calls"),
        done(),
    ]);
    assert_eq!(m.blocks[0].name, "Read");
    assert_eq!(m.blocks[0].input(), json!({"file_path": "/etc/hosts"}));
}

#[test]
fn text_then_tool_call() {
    let (m, _) = complete(&[
        chunk(json!({"content": "I'll look."})),
        chunk(call(0, Some("call_1"), Some("Read"), r#"{"file_path":"#)),
        chunk(call(0, None, None, r#""/a"}"#)),
        finish("tool_calls"),
        done(),
    ]);
    assert_eq!(m.blocks[0].text, "I'll look.");
    assert_eq!(m.blocks[1].input(), json!({"file_path": "/a"}));
}

#[test]
fn sequential_parallel_calls_stream_live() {
    let mut t = translator(2, false);
    run(
        t.as_mut(),
        &[
            chunk(call(0, Some("call_a"), Some("Read"), "")),
            chunk(call(0, None, None, r#"{"file_path": "/a"}"#)),
        ],
        None,
    );
    // The first call's object is closed: the second call opens at once, not at the end.
    let out = run(
        t.as_mut(),
        &[chunk(call(1, Some("call_b"), Some("Read"), r#"{"file_pa"#))],
        None,
    );
    let names: Vec<String> = anthropic_frames(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "content_block_stop",
            "content_block_start",
            "content_block_delta"
        ]
    );
    let rest = run(
        t.as_mut(),
        &[
            chunk(call(1, None, None, r#"th": "/b"}"#)),
            finish("tool_calls"),
            done(),
        ],
        Some(true),
    );
    let m = check_anthropic(&format!("{}{}{}", first_frames(), out, rest));
    assert_eq!(m.blocks.len(), 2);
    assert_eq!(m.blocks[1].input(), json!({"file_path": "/b"}));
}

/// The frames the first two chunks of `sequential_parallel_calls_stream_live` produce.
fn first_frames() -> String {
    let mut t = translator(2, false);
    run(
        t.as_mut(),
        &[
            chunk(call(0, Some("call_a"), Some("Read"), "")),
            chunk(call(0, None, None, r#"{"file_path": "/a"}"#)),
        ],
        None,
    )
}

#[test]
fn two_parallel_calls_interleaved_by_index() {
    let a = r#"{"command": "echo one"}"#;
    let b = r#"{"command": "echo two", "timeout": 10}"#;
    let (pa, pb) = (pieces(a, 4), pieces(b, 5));
    let mut events = vec![
        chunk(call(0, Some("call_a"), Some("Bash"), "")),
        chunk(call(1, Some("call_b"), Some("Bash"), "")),
    ];
    for i in 0..pa.len().max(pb.len()) {
        if let Some(p) = pa.get(i) {
            events.push(chunk(call(0, None, None, p)));
        }
        if let Some(p) = pb.get(i) {
            events.push(chunk(call(1, None, None, p)));
        }
    }
    events.extend([finish("tool_calls"), done()]);
    let (m, _) = complete(&events);
    assert_eq!(m.blocks.len(), 2);
    assert_eq!(
        (m.blocks[0].id.as_str(), m.blocks[1].id.as_str()),
        ("call_a", "call_b")
    );
    assert_eq!(m.blocks[0].partial_json, a);
    assert_eq!(m.blocks[1].partial_json, b);
}

#[test]
fn three_parallel_calls_interleaved_with_all_pieces_in_one_chunk() {
    let args = [
        r#"{"file_path": "/one"}"#,
        r#"{"file_path": "/two", "offset": 3}"#,
        r#"{"file_path": "/three", "limit": 9}"#,
    ];
    let split: Vec<Vec<String>> = args.iter().map(|a| pieces(a, 6)).collect();
    let mut events = vec![];
    // One chunk may carry deltas for several indexes.
    let starts: Vec<Value> = (0..3)
        .map(|i| json!({"index": i, "id": format!("call_{i}"), "type": "function", "function": {"name": "Read", "arguments": ""}}))
        .collect();
    events.push(chunk(json!({"tool_calls": starts})));
    let longest = split.iter().map(Vec::len).max().unwrap();
    for i in 0..longest {
        // Reverse order inside each round: later indexes first.
        let calls: Vec<Value> = (0..3)
            .rev()
            .filter_map(|k| {
                split[k]
                    .get(i)
                    .map(|p| json!({"index": k, "function": {"arguments": p}}))
            })
            .collect();
        events.push(chunk(json!({"tool_calls": calls})));
    }
    events.extend([finish("tool_calls"), usage(10, 10, 0), done()]);
    let (m, _) = complete(&events);
    assert_eq!(m.blocks.len(), 3);
    for (k, b) in m.blocks.iter().enumerate() {
        assert_eq!(b.id, format!("call_{k}"));
        assert_eq!(b.partial_json, args[k]);
    }
}

#[test]
fn text_arriving_while_a_call_is_incomplete_waits_for_it() {
    let (m, _) = complete(&[
        chunk(call(0, Some("call_a"), Some("Bash"), r#"{"command":"#)),
        chunk(json!({"content": "note"})),
        chunk(call(0, None, None, r#" "ls"}"#)),
        finish("tool_calls"),
        done(),
    ]);
    assert_eq!(m.blocks[0].input(), json!({"command": "ls"}));
    assert_eq!(m.blocks[1].text, "note");
}

#[test]
fn tool_call_with_empty_arguments() {
    for args in ["", "{}"] {
        let (m, _) = complete(&[
            chunk(call(0, Some("call_x"), Some("TodoRead"), args)),
            finish("tool_calls"),
            done(),
        ]);
        assert_eq!(m.blocks[0].input(), json!({}), "arguments {args:?}");
    }
    // Two argument-less calls: the first stays open (nothing says it is done) until the end.
    let (m, _) = complete(&[
        chunk(call(0, Some("call_x"), Some("A"), "")),
        chunk(call(1, Some("call_y"), Some("B"), "")),
        finish("tool_calls"),
        done(),
    ]);
    assert_eq!(m.blocks.len(), 2);
    assert_eq!(
        (m.blocks[0].input(), m.blocks[1].input()),
        (json!({}), json!({}))
    );
}

#[test]
fn calls_all_numbered_zero_but_with_new_ids_are_separate() {
    let (m, _) = complete(&[
        chunk(call(0, Some("call_1"), Some("A"), r#"{"x":1}"#)),
        chunk(call(0, Some("call_2"), Some("B"), r#"{"y":2}"#)),
        finish("tool_calls"),
        done(),
    ]);
    assert_eq!(m.blocks.len(), 2);
    assert_eq!(m.blocks[1].name, "B");
    assert_eq!(m.blocks[1].input(), json!({"y": 2}));
}

#[test]
fn arguments_sent_as_an_object_and_ids_needing_cleanup() {
    let delta = json!({"tool_calls": [{"index": 0, "id": "call:1/x", "function": {"name": "A", "arguments": {"k": [1, 2]}}}]});
    let (m, _) = complete(&[chunk(delta), finish("tool_calls"), done()]);
    assert_eq!(m.blocks[0].input(), json!({"k": [1, 2]}));
    assert_eq!(m.blocks[0].id, "call_1_x");
}

#[test]
fn missing_ids_are_generated_and_names_can_come_later() {
    let (m, _) = complete(&[
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": ""}}]})),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"name": "Late", "arguments": "{\"a\""}}]}),
        ),
        chunk(call(0, None, None, ":1}")),
        finish("tool_calls"),
        done(),
    ]);
    assert_eq!(m.blocks[0].name, "Late");
    assert!(m.blocks[0].id.starts_with("toolu_"));
    assert_eq!(m.blocks[0].input(), json!({"a": 1}));
}

#[test]
fn finish_reasons() {
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (
            json!({"index": 0, "delta": {}, "finish_reason": "stop"}),
            "end_turn",
            None,
        ),
        (
            json!({"index": 0, "delta": {}, "finish_reason": "length"}),
            "max_tokens",
            None,
        ),
        (
            json!({"index": 0, "delta": {}, "finish_reason": "content_filter"}),
            "refusal",
            None,
        ),
        // vLLM names the matched stop string; a token id (EOS) is not a stop sequence.
        (
            json!({"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "</answer>"}),
            "stop_sequence",
            Some("</answer>"),
        ),
        (
            json!({"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": 151645}),
            "end_turn",
            None,
        ),
        // SGLang's name for the same.
        (
            json!({"index": 0, "delta": {}, "finish_reason": "stop", "matched_stop": "STOP"}),
            "stop_sequence",
            Some("STOP"),
        ),
    ];
    for (choice, reason, seq) in cases {
        let (m, t) = complete(&[
            chunk(json!({"content": "x"})),
            finish_with(choice.clone()),
            done(),
        ]);
        assert_eq!(m.stop_reason.as_deref(), Some(reason), "{choice}");
        assert_eq!(m.stop_sequence.as_deref(), seq, "{choice}");
        assert_eq!(t.stop_reason(), Some(reason));
    }
    // Tool calls ended with a plain "stop" (some servers) are still tool_use.
    let (m, _) = complete(&[
        chunk(call(0, Some("c"), Some("A"), "{}")),
        finish("stop"),
        done(),
    ]);
    assert_eq!(m.stop_reason.as_deref(), Some("tool_use"));
}

#[test]
fn usage_chunk_after_the_finish_chunk() {
    let mut t = translator(2, true);
    let before = run(
        t.as_mut(),
        &[chunk(json!({"content": "hi"})), finish("stop")],
        None,
    );
    // The finish chunk closes the block but the message waits for usage.
    let names: Vec<String> = anthropic_frames(&before)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names.last().map(String::as_str), Some("content_block_stop"));
    let after = run(t.as_mut(), &[usage(2048, 17, 1024), done()], Some(true));
    let m = check_anthropic(&format!("{before}{after}"));
    assert_eq!(
        m.delta_usage,
        json!({"input_tokens": 1024, "cache_read_input_tokens": 1024, "output_tokens": 17})
    );
    assert_eq!(
        t.usage(),
        Usage {
            input: 1024,
            output: 17,
            cache_creation: 0,
            cache_read: 1024
        }
    );
}

#[test]
fn usage_on_the_finish_chunk_itself_and_no_done() {
    // llama.cpp-style usage on the last chunk, and a server that just closes the body.
    let mut last =
        json!({"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    last["usage"] = json!({"prompt_tokens": 9, "completion_tokens": 3});
    let (m, t) = complete(&[chunk(json!({"content": "x"})), (None, last.to_string())]);
    assert_eq!(m.delta_usage["output_tokens"], 3);
    assert_eq!(t.usage().input, 9);
}

#[test]
fn error_in_the_stream() {
    for (body, kind, message) in [
        (
            json!({"error": {"message": "CUDA out of memory", "type": "InternalServerError", "code": 500}}),
            "api_error",
            "CUDA out of memory",
        ),
        (
            json!({"object": "error", "message": "context too long", "type": "BadRequestError", "code": 400}),
            "invalid_request_error",
            "context too long",
        ),
        (
            json!({"error": {"message": "slow down", "code": 429}}),
            "rate_limit_error",
            "slow down",
        ),
        (
            json!({"error": "model crashed"}),
            "api_error",
            "model crashed",
        ),
    ] {
        let mut t = translator(2, true);
        let out = run(
            t.as_mut(),
            &[
                chunk(json!({"content": "par"})),
                (None, body.to_string()),
                chunk(json!({"content": "ignored"})),
            ],
            Some(true),
        );
        let m = check_anthropic(&out);
        let e = m.error.unwrap();
        assert_eq!(e["error"]["type"], kind, "{body}");
        assert_eq!(e["error"]["message"], message);
        assert!(!m.stopped);
        assert_eq!(m.names.last().map(String::as_str), Some("error"));
        assert!(t.failed());
    }
}

#[test]
fn error_event_named_error() {
    let mut t = translator(2, true);
    let out = run(
        t.as_mut(),
        &[(Some("error"), "upstream exploded".to_owned())],
        Some(false),
    );
    let m = check_anthropic(&out);
    assert_eq!(m.names, ["error"]);
    assert_eq!(m.error.unwrap()["error"]["message"], "upstream exploded");
}

#[test]
fn truncated_stream() {
    // The connection drops mid-way.
    let mut t = translator(2, true);
    let out = run(t.as_mut(), &[chunk(json!({"content": "Hal"}))], Some(false));
    let m = check_anthropic(&out);
    assert_eq!(m.error.unwrap()["error"]["type"], "api_error");
    assert!(!m.stopped);
    // The body ends "cleanly" but no finish_reason ever came: still not a whole answer.
    assert!(t.failed());
    let mut t = translator(2, true);
    let out = run(t.as_mut(), &[chunk(json!({"content": "Hal"}))], Some(true));
    let m = check_anthropic(&out);
    assert!(m.error.is_some() && !m.stopped);
    assert!(t.failed());
    // Cut inside a tool call: no message_stop, so the client cannot run a half call.
    let mut t = translator(2, true);
    let out = run(
        t.as_mut(),
        &[chunk(call(0, Some("c"), Some("A"), "{\"a\":"))],
        Some(false),
    );
    let m = check_anthropic(&out);
    assert!(m.error.is_some() && !m.stopped);
}

#[test]
fn finish_after_message_stop_adds_nothing() {
    let mut t = translator(2, true);
    run(
        t.as_mut(),
        &[chunk(json!({"content": "x"})), finish("stop"), done()],
        None,
    );
    assert_eq!(run(t.as_mut(), &[], Some(true)), "");
    assert_eq!(run(t.as_mut(), &[], Some(false)), "");
    assert!(!t.failed());
}

#[test]
fn blank_and_unknown_data_is_skipped() {
    let (m, _) = complete(&[
        (None, "".to_owned()),
        (None, ": keep-alive".to_owned()),
        chunk(json!({"content": "x"})),
        (
            None,
            json!({"id": "a", "choices": [{"index": 1, "delta": {"content": "other choice"}}]})
                .to_string(),
        ),
        finish("stop"),
        done(),
    ]);
    assert_eq!(m.blocks.len(), 1);
    assert_eq!(m.blocks[0].text, "x");
}
