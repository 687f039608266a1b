//! Error bodies both ways.

use serde_json::{json, Value};

use crate::translate::{anthropic_error_to_openai, openai_error_to_anthropic};

fn o2a(status: u16, body: &[u8]) -> Value {
    serde_json::from_slice(&openai_error_to_anthropic(status, body)).unwrap()
}

#[test]
fn openai_errors_in_anthropic_shape() {
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ] {
        let body =
            json!({"error": {"message": "the message", "type": "x", "param": null, "code": null}});
        assert_eq!(
            o2a(status, body.to_string().as_bytes()),
            json!({"type": "error", "error": {"type": kind, "message": "the message"}}),
            "{status}"
        );
    }
}

#[test]
fn messages_are_found_in_every_shape() {
    let msg = |status: u16, body: &str| o2a(status, body.as_bytes())["error"]["message"].clone();
    // vLLM's max-context error, verbatim.
    let vllm = r#"{"object":"error","message":"This model's maximum context length is 32768 tokens. However, you requested 40000 tokens.","type":"BadRequestError","param":null,"code":400}"#;
    assert_eq!(
        msg(400, vllm),
        "This model's maximum context length is 32768 tokens. However, you requested 40000 tokens."
    );
    assert_eq!(
        msg(
            404,
            r#"{"error":"model \"llama9\" not found, try pulling it first"}"#
        ),
        "model \"llama9\" not found, try pulling it first"
    );
    assert_eq!(msg(422, r#"{"detail":"Field required"}"#), "Field required");
    assert_eq!(
        msg(
            422,
            r#"{"detail":[{"loc":["body","messages"],"msg":"Field required"}]}"#
        ),
        r#"[{"loc":["body","messages"],"msg":"Field required"}]"#
    );
    assert_eq!(
        msg(502, "<html>Bad Gateway</html>\n"),
        "<html>Bad Gateway</html>"
    );
    assert_eq!(
        msg(503, ""),
        "upstream returned HTTP 503 with an empty body"
    );
}

#[test]
fn anthropic_errors_in_openai_shape() {
    let out: Value = serde_json::from_slice(&anthropic_error_to_openai(
        529,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
    ))
    .unwrap();
    assert_eq!(
        out,
        json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
    );
    let out: Value =
        serde_json::from_slice(&anthropic_error_to_openai(502, b"upstream down")).unwrap();
    assert_eq!(
        out,
        json!({"error": {"message": "upstream down", "type": "server_error", "param": null, "code": null}})
    );
    let out: Value = serde_json::from_slice(&anthropic_error_to_openai(429, b"{}")).unwrap();
    assert_eq!(out["error"]["type"], "rate_limit_error");
}
