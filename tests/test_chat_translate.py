"""OpenAI `/v1/chat/completions` in, Anthropic-format upstream out: the official `openai` SDK
against a real gateway process whose target is a `type: anthropic` provider at a scripted fake
Messages API. Each test checks what the client got (through the SDK's own stream accumulator)
and exactly what the upstream received."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from conftest import GatewayProcess
from fakes import Close, FakeUpstream, Send, Status
from fakes import anthropic as fa

UPSTREAM_KEY = "sk-ant-upstream-SECRET-789"
TOKEN = "sg-chat-token"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def chat_config(base_url: str) -> dict[str, Any]:
    return {
        "providers": {"ant": {"type": "anthropic", "base_url": base_url, "api_key": UPSTREAM_KEY}},
        "models": {
            "claude": {
                "aliases": ["gpt-4o", "claude-*"],
                "targets": [{"provider": "ant", "model": "claude-sonnet-4-6"}],
            },
        },
        "keys": [{"name": "ide", "token": TOKEN, "user": "ide-user", "models": ["*"]}],
    }


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    g = GatewayProcess(chat_config(up.base_url)).start()
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def _fresh(up: FakeUpstream) -> None:
    up.clear()
    up.script(None)


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=TOKEN, max_retries=0)


def log_mark(gw: GatewayProcess) -> int:
    return len(gw.access_records())


def records_since(gw: GatewayProcess, mark: int, n: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        recs = gw.access_records()[mark:]
        if len(recs) >= n:
            return recs
        assert time.monotonic() < deadline, gw.logs()[-3000:]
        time.sleep(0.05)


def raw_chunks(gw: GatewayProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every `data:` payload of a streamed answer (`[DONE]` as {"_done": True}); OpenAI streams
    carry no `event:` lines."""
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={**body, "stream": True},
        headers={"authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    out = []
    for frame in r.text.split("\n\n"):
        if not frame.strip():
            continue
        assert frame.startswith("data: ") and "\nevent:" not in frame, frame
        data = frame[len("data: ") :]
        out.append({"_done": True} if data == "[DONE]" else json.loads(data))
    return out


USER: list[Any] = [{"role": "user", "content": "hi"}]
BASH = {
    "type": "function",
    "function": {
        "name": "Bash",
        "description": "Run a shell command",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    },
}
READ = {
    "type": "function",
    "function": {
        "name": "Read",
        "parameters": {"type": "object", "properties": {"file_path": {"type": "string"}}},
    },
}
TRICKY_INPUT = {
    "command": 'grep -rn "a\\"b" /tmp/ü && echo \'✓ 漢字\' | tr -d "\\n\\t"',
    "nested": {"list": [1, 2.5, None, True, False, ""], "empty": {}, "brace": "}{]["},
}


# ---- text streams --------------------------------------------------------------------------------


def test_text_stream_with_usage_chunk(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(
        fa.sse_response(
            fa.Text("Hello — streamed ✓ words", pieces=5),
            usage={
                "input_tokens": 30,
                "output_tokens": 8,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
            },
        )
    )
    mark = log_mark(gw)
    stream = client(gw).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=100,
        temperature=0.5,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello — streamed ✓ words"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (150, 8, 158)
    assert (
        last.usage.prompt_tokens_details is not None and last.usage.prompt_tokens_details.cached_tokens == 100
    )
    assert {c.model for c in chunks} == {"gpt-4o"}
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    (req,) = up.requests
    assert (req.method, req.path) == ("POST", "/v1/messages")
    assert req.header("x-api-key") == UPSTREAM_KEY
    assert req.header("anthropic-version") == "2023-06-01"
    assert req.header("authorization") is None
    assert TOKEN not in req.head.decode("latin-1")
    assert req.json == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "temperature": 0.5,
        "stream": True,
    }
    rec = records_since(gw, mark)[-1]
    assert rec["endpoint"] == "chat_completions" and rec["status"] == 200 and rec["stream"] is True
    assert (
        rec["input_tokens"],
        rec["output_tokens"],
        rec["cache_read_tokens"],
        rec["cache_creation_tokens"],
    ) == (
        30,
        8,
        100,
        20,
    )


def test_stream_helper_accumulates_and_no_usage_chunk_unless_asked(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    up.enqueue(fa.sse_response(fa.Text("accumulated by the SDK", pieces=4)))
    with client(gw).chat.completions.stream(model="claude", messages=USER) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "accumulated by the SDK"
    assert final.choices[0].finish_reason == "stop"
    up.enqueue(fa.sse_response("x"))
    chunks = raw_chunks(gw, {"model": "claude", "messages": USER})
    assert chunks[-1] == {"_done": True}
    assert all("usage" not in c for c in chunks[:-1])
    assert up.requests[-1].json["max_tokens"] == 4096  # Anthropic requires it; OpenAI clients may omit it


# ---- tool calls ----------------------------------------------------------------------------------


@pytest.mark.parametrize("pieces", [1, 3, 50], ids=lambda n: f"{n}-pieces")
def test_streamed_tool_calls_reassemble(gw: GatewayProcess, up: FakeUpstream, pieces: int) -> None:
    up.enqueue(
        fa.sse_response(
            [
                fa.Text("Running both."),
                fa.ToolUse("Bash", TRICKY_INPUT, id="toolu_01A", pieces=pieces),
                fa.ToolUse("Read", {"file_path": "/etc/hosts"}, id="toolu_01B", pieces=pieces),
            ]
        )
    )
    with client(gw).chat.completions.stream(
        model="claude",
        messages=USER,
        tools=[BASH, READ],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Running both."
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name) for c in calls] == [("toolu_01A", "Bash"), ("toolu_01B", "Read")]  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == TRICKY_INPUT  # type: ignore[union-attr]
    assert json.loads(calls[1].function.arguments) == {"file_path": "/etc/hosts"}  # type: ignore[union-attr]
    sent = up.requests[0].json
    assert sent["tools"] == [
        {
            "name": "Bash",
            "description": "Run a shell command",
            "input_schema": BASH["function"]["parameters"],  # type: ignore[index]
        },
        {"name": "Read", "input_schema": READ["function"]["parameters"]},  # type: ignore[index]
    ]


def test_tool_call_chunks_are_indexed_among_tool_calls(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(
        fa.sse_response(
            [
                fa.Thinking("plan", pieces=1),
                fa.Text("x"),
                fa.ToolUse("Bash", {"command": "ls"}, id="toolu_1", pieces=2),
                fa.ToolUse("Read", {"file_path": "/a"}, id="toolu_2", pieces=2),
            ]
        )
    )
    chunks = raw_chunks(gw, {"model": "claude", "messages": USER, "tools": [BASH, READ]})
    calls = [tc for c in chunks[:-1] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    firsts = [tc for tc in calls if "id" in tc]
    assert [(tc["index"], tc["id"], tc["function"]["name"]) for tc in firsts] == [
        (0, "toolu_1", "Bash"),
        (1, "toolu_2", "Read"),
    ]
    for i, expected in enumerate([{"command": "ls"}, {"file_path": "/a"}]):
        args = "".join(tc["function"].get("arguments", "") for tc in calls if tc["index"] == i)
        assert json.loads(args) == expected


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "Read"}}, None, {"type": "tool", "name": "Read"}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice_mapping(
    gw: GatewayProcess, up: FakeUpstream, choice: Any, parallel: Any, expected: Any
) -> None:
    up.enqueue(fa.message_response("ok"))
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    client(gw).chat.completions.create(
        model="claude", messages=USER, tools=[BASH, READ], tool_choice=choice, **extra
    )  # type: ignore[arg-type,list-item]
    assert up.requests[0].json["tool_choice"] == expected


def test_tool_result_turn_reaches_the_upstream_exactly(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fa.sse_response("Done."))
    messages: list[Any] = [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "list, then read"},
        {
            "role": "assistant",
            "content": "Running two.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": '{"command": "ls"}'},
                },
                {"id": "call_b", "type": "function", "function": {"name": "Read", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "a.txt\nb.txt"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "no such file"}]},
        {"role": "user", "content": "go on"},
    ]
    with client(gw).chat.completions.stream(model="claude", messages=messages, tools=[BASH, READ]) as s:  # type: ignore[list-item]
        assert s.get_final_completion().choices[0].message.content == "Done."
    sent = up.requests[0].json
    assert sent["system"] == "You are a coding agent."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "list, then read"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Running two."},
                {"type": "tool_use", "id": "call_a", "name": "Bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "call_b", "name": "Read", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": "a.txt\nb.txt"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_b",
                    "content": [{"type": "text", "text": "no such file"}],
                },
                {"type": "text", "text": "go on"},
            ],
        },
    ]


