"""The native front (`serve --server native`): HTTP/1.1 as clients speak it, over raw sockets.

The rest of the suite runs against it too (it is the default server; `make test` runs the
end-to-end modules a second time under Granian); this module holds what only the HTTP layer decides:
keep-alive, pipelining, request framing, Expect, HTTP/1.0 streams, timeouts, workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from conftest import GatewayProcess

NATIVE = {"SLUICEGATE_SERVER": "native", "SLUICEGATE_READ_TIMEOUT_S": "1.5", "SLUICEGATE_KEEPALIVE_S": "2"}


def mock_config(events: int = 5, interval_ms: float = 0) -> dict[str, Any]:
    return {
        "providers": {
            "mock": {
                "type": "mock",
                "mock": {"text": "abcdefghij", "events": events, "interval_ms": interval_ms},
            }
        },
        "models": {"big-coder": {"targets": [{"provider": "mock"}]}},
        "keys": [{"name": "k", "token": "sg-k", "models": ["*"]}],
    }


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    g = GatewayProcess(mock_config(), env=NATIVE).start()
    yield g
    g.stop()


def message(stream: bool = False, model: str = "big-coder") -> bytes:
    body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def post(
    body: bytes, extra: bytes = b"", version: bytes = b"HTTP/1.1", path: bytes = b"/v1/messages"
) -> bytes:
    return (
        b"POST %s %s\r\nHost: x\r\nx-api-key: sg-k\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (path, version, extra, len(body), body)
    )


class Reader:
    """Reads HTTP/1.1 responses off one socket, framing by Content-Length or chunks."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            if not self._more():
                raise EOFError(self.buf[:300])
        out, _, self.buf = self.buf.partition(sep)
        return out

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise EOFError(self.buf[:300])
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head_request: bool = False) -> tuple[int, dict[str, str], bytes]:
        head = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:])}
        if head_request or status in (100, 204, 304):
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, self._take(int(headers["content-length"]))
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._until(b"\r\n")
                    return status, headers, body
                body += self._take(size)
                assert self._take(2) == b"\r\n"
        while self._more():  # close-delimited
            pass
        body, self.buf = self.buf, b""
        return status, headers, body

    def closed(self) -> bool:
        try:
            return not self.buf and not self._more()
        except (ConnectionResetError, TimeoutError):
            return False


def connect(gw: GatewayProcess, timeout: float = 10) -> tuple[socket.socket, Reader]:
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    return s, Reader(s)


def test_keep_alive_answers_many_requests_on_one_connection(gw: GatewayProcess) -> None:
    s, r = connect(gw)
    with s:
        for _ in range(3):
            s.sendall(post(message()))
            status, headers, body = r.response()
            assert status == 200, body
            assert json.loads(body)["type"] == "message"
            assert headers["date"].endswith(" GMT") and "connection" not in headers
        s.sendall(post(message(stream=True)))
        status, headers, body = r.response()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert headers["content-type"].startswith("text/event-stream")
        assert body.count(b"event: content_block_delta") == 5 and body.endswith(
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        )


def test_pipelined_requests_are_answered_in_order(gw: GatewayProcess) -> None:
    s, r = connect(gw)
    with s:
        s.sendall(
            post(message(stream=True))
            + b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
            + post(message(model="nope"))
        )
        first, second, third = r.response(), r.response(), r.response()
    assert first[0] == 200 and b"message_stop" in first[2]
    assert second[:1] == (200,) and second[2] == b"ready\n"
    assert third[0] == 404 and json.loads(third[2])["type"] == "error"


def test_chunked_request_body_and_expect_continue(gw: GatewayProcess) -> None:
    body = message()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7)
    )
    s, r = connect(gw)
    with s:
        s.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: sg-k\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunks
            + b"0\r\n\r\n"
        )
        status, _, out = r.response()
        assert status == 200, out
        # Expect: 100-continue gets the interim answer before the body is sent.
        s.sendall(
            post(b"", b"Expect: 100-continue\r\n").replace(
                b"Content-Length: 0", b"Content-Length: %d" % len(body)
            )
        )
        assert r.response()[0] == 100
        s.sendall(body)
        status, _, out = r.response()
        assert status == 200, out


def test_http10_stream_is_close_delimited(gw: GatewayProcess) -> None:
    s, r = connect(gw)
    with s:
        s.sendall(post(message(stream=True), version=b"HTTP/1.0"))
        status, headers, body = r.response()
    assert status == 200 and "transfer-encoding" not in headers and headers["connection"] == "close"
    assert body.count(b"event: content_block_delta") == 5 and b"event: message_stop" in body


