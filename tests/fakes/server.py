"""Fake upstream providers: small real HTTP/1.1 servers on loopback that record what they receive
and answer as each test scripts them, byte for byte and pause for pause.

Plain asyncio streams and a hand-written HTTP/1.1 parser (keep-alive, content-length and chunked
request bodies), each server on its own event loop in a background thread, so a test written in
ordinary blocking style can run the gateway, a client and any number of fakes side by side.

    up = FakeUpstream().start()
    up.enqueue(anthropic.sse_response("hi", pauses={0: 2.0}))
    ... point the gateway at up.base_url ...
    assert up.requests[0].json["model"] == "claude-sonnet-4-6"
    up.stop()

Answer order: the first queued response whose `path` matches, else the handler given to
`script()` (returning None falls through), else the default: an Anthropic-format answer
("Hello from fake upstream", the request's model echoed, streaming when the body says
`"stream": true`), an OpenAI-format one on /v1/chat/completions, count_tokens and /v1/models
answers, and an empty 200 on `HEAD /` and `GET /`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import anthropic, openai
from ._actions import Action, Close, Hang, Send, Sleep, Status, empty_response, header_list, json_response

Handler = Callable[["Request"], "Iterable[Action] | None"]

_POLL = 0.01  # how often a pause looks for the client having gone away
_REASONS = {529: "Overloaded"}


@dataclass
class Request:
    """One request as received. Times are time.monotonic()."""

    index: int
    connection: int  # which TCP connection it came on (same number = keep-alive reuse)
    method: str
    target: str  # path with query, as sent
    version: str
    headers: list[tuple[str, str]]  # in order, with the client's case
    head: bytes  # request line and headers exactly as received
    body: bytes
    received_at: float
    response_started_at: float | None = None  # first byte written
    response_finished_at: float | None = None  # script completed
    disconnected_at: float | None = None  # client went away before the script completed
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitive."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def header_names(self) -> list[str]:
        return [k for k, _ in self.headers]

    def summary(self) -> dict[str, Any]:
        """A JSON-able record for notes and debugging."""
        return {
            "method": self.method,
            "target": self.target,
            "headers": self.headers,
            "body_bytes": len(self.body),
            "json": self.json,
        }


@dataclass
class _Queued:
    actions: list[Action] | Handler
    path: str | None


class FakeUpstream:
    """A scriptable HTTP/1.1 server on 127.0.0.1, run in a background thread."""

    def __init__(self, name: str = "fake-upstream", handler: Handler | None = None) -> None:
        self.name = name
        self.port = 0
        self.requests: list[Request] = []
        self.connections = 0
        self.errors: list[BaseException] = []  # exceptions raised by handlers
        self._handler = handler
        self._queue: list[_Queued] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        ready.wait(5)
        asyncio.run_coroutine_threadsafe(self._listen(), loop).result(5)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> FakeUpstream:
        return self.start() if self._loop is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting ----------------------------------------------------------------------------

    def script(self, handler: Handler | None) -> FakeUpstream:
        """Answer with `handler(request)`: an action list, or None for the default answer."""
        self._handler = handler
        return self

    def enqueue(self, *responses: Iterable[Action] | Handler, path: str | None = None) -> FakeUpstream:
        """Answer the next requests (whose path, without query, equals `path` when given) with
        these responses, one each, in order. A response may be a handler (called with the request)."""
        with self._lock:
            for r in responses:
                self._queue.append(_Queued(r if callable(r) else list(r), path))
        return self

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self._queue.clear()

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[Request]:
        """Block until at least n requests have arrived; return them."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= n, timeout):
                raise TimeoutError(f"{self.name}: {len(self.requests)} requests after {timeout}s, wanted {n}")
            return list(self.requests)

    def wait_for_disconnect(self, index: int = -1, timeout: float = 10.0) -> float:
        """Block until request `index` has ended (completed or client gone); return when the
        client went away (monotonic), raising if it completed normally instead."""
        req = self.wait_for_requests(1 if index < 0 else index + 1, timeout)[index]
        if not req.done.wait(timeout):
            raise TimeoutError(f"{self.name}: request {req.index} still open after {timeout}s")
        if req.disconnected_at is None:
            raise AssertionError(f"{self.name}: request {req.index} completed without a disconnect")
        return req.disconnected_at

    def _pick(self, req: Request) -> list[Action]:
        with self._lock:
            for i, q in enumerate(self._queue):
                if q.path is None or q.path == req.path:
                    del self._queue[i]
                    chosen: list[Action] | Handler | None = q.actions
                    break
            else:
                chosen = None
        if callable(chosen):
            got = chosen(req)
            if got is not None:
                return list(got)
        elif chosen is not None:
            return chosen
        if self._handler is not None:
            got = self._handler(req)
            if got is not None:
                # A response that depends on the request (openai.sse_response) is asked for it.
                return list(got(req) if callable(got) else got)
        return default_response(req)

    # -- the connection -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Small writes must leave as separate segments, not wait for delayed ACKs.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # drain() then waits until every byte is handed to the kernel: a Send is on the wire
        # before the next action runs.
        writer.transport.set_write_buffer_limits(high=0)
        with self._lock:
            self.connections += 1
            conn = self.connections
        try:
            while True:
                req = await self._read_request(reader, writer, conn)
                if req is None:
                    break
                try:
                    keep = await self._respond(req, reader, writer)
                finally:
                    req.done.set()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int
    ) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        received = time.monotonic()
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k, v.strip(" \t")))
        lower = {k.lower(): v for k, v in headers}
        if lower.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = b""
        if "chunked" in lower.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        elif "content-length" in lower:
            body = await reader.readexactly(int(lower["content-length"]))
        with self._changed:
            req = Request(len(self.requests), conn, method, target, version, headers, head, body, received)
            self.requests.append(req)
            self._changed.notify_all()
        return req

    async def _respond(
        self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Run the script; True when the connection may serve another request."""
        try:
            actions = self._pick(req)
        except Exception as e:
            # A broken handler answers 500 with the traceback at once, instead of a client timeout.
            self.errors.append(e)
            text = "".join(traceback.format_exception(e))
            actions = json_response(
                500, {"type": "error", "error": {"type": "fake_handler_error", "message": text}}
            )
        client_close = (req.header("connection") or "").lower() == "close" or req.version == "HTTP/1.0"
        chunked = False
        length_given = False
        close_at_end = True  # until a status line says otherwise
        status_sent = False
        is_head = req.method == "HEAD"
        no_body = is_head  # also for 1xx, 204 and 304 answers (set at the Status)

        def gone() -> bool:
            return reader.at_eof() or reader.exception() is not None or writer.transport.is_closing()

        async def write(data: bytes) -> bool:
            if req.response_started_at is None:
                req.response_started_at = time.monotonic()
            try:
                writer.write(data)
                await writer.drain()
            except ConnectionError:
                req.disconnected_at = time.monotonic()
                return False
            return True

        for action in actions:
            if isinstance(action, Status):
                hdrs = header_list(action.headers)
                names = {k.lower() for k, _ in hdrs}
                length_given = "content-length" in names
                if action.framing == "raw":
                    chunked = False
                    close_at_end = not length_given
                elif action.framing == "close":
                    chunked = False
                    hdrs.append(("connection", "close"))
                    close_at_end = True
                elif length_given and action.framing == "auto":
                    chunked = False
                    close_at_end = False
                else:
                    no_body = is_head or action.code < 200 or action.code in (204, 304)
                    chunked = not no_body
                    if "transfer-encoding" not in names and (chunked or is_head):
                        hdrs.append(("transfer-encoding", "chunked"))
                    close_at_end = False
                reason = action.reason
                if reason is None:
                    try:
                        reason = HTTPStatus(action.code).phrase
                    except ValueError:
                        reason = _REASONS.get(action.code, "")
                head = (
                    f"HTTP/1.1 {action.code} {reason}\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
                    + "\r\n"
                )
                status_sent = True
                if not await write(head.encode("latin-1")):
                    return False
            elif isinstance(action, Send):
                if no_body and status_sent:
                    continue
                if gone():
                    req.disconnected_at = time.monotonic()
                    return False
                data = action.data
                if chunked and not action.raw:
                    if not data:
                        continue  # an empty chunk would end the body
                    data = b"%x\r\n%s\r\n" % (len(data), data)
                if not await write(data):
                    return False
            elif isinstance(action, Sleep | Hang):
                deadline = time.monotonic() + (math.inf if isinstance(action, Hang) else action.seconds)
                while (left := deadline - time.monotonic()) > 0:
                    if gone():
                        req.disconnected_at = time.monotonic()
                        return False
                    await asyncio.sleep(min(left, _POLL))
            elif isinstance(action, Close):
                await _drain_quietly(writer)
                if action.reset:
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                else:
                    writer.close()
                req.response_finished_at = time.monotonic()
                return False
        if status_sent and chunked and not await write(b"0\r\n\r\n"):
            return False
        req.response_finished_at = time.monotonic()
        if not status_sent or close_at_end or client_close:
            await _drain_quietly(writer)
            writer.close()
            return False
        return True


async def _drain_quietly(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await writer.drain()


# ---- the default answers ---------------------------------------------------------------------


def default_response(req: Request) -> list[Action]:
    path = req.path
    body = req.json if isinstance(req.json, dict) else {}
    model = body.get("model") if isinstance(body.get("model"), str) else None
    if req.method in ("HEAD", "GET") and path == "/":
        return empty_response(200)
    if req.method == "POST" and path.endswith("/v1/messages/count_tokens"):
        return json_response(200, anthropic.count_tokens_json())
    if req.method == "POST" and path.endswith("/v1/messages"):
        model = model or anthropic.DEFAULT_MODEL
        if body.get("stream"):
            return anthropic.sse_response("Hello from fake upstream", model=model)
        return anthropic.message_response("Hello from fake upstream", model=model)
    if req.method == "POST" and path.endswith("/chat/completions"):
        model = model or openai.DEFAULT_MODEL
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return openai.sse_response(model=model, include_usage=usage)
        return openai.completion_response(model=model)
    if req.method == "GET" and path.endswith("/v1/models"):
        return json_response(200, anthropic.models_json())
    return anthropic.error_response(
        404, "not_found_error", f"fake upstream: no route for {req.method} {path}"
    )


# ---- servers that misbehave at the socket level ------------------------------------------------


class NeverAnswers(FakeUpstream):
    """Accepts, reads and records each request, then never answers (until the client leaves)."""

    def __init__(self, name: str = "never-answers") -> None:
        super().__init__(name, handler=lambda _req: [Hang()])


class StallsBeforeFirstByte(FakeUpstream):
    """Answers normally (default Anthropic answer) but only after `seconds` of silence."""

    def __init__(self, seconds: float, name: str = "stalls") -> None:
        super().__init__(name, handler=lambda req: [Sleep(seconds), *default_response(req)])


class _PortHolder:
    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self.port: int = sock.getsockname()[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> _PortHolder:
        return self

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> _PortHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RefusingPort(_PortHolder):
    """A loopback port where connecting is refused at once (ECONNREFUSED). The port is bound but
    not listening, so nothing else can take it while the test runs."""

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        super().__init__(sock)


class NeverAccepts(_PortHolder):
    """A listening port whose connections are never accepted: the TCP handshake completes in the
    kernel backlog, the request bytes are buffered, and no byte ever comes back. Once the small
    backlog is full, further connects hang in SYN (a connect timeout)."""

    def __init__(self, backlog: int = 1) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        super().__init__(sock)
