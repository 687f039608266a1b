//! An Anthropic Messages request as an OpenAI Chat Completions request.
//!
//! The output is built field by field from what the target understands, never copied from the
//! input: Anthropic-only fields (`cache_control`, `context_management`, `output_config`,
//! `metadata`, `service_tier`, `container`, `mcp_servers`, server tools, fields added after
//! this was written) cannot reach a server that would reject them.

use serde_json::{json, Map, Value};

use super::fields;
use super::json_out::to_bytes;
use super::options::{ReasoningEcho, ThinkingSwitch, TranslateOptions};

/// Text sent in place of a tool result that held only images (which follow in a user message).
const IMAGES_FOLLOW: &str = "(the tool returned images; they follow in the next message)";

pub fn anthropic_request_to_openai(
    body: &[u8],
    upstream_model: &str,
    opts: &TranslateOptions,
) -> Result<Vec<u8>, String> {
    let req: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let req = req
        .as_object()
        .ok_or("request body must be a JSON object")?;

    let mut out = Map::new();
    out.insert("model".into(), upstream_model.into());

    let mut messages = Vec::new();
    if let Some(system) = req.get("system") {
        let text = system_text(system)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let input = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: expected an array")?;
    for (i, m) in input.iter().enumerate() {
        convert_message(m, i, opts, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(merge_user_runs(messages)));

    let tools = convert_tools(req.get("tools"))?;
    let has_tools = !tools.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = req.get("tool_choice") {
            convert_tool_choice(tc, &mut out)?;
        }
    }

    // Checked as the Messages API checks them (types and ranges), then written.
    if let Some(n) = fields::int_at_least(req, "max_tokens", 1)? {
        let n = opts.max_tokens_cap.map_or(n, |cap| n.min(cap));
        out.insert("max_tokens".into(), n.into());
    }
    for key in ["temperature", "top_p"] {
        if fields::number_in(req, key, 0.0, 1.0)?.is_some() {
            out.insert(key.into(), req[key].clone());
        }
    }
    if fields::int_at_least(req, "top_k", 0)?.is_some() && opts.flavor.accepts_top_k() {
        out.insert("top_k".into(), req["top_k"].clone());
    }
    let stops = fields::strings(req, "stop_sequences", false)?;
    if !stops.is_empty() {
        out.insert("stop".into(), Value::Array(stops));
    }
    let stream = fields::boolean(req, "stream")?.unwrap_or(false);
    out.insert("stream".into(), stream.into());
    if stream && opts.include_usage {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(thinking) = req.get("thinking") {
        apply_thinking(thinking, opts, &mut out);
    }
    Ok(to_bytes(&Value::Object(out)))
}

/// The attribution line Claude Code puts first in its system prompt. Its `cch=` part changes
/// on every request, so at the very start of the prompt it defeats the prefix (KV) cache of
/// every self-hosted server, and it means nothing to a model: it is left out.
const BILLING_HEADER: &str = "x-anthropic-billing-header:";

/// The system prompt as one string: a string as is, text blocks joined by blank lines; the
/// billing attribution line left out.
fn system_text(system: &Value) -> Result<String, String> {
    match system {
        Value::String(s) => {
            if s.starts_with(BILLING_HEADER) {
                let rest = s.split_once('\n').map_or("", |(_, rest)| rest);
                return Ok(rest.trim_start_matches('\n').to_owned());
            }
            Ok(s.clone())
        }
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for (k, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = text_of(b, &format!("system.{k}"))?;
                        if !t.is_empty() && !t.starts_with(BILLING_HEADER) {
                            parts.push(t);
                        }
                    }
                    _ => return Err("system: only text blocks are supported".into()),
                }
            }
            Ok(parts.join("\n\n"))
        }
        Value::Null => Ok(String::new()),
        _ => Err("system: expected a string or an array of text blocks".into()),
    }
}

