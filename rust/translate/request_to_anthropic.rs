//! An OpenAI Chat Completions request as an Anthropic Messages request.

use serde_json::{json, Map, Value};

use super::fields;
use super::json_out::to_bytes;

/// Anthropic requires `max_tokens`; OpenAI clients often leave it out.
const DEFAULT_MAX_TOKENS: u64 = 4096;
/// Anthropic's smallest thinking budget.
const MIN_THINKING_BUDGET: u64 = 1024;

pub fn openai_request_to_anthropic(body: &[u8], upstream_model: &str) -> Result<Vec<u8>, String> {
    let req: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let req = req
        .as_object()
        .ok_or("request body must be a JSON object")?;
    if fields::int_at_least(req, "n", 1)?.is_some_and(|n| n > 1) {
        return Err("n: only one choice per request is supported for this model".into());
    }

    let input = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: expected an array")?;
    let mut system: Vec<String> = Vec::new();
    let mut turns = Turns::default();
    for (i, m) in input.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("messages.{i}.role: missing"))?;
        let at = format!("messages.{i}");
        match role {
            // Anthropic has one system prompt, so system messages anywhere are gathered into it.
            "system" | "developer" => {
                let t = plain_text(m.get("content"), &at)?;
                if !t.is_empty() {
                    system.push(t);
                }
            }
            "user" => turns.push("user", user_blocks(m.get("content"), &at)?),
            "assistant" => turns.push("assistant", assistant_blocks(m, &at)?),
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{at}.tool_call_id: missing"))?;
                let content = tool_result_content(m.get("content"), &at)?;
                turns.push(
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": content})],
                );
            }
            "function" => {
                return Err(format!(
                "{at}.role: \"function\" messages are not supported; use tools and tool messages"
            ))
            }
            other => return Err(format!("{at}.role: unknown role {other:?}")),
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());
    // Checked as Chat Completions checks them (types and ranges), then translated.
    let max_tokens = fields::int_at_least(req, "max_completion_tokens", 1)?
        .or(fields::int_at_least(req, "max_tokens", 1)?)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let temperature = fields::number_in(req, "temperature", 0.0, 2.0)?;
    let top_p = fields::number_in(req, "top_p", 0.0, 1.0)?;
    let stops = fields::strings(req, "stop", true)?;
    let stream = fields::boolean(req, "stream")?.unwrap_or(false);
    out.insert("max_tokens".into(), max_tokens.into());
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    out.insert("messages".into(), Value::Array(turns.into_messages()));

    let tools = convert_tools(req)?;
    let has_tools = !tools.is_empty();
    let mut forced_tool = false;
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = tool_choice(req)? {
            forced_tool = matches!(tc.get("type").and_then(Value::as_str), Some("any" | "tool"));
            out.insert("tool_choice".into(), tc);
        }
    }

    if !stops.is_empty() {
        out.insert("stop_sequences".into(), Value::Array(stops));
    }

    let thinking = thinking_for(req, max_tokens, forced_tool);
    if let Some(t) = &thinking {
        out.insert("thinking".into(), t.clone());
    }
    // Anthropic's temperature range is 0..1 (OpenAI's 0..2), and with thinking on it takes
    // neither temperature nor a top_p under 0.95.
    if thinking.is_none() {
        if let Some(t) = temperature {
            out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
    }
    if let Some(p) = top_p {
        if thinking.is_none() || p >= 0.95 {
            out.insert("top_p".into(), json!(p));
        }
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    out.insert("stream".into(), stream.into());
    Ok(to_bytes(&Value::Object(out)))
}

/// Messages being gathered; consecutive messages of one role become one Anthropic message,
/// so several `tool` messages (and a user message after them) form one user turn.
#[derive(Default)]
struct Turns {
    messages: Vec<(&'static str, Vec<Value>)>,
}

impl Turns {
    fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.messages.last_mut() {
            Some((r, existing)) if *r == role => existing.extend(blocks),
            _ => self.messages.push((role, blocks)),
        }
    }

    fn into_messages(self) -> Vec<Value> {
        self.messages
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect()
    }
}

/// Text of a system, developer or tool message: a string, or text parts joined.
fn plain_text(content: Option<&Value>, at: &str) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for (k, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(part_text(p, &format!("{at}.content.{k}"))?),
                    _ => {
                        return Err(format!(
                            "{at}.content.{k}: only text parts are supported here"
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(_) => Err(format!(
            "{at}.content: expected a string or an array of parts"
        )),
    }
}

/// A text part's text: a string, as Chat Completions requires (a part without one would
/// otherwise vanish from the conversation the model sees).
fn part_text<'a>(part: &'a Value, at: &str) -> Result<&'a str, String> {
    part.get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.text: expected a string"))
}

/// An `image_url` (data URL or http(s) URL) as an Anthropic image block.
fn image_block(part: &Value, at: &str) -> Result<Value, String> {
    let url = match part.get("image_url") {
        Some(Value::String(s)) => s.as_str(),
        Some(o) => o
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}.image_url.url: missing"))?,
        None => return Err(format!("{at}.image_url: missing")),
    };
    if let Some(rest) = url.strip_prefix("data:") {
        let (media, data) = rest
            .split_once(";base64,")
            .ok_or_else(|| format!("{at}.image_url.url: only base64 data URLs are supported"))?;
        return Ok(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media, "data": data},
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(format!(
        "{at}.image_url.url: expected a data: or http(s) URL"
    ))
}

/// A `file` part carrying a base64 PDF as a document block.
fn file_block(part: &Value, at: &str) -> Result<Value, String> {
    let data = part
        .pointer("/file/file_data")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.file: only inline file_data is supported"))?;
    let (media, b64) = data
        .strip_prefix("data:")
        .and_then(|r| r.split_once(";base64,"))
        .ok_or_else(|| format!("{at}.file.file_data: expected a base64 data URL"))?;
    if media != "application/pdf" {
        return Err(format!(
            "{at}.file: only PDF files are supported, not {media}"
        ));
    }
    Ok(json!({
        "type": "document",
        "source": {"type": "base64", "media_type": media, "data": b64},
    }))
}

fn user_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, String> {
    match content {
        // Anthropic rejects empty text blocks.
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for (k, p) in parts.iter().enumerate() {
                let pat = format!("{at}.content.{k}");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = part_text(p, &pat)?;
                        if !t.is_empty() {
                            blocks.push(json!({"type": "text", "text": t}));
                        }
                    }
                    Some("image_url") => blocks.push(image_block(p, &pat)?),
                    Some("file") => blocks.push(file_block(p, &pat)?),
                    Some(other) => {
                        return Err(format!(
                            "{pat}: {other:?} parts are not supported by this model"
                        ))
                    }
                    None => return Err(format!("{pat}.type: missing")),
                }
            }
            Ok(blocks)
        }
        _ => Err(format!(
            "{at}.content: expected a string or an array of parts"
        )),
    }
}

