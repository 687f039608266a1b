"""The native stream relay (rust/relay_hub.rs): under the native front, a stream's events after
the first are read from the upstream socket and written to the client's in Rust.

Each test makes the relay take one of its exits (body complete, upstream closed, bytes that do
not parse, client gone) or its slow path (a client that does not read), and checks what the
client and the upstream see. The slow-client test also tells the relay from the Python path it
replaces: that path buffers without bound, so there the upstream would send the whole body into
the gateway at once; here it is held back.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from conftest import GatewayProcess
from fakes import Close, FakeUpstream, Hang, Send, Sleep, Status
from fakes import anthropic as fa

NATIVE = {"SLUICEGATE_SERVER": "native"}
HEADERS = {"x-api-key": "sg-k", "anthropic-version": "2023-06-01"}
MSG = {"model": "g", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stream": True}


def config(url: str) -> dict[str, Any]:
    return {
        "providers": {
            "up": {
                "type": "anthropic",
                "base_url": url,
                "api_key": "sk-up",
                "timeouts": {"connect_s": 2, "first_byte_s": 10, "idle_s": 10},
            }
        },
        "models": {"g": {"targets": [{"provider": "up", "model": "claude-sonnet-4-6"}]}},
        "keys": [{"name": "k", "token": "sg-k"}],
    }


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream("relayed") as u:
        yield u


@pytest.fixture(scope="module")
def gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    g = GatewayProcess(config(up.base_url), env=NATIVE).start()
    yield g
    g.stop()


def stream_raw(gw: GatewayProcess, client: httpx.Client | None = None) -> bytes:
    c = client or httpx.Client(timeout=15)
    with c.stream("POST", gw.url + "/v1/messages", json=MSG, headers=HEADERS) as r:
        assert r.status_code == 200
        return r.read()


def test_events_in_odd_pieces_arrive_byte_for_byte_and_are_tallied(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    frames = fa.sse_stream(fa.Text("héllo wörld ✓ " * 20, pieces=40), usage={"input_tokens": 17})
    body = b"".join(frames)
    # The first event whole (it is answered before the relay starts), then pieces of 5 bytes
    # a few ms apart: each is its own read, cut anywhere (inside a UTF-8 character, a chunk).
    rest = body[len(frames[0]) :]
    pieces = [Send(rest[i : i + 5]) for i in range(0, len(rest), 5)]
    actions: list[Any] = [Status(200, fa.SSE_HEADERS), Send(frames[0])]
    for i, p in enumerate(pieces):
        actions.append(p)
        if i % 25 == 0:
            actions.append(Sleep(0.002))
    up.enqueue(actions)
    assert stream_raw(gw) == body
    rec = gw.access_records()[-1]
    assert rec["error"] is None and rec["status"] == 200
    assert rec["input_tokens"] == 17 and rec["output_tokens"] > 0


def test_streams_one_after_another_on_one_keep_alive_connection(gw: GatewayProcess, up: FakeUpstream) -> None:
    frames = fa.sse_stream(fa.Text("again and again", pieces=6))
    with httpx.Client(timeout=15) as c:
        for _ in range(3):
            up.enqueue([Status(200, fa.SSE_HEADERS), *[a for f in frames for a in (Send(f), Sleep(0.005))]])
            assert stream_raw(gw, c) == b"".join(frames)
    # The SDK reads a whole message from the same gateway afterwards.
    up.enqueue([Status(200, fa.SSE_HEADERS), *[a for f in frames for a in (Send(f), Sleep(0.005))]])
    sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k")
    with sdk.messages.stream(model="g", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as s:
        assert "".join(b.text for b in s.get_final_message().content if b.type == "text") == "again and again"


def test_upstream_closing_mid_stream_ends_with_an_error_event(gw: GatewayProcess, up: FakeUpstream) -> None:
    frames = fa.sse_stream(fa.Text("cut off in the middle", pieces=6))
    sent = frames[:4]
    up.enqueue(
        [
            Status(200, fa.SSE_HEADERS),
            Send(sent[0]),
            Sleep(0.02),
            *[Send(f) for f in sent[1:]],
            Sleep(0.02),
            Close(),
        ]
    )
    raw = stream_raw(gw)
    assert raw.startswith(b"".join(sent))
    tail = raw[len(b"".join(sent)) :]
    assert tail.startswith(b"event: error\ndata: ")
    err = json.loads(tail.split(b"data: ", 1)[1])
    assert err["type"] == "error" and "closed the connection" in err["error"]["message"]
    assert gw.access_records()[-1]["error"] == "stream_connection_closed"


def test_bytes_that_do_not_parse_mid_stream_end_with_an_error_event(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    frames = fa.sse_stream(fa.Text("then garbage", pieces=4))
    up.enqueue(
        [
            Status(200, fa.SSE_HEADERS),
            Send(frames[0]),
            Sleep(0.02),
            Send(frames[1]),
            Sleep(0.05),
            Send(b"zz-not-a-chunk\r\n", raw=True),
            Hang(),
        ]
    )
    raw = stream_raw(gw)
    assert raw.startswith(frames[0] + frames[1])
    tail = raw[len(frames[0] + frames[1]) :]
    assert tail.startswith(b"event: error\ndata: ")
    assert "invalid HTTP response" in json.loads(tail.split(b"data: ", 1)[1])["error"]["message"]
    assert gw.access_records()[-1]["error"] == "stream_protocol_error"


def test_a_client_that_leaves_mid_stream_ends_the_upstream_request(
    gw: GatewayProcess, up: FakeUpstream
) -> None:
    frames = fa.sse_stream(fa.Text("nobody reads the end", pieces=8))
    up.enqueue([Status(200, fa.SSE_HEADERS), Send(frames[0]), Sleep(0.02), Send(frames[1]), Hang()])
    n = len(up.requests)
    with (
        httpx.Client(timeout=15) as c,
        c.stream("POST", gw.url + "/v1/messages", json=MSG, headers=HEADERS) as r,
    ):
        got = b""
        for chunk in r.iter_raw():
            got += chunk
            if len(got) >= len(frames[0] + frames[1]):
                break
    left = time.monotonic()
    gone = up.wait_for_disconnect(n, timeout=5)
    assert gone - left < 2.0
    assert gw.access_records()[-1]["error"] == "client_disconnected"
    # The gateway goes on serving.
    up.enqueue([Status(200, fa.SSE_HEADERS), *[a for f in frames for a in (Send(f), Sleep(0.002))]])
    assert stream_raw(gw) == b"".join(frames)


def test_the_head_and_the_first_event_leave_in_one_write(gw: GatewayProcess, up: FakeUpstream) -> None:
    # The upstream pauses after the first event, so the client's first read holds whatever the
    # gateway wrote before the pause: written as two writes (head, then event), a reader woken
    # by the first gets the head alone some of the time; as one, never. The same for the last
    # event (message_stop, after another pause) and the body's last chunk.
    frames = fa.sse_stream(fa.Text("one write", pieces=3))
    body = json.dumps(MSG).encode()
    request = (
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: sg-k\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        for _ in range(15):
            middle = [Send(f) for f in frames[1:-1]]
            up.enqueue(
                [
                    Status(200, fa.SSE_HEADERS),
                    Send(frames[0]),
                    Sleep(0.05),
                    *middle,
                    Sleep(0.05),
                    Send(frames[-1]),
                ]
            )
            sock.sendall(request)
            first = sock.recv(65536)
            head, _, rest = first.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert rest == b"%x\r\n%s\r\n" % (len(frames[0]), frames[0])
            got = bytearray(first)
            while frames[-2] not in got:
                data = sock.recv(65536)
                assert data
                got += data
            assert got.endswith(frames[-2] + b"\r\n")
            assert sock.recv(65536) == b"%x\r\n%s\r\n0\r\n\r\n" % (len(frames[-1]), frames[-1])


def test_an_http10_client_gets_the_stream_close_delimited(gw: GatewayProcess, up: FakeUpstream) -> None:
    frames = fa.sse_stream(fa.Text("no chunks for HTTP/1.0", pieces=6))
    up.enqueue([Status(200, fa.SSE_HEADERS), *[a for f in frames for a in (Send(f), Sleep(0.005))]])
    body = json.dumps(MSG).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.0\r\nx-api-key: sg-k\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        got = bytearray()
        while data := sock.recv(65536):
            got += data
    head, _, rest = bytes(got).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"transfer-encoding" not in head.lower()
    assert rest == b"".join(frames)


def long_stream(events: int) -> tuple[bytes, bytes]:
    """The first event of a long text message, and the rest of it (~260 bytes an event)."""
    text = "0123456789abcdef" * 10
    frames = fa.sse_stream(fa.Text(text, pieces=1))
    delta = next(f for f in frames if f.startswith(b"event: content_block_delta"))
    first, rest = frames[0], frames[1:]
    at = rest.index(delta)
    return first, b"".join(rest[:at]) + delta * events + b"".join(rest[at + 1 :])


class FloodingUpstream:
    """An Anthropic-format upstream that writes a long stream as fast as its socket takes it,
    counting what the gateway has accepted (a blocking socket with a small send buffer: a
    write returns once the gateway's side took the bytes)."""

    def __init__(self, events: int) -> None:
        self.first, self.rest = long_stream(events)
        self.body = self.first + self.rest
        self.sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = int(next(v.split(b":")[1] for v in lines if v.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n"
                % len(self.body)
            )
            conn.sendall(self.first)
            self.sent = len(self.first)
            time.sleep(0.05)  # the first event alone, as a model sends it
            view = memoryview(self.rest)
            for i in range(0, len(view), 16384):
                try:
                    conn.sendall(view[i : i + 16384])
                except OSError:
                    return
                self.sent += len(view[i : i + 16384])

    def close(self) -> None:
        self.listener.close()


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    at = 0
    while True:
        end = data.index(b"\r\n", at)
        size = int(data[at:end], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


def test_a_client_that_stops_reading_holds_the_upstream_back(gateway_factory: Any) -> None:
    flood = FloodingUpstream(events=120_000)
    try:
        assert len(flood.body) > 30 << 20
        gw: GatewayProcess = gateway_factory(config(flood.url), env=NATIVE)
        body = json.dumps(MSG).encode()
        sock = socket.create_connection(("127.0.0.1", gw.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: sg-k\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        got = bytearray(sock.recv(4096))
        assert got.startswith(b"HTTP/1.1 200")
        time.sleep(1.5)  # not reading: the gateway's writes back up
        held = flood.sent
        # Socket buffers both ways plus the relay's 1 MiB wait: well short of the whole body,
        # which a relay without back-pressure takes into memory at once.
        assert held < len(flood.body) // 2, (held, len(flood.body))
        sock.settimeout(20)
        while not got.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(1 << 20)
            if not data:
                break
            got += data
        sock.close()
        assert flood.sent == len(flood.body)
        # Every byte, in order.
        assert dechunk(bytes(got).partition(b"\r\n\r\n")[2]) == flood.body
    finally:
        flood.close()
