"""The Rust extension through its Python API: request inspection, heads, and the response relay."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sluicegate import _native


# -- inspect_request / replace_model ---------------------------------------------------------------
def test_inspect_request_facts() -> None:
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "stream": True,
            "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [
                                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
                            ],
                        },
                        {"type": "text", "text": 'not an image: {"type":"image"}'},
                    ],
                }
            ],
        }
    ).encode()
    info = _native.inspect_request(body)
    assert info.model == "claude-sonnet-4-5"
    assert info.model_span is not None
    start, end = info.model_span
    assert body[start:end] == b'"claude-sonnet-4-5"'
    assert info.stream is True
    assert info.has_tools is True
    assert info.image_count == 2


def test_inspect_request_openai_and_escapes() -> None:
    body = (
        b'{"model":"gpt-\\u00e9\\"x","stream":false,"tools":[],"messages":[{"role":"user","content":'
        b'[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]}]}'
    )
    info = _native.inspect_request(body)
    assert info.model == 'gpt-\u00e9"x'
    assert (info.stream, info.has_tools, info.image_count) == (False, False, 1)
    info = _native.inspect_request(b'{"model": 5}')
    assert info.model is None and info.model_span is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"model":"x",}', "invalid JSON at byte 13: expected a string key"),
        (b'{"a":[1,2}', "invalid JSON at byte 9: expected ',' or ']' after an array element"),
        (b'{"a":1} trailing', "invalid JSON at byte 8: unexpected data after the top-level value"),
        (b'{"a":"\\q"}', "invalid JSON at byte 6: invalid escape in string"),
        (b'{"a":-0.5e+}', "invalid JSON at byte 5: invalid number: expected a digit in the exponent"),
        (b"", "invalid JSON at byte 0: the body is empty"),
        (b'[{"model":"x"}]', "request body must be a JSON object"),
        (b'"s"', "request body must be a JSON object"),
    ],
)
def test_inspect_request_errors(body: bytes, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        _native.inspect_request(body)
    assert str(exc.value) == message


def test_inspect_request_matches_json_on_valid_bodies() -> None:
    body = json.dumps(
        {"model": "m", "n": [-0.5e10, 0, 1e-7, True, None], "s": '\u2603\U0001f600\n\t"\\'}
    ).encode()
    assert _native.inspect_request(body).model == "m"
    assert _native.inspect_request(json.dumps(json.loads(body), indent=2).encode()).model == "m"


def test_replace_model_keeps_every_other_byte() -> None:
    body = b'{\n  "model" : "claude-3-5-haiku-20241022",\n  "max_tokens": 8,\n  "messages": []\n}'
    info = _native.inspect_request(body)
    assert info.model_span is not None
    start, end = info.model_span
    out = _native.replace_model(body, info.model_span, 'us.anthropic.claude-haiku "4"\n')
    new_lit = b'"us.anthropic.claude-haiku \\"4\\"\\n"'
    assert out == body[:start] + new_lit + body[end:]
    assert json.loads(out)["model"] == 'us.anthropic.claude-haiku "4"\n'
    with pytest.raises(ValueError):
        _native.replace_model(body, (10, len(body) + 1), "x")


# -- HeadTemplate ------------------------------------------------------------------------------------
def test_head_template_filters_client_headers() -> None:
    tpl = _native.HeadTemplate(
        "POST", "/v1/messages?beta=true", "api.anthropic.com", [("x-api-key", "sk-up"), ("X-Extra", "1")]
    )
    client = [
        ("host", "gateway"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-authorization", "x"),
        ("te", "trailers"),
        ("trailer", "x"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("content-length", "12"),
        ("authorization", "Bearer router-key"),
        ("x-api-key", "router-key"),
        ("accept-encoding", "gzip"),
        ("cookie", "c=1"),
        ("x-extra", "client"),
        ("X-Injected", "a\r\nb: c"),
        ("Anthropic-Version", "2023-06-01"),
        ("anthropic-beta", "interleaved-thinking-2025-05-14"),
        ("content-type", "application/json"),
        ("x-claude-code-session-id", "abc"),
    ]
    head = tpl.render(client, 1234)
    assert head == (
        b"POST /v1/messages?beta=true HTTP/1.1\r\nhost: api.anthropic.com\r\n"
        b"Anthropic-Version: 2023-06-01\r\nanthropic-beta: interleaved-thinking-2025-05-14\r\n"
        b"content-type: application/json\r\nx-claude-code-session-id: abc\r\n"
        b"x-api-key: sk-up\r\nX-Extra: 1\r\ncontent-length: 1234\r\n\r\n"
    )
    only = _native.HeadTemplate("POST", "/v1/chat/completions", "localhost:11434", [], False)
    assert only.render(client, 0) == (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost:11434\r\n"
        b"content-type: application/json\r\ncontent-length: 0\r\n\r\n"
    )
    with pytest.raises(ValueError):
        _native.HeadTemplate("POST", "/", "h", [("x", "a\nb")])


# -- Exchange ------------------------------------------------------------------------------------------
ANTHROPIC_EVENTS: list[tuple[str, dict[str, Any]]] = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 2095,
                    "cache_creation_input_tokens": 1024,
                    "cache_read_input_tokens": 30000,
                    "output_tokens": 1,
                },
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me"}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " check — ✓ 日本"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {}},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"command": "ls'},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ' -la"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def sse_body(events: list[tuple[str, dict[str, Any]]], newline: str = "\n") -> bytes:
    return "".join(
        f"event: {name}{newline}data: {json.dumps(data, ensure_ascii=False)}{newline}{newline}"
        for name, data in events
    ).encode()


def chunked_response(
    body: bytes, chunk: int, content_type: str = "text/event-stream; charset=utf-8"
) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Date: Mon, 01 Jan 2026 00:00:00 GMT\r\n"
        f"Content-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n"
        "Connection: keep-alive\r\n"
        "request-id: req_011CQ\r\n"
        "anthropic-ratelimit-requests-remaining: 49\r\n"
        "cf-cache-status: DYNAMIC\r\n\r\n"
    ).encode()
    parts = [head]
    for i in range(0, len(body), chunk):
        piece = body[i : i + chunk]
        parts.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def relay(response: bytes, piece: int, mode: int = _native.RELAY_ANTHROPIC) -> tuple[bytes, _native.Exchange]:
    ex = _native.Exchange(mode)
    out = []
    for i in range(0, len(response), piece):
        chunk = ex.feed(response[i : i + piece])
        if chunk is not None:
            out.append(chunk)
    return b"".join(out), ex


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_anthropic_stream_byte_by_byte_and_whole(newline: str) -> None:
    body = sse_body(ANTHROPIC_EVENTS, newline)
    response = chunked_response(body, 61)
    whole, ex_whole = relay(response, len(response))
    bytewise, ex_bytes = relay(response, 1)
    assert whole == body
    assert bytewise == body
    for ex in (ex_whole, ex_bytes):
        assert ex.status == 200
        assert ex.head_complete and ex.is_event_stream and ex.done and ex.keep_alive and not ex.truncated
        assert ex.content_type == "text/event-stream"
        assert ex.usage == (2095, 89, 1024, 30000)
        assert ex.stop_reason == "tool_use"
        assert ex.event_count == len(ANTHROPIC_EVENTS)
        assert not ex.error_event
        assert ex.headers == [
            ("Date", "Mon, 01 Jan 2026 00:00:00 GMT"),
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("request-id", "req_011CQ"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("cf-cache-status", "DYNAMIC"),
        ]
        assert ex.take_body() == b""


def test_feed_returns_complete_events_only_and_same_object_when_aligned() -> None:
    body = sse_body(ANTHROPIC_EVENTS[:3])
    ex = _native.Exchange(_native.RELAY_ANTHROPIC)
    assert ex.feed(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n") is None
    assert not ex.head_complete and ex.status == 0
    assert ex.feed(b"\r\n") is None
    assert ex.head_complete and ex.status == 200
    cut = body.index(b"\n\n") + 5
    assert ex.feed(body[:cut]) == body[: cut - 3]
    rest = body[cut:]
    assert ex.feed(rest) == body[cut - 3 :]
    aligned = sse_body(ANTHROPIC_EVENTS[3:5])
    assert ex.feed(aligned) is aligned  # passed through without a copy
    assert ex.feed(b"event: ping\ndata: {}\n") is None
    assert ex.eof() is None  # a held partial event is not emitted
    assert ex.done and not ex.truncated and not ex.keep_alive  # close-delimited


def test_truncated_stream_and_error_event() -> None:
    events = [
        *ANTHROPIC_EVENTS[:3],
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ]
    response = chunked_response(sse_body(events), 4096)
    out, ex = relay(response[:-5], 7)
    assert ex.error_event and not ex.done
    assert ex.eof() is None
    assert ex.truncated and not ex.done and not ex.keep_alive
    assert out == sse_body(events)


def test_openai_stream() -> None:
    chunks = [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
            "usage": None,
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
            "usage": None,
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": None,
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {
                "prompt_tokens": 120,
                "completion_tokens": 9,
                "total_tokens": 129,
                "prompt_tokens_details": {"cached_tokens": 100},
            },
        },
    ]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    response = chunked_response(body, 50)
    for piece in (1, 9, len(response)):
        out, ex = relay(response, piece, _native.RELAY_OPENAI)
        assert out == body
        assert ex.usage == (20, 9, 0, 100)
        assert ex.stop_reason == "stop"
        assert ex.event_count == 5
        assert not ex.error_event


def test_json_body_interim_head_and_content_length() -> None:
    message = json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "hello"}],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 3,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 7,
            },
        }
    ).encode()
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(message)
    ) + message
    out, ex = relay(response, 3)
    assert out == b""
    assert ex.done and ex.keep_alive and not ex.is_event_stream
    assert ex.content_type == "application/json"
    assert ex.headers == [("content-type", "application/json")]
    assert ex.take_body() == message
    assert ex.usage == (10, 3, 0, 7)
    assert ex.stop_reason == "end_turn"


def test_error_status_body_untouched() -> None:
    err = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    response = (
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ncontent-length: %d\r\n\r\n" % len(err) + err
    )
    out, ex = relay(response, 10)
    assert out == b"" and ex.status == 429 and ex.done
    assert ex.headers == [("retry-after", "3")]
    assert ex.take_body() == err


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 OK\r\n\r\n",
        b"FTP 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nnothex\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"x-big: " + b"a" * 70000 + b"\r\n\r\n",
    ],
)
def test_invalid_responses_raise(response: bytes) -> None:
    ex = _native.Exchange(_native.RELAY_ANTHROPIC)
    with pytest.raises(ValueError):
        ex.feed(response)


def test_modes() -> None:
    assert (
        _native.RELAY_ANTHROPIC,
        _native.RELAY_OPENAI,
        _native.OPENAI_TO_ANTHROPIC,
        _native.ANTHROPIC_TO_OPENAI,
    ) == (0, 1, 2, 3)
    with pytest.raises(ValueError):
        _native.Exchange(9)
    with pytest.raises(ValueError):
        _native.Exchange(_native.OPENAI_TO_ANTHROPIC, {"no_such_option": 1})
    with pytest.raises(ValueError):
        _native.Exchange(_native.OPENAI_TO_ANTHROPIC, {"flavor": "no-such-server"})


def parse_sse(data: bytes) -> list[tuple[str | None, str]]:
    events = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        name = None
        lines = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                lines.append(line[6:])
        events.append((name, "\n".join(lines)))
    return events


def test_openai_upstream_translated_for_anthropic_client() -> None:
    chunks = [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "qwen3",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {
                "prompt_tokens": 100,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 60},
            },
        },
    ]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    response = chunked_response(body, 40)
    options = {"model": "claude-local", "flavor": "vllm", "include_usage": True}
    outputs = []
    for piece in (1, 17, len(response)):
        ex = _native.Exchange(_native.OPENAI_TO_ANTHROPIC, options)
        out = b"".join(c for i in range(0, len(response), piece) if (c := ex.feed(response[i : i + piece])))
        assert ex.done and not ex.truncated
        assert ex.usage == (40, 5, 0, 60)
        assert ex.stop_reason == "end_turn"
        assert ex.event_count == 5
        outputs.append(out)
    assert outputs[0] == outputs[1] == outputs[2]
    events = parse_sse(outputs[0])
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert json.loads(events[0][1])["message"]["model"] == "claude-local"
    assert json.loads(events[2][1])["delta"] == {"type": "text_delta", "text": "Hello"}


def test_translated_stream_cut_short_ends_with_error_event() -> None:
    body = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
    ex = _native.Exchange(_native.OPENAI_TO_ANTHROPIC, {"model": "m"})
    first = ex.feed(chunked_response(body, 1000)[:-5])
    assert first is not None and b"message_start" in first
    tail = ex.eof()
    assert ex.truncated and tail is not None
    assert parse_sse(tail)[-1][0] == "error"