/// Tool call arguments as a tool_use `input`. Anthropic needs an object: an empty string is
/// `{}`, and arguments that are not a JSON object (a model's malformed output, echoed back
/// by the client) are kept as `{"_raw": "<arguments>"}` so the conversation can go on and
/// the model sees what it sent.
pub(crate) fn arguments_to_input(args: &str) -> Value {
    if args.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"_raw": args}),
    }
}

fn assistant_blocks(m: &Value, at: &str) -> Result<Vec<Value>, String> {
    let mut blocks = Vec::new();
    // Reasoning text from a previous turn is not sent back: Anthropic accepts thinking blocks
    // only with a signature its own model produced.
    match m.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                blocks.push(json!({"type": "text", "text": s}));
            }
        }
        Some(Value::Array(parts)) => {
            for p in parts {
                let t = match p.get("type").and_then(Value::as_str) {
                    Some("text") => p.get("text").and_then(Value::as_str),
                    Some("refusal") => p.get("refusal").and_then(Value::as_str),
                    _ => None,
                };
                if let Some(t) = t.filter(|t| !t.is_empty()) {
                    blocks.push(json!({"type": "text", "text": t}));
                }
            }
        }
        Some(_) => {
            return Err(format!(
                "{at}.content: expected a string or an array of parts"
            ))
        }
    }
    let calls = match m.get("tool_calls") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(calls)) => &calls[..],
        Some(_) => return Err(format!("{at}.tool_calls: expected an array")),
    };
    for (k, c) in calls.iter().enumerate() {
        let cat = format!("{at}.tool_calls.{k}");
        let id = c
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{cat}.id: missing"))?;
        let name = c
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{cat}.function.name: missing"))?;
        let input = match c.pointer("/function/arguments") {
            Some(Value::String(s)) => arguments_to_input(s),
            Some(v @ Value::Object(_)) => v.clone(),
            _ => json!({}),
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(blocks)
}

/// A tool message's content as tool_result content: a string, or text blocks.
fn tool_result_content(content: Option<&Value>, at: &str) -> Result<Value, String> {
    match content {
        None | Some(Value::Null) => Ok(Value::String(String::new())),
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::new();
            for (k, p) in parts.iter().enumerate() {
                let pat = format!("{at}.content.{k}");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = part_text(p, &pat)?;
                        blocks.push(json!({"type": "text", "text": t}));
                    }
                    Some("image_url") => blocks.push(image_block(p, &pat)?),
                    _ => return Err(format!("{pat}: only text and image parts are supported")),
                }
            }
            Ok(Value::Array(blocks))
        }
        Some(_) => Err(format!(
            "{at}.content: expected a string or an array of parts"
        )),
    }
}

