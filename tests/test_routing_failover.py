"""Failover and the circuit breaker end to end: a real gateway, several fake upstreams on
loopback in one model group, faults injected per upstream, request counts asserted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
from conftest import GatewayProcess
from fakes import Close, FakeUpstream, RefusingPort, Send, Sleep, StallsBeforeFirstByte, Status
from fakes import anthropic as fa

HEADERS = {"x-api-key": "sg-k", "anthropic-version": "2023-06-01"}
MSG = {"model": "g", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
FAST = {"connect_s": 1, "first_byte_s": 0.5, "idle_s": 2}


def config(
    upstreams: list[tuple[str, str]], timeouts: dict[str, float] | None = None, **group: Any
) -> dict[str, Any]:
    """One group `g` with one Anthropic-format target per (name, base_url), in that order."""
    return {
        "providers": {
            name: {
                "type": "anthropic",
                "base_url": url,
                "api_key": f"sk-{name}",
                "timeouts": timeouts or FAST,
            }
            for name, url in upstreams
        },
        "models": {
            "g": {
                "targets": [{"provider": name, "model": "claude-sonnet-4-6"} for name, _ in upstreams],
                **group,
            }
        },
        "keys": [{"name": "k", "token": "sg-k"}],
    }


def post(gw: GatewayProcess, body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
    return httpx.post(gw.url + "/v1/messages", json=body or MSG, headers=HEADERS, timeout=30, **kw)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def logged(gw: GatewayProcess, message: str, target: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in gw.log_records()
        if r.get("message", "").startswith(message) and (target is None or r.get("target") == target)
    ]


@pytest.mark.parametrize(
    ("status", "etype"),
    [
        (529, "overloaded_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
    ],
)
def test_faults_fail_over_to_the_healthy_target_within_the_deadline(
    gateway_factory: Any, status: int, etype: str
) -> None:
    """`overloaded` answers `status` (each retryable 5xx in turn, and 529)."""
    with (
        RefusingPort() as refused,
        FakeUpstream("overloaded") as overloaded,
        FakeUpstream("limited") as limited,
        StallsBeforeFirstByte(30, "stalls") as stalls,
        FakeUpstream("good") as good,
    ):
        overloaded.script(lambda _r: fa.error_response(status, etype, f"upstream {status}"))
        limited.script(
            lambda _r: fa.error_response(429, "rate_limit_error", "slow down", {"retry-after": "30"})
        )
        cfg = config(
            [
                ("refused", refused.base_url),
                ("overloaded", overloaded.base_url),
                ("limited", limited.base_url),
                ("stalls", stalls.base_url),
                ("good", good.base_url),
            ],
            max_attempts=5,
            deadline_s=4,
        )
        gw: GatewayProcess = gateway_factory(cfg)
        took = []
        for _ in range(6):
            t0 = time.monotonic()
            r = post(gw)
            took.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
            assert r.json()["content"][0]["text"] == "Hello from fake upstream"
        sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0)
        with sdk.messages.stream(model="g", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as s:
            assert "".join(s.text_stream) == "Hello from fake upstream"
        assert max(took) < 4.0, took
        # 429 + retry-after: 30 s out at once; 5xx/529, refused and stalled: out after 3 in a row.
        assert len(limited.requests) == 1
        assert len(overloaded.requests) == 3
        assert len(stalls.requests) == 3
        assert len(good.requests) == 7
        # The first request walked the whole list; once the circuits were open, one attempt.
        time.sleep(0.2)
        attempts = [r["attempts"] for r in gw.access_records()]
        assert attempts[0] == 5 and attempts[-1] == 1, attempts
        assert all(r["target"] == "good/claude-sonnet-4-6#4" for r in gw.access_records())
        for name in (
            "refused/claude-sonnet-4-6",
            "overloaded/claude-sonnet-4-6#1",
            "limited/claude-sonnet-4-6#2",
        ):
            assert logged(gw, "target circuit open", name), name
        assert logged(gw, "target circuit open", "limited/claude-sonnet-4-6#2")[0]["open_for_s"] == 30
        (opened,) = logged(gw, "target circuit open", "overloaded/claude-sonnet-4-6#1")
        assert opened["reason"] == f"status {status}"
        failed = logged(gw, "upstream attempt failed", "overloaded/claude-sonnet-4-6#1")
        assert [r["reason"] for r in failed] == [f"status {status}"] * 3


def test_stream_that_breaks_after_its_first_event_is_not_retried(gateway_factory: Any) -> None:
    with FakeUpstream("breaks") as breaks, FakeUpstream("good") as good:
        frames = fa.sse_stream(fa.Text("partial answer", pieces=4))
        breaks.enqueue([Status(200, fa.SSE_HEADERS), Send(frames[0]), Send(frames[1]), Close()])
        gw: GatewayProcess = gateway_factory(config([("breaks", breaks.base_url), ("good", good.base_url)]))
        with httpx.stream(
            "POST", gw.url + "/v1/messages", json={**MSG, "stream": True}, headers=HEADERS
        ) as r:
            assert r.status_code == 200
            text = r.read().decode()
        assert "event: message_start" in text and "event: error" in text
        assert "event: message_stop" not in text
        assert len(breaks.requests) == 1 and len(good.requests) == 0

        # The same break before the first event: the client has seen nothing, so it fails over.
        breaks.enqueue([Status(200, fa.SSE_HEADERS), Close()])
        with httpx.stream(
            "POST", gw.url + "/v1/messages", json={**MSG, "stream": True}, headers=HEADERS
        ) as r:
            assert r.status_code == 200
            text = r.read().decode()
        assert "event: message_stop" in text and "event: error" not in text
        assert len(breaks.requests) == 2 and len(good.requests) == 1


def test_empty_200_stream_fails_over_and_alone_is_a_502(gateway_factory: Any) -> None:
    """200, text/event-stream, then at once the last chunk (`0\\r\\n\\r\\n`): not one event. Claude
    Code's "empty or malformed response (HTTP 200)"; the client has seen nothing, so fail over."""
    with FakeUpstream("empty") as empty, FakeUpstream("good") as good:
        empty.script(lambda _r: [Status(200, fa.SSE_HEADERS)])
        gw: GatewayProcess = gateway_factory(config([("empty", empty.base_url), ("good", good.base_url)]))
        sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0)
        with sdk.messages.stream(model="g", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as s:
            assert "".join(s.text_stream) == "Hello from fake upstream"
        assert len(empty.requests) == 1 and len(good.requests) == 1
        time.sleep(0.2)
        rec = gw.access_records()[-1]
        assert rec["attempts"] == 2 and rec["target"] == "good/claude-sonnet-4-6#1" and rec["error"] is None

        # Alone in its group: a 502 in Anthropic's shape naming the target, not an empty 200.
        alone: GatewayProcess = gateway_factory(config([("empty", empty.base_url)]))
        r = post(alone, {**MSG, "stream": True})
        assert r.status_code == 502, r.text
        err = r.json()
        assert err["type"] == "error" and err["error"]["type"] == "api_error"
        assert "empty/claude-sonnet-4-6" in err["error"]["message"]
        assert "without sending any event" in err["error"]["message"]
        assert len(empty.requests) == 2


@pytest.mark.parametrize(
    ("etype", "status"), [("overloaded_error", 529), ("api_error", 500), ("rate_limit_error", 429)]
)
def test_error_as_the_first_event_fails_over_like_its_status(
    gateway_factory: Any, etype: str, status: int
) -> None:
    """A 200 stream whose first event is `event: error` (an overload reported inside the stream):
    the head is still held back, so the next target answers instead."""
    with FakeUpstream("first") as first, FakeUpstream("good") as good:
        first.script(lambda _r: [Status(200, fa.SSE_HEADERS), Send(fa.sse_error_event(etype, "in-stream"))])
        gw: GatewayProcess = gateway_factory(config([("first", first.base_url), ("good", good.base_url)]))
        sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0)
        with sdk.messages.stream(model="g", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as s:
            assert "".join(s.text_stream) == "Hello from fake upstream"
        assert len(first.requests) == 1 and len(good.requests) == 1
        time.sleep(0.2)
        rec = gw.access_records()[-1]
        assert rec["attempts"] == 2 and rec["target"] == "good/claude-sonnet-4-6#1" and rec["error"] is None
        (failed,) = logged(gw, "upstream attempt failed", "first/claude-sonnet-4-6")
        assert failed["reason"] == f"status {status}"


def test_error_as_the_first_event_with_no_target_left_is_relayed_unmodified(gateway_factory: Any) -> None:
    with FakeUpstream("only") as only, RefusingPort() as refused:
        event = fa.sse_error_event("overloaded_error", "Overloaded")
        only.script(lambda _r: [Status(200, fa.SSE_HEADERS), Send(event)])
        alone: GatewayProcess = gateway_factory(config([("only", only.base_url)]))
        r = post(alone, {**MSG, "stream": True})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.content == event
        time.sleep(0.2)
        assert alone.access_records()[-1]["error"] == "stream_error_event"

        # The next target cannot answer either: the overload comes back as the 529 it stands for,
        # the upstream's own error object as the body.
        gw: GatewayProcess = gateway_factory(config([("only", only.base_url), ("refused", refused.base_url)]))
        payload = event.split(b"data: ", 1)[1].rstrip(b"\n")
        for _ in range(3):
            r = post(gw, {**MSG, "stream": True})
            assert r.status_code == 529 and r.content == payload, r.text
            assert r.headers["content-type"] == "application/json"
        # Both circuits are open now (3 failures each): with nothing left to fail over to, the
        # stream is relayed as the upstream sent it.
        r = post(gw, {**MSG, "stream": True})
        assert r.status_code == 200 and r.content == event
        assert len(only.requests) == 5


def test_breaker_opens_stays_out_during_cooldown_then_one_probe_recovers_it(gateway_factory: Any) -> None:
    with FakeUpstream("flaky") as flaky, FakeUpstream("backup") as backup:
        down = {"on": True, "delay": 0.0}

        def flaky_answer(_r: object) -> list[Any] | None:
            if down["on"]:
                return fa.error_response(503, "api_error", "down for maintenance")
            if down["delay"]:
                # The head at once, the body a second later: a probe that stays in flight.
                head, *rest = fa.message_response("from flaky")
                return [head, Sleep(down["delay"]), *rest]
            return fa.message_response("from flaky")

        flaky.script(flaky_answer)
        gw: GatewayProcess = gateway_factory(config([("flaky", flaky.base_url), ("backup", backup.base_url)]))
        for _ in range(3):
            assert post(gw).status_code == 200
        opened_at = time.monotonic()
        assert len(flaky.requests) == 3 and len(backup.requests) == 3
        wait_for(lambda: bool(logged(gw, "target circuit open", "flaky/claude-sonnet-4-6")))
        # Open: no traffic at all during the cool-down.
        for _ in range(5):
            assert post(gw).status_code == 200
        assert len(flaky.requests) == 3 and len(backup.requests) == 8

        # Recovered upstream, cool-down over: exactly one probe while it is half-open.
        down.update(on=False, delay=1.0)
        time.sleep(max(0.0, opened_at + 5.2 - time.monotonic()))
        results: list[httpx.Response] = []
        probe = threading.Thread(target=lambda: results.append(post(gw)))
        probe.start()
        flaky.wait_for_requests(4)
        assert post(gw).json()["content"][0]["text"] == "Hello from fake upstream"  # skips the probed one
        probe.join(10)
        assert results[0].json()["content"][0]["text"] == "from flaky"
        assert len(flaky.requests) == 4 and len(backup.requests) == 9
        # Closed again: traffic is back on the first target.
        down["delay"] = 0.0
        for _ in range(3):
            assert post(gw).json()["content"][0]["text"] == "from flaky"
        assert len(flaky.requests) == 7 and len(backup.requests) == 9
        assert logged(gw, "target half-open", "flaky/claude-sonnet-4-6")
        assert logged(gw, "target recovered", "flaky/claude-sonnet-4-6")


def test_retry_after_keeps_the_target_out_for_that_long(gateway_factory: Any) -> None:
    with FakeUpstream("limited") as limited, FakeUpstream("other") as other:
        limited.enqueue(fa.error_response(429, "rate_limit_error", "slow down", {"retry-after": "2"}))
        gw: GatewayProcess = gateway_factory(
            config([("limited", limited.base_url), ("other", other.base_url)])
        )
        t0 = time.monotonic()
        assert post(gw).status_code == 200
        while time.monotonic() - t0 < 1.7:
            assert post(gw).status_code == 200
            time.sleep(0.1)
        assert len(limited.requests) == 1
        served = len(other.requests)
        time.sleep(max(0.0, t0 + 2.2 - time.monotonic()))
        assert post(gw).status_code == 200
        assert len(limited.requests) == 2 and len(other.requests) == served


def test_when_every_target_fails_the_last_upstream_error_comes_back_unmodified(gateway_factory: Any) -> None:
    with FakeUpstream("a") as a, FakeUpstream("b") as b, RefusingPort() as refused:
        last_body = b'{"type":"error","error":{"type":"api_error","message":"b is unavailable \\u2717"}}'
        a.script(lambda _r: fa.error_response(529, "overloaded_error", "a is overloaded"))
        b.script(
            lambda _r: [
                Status(
                    503,
                    [
                        ("content-type", "application/json"),
                        ("x-upstream", "b"),
                        ("retry-after", "7"),
                        ("content-length", str(len(last_body))),
                    ],
                ),
                Send(last_body),
            ]
        )
        gw: GatewayProcess = gateway_factory(config([("a", a.base_url), ("b", b.base_url)]))
        r = post(gw)
        assert r.status_code == 503 and r.content == last_body
        assert r.headers["x-upstream"] == "b" and r.headers["retry-after"] == "7"
        assert len(a.requests) == 1 and len(b.requests) == 1

        # An upstream's own answer beats a connect error that came after it.
        gw2: GatewayProcess = gateway_factory(config([("a", a.base_url), ("refused", refused.base_url)]))
        r = post(gw2)
        assert r.status_code == 529 and r.json() == fa.error_json("overloaded_error", "a is overloaded")


def test_group_deadline_cuts_a_stalled_attempt_short(gateway_factory: Any) -> None:
    with StallsBeforeFirstByte(30) as stalls, FakeUpstream("good") as good:
        slow = {"connect_s": 5, "first_byte_s": 30, "idle_s": 30}
        gw: GatewayProcess = gateway_factory(
            config([("stalls", stalls.base_url), ("good", good.base_url)], timeouts=slow, deadline_s=1)
        )
        t0 = time.monotonic()
        r = post(gw)
        took = time.monotonic() - t0
        assert r.status_code == 504, r.text
        assert r.json()["error"]["type"] == "api_error"
        assert "deadline of 1 s" in r.json()["error"]["message"]
        assert 0.9 < took < 3.0, took
        assert len(good.requests) == 0
        # A deadline cut is not the target's fault: no circuit opened.
        assert not logged(gw, "target circuit open")


def test_conversation_with_thinking_fails_over_to_an_openai_format_target(gateway_factory: Any) -> None:
    """Failover from Anthropic to a self-hosted OpenAI-format server: the earlier thinking goes as
    plain reasoning text, so no signature is involved and the moved conversation goes on."""
    with FakeUpstream("anthropic") as main, FakeUpstream("vllm") as local:
        main.script(lambda _r: fa.error_response(529, "overloaded_error", "Overloaded"))
        cfg = {
            "providers": {
                "main": {"type": "anthropic", "base_url": main.base_url, "api_key": "sk-main"},
                "local": {"type": "openai", "base_url": local.base_url + "/v1", "flavor": "llamacpp"},
            },
            "models": {
                "g": {
                    "targets": [
                        {"provider": "main", "model": "claude-sonnet-4-6"},
                        {"provider": "local", "model": "qwen3-coder"},
                    ]
                }
            },
            "keys": [{"name": "k", "token": "sg-k"}],
        }
        gw: GatewayProcess = gateway_factory(cfg)
        signature = "EqQBCkYIBxgCKkB+/=anthropic-only=="
        body = {
            **MSG,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "user", "content": "first"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "the plan was X", "signature": signature},
                        {"type": "text", "text": "answer"},
                    ],
                },
                {"role": "user", "content": "second"},
            ],
        }
        sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0)
        with sdk.messages.stream(**body) as s:  # type: ignore[arg-type]
            final = s.get_final_message()
        assert final.stop_reason == "end_turn"
        assert len(main.requests) == 1 and len(local.requests) == 1
        sent = local.requests[0]
        assert sent.path == "/v1/chat/completions"
        assistant = next(m for m in sent.json["messages"] if m["role"] == "assistant")
        assert assistant["reasoning_content"] == "the plan was X" and assistant["content"] == "answer"
        assert signature.encode() not in sent.body and b"signature" not in sent.body


