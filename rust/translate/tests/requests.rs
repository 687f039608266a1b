//! Request bodies both ways.

use serde_json::{json, Value};

use crate::translate::{
    anthropic_request_to_openai, estimate_tokens, openai_request_to_anthropic, Flavor,
    TranslateOptions,
};

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// A Claude Code request as the CLI sends it, with a tool round trip in its history.
fn claude_code_request() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": true,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.330.7ba; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "CWD: /work", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                {"type": "text", "text": "List files, then show the screenshot.", "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should run ls.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
                {"type": "text", "text": "Listing."},
                {"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "ls", "description": "List files"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "Read", "input": {"file_path": "/work/shot.png"}, "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "a.txt\nshot.png", "cache_control": {"type": "ephemeral"}},
                {"type": "tool_result", "tool_use_id": "toolu_01B", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ]},
                {"type": "text", "text": "Also try the missing one."},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01C", "name": "Read", "input": {"file_path": "/nope"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01C", "is_error": true, "content": [{"type": "text", "text": "<tool_use_error>File does not exist.</tool_use_error>"}]},
            ]},
        ],
        "tools": [
            {"name": "Bash", "description": "execute shell commands", "input_schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                "properties": {"command": {"type": "string"}}, "required": ["command"], "additionalProperties": false,
            }, "cache_control": {"type": "ephemeral"}},
            {"name": "Read", "description": "read files", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            {"type": "bash_20250124", "name": "bash"},
        ],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": "{\"device_id\":\"deca05\",\"session_id\":\"7bda78a3\"}"},
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "service_tier": "auto",
        "container": "container_123",
        "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}],
        "some_future_field": {"x": 1},
        "temperature": 1,
        "stop_sequences": ["</done>"],
    })
}

fn to_openai(req: &Value, flavor: Flavor, include_usage: bool) -> Value {
    let opts = TranslateOptions::new(flavor, "ignored", include_usage);
    let out =
        anthropic_request_to_openai(req.to_string().as_bytes(), "qwen3-coder", &opts).unwrap();
    serde_json::from_slice(&out).unwrap()
}

/// Every key anywhere in a JSON value.
fn all_keys(v: &Value, keys: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                keys.push(k.clone());
                all_keys(v, keys);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| all_keys(v, keys)),
        _ => {}
    }
}

