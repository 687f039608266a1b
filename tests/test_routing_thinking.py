"""Thinking signatures when a conversation moves to another target: fake deployments that sign
their own thinking and refuse anyone else's (tests/fakes/anthropic.py SigningModel), a real
gateway, the anthropic SDK as the client. The conversation must go on, and the retried body
must be exactly the original minus what the new target cannot verify."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import pytest
from conftest import GatewayProcess
from fakes import FakeUpstream, Send, Status
from fakes import anthropic as fa
from sluicegate import thinking

THINK = {"type": "enabled", "budget_tokens": 1024}
CLEAR_THINKING = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
BASH = {"name": "Bash", "description": "run a command", "input_schema": {"type": "object"}}
SIGNATURE_REFUSED = "messages.1.content.0: Invalid `signature` in `thinking` block"


def config(upstreams: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "providers": {
            name: {"type": "anthropic", "base_url": url, "api_key": f"sk-{name}"} for name, url in upstreams
        },
        "models": {"g": {"targets": [{"provider": name, "model": f"model-{name}"} for name, _ in upstreams]}},
        "keys": [{"name": "k", "token": "sg-k"}],
    }


def client(gw: GatewayProcess, session: str | None = None) -> anthropic.Anthropic:
    headers = {"x-claude-code-session-id": session} if session else None
    return anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0, default_headers=headers)


def ask(sdk: anthropic.Anthropic, history: list[dict[str, Any]]) -> Any:
    """One Claude Code-like streamed turn: thinking on, a tool, the clear_thinking context edit."""
    with sdk.messages.stream(
        model="g",
        max_tokens=2048,
        messages=history,  # type: ignore[arg-type]
        thinking=THINK,  # type: ignore[arg-type]
        tools=[BASH],  # type: ignore[list-item]
        extra_body={"context_management": CLEAR_THINKING},
        extra_headers={"anthropic-beta": "context-management-2025-06-27,interleaved-thinking-2025-05-14"},
    ) as s:
        return s.get_final_message()


def assistant(message: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": [b.to_dict() for b in message.content]}


def tool_result(tool_use_id: str, text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "content": text}]}


def signatures(body: dict[str, Any]) -> list[str]:
    return [
        b["signature"]
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "thinking"
    ]


def test_moved_tool_loop_goes_on_and_later_turns_skip_the_refusal(gateway_factory: Any) -> None:
    with FakeUpstream("a") as up_a, FakeUpstream("b") as up_b:
        a = fa.SigningModel("a", reply=[fa.ToolUse("Bash", {"command": "ls"}, id="toolu_1")])
        b = fa.SigningModel("b", reply=[fa.ToolUse("Bash", {"command": "pwd"}, id="toolu_2")])
        up_a.script(a)
        up_b.script(b)
        gw: GatewayProcess = gateway_factory(config([("a", up_a.base_url), ("b", up_b.base_url)]))
        sdk = client(gw, "sess-moved")

        # Turn 1 on a: signed thinking, then a tool call.
        history: list[dict[str, Any]] = [{"role": "user", "content": "list the files"}]
        m1 = ask(sdk, history)
        assert m1.content[0].type == "thinking" and m1.content[0].signature == a.sign(m1.content[0].thinking)
        sig_a = m1.content[0].signature
        history += [assistant(m1), tool_result("toolu_1", "a.txt b.txt")]

        # Turn 2: a is overloaded, b takes the open tool loop and refuses a's signature. The
        # gateway asks b once more without a's thinking; the loop's last assistant turn has no
        # thinking left, so that one answer is written with thinking off.
        a.down = True
        m2 = ask(sdk, history)
        assert [blk.type for blk in m2.content] == ["tool_use"] and m2.content[0].id == "toolu_2"
        assert b.refused == [SIGNATURE_REFUSED]
        assert len(up_a.requests) == 2 and len(up_b.requests) == 2
        refused, retried = up_b.requests[0].json, up_b.requests[1].json
        assert signatures(refused) == [sig_a] and refused["thinking"] == THINK
        assert retried["messages"][1]["content"] == [
            blk for blk in refused["messages"][1]["content"] if blk["type"] != "thinking"
        ]
        assert retried["messages"][1]["content"] == [
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
        ]
        assert retried["messages"][0] == refused["messages"][0]
        assert retried["messages"][2] == refused["messages"][2]
        assert "thinking" not in retried and "context_management" not in retried
        rest = ("messages", "thinking", "context_management")
        assert {k: v for k, v in retried.items() if k not in rest} == {
            k: v for k, v in refused.items() if k not in rest
        }
        assert retried["model"] == "model-b" and retried["tools"] == [BASH]
        assert up_b.requests[1].header("anthropic-beta") == up_b.requests[0].header("anthropic-beta")
        time.sleep(0.2)
        rec = gw.access_records()[-1]
        assert rec["status"] == 200 and rec["target"] == "b/model-b#1" and rec["attempts"] == 3
        (retry_log,) = [
            r for r in gw.log_records() if r.get("message", "").startswith("target refused earlier")
        ]
        assert retry_log["target"] == "b/model-b#1" and retry_log["blocks_removed"] == 1

        # Turn 3, same session: a's block is left out up front (no second refusal), and the
        # loop's last turn (b's, written without thinking) means thinking stays off for now.
        history += [assistant(m2), tool_result("toolu_2", "/tmp")]
        b.reply = [fa.Text("two files in /tmp")]
        m3 = ask(sdk, history)
        assert m3.content[-1].text == "two files in /tmp"
        assert len(up_b.requests) == 3 and len(b.refused) == 1
        sent = up_b.requests[2].json
        assert signatures(sent) == [] and "thinking" not in sent and len(sent["messages"]) == 5

        # Turn 4: the loop is closed; thinking is on again and b signs its own.
        history += [assistant(m3), {"role": "user", "content": "and the sizes?"}]
        m4 = ask(sdk, history)
        assert m4.content[0].type == "thinking" and m4.content[0].signature == b.sign(m4.content[0].thinking)
        sent = up_b.requests[3].json
        assert sent["thinking"] == THINK and sent["context_management"] == CLEAR_THINKING
        assert sig_a not in up_b.requests[3].body.decode()

        # Turn 5: b's own thinking goes back to b untouched; only a's is still left out.
        history += [assistant(m4), {"role": "user", "content": "thanks"}]
        ask(sdk, history)
        sent = up_b.requests[4].json
        assert signatures(sent) == [m4.content[0].signature]
        assert len(up_b.requests) == 5 and len(b.refused) == 1


def test_without_a_session_each_request_is_retried_once_and_keeps_thinking(gateway_factory: Any) -> None:
    """No session id: nothing is remembered, every such request pays one refusal. A closed
    conversation (no tool loop open) keeps thinking on for the retry."""
    with FakeUpstream("b") as up_b:
        a = fa.SigningModel("a")
        b = fa.SigningModel("b", reply="b answers")
        b.redacted = True
        up_b.script(b)
        gw: GatewayProcess = gateway_factory(config([("b", up_b.base_url)]))
        text = "a thought about it"
        body = {
            "model": "g",
            "max_tokens": 2048,
            "thinking": THINK,
            "messages": [
                {"role": "user", "content": "first"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": text, "signature": a.sign(text)},
                        {"type": "redacted_thinking", "data": "RWRhdGEgZnJvbSBh"},
                        {"type": "text", "text": "answer from a"},
                    ],
                },
                {"role": "user", "content": "second"},
            ],
        }
        sdk = client(gw)
        for n in (1, 2):
            msg = sdk.messages.create(**body)  # type: ignore[call-overload]
            assert [blk.type for blk in msg.content] == ["thinking", "redacted_thinking", "text"]
            assert msg.content[2].text == "b answers"
            assert len(up_b.requests) == 2 * n and len(b.refused) == n
        retried = up_b.requests[1].json
        assert retried["thinking"] == THINK
        assert retried["messages"][1] == {
            "role": "assistant",
            "content": [{"type": "text", "text": "answer from a"}],
        }

        # A turn of nothing but thinking disappears; the user turns around it are merged by the API.
        body["messages"][1]["content"] = body["messages"][1]["content"][:2]  # type: ignore[index]
        sdk.messages.create(**body)  # type: ignore[call-overload]
        retried = up_b.requests[-1].json
        assert [m["role"] for m in retried["messages"]] == ["user", "user"]
        assert len(b.refused) == 3 and len(up_b.requests) == 6


def test_retried_once_only_and_other_400s_pass_through(gateway_factory: Any) -> None:
    with FakeUpstream("up") as up:
        gw: GatewayProcess = gateway_factory(config([("up", up.base_url)]))
        body = {
            "model": "g",
            "max_tokens": 5,
            "thinking": THINK,
            "messages": [
                {"role": "user", "content": "first"},
                {
                    "role": "assistant",
                    "content": [{"type": "thinking", "thinking": "t", "signature": "c2ln"}],
                },
                {"role": "user", "content": "second"},
            ],
        }

        def refusal(request_id: str) -> list[Any]:
            raw = (
                b'{"type":"error","error":{"type":"invalid_request_error","message":"'
                + SIGNATURE_REFUSED.encode()
                + b'"},"request_id":"'
                + request_id.encode()
                + b'"}'
            )
            return [
                Status(400, [("content-type", "application/json"), ("content-length", str(len(raw)))]),
                Send(raw),
            ]

        up.enqueue(refusal("req_first"), refusal("req_second"))
        r = httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": "sg-k"}, timeout=10)
        # The retry was refused too: that answer comes back byte for byte, and no third request.
        assert r.status_code == 400 and r.content == refusal("req_second")[1].data
        assert len(up.requests) == 2 and b"signature" not in up.requests[1].body

        # Any other 400 is the caller's and is not retried.
        up.enqueue(fa.error_response(400, "invalid_request_error", "max_tokens: must be at most 64000"))
        r = httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": "sg-k"}, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["message"] == "max_tokens: must be at most 64000"
        assert len(up.requests) == 3
        # A 400 says nothing about the target's health: it still takes the next request.
        r = httpx.post(
            gw.url + "/v1/messages",
            json={"model": "g", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            headers={"x-api-key": "sg-k"},
            timeout=10,
        )
        assert r.status_code == 200 and len(up.requests) == 4


# ---- the body rewrite, in-process ------------------------------------------------------------------


def _loads(raw: bytes) -> Any:
    import orjson

    return orjson.loads(raw)


@pytest.mark.parametrize(
    "message",
    [
        SIGNATURE_REFUSED,
        "messages.23.content.2: Invalid `data` in `redacted_thinking` block",
        "messages.3.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. "
        + fa.FINAL_TURN_NEEDS_THINKING,
    ],
)
def test_retry_worthy_matches_the_apis_wording(message: str) -> None:
    raw = fa.json_response(400, fa.error_json("invalid_request_error", message))[1].data  # type: ignore[union-attr]
    assert thinking.retry_worthy(400, raw)
    assert not thinking.retry_worthy(500, raw)
    other = fa.json_response(400, fa.error_json("invalid_request_error", "max_tokens: too large"))[1].data  # type: ignore[union-attr]
    assert not thinking.retry_worthy(400, other)


def test_without_thinking_keeps_everything_else() -> None:
    body = (
        b'{"model":"m","thinking":{"type":"adaptive"},"stream":true,'
        b'"context_management":{"edits":[{"type":"clear_thinking_20251015"},{"type":"clear_tool_uses_20250919"}]},'
        b'"messages":[{"role":"user","content":"q \\u00e9"},'
        b'{"role":"assistant","content":[{"type":"thinking","thinking":"x","signature":"S1"},'
        b'{"type":"tool_use","id":"t1","name":"Bash","input":{}}]},'
        b'{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}]}'
    )
    out = thinking.without_thinking(body)
    assert out is not None
    req = _loads(out[0])
    assert list(req) == ["model", "stream", "context_management", "messages"]
    assert req["context_management"] == {"edits": [{"type": "clear_tool_uses_20250919"}]}
    assert req["messages"][0]["content"] == "q é"
    assert req["messages"][1]["content"] == [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]
    assert len(out[1]) == 1
    # Only known blocks: S1 is not one, and the loop's turn still starts with thinking.
    assert thinking.without_thinking(body, {b"not-a-digest"}) is None
    assert thinking.without_thinking(body, out[1]) is not None
    # Nothing to take out, no loop open: unchanged.
    assert thinking.without_thinking(b'{"messages":[{"role":"user","content":"q"}]}') is None
    assert thinking.without_thinking(b"not json") is None


def test_remembered_per_session_and_target_with_a_bound() -> None:
    thinking._rejected.clear()
    try:
        assert thinking.rejected_before("s", "t") is None
        thinking.remember("s", "t", {b"d1"})
        thinking.remember("s", "t", {b"d2"})
        thinking.remember(None, "t", {b"d3"})
        assert thinking.rejected_before("s", "t") == {b"d1", b"d2"}
        assert thinking.rejected_before("s", "other") is None and thinking.rejected_before(None, "t") is None
        for i in range(thinking.MAX_SESSIONS):
            thinking.remember(f"s{i}", "t", {b"x"})
        assert len(thinking._rejected) == thinking.MAX_SESSIONS
        assert thinking.rejected_before("s", "t") is None  # the oldest went first
    finally:
        thinking._rejected.clear()
