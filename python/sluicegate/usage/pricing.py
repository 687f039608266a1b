"""Cost of a request from a price table in USD per million tokens.

Token counts follow Anthropic's usage block: `input_tokens` already excludes the tokens written
to and read from the prompt cache, so each kind is priced once at its own rate. OpenAI-format
usage counts cached tokens inside `prompt_tokens`; `normalize_openai` splits them out first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_PER = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cache_write: float
    cache_read: float

    @classmethod
    def from_model(cls, obj: Any) -> Price | None:
        """From any config object with input/output/cache_write/cache_read attributes (or None)."""
        if obj is None:
            return None
        return cls(float(obj.input), float(obj.output), float(obj.cache_write), float(obj.cache_read))


def cost_usd(
    price: Price | None, input: int, output: int, cache_creation: int = 0, cache_read: int = 0
) -> float:
    if price is None:
        return 0.0
    return (
        input * price.input
        + output * price.output
        + cache_creation * price.cache_write
        + cache_read * price.cache_read
    ) / _PER


def normalize_openai(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> tuple[int, int, int, int]:
    """OpenAI usage -> (input, output, cache_creation, cache_read) in Anthropic's sense."""
    cached = max(0, min(cached_tokens, prompt_tokens))
    return prompt_tokens - cached, completion_tokens, 0, cached
