"""Anthropic Messages API responses, as the real API shapes them.

Event sequence of a stream (platform.claude.com "Streaming messages", and the anthropic SDK's own
recorded fixtures): `message_start` (a Message with empty content and the input usage),
then per content block `content_block_start`, `content_block_delta`..., `content_block_stop`,
with one `ping` after the first block starts; then `message_delta` (stop_reason and cumulative
usage) and `message_stop`. Delta types: `text_delta`, `thinking_delta` then one `signature_delta`
for thinking blocks, `input_json_delta` for tool_use blocks (the first piece is the empty string,
the pieces concatenate to the JSON of `input`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._actions import Action, Headers, Status, header_list, json_response, paced

DEFAULT_MODEL = "claude-sonnet-4-6"
_ids = itertools.count(1)


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def new_id(prefix: str) -> str:
    return f"{prefix}_01FAKE{next(_ids):018d}"


def pieces_of(text: str, n: int) -> list[str]:
    """`text` cut into n pieces of about equal length (fewer if text is shorter); never empty
    pieces unless the text is empty."""
    if n <= 1 or len(text) <= 1:
        return [text]
    n = min(n, len(text))
    size, extra = divmod(len(text), n)
    out, pos = [], 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        out.append(text[pos : pos + step])
        pos += step
    return out


# ---- content block specs -------------------------------------------------------------------


@dataclass
class Text:
    text: str
    pieces: int = 3  # number of text_delta events


@dataclass
class Thinking:
    thinking: str
    signature: str = "EqQBCkYIBxgCKkBfakeSignatureForTestsOnly+/=="
    pieces: int = 2


@dataclass
class RedactedThinking:
    data: str = (
        "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB5URj"
    )


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any]
    id: str = field(default_factory=lambda: new_id("toolu"))
    pieces: int = 4  # number of non-empty input_json_delta pieces
    input_json: str | None = None  # the exact JSON text to stream, when it must differ from dumps(input)

    def json_text(self) -> str:
        return self.input_json if self.input_json is not None else json.dumps(self.input, ensure_ascii=False)


Block = Text | Thinking | RedactedThinking | ToolUse


def as_blocks(content: str | Block | Sequence[Block | dict[str, Any]]) -> list[Block]:
    if isinstance(content, str):
        return [Text(content)]
    if isinstance(content, Text | Thinking | RedactedThinking | ToolUse):
        return [content]
    out: list[Block] = []
    for b in content:
        if isinstance(b, dict):
            kind = b.get("type")
            if kind == "text":
                out.append(Text(b["text"]))
            elif kind == "thinking":
                out.append(Thinking(b["thinking"], b.get("signature", Thinking.signature)))
            elif kind == "redacted_thinking":
                out.append(RedactedThinking(b["data"]))
            elif kind == "tool_use":
                out.append(ToolUse(b["name"], b["input"], b.get("id") or new_id("toolu")))
            else:
                raise ValueError(f"unknown block type {kind!r}")
        else:
            out.append(b)
    return out


def final_block(b: Block) -> dict[str, Any]:
    """The block as it appears in a non-streaming Message's content."""
    if isinstance(b, Text):
        return {"type": "text", "text": b.text}
    if isinstance(b, Thinking):
        return {"type": "thinking", "thinking": b.thinking, "signature": b.signature}
    if isinstance(b, RedactedThinking):
        return {"type": "redacted_thinking", "data": b.data}
    return {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}


def _usage(usage: dict[str, int] | None, output_tokens: int) -> dict[str, Any]:
    u = usage or {}
    return {
        "input_tokens": u.get("input_tokens", 12),
        "cache_creation_input_tokens": u.get("cache_creation_input_tokens", 0),
        "cache_read_input_tokens": u.get("cache_read_input_tokens", 0),
        "output_tokens": u.get("output_tokens", output_tokens),
    }


def _default_stop(blocks: list[Block]) -> str:
    return "tool_use" if any(isinstance(b, ToolUse) for b in blocks) else "end_turn"


# ---- non-streaming ---------------------------------------------------------------------------


