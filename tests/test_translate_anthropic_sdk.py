"""Anthropic `/v1/messages` in, OpenAI-compatible upstream out: the official `anthropic` SDK (and
raw httpx where bytes matter) against a real gateway process whose targets are `type: openai`
providers pointing at a scripted fake Chat Completions server.

Each test scripts the upstream, then checks two things: what the client got (through the SDK's
own accumulator, and the raw event order), and exactly what the upstream received.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from conftest import GatewayProcess
from fakes import Close, FakeUpstream, Send, Status, json_response
from fakes import openai as fo

UPSTREAM_KEY = "sk-oa-SECRET-456"
TOKEN = "sg-dev-token"
FLAVORS = ("generic", "vllm", "ollama", "llamacpp", "lmstudio", "sglang")
FAKES = Path(__file__).resolve().parent / "fakes"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
GIF = "R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="


def translate_config(base_url: str) -> dict[str, Any]:
    """One provider per flavor (all at the same fake), a group per flavor (`coder-<flavor>`,
    `coder` is generic), a text-only group and a provider that asks for no usage chunk."""
    providers: dict[str, Any] = {
        f"oa-{f}": {"type": "openai", "base_url": base_url + "/v1", "api_key": UPSTREAM_KEY, "flavor": f}
        for f in FLAVORS
    }
    providers["oa-nousage"] = {
        "type": "openai",
        "base_url": base_url + "/v1",
        "api_key": UPSTREAM_KEY,
        "include_usage": False,
    }
    models: dict[str, Any] = {
        f"coder-{f}": {
            "targets": [{"provider": f"oa-{f}", "model": f"{f}-model", "input_modalities": ["text", "image"]}]
        }
        for f in FLAVORS
    }
    models["coder"] = {
        "display_name": "Coder",
        "aliases": ["claude-sonnet-*", "claude-haiku-*"],
        "targets": [
            {"provider": "oa-generic", "model": "qwen2.5-coder", "input_modalities": ["text", "image"]}
        ],
    }
    models["text-only"] = {"targets": [{"provider": "oa-generic", "model": "text-model"}]}
    models["no-usage"] = {"targets": [{"provider": "oa-nousage", "model": "nousage-model"}]}
    return {
        "providers": providers,
        "models": models,
        "keys": [{"name": "dev", "token": TOKEN, "user": "dev", "models": ["*"]}],
    }


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    g = GatewayProcess(translate_config(up.base_url)).start()
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def _fresh(up: FakeUpstream) -> None:
    up.clear()
    up.script(None)


def client(gw: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=TOKEN, max_retries=0)


# ---- raw event checks ----------------------------------------------------------------------------


def sse_frames(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """(event name, data) of every frame; every Anthropic frame must have an `event:` line."""
    out: list[tuple[str | None, dict[str, Any]]] = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        event, data = None, []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        out.append((event, json.loads("\n".join(data))))
    return out


def check_sequence(frames: list[tuple[str | None, dict[str, Any]]], complete: bool = True) -> None:
    """The Anthropic stream grammar: message_start; per block start, deltas of that block only,
    stop; blocks numbered 0, 1, ...; message_delta once after the last block; message_stop last.
    With complete=False the stream must end in one `error` event and have no message_stop."""
    assert frames, "empty stream"
    for name, data in frames:
        assert name == data.get("type"), (name, data)
    assert frames[0][0] == "message_start"
    open_index: int | None = None
    next_index = 0
    seen_delta = False
    for i, (name, data) in enumerate(frames[1:], 1):
        if name == "content_block_start":
            assert open_index is None and not seen_delta, frames[: i + 1]
            assert data["index"] == next_index
            open_index = next_index
            next_index += 1
        elif name == "content_block_delta":
            assert data["index"] == open_index, (i, data)
        elif name == "content_block_stop":
            assert data["index"] == open_index, (i, data)
            open_index = None
        elif name == "message_delta":
            assert open_index is None and not seen_delta
            seen_delta = True
        elif name == "message_stop":
            assert seen_delta and i == len(frames) - 1
        elif name == "error":
            assert not complete and i == len(frames) - 1, frames
        else:
            assert name == "ping", name
    if complete:
        assert frames[-1][0] == "message_stop"
    else:
        assert frames[-1][0] == "error"
        assert all(n != "message_stop" for n, _ in frames)


def post_raw(gw: GatewayProcess, body: dict[str, Any] | bytes, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    hdrs.update(headers)
    return httpx.post(gw.url + "/v1/messages", content=content, headers=hdrs, timeout=30)


def stream_frames(gw: GatewayProcess, body: dict[str, Any], complete: bool = True) -> list[Any]:
    r = post_raw(gw, {**body, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = sse_frames(r.content)
    check_sequence(frames, complete)
    return frames


def blocks_of(msg: Any) -> list[dict[str, Any]]:
    return [b.model_dump(exclude_none=True) for b in msg.content]


def log_mark(gw: GatewayProcess) -> int:
    """The number of access log lines so far; `records_since` waits for the next ones."""
    return len(gw.access_records())


def records_since(gw: GatewayProcess, mark: int, n: int = 1) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        recs = gw.access_records()[mark:]
        if len(recs) >= n:
            return recs
        assert time.monotonic() < deadline, gw.logs()[-3000:]
        time.sleep(0.05)


USER = [{"role": "user", "content": "hi"}]


# ---- text streams --------------------------------------------------------------------------------


def test_text_stream_through_the_sdk(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(
        fo.sse_response(
            "Hello — streamed ✓ words",
            content_pieces=6,
            usage={"prompt_tokens": 40, "completion_tokens": 9, "cached_tokens": 16},
        )
    )
    with client(gw).messages.stream(
        model="coder",
        max_tokens=100,
        system="Be brief.",
        messages=USER,
        extra_body={"temperature": 0.3, "top_p": 0.9},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello — streamed ✓ words"
    assert final.model == "coder"
    assert final.stop_reason == "end_turn" and final.stop_sequence is None
    assert final.usage.input_tokens == 24 and final.usage.output_tokens == 9
    assert final.usage.cache_read_input_tokens == 16
    (req,) = up.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.header("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert req.header("x-api-key") is None
    assert not [k for k in req.header_names if k.lower().startswith(("anthropic-", "x-stainless"))]
    assert TOKEN not in req.head.decode("latin-1")
    assert req.json == {
        "model": "qwen2.5-coder",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "max_tokens": 100,
        "temperature": 0.3,
        "top_p": 0.9,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_text_stream_event_order(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fo.sse_response("one two three", content_pieces=3))
    frames = stream_frames(gw, {"model": "coder", "max_tokens": 10, "messages": USER})
    names = [n for n, _ in frames]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert frames[1][1]["content_block"] == {"type": "text", "text": ""}
    assert "".join(d["delta"]["text"] for n, d in frames if n == "content_block_delta") == "one two three"
    start = frames[0][1]["message"]
    assert start["role"] == "assistant" and start["model"] == "coder" and start["content"] == []
    assert start["id"].startswith("msg_")


def test_stream_chunks_split_anywhere_on_the_wire(gw: GatewayProcess, up: FakeUpstream) -> None:
    """Upstream writes of 5 bytes (splitting UTF-8 characters and `data:` lines) change nothing."""
    from fakes import split_every

    wire = b"".join(fo.sse_stream("Grüße — ✓ 漢字 done", content_pieces=4))
    up.enqueue([Status(200, fo.SSE_HEADERS), *split_every(wire, 5)])
    with client(gw).messages.stream(model="coder", max_tokens=10, messages=USER) as stream:
        final = stream.get_final_message()
    assert blocks_of(final) == [{"type": "text", "text": "Grüße — ✓ 漢字 done"}]


# ---- streamed tool calls -------------------------------------------------------------------------

BASH_TOOL = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}
READ_TOOL = {
    "name": "Read",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
}
TRICKY_INPUT = {
    "command": 'grep -rn "a\\"b" /tmp/ü && echo \'✓ 漢字\' | tr -d "\\n\\t"',
    "nested": {"list": [1, 2.5, None, True, False, ""], "empty": {}, "brace": "}{]["},
}


def tool_stream(gw: GatewayProcess, **extra: Any) -> Any:
    with client(gw).messages.stream(
        model="coder",
        max_tokens=200,
        messages=[{"role": "user", "content": "do it"}],
        tools=[BASH_TOOL, READ_TOOL],  # type: ignore[list-item]
        **extra,
    ) as stream:
        return stream.get_final_message()


@pytest.mark.parametrize("pieces", [1, 2, 7, 60], ids=lambda n: f"{n}-pieces")
def test_single_tool_call_reassembles_exactly(gw: GatewayProcess, up: FakeUpstream, pieces: int) -> None:
    call = fo.ToolCall("Bash", TRICKY_INPUT, id="call_single_1", pieces=pieces)
    up.enqueue(fo.sse_response("Running it.", tool_calls=[call]))
    final = tool_stream(gw)
    assert blocks_of(final) == [
        {"type": "text", "text": "Running it."},
        {"type": "tool_use", "id": "call_single_1", "name": "Bash", "input": TRICKY_INPUT},
    ]
    assert final.stop_reason == "tool_use"
    (req,) = up.requests
    assert req.json["tools"] == [
        {
            "type": "function",
            "function": {"name": t["name"], "description": t["description"], "parameters": t["input_schema"]},
        }
        for t in (BASH_TOOL, READ_TOOL)
    ]


def test_tool_call_raw_events_carry_the_pieces(gw: GatewayProcess, up: FakeUpstream) -> None:
    call = fo.ToolCall("Bash", {"command": "ls"}, id="call_raw", pieces=4)
    up.enqueue(fo.sse_response(None, tool_calls=[call]))
    frames = stream_frames(gw, {"model": "coder", "max_tokens": 10, "messages": USER, "tools": [BASH_TOOL]})
    start = next(d for n, d in frames if n == "content_block_start")
    assert start["content_block"] == {"type": "tool_use", "id": "call_raw", "name": "Bash", "input": {}}
    parts = [d["delta"]["partial_json"] for n, d in frames if n == "content_block_delta"]
    assert all(d["delta"]["type"] == "input_json_delta" for n, d in frames if n == "content_block_delta")
    assert len(parts) == 4 and "".join(parts) == '{"command": "ls"}'
    delta = next(d for n, d in frames if n == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"


def test_parallel_tool_calls_one_after_another(gw: GatewayProcess, up: FakeUpstream) -> None:
    calls = [
        fo.ToolCall("Bash", {"command": "ls -la"}, id="call_p0", pieces=5),
        fo.ToolCall("Read", {"file_path": "/etc/hosts"}, id="call_p1", pieces=1),
        fo.ToolCall("Bash", TRICKY_INPUT, id="call_p2", pieces=33),
    ]
    up.enqueue(fo.sse_response("Three at once.", tool_calls=calls))
    final = tool_stream(gw)
    assert blocks_of(final) == [
        {"type": "text", "text": "Three at once."},
        {"type": "tool_use", "id": "call_p0", "name": "Bash", "input": {"command": "ls -la"}},
        {"type": "tool_use", "id": "call_p1", "name": "Read", "input": {"file_path": "/etc/hosts"}},
        {"type": "tool_use", "id": "call_p2", "name": "Bash", "input": TRICKY_INPUT},
    ]
    assert final.stop_reason == "tool_use"


def _tc(
    index: int | None, *, id: str | None = None, name: str | None = None, args: Any = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if index is not None:
        entry["index"] = index
    if id is not None:
        entry.update({"id": id, "type": "function"})
    fn: dict[str, Any] = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    entry["function"] = fn
    return entry


def scripted_stream(
    *deltas: dict[str, Any] | list[dict[str, Any]],
    finish: str = "tool_calls",
    usage: dict[str, Any] | None = None,
    **finish_extra: Any,
) -> list[Any]:
    """A stream of the given deltas (a dict is `delta`; a list is `delta.tool_calls`)."""
    cid = fo.new_id()
    chunks = [fo.chunk({"role": "assistant", "content": ""}, id=cid)]
    for d in deltas:
        chunks.append(fo.chunk({"tool_calls": d} if isinstance(d, list) else d, id=cid))
    last = fo.chunk({}, finish, id=cid)
    last["choices"][0].update(finish_extra)
    chunks.append(last)
    chunks.append(
        fo.chunk(
            None,
            id=cid,
            choices=False,
            usage=usage or {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42},
        )
    )
    return [Status(200, fo.SSE_HEADERS), *(Send(fo.data_line(c)) for c in chunks), Send(fo.DONE)]


def test_parallel_tool_calls_interleaved_by_index(gw: GatewayProcess, up: FakeUpstream) -> None:
    """Pieces of two calls alternate (as OpenAI itself may send them): each still reassembles
    exactly, and the Anthropic block order stays valid."""
    a = json.dumps(TRICKY_INPUT)
    b = json.dumps({"file_path": "/srv/app/ü.py"})

    def script() -> list[Any]:
        return scripted_stream(
            {"content": "Both: "},
            [_tc(0, id="call_i0", name="Bash", args="")],
            [_tc(1, id="call_i1", name="Read", args="")],
            [_tc(0, args=a[:10])],
            [_tc(1, args=b[:7])],
            [_tc(0, args=a[10:30]), _tc(1, args=b[7:20])],
            {"content": "and more text"},
            [_tc(1, args=b[20:])],
            [_tc(0, args=a[30:])],
        )

    up.enqueue(script())
    body = {"model": "coder", "max_tokens": 10, "messages": USER, "tools": [BASH_TOOL, READ_TOOL]}
    frames = stream_frames(gw, body)
    assert [d["content_block"]["type"] for n, d in frames if n == "content_block_start"].count(
        "tool_use"
    ) == 2
    up.enqueue(script())
    final = tool_stream(gw)
    blocks = blocks_of(final)
    tools = {b["id"]: b for b in blocks if b["type"] == "tool_use"}
    assert tools == {
        "call_i0": {"type": "tool_use", "id": "call_i0", "name": "Bash", "input": TRICKY_INPUT},
        "call_i1": {
            "type": "tool_use",
            "id": "call_i1",
            "name": "Read",
            "input": {"file_path": "/srv/app/ü.py"},
        },
    }
    assert "".join(b["text"] for b in blocks if b["type"] == "text") == "Both: and more text"
    assert final.stop_reason == "tool_use"


def test_whole_tool_calls_in_one_chunk(gw: GatewayProcess, up: FakeUpstream) -> None:
    """Ollama and llama.cpp (non-incremental parsers) send every call complete in one delta,
    sometimes without `index`, sometimes with arguments as an object."""
    up.enqueue(
        scripted_stream(
            [
                {
                    "id": "call_w0",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": json.dumps(TRICKY_INPUT)},
                },
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "Read", "arguments": {"file_path": "/a"}},
                },
            ],
            finish="stop",  # Ollama ends tool-call turns with "stop"
        )
    )
    final = tool_stream(gw)
    assert blocks_of(final) == [
        {"type": "tool_use", "id": "call_w0", "name": "Bash", "input": TRICKY_INPUT},
        {"type": "tool_use", "id": "call_w1", "name": "Read", "input": {"file_path": "/a"}},
    ]
    assert final.stop_reason == "tool_use"


def test_tool_call_with_empty_arguments(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(scripted_stream([_tc(0, id="call_e", name="Read", args="")]))
    final = tool_stream(gw)
    assert blocks_of(final) == [{"type": "tool_use", "id": "call_e", "name": "Read", "input": {}}]


def test_tool_choice_and_parallel_flag_mapping(gw: GatewayProcess, up: FakeUpstream) -> None:
    cases = [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "Read"}, {"type": "function", "function": {"name": "Read"}}, None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
    ]
    for choice, expected, parallel in cases:
        up.enqueue(fo.completion_response("ok"))
        client(gw).messages.create(
            model="coder",
            max_tokens=10,
            messages=USER,
            tools=[BASH_TOOL, READ_TOOL],  # type: ignore[list-item]
            tool_choice=choice,  # type: ignore[arg-type]
        )
        body = up.requests[-1].json
        assert body["tool_choice"] == expected, choice
        assert body.get("parallel_tool_calls") == parallel


# ---- a full tool-result turn ---------------------------------------------------------------------


def test_tool_result_turn_reaches_the_upstream_exactly(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fo.sse_response("All done."))
    messages: list[Any] = [
        {"role": "user", "content": "list files, then read one"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two tools are needed.", "signature": "c2lnbmF0dXJl"},
                {"type": "text", "text": "I'll run two."},
                {
                    "type": "tool_use",
                    "id": "call_a",
                    "name": "Bash",
                    "input": {"command": "ls", "n": [1, "ü"]},
                },
                {"type": "tool_use", "id": "call_b", "name": "Read", "input": {"file_path": "/nope"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_a",
                    "content": "a.txt\nb.txt",
                    "is_error": False,
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "call_b",
                    "is_error": True,
                    "content": [{"type": "text", "text": "no such file"}],
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "continue please"},
            ],
        },
    ]
    with client(gw).messages.stream(
        model="coder",
        max_tokens=300,
        messages=messages,
        tools=[BASH_TOOL, READ_TOOL],  # type: ignore[list-item]
    ) as stream:
        assert stream.get_final_text() == "All done."
    (req,) = up.requests
    assert req.json["messages"] == [
        {"role": "user", "content": "list files, then read one"},
        {
            "role": "assistant",
            "content": "I'll run two.",
            "reasoning_content": "Two tools are needed.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": '{"command":"ls","n":[1,"ü"]}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "Read", "arguments": '{"file_path":"/nope"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "a.txt\nb.txt"},
        {"role": "tool", "tool_call_id": "call_b", "content": "Error: no such file"},
        {"role": "user", "content": "continue please"},
    ]


def test_tool_ids_from_the_upstream_round_trip(gw: GatewayProcess, up: FakeUpstream) -> None:
    """An upstream id the Anthropic pattern refuses (`[a-zA-Z0-9_-]+`) is mapped for the client,
    and the mapped id goes back on both the call and its result, so they still match."""
    up.enqueue(fo.sse_response(None, tool_calls=[fo.ToolCall("Read", {"file_path": "/x"}, id="call:7/ab.c")]))
    final = tool_stream(gw)
    (block,) = final.content
    assert block.type == "tool_use" and block.id == "call_7_ab_c"
    up.enqueue(fo.sse_response("ok"))
    client(gw).messages.create(
        model="coder",
        max_tokens=10,
        tools=[READ_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},  # type: ignore[list-item]
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "x"}]},
        ],
    )
    sent = up.requests[-1].json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == sent[2]["tool_call_id"] == "call_7_ab_c"


# ---- images --------------------------------------------------------------------------------------


def test_images_base64_and_url(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fo.completion_response("I see two images."))
    msg = client(gw).messages.create(
        model="coder",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                    {"type": "text", "text": "Which is bigger?"},
                ],
            }
        ],
    )
    assert blocks_of(msg) == [{"type": "text", "text": "I see two images."}]
    (req,) = up.requests
    assert req.json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare:"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "Which is bigger?"},
            ],
        }
    ]


def test_image_inside_a_tool_result(gw: GatewayProcess, up: FakeUpstream) -> None:
    """Most servers take images only in user messages: the tool message says so and the image
    follows in a user message right after the tool messages."""
    up.enqueue(fo.completion_response("A red pixel."))
    client(gw).messages.create(
        model="coder",
        max_tokens=50,
        tools=[READ_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "read the screenshot"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_img", "name": "Read", "input": {"file_path": "/s.png"}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_img",
                        "content": [
                            {"type": "text", "text": "screenshot:"},
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                            },
                        ],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_img2",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/2.png"}}
                        ],
                    },
                ],
            },
        ],
    )
    msgs = up.requests[0].json["messages"]
    assert msgs[2:] == [
        {"role": "tool", "tool_call_id": "call_img", "content": "screenshot:"},
        {
            "role": "tool",
            "tool_call_id": "call_img2",
            "content": "(the tool returned images; they follow in the next message)",
        },
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/2.png"}},
            ],
        },
    ]


def test_ollama_gets_no_image_type_it_rejects(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fo.completion_response("ok"))
    client(gw).messages.create(
        model="coder-ollama",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": GIF}},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            }
        ],
    )
    assert up.requests[0].json["messages"][0]["content"] == [
        {"type": "text", "text": "[image omitted: this server does not accept image/gif images]"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]


def test_image_to_a_text_only_target_is_refused_before_the_upstream(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        client(gw).messages.create(
            model="text-only",
            max_tokens=50,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        }
                    ],
                }
            ],
        )
    assert exc.value.status_code == 400
    assert exc.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "image" in exc.value.body["error"]["message"]  # type: ignore[index]
    assert up.requests == []


def test_whole_body_answer_to_a_streaming_request_becomes_events(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    """A server that ignores `stream: true` and sends one JSON body: the client still gets the
    event stream it asked for (Claude Code would otherwise repeat the request unstreamed)."""
    reply = fo.completion_json(
        "Use ls.",
        reasoning="Short thought.",
        tool_calls=[fo.ToolCall("Bash", TRICKY_INPUT, id="call_json")],
        usage={"prompt_tokens": 50, "completion_tokens": 20, "cached_tokens": 10},
    )
    up.enqueue(json_response(200, reply))
    frames = stream_frames(gw, {"model": "coder", "max_tokens": 100, "messages": USER, "tools": [BASH_TOOL]})
    assert [d["content_block"]["type"] for n, d in frames if n == "content_block_start"] == [
        "thinking",
        "text",
        "tool_use",
    ]
    up.enqueue(json_response(200, reply))
    with client(gw).messages.stream(
        model="coder",
        max_tokens=100,
        messages=USER,
        tools=[BASH_TOOL],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_message()
    assert blocks_of(final) == [
        {"type": "thinking", "thinking": "Short thought.", "signature": ""},
        {"type": "text", "text": "Use ls."},
        {"type": "tool_use", "id": "call_json", "name": "Bash", "input": TRICKY_INPUT},
    ]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (
        40,
        20,
        10,
    )
    assert len(up.requests) == 2 and all(r.json["stream"] is True for r in up.requests)


# ---- reasoning and thinking ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "field"),
    [("coder", "reasoning_content"), ("coder-vllm", "reasoning"), ("coder-ollama", "reasoning")],
)
def test_reasoning_deltas_become_a_thinking_block(
    gw: GatewayProcess, up: FakeUpstream, group: str, field: str
) -> None:
    thoughts = ["The user wants ", "a listing; ", "ls will do."]
    up.enqueue(
        scripted_stream(
            *({field: t} for t in thoughts),
            {"content": "Listing now."},
            [_tc(0, id="call_r", name="Bash", args='{"command": "ls"}')],
        )
    )
    body = {"model": group, "max_tokens": 100, "messages": USER, "tools": [BASH_TOOL]}
    frames = stream_frames(gw, body)
    starts = [d["content_block"] for n, d in frames if n == "content_block_start"]
    assert starts[0] == {"type": "thinking", "thinking": "", "signature": ""}
    kinds = [d["delta"]["type"] for n, d in frames if n == "content_block_delta"]
    assert "signature_delta" not in kinds
    up.enqueue(
        scripted_stream(
            *({field: t} for t in thoughts),
            {"content": "Listing now."},
            [_tc(0, id="call_r", name="Bash", args='{"command": "ls"}')],
        )
    )
    with client(gw).messages.stream(
        model=group,
        max_tokens=100,
        messages=USER,
        tools=[BASH_TOOL],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_message()
    assert blocks_of(final) == [
        {"type": "thinking", "thinking": "The user wants a listing; ls will do.", "signature": ""},
        {"type": "text", "text": "Listing now."},
        {"type": "tool_use", "id": "call_r", "name": "Bash", "input": {"command": "ls"}},
    ]


def test_reasoning_in_a_whole_response(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(
        fo.completion_response(
            "Use ls.",
            reasoning="Short thought.",
            tool_calls=[fo.ToolCall("Bash", {"command": "ls"}, id="call_nr")],
            usage={"prompt_tokens": 50, "completion_tokens": 20, "cached_tokens": 10},
        )
    )
    msg = client(gw).messages.create(model="coder", max_tokens=100, messages=USER, tools=[BASH_TOOL])  # type: ignore[list-item]
    assert blocks_of(msg) == [
        {"type": "thinking", "thinking": "Short thought.", "signature": ""},
        {"type": "text", "text": "Use ls."},
        {"type": "tool_use", "id": "call_nr", "name": "Bash", "input": {"command": "ls"}},
    ]
    assert msg.stop_reason == "tool_use" and msg.model == "coder"
    assert (msg.usage.input_tokens, msg.usage.output_tokens, msg.usage.cache_read_input_tokens) == (
        40,
        20,
        10,
    )
    assert up.requests[0].json["stream"] is False and "stream_options" not in up.requests[0].json


ECHO_FIELDS = {
    "generic": ["reasoning_content"],
    "vllm": ["reasoning", "reasoning_content"],
    "ollama": ["reasoning"],
    "llamacpp": ["reasoning_content"],
    "lmstudio": ["reasoning_content"],
    "sglang": ["reasoning_content"],
}


@pytest.mark.parametrize("flavor", FLAVORS)
def test_thinking_from_earlier_turns_goes_back_as_reasoning(
    gw: GatewayProcess, up: FakeUpstream, flavor: str
) -> None:
    up.enqueue(fo.completion_response("ok"))
    client(gw).messages.create(
        model=f"coder-{flavor}",
        max_tokens=100,
        messages=[
            {"role": "user", "content": "q1"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "First thought.", "signature": ""},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                    {"type": "thinking", "thinking": "Second thought.", "signature": "sig-from-anthropic"},
                    {"type": "text", "text": "a1"},
                ],
            },
            {"role": "user", "content": "q2"},
        ],
    )
    assistant = up.requests[0].json["messages"][1]
    expected = {"role": "assistant", "content": "a1"}
    for f in ECHO_FIELDS[flavor]:
        expected[f] = "First thought.\nSecond thought."
    assert assistant == expected


THINKING_SWITCH = {
    # flavor: (adaptive, enabled with budget 8000, disabled)
    "generic": ({}, {"reasoning_effort": "medium"}, {}),
    "vllm": ({"chat_template_kwargs": {"enable_thinking": True}},) * 2
    + ({"chat_template_kwargs": {"enable_thinking": False}},),
    "sglang": ({"chat_template_kwargs": {"enable_thinking": True}},) * 2
    + ({"chat_template_kwargs": {"enable_thinking": False}},),
    "llamacpp": ({"chat_template_kwargs": {"enable_thinking": True}},) * 2
    + ({"chat_template_kwargs": {"enable_thinking": False}},),
    "ollama": ({}, {}, {"reasoning_effort": "none"}),
    "lmstudio": ({}, {}, {}),
}


@pytest.mark.parametrize("flavor", FLAVORS)
def test_thinking_setting_maps_to_the_flavor_switch(
    gw: GatewayProcess, up: FakeUpstream, flavor: str
) -> None:
    settings = [{"type": "adaptive"}, {"type": "enabled", "budget_tokens": 8000}, {"type": "disabled"}]
    for thinking, expected in zip(settings, THINKING_SWITCH[flavor], strict=True):
        up.enqueue(fo.completion_response("ok"))
        client(gw).messages.create(
            model=f"coder-{flavor}",
            max_tokens=16000,
            messages=USER,
            thinking=thinking,  # type: ignore[arg-type]
        )
        body = up.requests[-1].json
        got = {k: body[k] for k in ("chat_template_kwargs", "reasoning_effort") if k in body}
        assert got == expected, (flavor, thinking)
        assert "thinking" not in body


# ---- stop reasons --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finish", "extra", "stop_reason", "stop_sequence"),
    [
        ("stop", {}, "end_turn", None),
        ("length", {}, "max_tokens", None),
        ("stop", {"stop_reason": "END"}, "stop_sequence", "END"),  # vLLM
        ("stop", {"matched_stop": "###"}, "stop_sequence", "###"),  # SGLang
        ("stop", {"stop_reason": 151643}, "end_turn", None),  # vLLM: EOS token id
        ("content_filter", {}, "refusal", None),
        ("tool_calls", {}, "tool_use", None),
    ],
)
def test_stop_reasons_streamed(
    gw: GatewayProcess,
    up: FakeUpstream,
    finish: str,
    extra: dict[str, Any],
    stop_reason: str,
    stop_sequence: str | None,
) -> None:
    deltas: list[Any] = [{"content": "some text"}]
    if finish == "tool_calls":
        deltas.append([_tc(0, id="call_s", name="Bash", args="{}")])
    up.enqueue(scripted_stream(*deltas, finish=finish, **extra))
    with client(gw).messages.stream(
        model="coder",
        max_tokens=5,
        messages=USER,
        stop_sequences=["END", "###"],
        tools=[BASH_TOOL],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == (stop_reason, stop_sequence)
    assert up.requests[0].json["stop"] == ["END", "###"]
    assert up.requests[0].json["max_tokens"] == 5


@pytest.mark.parametrize(
    ("finish", "extra", "stop_reason", "stop_sequence"),
    [
        ("length", {}, "max_tokens", None),
        ("stop", {"stop_reason": "END"}, "stop_sequence", "END"),
        ("stop", {}, "end_turn", None),
    ],
)
def test_stop_reasons_whole(
    gw: GatewayProcess,
    up: FakeUpstream,
    finish: str,
    extra: dict[str, Any],
    stop_reason: str,
    stop_sequence: str | None,
) -> None:
    body = fo.completion_json("text", finish_reason=finish)
    body["choices"][0].update(extra)
    up.enqueue(json_response(200, body))
    msg = client(gw).messages.create(model="coder", max_tokens=5, messages=USER, stop_sequences=["END"])
    assert (msg.stop_reason, msg.stop_sequence) == (stop_reason, stop_sequence)


# ---- usage ---------------------------------------------------------------------------------------


def test_usage_from_the_final_chunk_reaches_the_client_and_the_access_log(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    mark = log_mark(gw)
    up.enqueue(
        fo.sse_response(
            "counted", usage={"prompt_tokens": 1200, "completion_tokens": 345, "cached_tokens": 1000}
        )
    )
    frames = stream_frames(gw, {"model": "claude-sonnet-4-6", "max_tokens": 400, "messages": USER})
    delta = next(d for n, d in frames if n == "message_delta")
    assert delta["usage"] == {"input_tokens": 200, "cache_read_input_tokens": 1000, "output_tokens": 345}
    rec = records_since(gw, mark)[-1]
    assert (rec["group"], rec["target"], rec["upstream_model"]) == (
        "coder",
        "oa-generic/qwen2.5-coder",
        "qwen2.5-coder",
    )
    assert (
        rec["input_tokens"],
        rec["output_tokens"],
        rec["cache_read_tokens"],
        rec["cache_creation_tokens"],
    ) == (
        200,
        345,
        1000,
        0,
    )
    assert rec["status"] == 200 and rec["stream"] is True and rec["error"] is None


def test_usage_of_a_whole_response_in_the_access_log(gw: GatewayProcess, up: FakeUpstream) -> None:
    mark = log_mark(gw)
    up.enqueue(fo.completion_response("counted", usage={"prompt_tokens": 77, "completion_tokens": 5}))
    client(gw).messages.create(model="claude-haiku-4-5-20251001", max_tokens=10, messages=USER)
    rec = records_since(gw, mark)[-1]
    assert (rec["input_tokens"], rec["output_tokens"], rec["stream"]) == (77, 5, False)


def test_provider_without_usage_chunk(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fo.sse_response("no usage here", include_usage=False))
    with client(gw).messages.stream(model="no-usage", max_tokens=10, messages=USER) as stream:
        assert stream.get_final_text() == "no usage here"
    assert "stream_options" not in up.requests[0].json


# ---- backend errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "error_cls", "etype", "message"),
    [
        (
            400,
            fo.error_json(
                "This model's maximum context length is 32768 tokens. However, you requested 40000 tokens.",
                "invalid_request_error",
                "messages",
                "context_length_exceeded",
            ),
            {},
            anthropic.BadRequestError,
            "invalid_request_error",
            "This model's maximum context length is 32768 tokens. However, you requested 40000 tokens.",
        ),
        (
            404,
            fo.error_json('model "qwen9" not found, try pulling it first', "api_error"),
            {},
            anthropic.NotFoundError,
            "not_found_error",
            'model "qwen9" not found, try pulling it first',
        ),
        (
            429,
            fo.error_json("Rate limit reached", "rate_limit_exceeded"),
            {"retry-after": "7"},
            anthropic.RateLimitError,
            "rate_limit_error",
            "Rate limit reached",
        ),
        # vLLM's older shape, Ollama's native shape, a FastAPI detail, a plain-text body.
        (
            400,
            {
                "object": "error",
                "message": "temperature must be >= 0",
                "type": "BadRequestError",
                "code": 400,
            },
            {},
            anthropic.BadRequestError,
            "invalid_request_error",
            "temperature must be >= 0",
        ),
        (
            503,
            {"error": "server busy, please try again"},
            {},
            anthropic.InternalServerError,
            "api_error",
            "server busy, please try again",
        ),
        (
            422,
            {"detail": "Field required: messages"},
            {},
            anthropic.UnprocessableEntityError,
            "invalid_request_error",
            "Field required: messages",
        ),
        (
            500,
            b"upstream exploded (plain text)",
            {"content-type": "text/plain"},
            anthropic.InternalServerError,
            "api_error",
            "upstream exploded (plain text)",
        ),
    ],
    ids=[
        "400-context",
        "404-model",
        "429-retry-after",
        "400-vllm-old",
        "503-ollama",
        "422-detail",
        "500-text",
    ],
)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_backend_errors_before_the_stream(
    gw: GatewayProcess,
    up: FakeUpstream,
    status: int,
    body: Any,
    headers: dict[str, str],
    error_cls: type[anthropic.APIStatusError],
    etype: str,
    message: str,
    stream: bool,
) -> None:
    mark = log_mark(gw)
    up.enqueue(json_response(status, body, headers))
    with pytest.raises(error_cls) as exc:
        if stream:
            with client(gw).messages.stream(model="coder", max_tokens=10, messages=USER) as s:
                s.get_final_message()
        else:
            client(gw).messages.create(model="coder", max_tokens=10, messages=USER)
    err = exc.value
    assert err.status_code == status
    assert err.body == {"type": "error", "error": {"type": etype, "message": message}}
    assert err.response.headers["content-type"] == "application/json"
    if "retry-after" in headers:
        assert err.response.headers["retry-after"] == headers["retry-after"]
    assert len(up.requests) == 1
    rec = records_since(gw, mark)[-1]
    assert rec["status"] == status


def test_error_chunk_during_the_stream_becomes_an_error_event(gw: GatewayProcess, up: FakeUpstream) -> None:
    cid = fo.new_id()
    up.enqueue(
        [
            Status(200, fo.SSE_HEADERS),
            Send(fo.data_line(fo.chunk({"role": "assistant", "content": ""}, id=cid))),
            Send(fo.data_line(fo.chunk({"content": "partial "}, id=cid))),
            Send(
                fo.data_line(
                    {"error": {"message": "CUDA out of memory", "type": "server_error", "code": 500}}
                )
            ),
            Send(fo.DONE),
        ]
    )
    frames = stream_frames(gw, {"model": "coder", "max_tokens": 10, "messages": USER}, complete=False)
    assert frames[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "CUDA out of memory"}}
    assert [n for n, _ in frames].count("message_delta") == 0
    # Through the SDK: the partial text arrives, then the error is raised.
    up.enqueue(
        [
            Status(200, fo.SSE_HEADERS),
            Send(fo.data_line(fo.chunk({"content": "partial "}, id=cid))),
            Send(
                fo.data_line(
                    {"error": {"message": "CUDA out of memory", "type": "server_error", "code": 500}}
                )
            ),
        ]
    )
    got: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as exc,
        client(gw).messages.stream(model="coder", max_tokens=10, messages=USER) as s,
    ):
        got.extend(s.text_stream)
    assert got == ["partial "]
    assert exc.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "CUDA out of memory"},
    }


@pytest.mark.parametrize(
    "ending",
    [
        [Close()],  # the connection drops (no terminating chunk)
        [Close(reset=True)],
        [],  # the body ends cleanly, but with no finish_reason and no [DONE]
    ],
    ids=["fin", "reset", "clean-but-unfinished"],
)
def test_stream_cut_short_is_an_error_event_without_message_stop(
    gw: GatewayProcess, up: FakeUpstream, ending: list[Any]
) -> None:
    mark = log_mark(gw)
    cid = fo.new_id()
    up.enqueue(
        [
            Status(200, fo.SSE_HEADERS),
            Send(fo.data_line(fo.chunk({"role": "assistant", "content": ""}, id=cid))),
            Send(fo.data_line(fo.chunk({"content": "half an ans"}, id=cid))),
            Send(
                fo.data_line(
                    fo.chunk({"tool_calls": [_tc(0, id="call_cut", name="Bash", args='{"comm')]}, id=cid)
                )
            ),
            *ending,
        ]
    )
    frames = stream_frames(
        gw, {"model": "coder", "max_tokens": 10, "messages": USER, "tools": [BASH_TOOL]}, complete=False
    )
    error = frames[-1][1]["error"]
    assert error["type"] == "api_error" and "upstream" in error["message"]
    rec = records_since(gw, mark)[-1]
    assert rec["status"] == 200
    if ending:  # the connection failed: logged as a stream error
        assert rec["error"] is not None


def test_unfinished_stream_is_logged_as_an_error(gw: GatewayProcess, up: FakeUpstream) -> None:
    mark = log_mark(gw)
    up.enqueue([Status(200, fo.SSE_HEADERS), Send(fo.data_line(fo.chunk({"content": "half"})))])
    stream_frames(gw, {"model": "coder", "max_tokens": 10, "messages": USER}, complete=False)
    rec = records_since(gw, mark)[-1]
    assert rec["status"] == 200 and rec["error"] == "stream_error_event"


# ---- Claude Code's own request body --------------------------------------------------------------

ANTHROPIC_ONLY = (
    '"cache_control"',
    '"context_management"',
    '"output_config"',
    '"metadata"',
    '"thinking"',
    '"display"',
    "ephemeral",
    "clear_thinking",
    "adaptive",
    "x-anthropic-billing-header",
)


def captured_headers() -> dict[str, str]:
    meta = json.loads((FAKES / "captured_claude_request.headers.json").read_text())
    skip = {"host", "content-length", "connection", "accept-encoding", "authorization"}
    return {k: v for k, v in meta["headers"] if k.lower() not in skip}


@pytest.mark.parametrize("flavor", FLAVORS)
def test_claude_code_request_accepted_and_anthropic_fields_not_forwarded(
    gw: GatewayProcess, up: FakeUpstream, flavor: str
) -> None:
    raw = (FAKES / "captured_claude_request.json").read_bytes()
    body = raw.replace(b'"model":"some-group"', f'"model":"coder-{flavor}"'.encode())
    up.enqueue(fo.sse_response("router claude ok"))
    r = httpx.post(
        gw.url + "/v1/messages?beta=true",
        content=body,
        headers={**captured_headers(), "Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    frames = sse_frames(r.content)
    check_sequence(frames)
    (req,) = up.requests
    assert req.path == "/v1/chat/completions" and req.query == {}
    sent = req.json
    expected_keys = {"model", "messages", "tools", "max_tokens", "stream", "stream_options"}
    if flavor in ("vllm", "sglang", "llamacpp"):
        expected_keys.add("chat_template_kwargs")
        assert sent["chat_template_kwargs"] == {"enable_thinking": True}
    assert set(sent) == expected_keys
    text = req.body.decode()
    for word in ANTHROPIC_ONLY:
        assert word not in text, word
    original = json.loads(raw)
    assert sent["max_tokens"] == 32000
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"] == "\n\n".join(b["text"] for b in original["system"][1:])
    assert sent["messages"][1] == {"role": "user", "content": "Reply with exactly: router claude ok"}
    assert [t["function"]["name"] for t in sent["tools"]] == ["Bash", "Edit", "Read"]
    assert sent["tools"][0]["function"]["parameters"] == original["tools"][0]["input_schema"]
    # No client header reaches the backend: no anthropic-*, no x-stainless-*, no session id.
    names = {k.lower() for k in req.header_names}
    assert not {n for n in names if n.startswith(("anthropic-", "x-stainless", "x-claude-code", "x-app"))}


def test_claude_code_tool_result_request(gw: GatewayProcess, up: FakeUpstream) -> None:
    raw = (FAKES / "captured_claude_tool_result_request.json").read_bytes()
    body = raw.replace(b'"model":"some-group"', b'"model":"coder"')
    up.enqueue(fo.sse_response("The command printed sluicegate-tool-ok."))
    r = httpx.post(
        gw.url + "/v1/messages?beta=true",
        content=body,
        headers={**captured_headers(), "Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    check_sequence(sse_frames(r.content))
    sent = up.requests[0].json
    assert sent["messages"][1:] == [
        {"role": "user", "content": "Run the marker command."},
        {
            "role": "assistant",
            "content": "Running it.",
            "tool_calls": [
                {
                    "id": "toolu_01SLUICEGATETOOL",
                    "type": "function",
                    "function": {
                        "name": "Bash",
                        "arguments": '{"command":"echo sluicegate-tool-ok",'
                        '"description":"Print the sluicegate marker"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01SLUICEGATETOOL", "content": "sluicegate-tool-ok"},
    ]
    for word in ANTHROPIC_ONLY:
        assert word not in up.requests[0].body.decode(), word


def test_system_message_inside_messages_becomes_user_text(gw: GatewayProcess, up: FakeUpstream) -> None:
    """Claude Code without --bare sends its environment block as a system message after the
    first user message; chat templates disagree on system messages that are not first (some
    refuse the request), so it reaches the backend as user text in <system-reminder> tags."""
    up.enqueue(fo.sse_response("ok"))
    body = {
        "model": "coder-vllm",
        "max_tokens": 20,
        "system": [{"type": "text", "text": "You are a coding agent."}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            },
            {"role": "system", "content": [{"type": "text", "text": "# Environment\n - cwd: /w"}]},
        ],
    }
    frames = stream_frames(gw, body)
    assert frames[-1][0] == "message_stop"
    assert up.requests[0].json["messages"] == [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "hi\n\n<system-reminder>\n# Environment\n - cwd: /w\n</system-reminder>"},
    ]


def test_server_tools_and_unknown_fields_are_dropped(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fo.completion_response("ok"))
    body = {
        "model": "coder-vllm",
        "max_tokens": 20,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "search", "citations": {"enabled": True}}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "server_tool_use",
                        "id": "srvtoolu_1",
                        "name": "web_search",
                        "input": {"query": "x"},
                    },
                    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                    {"type": "text", "text": "found nothing"},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "text", "text": "ok"}, {"type": "future_block_2027", "x": 1}],
            },
        ],
        "tools": [
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "bash_20250124", "name": "bash"},
            {
                "type": "custom",
                "name": "Bash",
                "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral"},
                "defer_loading": True,
                "strict": True,
            },
        ],
        "top_k": 40,
        "service_tier": "auto",
        "container": "cntr_1",
        "mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}],
        "inference_geo": "us",
        "speed": "fast",
        "future_field_2027": {"anything": [1, 2]},
    }
    r = post_raw(gw, body, **{"anthropic-beta": "mcp-client-2025-04-04"})
    assert r.status_code == 200, r.text
    sent = up.requests[0].json
    assert set(sent) == {"model", "messages", "tools", "max_tokens", "top_k", "stream"}
    assert sent["top_k"] == 40  # vLLM takes top_k
    assert sent["tools"] == [
        {"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}
    ]
    assert sent["messages"] == [
        {"role": "user", "content": "search"},
        {"role": "assistant", "content": "found nothing"},
        {"role": "user", "content": "ok"},
    ]


# ---- count_tokens --------------------------------------------------------------------------------


def test_count_tokens_is_answered_locally(gw: GatewayProcess, up: FakeUpstream) -> None:
    mark = log_mark(gw)
    c = client(gw)
    small = c.messages.count_tokens(model="coder", messages=USER)
    raw = json.loads((FAKES / "captured_claude_request.json").read_bytes())
    big = c.messages.count_tokens(
        model="coder", messages=raw["messages"], system=raw["system"], tools=raw["tools"]
    )
    with_image = c.messages.count_tokens(
        model="coder",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            }
        ],
    )
    assert up.requests == []
    assert 1 <= small.input_tokens < 10
    # ~4.2 KB of prompt, tool schemas included: between 4 and 3 bytes a token.
    body_bytes = len(json.dumps([raw["system"], raw["messages"], raw["tools"]]))
    assert body_bytes / 4 < big.input_tokens < body_bytes / 2.5
    assert with_image.input_tokens >= 1600
    rec = records_since(gw, mark)[-1]
    assert rec["endpoint"] == "count_tokens" and rec["status"] == 200
