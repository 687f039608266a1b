"""`sluicegate_streams_in_flight` end to end: scraped from /metrics while streams are held open,
after one ends because its client left, and after one runs to its end; with one worker and with
two (each worker publishes its count, any worker's scrape answers the sum)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import GatewayProcess, anthropic_config
from fakes import FakeUpstream
from fakes import anthropic as fa

HEADERS = {"x-api-key": "sg-alice-token", "anthropic-version": "2023-06-01"}
MSG = {"model": "big-coder", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stream": True}


def streams_in_flight(gw: GatewayProcess) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("sluicegate_streams_in_flight ")]
    return float(line.split()[1])


def settles_at(gw: GatewayProcess, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := streams_in_flight(gw)) != n:
        assert time.monotonic() < deadline, f"sluicegate_streams_in_flight is {seen}, expected {n}"
        time.sleep(0.1)


@contextlib.contextmanager
def held_stream(gw: GatewayProcess) -> Iterator[Callable[[], None]]:
    """A stream whose first event has arrived and whose rest the upstream holds back."""
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", gw.url + "/v1/messages", json=MSG, headers=HEADERS) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines).startswith("event: message_start")
        yield r.close


@pytest.mark.parametrize("workers", [1, 2])
def test_streams_in_flight_follows_open_streams(gateway_factory: Any, workers: int) -> None:
    with FakeUpstream() as up:
        held = {"pause": 30.0}
        up.script(
            lambda r: (
                fa.sse_response("held open", pauses={0: held["pause"]}) if r.json.get("stream") else None
            )
        )
        gw: GatewayProcess = gateway_factory(anthropic_config(up.base_url), workers=workers)
        assert streams_in_flight(gw) == 0
        with held_stream(gw):
            settles_at(gw, 1)
            with held_stream(gw):
                settles_at(gw, 2)
                # A plain (non-streaming) request in between is not a stream.
                r = httpx.post(gw.url + "/v1/messages", json={**MSG, "stream": False}, headers=HEADERS)
                assert r.status_code == 200
                # Workers publish their counts every second: after one interval every scrape,
                # whichever worker answers it, shows both streams.
                time.sleep(1.2)
                assert [streams_in_flight(gw) for _ in range(6)] == [2] * 6
            # The client left: its upstream is closed and the stream no longer counts.
            up.wait_for_disconnect(1, timeout=5)  # request 1: the inner stream, whose client just left
            settles_at(gw, 1)
        settles_at(gw, 0)
        # A stream that runs to its end is counted out as well.
        held["pause"] = 0.0
        with httpx.stream("POST", gw.url + "/v1/messages", json=MSG, headers=HEADERS, timeout=10) as r:
            assert "event: message_stop" in r.read().decode()
        settles_at(gw, 0)