/// `tools` (and the legacy `functions`) as Anthropic client tools.
fn convert_tools(req: &Map<String, Value>) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        for (i, t) in tools.iter().enumerate() {
            match t.get("type").and_then(Value::as_str) {
                Some("function") | None => {}
                Some(other) => {
                    return Err(format!("tools.{i}.type: {other:?} tools are not supported"))
                }
            }
            let f = t
                .get("function")
                .ok_or_else(|| format!("tools.{i}.function: missing"))?;
            out.push(function_tool(f, &format!("tools.{i}.function"))?);
        }
    }
    if let Some(functions) = req.get("functions").and_then(Value::as_array) {
        for (i, f) in functions.iter().enumerate() {
            out.push(function_tool(f, &format!("functions.{i}"))?);
        }
    }
    Ok(out)
}

fn function_tool(f: &Value, at: &str) -> Result<Value, String> {
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.name: missing"))?;
    let schema = match f.get("parameters") {
        Some(p @ Value::Object(_)) => p.clone(),
        _ => json!({"type": "object", "properties": {}}),
    };
    let mut tool = Map::new();
    tool.insert("name".into(), name.into());
    if let Some(d) = f.get("description").and_then(Value::as_str) {
        tool.insert("description".into(), d.into());
    }
    tool.insert("input_schema".into(), schema);
    Ok(Value::Object(tool))
}

fn tool_choice(req: &Map<String, Value>) -> Result<Option<Value>, String> {
    let choice = req.get("tool_choice").or_else(|| req.get("function_call"));
    let mut tc = match choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "required" => Some(json!({"type": "any"})),
            "none" => Some(json!({"type": "none"})),
            other => return Err(format!("tool_choice: unknown value {other:?}")),
        },
        Some(o) => {
            let name = o
                .pointer("/function/name")
                .or_else(|| o.get("name"))
                .and_then(Value::as_str)
                .ok_or("tool_choice.function.name: missing")?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    if req.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let t = tc.get_or_insert_with(|| json!({"type": "auto"}));
        if t.get("type").and_then(Value::as_str) != Some("none") {
            if let Some(o) = t.as_object_mut() {
                o.insert("disable_parallel_tool_use".into(), true.into());
            }
        }
    }
    Ok(tc)
}

/// `reasoning_effort` (or `reasoning.effort`) as a thinking budget that fits `max_tokens`.
/// Thinking cannot be combined with a forced tool, and "none"/"minimal" or a budget below
/// Anthropic's minimum turns it off.
fn thinking_for(req: &Map<String, Value>, max_tokens: u64, forced_tool: bool) -> Option<Value> {
    let effort = req
        .get("reasoning_effort")
        .and_then(Value::as_str)
        .or_else(|| {
            req.get("reasoning")
                .and_then(|r| r.get("effort"))
                .and_then(Value::as_str)
        })?;
    let wanted: u64 = match effort {
        "low" => 2048,
        "medium" => 8192,
        "high" | "xhigh" => 16384,
        _ => return None,
    };
    if forced_tool {
        return None;
    }
    // The budget must stay below max_tokens, leaving room for the answer.
    let budget = wanted.min(max_tokens.saturating_sub(max_tokens / 4));
    if budget < MIN_THINKING_BUDGET {
        return None;
    }
    Some(json!({"type": "enabled", "budget_tokens": budget}))
}