fn convert_message(
    m: &Value,
    i: usize,
    opts: &TranslateOptions,
    out: &mut Vec<Value>,
) -> Result<(), String> {
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("messages.{i}.role: expected \"user\" or \"assistant\""))?;
    let content = m
        .get("content")
        .ok_or_else(|| format!("messages.{i}.content: missing"))?;
    match role {
        "user" => convert_user(content, i, opts, out),
        "assistant" => convert_assistant(content, i, opts, out),
        "system" => {
            convert_system_message(content, out);
            Ok(())
        }
        other => Err(format!(
            "messages.{i}.role: {other:?} is not \"user\", \"assistant\" or \"system\""
        )),
    }
}

/// A system message inside `messages` (Claude Code sends its environment block this way) as
/// user text in `<system-reminder>` tags, the form Claude Code's own prompt tells the model
/// the system adds context in. Chat templates differ on a system message that is not first:
/// many render it, some move it to the top, some (Mistral's, Gemma's) refuse the request;
/// user text every template takes. Non-text blocks have nothing to say here.
fn convert_system_message(content: &Value, out: &mut Vec<Value>) {
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => String::new(),
    };
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let wrapped = if text.starts_with("<system-reminder>") {
        text.to_owned()
    } else {
        format!("<system-reminder>\n{text}\n</system-reminder>")
    };
    out.push(json!({"role": "user", "content": wrapped}));
}

/// Consecutive user messages as one: Anthropic allows them (and a folded system message makes
/// them), while templates that insist on alternating roles refuse them.
fn merge_user_runs(messages: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(messages.len());
    for m in messages {
        let is_user = m.get("role").and_then(Value::as_str) == Some("user");
        match out.last_mut() {
            Some(prev) if is_user && prev.get("role").and_then(Value::as_str) == Some("user") => {
                if let Some(slot) = prev.get_mut("content") {
                    let b = m.get("content").cloned().unwrap_or_default();
                    *slot = join_content(slot.take(), b);
                }
            }
            _ => out.push(m),
        }
    }
    out
}

/// Two user contents as one: strings joined by a blank line, otherwise parts concatenated.
fn join_content(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::String(a), Value::String(b)) => Value::String(format!("{a}\n\n{b}")),
        (a, b) => {
            let parts = |v: Value| match v {
                Value::Array(p) => p,
                Value::String(s) => vec![json!({"type": "text", "text": s})],
                _ => Vec::new(),
            };
            let mut joined = parts(a);
            joined.extend(parts(b));
            Value::Array(joined)
        }
    }
}

/// Content parts being gathered for one OpenAI message: text and images.
#[derive(Default)]
struct Parts {
    texts: Vec<String>,
    /// Parts in order, with text and images interleaved as they came.
    parts: Vec<Value>,
    has_image: bool,
}

impl Parts {
    fn text(&mut self, t: &str) {
        if t.is_empty() {
            return;
        }
        self.texts.push(t.to_owned());
        self.parts.push(json!({"type": "text", "text": t}));
    }

    fn image(&mut self, url: String) {
        self.has_image = true;
        self.parts
            .push(json!({"type": "image_url", "image_url": {"url": url}}));
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// A plain string when there is only text (every server takes it), parts when there are
    /// images (the only way to send them).
    fn into_content(self) -> Value {
        if self.has_image {
            Value::Array(self.parts)
        } else {
            Value::String(self.texts.join("\n\n"))
        }
    }
}

/// An image block as `image_url` content: base64 data as a data URL, a URL as is.
enum Image {
    Url(String),
    /// An image the server cannot take, with the text sent in its place.
    Omitted(String),
}

fn image_url(block: &Value, at: &str, opts: &TranslateOptions) -> Result<Image, String> {
    let source = block
        .get("source")
        .ok_or_else(|| format!("{at}.source: missing"))?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}.source.media_type: missing"))?;
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}.source.data: missing"))?;
            if !opts.flavor.accepts_image_type(media) {
                return Ok(Image::Omitted(format!(
                    "[image omitted: this server does not accept {media} images]"
                )));
            }
            Ok(Image::Url(format!("data:{media};base64,{data}")))
        }
        Some("url") => match source.get("url").and_then(Value::as_str) {
            Some(url) => Ok(Image::Url(url.to_owned())),
            None => Err(format!("{at}.source.url: missing")),
        },
        // A Files API reference means nothing to another server.
        Some("file") => Ok(Image::Omitted(
            "[image omitted: file references are not supported]".to_owned(),
        )),
        _ => Err(format!(
            "{at}.source.type: expected \"base64\", \"url\" or \"file\""
        )),
    }
}

