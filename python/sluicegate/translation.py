"""Per-request glue for targets that speak the other API; the translating itself is native.

Request bodies are translated once per request; streamed responses are translated event by
event inside the native `Exchange`; whole (non-streamed) bodies and error bodies here.
"""

from __future__ import annotations

from typing import Any

from . import _native
from .context import RequestContext

ANTHROPIC_VERSION = ("anthropic-version", "2023-06-01")


def _replace_json(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")] + [
        ("content-type", "application/json")
    ]


def openai_body_to_anthropic(model: str) -> Any:
    """transform_body for an OpenAI-format upstream answering an Anthropic-format client."""

    def transform(
        status: int, headers: list[tuple[str, str]], body: bytes, ctx: RequestContext
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if 200 <= status < 300:
            try:
                out, usage, stop = _native.openai_response_to_anthropic(body, model)
            except ValueError as exc:
                ctx.error_type = "bad_upstream_body"
                from .errors import anthropic_error

                return 502, _replace_json(headers), anthropic_error(502, f"upstream answer not understood: {exc}")
            ctx.usage, ctx.stop_reason = usage, stop
            return status, _replace_json(headers), out
        return status, _replace_json(headers), _native.openai_error_to_anthropic(status, body)

    return transform


def anthropic_body_to_openai(model: str) -> Any:
    """transform_body for an Anthropic-format upstream answering an OpenAI-format client."""

    def transform(
        status: int, headers: list[tuple[str, str]], body: bytes, ctx: RequestContext
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if 200 <= status < 300:
            try:
                out, usage, stop = _native.anthropic_response_to_openai(body, model)
            except ValueError as exc:
                ctx.error_type = "bad_upstream_body"
                from .errors import openai_error

                return 502, _replace_json(headers), openai_error(502, f"upstream answer not understood: {exc}")
            ctx.usage, ctx.stop_reason = usage, stop
            return status, _replace_json(headers), out
        return status, _replace_json(headers), _native.anthropic_error_to_openai(status, body)

    return transform
