"""The native translators through Python, checked with the official SDKs' own stream accumulators."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter
from sluicegate import _native

EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def sse_frames(out: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    frames: list[tuple[str | None, dict[str, Any]]] = []
    for frame in out.decode().split("\n\n"):
        if not frame:
            continue
        event = None
        data = ""
        for line in frame.split("\n"):
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
        frames.append((event, {"_done": True} if data == "[DONE]" else json.loads(data)))
    return frames


def oa_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {
        "id": "chatcmpl-7",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "q",
        "choices": [choice],
    }
    return json.dumps(body).encode()


def anthropic_message(out: bytes) -> Any:
    """Accumulates translated events exactly as the anthropic SDK's MessageStream does."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event, data in sse_frames(out):
        assert event == data["type"]
        assert event != "error", data
        snapshot = accumulate_event(
            event=data,  # type: ignore[arg-type]
            current_snapshot=snapshot,
            json_bufs=json_bufs,
        )
    return snapshot


def test_openai_stream_with_parallel_tool_calls_reassembles_in_the_anthropic_sdk() -> None:
    t = _native.StreamTranslator(_native.OPENAI_TO_ANTHROPIC, "claude-test", "vllm", True)
    a, b = '{"command": "ls -la \\"x y\\""}', '{"file_path": "/tmp/ü.txt"}'
    events = [
        oa_chunk({"role": "assistant", "reasoning_content": "Two calls."}),
        oa_chunk({"content": "Running both."}),
        oa_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "Bash", "arguments": ""},
                    }
                ]
            }
        ),
        oa_chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "Read", "arguments": ""},
                    }
                ]
            }
        ),
    ]
    for i in range(0, max(len(a), len(b)), 3):
        calls = [
            {"index": k, "function": {"arguments": s[i : i + 3]}} for k, s in ((1, b), (0, a)) if s[i : i + 3]
        ]
        events.append(oa_chunk({"tool_calls": calls}))
    events.append(oa_chunk({}, "tool_calls"))
    usage = {"prompt_tokens": 50, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 32}}
    events.append(json.dumps({"id": "chatcmpl-7", "choices": [], "usage": usage}).encode())
    events.append(b"[DONE]")
    out = b"".join(t.feed_event(None, e) for e in events) + t.finish(True)

    msg = anthropic_message(out)
    assert [c.type for c in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[0].thinking == "Two calls."
    assert msg.content[1].text == "Running both."
    assert (msg.content[2].id, msg.content[2].name, msg.content[2].input) == ("call_a", "Bash", json.loads(a))
    assert (msg.content[3].id, msg.content[3].name, msg.content[3].input) == ("call_b", "Read", json.loads(b))
    assert msg.stop_reason == "tool_use"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (18, 32, 9)
    assert t.usage == (18, 9, 0, 32)
    assert t.stop_reason == "tool_use"
    # Every event is one the SDK's own types accept.
    for _, data in sse_frames(out):
        EVENT.validate_python(data)


def test_openai_stream_cut_short_is_an_error_event() -> None:
    t = _native.StreamTranslator(_native.OPENAI_TO_ANTHROPIC, "claude-test", "ollama", False)
    out = t.feed_event(None, oa_chunk({"content": "Hal"})) + t.finish(False)
    frames = sse_frames(out)
    assert frames[-1][0] == "error"
    assert frames[-1][1]["error"]["type"] == "api_error"
    assert all(e != "message_stop" for e, _ in frames)


def test_anthropic_stream_reassembles_in_the_openai_sdk() -> None:
    t = _native.StreamTranslator(_native.ANTHROPIC_TO_OPENAI, "claude-test", "generic", True)
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "c",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 7, "cache_read_input_tokens": 3, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"file_'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": 'path": "/a"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        },
        {"type": "message_stop"},
    ]
    out = b"".join(t.feed_event(e["type"], json.dumps(e).encode()) for e in events) + t.finish(True)
    frames = sse_frames(out)
    assert frames[-1][1] == {"_done": True}
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    usage = None
    for _, data in frames[:-1]:
        chunk = ChatCompletionChunk.model_validate(data)
        if chunk.usage is not None:
            usage = chunk.usage
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Checking."
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "toolu_1",
        "Read",
        {"file_path": "/a"},
    )
    assert final.choices[0].finish_reason == "tool_calls"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (10, 12, 22)
    assert t.usage == (7, 12, 0, 3)
    assert t.stop_reason == "tool_calls"


