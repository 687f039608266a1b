"""Capability filtering before target selection: a request carrying an image (in user content,
inside a tool_result, or as an OpenAI image_url part) never reaches a text-only target; tools
only go to targets that support them; when nothing qualifies, a 400 in the API's own shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from conftest import GatewayProcess
from fakes import FakeUpstream

HEADERS = {"x-api-key": "sg-k", "anthropic-version": "2023-06-01"}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
TOOL = {"name": "Read", "description": "read a file", "input_schema": {"type": "object"}}


@pytest.fixture(scope="module")
def ups() -> Iterator[dict[str, FakeUpstream]]:
    names = ("text", "vision", "otext", "ovision")
    servers = {n: FakeUpstream(n).start() for n in names}
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def gw(ups: dict[str, FakeUpstream]) -> Iterator[GatewayProcess]:
    cfg = {
        "providers": {
            "text": {"type": "anthropic", "base_url": ups["text"].base_url, "api_key": "sk-t"},
            "vision": {"type": "anthropic", "base_url": ups["vision"].base_url, "api_key": "sk-v"},
            "otext": {"type": "openai", "base_url": ups["otext"].base_url + "/v1", "api_key": "sk-ot"},
            "ovision": {"type": "openai", "base_url": ups["ovision"].base_url + "/v1", "api_key": "sk-ov"},
        },
        "models": {
            # The text-only target is first: only the capability filter keeps images away from it.
            "mixed": {
                "targets": [
                    {"provider": "text", "model": "text-model", "input_modalities": ["text"]},
                    {"provider": "vision", "model": "vision-model"},
                ]
            },
            "oai": {
                "targets": [
                    {"provider": "otext", "model": "qwen-coder"},  # openai targets default to [text]
                    {"provider": "ovision", "model": "qwen-vl", "input_modalities": ["text", "image"]},
                ]
            },
            "textonly": {"targets": [{"provider": "text", "input_modalities": ["text"]}]},
            "notools": {"targets": [{"provider": "text", "supports_tools": False}]},
            # Without tools the first target serves; only the filter keeps tools away from it.
            "tools-later": {
                "targets": [
                    {"provider": "text", "model": "no-tools-model", "supports_tools": False},
                    {"provider": "vision", "model": "tools-model"},
                ]
            },
        },
        "keys": [{"name": "k", "token": "sg-k"}],
    }
    g = GatewayProcess(cfg).start()
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def _fresh(ups: dict[str, FakeUpstream]) -> None:
    for s in ups.values():
        s.clear()


def counts(ups: dict[str, FakeUpstream]) -> dict[str, int]:
    return {n: len(s.requests) for n, s in ups.items()}


def messages(gw: GatewayProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gw.url + "/v1/messages", json=body, headers=HEADERS, timeout=10)


def test_text_goes_to_the_first_target(gw: GatewayProcess, ups: dict[str, FakeUpstream]) -> None:
    r = messages(gw, {"model": "mixed", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert counts(ups) == {"text": 1, "vision": 0, "otext": 0, "ovision": 0}


def test_image_in_user_content_skips_the_text_only_target(
    gw: GatewayProcess, ups: dict[str, FakeUpstream]
) -> None:
    sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0)
    with sdk.messages.stream(
        model="mixed",
        max_tokens=5,
        messages=[{"role": "user", "content": [IMAGE, {"type": "text", "text": "what is this?"}]}],  # type: ignore[list-item]
    ) as s:
        assert "".join(s.text_stream) == "Hello from fake upstream"
    assert counts(ups) == {"text": 0, "vision": 1, "otext": 0, "ovision": 0}
    assert ups["vision"].requests[0].json["model"] == "vision-model"


def test_image_inside_a_tool_result_skips_the_text_only_target(
    gw: GatewayProcess, ups: dict[str, FakeUpstream]
) -> None:
    body = {
        "model": "mixed",
        "max_tokens": 5,
        "tools": [TOOL],
        "messages": [
            {"role": "user", "content": "look at the screenshot"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "screenshot.png"}, IMAGE],
                    }
                ],
            },
        ],
    }
    r = messages(gw, body)
    assert r.status_code == 200, r.text
    assert counts(ups) == {"text": 0, "vision": 1, "otext": 0, "ovision": 0}


def test_openai_image_url_goes_to_the_image_capable_target(
    gw: GatewayProcess, ups: dict[str, FakeUpstream]
) -> None:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="sg-k", max_retries=0)
    parts: Any = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    done = client.chat.completions.create(model="oai", messages=[{"role": "user", "content": parts}])
    assert done.choices[0].message.content
    assert counts(ups) == {"text": 0, "vision": 0, "otext": 0, "ovision": 1}
    assert ups["ovision"].requests[0].json["model"] == "qwen-vl"
    # Plain text to the same group: the first (text-only) target.
    client.chat.completions.create(model="oai", messages=[{"role": "user", "content": "hi"}])
    assert counts(ups) == {"text": 0, "vision": 0, "otext": 1, "ovision": 1}
    # An OpenAI-format request for an Anthropic-format group is translated; the filter still applies.
    client.chat.completions.create(model="mixed", messages=[{"role": "user", "content": parts}])
    assert counts(ups) == {"text": 0, "vision": 1, "otext": 1, "ovision": 1}


def test_no_qualifying_target_is_a_clear_400_in_each_api_shape(
    gw: GatewayProcess, ups: dict[str, FakeUpstream]
) -> None:
    r = messages(
        gw, {"model": "textonly", "max_tokens": 5, "messages": [{"role": "user", "content": [IMAGE, IMAGE]}]}
    )
    assert r.status_code == 400
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    msg = err["error"]["message"]
    assert "'textonly'" in msg and "image input" in msg and "2 images" in msg

    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={
            "model": "textonly",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}],
                }
            ],
        },
        headers={"authorization": "Bearer sg-k"},
        timeout=10,
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert (
        err["type"] == "invalid_request_error"
        and "'textonly'" in err["message"]
        and "image" in err["message"]
    )

    r = messages(
        gw,
        {
            "model": "notools",
            "max_tokens": 5,
            "tools": [TOOL],
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert r.status_code == 400
    assert "'notools'" in r.json()["error"]["message"] and "supports tools" in r.json()["error"]["message"]
    assert sum(counts(ups).values()) == 0
    # The same group without tools is served.
    r = messages(gw, {"model": "notools", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200


def test_tools_request_skips_the_target_without_tool_support(
    gw: GatewayProcess, ups: dict[str, FakeUpstream]
) -> None:
    sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0)
    with sdk.messages.stream(
        model="tools-later",
        max_tokens=5,
        tools=[TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "read a.txt"}],
    ) as s:
        assert "".join(s.text_stream) == "Hello from fake upstream"
    assert counts(ups) == {"text": 0, "vision": 1, "otext": 0, "ovision": 0}
    sent = ups["vision"].requests[0].json
    assert sent["model"] == "tools-model" and sent["tools"] == [TOOL]
    # The same conversation without tools goes to the first target.
    msg = sdk.messages.create(model="tools-later", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "Hello from fake upstream"  # type: ignore[union-attr]
    assert counts(ups) == {"text": 1, "vision": 1, "otext": 0, "ovision": 0}
    assert ups["text"].requests[0].json["model"] == "no-tools-model"
    # An empty tools array asks for no tools; through the OpenAI API the filter applies as well.
    messages(
        gw,
        {
            "model": "tools-later",
            "max_tokens": 5,
            "tools": [],
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert counts(ups) == {"text": 2, "vision": 1, "otext": 0, "ovision": 0}
    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="sg-k", max_retries=0)
    oai.chat.completions.create(
        model="tools-later",
        messages=[{"role": "user", "content": "read a.txt"}],
        tools=[{"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}}],
    )
    assert counts(ups) == {"text": 2, "vision": 2, "otext": 0, "ovision": 0}
