"""Keys, limits, budgets and the usage ledger through real gateway processes: the CLI's keys,
Redis shared by two gateways, a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import GatewayProcess, anthropic_config
from fakes import FakeUpstream, Send, Status
from fakes import anthropic as fa
from fakes import openai as fo
from sluicegate import _native

PRICE = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30}
MSG = {"model": "big-coder", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(up: FakeUpstream) -> None:
    up.clear()
    up.script(None)


def priced_config(base_url: str, **extra: Any) -> dict[str, Any]:
    cfg = anthropic_config(base_url, **extra)
    for group in cfg["models"].values():
        for t in group["targets"]:
            t["price"] = PRICE
    return cfg


def post(gw: GatewayProcess, token: str, body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/messages",
        json=body or MSG,
        headers={"x-api-key": token, "anthropic-version": "2023-06-01", **kw.pop("headers", {})},
        timeout=10,
        **kw,
    )


def cli(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluicegate.cli", *args, "--config", str(gw.config_path)],
        capture_output=True,
        text=True,
        env=gw.env,
        timeout=60,
    )


def ledger_rows(gw: GatewayProcess) -> list[dict[str, Any]]:
    db = Path(gw.env["SLUICEGATE_STATE_DIR"]) / "usage.db"
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM usage_records ORDER BY ts, id")]
    finally:
        conn.close()


def wait_rows(gw: GatewayProcess, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            rows = ledger_rows(gw)
        except sqlite3.OperationalError:
            rows = []
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    return rows


def test_cli_key_works_and_revocation_takes_effect(up: FakeUpstream, gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(priced_config(up.base_url, keystore={"refresh_s": 0.5}))
    made = cli(
        gw,
        "keys",
        "create",
        "--user",
        "carol",
        "--project",
        "payments",
        "--env",
        "dev",
        "--models",
        "big-coder",
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("sgk_carol_payments_dev_")
    listed = orjson.loads(cli(gw, "keys", "list", "--json").stdout)
    key_id = listed[0]["key_id"]
    assert token not in orjson.dumps(listed).decode()
    deadline = time.monotonic() + 5
    while post(gw, token).status_code == 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert post(gw, token).status_code == 200
    assert post(gw, token, {**MSG, "model": "other"}).status_code == 403
    revoked = cli(gw, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    t0 = time.monotonic()
    while post(gw, token).status_code == 200 and time.monotonic() - t0 < 10:
        time.sleep(0.2)
    assert time.monotonic() - t0 < 5, "revocation took longer than a few seconds"
    r = post(gw, token)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    rows = wait_rows(gw, 3)
    assert any(
        row["key_id"] == key_id and row["user_name"] == "carol" and row["project"] == "payments"
        for row in rows
    )
    assert token not in gw.logs()


def test_rpm_with_accurate_retry_after(up: FakeUpstream, gateway_factory: Any) -> None:
    cfg = priced_config(up.base_url)
    cfg["keys"][0]["rpm"] = 3
    gw: GatewayProcess = gateway_factory(cfg)
    statuses = [post(gw, "sg-alice-token").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    t_refused = time.time()
    r = post(gw, "sg-alice-token")
    assert r.status_code == 429
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "rate_limit_error"
    retry_after = int(r.headers["retry-after"])
    assert 50 <= retry_after <= 61
    assert len(up.requests) == 3  # the refused request never reached the upstream
    rows = wait_rows(gw, 4)
    assert [row["status"] for row in rows] == [200, 200, 200, 429]
    assert rows[-1]["error_type"] == "rate_limit_error"
    assert abs(rows[-1]["ts"] - t_refused) < 5


def test_tpm_settles_from_real_usage(up: FakeUpstream, gateway_factory: Any) -> None:
    cfg = priced_config(up.base_url)
    cfg["keys"][0]["tpm"] = 1000
    gw: GatewayProcess = gateway_factory(cfg)
    up.enqueue(fa.message_response("big", usage={"input_tokens": 900, "output_tokens": 150}))
    assert post(gw, "sg-alice-token").status_code == 200
    r = post(gw, "sg-alice-token")
    assert r.status_code == 429, r.text
    assert "token" in r.json()["error"]["message"].lower()


def test_budget_stops_spending(up: FakeUpstream, gateway_factory: Any) -> None:
    cfg = priced_config(up.base_url)
    cfg["keys"][0]["budget_usd"] = 0.01
    cfg["keys"][0]["budget_period"] = "day"
    gw: GatewayProcess = gateway_factory(cfg)
    # 3000 input tokens at $3/M + 500 output at $15/M = $0.0165: over the $0.01 budget.
    up.enqueue(fa.message_response("pricey", usage={"input_tokens": 3000, "output_tokens": 500}))
    assert post(gw, "sg-alice-token").status_code == 200
    r = post(gw, "sg-alice-token")
    assert r.status_code == 402, r.text
    body = r.json()
    assert body["error"]["type"] == "billing_error" and "budget" in body["error"]["message"].lower()
    assert len(up.requests) == 1  # no upstream call once over budget


def test_budget_holds_across_a_restart(up: FakeUpstream) -> None:
    cfg = priced_config(
        up.base_url, limits={"projects": {"payments": {"budget_usd": 0.01, "budget_period": "day"}}}
    )
    cfg["keys"][0]["budget_usd"] = 0.01
    cfg["keys"][0]["budget_period"] = "day"
    # A second key of the same project, with no budget of its own: only the project's stops it.
    cfg["keys"].append({"name": "alice-ci", "token": "sg-alice-ci", "project": "payments", "models": ["*"]})
    first = GatewayProcess(cfg).start()
    try:
        # $0.0165 on the first request: both the key's and the project's $0.01 are spent.
        up.enqueue(fa.message_response("pricey", usage={"input_tokens": 3000, "output_tokens": 500}))
        assert post(first, "sg-alice-token").status_code == 200
        assert post(first, "sg-alice-token").status_code == 402
    finally:
        assert first.stop() == 0
    state = first.env["SLUICEGATE_STATE_DIR"]
    again = GatewayProcess(cfg, env={"SLUICEGATE_STATE_DIR": state}).start()
    try:
        calls = len(up.requests)
        for token in ("sg-alice-token", "sg-alice-ci"):
            r = post(again, token)
            assert r.status_code == 402, (token, r.text)
            assert r.json()["error"]["type"] == "billing_error"
            assert "budget" in r.json()["error"]["message"].lower()
        assert "project payments" in r.json()["error"]["message"]
        assert len(up.requests) == calls  # no upstream call after the restart either
        assert post(again, "sg-bob-token").status_code == 200  # no budget: unaffected
        assert any(rec.get("message") == "budgets seeded from the ledger" for rec in again.log_records()), (
            again.logs()
        )
    finally:
        again.stop()


def test_two_gateways_share_one_rpm_through_redis(
    up: FakeUpstream, gateway_factory: Any, redis_url: str
) -> None:
    cfg = priced_config(up.base_url, limits={"backend": redis_url, "key_prefix": f"t{time.time_ns()}"})
    cfg["keys"][0]["rpm"] = 10
    a: GatewayProcess = gateway_factory(cfg)
    b: GatewayProcess = gateway_factory(cfg)
    statuses = [post(gw, "sg-alice-token").status_code for _ in range(8) for gw in (a, b)]
    assert statuses.count(200) == 10 and statuses.count(429) == 6, statuses


def samples(gw: GatewayProcess) -> dict[str, float]:
    """The scrape as {'name{labels}': value}."""
    r = httpx.get(gw.url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_redis_down_follows_policy(
    up: FakeUpstream,
    gateway_factory: Any,
    redis_server: Any,
    policy: str,
) -> None:
    cfg = priced_config(
        up.base_url, limits={"backend": redis_server.url, "on_backend_error": policy, "timeout_s": 0.3}
    )
    cfg["keys"][0]["rpm"] = 100
    gw: GatewayProcess = gateway_factory(cfg)
    assert post(gw, "sg-alice-token").status_code == 200
    before = samples(gw)
    assert before["sluicegate_limiter_backend_up"] == 1
    assert before.get("sluicegate_limiter_degraded_total", 0) == 0
    with redis_server.down():
        r = post(gw, "sg-alice-token")
        if policy == "open":
            assert r.status_code == 200
        else:
            assert r.status_code == 503 and r.json()["error"]["type"] == "api_error"
            assert r.headers["retry-after"] == "5"
        during = samples(gw)
        assert during["sluicegate_limiter_backend_up"] == 0
        assert during["sluicegate_limiter_degraded_total"] >= 1
        assert during["sluicegate_limiter_backend_errors_total"] >= 1
        decision = "degraded" if policy == "open" else "limits_unavailable"
        assert during[f'sluicegate_limiter_decisions_total{{decision="{decision}"}}'] >= 1
        said = [rec for rec in gw.log_records() if rec.get("message") == "limits backend unavailable"]
        assert len(said) == 1, gw.logs()  # once per outage, not per request
        assert said[0]["policy"].startswith("fail open" if policy == "open" else "fail closed")
    # Back: once the one-second pause is over, requests go through Redis again and the gauge says so.
    deadline = time.monotonic() + 10
    while samples(gw)["sluicegate_limiter_backend_up"] != 1:
        assert time.monotonic() < deadline, "the limiter never found Redis again"
        time.sleep(0.3)
        post(gw, "sg-alice-token")
    assert post(gw, "sg-alice-token").status_code == 200
    assert any(rec.get("message") == "limits backend available again" for rec in gw.log_records())


def cost_of(inp: int, out: int, cache_write: int = 0, cache_read: int = 0) -> float:
    return (
        inp * PRICE["input"]
        + out * PRICE["output"]
        + cache_write * PRICE["cache_write"]
        + cache_read * PRICE["cache_read"]
    ) / 1e6


def test_every_request_leaves_one_record_with_right_tokens_and_cost(
    up: FakeUpstream, gateway_factory: Any
) -> None:
    oa = FakeUpstream("openai-up").start()
    try:
        cfg = priced_config(up.base_url)
        cfg["providers"]["oa"] = {"type": "openai", "base_url": oa.base_url + "/v1", "flavor": "vllm"}
        cfg["providers"]["oa-nousage"] = {
            "type": "openai",
            "base_url": oa.base_url + "/v1",
            "flavor": "llamacpp",
            "include_usage": False,
        }
        cfg["models"]["local"] = {"targets": [{"provider": "oa", "model": "qwen", "price": PRICE}]}
        cfg["models"]["local-nousage"] = {
            "targets": [{"provider": "oa-nousage", "model": "gguf", "price": PRICE}]
        }
        cfg["keys"][1]["models"] = ["*"]
        cfg["keys"] += [
            {"name": "carol", "token": "sg-carol", "models": ["*"], "rpm": 1},
            {"name": "dan", "token": "sg-dan", "models": ["*"], "budget_usd": 0.0001, "budget_period": "day"},
        ]
        gw: GatewayProcess = gateway_factory(cfg)
        hdr = {"x-claude-code-session-id": "sess-mixed"}
        cached = {
            "input_tokens": 100,
            "output_tokens": 20,
            "cache_creation_input_tokens": 1000,
            "cache_read_input_tokens": 5000,
        }

        def chat(token: str, body: dict[str, Any]) -> httpx.Response:
            return httpx.post(
                gw.url + "/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {token}", **hdr},
                timeout=10,
            )

        def stream_text(url: str, token: str, body: dict[str, Any]) -> str:
            with httpx.stream(
                "POST", gw.url + url, json=body, headers={"x-api-key": token, **hdr}, timeout=10
            ) as r:
                assert r.status_code == 200
                return r.read().decode()

        user = [{"role": "user", "content": "x"}]
        # 1, 2: Anthropic whole and streamed, with cache tokens.
        up.enqueue(fa.message_response("plain", usage=cached))
        assert post(gw, "sg-alice-token", headers=hdr).status_code == 200
        up.enqueue(fa.sse_response(fa.Text("streamed", pieces=3), usage=cached))
        assert post(gw, "sg-alice-token", {**MSG, "stream": True}, headers=hdr).status_code == 200
        # 3: the upstream refuses.
        up.enqueue(fa.error_response(400, "invalid_request_error", "bad"))
        assert post(gw, "sg-alice-token", headers=hdr).status_code == 400
        # 4: the client leaves after the first event (the upstream pauses after message_start).
        up.enqueue(fa.sse_response(fa.Text("slow", pieces=3), pauses={0: 5.0}, usage=cached))
        with httpx.stream(
            "POST",
            gw.url + "/v1/messages",
            json={**MSG, "stream": True},
            headers={"x-api-key": "sg-alice-token", **hdr},
            timeout=10,
        ) as r:
            next(r.iter_lines())
        up.wait_for_disconnect()
        # 5: an error event in the middle of the stream (Anthropic's overloaded).
        frames = fa.sse_stream(fa.Text("half", pieces=2), usage=cached)
        up.enqueue([Status(200, fa.SSE_HEADERS), *(Send(f) for f in frames[:4]), Send(fa.sse_error_event())])
        text = stream_text("/v1/messages", "sg-alice-token", {**MSG, "stream": True})
        assert "event: error" in text and "message_stop" not in text
        # 6: translated to an OpenAI-format server that reports cached prompt tokens.
        oa.enqueue(
            fo.sse_response(
                "local", usage={"prompt_tokens": 1200, "completion_tokens": 345, "cached_tokens": 1000}
            )
        )
        stream_text("/v1/messages", "sg-bob-token", {**MSG, "model": "local", "stream": True})
        # 7: translated to a server that sends no usage chunk: the output is estimated.
        oa.enqueue(fo.sse_response("a b c", content_pieces=3))
        nousage_body = {**MSG, "model": "local-nousage", "stream": True}
        stream_text("/v1/messages", "sg-bob-token", nousage_body)
        nousage_in = _native.count_tokens_estimate(orjson.dumps(nousage_body))
        assert nousage_in > 0
        # 8, 9: chat pass-through, streamed without include_usage, and whole.
        oa.enqueue(fo.sse_response("pass", usage={"prompt_tokens": 50, "completion_tokens": 7}))
        r = chat("sg-bob-token", {"model": "local", "stream": True, "messages": user})
        assert r.status_code == 200 and '"usage"' not in r.text and r.text.endswith("data: [DONE]\n\n")
        oa.enqueue(fo.completion_response("whole", usage={"prompt_tokens": 30, "completion_tokens": 4}))
        assert chat("sg-bob-token", {"model": "local", "messages": user}).status_code == 200
        # 10: chat translated to the Anthropic target, with cache tokens and the usage chunk asked for.
        up.enqueue(fa.sse_response(fa.Text("translated", pieces=2), usage=cached))
        r = chat(
            "sg-bob-token",
            {
                "model": "big-coder",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": user,
            },
        )
        usage_chunk = orjson.loads(r.text.split("data: ")[-2])
        assert usage_chunk["usage"]["prompt_tokens"] == 6100
        # 11, 12: a rate limit; 13, 14: a budget crossed, then refused.
        up.enqueue(fa.message_response("ok", usage={"input_tokens": 10, "output_tokens": 2}))
        assert post(gw, "sg-carol", headers=hdr).status_code == 200
        assert post(gw, "sg-carol", headers=hdr).status_code == 429
        up.enqueue(fa.message_response("ok", usage={"input_tokens": 100, "output_tokens": 20}))
        assert post(gw, "sg-dan", headers=hdr).status_code == 200
        assert post(gw, "sg-dan", headers=hdr).status_code == 402
        # 15-18: refused by the gateway itself.
        assert post(gw, "sg-nobody", headers=hdr).status_code == 401
        assert post(gw, "sg-alice-token", {**MSG, "model": "other"}, headers=hdr).status_code == 403
        assert post(gw, "sg-alice-token", {**MSG, "model": "nope"}, headers=hdr).status_code == 404
        assert (
            httpx.get(gw.url + "/v1/messages", headers={"x-api-key": "sg-alice-token", **hdr}).status_code
            == 405
        )
        assert len(up.requests) == 8 and len(oa.requests) == 4  # nothing refused went upstream

        expected = [
            # endpoint, status, stream, key, group, (input, output, cache write, cache read),
            # error type, client disconnected, usage estimated
            ("messages", 200, False, "alice", "big-coder", (100, 20, 1000, 5000), None, False, False),
            ("messages", 200, True, "alice", "big-coder", (100, 20, 1000, 5000), None, False, False),
            ("messages", 400, False, "alice", "big-coder", (0, 0, 0, 0), "upstream_400", False, False),
            # What was tallied when the client left: message_start's usage (1 output token).
            (
                "messages",
                200,
                True,
                "alice",
                "big-coder",
                (100, 1, 1000, 5000),
                "client_disconnected",
                True,
                False,
            ),
            (
                "messages",
                200,
                True,
                "alice",
                "big-coder",
                (100, 1, 1000, 5000),
                "stream_error_event",
                False,
                False,
            ),
            ("messages", 200, True, "bob", "local", (200, 345, 0, 1000), None, False, False),
            # The role chunk and three pieces of text; the input estimated as count_tokens would.
            ("messages", 200, True, "bob", "local-nousage", (nousage_in, 4, 0, 0), None, False, True),
            ("chat_completions", 200, True, "bob", "local", (50, 7, 0, 0), None, False, False),
            ("chat_completions", 200, False, "bob", "local", (30, 4, 0, 0), None, False, False),
            ("chat_completions", 200, True, "bob", "big-coder", (100, 20, 1000, 5000), None, False, False),
            ("messages", 200, False, "carol", "big-coder", (10, 2, 0, 0), None, False, False),
            ("messages", 429, False, "carol", "big-coder", (0, 0, 0, 0), "rate_limit_error", False, False),
            ("messages", 200, False, "dan", "big-coder", (100, 20, 0, 0), None, False, False),
            ("messages", 402, False, "dan", "big-coder", (0, 0, 0, 0), "billing_error", False, False),
            ("messages", 401, False, None, None, (0, 0, 0, 0), "authentication_error", False, False),
            ("messages", 403, False, "alice", "other", (0, 0, 0, 0), "permission_error", False, False),
            ("messages", 404, False, "alice", None, (0, 0, 0, 0), "not_found_error", False, False),
            ("messages", 405, False, "alice", None, (0, 0, 0, 0), "invalid_request_error", False, False),
        ]
        wait_rows(gw, len(expected))
        time.sleep(1.0)  # a second record for any request would have arrived by now
        rows = ledger_rows(gw)
        got = [
            (
                r["endpoint"],
                r["status"],
                bool(r["stream"]),
                r["key_name"],
                r["model_group"],
                (r["input_tokens"], r["output_tokens"], r["cache_creation_tokens"], r["cache_read_tokens"]),
                r["error_type"],
                bool(r["client_disconnected"]),
                bool(r["usage_estimated"]),
            )
            for r in rows
        ]
        assert got == expected
        assert all(r["session_id"] == "sess-mixed" for r in rows)
        for row, want in zip(rows, expected, strict=True):
            assert row["cost_usd"] == pytest.approx(cost_of(*want[5]), rel=1e-12, abs=1e-15), want
        assert rows[3]["cost_usd"] == pytest.approx((100 * 3.0 + 1 * 15.0 + 1000 * 3.75 + 5000 * 0.30) / 1e6)
        report = cli(gw, "usage", "--by", "session", "--format", "json")
        assert report.returncode == 0, report.stderr
        (sess,) = orjson.loads(report.stdout)
        assert sess["requests"] == len(expected)
        assert sess["cost_usd"] == pytest.approx(sum(cost_of(*w[5]) for w in expected))
    finally:
        oa.stop()


def test_requests_refused_before_routing_leave_one_record_each(
    up: FakeUpstream, gateway_factory: Any
) -> None:
    gw: GatewayProcess = gateway_factory(priced_config(up.base_url))
    alice = {"x-api-key": "sg-alice-token", "x-claude-code-session-id": "sess-refused"}
    assert httpx.get(gw.url + "/v1/messages", headers=alice).status_code == 405
    assert httpx.get(gw.url + "/v1/messages/count_tokens", headers=alice).status_code == 405
    r = httpx.get(gw.url + "/v1/chat/completions", headers={"authorization": "Bearer sg-bob-token"})
    assert r.status_code == 405 and "error" in r.json()
    assert httpx.post(gw.url + "/v1/nope", json={}).status_code == 404
    r = httpx.post(gw.url + "/v1/completions", json={}, headers={"authorization": "Bearer sg-wrong"})
    assert r.status_code == 404
    # Not API endpoints: never recorded.
    for path in ("/", "/healthz", "/readyz", "/metrics"):
        assert httpx.get(gw.url + path).status_code == 200, path
    assert httpx.get(gw.url + "/favicon.ico").status_code == 404
    wait_rows(gw, 5)
    time.sleep(1.0)  # anything recorded late would show up now
    rows = ledger_rows(gw)
    assert [(r["endpoint"], r["status"], r["user_name"], r["key_name"]) for r in rows] == [
        ("messages", 405, "alice", "alice"),
        ("count_tokens", 405, "alice", "alice"),
        ("chat_completions", 405, "bob", "bob"),
        ("unknown", 404, None, None),
        ("unknown", 404, None, None),
    ]
    assert [r["session_id"] for r in rows[:2]] == ["sess-refused", "sess-refused"]
    assert {r["error_type"] for r in rows} == {"invalid_request_error", "not_found_error"}
    assert all(r["cost_usd"] == 0 and r["input_tokens"] == 0 for r in rows)
    assert up.requests == []


def test_ledger_survives_clean_shutdown_under_load(up: FakeUpstream) -> None:
    cfg = priced_config(up.base_url, ledger={"flush_interval_s": 30})
    gw = GatewayProcess(cfg).start()
    sent: list[int] = []

    def load() -> None:
        with httpx.Client(timeout=10) as c:
            for _ in range(60):
                try:
                    r = c.post(gw.url + "/v1/messages", json=MSG, headers={"x-api-key": "sg-alice-token"})
                except httpx.HTTPError:
                    return
                sent.append(r.status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert gw.stop() == 0
    for t in threads:
        t.join(10)
    ok = sent.count(200)
    assert ok > 10
    rows = ledger_rows(gw)
    assert len([r for r in rows if r["status"] == 200]) == ok


def test_postgres_ledger_and_outage(up: FakeUpstream, gateway_factory: Any, postgres_server: Any) -> None:
    url = postgres_server.new_database()
    cfg = priced_config(up.base_url, ledger={"url": url, "flush_interval_s": 0.2})
    gw: GatewayProcess = gateway_factory(cfg)
    assert post(gw, "sg-alice-token").status_code == 200
    with postgres_server.down():
        t0 = time.monotonic()
        statuses = [post(gw, "sg-alice-token").status_code for _ in range(5)]
        assert statuses == [200] * 5
        assert time.monotonic() - t0 < 5
    import psycopg

    deadline = time.monotonic() + 20
    count = 0
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url) as conn:
                count = conn.execute("SELECT count(*) FROM usage_records").fetchone()[0]  # type: ignore[index]
        except psycopg.Error:
            count = 0
        if count >= 6:
            break
        time.sleep(0.3)
    assert count == 6


def test_metrics_endpoint(up: FakeUpstream, gateway_factory: Any) -> None:
    # A queue of two that is not flushed during the test: the third record is dropped, counted.
    cfg = priced_config(up.base_url, ledger={"queue_max": 2, "flush_interval_s": 60})
    cfg["keys"][0]["rpm"] = 100
    gw: GatewayProcess = gateway_factory(cfg)
    usage = {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 5000,
    }
    up.enqueue(fa.message_response("plain", usage=usage))
    up.enqueue(fa.sse_response(fa.Text("streamed", pieces=2), usage=usage))
    assert post(gw, "sg-alice-token").status_code == 200
    assert post(gw, "sg-nobody").status_code == 401
    assert post(gw, "sg-alice-token", {**MSG, "stream": True}).status_code == 200
    s = samples(gw)
    g = 'group="big-coder",target="up/claude-sonnet-4-6"'
    assert s[f'sluicegate_requests_total{{{g},status="200"}}'] == 2
    assert s['sluicegate_requests_total{group="",target="",status="401"}'] == 1
    assert s['sluicegate_errors_total{group="",target="",error_type="authentication_error"}'] == 1
    # Histograms: both answered requests have a first byte; the 401 only a duration.
    assert s[f"sluicegate_ttfb_seconds_count{{{g}}}"] == 2
    assert s[f'sluicegate_ttfb_seconds_bucket{{{g},le="+Inf"}}'] == 2
    assert 0 < s[f"sluicegate_ttfb_seconds_sum{{{g}}}"] < 10
    assert s[f"sluicegate_request_duration_seconds_count{{{g}}}"] == 2
    assert s['sluicegate_request_duration_seconds_count{group="",target=""}'] == 1
    assert 'sluicegate_ttfb_seconds_count{group="",target=""}' not in s
    tokens = {k: s[f'sluicegate_tokens_total{{{g},kind="{k}"}}'] for k in ("input", "output")}
    tokens |= {k: s[f'sluicegate_tokens_total{{{g},kind="{k}"}}'] for k in ("cache_creation", "cache_read")}
    assert tokens == {"input": 200, "output": 40, "cache_creation": 2000, "cache_read": 10000}
    one = (100 * 3.0 + 20 * 15.0 + 1000 * 3.75 + 5000 * 0.30) / 1e6
    assert s[f"sluicegate_cost_usd_total{{{g}}}"] == pytest.approx(2 * one)
    assert s["sluicegate_streams_in_flight"] == 0
    assert s['sluicegate_limiter_decisions_total{decision="admitted"}'] == 2
    assert s['sluicegate_target_health{target="up/claude-sonnet-4-6",state="closed"}'] == 1
    assert s['sluicegate_target_health{target="up/claude-sonnet-4-6",state="open"}'] == 0
    assert s["sluicegate_ledger_queue_depth"] == 2 and s["sluicegate_ledger_dropped_total"] == 1
    assert s["sluicegate_ledger_written_total"] == 0 and s["sluicegate_ledger_store_up"] == 1
    assert s["sluicegate_limiter_backend_up"] == 1


def test_breaker_state_in_metrics_with_two_workers(up: FakeUpstream) -> None:
    gw = GatewayProcess(priced_config(up.base_url), workers=2).start()
    try:
        target = "up/claude-sonnet-4-6"
        for _ in range(10):  # new connections: both workers route to the target (closed)
            assert post(gw, "sg-alice-token").status_code == 200
        # One 429 with retry-after opens the breaker in whichever worker served it.
        up.enqueue(fa.error_response(429, "rate_limit_error", "slow down", {"retry-after": "120"}))
        assert post(gw, "sg-alice-token").status_code == 429
        deadline = time.monotonic() + 10
        s = samples(gw)
        while s.get(f'sluicegate_target_health{{target="{target}",state="open"}}') != 1:
            assert time.monotonic() < deadline, s
            time.sleep(0.2)
            s = samples(gw)
        # Once each worker has published again (every second), every scrape, whichever worker
        # answers it, says open (the worst state), not closed from the worker that had no 429.
        time.sleep(1.5)
        for _ in range(20):
            s = samples(gw)
            assert s[f'sluicegate_target_health{{target="{target}",state="open"}}'] == 1, s
            assert s[f'sluicegate_target_health{{target="{target}",state="closed"}}'] == 0
            assert s[f'sluicegate_requests_total{{group="big-coder",target="{target}",status="200"}}'] == 10
            assert s[f'sluicegate_requests_total{{group="big-coder",target="{target}",status="429"}}'] == 1
    finally:
        gw.stop()


def test_admin_api(up: FakeUpstream, gateway_factory: Any) -> None:
    admin_token = "admin-token-0123456789"
    gw: GatewayProcess = gateway_factory(
        priced_config(up.base_url, admin={"token": admin_token}, keystore={"refresh_s": 0.3})
    )
    assert (
        httpx.get(gw.url + "/admin/keys", headers={"authorization": "Bearer sg-bob-token"}).status_code == 401
    )
    r = httpx.post(
        gw.url + "/admin/keys",
        json={"user": "dave", "project": "infra", "models": ["*"]},
        headers={"authorization": f"Bearer {admin_token}"},
    )
    assert r.status_code in (200, 201), r.text
    token = r.json()["token"]
    deadline = time.monotonic() + 5
    while post(gw, token).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert post(gw, token).status_code == 200
    auth = {"authorization": f"Bearer {admin_token}"}
    dave_ok = 2  # the 200 that ended the wait, and the one after it
    deadline = time.monotonic() + 10
    dave: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        usage = httpx.get(gw.url + "/admin/usage?by=user", headers=auth)
        assert usage.status_code == 200
        dave = [row for row in usage.json()["rows"] if row["user"] == "dave"]
        if dave and dave[0]["requests"] >= dave_ok:
            break
        time.sleep(0.2)
    assert dave and dave[0]["requests"] == dave_ok and dave[0]["errors"] == 0, dave
    key_id = r.json()["key"]["key_id"]
    assert httpx.post(gw.url + f"/admin/keys/{key_id}/revoke", headers=auth).status_code == 200
    deadline = time.monotonic() + 5
    while post(gw, token).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert post(gw, token).status_code == 401
    assert admin_token not in gw.logs() and token not in gw.logs()


def test_cost_reported_by_the_upstream_is_recorded(gateway_factory: Any) -> None:
    with FakeUpstream("router") as oa:
        cfg = {
            "providers": {"router": {"type": "openai", "base_url": oa.base_url + "/v1"}},
            "models": {"g": {"targets": [{"provider": "router", "model": "m", "price": PRICE}]}},
            "keys": [{"name": "k", "token": "sg-k"}],
        }
        gw: GatewayProcess = gateway_factory(cfg)
        oa.enqueue(
            fo.sse_response("hi", usage={"prompt_tokens": 10, "completion_tokens": 2, "cost": 0.00042})
        )
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "g", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": "Bearer sg-k"},
        )
        assert r.status_code == 200
        (row,) = wait_rows(gw, 1)
        assert row["upstream_cost_usd"] == pytest.approx(0.00042)
        assert row["cost_usd"] == pytest.approx((10 * 3.0 + 2 * 15.0) / 1e6)
