//! What a translation needs to know about the OpenAI-compatible server on the other side.

/// The kind of OpenAI-compatible server, for the quirks that differ between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavor {
    Vllm,
    Ollama,
    Llamacpp,
    Lmstudio,
    Sglang,
    #[default]
    Generic,
}

/// How a server wants a previous turn's reasoning text sent back on an assistant message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReasoningEcho {
    /// `reasoning_content`, DeepSeek's name, read by llama.cpp, SGLang, LM Studio and most others.
    Content,
    /// `reasoning`, read by Ollama's `/v1` layer.
    Reasoning,
    /// Both: vLLM reads `reasoning` since it renamed the field and `reasoning_content` before.
    Both,
}

/// How a server lets a request switch the model's thinking on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThinkingSwitch {
    /// `chat_template_kwargs: {"enable_thinking": bool}`, read by Qwen3-style templates and
    /// ignored by templates without the variable (vLLM, SGLang, llama.cpp server).
    TemplateKwarg,
    /// Ollama: thinking models think unless told not to, and an explicit "think" (any
    /// `reasoning_effort` but "none") on a model without the capability is a 400, so only the
    /// off switch (`reasoning_effort: "none"`) is ever sent.
    OllamaOffOnly,
    /// `reasoning_effort`, and only for an explicit budget: it is OpenAI's own field, but
    /// OpenAI rejects it for models that do not reason, and Claude Code asks for adaptive
    /// thinking on every request.
    EffortForBudget,
    /// No known switch (LM Studio ignores `reasoning_effort` on chat completions).
    None,
}

impl Flavor {
    /// Parses a flavor name as written in the config.
    pub fn parse(name: &str) -> Result<Flavor, String> {
        match name {
            "vllm" => Ok(Flavor::Vllm),
            "ollama" => Ok(Flavor::Ollama),
            "llamacpp" => Ok(Flavor::Llamacpp),
            "lmstudio" => Ok(Flavor::Lmstudio),
            "sglang" => Ok(Flavor::Sglang),
            "generic" => Ok(Flavor::Generic),
            other => Err(format!(
                "unknown flavor {other:?} (expected vllm, ollama, llamacpp, lmstudio, sglang or generic)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavor::Vllm => "vllm",
            Flavor::Ollama => "ollama",
            Flavor::Llamacpp => "llamacpp",
            Flavor::Lmstudio => "lmstudio",
            Flavor::Sglang => "sglang",
            Flavor::Generic => "generic",
        }
    }

    pub(crate) fn reasoning_echo(self) -> ReasoningEcho {
        match self {
            Flavor::Vllm => ReasoningEcho::Both,
            Flavor::Ollama => ReasoningEcho::Reasoning,
            Flavor::Llamacpp | Flavor::Lmstudio | Flavor::Sglang | Flavor::Generic => {
                ReasoningEcho::Content
            }
        }
    }

    pub(crate) fn thinking_switch(self) -> ThinkingSwitch {
        match self {
            Flavor::Vllm | Flavor::Sglang | Flavor::Llamacpp => ThinkingSwitch::TemplateKwarg,
            Flavor::Ollama => ThinkingSwitch::OllamaOffOnly,
            Flavor::Generic => ThinkingSwitch::EffortForBudget,
            Flavor::Lmstudio => ThinkingSwitch::None,
        }
    }

    /// Whether the server takes base64 images of this media type: Ollama's `/v1` layer
    /// accepts only JPEG, PNG and WebP data URLs and fails the whole request otherwise.
    pub(crate) fn accepts_image_type(self, media_type: &str) -> bool {
        match self {
            Flavor::Ollama => matches!(
                media_type,
                "image/jpeg" | "image/jpg" | "image/png" | "image/webp"
            ),
            _ => true,
        }
    }

    /// Whether the server takes sampling extensions beyond OpenAI's schema (`top_k`).
    pub(crate) fn accepts_top_k(self) -> bool {
        matches!(
            self,
            Flavor::Vllm | Flavor::Sglang | Flavor::Llamacpp | Flavor::Lmstudio
        )
    }
}

/// Per-target translation settings, built once per snapshot or per request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TranslateOptions {
    pub flavor: Flavor,
    /// The model name reported to the client (the name it asked for, not the upstream's).
    pub model: String,
    /// Ask for (OpenAI upstream) or send (OpenAI client) the final usage chunk of a stream.
    pub include_usage: bool,
    /// Upper bound for `max_tokens` sent to the server (Claude Code asks for 32000, which a
    /// server with a small context window refuses outright).
    pub max_tokens_cap: Option<u64>,
}

impl TranslateOptions {
    pub fn new(flavor: Flavor, model: impl Into<String>, include_usage: bool) -> Self {
        TranslateOptions {
            flavor,
            model: model.into(),
            include_usage,
            max_tokens_cap: None,
        }
    }

    /// Builds options from the config's strings; an unknown flavor is an error.
    pub fn from_parts(flavor: &str, model: &str, include_usage: bool) -> Result<Self, String> {
        Ok(TranslateOptions::new(
            Flavor::parse(flavor)?,
            model,
            include_usage,
        ))
    }
}
