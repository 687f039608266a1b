"""The upstream keep-alive pool across bursts: the connections a burst of concurrent streams
leaves idle are there for the next burst, so it opens none of its own (each new connection is a
handshake, and to a TLS upstream a TLS one)."""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import GatewayProcess
from fakes import FakeUpstream
from fakes import anthropic as fa

# More than the pool once kept idle (512), so a burst this size tells a bound that is too small.
BURST = 600
MSG = {"model": "g", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stream": True}


def config(url: str) -> dict[str, Any]:
    return {
        "providers": {"up": {"type": "anthropic", "base_url": url, "api_key": "sk-up"}},
        "models": {"g": {"targets": [{"provider": "up", "model": "claude-sonnet-4-6"}]}},
        "keys": [{"name": "k", "token": "sg-k"}],
    }


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The burst's client and fake-upstream sockets live in this process: ~4 per stream.
    if min(hard, 8192) > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4 * BURST + 256:
        pytest.skip("the open-files limit is too low for a burst of this size")
    with FakeUpstream("bursts") as u:
        # Every stream holds its first event for a while, so the whole burst is open at once.
        u.script(lambda req: fa.sse_response("hi", pauses={0: 1.5}))
        yield u


async def burst(port: int) -> list[bool]:
    """BURST concurrent streams, each on its own connection (raw sockets: httpx's async client
    alone would spend ~10 s of this test's CPU on 1,200 streams); True for each that completed."""
    body = json.dumps(MSG).encode()
    request = (
        b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nx-api-key: sg-k\r\n"
        b"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )

    async def one() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(-1), 30)
        writer.close()
        return answer.startswith(b"HTTP/1.1 200") and b"message_stop" in answer

    return await asyncio.gather(*(one() for _ in range(BURST)))


def test_a_second_burst_reuses_the_connections_of_the_first(up: FakeUpstream) -> None:
    gw = GatewayProcess(config(up.base_url)).start()
    try:
        assert all(asyncio.run(burst(gw.port)))
        first = up.connections
        assert first >= BURST - 5  # the burst was concurrent: about one connection a stream
        assert all(asyncio.run(burst(gw.port)))
        assert up.connections == first, f"the second burst opened {up.connections - first} connections"
    finally:
        gw.stop()
