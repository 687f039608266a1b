"""The real Claude Code CLI through the gateway to a fake OpenAI-compatible upstream
(`type: openai`): the gateway translates every request to Chat Completions and every streamed
answer back to Anthropic events.

The CLI silently falls back to a second, non-streaming request when a stream is broken (see
docs/claude-code-cli-notes.md), so every test asserts exactly which requests the upstream saw,
all of them streaming, not only what the CLI printed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from claude_cli import (
    PRINT_PROMPT,
    PRINT_REPLY,
    TOOL_FINAL,
    TOOL_MARKER,
    ClaudeBinaryMissing,
    claude_binary,
    print_args,
    run_claude,
    tool_args,
)
from conftest import GatewayProcess
from fakes import Action, FakeUpstream, Request, Send, Status
from fakes import openai as fo

TOKEN = "sg-cli-openai-token"
UPSTREAM_KEY = "sk-local-SECRET-000"
CALL_ID = "call_cli_bash_1"


@pytest.fixture(scope="module", autouse=True)
def _binary() -> None:
    try:
        claude_binary()
    except ClaudeBinaryMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    cfg = {
        "providers": {
            flavor: {
                "type": "openai",
                "base_url": up.base_url + "/v1",
                "api_key": UPSTREAM_KEY,
                "flavor": flavor,
            }
            for flavor in ("vllm", "ollama", "generic")
        },
        "models": {
            f"local-{flavor}": {"targets": [{"provider": flavor, "model": f"{flavor}-coder"}]}
            for flavor in ("vllm", "ollama", "generic")
        },
        "keys": [{"name": "cli", "token": TOKEN, "models": ["*"]}],
    }
    g = GatewayProcess(cfg).start()
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def _fresh(up: FakeUpstream) -> None:
    up.clear()
    up.script(None)


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages", []) if m.get("role") == "tool"]


def openai_handler(command: str, reasoning: str | None = None, field: str = "reasoning_content") -> Any:
    """A Chat Completions upstream: a request without tool results gets a Bash tool call (after
    `reasoning` when given, as `field` deltas), its arguments split in many pieces; one carrying
    a tool result gets TOOL_FINAL."""

    def handle(req: Request) -> list[Action] | None:
        if req.path != "/v1/chat/completions":
            return None
        body = req.json if isinstance(req.json, dict) else {}
        if not body.get("stream"):
            # The CLI's non-streaming fallback: answer it, so a test sees it and fails on the count.
            return fo.completion_response("fallback")
        if tool_messages(body):
            return fo.sse_response(TOOL_FINAL, content_pieces=4)
        call = fo.ToolCall(
            "Bash", {"command": command, "description": "Print the sluicegate marker"}, id=CALL_ID, pieces=17
        )
        chunks = fo.chunks("Running it.", tool_calls=[call])
        if reasoning:
            cid = chunks[0]["id"]
            thoughts = [fo.chunk({field: p}, id=cid) for p in fo.pieces_of(reasoning, 3)]
            chunks[1:1] = thoughts
        frames = [fo.data_line(c) for c in chunks] + [fo.DONE]
        return [Status(200, fo.SSE_HEADERS), *(Send(f) for f in frames)]

    return handle


def assert_streaming_only(up: FakeUpstream, n: int) -> list[Request]:
    reqs = list(up.requests)
    assert len(reqs) == n, [(r.path, (r.json or {}).get("stream")) for r in reqs]
    for r in reqs:
        assert (r.method, r.path) == ("POST", "/v1/chat/completions")
        assert r.json["stream"] is True
        assert r.json["stream_options"] == {"include_usage": True}
        assert r.header("authorization") == f"Bearer {UPSTREAM_KEY}"
        for word in (
            '"cache_control"',
            '"context_management"',
            '"output_config"',
            '"metadata"',
            "billing-header",
        ):
            assert word not in r.body.decode(), word
    return reqs


def test_print_reply(gw: GatewayProcess, up: FakeUpstream, tmp_path: Path) -> None:
    up.script(lambda req: fo.sse_response(PRINT_REPLY, content_pieces=5) if req.json.get("stream") else None)
    done = run_claude(gw.url, TOKEN, print_args("local-vllm"), str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == PRINT_REPLY
    (req,) = assert_streaming_only(up, 1)
    assert req.json["model"] == "vllm-coder"
    assert req.json["messages"][-1] == {"role": "user", "content": PRINT_PROMPT}
    assert req.json["chat_template_kwargs"] == {"enable_thinking": True}


@pytest.mark.parametrize("flavor", ["vllm", "ollama", "generic"])
def test_bash_tool_round_trip(gw: GatewayProcess, up: FakeUpstream, tmp_path: Path, flavor: str) -> None:
    command = f"echo {TOOL_MARKER} > tool-ran.txt && cat tool-ran.txt"
    up.script(openai_handler(command))
    done = run_claude(gw.url, TOKEN, tool_args(f"local-{flavor}"), str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == TOOL_FINAL
    assert (tmp_path / "tool-ran.txt").read_text().strip() == TOOL_MARKER
    first, second = assert_streaming_only(up, 2)
    assert "Bash" in [t["function"]["name"] for t in first.json["tools"]]
    assert not tool_messages(first.json)
    assistant = second.json["messages"][-2]
    assert assistant["role"] == "assistant" and assistant["content"] == "Running it."
    (call,) = assistant["tool_calls"]
    assert call["id"] == CALL_ID and call["function"]["name"] == "Bash"
    assert json.loads(call["function"]["arguments"]) == {
        "command": command,
        "description": "Print the sluicegate marker",
    }
    assert tool_messages(second.json) == [{"role": "tool", "tool_call_id": CALL_ID, "content": TOOL_MARKER}]
    recs = [r for r in gw.access_records() if r.get("model") == f"local-{flavor}"][-2:]
    assert [r["status"] for r in recs] == [200, 200] and all(r["stream"] for r in recs)
    assert recs[0]["session_id"] and recs[0]["session_id"] == recs[1]["session_id"]


@pytest.mark.parametrize(("flavor", "field"), [("vllm", "reasoning"), ("generic", "reasoning_content")])
def test_reasoning_becomes_thinking_and_goes_back_as_reasoning(
    gw: GatewayProcess, up: FakeUpstream, tmp_path: Path, flavor: str, field: str
) -> None:
    up.script(
        openai_handler(f"echo {TOOL_MARKER}", reasoning="I should run the marker command.", field=field)
    )
    done = run_claude(gw.url, TOKEN, tool_args(f"local-{flavor}"), str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == TOOL_FINAL
    _, second = assert_streaming_only(up, 2)
    assistant = second.json["messages"][-2]
    assert assistant["tool_calls"][0]["id"] == CALL_ID
    expected_fields = ["reasoning", "reasoning_content"] if flavor == "vllm" else ["reasoning_content"]
    for f in expected_fields:
        assert assistant.get(f) == "I should run the marker command.", assistant


def test_print_reply_without_bare(gw: GatewayProcess, up: FakeUpstream, tmp_path: Path) -> None:
    """The full CLI (12 tools, a deferred-tool placeholder, system reminders in the first user
    message, ~48 KB) is accepted by the translation as well."""
    up.script(lambda req: fo.sse_response(PRINT_REPLY) if req.json.get("stream") else None)
    args = [a for a in print_args("local-generic") if a != "--bare"]
    done = run_claude(gw.url, TOKEN, args, str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == PRINT_REPLY
    (req,) = assert_streaming_only(up, 1)
    names = [t["function"]["name"] for t in req.json["tools"]]
    assert {"Bash", "Read", "Edit", "Write", "ToolSearch"} <= set(names)
    assert all(set(t) == {"type", "function"} for t in req.json["tools"])
    assert "defer_loading" not in req.body.decode()
    assert req.json["messages"][0]["role"] == "system"


def test_backend_context_length_error_lets_claude_code_compact(
    gw: GatewayProcess, up: FakeUpstream, tmp_path: Path
) -> None:
    """vLLM refuses a prompt over the model's context with a 400 in its own words. The gateway
    keeps that message (in Anthropic's error shape), Claude Code recognizes it, compacts the
    conversation and carries on: it assumes a 1M window for model names it does not know, so
    this is how a session on a small self-hosted model survives its window."""
    inner = openai_handler(f"echo {TOOL_MARKER}")
    failed: list[Request] = []

    def handle(req: Request) -> list[Action] | None:
        if tool_messages(req.json or {}) and not failed:
            failed.append(req)
            return fo.error_response(
                400,
                "This model's maximum context length is 32768 tokens. However, you requested 40960 tokens "
                "(8960 in the messages, 32000 in the completion). Please reduce the length of the messages "
                "or completion.",
                "BadRequestError",
                code="400",
            )
        return inner(req)

    up.script(handle)
    done = run_claude(
        gw.url,
        TOKEN,
        tool_args("local-vllm"),
        str(tmp_path),
        timeout=90,
        env={"CLAUDE_CODE_MAX_RETRIES": "0"},
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout.strip() == TOOL_FINAL
    reqs = assert_streaming_only(up, len(up.requests))
    assert len(failed) == 1 and len(reqs) > 3
    # After the 400: a summarizing request, then the conversation continues from the summary.
    later = [r.body.decode() for r in reqs[reqs.index(failed[0]) + 1 :]]
    assert any("continued from a previous conversation" in b for b in later)


def test_server_answering_json_to_a_stream_costs_no_second_request(
    gw: GatewayProcess, up: FakeUpstream, tmp_path: Path
) -> None:
    """A server that ignores `stream: true`: the gateway turns its one JSON body into events,
    so Claude Code does not repeat the request without streaming."""
    up.script(lambda req: fo.completion_response(PRINT_REPLY))
    done = run_claude(gw.url, TOKEN, print_args("local-generic"), str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == PRINT_REPLY
    assert_streaming_only(up, 1)