#[test]
fn claude_code_request_to_vllm() {
    let out = to_openai(&claude_code_request(), Flavor::Vllm, true);
    let data_url = format!("data:image/png;base64,{PNG}");
    let expected = json!({
        "model": "qwen3-coder",
        "messages": [
            {"role": "system", "content": "You are a Claude agent.\n\nCWD: /work"},
            {"role": "user", "content": "<system-reminder>ctx</system-reminder>\n\nList files, then show the screenshot."},
            {"role": "assistant", "content": "Listing.", "reasoning": "I should run ls.", "reasoning_content": "I should run ls.", "tool_calls": [
                {"id": "toolu_01A", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\",\"description\":\"List files\"}"}},
                {"id": "toolu_01B", "type": "function", "function": {"name": "Read", "arguments": "{\"file_path\":\"/work/shot.png\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "a.txt\nshot.png"},
            {"role": "tool", "tool_call_id": "toolu_01B", "content": "(the tool returned images; they follow in the next message)"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url}},
                {"type": "text", "text": "Also try the missing one."},
            ]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "toolu_01C", "type": "function", "function": {"name": "Read", "arguments": "{\"file_path\":\"/nope\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_01C", "content": "Error: <tool_use_error>File does not exist.</tool_use_error>"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "Bash", "description": "execute shell commands", "parameters": {
                "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                "properties": {"command": {"type": "string"}}, "required": ["command"], "additionalProperties": false,
            }}},
            {"type": "function", "function": {"name": "Read", "description": "read files", "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}}}}},
        ],
        "tool_choice": "auto",
        "max_tokens": 32000,
        "temperature": 1,
        "stop": ["</done>"],
        "stream": true,
        "stream_options": {"include_usage": true},
        "chat_template_kwargs": {"enable_thinking": true},
    });
    assert_eq!(out, expected);
    let mut keys = Vec::new();
    all_keys(&out, &mut keys);
    for gone in [
        "cache_control",
        "context_management",
        "output_config",
        "metadata",
        "service_tier",
        "container",
        "mcp_servers",
        "some_future_field",
        "thinking",
        "signature",
        "system",
        "input_schema",
        "max_uses",
        "stop_sequences",
        "display",
        "is_error",
        "tool_use_id",
    ] {
        assert!(!keys.iter().any(|k| k == gone), "{gone} survived: {out}");
    }
}

#[test]
fn reasoning_echo_and_thinking_switch_per_flavor() {
    let req = claude_code_request();
    let assistant = |out: &Value| out["messages"][2].clone();
    let ollama = to_openai(&req, Flavor::Ollama, false);
    assert_eq!(assistant(&ollama)["reasoning"], "I should run ls.");
    assert!(assistant(&ollama).get("reasoning_content").is_none());
    // Ollama thinks by default and 400s on "think" for models that cannot: nothing sent.
    assert!(ollama.get("reasoning_effort").is_none());
    assert!(ollama.get("chat_template_kwargs").is_none());
    assert!(ollama.get("stream_options").is_none(), "include_usage off");
    for flavor in [
        Flavor::Llamacpp,
        Flavor::Sglang,
        Flavor::Lmstudio,
        Flavor::Generic,
    ] {
        let out = to_openai(&req, flavor, true);
        assert_eq!(
            assistant(&out)["reasoning_content"],
            "I should run ls.",
            "{flavor:?}"
        );
        assert!(assistant(&out).get("reasoning").is_none());
    }
    assert_eq!(
        to_openai(&req, Flavor::Sglang, true)["chat_template_kwargs"],
        json!({"enable_thinking": true})
    );
    assert!(to_openai(&req, Flavor::Lmstudio, true)
        .get("chat_template_kwargs")
        .is_none());
    // Adaptive thinking on a generic server: no reasoning_effort (OpenAI rejects it for
    // models that do not reason, and Claude Code asks for adaptive thinking every time).
    assert!(to_openai(&req, Flavor::Generic, true)
        .get("reasoning_effort")
        .is_none());
}

#[test]
fn thinking_switch_values() {
    let base =
        json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    let with = |thinking: Value, flavor: Flavor| {
        let mut r = base.clone();
        r["thinking"] = thinking;
        to_openai(&r, flavor, false)
    };
    let off = json!({"type": "disabled"});
    let budget = |n: u64| json!({"type": "enabled", "budget_tokens": n});
    assert_eq!(
        with(off.clone(), Flavor::Vllm)["chat_template_kwargs"],
        json!({"enable_thinking": false})
    );
    assert_eq!(
        with(off.clone(), Flavor::Llamacpp)["chat_template_kwargs"],
        json!({"enable_thinking": false})
    );
    assert_eq!(
        with(off.clone(), Flavor::Ollama)["reasoning_effort"],
        "none"
    );
    assert!(with(off, Flavor::Generic).get("reasoning_effort").is_none());
    assert!(with(budget(20000), Flavor::Ollama)
        .get("reasoning_effort")
        .is_none());
    assert_eq!(
        with(budget(2000), Flavor::Generic)["reasoning_effort"],
        "low"
    );
    assert_eq!(
        with(budget(8000), Flavor::Generic)["reasoning_effort"],
        "medium"
    );
    assert_eq!(
        with(budget(32000), Flavor::Generic)["reasoning_effort"],
        "high"
    );
    assert_eq!(
        with(budget(2000), Flavor::Vllm)["chat_template_kwargs"],
        json!({"enable_thinking": true})
    );
    let plain = to_openai(&base, Flavor::Vllm, true);
    assert_eq!(plain["stream"], false);
    assert!(
        plain.get("stream_options").is_none(),
        "stream_options only when streaming"
    );
    assert!(plain.get("chat_template_kwargs").is_none());
}

#[test]
fn tool_choice_and_images_by_url() {
    let tools = json!([{"name": "A", "input_schema": {"type": "object"}}]);
    for (choice, expected) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "any"}), json!("required")),
        (json!({"type": "none"}), json!("none")),
        (
            json!({"type": "tool", "name": "A"}),
            json!({"type": "function", "function": {"name": "A"}}),
        ),
    ] {
        let r = json!({"model": "m", "max_tokens": 5, "messages": [], "tools": tools, "tool_choice": choice});
        assert_eq!(to_openai(&r, Flavor::Vllm, false)["tool_choice"], expected);
    }
    let r = json!({"model": "m", "max_tokens": 5, "messages": [], "tools": tools,
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}});
    assert_eq!(
        to_openai(&r, Flavor::Vllm, false)["parallel_tool_calls"],
        false
    );
    // Only server tools: no tools and no tool_choice at all.
    let r = json!({"model": "m", "max_tokens": 5, "messages": [],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}], "tool_choice": {"type": "any"}});
    let out = to_openai(&r, Flavor::Vllm, false);
    assert!(out.get("tools").is_none() && out.get("tool_choice").is_none());
    let r = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is this?"},
    ]}]});
    assert_eq!(
        to_openai(&r, Flavor::Ollama, false)["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "text", "text": "What is this?"},
        ])
    );
}