def test_anthropic_error_event_becomes_an_openai_error_chunk() -> None:
    t = _native.StreamTranslator(_native.ANTHROPIC_TO_OPENAI, "claude-test", "generic", False)
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    out = t.feed_event("error", json.dumps(err).encode()) + t.finish(True)
    assert sse_frames(out) == [
        (None, {"error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}})
    ]


def test_claude_code_request_to_openai_keeps_only_what_the_server_understands() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Show it", "cache_control": {"type": "ephemeral"}}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Read the file.", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/a.png"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [
                            {"type": "text", "text": "image:"},
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                            },
                        ],
                    },
                ],
            },
        ],
        "tools": [
            {"name": "Read", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
            {"type": "web_search_20250305", "name": "web_search"},
        ],
        "metadata": {"user_id": "u"},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": []},
        "output_config": {"effort": "high"},
    }
    out = json.loads(_native.anthropic_request_to_openai(json.dumps(body).encode(), "qwen3", "sglang", True))
    assert set(out) == {
        "model",
        "messages",
        "tools",
        "max_tokens",
        "stream",
        "stream_options",
        "chat_template_kwargs",
    }
    assert out["model"] == "qwen3"
    assert out["chat_template_kwargs"] == {"enable_thinking": True}
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert out["messages"][2]["reasoning_content"] == "Read the file."
    assert out["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "image:"}
    assert out["messages"][4]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    ]
    assert [t["function"]["name"] for t in out["tools"]] == ["Read"]
    assert "cache_control" not in json.dumps(out)


def test_translation_failures_are_value_errors() -> None:
    with pytest.raises(ValueError, match="messages"):
        _native.anthropic_request_to_openai(b'{"model": "m"}', "m", "vllm", False)
    with pytest.raises(ValueError, match="unknown flavor"):
        _native.anthropic_request_to_openai(b'{"messages": []}', "m", "tgi", False)
    with pytest.raises(ValueError, match="not valid JSON"):
        _native.openai_request_to_anthropic(b"{", "m")
    with pytest.raises(ValueError):
        _native.openai_response_to_anthropic(b'{"error": {"message": "x"}}', "m")
    with pytest.raises(ValueError):
        _native.count_tokens_estimate(b"[]")
    with pytest.raises(ValueError, match="mode"):
        _native.StreamTranslator(0, "m", "generic", False)


def test_whole_bodies_and_errors() -> None:
    body, usage, stop = _native.openai_response_to_anthropic(
        json.dumps(
            {
                "id": "chatcmpl-1",
                "choices": [
                    {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Hi"}}
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2},
            }
        ).encode(),
        "claude-test",
    )
    assert json.loads(body)["content"] == [{"type": "text", "text": "Hi"}]
    assert (usage, stop) == ((5, 2, 0, 0), "max_tokens")

    body, usage, stop = _native.anthropic_response_to_openai(
        json.dumps(
            {
                "id": "msg_1",
                "type": "message",
                "content": [{"type": "text", "text": "Hi"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 4, "output_tokens": 1},
            }
        ).encode(),
        "gpt-test",
    )
    assert json.loads(body)["choices"][0]["message"]["content"] == "Hi"
    assert (usage, stop) == ((4, 1, 0, 0), "stop")

    req = json.loads(
        _native.openai_request_to_anthropic(
            json.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}]}).encode(), "claude-x"
        )
    )
    assert req == {
        "model": "claude-x",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stream": False,
    }

    err = json.loads(
        _native.openai_error_to_anthropic(400, b'{"object":"error","message":"too long","code":400}')
    )
    assert err == {"type": "error", "error": {"type": "invalid_request_error", "message": "too long"}}
    err = json.loads(
        _native.anthropic_error_to_openai(
            429, b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}'
        )
    )
    assert err == {"error": {"message": "slow", "type": "rate_limit_error", "param": None, "code": None}}

    n = _native.count_tokens_estimate(
        json.dumps({"messages": [{"role": "user", "content": "x" * 35}]}).encode()
    )
    assert n == 10 + 4


ANTHROPIC_REQ = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
OPENAI_REQ = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _translate(api: str, patch: dict[str, Any]) -> bytes:
    """A request in `api`'s format ("messages" or "chat") with `patch` applied, translated."""
    if api == "messages":
        return _native.anthropic_request_to_openai(
            json.dumps({**ANTHROPIC_REQ, **patch}).encode(), "up", "vllm", True
        )
    return _native.openai_request_to_anthropic(
        json.dumps({**OPENAI_REQ, **patch}).encode(), "claude-sonnet-4-6"
    )


