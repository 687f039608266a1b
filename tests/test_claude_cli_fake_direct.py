"""The Claude Code CLI harness, proven directly against a fake upstream (no gateway in between):
the gateway tests reuse run_claude() with the gateway's URL and expect the same results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from claude_cli import (
    ALLOW_BASH,
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
from fakes import FakeUpstream, anthropic

TOKEN = "sg-cli-test-token"


@pytest.fixture(scope="module", autouse=True)
def _binary() -> None:
    try:
        claude_binary()
    except ClaudeBinaryMissing as e:
        pytest.skip(str(e))


@pytest.fixture
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def test_print_reply(up: FakeUpstream, tmp_path: Path) -> None:
    up.script(print_handler())
    done = run_claude(up.base_url, TOKEN, print_args("some-group"), str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == PRINT_REPLY
    # Exactly one streaming request: a broken stream would show up as a second, non-streaming
    # (`"stream": false`) fallback request while stdout still looked right.
    assert len(up.requests) == 1, [r.target for r in up.requests]
    for req in up.requests:
        assert (req.method, req.path) == ("POST", "/v1/messages")
        assert req.query == {"beta": ["true"]}
        assert req.header("authorization") == f"Bearer {TOKEN}"
        assert req.header("x-api-key") is None
        assert req.header("anthropic-version") == "2023-06-01"
        assert "claude-code-20250219" in (req.header("anthropic-beta") or "")
        assert req.header("x-claude-code-session-id")
        assert (req.header("user-agent") or "").startswith("claude-cli/")
        body = req.json
        assert body["model"] == "some-group"
        assert body["stream"] is True
        assert body["messages"][0]["content"][0]["text"] == "Reply with exactly: router claude ok"
    # One session: every request carries the same session id.
    assert len({r.header("x-claude-code-session-id") for r in up.requests}) == 1


@pytest.mark.parametrize(
    ("command", "expect_file"),
    [
        (f"echo {TOOL_MARKER}", None),
        # Writing a file needs permission in --print mode: this one proves ALLOW_BASH grants it.
        (f"echo {TOOL_MARKER} > tool-ran.txt && cat tool-ran.txt", "tool-ran.txt"),
    ],
)
def test_bash_tool_round_trip(
    up: FakeUpstream, tmp_path: Path, command: str, expect_file: str | None
) -> None:
    up.script(bash_round_trip_handler(command))
    done = run_claude(up.base_url, TOKEN, tool_args("some-group"), str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == TOOL_FINAL
    assert len(up.requests) == 2, [r.target for r in up.requests]
    first, second = up.requests
    assert first.json["stream"] is True and second.json["stream"] is True
    assert first.header("x-claude-code-session-id") == second.header("x-claude-code-session-id")
    assert "Bash" in [t["name"] for t in first.json["tools"]]
    assert not tool_results(first.json)
    (result,) = tool_results(second.json)
    assert result["tool_use_id"] == "toolu_01SLUICEGATETOOL"
    assert result["is_error"] is False
    assert result["content"] == TOOL_MARKER
    # The assistant turn with the tool call goes back upstream as it was streamed.
    assistant = [m for m in second.json["messages"] if m["role"] == "assistant"][-1]
    call = next(b for b in assistant["content"] if b["type"] == "tool_use")
    assert call["input"] == {"command": command, "description": "Print the sluicegate marker"}
    if expect_file:
        assert (tmp_path / expect_file).read_text().strip() == TOOL_MARKER


def test_allow_bash_flag_is_what_makes_the_tool_run(up: FakeUpstream, tmp_path: Path) -> None:
    """Without ALLOW_BASH a file-writing command is refused (is_error) and the file never appears,
    so the round trip above is really the CLI running the tool."""
    up.script(bash_round_trip_handler(f"echo {TOOL_MARKER} > tool-ran.txt"))
    args = [a for a in tool_args("some-group") if a not in ALLOW_BASH]
    done = run_claude(up.base_url, TOKEN, args, str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    (result,) = tool_results(up.requests[-1].json)
    assert result["is_error"] is True
    assert not (tmp_path / "tool-ran.txt").exists()


def test_thinking_signature_comes_back_with_the_tool_result(up: FakeUpstream, tmp_path: Path) -> None:
    thinking = anthropic.Thinking("I should run the marker.", signature="SIG-sluicegate+/=123", pieces=3)
    up.script(bash_round_trip_handler(thinking=thinking))
    done = run_claude(up.base_url, TOKEN, tool_args("some-group"), str(tmp_path), timeout=90)
    assert done.returncode == 0, done.stderr
    assistant = up.requests[-1].json["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {
        "type": "thinking",
        "thinking": "I should run the marker.",
        "signature": "SIG-sluicegate+/=123",
    }
