"""The fake upstream servers themselves: what they record, and that the bytes, pauses and
failures a test scripts reach a real client as scripted."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic as anthropic_sdk
import httpx
import openai as openai_sdk
import pytest
from fakes import (
    Close,
    FakeUpstream,
    Hang,
    NeverAccepts,
    NeverAnswers,
    RefusingPort,
    Send,
    Sleep,
    StallsBeforeFirstByte,
    Status,
    anthropic,
    openai,
    split_at,
)


@pytest.fixture
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def sdk_client(up: FakeUpstream) -> anthropic_sdk.Anthropic:
    return anthropic_sdk.Anthropic(base_url=up.base_url, api_key="sk-test", max_retries=0, timeout=10)


def raw_exchange(
    port: int, request: bytes, reads: int = 10, timeout: float = 5.0
) -> list[tuple[float, bytes]]:
    """Send raw bytes, then return each recv() with the time it returned, until EOF or `reads`."""
    out: list[tuple[float, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        while len(out) < reads:
            data = s.recv(65536)
            if not data:
                break
            out.append((time.monotonic(), data))
    return out


# ---- recording --------------------------------------------------------------------------------


def test_records_method_target_headers_in_order_and_body(up: FakeUpstream) -> None:
    body = b'{"model": "m-1", "zeta": 1, "alpha": [1, 2]}'
    request = (
        b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nX-Custom-Case: A\r\n"
        b"anthropic-beta: b2,b1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    raw_exchange(up.port, request)
    (req,) = up.requests
    assert req.method == "POST"
    assert req.target == "/v1/messages?beta=true"
    assert req.path == "/v1/messages"
    assert req.query == {"beta": ["true"]}
    assert req.headers == [
        ("Host", "x"),
        ("X-Custom-Case", "A"),
        ("anthropic-beta", "b2,b1"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    assert req.header("x-custom-case") == "A"
    assert req.body == body
    assert req.json == {"model": "m-1", "zeta": 1, "alpha": [1, 2]}
    assert req.head.startswith(b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\n")


def test_chunked_request_body_and_keep_alive(up: FakeUpstream) -> None:
    with httpx.Client(base_url=up.base_url) as client:
        r1 = client.post("/v1/messages", content=iter([b'{"model":', b'"m"}']))
        r2 = client.post("/v1/messages", json={"model": "m2"})
    assert r1.status_code == r2.status_code == 200
    first, second = up.requests
    assert first.header("transfer-encoding") == "chunked"
    assert first.body == b'{"model":"m"}'
    assert first.connection == second.connection  # the same kept-alive connection
    assert r2.json()["model"] == "m2"


def test_non_json_body_records_none(up: FakeUpstream) -> None:
    httpx.post(up.base_url + "/v1/messages", content=b"{not json")
    assert up.requests[0].json is None
    assert up.requests[0].body == b"{not json"


# ---- default answers --------------------------------------------------------------------------


def test_default_anthropic_answers_plain_and_streaming(up: FakeUpstream) -> None:
    client = sdk_client(up)
    msg = client.messages.create(
        model="my-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.model == "my-model"
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello from fake upstream"
    with client.messages.stream(model="m2", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as s:
        final = s.get_final_message()
    assert final.model == "m2"
    assert "".join(b.text for b in final.content if b.type == "text") == "Hello from fake upstream"
    assert up.requests[1].json["stream"] is True
    client.close()


def test_default_other_endpoints(up: FakeUpstream) -> None:
    with httpx.Client(base_url=up.base_url) as client:
        head = client.head("/")
        assert head.status_code == 200 and head.content == b""
        assert client.get("/").status_code == 200
        assert client.post("/v1/messages/count_tokens", json={"model": "m"}).json() == {"input_tokens": 42}
        assert client.get("/v1/models?limit=1000").json()["data"][0]["type"] == "model"
        missing = client.get("/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "not_found_error"


# ---- Anthropic builders, checked by the official SDK --------------------------------------------


def test_anthropic_stream_tool_use_thinking_and_usage_through_sdk(up: FakeUpstream) -> None:
    tool_input = {
        "command": "echo 'ünïcödé' && ls -la",
        "description": "list",
        "nested": {"a": [1, 2.5, None]},
    }
    blocks = [
        anthropic.Thinking("Let me think about this.", signature="sig-ABC/+=", pieces=3),
        anthropic.Text("Running it.", pieces=4),
        anthropic.ToolUse("Bash", tool_input, id="toolu_01X", pieces=7),
    ]
    usage = {
        "input_tokens": 100,
        "output_tokens": 55,
        "cache_read_input_tokens": 7,
        "cache_creation_input_tokens": 3,
    }
    up.enqueue(anthropic.sse_response(blocks, model="claude-x", usage=usage))
    client = sdk_client(up)
    with client.messages.stream(
        model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "go"}]
    ) as s:
        events = list(s)
        final = s.get_final_message()
    client.close()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "Let me think about this."
    assert final.content[0].signature == "sig-ABC/+="
    assert final.content[2].input == tool_input
    assert final.content[2].id == "toolu_01X"
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 100 and final.usage.output_tokens == 55
    assert final.usage.cache_read_input_tokens == 7
    pieces = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert pieces[0] == "" and len(pieces) == 8
    assert json.loads("".join(pieces)) == tool_input


def test_anthropic_event_order_matches_the_api() -> None:
    names = [
        n
        for n, _ in anthropic.sse_events(
            [anthropic.Text("ab", pieces=2), anthropic.ToolUse("t", {"x": 1}, pieces=2)]
        )
    ]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    frames = anthropic.sse_stream("hi")
    assert frames[0].startswith(b"event: message_start\ndata: {")
    assert frames[2] == b'event: ping\ndata: {"type": "ping"}\n\n'
    assert all(f.endswith(b"\n\n") for f in frames)


def test_anthropic_non_stream_message_and_errors_through_sdk(up: FakeUpstream) -> None:
    up.enqueue(anthropic.message_response([anthropic.ToolUse("Read", {"file_path": "/x"})], model="m"))
    up.enqueue(anthropic.error_response(529, "overloaded_error", "Overloaded"))
    up.enqueue(anthropic.error_response(429, "rate_limit_error", "slow down", {"retry-after": "7"}))
    client = sdk_client(up)
    msg = client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert msg.stop_reason == "tool_use" and msg.content[0].input == {"file_path": "/x"}
    with pytest.raises(anthropic_sdk.APIStatusError) as overloaded:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert overloaded.value.status_code == 529
    assert overloaded.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    with pytest.raises(anthropic_sdk.RateLimitError) as limited:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert limited.value.response.headers["retry-after"] == "7"
    client.close()


def test_status_line_reason_for_529(up: FakeUpstream) -> None:
    up.enqueue(anthropic.error_response(529))
    chunks = raw_exchange(
        up.port, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", reads=1
    )
    assert chunks[0][1].startswith(b"HTTP/1.1 529 Overloaded\r\n")


# ---- OpenAI builders, checked by the official SDK -------------------------------------------------


def test_openai_stream_with_reasoning_tool_calls_and_usage_through_sdk(up: FakeUpstream) -> None:
    calls = [
        openai.ToolCall("get_weather", {"city": "Paris"}, id="call_1", pieces=4),
        openai.ToolCall("noop", "{}", id="call_2"),
    ]
    up.enqueue(
        openai.sse_response(
            "Checking.",
            reasoning="User wants weather.",
            tool_calls=calls,
            usage={"prompt_tokens": 9, "completion_tokens": 4},
        )
    )
    client = openai_sdk.OpenAI(base_url=up.base_url + "/v1", api_key="sk-test", max_retries=0, timeout=10)
    stream = client.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content, reasoning, args, finish, usage = "", "", {0: "", 1: ""}, None, None
    names = {}
    for ch in stream:
        if ch.usage:
            usage = ch.usage
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        content += d.content or ""
        reasoning += (d.model_extra or {}).get("reasoning_content") or ""
        for tc in d.tool_calls or []:
            args[tc.index] += tc.function.arguments or ""
            if tc.function.name:
                names[tc.index] = tc.function.name
        finish = ch.choices[0].finish_reason or finish
    assert content == "Checking."
    assert reasoning == "User wants weather."
    assert names == {0: "get_weather", 1: "noop"}
    assert json.loads(args[0]) == {"city": "Paris"} and args[1] == "{}"
    assert finish == "tool_calls"
    assert usage is not None and usage.prompt_tokens == 9 and usage.total_tokens == 13
    # Like the real servers, the usage chunk only for a request that asks for it.
    for asked in (None, {"include_usage": False}, {"include_usage": True}):
        up.enqueue(openai.sse_response("x", usage={"prompt_tokens": 3, "completion_tokens": 1}))
        extra: dict[str, Any] = {} if asked is None else {"stream_options": asked}
        chunks = list(
            client.chat.completions.create(
                model="qwen", messages=[{"role": "user", "content": "hi"}], stream=True, **extra
            )
        )
        with_usage = [c for c in chunks if c.usage is not None]
        if asked == {"include_usage": True}:
            assert len(with_usage) == 1 and with_usage[0].choices == []
            assert with_usage[0].usage is not None and with_usage[0].usage.prompt_tokens == 3
        else:
            assert with_usage == [] and all(c.choices for c in chunks)
    frames = openai.sse_stream("x")
    assert frames[-1] == b"data: [DONE]\n\n"
    assert json.loads(frames[-2][len(b"data: ") :])["choices"] == []

    up.enqueue(openai.completion_response("plain", tool_calls=[openai.ToolCall("f", {"a": 1})]))
    done = client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.tool_calls[0].function.arguments == '{"a": 1}'
    assert done.choices[0].finish_reason == "tool_calls"

    up.enqueue(
        openai.error_response(
            429, "Rate limit reached", "requests", code="rate_limit_exceeded", headers={"retry-after": "1"}
        )
    )
    with pytest.raises(openai_sdk.RateLimitError) as limited:
        client.chat.completions.create(model="qwen", messages=[{"role": "user", "content": "hi"}])
    assert limited.value.body == {
        "message": "Rate limit reached",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    client.close()


def test_default_openai_answer_on_chat_completions(up: FakeUpstream) -> None:
    r = httpx.post(up.base_url + "/v1/chat/completions", json={"model": "llama", "messages": []})
    assert r.json()["choices"][0]["message"]["content"] == "Hello from fake upstream"
    assert r.json()["model"] == "llama"


# ---- timing and bytes -----------------------------------------------------------------------------


def test_sleep_between_sends_is_observed_by_the_client(up: FakeUpstream) -> None:
    frames = anthropic.sse_stream("hello")
    up.enqueue(
        [Status(200, anthropic.SSE_HEADERS), Send(frames[0]), Sleep(0.6), *(Send(f) for f in frames[1:])]
    )
    arrivals: list[tuple[float, bytes]] = []
    with (
        httpx.Client() as client,
        client.stream("POST", up.base_url + "/v1/messages", json={"stream": True}) as r,
    ):
        start = time.monotonic()
        for piece in r.iter_raw():
            arrivals.append((time.monotonic() - start, piece))
    assert arrivals[0][1] == frames[0]  # the first event, alone, before the pause
    assert arrivals[0][0] < 0.3
    assert arrivals[1][0] >= 0.5
    assert b"".join(p for _, p in arrivals) == b"".join(frames)


def test_split_writes_arrive_split_even_inside_utf8_and_crlf(up: FakeUpstream) -> None:
    payload = "data: é\r\n\r\n".encode()
    cut_in_char = payload.index(b"\xc3") + 1
    cut_in_crlf = payload.index(b"\r\n") + 1
    pieces = split_at(payload, cut_in_char, cut_in_crlf)
    actions: list = [Status(200, [("content-type", "text/event-stream")], framing="close"), Sleep(0.15)]
    for p in pieces:
        actions += [p, Sleep(0.15)]
    up.enqueue(actions)
    got = raw_exchange(up.port, b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    bodies = [data for _, data in got[1:]]  # the first read is the status line and headers
    assert got[0][1].startswith(b"HTTP/1.1 200 OK\r\n") and got[0][1].endswith(b"connection: close\r\n\r\n")
    assert bodies == [p.data for p in pieces]
    assert bodies[0].endswith(b"\xc3") and bodies[1].startswith(b"\xa9")


def test_chunked_framing_one_chunk_per_send(up: FakeUpstream) -> None:
    up.enqueue([Status(200), Send(b"abc"), Sleep(0.1), Send(b"defgh")])
    got = b"".join(
        d for _, d in raw_exchange(up.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    )
    assert got.endswith(b"\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n")
    assert b"transfer-encoding: chunked\r\n" in got


def test_abrupt_close_mid_stream(up: FakeUpstream) -> None:
    frames = anthropic.sse_stream("hello")
    up.enqueue([Status(200, anthropic.SSE_HEADERS), Send(frames[0]), Close()])
    up.enqueue([Status(200, anthropic.SSE_HEADERS), Send(frames[0]), Close(reset=True)])
    for _ in range(2):
        received = b""
        with (
            pytest.raises(httpx.TransportError),
            httpx.Client() as client,
            client.stream("POST", up.base_url + "/v1/messages") as r,
        ):
            for piece in r.iter_raw():
                received += piece
        assert received == frames[0]


def test_stall_before_first_byte_times_out_the_client() -> None:
    with StallsBeforeFirstByte(1.0) as slow:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(slow.base_url + "/v1/messages", json={"model": "m"}, timeout=0.3)
        r = httpx.post(slow.base_url + "/v1/messages", json={"model": "m"}, timeout=3)
        assert r.status_code == 200


def test_never_answers_records_the_request_and_the_client_leaving() -> None:
    with NeverAnswers() as silent:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(silent.base_url + "/v1/messages", json={"model": "m"}, timeout=0.3)
        assert silent.requests[0].json == {"model": "m"}
        gone_at = silent.wait_for_disconnect(0, timeout=5)
        assert gone_at >= silent.requests[0].received_at


def test_disconnect_during_a_pause_is_recorded(up: FakeUpstream) -> None:
    frames = anthropic.sse_stream("hello")
    up.enqueue([Status(200, anthropic.SSE_HEADERS), Send(frames[0]), Hang()])
    with httpx.Client() as client, client.stream("POST", up.base_url + "/v1/messages") as r:
        next(r.iter_raw())
        left = time.monotonic()
    gone_at = up.wait_for_disconnect(timeout=5)
    assert gone_at - left < 0.5


def test_refusing_port_and_never_accepting_port() -> None:
    with RefusingPort() as refusing:
        start = time.monotonic()
        with pytest.raises(httpx.ConnectError):
            httpx.get(refusing.base_url + "/", timeout=5)
        assert time.monotonic() - start < 1
    with NeverAccepts() as deaf, pytest.raises(httpx.TimeoutException):
        httpx.post(deaf.base_url + "/v1/messages", json={}, timeout=0.3)


def test_queue_by_path_then_handler_then_default(up: FakeUpstream) -> None:
    up.script(
        lambda req: anthropic.error_response(500, "api_error", "boom") if req.path == "/v1/messages" else None
    )
    up.enqueue(anthropic.message_response("queued"), path="/v1/messages")
    with httpx.Client(base_url=up.base_url) as client:
        assert client.head("/").status_code == 200  # default: the queued answer waits for its path
        assert client.post("/v1/messages", json={}).json()["content"][0]["text"] == "queued"
        assert client.post("/v1/messages", json={}).status_code == 500  # handler
    assert len(up.wait_for_requests(3)) == 3


def test_a_failing_handler_answers_500_with_the_traceback(up: FakeUpstream) -> None:
    def broken(_req: object) -> None:
        raise RuntimeError("handler bug")

    up.script(broken)  # type: ignore[arg-type]
    r = httpx.post(up.base_url + "/v1/messages", json={}, timeout=5)
    assert r.status_code == 500
    assert "handler bug" in r.json()["error"]["message"]
    assert isinstance(up.errors[0], RuntimeError)


def test_no_body_statuses_are_not_chunked(up: FakeUpstream) -> None:
    up.enqueue([Status(204)])
    with httpx.Client(base_url=up.base_url) as client:
        assert client.delete("/x").status_code == 204
        assert (
            client.post("/v1/messages", json={"model": "m"}).status_code == 200
        )  # same connection still fine
    assert up.requests[0].connection == up.requests[1].connection