# ---- images --------------------------------------------------------------------------------------


def test_images_reach_the_upstream_as_image_blocks(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fa.message_response("two images"))
    out = client(gw).chat.completions.create(
        model="claude",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"},
                    },
                ],
            }
        ],
    )
    assert out.choices[0].message.content == "two images"
    assert up.requests[0].json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


# ---- reasoning -----------------------------------------------------------------------------------


def test_thinking_streams_as_reasoning_content(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fa.sse_response([fa.Thinking("Let me think about it.", pieces=3), fa.Text("Answer.")]))
    chunks = list(
        client(gw).chat.completions.create(
            model="claude", messages=USER, stream=True, reasoning_effort="medium", max_completion_tokens=20000
        )
    )
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert (reasoning, content) == ("Let me think about it.", "Answer.")
    sent = up.requests[0].json
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert sent["max_tokens"] == 20000
    assert "temperature" not in sent


def test_thinking_in_a_whole_response(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fa.message_response([fa.Thinking("Hmm."), fa.Text("Yes.")]))
    out = client(gw).chat.completions.create(
        model="claude", messages=USER, reasoning_effort="low", max_tokens=8000
    )
    msg = out.choices[0].message
    assert msg.content == "Yes."
    assert (msg.model_extra or {}).get("reasoning_content") == "Hmm."
    assert up.requests[0].json["thinking"] == {"type": "enabled", "budget_tokens": 2048}