/// A text block's text: a string, as the Messages API requires (a block without one would
/// otherwise vanish from the conversation the server sees).
fn text_of<'a>(block: &'a Value, at: &str) -> Result<&'a str, String> {
    block
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.text: expected a string"))
}

/// A `document` block as text where it has text; other documents cannot be sent.
fn document_text(block: &Value) -> String {
    let source = block.get("source");
    let title = block.get("title").and_then(Value::as_str);
    let text = match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
        Some("text") => source
            .and_then(|s| s.get("data"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        Some("content") => source.and_then(|s| s.get("content")).map(|c| match c {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }),
        _ => None,
    };
    match (text, title) {
        (Some(t), Some(title)) => format!("{title}\n\n{t}"),
        (Some(t), None) => t,
        (None, Some(title)) => format!("[document {title:?} omitted: this model cannot read it]"),
        (None, None) => "[document omitted: this model cannot read it]".to_owned(),
    }
}

fn convert_user(
    content: &Value,
    i: usize,
    opts: &TranslateOptions,
    out: &mut Vec<Value>,
) -> Result<(), String> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(format!(
                "messages.{i}.content: expected a string or an array"
            ))
        }
    };
    // Tool results become `tool` messages, which must directly follow the assistant's
    // `tool_calls`; everything else in the turn (and any images the tools returned, which
    // most servers refuse inside `tool` messages) goes into one user message after them.
    let mut tool_images = Parts::default();
    let mut rest = Parts::default();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => rest.text(text_of(b, &at)?),
            Some("image") => match image_url(b, &at, opts)? {
                Image::Url(url) => rest.image(url),
                Image::Omitted(text) => rest.text(&text),
            },
            Some("document") => rest.text(&document_text(b)),
            Some("tool_result") => out.push(tool_message(b, &at, opts, &mut tool_images)?),
            // search_result, container_upload, and blocks added later: nothing to send.
            _ => {}
        }
    }
    let mut merged = tool_images;
    merged.texts.extend(rest.texts);
    merged.parts.extend(rest.parts);
    merged.has_image |= rest.has_image;
    if !merged.is_empty() {
        out.push(json!({"role": "user", "content": merged.into_content()}));
    }
    Ok(())
}

