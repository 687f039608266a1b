"""The benchmark's native load generator and paced mock (loadtests/native): they must measure
what the Python ones measure, or the paced sweep's figures mean something else.

Built here with cargo (as `bench.py --load native` builds it), then driven for a few seconds
at low concurrency: against its own mock, against `sluicegate mock-upstream` next to the
Python load generator, and through a real gateway.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, GatewayProcess, anthropic_config, free_port

sys.path.insert(0, str(ROOT / "loadtests"))
import native_load
from loadgen import Scenario, Stats, percentile, run_scenario

PACED = {"x-mock-events": "20", "x-mock-interval-ms": "20"}
HEADERS = [("x-api-key", "sg-bob-token"), ("anthropic-version", "2023-06-01")]


@pytest.fixture(scope="module")
def binary() -> Path:
    path = native_load.build()
    assert path is not None and path.exists(), "cargo could not build loadtests/native"
    return path


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start(cmd: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_listening(port, proc)
    return proc, port


@pytest.fixture(scope="module")
def native_mock(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    answer = tmp_path_factory.mktemp("answer") / "answer.bin"
    native_load.write_answer(answer, "claude-sonnet-4-6", PACED)
    proc, port = start([str(binary), "mock", "--answer", str(answer)])
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def python_mock() -> Iterator[int]:
    proc, port = start([sys.executable, "-m", "sluicegate.cli", "mock-upstream"])
    yield port
    proc.terminate()
    proc.wait(10)


def scenario(port: int, model: str = "claude-sonnet-4-6", concurrency: int = 4) -> Scenario:
    body = (
        b'{"model":"%s","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}'
        % model.encode()
    )
    return Scenario(
        name="paced",
        host="127.0.0.1",
        port=port,
        path="/v1/messages",
        body=body,
        headers=HEADERS + list(PACED.items()),
        concurrency=concurrency,
        duration_s=1.5,
        warmup_s=0.5,
        ramp_s=0.2,
        timeout_s=10.0,
    )


def run_native(binary: Path, sc: Scenario) -> tuple[Stats, list[str]]:
    edges: list[str] = []
    pids: list[int] = []
    stats = asyncio.run(native_load.run_scenario(binary, sc, edges.append, pids))
    assert len(pids) == 1
    return stats, edges


def check_paced(stats: Stats, events_per_stream: int) -> None:
    assert stats.error_count == 0, stats.errors
    assert stats.ok >= 2
    assert stats.events == stats.ok * events_per_stream
    assert stats.completed_in_window >= stats.ok
    # 20 ms between events: every gap is the pacing, none is a burst or a stall.
    gap50 = percentile(stats.gaps, 50)
    assert gap50 is not None and 0.015 < gap50 < 0.040, gap50
    ttfe99 = percentile(stats.ttfe, 99)
    assert ttfe99 is not None and ttfe99 < 0.1


def test_native_mock_sends_what_the_python_mock_sends(native_mock: int, python_mock: int) -> None:
    body = scenario(0).body
    got = []
    for port in (native_mock, python_mock):
        h = dict(HEADERS + list(PACED.items()))
        r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", content=body, headers=h, timeout=10)
        assert r.status_code == 200
        # The message id counts the mock's answers per process: the rest is byte for byte.
        got.append(re.sub(rb"msg_mock_\d+", b"msg_mock_N", r.content))
    assert got[0] == got[1]
    assert got[0].count(b"event: content_block_delta") == 20


def test_native_mock_refuses_what_it_cannot_answer(native_mock: int) -> None:
    r = httpx.post(
        f"http://127.0.0.1:{native_mock}/v1/messages",
        json={"model": "m", "max_tokens": 1, "messages": []},
        timeout=5,
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_both_load_generators_count_the_same(binary: Path, python_mock: int) -> None:
    native, edges = run_native(binary, scenario(python_mock))
    assert edges == ["start", "end"]
    python = asyncio.run(run_scenario(scenario(python_mock)))
    # message_start and content_block_start, 20 deltas, then the three closing events.
    check_paced(python, 25)
    check_paced(native, 25)


def test_native_load_through_the_gateway(binary: Path, native_mock: int, gateway_factory: Any) -> None:
    cfg: dict[str, Any] = anthropic_config(f"http://127.0.0.1:{native_mock}")
    gw: GatewayProcess = gateway_factory(cfg)
    stats, _ = run_native(binary, scenario(gw.port, concurrency=8))
    check_paced(stats, 25)
    bad = scenario(gw.port)
    bad.headers = [("x-api-key", "sg-wrong"), ("anthropic-version", "2023-06-01")]
    refused, _ = run_native(binary, bad)
    assert refused.ok == 0 and set(refused.errors) == {"http_401"}, refused.errors
