"""Per-request glue for targets that speak the other API; the translating itself is native.

Request bodies are translated once per request; streamed responses are translated event by
event inside the native `Exchange`; whole (non-streamed) bodies and error bodies here.
"""

from __future__ import annotations

from typing import Any

import orjson

from . import _native
from .context import RequestContext

ANTHROPIC_VERSION = ("anthropic-version", "2023-06-01")


def _replace_json(
    headers: list[tuple[str, str]], content_type: str = "application/json"
) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")] + [
        ("content-type", content_type)
    ]


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def message_as_events(message: bytes) -> bytes:
    """A whole (translated) Anthropic message as the event stream the client asked for.

    For a server that answers a streaming request with one JSON body: without this the client
    would get JSON where it waits for events, and Claude Code would repeat the whole request
    without streaming. Once per response, so plain Python."""
    msg = orjson.loads(message)
    blocks = msg.pop("content", [])
    usage = msg.get("usage") or {}
    start = {
        **msg,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0},
    }
    out = [_event("message_start", {"type": "message_start", "message": start})]
    for i, b in enumerate(blocks):
        kind = b.get("type")
        first: dict[str, Any]
        delta: dict[str, Any]
        if kind == "text":
            first, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": b.get("text", "")}
        elif kind == "thinking":
            first = {"type": "thinking", "thinking": "", "signature": ""}
            delta = {"type": "thinking_delta", "thinking": b.get("thinking", "")}
        elif kind == "tool_use":
            first = {"type": "tool_use", "id": b.get("id"), "name": b.get("name"), "input": {}}
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(b.get("input", {})).decode()}
        else:
            continue
        out.append(
            _event("content_block_start", {"type": "content_block_start", "index": i, "content_block": first})
        )
        out.append(_event("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}))
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": i}))
    end = {"stop_reason": msg.get("stop_reason"), "stop_sequence": msg.get("stop_sequence")}
    out.append(_event("message_delta", {"type": "message_delta", "delta": end, "usage": usage}))
    out.append(_event("message_stop", {"type": "message_stop"}))
    return b"".join(out)


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

                return (
                    502,
                    _replace_json(headers),
                    anthropic_error(502, f"upstream answer not understood: {exc}"),
                )
            ctx.usage, ctx.stop_reason = usage, stop
            if ctx.stream:  # the client asked for a stream and the server sent one body
                return status, _replace_json(headers, "text/event-stream"), message_as_events(out)
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

                return (
                    502,
                    _replace_json(headers),
                    openai_error(502, f"upstream answer not understood: {exc}"),
                )
            ctx.usage, ctx.stop_reason = usage, stop
            return status, _replace_json(headers), out
        return status, _replace_json(headers), _native.anthropic_error_to_openai(status, body)

    return transform
