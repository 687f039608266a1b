"""Smoke check that streams are not buffered: through the real gateway and `sluicegate
mock-upstream`, an upstream that stalls after its first event must not hold that event back.

The only timing assertion is the one that defines "not buffered": the client has the first
event before the upstream's pause ends. Throughput and latency are the benchmark's business
(loadtests/bench.py, docs/performance.md), not the test suite's.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import GatewayProcess, anthropic_config, free_port

PAUSE_S = 1.5
STALL = {"x-mock-events": "5", "x-mock-pause-after-first-ms": str(int(PAUSE_S * 1000))}


@pytest.fixture(scope="module")
def mock_upstream() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluicegate.cli", "mock-upstream", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mock-upstream did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def gw(mock_upstream: str) -> Iterator[GatewayProcess]:
    cfg: dict[str, Any] = anthropic_config(mock_upstream)
    cfg["providers"]["oa"] = {"type": "openai", "base_url": mock_upstream + "/v1", "api_key": "sk-x"}
    # The translated path sends no client headers upstream: the stall comes from the provider.
    cfg["providers"]["oa-stall"] = {
        "type": "openai",
        "base_url": mock_upstream + "/v1",
        "api_key": "sk-x",
        "headers": STALL,
    }
    cfg["models"]["gpt-smoke"] = {"targets": [{"provider": "oa", "model": "gpt-up"}]}
    cfg["models"]["translated-smoke"] = {"targets": [{"provider": "oa-stall", "model": "gpt-up"}]}
    g = GatewayProcess(cfg).start()
    yield g
    g.stop()


def first_event_then_rest(
    url: str, path: str, headers: dict[str, str], body: dict[str, Any]
) -> tuple[float, bytes]:
    """Seconds until the first complete SSE event arrived, and the whole stream."""
    t0 = time.monotonic()
    first_at: float | None = None
    got = b""
    with httpx.stream("POST", url + path, headers=headers, json=body, timeout=30) as r:
        assert r.status_code == 200, r.read()
        for chunk in r.iter_raw():
            got += chunk
            if first_at is None and b"\n\n" in got:
                first_at = time.monotonic() - t0
    assert first_at is not None
    return first_at, got


ANTHROPIC = {"x-api-key": "sg-bob-token", "anthropic-version": "2023-06-01"}
MESSAGES = {
    "model": "sonnet",
    "max_tokens": 16,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def test_stalled_anthropic_stream_is_not_buffered(gw: GatewayProcess) -> None:
    first_at, got = first_event_then_rest(gw.url, "/v1/messages", {**ANTHROPIC, **STALL}, MESSAGES)
    assert first_at < PAUSE_S, f"first event after {first_at:.3f} s: held back until the upstream resumed"
    assert got.startswith(b"event: message_start\n") and got.endswith(
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


def test_stalled_chat_completions_stream_is_not_buffered(gw: GatewayProcess) -> None:
    body = {**MESSAGES, "model": "gpt-smoke"}
    first_at, got = first_event_then_rest(
        gw.url, "/v1/chat/completions", {"authorization": "Bearer sg-bob-token", **STALL}, body
    )
    assert first_at < PAUSE_S, f"first event after {first_at:.3f} s: held back until the upstream resumed"
    assert got.startswith(b"data: {") and got.endswith(b"data: [DONE]\n\n")


def test_stalled_translated_stream_is_not_buffered(gw: GatewayProcess) -> None:
    body = {**MESSAGES, "model": "translated-smoke"}
    first_at, got = first_event_then_rest(gw.url, "/v1/messages", ANTHROPIC, body)
    assert first_at < PAUSE_S, f"first event after {first_at:.3f} s: held back until the upstream resumed"
    assert got.startswith(b"event: message_start\n") and b"event: message_stop\n" in got