def test_translated_streams_breaking_before_their_first_event_fail_over(gateway_factory: Any) -> None:
    """The same held-back head on the translating paths (OpenAI client to an Anthropic target,
    Anthropic client to an OpenAI-format target), where the translator itself would have emitted
    an error event at end of stream."""
    with (
        FakeUpstream("a-breaks") as a_breaks,
        FakeUpstream("o-breaks") as o_breaks,
        FakeUpstream("good") as good,
    ):
        a_breaks.script(lambda _r: [Status(200, fa.SSE_HEADERS), Close()])
        o_breaks.script(lambda _r: [Status(200, [("content-type", "text/event-stream")]), Close()])
        cfg = {
            "providers": {
                "a_breaks": {"type": "anthropic", "base_url": a_breaks.base_url, "api_key": "sk"},
                "o_breaks": {"type": "openai", "base_url": o_breaks.base_url + "/v1"},
                "good": {"type": "anthropic", "base_url": good.base_url, "api_key": "sk"},
            },
            "models": {
                "to-anthropic": {"targets": [{"provider": "a_breaks"}, {"provider": "good"}]},
                "to-openai": {"targets": [{"provider": "o_breaks"}, {"provider": "good"}]},
            },
            "keys": [{"name": "k", "token": "sg-k"}],
        }
        gw: GatewayProcess = gateway_factory(cfg)
        oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="sg-k", max_retries=0)
        chunks = oai.chat.completions.create(
            model="to-anthropic", messages=[{"role": "user", "content": "x"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Hello from fake upstream"
        assert len(a_breaks.requests) == 1 and len(good.requests) == 1

        sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0)
        with sdk.messages.stream(
            model="to-openai", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as s:
            assert "".join(s.text_stream) == "Hello from fake upstream"
        assert len(o_breaks.requests) == 1 and len(good.requests) == 2


def test_client_leaving_while_the_head_is_held_back_closes_the_upstream(gateway_factory: Any) -> None:
    with FakeUpstream("slow") as slow, FakeUpstream("good") as good:
        slow.script(lambda _r: [Status(200, fa.SSE_HEADERS), Sleep(10), *fa.sse_response()[1:]])
        patient = {"connect_s": 1, "first_byte_s": 5, "idle_s": 30}
        gw: GatewayProcess = gateway_factory(
            config([("slow", slow.base_url), ("good", good.base_url)], timeouts=patient)
        )
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(gw.url + "/v1/messages", json={**MSG, "stream": True}, headers=HEADERS, timeout=0.5)
        left = time.monotonic()
        gone = slow.wait_for_disconnect(0, timeout=5)
        assert gone - left < 1.0
        time.sleep(0.3)
        rec = gw.access_records()[-1]
        assert rec["client_disconnected"] is True and rec["attempts"] == 1
        assert len(good.requests) == 0
