"""`sluicegate mock-upstream`: the mock provider as a standalone Anthropic-format server.

Used by load tests and benchmarks as a fast upstream. Pacing is chosen per request with
headers so one server serves every scenario: `x-mock-events` (text events),
`x-mock-interval-ms` (gap between events), `x-mock-pause-after-first-ms` (stall after the
first event), `x-mock-text`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from granian.constants import HTTPModes, Interfaces, Loops
from granian.server import Server

from .. import _native
from .mock import MockReply

_JSON = [("content-type", "application/json")]
_SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


def _settings(headers: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for header, key, cast in (
        ("x-mock-events", "events", int),
        ("x-mock-interval-ms", "interval_ms", float),
        ("x-mock-pause-after-first-ms", "pause_after_first_ms", float),
        ("x-mock-text", "text", str),
    ):
        value = headers.get(header)
        if value is not None:
            out[key] = cast(value)
    return out


class MockUpstream:
    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.method != "POST" or not scope.path.startswith("/v1/messages"):
            proto.response_bytes(404, _JSON, b'{"type":"error","error":{"type":"not_found_error","message":"no route"}}')
            return
        body = await proto()
        try:
            info = _native.inspect_request(body)
        except ValueError as exc:
            msg = str(exc).replace('"', "'")
            proto.response_bytes(400, _JSON, f'{{"type":"error","error":{{"type":"invalid_request_error","message":"{msg}"}}}}'.encode())
            return
        if scope.path.endswith("/count_tokens"):
            proto.response_bytes(200, _JSON, b'{"input_tokens":%d}' % max(1, len(body) // 4))
            return
        reply = MockReply(_settings(scope.headers), info.model or "mock")
        if not info.stream:
            proto.response_bytes(200, _JSON, reply.message())
            return
        transport = proto.response_stream(200, _SSE)
        try:
            async for chunk in reply.stream():
                await transport.send_bytes(chunk)
        except (asyncio.CancelledError, Exception):
            return


app = MockUpstream()


def run(host: str, port: int, workers: int = 1) -> None:
    Server(
        "sluicegate.providers.mock_server:app",
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        log_access=False,
        backlog=4096,
    ).serve()
