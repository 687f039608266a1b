"""The built-in `type: mock` provider: Anthropic-format answers with no network and no keys.

It serves the README demo and load tests: configurable text, number of text events, pacing
and an optional tool call. The same event generator backs `sluicegate mock-upstream`, a
standalone server, which also answers in the OpenAI Chat Completions format
(`openai_chunks` / `openai_message`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

_ids = itertools.count(1)


def _split(text: str, parts: int) -> list[str]:
    if parts <= 1 or len(text) <= 1:
        return [text] * 1 if parts <= 1 else [text] + [""] * (parts - 1)
    size, rem = divmod(len(text), parts)
    if size == 0:
        return list(text) + [""] * (parts - len(text))
    pieces, pos = [], 0
    for i in range(parts):
        n = size + (1 if i < rem else 0)
        pieces.append(text[pos : pos + n])
        pos += n
    return pieces


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class MockReply:
    """One answer: the SSE events (or the JSON message) for a request to the mock.

    Settings: `text`, `events` (number of text deltas), `interval_ms`, `pause_after_first_ms`,
    `input_tokens`, and `tool` (a tool name: the answer then ends with a `tool_use` block
    whose input arrives in `tool_events` pieces).
    """

    def __init__(self, settings: dict[str, Any], model: str) -> None:
        self.text: str = settings.get("text", "Hello from sluicegate's mock provider.")
        self.events: int = settings.get("events", 10)
        self.interval_s: float = settings.get("interval_ms", 0.0) / 1000.0
        self.pause_after_first_s: float = settings.get("pause_after_first_ms", 0.0) / 1000.0
        self.input_tokens: int = settings.get("input_tokens", 12)
        self.tool: str | None = settings.get("tool") or None
        self.tool_events: int = settings.get("tool_events", 4)
        self.model = model
        n = next(_ids)
        self.msg_id = f"msg_mock_{n:012d}"
        self.tool_id = f"toolu_mock_{n:012d}"
        self.output_tokens = max(1, len(self.text) // 4) + (12 if self.tool else 0)
        self.stop_reason = "tool_use" if self.tool else "end_turn"

    @property
    def tool_input(self) -> dict[str, Any]:
        return {"command": "ls -la", "description": "List the files in the working directory"}

    # -- Anthropic Messages ----------------------------------------------------------------------
    def message(self) -> bytes:
        content: list[dict[str, Any]] = [{"type": "text", "text": self.text}]
        if self.tool:
            content.append(
                {"type": "tool_use", "id": self.tool_id, "name": self.tool, "input": self.tool_input}
            )
        return orjson.dumps(
            {
                "id": self.msg_id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": content,
                "stop_reason": self.stop_reason,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": self.input_tokens,
                    "output_tokens": self.output_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            }
        )

    def sse_events(self) -> list[bytes]:
        usage0 = {
            "input_tokens": self.input_tokens,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        out = [
            _event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": self.msg_id,
                        "type": "message",
                        "role": "assistant",
                        "model": self.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": usage0,
                    },
                },
            ),
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
        ]
        for piece in _split(self.text, self.events):
            out.append(
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            )
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        if self.tool:
            out.append(
                _event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 1,
                        "content_block": {
                            "type": "tool_use",
                            "id": self.tool_id,
                            "name": self.tool,
                            "input": {},
                        },
                    },
                )
            )
            for piece in _split(orjson.dumps(self.tool_input).decode(), self.tool_events):
                out.append(
                    _event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 1,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    )
                )
            out.append(_event("content_block_stop", {"type": "content_block_stop", "index": 1}))
        out.append(
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": self.output_tokens},
                },
            )
        )
        out.append(_event("message_stop", {"type": "message_stop"}))
        return out

    @staticmethod
    def parse(chunk: bytes) -> list[tuple[str, bytes]]:
        """(event name, data) pairs of SSE text this class produced (one data line each)."""
        out = []
        for block in chunk.split(b"\n\n"):
            if block:
                name, _, data = block.partition(b"\ndata: ")
                out.append((name.removeprefix(b"event: ").decode(), data))
        return out

    async def stream(self) -> AsyncIterator[bytes]:
        """SSE events paced as configured: the first one at once, then one per interval."""
        events = self.sse_events()
        # message_start and content_block_start go together, like a real first flush.
        yield events[0] + events[1]
        if self.pause_after_first_s:
            await asyncio.sleep(self.pause_after_first_s)
        rest = events[2:]
        if not self.interval_s:
            yield b"".join(rest)
            return
        for ev in rest:
            await asyncio.sleep(self.interval_s)
            yield ev

    # -- OpenAI Chat Completions -----------------------------------------------------------------
    def _openai_usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }

    def openai_message(self) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool:
            message["tool_calls"] = [
                {
                    "id": self.tool_id,
                    "type": "function",
                    "function": {"name": self.tool, "arguments": orjson.dumps(self.tool_input).decode()},
                }
            ]
        return orjson.dumps(
            {
                "id": "chatcmpl-" + self.msg_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": "tool_calls" if self.tool else "stop"}
                ],
                "usage": self._openai_usage(),
            }
        )

    def openai_chunks(self, include_usage: bool) -> list[bytes]:
        """`data:` events of a streamed chat completion; the first two go out together."""
        base = {
            "id": "chatcmpl-" + self.msg_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _data({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        out = [chunk({"role": "assistant", "content": ""})]
        out.extend(chunk({"content": piece}) for piece in _split(self.text, self.events))
        if self.tool:
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": self.tool_id,
                                "type": "function",
                                "function": {"name": self.tool, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for piece in _split(orjson.dumps(self.tool_input).decode(), self.tool_events):
                out.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        out.append(chunk({}, "tool_calls" if self.tool else "stop"))
        if include_usage:
            out.append(_data({**base, "choices": [], "usage": self._openai_usage()}))
        out.append(b"data: [DONE]\n\n")
        return out
