//! Whole response bodies both ways.

use serde_json::{json, Value};

use crate::translate::{anthropic_response_to_openai, openai_response_to_anthropic, Usage};

fn o2a(v: Value) -> (Value, Usage, Option<String>) {
    let t = openai_response_to_anthropic(v.to_string().as_bytes(), "claude-test").unwrap();
    (
        serde_json::from_slice(&t.body).unwrap(),
        t.usage,
        t.stop_reason,
    )
}

#[test]
fn openai_completion_with_reasoning_text_and_tools() {
    let (out, usage, stop) = o2a(json!({
        "id": "chatcmpl-77", "object": "chat.completion", "created": 1, "model": "qwen3",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.", "reasoning_content": "User wants files.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "Noop", "arguments": ""}},
            ],
        }}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340, "prompt_tokens_details": {"cached_tokens": 256}},
    }));
    assert_eq!(
        out,
        json!({
            "id": "msg_77", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [
                {"type": "thinking", "thinking": "User wants files.", "signature": ""},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "call_2", "name": "Noop", "input": {}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 44, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 256, "output_tokens": 40},
        })
    );
    assert_eq!(
        usage,
        Usage {
            input: 44,
            output: 40,
            cache_creation: 0,
            cache_read: 256
        }
    );
    assert_eq!(stop.as_deref(), Some("tool_use"));
}

#[test]
fn openai_stop_reasons() {
    for (choice, reason, seq) in [
        (json!({"finish_reason": "stop"}), "end_turn", Value::Null),
        (
            json!({"finish_reason": "length"}),
            "max_tokens",
            Value::Null,
        ),
        (
            json!({"finish_reason": "content_filter"}),
            "refusal",
            Value::Null,
        ),
        (
            json!({"finish_reason": "stop", "stop_reason": "###"}),
            "stop_sequence",
            json!("###"),
        ),
        (
            json!({"finish_reason": "stop", "matched_stop": "END"}),
            "stop_sequence",
            json!("END"),
        ),
        (
            json!({"finish_reason": "stop", "stop_reason": 2}),
            "end_turn",
            Value::Null,
        ),
    ] {
        let mut c = choice.clone();
        c["message"] = json!({"role": "assistant", "content": "x", "reasoning": "r"});
        let (out, _, stop) = o2a(json!({"id": "a", "choices": [c]}));
        assert_eq!(out["stop_reason"], reason, "{choice}");
        assert_eq!(out["stop_sequence"], seq);
        assert_eq!(stop.as_deref(), Some(reason));
        // Ollama's and new vLLM's field name.
        assert_eq!(
            out["content"][0],
            json!({"type": "thinking", "thinking": "r", "signature": ""})
        );
    }
}

#[test]
fn openai_bodies_that_are_not_completions() {
    for body in [
        "nope".to_owned(),
        json!({"error": {"message": "boom"}}).to_string(),
        json!({"object": "error", "message": "bad"}).to_string(),
        json!({"id": "x", "choices": []}).to_string(),
    ] {
        assert!(
            openai_response_to_anthropic(body.as_bytes(), "m").is_err(),
            "{body}"
        );
    }
}

#[test]
fn anthropic_message_to_openai_completion() {
    let body = json!({
        "id": "msg_01ABC", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Plan.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "xx"},
            {"type": "text", "text": "Here: "},
            {"type": "text", "text": "done."},
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/a"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 100, "output_tokens": 20},
    });
    let t = anthropic_response_to_openai(body.to_string().as_bytes(), "claude-test").unwrap();
    let mut out: Value = serde_json::from_slice(&t.body).unwrap();
    assert!(out["created"].is_u64());
    out["created"] = json!(0);
    assert_eq!(
        out,
        json!({
            "id": "chatcmpl-01ABC", "object": "chat.completion", "created": 0, "model": "claude-test",
            "choices": [{"index": 0, "message": {
                "role": "assistant", "content": "Here: done.", "reasoning_content": "Plan.",
                "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "Read", "arguments": "{\"file_path\":\"/a\"}"}}],
            }, "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 115, "completion_tokens": 20, "total_tokens": 135, "prompt_tokens_details": {"cached_tokens": 100}},
        })
    );
    assert_eq!(
        t.usage,
        Usage {
            input: 10,
            output: 20,
            cache_creation: 5,
            cache_read: 100
        }
    );
    assert_eq!(t.stop_reason.as_deref(), Some("tool_calls"));

    let only_tool = json!({"id": "msg_2", "content": [{"type": "tool_use", "id": "t", "name": "A", "input": {}}], "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}});
    let t = anthropic_response_to_openai(only_tool.to_string().as_bytes(), "m").unwrap();
    let out: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
    assert!(anthropic_response_to_openai(
        br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
        "m"
    )
    .is_err());
}
