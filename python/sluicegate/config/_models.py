"""Raw configuration models: the YAML file as the operator wrote it, validated strictly.

Unknown keys are errors (extra="forbid") so a typo never silently does nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .ops_sections import OpsSections


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    connect_s: float = Field(10.0, gt=0)
    first_byte_s: float = Field(600.0, gt=0)
    idle_s: float = Field(300.0, gt=0)
    total_s: float | None = Field(None, gt=0)


class MockSettings(_Strict):
    """The built-in offline provider: answers in the Anthropic format without any network."""

    text: str = "Hello from sluicegate's built-in mock provider. Set ANTHROPIC_API_KEY to use Anthropic."
    events: int = Field(10, ge=1, le=100_000)
    interval_ms: float = Field(0.0, ge=0)
    pause_after_first_ms: float = Field(0.0, ge=0)
    input_tokens: int = Field(12, ge=0)


Flavor = Literal["vllm", "ollama", "llamacpp", "lmstudio", "sglang", "generic"]


class Provider(_Strict):
    type: Literal["anthropic", "openai", "mock"]
    base_url: str | None = None
    api_key: str | None = None
    # Skip this provider (and its targets) when api_key resolves to an empty string, so one
    # example config can offer a real provider when its key is set and fall back otherwise.
    optional: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=lambda: Timeouts())
    flavor: Flavor | None = None
    # Ask an OpenAI-compatible server for a final usage chunk (stream_options.include_usage).
    # On by default; turn off for servers that reject the field.
    include_usage: bool = True
    mock: MockSettings | None = None

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not name or any(c in name for c in " \t\r\n:"):
                raise ValueError(f"invalid header name {name!r}")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} value contains a line break")
        return v


class Price(_Strict):
    """USD per million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    cache_write: float = Field(0.0, ge=0)
    cache_read: float = Field(0.0, ge=0)


Modality = Literal["text", "image"]


class Target(_Strict):
    provider: str
    model: str | None = None
    input_modalities: list[Modality] | None = None
    supports_tools: bool = True
    # openai targets: cap the max_tokens sent (Claude Code asks for 32000; a server whose
    # context window is smaller refuses such requests outright).
    max_output_tokens: int | None = Field(None, ge=1)
    weight: float = Field(1.0, gt=0)
    price: Price | None = None
    timeouts: Timeouts | None = None


class Group(_Strict):
    display_name: str | None = None
    aliases: list[str] = Field(default_factory=list)
    targets: list[Target] = Field(min_length=1)
    strategy: Literal["priority", "weighted", "least_inflight", "latency"] = "priority"
    max_attempts: int = Field(3, ge=1, le=20)
    deadline_s: float | None = Field(None, gt=0)
    timeouts: Timeouts | None = None


class Key(_Strict):
    name: str = Field(min_length=1)
    token: str | None = None
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    user: str | None = None
    project: str | None = None
    env: str | None = None
    models: list[str] = Field(default_factory=lambda: ["*"])
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, gt=0)
    budget_period: Literal["day", "month"] | None = None


class Server(_Strict):
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    access_log: bool = True
    # Access lines are written together at most this often (0: each at once); see log.py.
    access_log_flush_ms: int = Field(100, ge=0, le=10_000)
    # Prompt text is never logged unless an operator turns this on.
    log_prompts: bool = False
    drain_s: float = Field(30.0, ge=0)


class RawConfig(OpsSections):
    """The whole file. Operational sections (ledger, keystore, limits, admin, metrics) come
    from `ops_sections`."""

    providers: dict[str, Provider] = Field(min_length=1)
    models: dict[str, Group] = Field(min_length=1)
    keys: list[Key] = Field(default_factory=list)
    default_group: str | None = None
    server: Server = Field(default_factory=lambda: Server())