/// A `tool_result` block as a `tool` message; its images are added to `images`.
fn tool_message(
    block: &Value,
    at: &str,
    opts: &TranslateOptions,
    images: &mut Parts,
) -> Result<Value, String> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.tool_use_id: missing"))?;
    let mut texts = Vec::new();
    let mut image_count = 0usize;
    match block.get("content") {
        Some(Value::String(s)) => texts.push(s.clone()),
        Some(Value::Array(parts)) => {
            for (k, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        texts.push(text_of(p, &format!("{at}.content.{k}"))?.to_owned())
                    }
                    Some("image") => match image_url(p, &format!("{at}.content.{k}"), opts)? {
                        Image::Url(url) => {
                            image_count += 1;
                            images.image(url);
                        }
                        Image::Omitted(text) => texts.push(text),
                    },
                    Some("document") => texts.push(document_text(p)),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    let mut text = texts.join("\n");
    if text.is_empty() && image_count > 0 {
        text = IMAGES_FOLLOW.to_owned();
    }
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = if text.is_empty() {
            "Error".to_owned()
        } else {
            format!("Error: {text}")
        };
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn convert_assistant(
    content: &Value,
    i: usize,
    opts: &TranslateOptions,
    out: &mut Vec<Value>,
) -> Result<(), String> {
    let blocks = match content {
        Value::String(s) => {
            if !s.is_empty() {
                out.push(json!({"role": "assistant", "content": s}));
            }
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => {
            return Err(format!(
                "messages.{i}.content: expected a string or an array"
            ))
        }
    };
    let mut texts: Vec<&str> = Vec::new();
    let mut reasoning: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = text_of(b, &format!("messages.{i}.content.{j}"))?;
                if !t.is_empty() {
                    texts.push(t);
                }
            }
            Some("thinking") => {
                if let Some(t) = b.get("thinking").and_then(Value::as_str) {
                    if !t.is_empty() {
                        reasoning.push(t);
                    }
                }
            }
            Some("tool_use") => {
                let at = format!("messages.{i}.content.{j}");
                let id = b
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{at}.id: missing"))?;
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{at}.name: missing"))?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            // redacted_thinking is encrypted for Anthropic's models only; server tool blocks
            // (server_tool_use, web_search_tool_result, ...) were run by Anthropic.
            _ => {}
        }
    }
    if texts.is_empty() && calls.is_empty() && reasoning.is_empty() {
        return Ok(());
    }
    let mut msg = Map::new();
    msg.insert("role".into(), "assistant".into());
    msg.insert("content".into(), texts.join("\n\n").into());
    if !reasoning.is_empty() {
        let r = Value::String(reasoning.join("\n"));
        match opts.flavor.reasoning_echo() {
            ReasoningEcho::Content => {
                msg.insert("reasoning_content".into(), r);
            }
            ReasoningEcho::Reasoning => {
                msg.insert("reasoning".into(), r);
            }
            ReasoningEcho::Both => {
                msg.insert("reasoning".into(), r.clone());
                msg.insert("reasoning_content".into(), r);
            }
        }
    }
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    out.push(Value::Object(msg));
    Ok(())
}

/// Client tools as functions. Anthropic's server tools (`web_search_20250305`,
/// `bash_20250124`, `text_editor_*`, `code_execution_*`, ...) have a versioned `type` and no
/// `input_schema`: no other server can run them, so they are left out.
fn convert_tools(tools: Option<&Value>) -> Result<Vec<Value>, String> {
    let Some(tools) = tools else {
        return Ok(Vec::new());
    };
    let tools = tools.as_array().ok_or("tools: expected an array")?;
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let kind = t.get("type").and_then(Value::as_str);
        if !matches!(kind, None | Some("custom")) {
            continue;
        }
        let Some(schema) = t.get("input_schema") else {
            continue;
        };
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("tools.{i}.name: missing"))?;
        let mut function = Map::new();
        function.insert("name".into(), name.into());
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            function.insert("description".into(), d.into());
        }
        function.insert("parameters".into(), schema.clone());
        out.push(json!({"type": "function", "function": Value::Object(function)}));
    }
    Ok(out)
}

fn convert_tool_choice(tc: &Value, out: &mut Map<String, Value>) -> Result<(), String> {
    let choice = match tc.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = tc
                .get("name")
                .and_then(Value::as_str)
                .ok_or("tool_choice.name: missing")?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err("tool_choice.type: expected auto, any, tool or none".into()),
    };
    out.insert("tool_choice".into(), choice);
    if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
        out.insert("parallel_tool_calls".into(), false.into());
    }
    Ok(())
}

/// `reasoning_effort` for an explicit thinking budget.
fn effort_for_budget(budget: u64) -> &'static str {
    match budget {
        0..=4095 => "low",
        4096..=16383 => "medium",
        _ => "high",
    }
}

/// Anthropic's `thinking` as the flavor's own switch (see [`ThinkingSwitch`]).
fn apply_thinking(thinking: &Value, opts: &TranslateOptions, out: &mut Map<String, Value>) {
    let kind = thinking.get("type").and_then(Value::as_str);
    let on = match kind {
        Some("enabled") | Some("adaptive") => true,
        Some("disabled") => false,
        _ => return,
    };
    match opts.flavor.thinking_switch() {
        ThinkingSwitch::TemplateKwarg => {
            out.insert(
                "chat_template_kwargs".into(),
                json!({"enable_thinking": on}),
            );
        }
        ThinkingSwitch::OllamaOffOnly => {
            if !on {
                out.insert("reasoning_effort".into(), "none".into());
            }
        }
        ThinkingSwitch::EffortForBudget => {
            if kind == Some("enabled") {
                if let Some(budget) = thinking.get("budget_tokens").and_then(Value::as_u64) {
                    out.insert("reasoning_effort".into(), effort_for_budget(budget).into());
                }
            }
        }
        ThinkingSwitch::None => {}
    }
}
