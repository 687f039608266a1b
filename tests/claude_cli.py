"""Run the real Claude Code CLI (the binary bundled in the `claude-agent-sdk` PyPI package)
against a base URL, in a clean, offline environment. See docs/claude-code-cli-notes.md."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from fakes import Action, Request, anthropic

Handler = Callable[[Request], list[Action] | None]

# Variables that keep the CLI from reaching anything but ANTHROPIC_BASE_URL: no telemetry, no
# error reporting, no auto-update or release-notes checks, no other background fetches.
OFFLINE_ENV: dict[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "DISABLE_COST_WARNINGS": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    "CLAUDE_CODE_IDE_SKIP_AUTO_INSTALL": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}

# Kept from the caller's environment: enough to find a shell and run the Bash tool.
_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SHELL")

# The flags that let `--print` run the Bash tool without a permission prompt, as root too
# (bypassPermissions / --dangerously-skip-permissions refuse to start as root unless IS_SANDBOX=1).
ALLOW_BASH = ["--allowedTools", "Bash"]


class ClaudeBinaryMissing(RuntimeError):
    pass


def claude_binary() -> str:
    """Path of the `claude` executable bundled in claude_agent_sdk (or $SLUICEGATE_CLAUDE_BIN)."""
    override = os.environ.get("SLUICEGATE_CLAUDE_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise ClaudeBinaryMissing(f"SLUICEGATE_CLAUDE_BIN={override} is not an executable file")
        return override
    try:
        import claude_agent_sdk
    except ImportError as e:
        raise ClaudeBinaryMissing(
            "the claude-agent-sdk package is not installed (pip install claude-agent-sdk); "
            "it bundles the Claude Code CLI binary these tests run"
        ) from e
    pkg = Path(claude_agent_sdk.__file__).parent
    for candidate in (pkg / "_bundled" / "claude", pkg / "_bundled" / "claude.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ClaudeBinaryMissing(
        f"claude-agent-sdk is installed at {pkg} but has no bundled CLI at _bundled/claude "
        "(a platform without a bundled binary?); set SLUICEGATE_CLAUDE_BIN to a claude executable"
    )


def claude_env(base_url: str, token: str, home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment the CLI runs with: nothing else leaks in from the caller."""
    env = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(OFFLINE_ENV)
    env.update(
        {
            "HOME": home,
            "XDG_CONFIG_HOME": os.path.join(home, ".config"),
            "XDG_CACHE_HOME": os.path.join(home, ".cache"),
            "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
            "TERM": "dumb",
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_AUTH_TOKEN": token,
        }
    )
    env.update(extra or {})
    return env


def run_claude(
    base_url: str,
    token: str,
    args: list[str],
    cwd: str,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    home: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `claude ARGS` with ANTHROPIC_BASE_URL / ANTHROPIC_AUTH_TOKEN set, HOME in a fresh
    temporary directory (no user config, credentials or history leak in), every nonessential
    network feature off, stdin closed, and a hard timeout (the process group is killed on expiry,
    raising subprocess.TimeoutExpired). `env` adds or overrides variables; `home` reuses a HOME."""
    binary = claude_binary()
    own_home = home is None
    home_dir = home or tempfile.mkdtemp(prefix="claude-home-")
    try:
        proc = subprocess.Popen(
            [binary, *args],
            cwd=cwd,
            env=claude_env(base_url, token, home_dir, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            _kill_group(proc)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(proc.args, timeout, out, err) from e
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        if own_home:
            shutil.rmtree(home_dir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# ---- scripted upstream answers for the two standard scenarios ----------------------------------

PRINT_PROMPT = "Reply with exactly: router claude ok"
PRINT_REPLY = "router claude ok"
TOOL_MARKER = "sluicegate-tool-ok"
TOOL_FINAL = "The command printed sluicegate-tool-ok."


def print_args(model: str, prompt: str = PRINT_PROMPT) -> list[str]:
    """`--bare --print --model MODEL -- PROMPT` (the `--` keeps a variadic flag such as
    --allowedTools from swallowing the prompt)."""
    return ["--bare", "--print", "--model", model, "--", prompt]


def tool_args(model: str, prompt: str = "Run the marker command.") -> list[str]:
    return ["--bare", "--print", "--model", model, *ALLOW_BASH, "--", prompt]


def tool_results(body: object) -> list[dict[str, object]]:
    """Every tool_result block in the request body's user messages."""
    out: list[dict[str, object]] = []
    if not isinstance(body, dict):
        return out
    for m in body.get("messages") or []:
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), list):
            out += [b for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
    return out


def print_handler(reply: str = PRINT_REPLY) -> Handler:
    """A FakeUpstream handler: every streaming /v1/messages request gets `reply` as an SSE stream."""

    def handle(req: Request) -> list[Action] | None:
        body = req.json if isinstance(req.json, dict) else {}
        if req.path.endswith("/v1/messages"):
            model = body.get("model") or anthropic.DEFAULT_MODEL
            if body.get("stream"):
                return anthropic.sse_response(reply, model=model)
            return anthropic.message_response(reply, model=model)
        return None

    return handle


def bash_round_trip_handler(
    command: str = f"echo {TOOL_MARKER}", final: str = TOOL_FINAL, thinking: anthropic.Thinking | None = None
) -> Handler:
    """A FakeUpstream handler: a request without tool results is answered with a Bash tool_use
    (streamed, its input split in pieces), preceded by `thinking` when given (the CLI sends that
    block back, signature included, with the tool result); one carrying a tool_result gets
    `final` as text."""

    def handle(req: Request) -> list[Action] | None:
        body = req.json if isinstance(req.json, dict) else {}
        if not req.path.endswith("/v1/messages"):
            return None
        model = body.get("model") or anthropic.DEFAULT_MODEL
        if tool_results(body):
            return anthropic.sse_response(final, model=model)
        call = anthropic.ToolUse(
            "Bash",
            {"command": command, "description": "Print the sluicegate marker"},
            id="toolu_01SLUICEGATETOOL",
        )
        first: anthropic.Block = thinking if thinking is not None else anthropic.Text("Running it.")
        return anthropic.sse_response([first, call], model=model)

    return handle


def capture(out_dir: Path, model: str = "some-group") -> None:
    """Run both scenarios against a fresh fake and write what the CLI sent: the first request's
    body exactly as sent (captured_claude_request.json), its headers, and the tool-result
    request's body. Re-run after a CLI upgrade: `python tests/claude_cli.py`."""
    import json

    from fakes import FakeUpstream

    version = subprocess.run(
        [claude_binary(), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    with tempfile.TemporaryDirectory() as cwd, FakeUpstream() as up:
        up.script(print_handler())
        done = run_claude(up.base_url, "sg-capture-token", print_args(model), cwd, timeout=90)
        assert done.returncode == 0, done.stderr
        first = up.requests[0]
        up.clear()
        up.script(bash_round_trip_handler())
        done = run_claude(up.base_url, "sg-capture-token", tool_args(model), cwd, timeout=90)
        assert done.returncode == 0, done.stderr
        second = up.requests[-1]
    (out_dir / "captured_claude_request.json").write_bytes(first.body)
    (out_dir / "captured_claude_tool_result_request.json").write_bytes(second.body)
    meta = {
        "claude_code_version": version.strip(),
        "argv": ["claude", *print_args(model)],
        "method": first.method,
        "target": first.target,
        "headers": first.headers,
        "note": "headers sent with captured_claude_request.json, in order and case",
    }
    (out_dir / "captured_claude_request.headers.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    capture(Path(__file__).resolve().parent / "fakes")
