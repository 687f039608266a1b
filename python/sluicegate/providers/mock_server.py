"""`sluicegate mock-upstream`: a fast fake upstream in both API formats, for load tests and demos.

`POST /v1/messages` (and `/v1/messages/count_tokens`) answers in Anthropic's format,
`POST /v1/chat/completions` (also `/chat/completions`) in OpenAI's; `stream: true` in the body
selects SSE. Pacing is chosen per request with headers, so one server serves every scenario:

- `x-mock-events`: number of text deltas (default 10)
- `x-mock-interval-ms`: gap between events after the first flush (default 0: back to back,
  still one socket write per event)
- `x-mock-pause-after-first-ms`: stall after the first flush (an upstream that is thinking)
- `x-mock-text`: the answer text; `x-mock-text-bytes`: or just its length (~1 KB replies);
  by default six characters per event
- `x-mock-tool`: end with a tool call to this tool name
- `x-mock-status`: answer this error status instead (the API's error shape)

It is a plain asyncio protocol on uvloop rather than a web framework: a load generator and
this server share one core in the benchmark, so per event it does one timer callback and one
socket write of pre-encoded bytes. Answers for the same settings are encoded once and cached,
so message ids repeat across requests; that is fine for a load test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from typing import Any

import orjson

from .. import _native
from .mock import MockReply

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_CACHE_MAX = 512


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _head(status: int, content_type: bytes, length: int | None) -> bytes:
    framing = b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length
    reason = b"OK" if status == 200 else b"Mock"
    return (
        b"HTTP/1.1 %d %b\r\ncontent-type: %b\r\ncache-control: no-cache\r\n%brequest-id: req_mock\r\n\r\n"
        % (status, reason, content_type, framing)
    )


class _Answer:
    """Pre-encoded bytes of one answer: the head plus first flush, then the paced rest."""

    __slots__ = ("first", "rest", "whole")

    def __init__(self, first: bytes, rest: list[bytes], whole: bytes) -> None:
        self.first = first
        self.rest = rest
        self.whole = whole


_cache: dict[tuple[Any, ...], _Answer] = {}


def _answer(api: str, model: str, stream: bool, include_usage: bool, s: dict[str, Any]) -> _Answer:
    key = (api, model, stream, include_usage, s.get("events"), s.get("text"), s.get("tool"))
    ans = _cache.get(key)
    if ans is not None:
        return ans
    reply = MockReply(s, model)
    if not stream:
        body = reply.message() if api == "anthropic" else reply.openai_message()
        ans = _Answer(b"", [], _head(200, b"application/json", len(body)) + body)
    else:
        if api == "anthropic":
            events = reply.sse_events()
            # message_start and content_block_start go together, like a real first flush;
            # so do the closing events (block stop, message_delta, message_stop).
            first, rest = events[0] + events[1], [*events[2:-3], b"".join(events[-3:])]
        else:
            events = reply.openai_chunks(include_usage)
            closing = 3 if include_usage else 2  # finish chunk, usage chunk, [DONE]
            first, rest = events[0], [*events[1:-closing], b"".join(events[-closing:])]
        chunks = [_chunk(ev) for ev in rest]
        chunks[-1] += b"0\r\n\r\n"
        ans = _Answer(_head(200, b"text/event-stream", None) + _chunk(first), chunks, b"")
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[key] = ans
    return ans


def stream_records(api: str, model: str, headers: dict[str, str]) -> list[bytes]:
    """The bytes this server writes for a streaming request with these `x-mock-*` headers:
    the head with the first flush, then each later write. The benchmark's native mock
    (loadtests/native) replays them, so both fakes send the same answer."""
    h = {k.lower().encode(): v.encode() for k, v in headers.items()}
    ans = _answer(api, model, True, False, _settings(h))
    return [ans.first, *ans.rest]


def _error(api: str, status: int, message: str) -> bytes:
    if api == "openai":
        body = orjson.dumps({"error": {"message": message, "type": "mock_error", "code": status}})
    else:
        body = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}})
    return _head(status, b"application/json", len(body)) + body


def _settings(h: dict[bytes, bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if (v := h.get(b"x-mock-events")) is not None:
        out["events"] = max(1, int(v))
    if (v := h.get(b"x-mock-text")) is not None:
        out["text"] = v.decode()
    elif (v := h.get(b"x-mock-text-bytes")) is not None:
        n = max(1, int(v))
        out["text"] = ("lorem ipsum dolor sit amet " * (n // 27 + 1))[:n]
    if "text" not in out:
        # Enough text for every event to carry some: an empty delta is no event after translation.
        n = 6 * out.get("events", 10)
        out["text"] = ("lorem ipsum dolor sit amet " * (n // 27 + 1))[:n]
    if (v := h.get(b"x-mock-tool")) is not None:
        out["tool"] = v.decode()
    return out


class MockConnection(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive, one request at a time."""

    __slots__ = ("_buf", "_busy", "_interval", "_loop", "_rest", "_timer", "transport")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buf = b""
        self._busy = False
        self._rest: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._interval = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._rest = []
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        if not self._busy:
            self._serve_buffered()

    # -- requests -----------------------------------------------------------------------------
    def _serve_buffered(self) -> None:
        while not self._busy and self._buf and self.transport is not None:
            buf = self._buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self.transport.abort()
                return
            lines = buf[:end].split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3:
                self.transport.abort()
                return
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if length > _MAX_BODY:
                self.transport.abort()
                return
            start = end + 4
            if len(buf) < start + length:
                return
            body = buf[start : start + length]
            self._buf = buf[start + length :]
            self._handle(parts[0], parts[1], headers, body)

    def _handle(self, method: bytes, target: bytes, h: dict[bytes, bytes], body: bytes) -> None:
        t = self.transport
        assert t is not None
        path = target.split(b"?", 1)[0]
        if method == b"GET" and path in (b"/healthz", b"/"):
            t.write(_head(200, b"text/plain", 3) + b"ok\n")
            return
        if path.endswith(b"/chat/completions"):
            api = "openai"
        elif path.startswith(b"/v1/messages"):
            api = "anthropic"
        else:
            t.write(_error("anthropic", 404, "no route"))
            return
        if method != b"POST":
            t.write(_error(api, 405, "method not allowed"))
            return
        try:
            info = _native.inspect_request(body)
        except ValueError as exc:
            t.write(_error(api, 400, str(exc)))
            return
        if path.endswith(b"/count_tokens"):
            out = b'{"input_tokens":%d}' % max(1, len(body) // 4)
            t.write(_head(200, b"application/json", len(out)) + out)
            return
        if (v := h.get(b"x-mock-status")) is not None and v != b"200":
            t.write(_error(api, int(v), "mock error status"))
            return
        include_usage = api == "openai" and info.stream and b"include_usage" in body
        try:
            ans = _answer(api, info.model or "mock", info.stream, include_usage, _settings(h))
        except ValueError as exc:
            t.write(_error(api, 400, f"bad x-mock header: {exc}"))
            return
        if not info.stream:
            t.write(ans.whole)
            return
        t.write(ans.first)
        interval = float(h.get(b"x-mock-interval-ms", b"0")) / 1000.0
        pause = float(h.get(b"x-mock-pause-after-first-ms", b"0")) / 1000.0
        if not interval and not pause:
            for chunk in ans.rest:
                t.write(chunk)
            return
        self._busy = True
        self._rest = list(reversed(ans.rest))
        self._interval = interval
        self._timer = self._loop.call_later(pause or interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        t = self.transport
        if t is None:
            return
        rest = self._rest
        if self._interval:
            t.write(rest.pop())
        else:
            while rest:
                t.write(rest.pop())
        if rest:
            self._timer = self._loop.call_later(self._interval, self._tick)
            return
        self._busy = False
        if self._buf:
            self._serve_buffered()


async def serve(host: str, port: int, *, reuse_port: bool = False, ready: Any = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockConnection(loop), host, port, backlog=4096, reuse_port=reuse_port or None
    )
    if ready is not None:
        ready()
    stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    async with server:
        await stop


def _run_one(host: str, port: int, reuse_port: bool) -> None:
    try:
        import uvloop

        uvloop.run(serve(host, port, reuse_port=reuse_port))
    except ImportError:
        asyncio.run(serve(host, port, reuse_port=reuse_port))


def run(host: str, port: int, workers: int = 1) -> None:
    """Serve until SIGTERM/SIGINT; with workers > 1, that many processes share the port."""
    if workers <= 1:
        _run_one(host, port, False)
        return
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                _run_one(host, port, True)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(sig: int, _: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
