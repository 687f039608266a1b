"""The real Claude Code CLI pointed at the gateway (ANTHROPIC_BASE_URL + ANTHROPIC_AUTH_TOKEN),
with a fake Anthropic upstream behind it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from claude_cli import (
    PRINT_REPLY,
    TOOL_FINAL,
    TOOL_MARKER,
    ClaudeBinaryMissing,
    bash_round_trip_handler,
    claude_binary,
    print_args,
    print_handler,
    run_claude,
    tool_args,
    tool_results,
)
from conftest import GatewayProcess, anthropic_config
from fakes import FakeUpstream, anthropic

TOKEN = "sg-alice-token"


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
    g = GatewayProcess(anthropic_config(up.base_url)).start()
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def _fresh(up: FakeUpstream) -> None:
    up.clear()
    up.script(None)


def test_print_through_gateway(gw: GatewayProcess, up: FakeUpstream, tmp_path: Path) -> None:
    up.script(print_handler())
    done = run_claude(gw.url, TOKEN, print_args("big-coder"), str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == PRINT_REPLY
    # One streaming request: a broken relay would show up as a non-streaming retry.
    assert len(up.requests) == 1, [r.target for r in up.requests]
    (req,) = up.requests
    assert req.query == {"beta": ["true"]}
    assert req.json["model"] == "claude-sonnet-4-6" and req.json["stream"] is True
    assert req.header("x-api-key") == "sk-upstream-SECRET-123"
    assert req.header("authorization") is None
    assert "claude-code-20250219" in (req.header("anthropic-beta") or "")
    recs = [r for r in gw.access_records() if r.get("model") == "big-coder"]
    assert recs and recs[-1]["session_id"] and recs[-1]["stream"] is True


def test_bash_tool_round_trip_through_gateway(gw: GatewayProcess, up: FakeUpstream, tmp_path: Path) -> None:
    thinking = anthropic.Thinking("I should run the marker.", signature="SIG-through-gateway+/=", pieces=3)
    up.script(bash_round_trip_handler(thinking=thinking))
    done = run_claude(gw.url, TOKEN, tool_args("big-coder"), str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == TOOL_FINAL
    assert len(up.requests) == 2, [r.target for r in up.requests]
    first, second = up.requests
    assert first.json["stream"] is True and second.json["stream"] is True
    (result,) = tool_results(second.json)
    assert result["content"] == TOOL_MARKER and result["is_error"] is False
    assistant = second.json["messages"][1]
    assert assistant["content"][0]["signature"] == "SIG-through-gateway+/="


def test_background_haiku_name_routes(gw: GatewayProcess, up: FakeUpstream, tmp_path: Path) -> None:
    # Claude Code's hard-coded background model name reaches the group through a wildcard alias.
    up.script(print_handler())
    done = run_claude(gw.url, TOKEN, print_args("claude-haiku-4-5-20251001"), str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assert up.requests[0].json["model"] == "claude-sonnet-4-6"