def test_head_gets_no_body(gw: GatewayProcess) -> None:
    s, r = connect(gw)
    with s:
        s.sendall(b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = r.response(head_request=True)
        assert status == 200 and headers["content-length"] == "6" and body == b""
        assert r.response()[2] == b"ready\n"  # the next answer starts right after the head


@pytest.mark.parametrize(
    ("name", "raw", "status"),
    [
        (
            "length and chunked",
            b"POST /v1/messages HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        ("two lengths", b"POST /v1/messages HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", 400),
        ("gzip coding", b"POST /v1/messages HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("bad chunk size", b"POST /v1/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("not HTTP", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
        ("head too large", b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 300_000 + b"\r\n\r\n", 431),
    ],
)
def test_requests_it_cannot_read_are_refused_and_closed(
    gw: GatewayProcess, name: str, raw: bytes, status: int
) -> None:
    s, r = connect(gw)
    with s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(raw)
        got, headers, body = r.response()
        assert got == status, (name, body)
        assert headers["connection"] == "close" and json.loads(body)["type"] == "error"
        assert r.closed()
    # Answered before the app, so no access line: a log line says so, with the front's reason.
    reason = json.loads(body)["error"]["message"]
    assert refusal_logged(gw, status, reason), (name, reason)


def refusal_logged(gw: GatewayProcess, status: int, reason: str) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for rec in gw.log_records():
            if (
                rec.get("message") == "request refused by the front"
                and rec.get("status") == status
                and rec.get("reason") == reason[:200]
                and rec.get("client", "").startswith("127.0.0.1:")
            ):
                return True
        time.sleep(0.05)
    return False


def test_chat_path_refusals_use_openai_shape(gw: GatewayProcess) -> None:
    s, r = connect(gw)
    with s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        status, _, body = r.response()
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"


def test_a_request_that_stops_arriving_gets_408_and_an_idle_one_is_closed(gw: GatewayProcess) -> None:
    s, r = connect(gw)
    with s:
        s.sendall(post(message())[:-10])  # the body short by 10 bytes, then nothing
        started = time.monotonic()
        status, headers, body = r.response()
        assert status == 408 and headers["connection"] == "close", body
        assert 1.0 < time.monotonic() - started < 5.0
    assert refusal_logged(gw, 408, "the request did not arrive in time")
    s, r = connect(gw)
    with s:
        s.sendall(post(message()))
        assert r.response()[0] == 200
        started = time.monotonic()
        assert r.closed()  # keep-alive ran out
        assert 1.5 < time.monotonic() - started < 6.0


def test_body_cut_short_by_a_half_close_is_a_400(gw: GatewayProcess) -> None:
    s, r = connect(gw)
    with s:
        s.sendall(post(message())[:-10])
        s.shutdown(socket.SHUT_WR)
        status, _, body = r.response()
    assert status == 400 and "Content-Length" in json.loads(body)["error"]["message"]


def test_sdk_clients_through_two_workers_and_a_worker_that_dies_is_replaced() -> None:
    gw = GatewayProcess(mock_config(), workers=2, env=NATIVE).start()
    try:
        sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0)
        for _ in range(4):
            with sdk.messages.stream(
                model="big-coder", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            ) as st:
                assert "".join(st.text_stream) == "abcdefghij"
        assert gw.proc is not None
        workers = [int(p) for p in os.popen(f"pgrep -P {gw.proc.pid}").read().split()]
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = [int(p) for p in os.popen(f"pgrep -P {gw.proc.pid}").read().split()]
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no replacement worker: {now}")
        for _ in range(4):
            assert sdk.messages.create(
                model="big-coder", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            ).content
        assert "worker exited; starting another" in gw.logs()
    finally:
        assert gw.stop() == 0


def test_native_front_refuses_http2() -> None:
    gw = GatewayProcess(mock_config(), env={**NATIVE, "SLUICEGATE_HTTP": "2"})
    with pytest.raises(RuntimeError, match=r"HTTP/1\.1 only"):
        gw.start()


def test_the_default_server_is_the_native_front(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluicegate.cli import build_parser, resolve_server

    monkeypatch.delenv("SLUICEGATE_SERVER", raising=False)
    args = build_parser().parse_args(["serve", "--config", "x.yaml"])
    assert args.server == "auto"
    assert resolve_server(args.server, "1") == "native"
    assert resolve_server("auto", "2") == resolve_server("auto", "auto") == "granian"
    assert resolve_server("granian", "1") == "granian"


@pytest.mark.parametrize(("http", "server"), [("1", "native front"), ("auto", "granian")])
def test_auto_serves_http1_on_the_native_front_and_http2_on_granian(http: str, server: str) -> None:
    gw = GatewayProcess(mock_config(), env={"SLUICEGATE_SERVER": "auto", "SLUICEGATE_HTTP": http}).start()
    try:
        sdk = anthropic.Anthropic(base_url=gw.url, api_key="sg-k", max_retries=0)
        reply = sdk.messages.create(
            model="big-coder", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
        assert reply.content[0].type == "text"
        assert f'"serving ({server})"' in gw.logs()
    finally:
        assert gw.stop() == 0


def test_serve_raises_the_open_files_limit_to_the_hard_one() -> None:
    # Two descriptors a stream: a container's common soft limit of 1,024 would cap it at ~500.
    import subprocess
    import sys

    code = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from sluicegate.cli import raise_open_files_limit\n"
        "print(raise_open_files_limit() == (hard, hard), resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["True", "True"], out.stderr
