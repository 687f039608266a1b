"""The upstream connection's native data_received (ProtocolCore) and the callbacks it makes.

Driven directly, without sockets: a transport that records what the protocol asks of it and a
sink that records what it was sent. The gateway-level behaviour (timeouts, a client that goes
away, invalid upstream responses) is covered end to end by the relay and failover tests.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sluicegate import _native
from sluicegate.upstream import connection
from sluicegate.upstream.connection import UpstreamConnection
from sluicegate.upstream.errors import UpstreamProtocolError

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
EVENT = b'event: ping\ndata: {"type":"ping"}\n\n'


class Transport:
    def __init__(self) -> None:
        self.aborted = False
        self.paused = False

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        pass


class Queued:
    """Stands in for Granian's empty awaitable: the bytes are queued, nothing to await."""


class Failed:
    """Stands in for Granian's error awaitable: the client is gone."""

    closed = False

    def close(self) -> None:
        self.closed = True


class CountingConnection(UpstreamConnection):
    __slots__ = ("sent_calls",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.sent_calls = 0

    def _sent(self, result: Any) -> None:
        self.sent_calls += 1
        super()._sent(result)


@pytest.fixture()
def loop() -> Any:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def started(loop: asyncio.AbstractEventLoop, cls: type[UpstreamConnection] = UpstreamConnection) -> Any:
    conn = cls(loop)
    conn.connection_made(Transport())  # type: ignore[arg-type]
    conn.start(b"", b"", _native.Exchange(_native.RELAY_ANTHROPIC), first_byte_s=10, idle_s=10, total_s=None)
    return conn


def test_events_go_to_the_sink_and_a_queued_result_is_learnt_once(loop: Any, monkeypatch: Any) -> None:
    monkeypatch.setitem(connection._send_kinds, Queued, 0)
    conn = started(loop, CountingConnection)
    assert not conn.received and conn.rx_idle_s() == float("inf")
    conn.data_received(HEAD)
    assert conn.received and conn.rx_idle_s() < 1.0
    assert conn.exchange.head_complete and conn.out == []  # the head alone gives the client nothing
    sent: list[bytes] = []
    conn.sink = lambda b: sent.append(b) or Queued()
    for _ in range(5):
        conn.data_received(EVENT)
    assert sent == [EVENT] * 5
    # The first Queued went through Python's classification; the rest were recognised natively.
    assert conn.sent_calls == 1
    conn.sink = None
    conn.finish()


def test_bytes_before_the_relay_are_buffered_and_wake_the_waiter(loop: Any) -> None:
    conn = started(loop)
    conn.data_received(HEAD + EVENT[:10])
    conn.waiter = loop.create_future()
    conn.data_received(EVENT[10:] + EVENT)
    assert conn.out == [EVENT + EVENT]
    assert conn.waiter.done()
    conn.finish()


def test_a_sink_that_reports_the_client_gone_ends_the_relay(loop: Any, monkeypatch: Any) -> None:
    monkeypatch.setitem(connection._send_kinds, Failed, 1)
    conn = started(loop)
    conn.data_received(HEAD)
    failed = Failed()
    conn.sink = lambda b: failed
    conn.data_received(EVENT)
    assert conn.sink_failed and failed.closed and conn.transport.aborted


def test_a_sink_that_raises_ends_the_relay(loop: Any) -> None:
    conn = started(loop)
    conn.data_received(HEAD)

    def broken(data: bytes) -> None:
        raise RuntimeError("client went away")

    conn.sink = broken
    conn.data_received(EVENT)
    assert conn.sink_failed and conn.transport.aborted


def test_an_invalid_response_becomes_a_protocol_error(loop: Any) -> None:
    conn = started(loop)
    conn.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    assert isinstance(conn.error, UpstreamProtocolError)
    assert "invalid HTTP response" in str(conn.error)
    assert conn.transport.aborted


def test_bytes_on_an_idle_connection_drop_it(loop: Any) -> None:
    conn = UpstreamConnection(loop)
    conn.connection_made(Transport())  # type: ignore[arg-type]
    conn.data_received(b"HTTP/1.1 200 OK\r\n\r\n")
    assert conn.closed and conn.transport.aborted


def test_the_idle_timer_counts_from_the_last_bytes(loop: Any) -> None:
    conn = started(loop)
    conn._idle_s = 0.05
    conn.data_received(HEAD)
    time.sleep(0.06)
    conn._on_timer()
    assert conn.error is not None and "no data for 0.05 s" in str(conn.error)


def test_a_cycle_through_the_native_fields_is_collected(loop: Any) -> None:
    # A request's sink closure can reach its connection again; with the references held in
    # Rust, only ProtocolCore's __traverse__ lets the cycle collector see them.
    import gc

    freed: list[bool] = []

    class Watched(UpstreamConnection):
        __slots__ = ()

        def __del__(self) -> None:
            freed.append(True)

    conn = Watched(loop)
    conn.sink = lambda data, conn=conn: conn  # conn -> sink -> conn
    del conn
    gc.collect()
    assert freed == [True]
