"""OpenAI Chat Completions responses, as OpenAI and the OpenAI-compatible servers (vLLM, Ollama,
llama.cpp, LM Studio) shape them.

A stream is `data: {chunk}\\n\\n` lines ending with `data: [DONE]\\n\\n`: a first chunk with
`delta.role`, content deltas (`reasoning_content` deltas first when the server reasons), tool calls
as `delta.tool_calls[]` entries keyed by `index` (the first carries id, type and function name with
empty arguments, the next ones argument pieces), a chunk with an empty delta and `finish_reason`,
then, with `stream_options.include_usage`, a chunk with `choices: []` and `usage`.

`sse_response` answers as those servers do: the usage chunk goes out only when the request
asked for it (unless a test forces `include_usage=True` or `False`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._actions import Action, Headers, Send, Status, header_list, json_response, paced
from .anthropic import pieces_of

DEFAULT_MODEL = "qwen2.5-coder"
CREATED = 1_750_000_000
_ids = itertools.count(1)


def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-fake{next(_ids):020d}"


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] | str  # a dict is serialized with json.dumps; a str goes as it is
    id: str = field(default_factory=lambda: "call_" + new_id("c")[2:])
    pieces: int = 3

    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


def _usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    u = usage or {}
    prompt = u.get("prompt_tokens", 12)
    completion = u.get("completion_tokens", 10)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": u.get("total_tokens", prompt + completion),
    }
    if "cached_tokens" in u:
        out["prompt_tokens_details"] = {"cached_tokens": u["cached_tokens"]}
    if "reasoning_tokens" in u:
        out["completion_tokens_details"] = {"reasoning_tokens": u["reasoning_tokens"]}
    if "cost" in u:  # routers such as OpenRouter report a cost in USD
        out["cost"] = u["cost"]
    return out


def chunk(
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    id: str = "chatcmpl-fake",
    model: str = DEFAULT_MODEL,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]
        if choices
        else [],
    }
    if usage is not None:
        c["usage"] = usage
    return c


def data_line(obj: dict[str, Any] | str) -> bytes:
    payload = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


DONE = b"data: [DONE]\n\n"


def chunks(
    content: str | None = "Hello from fake upstream",
    reasoning: str | None = None,
    tool_calls: Sequence[ToolCall] = (),
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
    include_usage: bool = True,
    model: str = DEFAULT_MODEL,
    content_pieces: int = 3,
    reasoning_pieces: int = 2,
    id: str | None = None,
) -> list[dict[str, Any]]:
    """The chunk objects of a streamed completion (without the final [DONE])."""
    cid = id or new_id()
    out = [chunk({"role": "assistant", "content": ""}, id=cid, model=model)]
    if reasoning:
        for p in pieces_of(reasoning, reasoning_pieces):
            out.append(chunk({"reasoning_content": p}, id=cid, model=model))
    if content:
        for p in pieces_of(content, content_pieces):
            out.append(chunk({"content": p}, id=cid, model=model))
    for i, tc in enumerate(tool_calls):
        first = {"index": i, "id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": ""}}
        out.append(chunk({"tool_calls": [first]}, id=cid, model=model))
        for p in pieces_of(tc.arguments_text(), tc.pieces):
            out.append(
                chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}, id=cid, model=model)
            )
    out.append(chunk({}, finish_reason or ("tool_calls" if tool_calls else "stop"), id=cid, model=model))
    if include_usage:
        out.append(chunk(None, id=cid, model=model, usage=_usage(usage), choices=False))
    return out


def sse_stream(*args: Any, **kwargs: Any) -> list[bytes]:
    """The stream as wire bytes, one element per `data:` line, ending with `data: [DONE]`.
    Takes the arguments of `chunks`."""
    return [*(data_line(c) for c in chunks(*args, **kwargs)), DONE]


SSE_HEADERS: list[tuple[str, str]] = [("content-type", "text/event-stream; charset=utf-8")]


def asks_for_usage(req: Any) -> bool:
    """The request's `stream_options.include_usage` is true."""
    body = req.json if isinstance(req.json, dict) else {}
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


class StreamResponse(list[Action]):
    """A streamed answer whose usage chunk goes out only when the request asks for it: the
    fake server calls it with the request (a plain list of actions otherwise)."""

    def __init__(self, actions: list[Action], usage_frame: Send | None) -> None:
        super().__init__(actions)
        self.usage_frame = usage_frame

    def __call__(self, req: Any) -> list[Action]:
        return self.for_request(req)

    def for_request(self, req: Any) -> list[Action]:
        if self.usage_frame is None or asks_for_usage(req):
            return list(self)
        return [a for a in self if a is not self.usage_frame]


def sse_response(
    *args: Any,
    pause: float = 0.0,
    pauses: dict[int, float] | None = None,
    headers: Headers | None = None,
    include_usage: bool | None = None,
    **kwargs: Any,
) -> StreamResponse:
    """include_usage None (the default): the usage chunk only for a request that asks for it;
    True or False: always or never."""
    hdrs = [*SSE_HEADERS, ("x-request-id", new_id("req")), *header_list(headers)]
    frames: list[bytes | Send] = list(sse_stream(*args, include_usage=include_usage is not False, **kwargs))
    usage_frame = None
    if include_usage is None:
        usage_frame = Send(frames[-2])  # the chunk before [DONE]
        frames[-2] = usage_frame
    return StreamResponse([Status(200, hdrs), *paced(frames, pause, pauses)], usage_frame)


def completion_json(
    content: str | None = "Hello from fake upstream",
    reasoning: str | None = None,
    tool_calls: Sequence[ToolCall] = (),
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
    model: str = DEFAULT_MODEL,
) -> dict[str, Any]:
    """A non-streaming `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = [
            {"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": tc.arguments_text()}}
            for tc in tool_calls
        ]
    return {
        "id": new_id(),
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": _usage(usage),
    }


def completion_response(*args: Any, headers: Headers | None = None, **kwargs: Any) -> list[Action]:
    return json_response(200, completion_json(*args, **kwargs), headers)


def models_json(ids: Sequence[str] = (DEFAULT_MODEL,)) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": CREATED, "owned_by": "fake"} for i in ids],
    }


def error_json(
    message: str = "The server had an error while processing your request.",
    type: str = "server_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(
    status: int = 500,
    message: str = "The server had an error while processing your request.",
    type: str = "server_error",
    param: str | None = None,
    code: str | None = None,
    headers: Headers | None = None,
) -> list[Action]:
    """e.g. error_response(429, "Rate limit reached", "rate_limit_exceeded", code="rate_limit_exceeded",
    headers={"retry-after": "3"})."""
    return json_response(status, error_json(message, type, param, code), headers)