def message_json(
    content: str | Block | Sequence[Block | dict[str, Any]] = "Hello from fake upstream",
    model: str = DEFAULT_MODEL,
    usage: dict[str, int] | None = None,
    stop_reason: str | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    """A complete Message object (the body of a non-streaming /v1/messages answer)."""
    blocks = as_blocks(content)
    u = _usage(usage, 10)
    u["service_tier"] = "standard"
    return {
        "id": id or new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [final_block(b) for b in blocks],
        "stop_reason": stop_reason or _default_stop(blocks),
        "stop_sequence": None,
        "usage": u,
    }


def message_response(
    content: str | Block | Sequence[Block | dict[str, Any]] = "Hello from fake upstream",
    model: str = DEFAULT_MODEL,
    usage: dict[str, int] | None = None,
    stop_reason: str | None = None,
    headers: Headers | None = None,
) -> list[Action]:
    hdrs = [("request-id", new_id("req")), *header_list(headers)]
    return json_response(200, message_json(content, model, usage, stop_reason), hdrs)


def count_tokens_json(input_tokens: int = 42) -> dict[str, Any]:
    return {"input_tokens": input_tokens}


def models_json(ids: Sequence[str] = (DEFAULT_MODEL,)) -> dict[str, Any]:
    data = [{"type": "model", "id": i, "display_name": i, "created_at": "2025-01-01T00:00:00Z"} for i in ids]
    return {
        "data": data,
        "has_more": False,
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
    }


# ---- streaming ---------------------------------------------------------------------------------


def sse_event(name: str, data: dict[str, Any] | str) -> bytes:
    """One SSE event as the API writes it: `event: NAME\\ndata: JSON\\n\\n`."""
    payload = data if isinstance(data, str) else _compact(data)
    return f"event: {name}\ndata: {payload}\n\n".encode()


PING = sse_event("ping", '{"type": "ping"}')  # the API writes this one with a space


def sse_events(
    content: str | Block | Sequence[Block | dict[str, Any]] = "Hello from fake upstream",
    model: str = DEFAULT_MODEL,
    usage: dict[str, int] | None = None,
    stop_reason: str | None = None,
    id: str | None = None,
    ping: bool = True,
) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, data) sequence of a streamed message."""
    blocks = as_blocks(content)
    start_usage = _usage(usage, 1)
    start_usage["output_tokens"] = 1
    start_usage["service_tier"] = "standard"
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": id or new_id("msg"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
    ]
    for index, b in enumerate(blocks):
        if isinstance(b, Text):
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces_of(b.text, b.pieces)]
        elif isinstance(b, Thinking):
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces_of(b.thinking, b.pieces)]
            deltas.append({"type": "signature_delta", "signature": b.signature})
        elif isinstance(b, RedactedThinking):
            start = {"type": "redacted_thinking", "data": b.data}
            deltas = []
        else:
            start = {"type": "tool_use", "id": b.id, "name": b.name, "input": {}}
            parts = ["", *pieces_of(b.json_text(), b.pieces)]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in parts]
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        )
        if ping and index == 0:
            events.append(("ping", {"type": "ping"}))
        for d in deltas:
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    if ping and not blocks:
        events.append(("ping", {"type": "ping"}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason or _default_stop(blocks), "stop_sequence": None},
                "usage": _usage(usage, 10),
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def sse_stream(
    content: str | Block | Sequence[Block | dict[str, Any]] = "Hello from fake upstream",
    model: str = DEFAULT_MODEL,
    usage: dict[str, int] | None = None,
    stop_reason: str | None = None,
    id: str | None = None,
    ping: bool = True,
) -> list[bytes]:
    """The stream as wire bytes, one element per SSE event."""
    return [
        PING if name == "ping" else sse_event(name, data)
        for name, data in sse_events(content, model, usage, stop_reason, id, ping)
    ]


SSE_HEADERS: list[tuple[str, str]] = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
]


def sse_response(
    content: str | Block | Sequence[Block | dict[str, Any]] = "Hello from fake upstream",
    model: str = DEFAULT_MODEL,
    usage: dict[str, int] | None = None,
    stop_reason: str | None = None,
    pause: float = 0.0,
    pauses: dict[int, float] | None = None,
    headers: Headers | None = None,
) -> list[Action]:
    """A 200 streaming response (chunked, one chunk per event), `pause` seconds between events,
    `pauses[i]` after event i."""
    hdrs = [*SSE_HEADERS, ("request-id", new_id("req")), *header_list(headers)]
    frames = sse_stream(content, model, usage, stop_reason)
    return [Status(200, hdrs), *paced(frames, pause, pauses)]


# ---- errors ----------------------------------------------------------------------------------

ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def error_json(type: str = "overloaded_error", message: str = "Overloaded") -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}}


def error_response(
    status: int | None = None,
    type: str = "overloaded_error",
    message: str = "Overloaded",
    headers: Headers | None = None,
) -> list[Action]:
    """An error answer in the API's shape, e.g. error_response(429, "rate_limit_error", "...",
    {"retry-after": "7"})."""
    hdrs = [("request-id", new_id("req")), *header_list(headers)]
    return json_response(status or ERROR_STATUS.get(type, 500), error_json(type, message), hdrs)


def sse_error_event(type: str = "overloaded_error", message: str = "Overloaded") -> bytes:
    """An `error` event inside an already-started stream."""
    return sse_event("error", error_json(type, message))


# ---- a model that signs its thinking and checks what comes back ---------------------------------

FINAL_TURN_NEEDS_THINKING = (
    "When `thinking` is enabled, a final `assistant` message must start with a thinking block"
    " (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you"
    " include thinking blocks from previous turns. To avoid this requirement, disable `thinking`."
    " Please consult our documentation at"
    " https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


class SigningModel:
    """A fake Anthropic deployment as strict as the API about thinking, for use as a
    FakeUpstream handler: it signs every thinking block it writes (an HMAC of the text under its
    own key, so another SigningModel's signatures do not verify), records the redacted blocks it
    hands out, and refuses a request with the API's own 400 wording when

    - a thinking block's signature (a redacted block's data) is not one it issued:
      "messages.1.content.0: Invalid `signature` in `thinking` block";
    - thinking is on and the final assistant turn of an open tool-use loop does not start with
      a thinking block ("... must start with a thinking block ...");
    - thinking is off and the final message is an assistant turn holding thinking;
    - a `clear_thinking_*` context edit comes without thinking on;
    - a message other than a final assistant one has empty content.

    It answers `reply` (blocks, after a signed Thinking block when the request turns thinking
    on, plus a RedactedThinking one when `redacted`), streamed when the request streams, with
    the request's model echoed. `down` makes it answer 529 instead.
    """

    def __init__(self, name: str, reply: str | Sequence[Block] = "Hello from fake upstream") -> None:
        self.name = name
        self.key = name.encode()
        self.reply: str | Sequence[Block] = reply
        self.redacted = False
        self.down = False
        self.refused: list[str] = []  # the messages of the 400s it answered
        self._issued_redacted: set[str] = set()

    def sign(self, thinking: str) -> str:
        mac = hmac.new(self.key, thinking.encode(), hashlib.sha256).digest()
        return base64.b64encode(b"\x12\x08" + mac).decode()

    def refusal(self, body: dict[str, Any]) -> str | None:
        """The API's error message for this body, or None when it would be accepted."""
        thinking = body.get("thinking")
        thinking_on = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
        messages = body.get("messages") or []
        for i, msg in enumerate(messages):
            content = msg.get("content")
            if content in ([], "") and not (msg["role"] == "assistant" and i == len(messages) - 1):
                return f"messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            if msg["role"] != "assistant" or not isinstance(content, list):
                continue
            for j, block in enumerate(content):
                kind = block.get("type")
                if kind == "thinking" and block.get("signature") != self.sign(block.get("thinking", "")):
                    return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                if kind == "redacted_thinking" and block.get("data") not in self._issued_redacted:
                    return f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
                if kind in ("thinking", "redacted_thinking") and not thinking_on and i == len(messages) - 1:
                    return (
                        f"messages.{i}.content.{j}: When thinking is disabled, an `assistant` message in"
                        " the final position cannot contain `thinking`. To use thinking blocks, enable"
                        " `thinking` in your request."
                    )
        if thinking_on and len(messages) >= 2:
            last, turn = messages[-1], messages[-2]
            results = isinstance(last.get("content"), list) and any(
                b.get("type") == "tool_result" for b in last["content"]
            )
            if last["role"] == "user" and turn["role"] == "assistant" and results:
                asked = turn["content"] if isinstance(turn["content"], list) else []
                first = asked[0] if asked else {"type": "text"}
                if first.get("type") not in ("thinking", "redacted_thinking"):
                    return (
                        f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or"
                        f" `redacted_thinking`, but found `{first.get('type')}`. {FINAL_TURN_NEEDS_THINKING}"
                    )
        edits = (body.get("context_management") or {}).get("edits") or []
        if not thinking_on and any(str(e.get("type", "")).startswith("clear_thinking") for e in edits):
            return "`clear_thinking_20251015` strategy requires `thinking` to be enabled or adaptive"
        return None

    def __call__(self, req: Any) -> list[Action]:
        body = req.json if isinstance(req.json, dict) else {}
        if self.down:
            return error_response(529, "overloaded_error", "Overloaded")
        refusal = self.refusal(body)
        if refusal is not None:
            self.refused.append(refusal)
            return error_response(400, "invalid_request_error", refusal)
        blocks: list[Block] = []
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
            text = f"{self.name} thinks about turn {len(body.get('messages') or [])}"
            blocks.append(Thinking(text, signature=self.sign(text)))
            if self.redacted:
                data = base64.b64encode(f"redacted by {self.name} #{next(_ids)}".encode()).decode()
                self._issued_redacted.add(data)
                blocks.append(RedactedThinking(data))
        blocks.extend(as_blocks(self.reply))
        model = body.get("model") or DEFAULT_MODEL
        if body.get("stream"):
            return sse_response(blocks, model=model)
        return message_response(blocks, model=model)
