"""OpenAI `/v1/chat/completions` to an OpenAI-compatible target (body passed through with only
`model` rewritten, the stream relayed byte for byte, errors unmodified), the gateway's own
errors in OpenAI's shape, and `GET /v1/models` read by both SDKs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from conftest import GatewayProcess
from fakes import FakeUpstream, Status, json_response, split_every
from fakes import openai as fo

UPSTREAM_KEY = "sk-vllm-SECRET-321"
TOKEN = "sg-pass-token"
LIMITED = "sg-limited-token"
TPM_LIMITED = "sg-tpm-token"


def passthrough_config(base_url: str) -> dict[str, Any]:
    return {
        "providers": {
            "vllm": {
                "type": "openai",
                "base_url": base_url + "/v1",
                "api_key": UPSTREAM_KEY,
                "flavor": "vllm",
            },
            "keyless": {"type": "openai", "base_url": base_url + "/v1", "flavor": "ollama"},
            # A server that refuses stream_options: it never sends a usage chunk.
            "nousage": {
                "type": "openai",
                "base_url": base_url + "/v1",
                "flavor": "llamacpp",
                "include_usage": False,
            },
        },
        "models": {
            "local-coder": {
                "display_name": "Local coder",
                "aliases": ["qwen-*", "gpt-4o-mini"],
                "targets": [{"provider": "vllm", "model": "Qwen/Qwen3-Coder-30B"}],
            },
            "as-is": {"targets": [{"provider": "keyless"}]},
            "private": {"targets": [{"provider": "vllm", "model": "private-model"}]},
            "no-usage": {"targets": [{"provider": "nousage", "model": "ggml-model"}]},
        },
        "keys": [
            {"name": "dev", "token": TOKEN, "models": ["*"]},
            {"name": "limited", "token": LIMITED, "models": ["local-coder"]},
            {"name": "tpm", "token": TPM_LIMITED, "models": ["*"], "tpm": 100},
        ],
    }


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    g = GatewayProcess(passthrough_config(up.base_url)).start()
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def _fresh(up: FakeUpstream) -> None:
    up.clear()
    up.script(None)


def client(gw: GatewayProcess, token: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0)


def post(gw: GatewayProcess, body: bytes, token: str | None = TOKEN, **headers: str) -> httpx.Response:
    hdrs = {"content-type": "application/json", **headers}
    if token is not None:
        hdrs["authorization"] = f"Bearer {token}"
    return httpx.post(gw.url + "/v1/chat/completions", content=body, headers=hdrs, timeout=30)


USER: list[Any] = [{"role": "user", "content": "hi"}]


# ---- pass-through --------------------------------------------------------------------------------


def test_body_passes_through_with_only_model_rewritten(gw: GatewayProcess, up: FakeUpstream) -> None:
    # Odd spacing, key order, escapes and fields the gateway knows nothing about.
    body = (
        b'{ "messages":[{"role":"user","content":"h\\u00e9llo \\ud83d\\ude00"}],\n  "model" :  "qwen-2.5",'
        b'"logit_bias":{"50256":-100},"chat_template_kwargs":{"enable_thinking":false},"guided_json":{"type":"object"},'
        b'"top_k":20,"min_p":0.05,"repetition_penalty":1.1,"n":2,"future_field_2030":[1,{"x":null}]}'
    )
    up.enqueue(fo.completion_response("ok", model="Qwen/Qwen3-Coder-30B"))
    r = post(gw, body, **{"OpenAI-Organization": "org-x", "x-stainless-lang": "python"})
    assert r.status_code == 200, r.text
    (req,) = up.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.body == body.replace(b'"model" :  "qwen-2.5"', b'"model" :  "Qwen/Qwen3-Coder-30B"')
    assert req.header_all("authorization") == [f"Bearer {UPSTREAM_KEY}"]
    assert TOKEN not in req.head.decode("latin-1")
    assert r.json()["choices"][0]["message"]["content"] == "ok"


def test_model_unchanged_when_the_target_names_none(gw: GatewayProcess, up: FakeUpstream) -> None:
    body = b'{"model":"as-is","messages":[{"role":"user","content":"x"}]}'
    up.enqueue(fo.completion_response("ok"))
    assert post(gw, body).status_code == 200
    assert up.requests[0].body == body
    assert up.requests[0].header("authorization") is None  # the provider has no api_key


def test_whole_response_returned_unmodified(gw: GatewayProcess, up: FakeUpstream) -> None:
    raw = json.dumps(fo.completion_json("answer", reasoning="thought")).encode() + b"\n"
    up.enqueue(json_response(200, raw, {"x-upstream-thing": "kept"}))
    r = post(gw, json.dumps({"model": "local-coder", "messages": USER}).encode())
    assert r.status_code == 200 and r.content == raw


def test_stream_relayed_byte_for_byte(gw: GatewayProcess, up: FakeUpstream) -> None:
    calls = [fo.ToolCall("Bash", {"command": "ls -la ü"}, id="call_1", pieces=7)]
    wire = b"".join(
        fo.sse_stream(
            "Running.",
            reasoning="Think.",
            tool_calls=calls,
            usage={"prompt_tokens": 90, "completion_tokens": 33, "cached_tokens": 64},
        )
    )
    # Upstream writes of 9 bytes: split lines and UTF-8 characters; the client still gets exactly the events.
    up.enqueue([Status(200, fo.SSE_HEADERS), *split_every(wire, 9)])
    mark = len(gw.access_records())
    body = {
        "model": "local-coder",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {TOKEN}"},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = b"".join(r.iter_raw())
    assert got == wire
    assert up.requests[0].json["stream_options"] == {"include_usage": True}
    deadline = time.monotonic() + 5
    while len(gw.access_records()) <= mark and time.monotonic() < deadline:
        time.sleep(0.05)
    rec = gw.access_records()[-1]
    assert rec["endpoint"] == "chat_completions" and rec["target"] == "vllm/Qwen/Qwen3-Coder-30B"
    assert (rec["input_tokens"], rec["output_tokens"], rec["cache_read_tokens"]) == (26, 33, 64)


def last_access_record(gw: GatewayProcess, mark: int) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while len(gw.access_records()) <= mark and time.monotonic() < deadline:
        time.sleep(0.05)
    return gw.access_records()[-1]


def stream_raw(gw: GatewayProcess, body: dict[str, Any] | bytes, token: str = TOKEN) -> bytes:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with httpx.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        content=content,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        return b"".join(r.iter_raw())


def test_stream_without_include_usage_still_counts_real_tokens(gw: GatewayProcess, up: FakeUpstream) -> None:
    usage = {"prompt_tokens": 90, "completion_tokens": 33, "cached_tokens": 64}
    up.enqueue(fo.sse_response("Counted.", reasoning="Hm.", usage=usage, id="chatcmpl-u1"))
    mark = len(gw.access_records())
    body = b'{"model" : "local-coder", "messages":[{"role":"user","content":"hi \\u00e9"}],"stream":true }'
    got = stream_raw(gw, body)
    # The gateway asked for the usage chunk; nothing else in the body changed but the model...
    assert up.requests[0].body == (
        b'{"model" : "Qwen/Qwen3-Coder-30B", "messages":[{"role":"user","content":"hi \\u00e9"}],'
        b'"stream":true ,"stream_options":{"include_usage":true}}'
    )
    # ...and the client got exactly what it asked for: the stream without it.
    assert got == b"".join(fo.sse_stream("Counted.", reasoning="Hm.", include_usage=False, id="chatcmpl-u1"))
    assert b'"usage"' not in got
    rec = last_access_record(gw, mark)
    assert (rec["input_tokens"], rec["output_tokens"], rec["cache_read_tokens"]) == (26, 33, 64)
    assert rec["usage_estimated"] is False


def test_stream_options_of_the_client_are_kept_and_completed(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fo.sse_response("ok", usage={"prompt_tokens": 5, "completion_tokens": 2}))
    raw = b'{"model":"as-is","stream":true,"stream_options":{"include_usage":false,"x":1},"messages":[]}'
    with httpx.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        content=raw,
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    ) as r:
        got = b"".join(r.iter_raw())
    assert up.requests[0].body == raw.replace(b'"include_usage":false', b'"include_usage":true')
    assert b'"usage"' not in got and got.endswith(b"data: [DONE]\n\n")


def test_usage_chunk_reaches_the_sdk_only_when_asked(gw: GatewayProcess, up: FakeUpstream) -> None:
    for asked in (False, True):
        up.enqueue(fo.sse_response("sdk", usage={"prompt_tokens": 7, "completion_tokens": 3}))
        extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if asked else {}
        mark = len(gw.access_records())
        chunks = list(
            client(gw).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True, **extra)
        )
        usage = [c.usage for c in chunks if c.usage is not None]
        assert (len(usage) == 1) is asked and (not usage or usage[0].prompt_tokens == 7)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "sdk"
        rec = last_access_record(gw, mark)
        assert (rec["input_tokens"], rec["output_tokens"]) == (7, 3)


def test_tokens_per_minute_hold_for_streams_without_include_usage(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    # 90 + 33 tokens settle against a limit of 100 per minute: the next request is refused.
    up.enqueue(fo.sse_response("big", usage={"prompt_tokens": 90, "completion_tokens": 33}))
    stream_raw(gw, {"model": "local-coder", "messages": USER, "stream": True}, TPM_LIMITED)
    r = post(gw, json.dumps({"model": "local-coder", "messages": USER}).encode(), token=TPM_LIMITED)
    assert r.status_code == 429, r.text
    assert "tokens per minute" in r.json()["error"]["message"]
    assert len(up.requests) == 1


def test_server_without_usage_is_estimated_and_marked(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fo.sse_response("one two three four", content_pieces=4))
    mark = len(gw.access_records())
    text = "word " * 70  # 350 bytes of text: 100 tokens at 3.5 bytes a token
    got = stream_raw(
        gw, {"model": "no-usage", "stream": True, "messages": [{"role": "user", "content": text}]}
    )
    assert "stream_options" not in up.requests[0].json  # the provider says it refuses the field
    assert got.endswith(b"data: [DONE]\n\n")
    rec = last_access_record(gw, mark)
    assert rec["usage_estimated"] is True
    # Output: one token per chunk with a delta (the role chunk and four pieces of text).
    assert rec["output_tokens"] == 5
    assert 100 <= rec["input_tokens"] <= 120  # the count_tokens estimate of the request


def test_stream_through_the_sdk(gw: GatewayProcess, up: FakeUpstream) -> None:
    calls = [
        fo.ToolCall("Bash", {"command": "ls"}, id="call_a", pieces=5),
        fo.ToolCall("Read", {"file_path": "/x"}, id="call_b", pieces=1),
    ]
    up.enqueue(fo.sse_response("Two calls.", tool_calls=calls))
    tools: Any = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("Bash", "Read")
    ]
    with client(gw).chat.completions.stream(model="gpt-4o-mini", messages=USER, tools=tools) as s:
        final = s.get_final_completion()
    msg = final.choices[0].message
    assert msg.content == "Two calls."
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls or []] == [  # type: ignore[union-attr]
        ("call_a", "Bash", {"command": "ls"}),
        ("call_b", "Read", {"file_path": "/x"}),
    ]


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (
            400,
            fo.error_json("'messages' must contain at least one message", "BadRequestError", None, "400"),
            {},
        ),
        (
            404,
            {
                "object": "error",
                "message": "The model `x` does not exist.",
                "type": "NotFoundError",
                "code": 404,
            },
            {},
        ),
        (429, fo.error_json("Too many requests", "rate_limit_exceeded"), {"retry-after": "4"}),
        (500, b"Internal Server Error", {"content-type": "text/plain"}),
    ],
    ids=["400", "404-vllm", "429", "500-text"],
)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_upstream_errors_unmodified(
    gw: GatewayProcess, up: FakeUpstream, status: int, body: Any, headers: dict[str, str], stream: bool
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    up.enqueue(json_response(status, raw, headers))
    r = post(gw, json.dumps({"model": "local-coder", "messages": USER, "stream": stream}).encode())
    assert r.status_code == status
    assert r.content == raw
    for k, v in headers.items():
        assert r.headers[k] == v


# ---- the gateway's own errors in OpenAI's shape ------------------------------------------------------


def test_gateway_errors_in_openai_shape_through_the_sdk(gw: GatewayProcess, up: FakeUpstream) -> None:
    cases: list[tuple[Any, type[openai.APIStatusError], int, str]] = [
        (
            lambda: client(gw, "sg-wrong").chat.completions.create(model="local-coder", messages=USER),
            openai.AuthenticationError,
            401,
            "invalid API key",
        ),
        (
            lambda: client(gw, LIMITED).chat.completions.create(model="private", messages=USER),
            openai.PermissionDeniedError,
            403,
            "may not use model group 'private'",
        ),
        (
            lambda: client(gw).chat.completions.create(model="no-such-model", messages=USER),
            openai.NotFoundError,
            404,
            "'no-such-model' is not served",
        ),
    ]
    for call, cls, status, words in cases:
        with pytest.raises(cls) as exc:
            call()
        err = exc.value
        assert err.status_code == status
        assert isinstance(err.body, dict) and set(err.body) == {"message", "type", "param", "code"}, err.body
        assert words in err.body["message"]
        assert err.response.headers["content-type"] == "application/json"
    assert up.requests == []


@pytest.mark.parametrize(
    ("body", "token", "status", "etype"),
    [
        (b'{"model":"local-coder","messages":[]}', None, 401, "authentication_error"),
        (b'{"model":"local-coder","messages":', TOKEN, 400, "invalid_request_error"),
        (b'{"messages":[{"role":"user","content":"x"}]}', TOKEN, 400, "invalid_request_error"),
        (b"[1,2]", TOKEN, 400, "invalid_request_error"),
    ],
    ids=["missing-key", "bad-json", "no-model", "not-an-object"],
)
def test_gateway_errors_in_openai_shape_raw(
    gw: GatewayProcess, up: FakeUpstream, body: bytes, token: str | None, status: int, etype: str
) -> None:
    r = post(gw, body, token=token)
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"error"} and set(err["error"]) == {"message", "type", "param", "code"}
    assert err["error"]["type"] == etype and err["error"]["message"]
    assert up.requests == []


def test_other_paths_and_methods_answer_in_openai_shape(gw: GatewayProcess) -> None:
    r = httpx.get(gw.url + "/v1/chat/completions", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 405 and "error" in r.json() and "type" not in r.json()
    r = httpx.post(gw.url + "/v1/completions", json={}, headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}


# ---- GET /v1/models ------------------------------------------------------------------------------


def test_models_list_read_by_the_openai_sdk(gw: GatewayProcess) -> None:
    models = list(client(gw).models.list())
    ids = [m.id for m in models]
    assert set(ids) == {"local-coder", "gpt-4o-mini", "as-is", "private", "no-usage"}
    assert all(m.object == "model" and m.owned_by and isinstance(m.created, int) for m in models)
    limited = [m.id for m in client(gw, LIMITED).models.list()]
    assert set(limited) == {"local-coder", "gpt-4o-mini"}
    one = client(gw).models.list()
    assert one.object == "list"  # type: ignore[attr-defined]


def test_models_list_read_by_the_anthropic_sdk(gw: GatewayProcess) -> None:
    c = anthropic.Anthropic(base_url=gw.url, api_key=TOKEN, max_retries=0)
    page = c.models.list(limit=2)
    assert [m.type for m in page.data] == ["model", "model"]
    assert page.has_more is True and page.first_id == page.data[0].id
    every = [m.id for m in c.models.list(limit=1000)]
    assert set(every) == {"local-coder", "gpt-4o-mini", "as-is", "private", "no-usage"}
    names = {m.id: m.display_name for m in c.models.list()}
    assert names["local-coder"] == "Local coder"


def test_image_to_a_text_only_target_is_refused_in_openai_shape(gw: GatewayProcess, up: FakeUpstream) -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    with pytest.raises(openai.BadRequestError) as exc:
        client(gw).chat.completions.create(
            model="local-coder",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}],
                }
            ],
        )
    assert "image" in exc.value.message and exc.value.type == "invalid_request_error"
    assert up.requests == []
