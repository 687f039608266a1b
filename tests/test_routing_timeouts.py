"""Timeouts of a stream that has started, end to end: an upstream that goes quiet after its
first event is cut at `idle_s`, a long stream at `total_s`, and the client gets an Anthropic
`error` event right then instead of a hang. Set at the target and group level here, so the
layering of docs/config.md (provider, then group, then target `timeouts`) is exercised too."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import pytest
from conftest import GatewayProcess
from fakes import FakeUpstream, Hang, Send, Sleep, Status
from fakes import anthropic as fa

HEADERS = {"x-api-key": "sg-k", "anthropic-version": "2023-06-01"}
MSG = {"model": "g", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stream": True}
PATIENT = {"connect_s": 2, "first_byte_s": 5, "idle_s": 30}


def config(
    url: str, group: dict[str, Any] | None = None, target: dict[str, Any] | None = None
) -> dict[str, Any]:
    t: dict[str, Any] = {"provider": "up", "model": "claude-sonnet-4-6"}
    if target:
        t["timeouts"] = target
    g: dict[str, Any] = {"targets": [t]}
    if group:
        g["timeouts"] = group
    return {
        "providers": {"up": {"type": "anthropic", "base_url": url, "api_key": "sk-up", "timeouts": PATIENT}},
        "models": {"g": g},
        "keys": [{"name": "k", "token": "sg-k"}],
    }


def timed_events(gw: GatewayProcess) -> tuple[list[tuple[float, str, str]], float]:
    """(seconds since the request, event name, data) for each event, and the total time."""
    t0 = time.monotonic()
    events: list[tuple[float, str, str]] = []
    name = ""
    with httpx.stream("POST", gw.url + "/v1/messages", json=MSG, headers=HEADERS, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((time.monotonic() - t0, name, line[6:]))
    return events, time.monotonic() - t0


def test_idle_upstream_after_its_first_event_is_cut_at_idle_s(gateway_factory: Any) -> None:
    with FakeUpstream("quiet") as up:
        frames = fa.sse_stream(fa.Text("never finished", pieces=2))
        up.script(lambda _r: [Status(200, fa.SSE_HEADERS), Send(frames[0]), Hang()])
        gw: GatewayProcess = gateway_factory(config(up.base_url, target={"idle_s": 1}))
        events, took = timed_events(gw)
        assert [e[1] for e in events] == ["message_start", "error"]
        first_at, error_at = events[0][0], events[1][0]
        assert first_at < 0.5, first_at
        assert 0.9 <= error_at - first_at < 1.8, (first_at, error_at)
        err = json.loads(events[1][2])
        assert err["type"] == "error" and err["error"]["type"] == "api_error"
        assert (
            "no data for 1 s" in err["error"]["message"] and "up/claude-sonnet-4-6" in err["error"]["message"]
        )
        assert took < 2.0
        # The quiet upstream is let go at once, and the request is recorded as timed out.
        assert up.wait_for_disconnect(0, timeout=5) - up.requests[0].received_at < 2.0
        time.sleep(0.2)
        rec = gw.access_records()[-1]
        assert rec["error"] == "stream_timeout" and rec["status"] == 200

        # The SDK raises on it instead of waiting for the provider's 30 s.
        sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0)
        t0 = time.monotonic()
        with (
            pytest.raises(anthropic.APIStatusError, match="no data for 1 s"),
            sdk.messages.stream(model="g", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as s,
        ):
            s.get_final_message()
        assert time.monotonic() - t0 < 2.0


def test_total_s_cuts_a_long_stream(gateway_factory: Any) -> None:
    with FakeUpstream("long") as up:
        # 40 text deltas 0.2 s apart (8 s in all): never idle for long, just long.
        frames = fa.sse_stream(fa.Text("word " * 40, pieces=40))
        paced = [Status(200, fa.SSE_HEADERS)]
        for f in frames:
            paced += [Send(f), Sleep(0.2)]
        up.script(lambda _r: paced)
        gw: GatewayProcess = gateway_factory(config(up.base_url, group={"total_s": 1.5, "idle_s": 1}))
        events, took = timed_events(gw)
        names = [e[1] for e in events]
        assert names[0] == "message_start" and names[-1] == "error"
        assert "message_stop" not in names
        assert 3 <= names.count("content_block_delta") < 40  # what came before the cut got through
        assert 1.4 <= events[-1][0] < 2.3, events[-1][0]
        assert took < 2.5
        err = json.loads(events[-1][2])
        assert err["error"]["type"] == "api_error" and "total time limit reached" in err["error"]["message"]
        assert up.wait_for_disconnect(0, timeout=5) - up.requests[0].received_at < 2.5
        time.sleep(0.2)
        assert gw.access_records()[-1]["error"] == "stream_timeout"

        # Without the group's total_s the same stream runs to its end.
        gw2: GatewayProcess = gateway_factory(config(up.base_url, group={"idle_s": 1}))
        events, took = timed_events(gw2)
        assert events[-1][1] == "message_stop" and took > 7.0


def test_first_byte_limit_is_kept_apart_from_a_shorter_idle_limit(gateway_factory: Any) -> None:
    """The connection arms one timer, never further ahead than idle_s; a first byte that comes
    after idle_s but within first_byte_s is still waited for, and one that never comes is cut at
    first_byte_s, not at idle_s."""
    with FakeUpstream("late") as up:
        frames = fa.sse_stream(fa.Text("late but fine", pieces=2))
        up.script(lambda _r: [Sleep(1.4), Status(200, fa.SSE_HEADERS), *[Send(f) for f in frames]])
        gw: GatewayProcess = gateway_factory(config(up.base_url, target={"first_byte_s": 3, "idle_s": 0.5}))
        events, _ = timed_events(gw)
        assert [e[1] for e in events][-1] == "message_stop", events
        assert 1.3 <= events[0][0] < 2.5, events[0][0]

        up.script(lambda _r: [Sleep(30)])
        gw2: GatewayProcess = gateway_factory(
            config(up.base_url, target={"first_byte_s": 1.5, "idle_s": 0.5})
        )
        t0 = time.monotonic()
        r = httpx.post(gw2.url + "/v1/messages", json=MSG, headers=HEADERS, timeout=30)
        took = time.monotonic() - t0
        assert r.status_code == 504, r.text
        assert "no response within 1.5 s" in r.json()["error"]["message"]
        assert 1.4 <= took < 2.5, took