# ---- stop reasons and whole responses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ],
)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_finish_reasons(
    gw: GatewayProcess, up: FakeUpstream, stop_reason: str, finish: str, stream: bool
) -> None:
    if stream:
        up.enqueue(fa.sse_response("text", stop_reason=stop_reason))
        # (the SDK's stream() helper raises on "length" and "content_filter": read the chunks)
        chunks = list(
            client(gw).chat.completions.create(model="claude", messages=USER, stop=["END"], stream=True)
        )
        (got,) = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        up.enqueue(fa.message_response("text", stop_reason=stop_reason))
        got = (
            client(gw)
            .chat.completions.create(model="claude", messages=USER, stop="END")
            .choices[0]
            .finish_reason
        )
    assert got == finish
    assert up.requests[0].json["stop_sequences"] == ["END"]


def test_whole_response_with_tool_calls_and_usage(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(
        fa.message_response(
            [fa.Text("Calling."), fa.ToolUse("Bash", TRICKY_INPUT, id="toolu_w")],
            usage={"input_tokens": 11, "output_tokens": 22, "cache_read_input_tokens": 5},
        )
    )
    out = client(gw).chat.completions.create(model="claude", messages=USER, tools=[BASH])  # type: ignore[list-item]
    assert out.object == "chat.completion" and out.model == "claude"
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Calling."
    (call,) = choice.message.tool_calls or []
    assert call.id == "toolu_w" and json.loads(call.function.arguments) == TRICKY_INPUT  # type: ignore[union-attr]
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (16, 22)
    assert up.requests[0].json["stream"] is False


# ---- backend errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "etype", "message", "error_cls", "headers"),
    [
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            openai.BadRequestError,
            {},
        ),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your rate limit",
            openai.RateLimitError,
            {"retry-after": "9"},
        ),
        (529, "overloaded_error", "Overloaded", openai.InternalServerError, {}),
    ],
)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_backend_errors_before_the_stream(
    gw: GatewayProcess,
    up: FakeUpstream,
    status: int,
    etype: str,
    message: str,
    error_cls: type[openai.APIStatusError],
    headers: dict[str, str],
    stream: bool,
) -> None:
    up.enqueue(fa.error_response(status, etype, message, headers))
    with pytest.raises(error_cls) as exc:
        if stream:
            list(client(gw).chat.completions.create(model="claude", messages=USER, stream=True))
        else:
            client(gw).chat.completions.create(model="claude", messages=USER)
    err = exc.value
    assert err.status_code == status
    assert err.body == {"message": message, "type": etype, "param": None, "code": None}
    for k, v in headers.items():
        assert err.response.headers[k] == v


def test_error_event_during_the_stream(gw: GatewayProcess, up: FakeUpstream) -> None:
    frames = fa.sse_stream(fa.Text("partial answer", pieces=2))
    up.enqueue([Status(200, fa.SSE_HEADERS), *(Send(f) for f in frames[:4]), Send(fa.sse_error_event())])
    got: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        for c in client(gw).chat.completions.create(model="claude", messages=USER, stream=True):
            got.append(c.choices[0].delta.content or "")
    assert "".join(got) == "partial"
    assert exc.value.message == "Overloaded"
    assert exc.value.body == {
        "message": "Overloaded",
        "type": "overloaded_error",
        "param": None,
        "code": None,
    }


def test_stream_cut_short_ends_with_an_error_chunk(gw: GatewayProcess, up: FakeUpstream) -> None:
    frames = fa.sse_stream([fa.Text("half"), fa.ToolUse("Bash", {"command": "ls"}, pieces=4)])
    up.enqueue([Status(200, fa.SSE_HEADERS), *(Send(f) for f in frames[:7]), Close()])
    chunks = raw_chunks(gw, {"model": "claude", "messages": USER, "tools": [BASH]})
    assert "error" in chunks[-1] and {"_done": True} not in chunks
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
