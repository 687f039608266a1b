"""Balancing strategies end to end: the weighted split over a few hundred requests, least
in-flight under concurrent streams, and latency steering towards the faster upstream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import GatewayProcess
from fakes import FakeUpstream, StallsBeforeFirstByte
from fakes import anthropic as fa

HEADERS = {"x-api-key": "sg-k", "anthropic-version": "2023-06-01"}
MSG = {"model": "g", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}

# 3:1 weights over N requests: the first target's share is 75 % within TOLERANCE. With N = 400
# the share's standard deviation is 2.2 points, so 7 points is 3.2 sigma (about 1 run in 700
# fails by chance).
N = 400
TOLERANCE = 0.07


def config(upstreams: list[tuple[str, str, float]], strategy: str) -> dict[str, Any]:
    return {
        "providers": {
            name: {"type": "anthropic", "base_url": url, "api_key": "sk"} for name, url, _ in upstreams
        },
        "models": {
            "g": {
                "strategy": strategy,
                "targets": [{"provider": name, "weight": w} for name, _, w in upstreams],
            }
        },
        "keys": [{"name": "k", "token": "sg-k"}],
    }


@pytest.fixture
def two() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream("a") as a, FakeUpstream("b") as b:
        yield a, b


def test_weighted_split_is_within_tolerance(
    gateway_factory: Any, two: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = two
    gw: GatewayProcess = gateway_factory(config([("a", a.base_url, 3), ("b", b.base_url, 1)], "weighted"))
    with httpx.Client(base_url=gw.url, headers=HEADERS, timeout=10) as client:
        for _ in range(N):
            assert client.post("/v1/messages", json=MSG).status_code == 200
    share = len(a.requests) / N
    print(f"weighted 3:1 over {N} requests: first target {share:.1%} (expected 75 % +- {TOLERANCE:.0%})")
    assert len(a.requests) + len(b.requests) == N
    assert abs(share - 0.75) <= TOLERANCE, share


def test_least_inflight_spreads_concurrent_streams(
    gateway_factory: Any, two: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = two
    for up in (a, b):
        # message_start at once, the rest 2 s later: each stream stays open that long.
        up.script(lambda _r: fa.sse_response("held open", pauses={0: 2.0}))
    gw: GatewayProcess = gateway_factory(
        config([("a", a.base_url, 1), ("b", b.base_url, 1)], "least_inflight")
    )
    results: list[int] = []

    def stream() -> None:
        with httpx.stream(
            "POST", gw.url + "/v1/messages", json={**MSG, "stream": True}, headers=HEADERS
        ) as r:
            r.read()
            results.append(r.status_code)

    threads = []
    for i in range(4):
        threads.append(threading.Thread(target=stream))
        threads[-1].start()
        _wait(lambda n=i + 1: len(a.requests) + len(b.requests) >= n)
    # Each new stream went to the target with fewer streams open: 2 and 2, whatever the tie-breaks.
    assert (len(a.requests), len(b.requests)) == (2, 2)
    for t in threads:
        t.join(20)
    assert results == [200, 200, 200, 200]


def test_latency_prefers_the_faster_upstream(gateway_factory: Any) -> None:
    with StallsBeforeFirstByte(0.3, "slow") as slow, FakeUpstream("fast") as fast:
        gw: GatewayProcess = gateway_factory(
            config([("slow", slow.base_url, 1), ("fast", fast.base_url, 1)], "latency")
        )
        with httpx.Client(base_url=gw.url, headers=HEADERS, timeout=10) as client:
            for _ in range(40):
                assert client.post("/v1/messages", json=MSG).status_code == 200
        # Both measured first (unmeasured targets go first), then the fast one, except the
        # 5 % of requests that re-measure the runner-up.
        assert len(slow.requests) >= 1 and len(fast.requests) >= 1
        print(f"latency: {len(fast.requests)} of 40 to the fast upstream")
        assert len(fast.requests) >= 32, (len(slow.requests), len(fast.requests))


def _wait(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_weighted_keeps_each_session_on_one_target(
    gateway_factory: Any, two: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = two
    gw: GatewayProcess = gateway_factory(config([("a", a.base_url, 3), ("b", b.base_url, 1)], "weighted"))
    sessions = [f"0b5c{i:04d}-6d3e-4f21-9a7b-5e8c1d2f3a4b" for i in range(100)]
    landed: dict[str, set[str]] = {}
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for _ in range(3):
            for s in sessions:
                a_before = len(a.requests)
                r = client.post("/v1/messages", json=MSG, headers={**HEADERS, "x-claude-code-session-id": s})
                assert r.status_code == 200
                landed.setdefault(s, set()).add("a" if len(a.requests) > a_before else "b")
    assert all(len(t) == 1 for t in landed.values()), "a session moved between healthy targets"
    on_a = sum(t == {"a"} for t in landed.values())
    assert 60 <= on_a <= 90, on_a  # 3:1 over 100 sessions


def test_least_inflight_keeps_a_session_on_its_target_under_load(
    gateway_factory: Any, two: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = two
    for up in (a, b):
        up.script(lambda r: fa.sse_response("held open", pauses={0: 1.5}) if r.json.get("stream") else None)
    gw: GatewayProcess = gateway_factory(
        config([("a", a.base_url, 1), ("b", b.base_url, 1)], "least_inflight")
    )
    session = {**HEADERS, "x-claude-code-session-id": "sess-kept"}
    done: list[int] = []

    def stream() -> None:
        with httpx.stream(
            "POST", gw.url + "/v1/messages", json={**MSG, "stream": True}, headers=session
        ) as r:
            r.read()
            done.append(r.status_code)

    held = threading.Thread(target=stream)
    held.start()
    _wait(lambda: len(a.requests) + len(b.requests) == 1)
    home, other = (a, b) if a.requests else (b, a)
    # The session's target has a stream open and the other none: the session still goes home,
    # a request without a session goes by load.
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for _ in range(3):
            assert client.post("/v1/messages", json=MSG, headers=session).status_code == 200
        assert len(home.requests) == 4 and len(other.requests) == 0
        assert client.post("/v1/messages", json=MSG, headers=HEADERS).status_code == 200
        assert len(other.requests) == 1
    held.join(10)
    assert done == [200]
