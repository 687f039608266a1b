"""A per-target cap on max_tokens for OpenAI-format servers with small context windows."""

from __future__ import annotations

from typing import Any

import httpx
from conftest import GatewayProcess
from fakes import FakeUpstream
from fakes import openai as fo


def test_max_output_tokens_caps_what_the_server_gets(gateway_factory: Any) -> None:
    with FakeUpstream("vllm") as up:
        cfg = {
            "providers": {"local": {"type": "openai", "base_url": up.base_url + "/v1", "flavor": "vllm"}},
            "models": {
                "small": {"targets": [{"provider": "local", "model": "qwen-8b", "max_output_tokens": 1000}]},
                "big": {"targets": [{"provider": "local", "model": "qwen-72b"}]},
            },
            "keys": [{"name": "k", "token": "sg-k"}],
        }
        gw: GatewayProcess = gateway_factory(cfg)
        for model, n in (("small", 32000), ("small", 200), ("big", 32000)):
            up.enqueue(fo.sse_response("ok"))
            r = httpx.post(
                gw.url + "/v1/messages",
                json={
                    "model": model,
                    "max_tokens": n,
                    "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                },
                headers={"x-api-key": "sg-k"},
            )
            assert r.status_code == 200, r.text
        assert [req.json["max_tokens"] for req in up.requests] == [1000, 200, 32000]