#[test]
fn top_k_only_where_accepted() {
    let r = json!({"model": "m", "max_tokens": 5, "top_k": 40, "top_p": 0.9, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(to_openai(&r, Flavor::Vllm, false)["top_k"], 40);
    assert!(to_openai(&r, Flavor::Generic, false).get("top_k").is_none());
    assert_eq!(to_openai(&r, Flavor::Generic, false)["top_p"], 0.9);
}

#[test]
fn bad_anthropic_requests_are_errors() {
    let opts = TranslateOptions::default();
    for (body, needle) in [
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        (r#"{"model":"m"}"#, "messages"),
        (
            r#"{"messages":[{"role":"tool","content":"x"}]}"#,
            "messages.0.role",
        ),
        (
            r#"{"messages":[{"role":"user","content":[{"type":"tool_result"}]}]}"#,
            "messages.0.content.0.tool_use_id",
        ),
    ] {
        let e = anthropic_request_to_openai(body.as_bytes(), "m", &opts).unwrap_err();
        assert!(e.contains(needle), "{body}: {e}");
    }
}

fn to_anthropic(req: &Value) -> Value {
    let out = openai_request_to_anthropic(req.to_string().as_bytes(), "claude-sonnet-4-5").unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn openai_request_to_anthropic_full() {
    let req = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "high"}},
            ]},
            {"role": "assistant", "content": null, "reasoning_content": "thinking...", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"cats\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": ""}},
                {"id": "call_3", "type": "function", "function": {"name": "lookup", "arguments": "{broken"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "cats are mammals"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "nothing"}]},
            {"role": "tool", "tool_call_id": "call_3", "content": "bad args"},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "You're welcome."},
            {"role": "user", "content": "Bye"},
        ],
        "tools": [
            {"type": "function", "function": {"name": "lookup", "description": "Look up", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": true}},
            {"type": "function", "function": {"name": "noparams"}},
        ],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "stop": "END",
        "max_completion_tokens": 1000,
        "temperature": 1.7,
        "top_p": 0.9,
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "dev-42",
        "seed": 7,
        "logprobs": false,
        "frequency_penalty": 0.5,
    });
    let out = to_anthropic(&req);
    let expected = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "system": "Be brief.\n\nUse tools.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "cats"}},
                {"type": "tool_use", "id": "call_2", "name": "lookup", "input": {}},
                {"type": "tool_use", "id": "call_3", "name": "lookup", "input": {"_raw": "{broken"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "cats are mammals"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "nothing"}]},
                {"type": "tool_result", "tool_use_id": "call_3", "content": "bad args"},
                {"type": "text", "text": "Thanks"},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "You're welcome."}]},
            {"role": "user", "content": [{"type": "text", "text": "Bye"}]},
        ],
        "tools": [
            {"name": "lookup", "description": "Look up", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
            {"name": "noparams", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["END"],
        "temperature": 1.0,
        "top_p": 0.9,
        "metadata": {"user_id": "dev-42"},
        "stream": true,
    });
    assert_eq!(out, expected);
}

#[test]
fn openai_request_defaults_and_reasoning_effort() {
    let base = json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]});
    let out = to_anthropic(&base);
    assert_eq!(out["max_tokens"], 4096);
    assert_eq!(out["stream"], false);
    assert!(out.get("thinking").is_none());

    let mut r = base.clone();
    r["reasoning_effort"] = "medium".into();
    r["max_tokens"] = 20000.into();
    r["temperature"] = 0.2.into();
    r["top_p"] = 0.5.into();
    let out = to_anthropic(&r);
    assert_eq!(
        out["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
    // Thinking takes neither a temperature nor a top_p under 0.95.
    assert!(out.get("temperature").is_none() && out.get("top_p").is_none());

    r["max_tokens"] = 4096.into();
    r["reasoning_effort"] = "high".into();
    assert_eq!(
        to_anthropic(&r)["thinking"]["budget_tokens"],
        3072,
        "budget stays below max_tokens"
    );
    r["max_tokens"] = 1000.into();
    assert!(
        to_anthropic(&r).get("thinking").is_none(),
        "no room for the minimum budget"
    );
    r["max_tokens"] = 20000.into();
    r["reasoning_effort"] = "none".into();
    assert!(to_anthropic(&r).get("thinking").is_none());
    r["reasoning_effort"] = "low".into();
    r["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    r["tool_choice"] = json!({"type": "function", "function": {"name": "f"}});
    let out = to_anthropic(&r);
    assert_eq!(out["tool_choice"], json!({"type": "tool", "name": "f"}));
    assert!(
        out.get("thinking").is_none(),
        "thinking cannot be combined with a forced tool"
    );
}

#[test]
fn bad_openai_requests_are_errors() {
    for (body, needle) in [
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "input_audio",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            "n:",
        ),
        (
            json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
            "function",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "tool_call_id",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
            "image_url",
        ),
        (json!({"model": "x"}), "messages"),
    ] {
        let e = openai_request_to_anthropic(body.to_string().as_bytes(), "m").unwrap_err();
        assert!(e.contains(needle), "{body}: {e}");
    }
}

#[test]
fn token_estimate() {
    let text = "x".repeat(3500);
    let req = json!({"model": "m", "messages": [{"role": "user", "content": text}]});
    assert_eq!(
        estimate_tokens(req.to_string().as_bytes()).unwrap(),
        1000 + 4
    );
    let req = json!({"model": "m", "system": "abcdefg", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]}]});
    assert_eq!(
        estimate_tokens(req.to_string().as_bytes()).unwrap(),
        2 + 1600 + 4
    );
    // Realistic: tools and history count, and the estimate is at least ~bytes/4.
    let body = claude_code_request().to_string();
    let n = estimate_tokens(body.as_bytes()).unwrap();
    assert!(n > 1600 && n < 1600 + body.len() as u64 / 3, "{n}");
    assert!(estimate_tokens(b"{}").is_err());
}

