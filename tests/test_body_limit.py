"""The request body limit holds for uploads without a Content-Length (chunked): the gateway stops
reading at the limit and answers 413 in the API's own shape, and nothing reaches the upstream."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import GatewayProcess, anthropic_config
from fakes import FakeUpstream
from fakes import anthropic as fa

LIMIT = 4096


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    g = GatewayProcess(anthropic_config(up.base_url, server={"max_body_bytes": LIMIT})).start()
    yield g
    g.stop()


def _chunked(total: int, piece: int = 1024) -> Iterator[bytes]:
    head = b'{"model":"big-coder","max_tokens":5,"messages":[{"role":"user","content":"'
    yield head
    sent = len(head)
    while sent < total:
        yield b"a" * piece
        sent += piece
    yield b'"}]}'


def _post_chunked(gw: GatewayProcess, path: str, body: Iterator[bytes]) -> httpx.Response:
    headers = {"x-api-key": "sg-alice-token", "content-type": "application/json"}
    return httpx.post(gw.url + path, content=body, headers=headers, timeout=10)


def test_chunked_body_over_the_limit_is_refused_before_it_ends(gw: GatewayProcess, up: FakeUpstream) -> None:
    """The client sends more than the limit and then nothing: the body never ends, so only a
    gateway that stops reading at the limit can answer at all."""
    up.clear()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: sg-alice-token\r\n"
            b"content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        piece = b'{"model":"big-coder","messages":[{"role":"user","content":"' + b"a" * 1000
        for _ in range(LIMIT // 1000 + 2):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            assert data, "connection closed without an answer"
            head += data
    status_line, _, rest = head.partition(b"\r\n")
    assert status_line.split()[1] == b"413", head
    body = rest.split(b"\r\n\r\n", 1)[1]
    assert b'"request_too_large"' in body and f"{LIMIT} bytes".encode() in body
    assert up.requests == []


def test_chunked_body_over_the_limit_is_413_openai_shape(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.clear()
    r = _post_chunked(gw, "/v1/chat/completions", _chunked(LIMIT * 4))
    assert r.status_code == 413
    err: dict[str, Any] = r.json()["error"]
    assert "type" in err and f"{LIMIT} bytes" in err["message"]
    assert up.requests == []


def test_chunked_body_under_the_limit_is_served(gw: GatewayProcess, up: FakeUpstream) -> None:
    up.clear()
    up.enqueue(fa.message_response("small enough"))
    r = _post_chunked(gw, "/v1/messages", _chunked(LIMIT // 2))
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == "small enough"
    (req,) = up.requests
    assert len(req.body) < LIMIT and req.json["messages"][0]["content"].startswith("aaaa")
