"""The core gateway against a fake Anthropic upstream, through the official `anthropic` SDK
and raw httpx: pass-through fidelity, streaming, errors, auth, models."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import anthropic
import httpx
import pytest
from conftest import GatewayProcess, anthropic_config
from fakes import Close, FakeUpstream, RefusingPort, Send, StallsBeforeFirstByte, Status
from fakes import anthropic as fa

UPSTREAM_KEY = "sk-upstream-SECRET-123"


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    g = GatewayProcess(anthropic_config(up.base_url)).start()
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def _fresh(up: FakeUpstream) -> None:
    up.clear()
    up.script(None)


def client(gw: GatewayProcess, token: str = "sg-alice-token", **kw: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=token, max_retries=0, **kw)  # type: ignore[arg-type]


def test_plain_message(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fa.message_response("plain answer", usage={"input_tokens": 11, "output_tokens": 3}))
    msg = client(gw).messages.create(
        model="big-coder", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text == "plain answer"  # type: ignore[union-attr]
    (req,) = up.requests
    assert req.json["model"] == "claude-sonnet-4-6"
    assert req.header("x-api-key") == UPSTREAM_KEY
    assert req.header("authorization") is None
    assert req.path == "/v1/messages"


def test_streaming_text_and_usage(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(
        fa.sse_response(
            fa.Text("streamed words arrive", pieces=5),
            usage={"input_tokens": 21, "output_tokens": 7, "cache_read_input_tokens": 5},
        )
    )
    with client(gw).messages.stream(
        model="sonnet", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "streamed words arrive"
    assert final.usage.output_tokens == 7
    time.sleep(0.2)
    rec = [r for r in gw.access_records() if r["model"] == "sonnet"][-1]
    assert rec["input_tokens"] == 21 and rec["output_tokens"] == 7 and rec["cache_read_tokens"] == 5
    assert rec["group"] == "big-coder" and rec["status"] == 200 and rec["stream"] is True


def test_streaming_tool_use_reassembles_exactly(gw: GatewayProcess, up: FakeUpstream) -> None:
    tool_input = {"command": 'ls -la /tmp && echo "ünïcödé ✓"', "nested": {"a": [1, 2.5, None, True]}}
    up.enqueue(fa.sse_response([fa.Text("running", pieces=1), fa.ToolUse("Bash", tool_input, pieces=9)]))
    with client(gw).messages.stream(
        model="big-coder",
        max_tokens=50,
        messages=[{"role": "user", "content": "run it"}],
        tools=[{"name": "Bash", "input_schema": {"type": "object"}}],
    ) as stream:
        final = stream.get_final_message()
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.input == tool_input  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"


def test_thinking_signature_intact(gw: GatewayProcess, up: FakeUpstream) -> None:
    sig = "EqQBCkYIBxgCKkB+/=sig-that-must-not-change=="
    up.enqueue(fa.sse_response([fa.Thinking("let me think", signature=sig, pieces=3), fa.Text("done")]))
    with client(gw).messages.stream(
        model="big-coder",
        max_tokens=2000,
        messages=[{"role": "user", "content": "q"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        final = stream.get_final_message()
    thinking = final.content[0]
    assert thinking.type == "thinking"
    assert thinking.signature == sig  # type: ignore[union-attr]
    assert thinking.thinking == "let me think"  # type: ignore[union-attr]


def test_body_and_headers_forwarded_byte_for_byte(gw: GatewayProcess, up: FakeUpstream) -> None:
    # Field order, spacing, unknown fields and unicode escapes: everything but `model` unchanged.
    body = (
        b'{"max_tokens": 64,  "model":"sonnet","context_management":{"edits":[{"type":"clear_x"}]},'
        b'"output_config":{"effort":"high"},"thinking":{"type":"adaptive"},"future_field_2027":[1,{"z":"\\u00e9"}],'
        b'"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}]}'
    )
    beta = "made-up-flag-2099-01-01,context-management-2025-06-27,  interleaved-thinking-2025-05-14"
    up.enqueue(fa.message_response("ok"))
    r = httpx.post(
        gw.url + "/v1/messages?beta=true",
        content=body,
        headers={
            "x-api-key": "sg-alice-token",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": beta,
            "anthropic-workspace-id": "wrkspc_123",
            "anthropic-future-header": "Keep-Me",
            "content-type": "application/json",
        },
    )
    assert r.status_code == 200, r.text
    (req,) = up.requests
    assert req.body == body.replace(b'"model":"sonnet"', b'"model":"claude-sonnet-4-6"')
    assert req.header("anthropic-beta") == beta
    assert req.header("anthropic-workspace-id") == "wrkspc_123"
    assert req.header("anthropic-future-header") == "Keep-Me"
    assert req.header("anthropic-version") == "2023-06-01"
    assert req.query == {"beta": ["true"]}
    assert req.header("x-api-key") == UPSTREAM_KEY
    assert "sg-alice-token" not in req.head.decode("latin-1")


@pytest.mark.parametrize(
    ("status", "etype", "headers"),
    [
        (400, "invalid_request_error", {}),
        (401, "authentication_error", {}),
        (429, "rate_limit_error", {"retry-after": "17"}),
        (500, "api_error", {}),
        (529, "overloaded_error", {}),
    ],
)
def test_upstream_errors_pass_through_unmodified(
    gw: GatewayProcess, up: FakeUpstream, status: int, etype: str, headers: dict[str, str]
) -> None:
    answer = fa.error_response(status, etype, f"upstream says {etype} ✗", {**headers, "x-upstream": "kept"})
    sent = answer[1].data  # type: ignore[union-attr]
    up.enqueue(answer)
    r = httpx.post(
        gw.url + "/v1/messages",
        json={"model": "big-coder", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": "sg-alice-token", "anthropic-version": "2023-06-01"},
    )
    assert r.status_code == status
    assert r.content == sent  # byte for byte, never re-encoded or wrapped
    assert "✗".encode() in r.content and b"\\u2717" not in r.content
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-upstream"] == "kept" and r.headers["request-id"].startswith("req_")
    for k, v in headers.items():
        assert r.headers[k] == v
    assert len(up.requests) == 1


def test_sdk_sees_upstream_overloaded(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fa.error_response(529, "overloaded_error", "Overloaded"))
    with pytest.raises(anthropic.APIStatusError) as info:
        client(gw).messages.create(
            model="big-coder", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 529


def test_both_auth_headers(gw: GatewayProcess, up: FakeUpstream) -> None:
    for headers in ({"x-api-key": "sg-bob-token"}, {"authorization": "Bearer sg-bob-token"}):
        up.enqueue(fa.message_response("ok"))
        r = httpx.post(
            gw.url + "/v1/messages",
            json={"model": "other", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            headers={**headers, "anthropic-version": "2023-06-01"},
        )
        assert r.status_code == 200, r.text
    assert [req.json["model"] for req in up.requests] == ["claude-opus-4-7", "claude-opus-4-7"]
    # auth_token in the SDK = Authorization: Bearer
    up.enqueue(fa.message_response("ok"))
    sdk = anthropic.Anthropic(base_url=gw.url, auth_token="sg-bob-token", max_retries=0)
    sdk.messages.create(model="other", max_tokens=5, messages=[{"role": "user", "content": "x"}])


def _post(
    gw: GatewayProcess, body: object, token: str | None = "sg-alice-token", **kw: object
) -> httpx.Response:
    headers = {"anthropic-version": "2023-06-01"}
    if token:
        headers["x-api-key"] = token
    if isinstance(body, bytes):
        return httpx.post(gw.url + "/v1/messages", content=body, headers=headers, **kw)  # type: ignore[arg-type]
    return httpx.post(gw.url + "/v1/messages", json=body, headers=headers, **kw)  # type: ignore[arg-type]


MSG = {"model": "big-coder", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}


def _assert_anthropic_error(r: httpx.Response, status: int, etype: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == etype, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


def test_gateway_errors_in_anthropic_shape(gw: GatewayProcess, up: FakeUpstream) -> None:
    _assert_anthropic_error(_post(gw, MSG, token=None), 401, "authentication_error")
    _assert_anthropic_error(_post(gw, MSG, token="sg-wrong"), 401, "authentication_error")
    _assert_anthropic_error(_post(gw, {**MSG, "model": "other"}), 403, "permission_error")
    _assert_anthropic_error(_post(gw, {**MSG, "model": "gpt-4o"}), 404, "not_found_error")
    _assert_anthropic_error(_post(gw, b'{"model": "big-coder", "messages": [}'), 400, "invalid_request_error")
    _assert_anthropic_error(_post(gw, b"[1,2]"), 400, "invalid_request_error")
    _assert_anthropic_error(_post(gw, {"max_tokens": 5, "messages": []}), 400, "invalid_request_error")
    _assert_anthropic_error(_post(gw, {**MSG, "model": 42}), 400, "invalid_request_error")
    r = httpx.get(gw.url + "/v1/nothing-here", headers={"x-api-key": "sg-alice-token"})
    _assert_anthropic_error(r, 404, "not_found_error")
    r = httpx.get(gw.url + "/v1/messages", headers={"x-api-key": "sg-alice-token"})
    _assert_anthropic_error(r, 405, "invalid_request_error")
    assert up.requests == []


def test_body_over_limit_is_413(gw_factory_small: GatewayProcess) -> None:
    big = (
        b'{"model":"big-coder","max_tokens":5,"messages":[{"role":"user","content":"' + b"a" * 5000 + b'"}]}'
    )
    _assert_anthropic_error(_post(gw_factory_small, big), 413, "request_too_large")


@pytest.fixture
def gw_factory_small(up: FakeUpstream, gateway_factory: object) -> GatewayProcess:
    cfg = anthropic_config(up.base_url, server={"max_body_bytes": 4096})
    return gateway_factory(cfg)  # type: ignore[operator,no-any-return]


def test_models_lists_only_the_keys_groups(gw: GatewayProcess) -> None:
    r = httpx.get(
        gw.url + "/v1/models?limit=1000", headers={"x-api-key": "sg-alice-token"}, follow_redirects=False
    )
    assert r.status_code == 200
    body = r.json()
    ids = [m["id"] for m in body["data"]]
    assert sorted(ids) == ["big-coder", "claude-sonnet-4-6", "sonnet"]
    assert all(m["type"] == "model" for m in body["data"])
    assert body["has_more"] is False and body["first_id"] == ids[0] and body["last_id"] == ids[-1]
    assert {m["display_name"] for m in body["data"] if m["id"] == "big-coder"} == {"Big coder"}
    r = httpx.get(gw.url + "/v1/models", headers={"authorization": "Bearer sg-bob-token"})
    assert "other" in [m["id"] for m in r.json()["data"]]
    page = client(gw).models.list(limit=2)
    assert len(page.data) == 2
    r = httpx.get(gw.url + "/v1/models")
    _assert_anthropic_error(r, 401, "authentication_error")


def test_root_health_ready(gw: GatewayProcess) -> None:
    assert httpx.head(gw.url + "/").status_code == 200
    assert httpx.get(gw.url + "/").status_code == 200
    assert httpx.get(gw.url + "/healthz").status_code == 200
    assert httpx.get(gw.url + "/readyz").status_code == 200


def test_count_tokens_forwarded(gw: GatewayProcess, up: FakeUpstream) -> None:
    r = client(gw).messages.count_tokens(model="sonnet", messages=[{"role": "user", "content": "hello"}])
    assert r.input_tokens > 0
    (req,) = up.requests
    assert req.path == "/v1/messages/count_tokens"
    assert req.json["model"] == "claude-sonnet-4-6"


def test_first_event_arrives_before_upstream_pause_ends(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fa.sse_response(fa.Text("a b", pieces=2), pauses={0: 2.0}))
    t0 = time.monotonic()
    first_at = None
    with httpx.stream(
        "POST",
        gw.url + "/v1/messages",
        json={**MSG, "stream": True},
        headers={"x-api-key": "sg-alice-token", "anthropic-version": "2023-06-01"},
        timeout=10,
    ) as r:
        assert r.status_code == 200
        lines = []
        for line in r.iter_lines():
            if first_at is None and line.startswith("event: message_start"):
                first_at = time.monotonic() - t0
            lines.append(line)
        total = time.monotonic() - t0
    assert first_at is not None and first_at < 1.0, first_at
    assert total >= 2.0
    assert "event: message_stop" in lines


def test_client_disconnect_closes_upstream(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fa.sse_response(fa.Text("a b c d", pieces=4), pauses={0: 30.0}))
    with httpx.stream(
        "POST",
        gw.url + "/v1/messages",
        json={**MSG, "stream": True},
        headers={"x-api-key": "sg-alice-token", "anthropic-version": "2023-06-01"},
        timeout=10,
    ) as r:
        next(r.iter_lines())
        closed_at = time.monotonic()
    gone_at = up.wait_for_disconnect(0, timeout=10)
    assert gone_at - closed_at < 2.0
    time.sleep(0.3)
    rec = gw.access_records()[-1]
    assert rec["client_disconnected"] is True


def test_midstream_upstream_failure_becomes_error_event(gw: GatewayProcess, up: FakeUpstream) -> None:
    frames = fa.sse_stream(fa.Text("partial answer", pieces=4))
    up.enqueue([Status(200, fa.SSE_HEADERS), Send(frames[0]), Send(frames[1]), Send(frames[2]), Close()])
    with httpx.stream(
        "POST",
        gw.url + "/v1/messages",
        json={**MSG, "stream": True},
        headers={"x-api-key": "sg-alice-token", "anthropic-version": "2023-06-01"},
        timeout=10,
    ) as r:
        text = r.read().decode()
    assert "event: error" in text
    assert "event: message_stop" not in text
    assert UPSTREAM_KEY not in text


def _stream_raw(gw: GatewayProcess) -> bytes:
    with httpx.stream(
        "POST",
        gw.url + "/v1/messages",
        json={**MSG, "stream": True},
        headers={"x-api-key": "sg-alice-token", "anthropic-version": "2023-06-01"},
        timeout=10,
    ) as r:
        assert r.status_code == 200
        return r.read()


def test_stream_ending_cleanly_without_a_stop_gets_an_error_event(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    """The body ends properly (last chunk) but the message does not: no message_delta, no
    message_stop. The client must not take the half message for a whole one."""
    frames = fa.sse_stream(fa.Text("cut short here", pieces=3))
    assert frames[-2].startswith(b"event: message_delta") and frames[-1].startswith(b"event: message_stop")
    cut = frames[:-2]
    up.enqueue([Status(200, fa.SSE_HEADERS), *[Send(f) for f in cut]])
    raw = _stream_raw(gw)
    assert raw.startswith(b"".join(cut))
    tail = raw[len(b"".join(cut)) :]
    assert tail.startswith(b"event: error\ndata: ") and tail.endswith(b"\n\n")
    err = json.loads(tail.split(b"data: ", 1)[1])
    assert err["type"] == "error" and err["error"]["type"] == "api_error"
    assert "up/claude-sonnet-4-6" in err["error"]["message"]
    assert "ended before the message was complete" in err["error"]["message"]
    time.sleep(0.2)
    assert gw.access_records()[-1]["error"] == "stream_incomplete"

    # Through the SDK: an error, not a final message with half the text.
    up.enqueue([Status(200, fa.SSE_HEADERS), *[Send(f) for f in cut]])
    with (
        pytest.raises(anthropic.APIStatusError, match="ended before the message was complete"),
        client(gw).messages.stream(
            model="big-coder", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as s,
    ):
        s.get_final_message()

    # The stop reason arrived but message_stop did not: still not a complete message.
    no_stop = frames[:-1]
    up.enqueue([Status(200, fa.SSE_HEADERS), *[Send(f) for f in no_stop]])
    raw = _stream_raw(gw)
    assert raw.startswith(b"".join(no_stop))
    assert raw[len(b"".join(no_stop)) :].startswith(b"event: error\ndata: ")
    time.sleep(0.2)
    assert gw.access_records()[-1]["error"] == "stream_incomplete"

    # A complete stream is relayed byte for byte with nothing added.
    up.enqueue([Status(200, fa.SSE_HEADERS), *[Send(f) for f in frames]])
    assert _stream_raw(gw) == b"".join(frames)
    time.sleep(0.2)
    assert gw.access_records()[-1]["error"] is None


def test_sse_split_at_every_byte_still_relayed_whole(gw: GatewayProcess, up: FakeUpstream) -> None:
    frames = b"".join(fa.sse_stream(fa.Text("héllo wörld ✓ split", pieces=6)))
    up.enqueue([Status(200, fa.SSE_HEADERS), *[Send(frames[i : i + 7]) for i in range(0, len(frames), 7)]])
    with client(gw).messages.stream(
        model="big-coder", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    ) as s:
        assert "".join(s.text_stream) == "héllo wörld ✓ split"


def test_unreachable_and_stalled_upstreams(gateway_factory: object) -> None:
    with RefusingPort() as port, StallsBeforeFirstByte(30) as stall:
        cfg = anthropic_config(port.base_url)
        cfg["providers"]["stall"] = {
            "type": "anthropic",
            "base_url": stall.base_url,
            "api_key": "k",
            "timeouts": {"connect_s": 2, "first_byte_s": 0.5, "idle_s": 1},
        }
        cfg["models"]["other"]["targets"] = [{"provider": "stall"}]
        g = gateway_factory(cfg)  # type: ignore[operator]
        r = _post(g, MSG)
        body = _assert_anthropic_error(r, 502, "api_error")
        assert "up/claude-sonnet-4-6" in body["error"]["message"]  # type: ignore[index]
        assert UPSTREAM_KEY not in r.text
        r = _post(g, {**MSG, "model": "other"}, token="sg-bob-token")
        _assert_anthropic_error(r, 504, "api_error")
        logs = g.logs()
        assert UPSTREAM_KEY not in logs and "sg-alice-token" not in logs and "sg-bob-token" not in logs


def test_logs_have_attribution_and_no_secrets_or_prompts(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.enqueue(fa.message_response("ok"))
    r = httpx.post(
        gw.url + "/v1/messages",
        json={**MSG, "messages": [{"role": "user", "content": "TOP-SECRET-PROMPT-TEXT"}]},
        headers={
            "x-api-key": "sg-alice-token",
            "anthropic-version": "2023-06-01",
            "x-claude-code-session-id": "sess-123",
            "x-claude-code-agent-id": "agent-7",
            "x-claude-code-parent-agent-id": "agent-1",
        },
    )
    assert r.status_code == 200
    time.sleep(0.2)
    rec = gw.access_records()[-1]
    assert (
        rec["session_id"] == "sess-123"
        and rec["agent_id"] == "agent-7"
        and rec["parent_agent_id"] == "agent-1"
    )
    assert rec["key"] == "alice" and rec["group"] == "big-coder" and rec["target"] == "up/claude-sonnet-4-6"
    assert rec["request_id"] and r.headers["x-sluicegate-request-id"] == rec["request_id"]
    logs = gw.logs()
    assert "TOP-SECRET-PROMPT-TEXT" not in logs
    assert UPSTREAM_KEY not in logs and "sg-alice-token" not in logs


def test_sighup_reload_during_open_stream(gateway_factory: object, up: FakeUpstream) -> None:
    cfg = anthropic_config(up.base_url)
    g: GatewayProcess = gateway_factory(cfg)  # type: ignore[operator]
    up.enqueue(fa.sse_response(fa.Text("one two three four", pieces=4), pause=0.4))
    result: dict[str, object] = {}
    first_text = threading.Event()

    def run() -> None:
        pieces = []
        with client(g).messages.stream(
            model="big-coder", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as s:
            for piece in s.text_stream:
                pieces.append(piece)
                first_text.set()
        result["text"] = "".join(pieces)
        result["ended_at"] = time.time()

    t = threading.Thread(target=run)
    t.start()
    # The stream is under way: its first text has reached the client.
    assert first_text.wait(10)
    # New config: `big-coder` now sends a different upstream model name.
    cfg["models"]["big-coder"]["targets"][0]["model"] = "claude-opus-4-7"
    g.write_config(cfg)
    import signal

    assert "ended_at" not in result and up.requests[0].response_finished_at is None
    g.signal(signal.SIGHUP)
    assert "ended_at" not in result  # still open when the signal went out
    deadline = time.monotonic() + 10
    while "snapshot reloaded" not in g.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    (reloaded,) = [r for r in g.log_records() if r.get("message") == "snapshot reloaded"]
    t.join(15)
    assert result["text"] == "one two three four"
    # The swap happened while the stream was still running, and it finished on its old snapshot.
    assert reloaded["ts"] < result["ended_at"]  # type: ignore[operator]
    assert up.requests[0].json["model"] == "claude-sonnet-4-6"
    up.enqueue(fa.message_response("ok"))
    client(g).messages.create(model="big-coder", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert up.requests[-1].json["model"] == "claude-opus-4-7"
    # A broken config keeps the running one.
    g.write_config("providers: {up: {type: antropic}}\nmodels: {}\n")
    g.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload failed" not in g.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reload failed" in g.logs()
    up.enqueue(fa.message_response("still ok"))
    msg = client(g).messages.create(
        model="big-coder", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert msg.content[0].text == "still ok"  # type: ignore[union-attr]
    assert json.dumps(up.requests[-1].json).count("claude-opus-4-7") == 1


def test_prompts_logged_only_when_turned_on(gateway_factory: object, up: FakeUpstream) -> None:
    g: GatewayProcess = gateway_factory(anthropic_config(up.base_url, server={"log_prompts": True}))  # type: ignore[operator]
    up.enqueue(fa.message_response("ok"))
    r = _post(g, {**MSG, "messages": [{"role": "user", "content": "OPERATOR-MAY-SEE-THIS"}]})
    assert r.status_code == 200
    time.sleep(0.2)
    rec = g.access_records()[-1]
    assert "OPERATOR-MAY-SEE-THIS" in rec["request_body"]
    assert UPSTREAM_KEY not in g.logs() and "sg-alice-token" not in g.logs()