def _user(*blocks: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": list(blocks)}]}


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    # Scalar fields, as each API types them.
    ("messages", {"max_tokens": []}, "max_tokens: expected an integer of at least 1"),
    ("messages", {"max_tokens": 0}, "max_tokens: expected an integer of at least 1"),
    ("messages", {"max_tokens": 2.5}, "max_tokens: expected an integer of at least 1"),
    ("messages", {"temperature": False}, "temperature: expected a number from 0 to 1"),
    ("messages", {"temperature": 1.5}, "temperature: expected a number from 0 to 1"),
    ("messages", {"top_p": "high"}, "top_p: expected a number from 0 to 1"),
    ("messages", {"top_k": -3}, "top_k: expected an integer of at least 0"),
    ("messages", {"stop_sequences": "END"}, "stop_sequences: expected an array of strings"),
    ("messages", {"stop_sequences": ["END", 7]}, "stop_sequences: expected an array of strings"),
    ("messages", {"stream": {"on": True}}, "stream: expected true or false"),
    ("chat", {"max_tokens": "64"}, "max_tokens: expected an integer of at least 1"),
    ("chat", {"max_completion_tokens": -1}, "max_completion_tokens: expected an integer of at least 1"),
    ("chat", {"temperature": 2.5}, "temperature: expected a number from 0 to 2"),
    ("chat", {"top_p": [1]}, "top_p: expected a number from 0 to 1"),
    ("chat", {"stop": 3}, "stop: expected a string or an array of strings"),
    ("chat", {"stream": "yes"}, "stream: expected true or false"),
    ("chat", {"n": 3}, "n: only one choice per request is supported"),
    ("chat", {"n": "1"}, "n: expected an integer of at least 1"),
    # The parts of a block the translation reads.
    ("messages", _user({"type": "text"}), r"messages\.0\.content\.0\.text: expected a string"),
    ("messages", _user({"type": "text", "text": 5}), r"messages\.0\.content\.0\.text: expected"),
    (
        "messages",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "text"}]},
            ]
        },
        r"messages\.1\.content\.0\.text: expected a string",
    ),
    (
        "messages",
        _user({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]}),
        r"messages\.0\.content\.0\.content\.0\.text: expected a string",
    ),
    (
        "messages",
        _user({"type": "image", "source": 5}),
        r'messages\.0\.content\.0\.source\.type: expected "base64", "url" or "file"',
    ),
    (
        "messages",
        {"system": [{"type": "text", "text": "a"}, {"type": "text"}]},
        r"system\.1\.text: expected a string",
    ),
    ("chat", _user({"type": "text"}), r"messages\.0\.content\.0\.text: expected a string"),
    (
        "chat",
        {"messages": [{"role": "system", "content": [{"type": "text", "text": 1}]}]},
        r"messages\.0\.content\.0\.text: expected",
    ),
    (
        "chat",
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": 5},
            ]
        },
        r"messages\.1\.tool_calls: expected an array",
    ),
]


@pytest.mark.parametrize(("api", "patch", "says"), REFUSED)
def test_a_malformed_field_or_block_is_refused_not_dropped(
    api: str, patch: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        _translate(api, patch)


def test_fields_given_as_null_or_in_range_go_through() -> None:
    a = {
        **ANTHROPIC_REQ,
        "temperature": 1,
        "top_p": None,
        "top_k": 5,
        "stop_sequences": ["END"],
        "stream": None,
    }
    out = json.loads(_native.anthropic_request_to_openai(json.dumps(a).encode(), "up", "vllm", True))
    assert (out["temperature"], out["top_k"], out["stop"], out["stream"]) == (1, 5, ["END"], False)
    assert "top_p" not in out
    o = {**OPENAI_REQ, "temperature": 1.6, "top_p": 0.5, "stop": "END", "n": 1, "max_tokens": None}
    out = json.loads(_native.openai_request_to_anthropic(json.dumps(o).encode(), "claude-sonnet-4-6"))
    # OpenAI's temperature range is 0..2, Anthropic's 0..1: clamped; no max_tokens: the default.
    assert (out["temperature"], out["top_p"], out["stop_sequences"]) == (1.0, 0.5, ["END"])
    assert out["max_tokens"] > 0


def test_a_file_image_is_still_replaced_by_a_note() -> None:
    msgs = [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]
    out = json.loads(
        _native.anthropic_request_to_openai(
            json.dumps({**ANTHROPIC_REQ, "messages": msgs}).encode(), "up", "vllm", True
        )
    )
    assert out["messages"] == [
        {"role": "user", "content": "[image omitted: file references are not supported]"}
    ]
