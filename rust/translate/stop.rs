//! The small vocabularies the two APIs map between: stop reasons and error types.

/// Anthropic `stop_reason` for an OpenAI `finish_reason`.
///
/// `stop` is `stop_sequence` when the server said which stop string matched (vLLM's
/// `stop_reason`, SGLang's `matched_stop`); `content_filter` is `refusal` (Anthropic's reason
/// for output stopped by a safety classifier). A response that carries tool calls is
/// `tool_use` whatever the server said: some servers end tool-call turns with `stop`, and
/// Claude Code only runs tools after `tool_use`.
pub(crate) fn anthropic_stop_reason(
    finish_reason: Option<&str>,
    matched_stop: bool,
    has_tool_calls: bool,
) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("content_filter") => "refusal",
        Some("tool_calls") | Some("function_call") => "tool_use",
        _ if has_tool_calls => "tool_use",
        Some("stop") if matched_stop => "stop_sequence",
        _ => "end_turn",
    }
}

/// OpenAI `finish_reason` for an Anthropic `stop_reason`.
pub(crate) fn openai_finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Anthropic error `type` for an HTTP status, as Anthropic's own API assigns them.
pub(crate) fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        // Anthropic uses invalid_request_error for 400 and for 4xx statuses it does not list.
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// OpenAI error `type` for an HTTP status, when the upstream body named none.
pub(crate) fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}
