"""Locust scenarios for sluicegate on the bundled fake upstream (`sluicegate mock-upstream`).

Run one user class per scenario (see docs/performance.md for the full commands):

    sluicegate mock-upstream --port 9999 &
    sluicegate serve --config loadtests/sluicegate-mock.yaml --port 8080 &
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 --headless -u 200 -r 100 -t 60s PacedStreams

User classes: ShortRequests (non-streaming ~1 KB replies), PacedStreams (50 events 20 ms apart:
run it with many users), StalledStream (first event, then the upstream pauses 2 s: fails a
request whose first event arrives after the pause), ClaudeCodeSession (a Claude Code-like
mix: count_tokens, haiku-class background calls, streamed sonnet turns ending in a tool call),
and ChatStreams (OpenAI-format streams on /v1/chat/completions).

Streams are read as they arrive; besides the request itself each stream reports its own
metrics through `environment.events.request.fire`, as request type "SSE":
"<name> first event" (time to the first complete event) and "<name> gap" (time between
reads that completed events), so the percentiles in Locust's table are those of the stream.
Pacing goes to the mock in `x-mock-*` headers, which the gateway forwards like any other.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from locust import HttpUser, constant, events, task
from locust.env import Environment

TOKEN = os.environ.get("SLUICEGATE_TOKEN", "sg-bench-token")
SONNET = os.environ.get("SLUICEGATE_MODEL", "claude-sonnet-4-6")
HAIKU = os.environ.get("SLUICEGATE_HAIKU_MODEL", "claude-haiku-4-5-20251001")
CHAT_MODEL = os.environ.get("SLUICEGATE_CHAT_MODEL", "gpt-bench")
STALL_MS = int(os.environ.get("SLUICEGATE_STALL_MS", "2000"))

ANTHROPIC = {"x-api-key": TOKEN, "anthropic-version": "2023-06-01", "content-type": "application/json"}


def messages(
    model: str, stream: bool, text: str = "Write a function that adds two numbers."
) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 1024,
        "stream": stream,
        "system": "You are a careful coding assistant.",
        "messages": [{"role": "user", "content": text}],
    }


class SSEUser(HttpUser):
    """Adds `stream()`: one streamed request, with first-event and gap metrics of its own."""

    abstract = True

    def fire(self, name: str, seconds: float, length: int = 0, exc: Exception | None = None) -> None:
        env: Environment = self.environment
        env.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=seconds * 1000.0,
            response_length=length,
            exception=exc,
            context={},
        )

    def stream(
        self,
        name: str,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str],
        first_event_before_s: float | None = None,
    ) -> None:
        t0 = time.perf_counter()
        first: float | None = None
        last = 0.0
        events_seen = 0
        tail = b""
        with self.client.post(
            path, json=body, headers=headers, stream=True, catch_response=True, name=name
        ) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
                return
            try:
                # chunk_size=None: each chunk as it arrives, never waiting to fill a buffer.
                for chunk in r.iter_content(chunk_size=None):
                    now = time.perf_counter()
                    data = tail + chunk
                    complete = data.count(b"\n\n")
                    if not complete:
                        tail = data
                        continue
                    tail = data[data.rfind(b"\n\n") + 2 :]
                    if first is None:
                        first = now
                        late = first_event_before_s is not None and now - t0 >= first_event_before_s
                        self.fire(
                            f"{name} first event",
                            now - t0,
                            exc=RuntimeError(f"first event after {now - t0:.3f} s: buffered")
                            if late
                            else None,
                        )
                    else:
                        self.fire(f"{name} gap", now - last)
                    last = now
                    events_seen += complete
            except Exception as exc:  # a broken stream is a failed request, not a crash
                r.failure(f"stream broke after {events_seen} events: {exc!r}")
                return
            if first is None:
                r.failure("no event in the stream")
                return
            r.success()
        self.fire(f"{name} whole stream", time.perf_counter() - t0, length=events_seen)


class ShortRequests(HttpUser):
    """Non-streaming requests with a ~1 KB reply, back to back."""

    wait_time = constant(0)

    @task
    def message(self) -> None:
        self.client.post(
            "/v1/messages",
            json=messages(SONNET, False),
            headers={**ANTHROPIC, "x-mock-text-bytes": "900"},
            name="messages json 1k",
        )


class PacedStreams(SSEUser):
    """Long streams: 50 text events 20 ms apart (about 1.1 s each). Run with many users."""

    wait_time = constant(0)

    @task
    def paced(self) -> None:
        self.stream(
            "messages paced 50x20ms",
            "/v1/messages",
            messages(SONNET, True),
            {**ANTHROPIC, "x-mock-events": "50", "x-mock-interval-ms": "20"},
        )


class StalledStream(SSEUser):
    """First event, then the upstream stalls: the first event must arrive before it resumes."""

    wait_time = constant(0)

    @task
    def stalled(self) -> None:
        self.stream(
            "messages stalled",
            "/v1/messages",
            messages(SONNET, True),
            {**ANTHROPIC, "x-mock-events": "10", "x-mock-pause-after-first-ms": str(STALL_MS)},
            first_event_before_s=STALL_MS / 1000.0,
        )


class ChatStreams(SSEUser):
    """OpenAI-format streams through /v1/chat/completions (pass-through to an OpenAI upstream)."""

    wait_time = constant(0)

    @task
    def chat(self) -> None:
        body = {
            "model": CHAT_MODEL,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Write a function that adds two numbers."}],
        }
        self.stream(
            "chat paced 50x20ms",
            "/v1/chat/completions",
            body,
            {"authorization": f"Bearer {TOKEN}", "x-mock-events": "50", "x-mock-interval-ms": "20"},
        )


class ClaudeCodeSession(SSEUser):
    """One developer's Claude Code session: for every streamed sonnet turn (text, then a tool
    call) a token count and haiku-class background calls, with think time in between."""

    def wait_time(self) -> float:
        return 0.5

    def on_start(self) -> None:
        self.session = str(uuid.uuid4())
        self.headers = {**ANTHROPIC, "x-claude-code-session-id": self.session}

    @task(1)
    def count_tokens(self) -> None:
        self.client.post(
            "/v1/messages/count_tokens",
            json={"model": SONNET, "messages": [{"role": "user", "content": "How many tokens is this?"}]},
            headers=self.headers,
            name="count_tokens",
        )

    @task(2)
    def haiku_background(self) -> None:
        # Claude Code's own hard-coded haiku name (titles, summaries): must route, fast and small.
        self.client.post(
            "/v1/messages",
            json=messages(HAIKU, False, "Summarize this conversation in five words."),
            headers={**self.headers, "x-mock-text-bytes": "40"},
            name="haiku background",
        )

    @task(4)
    def sonnet_turn(self) -> None:
        self.stream(
            "sonnet turn with tool use",
            "/v1/messages",
            {**messages(SONNET, True), "tools": [{"name": "Bash", "input_schema": {"type": "object"}}]},
            {
                **self.headers,
                "x-mock-events": "40",
                "x-mock-interval-ms": "15",
                "x-mock-tool": "Bash",
                "x-claude-code-agent-id": "main",
            },
        )


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--sluicegate-token", default=TOKEN, help="gateway key (or SLUICEGATE_TOKEN)")


@events.test_start.add_listener
def _token(environment: Environment, **_: Any) -> None:
    global TOKEN
    opts = environment.parsed_options
    if opts is not None and opts.sluicegate_token != TOKEN:
        TOKEN = opts.sluicegate_token
        ANTHROPIC["x-api-key"] = TOKEN