#[test]
fn images_a_server_cannot_take_become_a_note() {
    let gif = json!({"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lGOD"}});
    let r = json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [gif.clone()]},
            gif,
            {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
        ]},
    ]});
    // Ollama's OpenAI layer fails the whole request on a GIF data URL.
    let out = to_openai(&r, Flavor::Ollama, false);
    assert_eq!(
        out["messages"][1],
        json!({"role": "tool", "tool_call_id": "t1", "content": "[image omitted: this server does not accept image/gif images]"})
    );
    assert_eq!(
        out["messages"][2],
        json!({"role": "user", "content": "[image omitted: this server does not accept image/gif images]\n\n[image omitted: file references are not supported]"})
    );
    let out = to_openai(&r, Flavor::Vllm, false);
    assert_eq!(
        out["messages"][2]["content"][0]["image_url"]["url"],
        "data:image/gif;base64,R0lGOD"
    );
}

#[test]
fn billing_attribution_line_is_left_out_of_the_system_prompt() {
    let opts = TranslateOptions::new(Flavor::Llamacpp, "", false);
    let system = |s: Value| {
        let req =
            json!({"model": "m", "system": s, "messages": [{"role": "user", "content": "hi"}]});
        let out = anthropic_request_to_openai(req.to_string().as_bytes(), "m", &opts).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        out["messages"][0].clone()
    };
    let line = "x-anthropic-billing-header: cc_version=2.1.37.0d9; cc_entrypoint=cli; cch=fa690;";
    assert_eq!(
        system(json!(format!("{line}\nYou are Claude Code."))),
        json!({"role": "system", "content": "You are Claude Code."})
    );
    // Alone, it leaves no system message at all.
    assert_eq!(
        system(json!([{"type": "text", "text": line}])),
        json!({"role": "user", "content": "hi"})
    );
    // Only a leading attribution line goes; the words elsewhere stay.
    let kept = "Mention x-anthropic-billing-header: if asked.";
    assert_eq!(
        system(json!([{"type": "text", "text": kept}])),
        json!({"role": "system", "content": kept})
    );
}

#[test]
fn system_messages_inside_messages_become_user_text() {
    // Claude Code (without --bare) sends its environment block as a system message after the
    // first user message.
    let req = json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"}, {"type": "text", "text": "hi"}]},
        {"role": "system", "content": [{"type": "text", "text": "# Environment\n - cwd: /w", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": "hello"},
        {"role": "system", "content": "<system-reminder>already wrapped</system-reminder>"},
        {"role": "system", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "url", "url": "https://x/z.png"}},
        ]},
    ]});
    let out = to_openai(&req, Flavor::Generic, false);
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "<system-reminder>ctx</system-reminder>\n\nhi\n\n<system-reminder>\n# Environment\n - cwd: /w\n</system-reminder>"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>already wrapped</system-reminder>"},
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/z.png"}},
            ]},
        ])
    );
}

#[test]
fn consecutive_user_turns_are_merged() {
    let req = json!({"model": "m", "messages": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "A", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]},
        {"role": "user", "content": "after the result"},
    ]});
    let out = to_openai(&req, Flavor::Generic, false);
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "one\n\ntwo"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "A", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "t1", "content": "r"},
            {"role": "user", "content": "after the result"},
        ])
    );
}
