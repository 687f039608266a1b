"""One keep-alive HTTP/1.1 connection to an upstream, driven by asyncio callbacks.

The socket work is asyncio's; the parsing is the Rust `Exchange`. `data_received` itself is
native (`ProtocolCore`): every received chunk goes straight to the exchange, which returns
bytes that are ready for the client (complete SSE events) or None. Once a stream is relayed
with `relay(send)`, those bytes go to the client from inside the socket callback (Granian's
`send_bytes` only queues them), with no interpreter frame and no coroutine wake-up. This class
keeps everything else: the request's waits and its one timer, and the callbacks `ProtocolCore`
makes for what is not the steady state (`_buffer`, `_sent`, `_client_gone`, `_invalid_response`,
`_stray_bytes`, `_wake`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .. import _native
from .._native import ProtocolCore, RelayHub
from .errors import ClientGone, UpstreamClosed, UpstreamError, UpstreamProtocolError, UpstreamTimeout

# What a `send` callable returned, by type: 0 done (Granian's empty awaitable), 1 failed
# (Granian's error awaitable: the client is gone), 2 a coroutine or future still to run.
_send_kinds: dict[type, int] = {}
_pending_sends: set[asyncio.Future[Any]] = set()


def _send_kind(result: Any) -> int:
    t = type(result)
    kind = _send_kinds.get(t)
    if kind is None:
        name = t.__name__
        kind = 1 if "Err" in name else 2 if asyncio.iscoroutine(result) or asyncio.isfuture(result) else 0
        _send_kinds[t] = kind
    return kind


# The native relay of this process's event loop (one loop per worker), made on first use.
_hub: tuple[asyncio.AbstractEventLoop, RelayHub] | None = None


def relay_hub(loop: asyncio.AbstractEventLoop) -> RelayHub:
    global _hub
    if _hub is None or _hub[0] is not loop:
        hub = RelayHub()
        loop.add_reader(hub.fileno(), hub.poll)
        _hub = (loop, hub)
    return _hub[1]


# Past this many buffered bytes the client is slower than the upstream: stop reading from
# the upstream socket until the client catches up, so memory per stream stays bounded.
_HIGH_WATER = 1 << 20


class UpstreamConnection(ProtocolCore, asyncio.Protocol):
    # `exchange`, `sink` and `received` live in ProtocolCore.
    __slots__ = (
        "_buffered",
        "_deadline_total",
        "_first_byte_by",
        "_first_byte_s",
        "_idle_s",
        "_loop",
        "_lost",
        "_paused",
        "_relay_id",
        "_timer",
        "closed",
        "error",
        "fd",
        "out",
        "sink_failed",
        "transport",
        "uses",
        "waiter",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.exchange = None
        self.waiter: asyncio.Future[None] | None = None
        self.out: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self.closed = False
        self.error: UpstreamError | None = None
        self.received = False
        self._timer: asyncio.TimerHandle | None = None
        self._first_byte_s = 0.0
        self._first_byte_by = 0.0
        self._idle_s = 0.0
        self._deadline_total: float | None = None
        self.uses = 0
        # The plain socket's descriptor, for the native relay (-1: TLS, or not known).
        self.fd = -1
        self._relay_id: int | None = None
        self._lost = False
        # While relaying, `sink` (ProtocolCore) is where complete events go.
        self.sink = None
        self.sink_failed = False

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    # data_received is ProtocolCore's; these are the callbacks it makes.
    def _stray_bytes(self) -> None:
        # Bytes on an idle keep-alive connection: the peer is confused; drop the connection.
        self._abort()

    def _invalid_response(self, exc: Exception) -> None:
        self.error = UpstreamProtocolError(f"invalid HTTP response from upstream: {exc}")
        self._abort()
        self._wake()

    def _buffer(self, chunk: bytes) -> None:
        # Bytes before the relay began (the head, or a body read with next_chunk).
        self.out.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:  # (already ended by the native relay, which saw the close first)
            return
        self._lost = True
        self.closed = True
        ex = self.exchange
        if ex is not None and not ex.done:
            tail = ex.eof()
            if tail:
                if self.sink is not None:
                    self._send(tail)
                else:
                    self.out.append(tail)
        self._cancel_timer()
        self._wake()

    # -- request side ------------------------------------------------------------------------
    def start(
        self,
        head: bytes,
        body: bytes,
        exchange: Any,
        *,
        first_byte_s: float,
        idle_s: float,
        total_s: float | None,
    ) -> None:
        self.exchange = exchange
        self.out = []
        self._buffered = 0
        self.received = False
        self.error = None
        self.uses += 1
        now = self._loop.time()
        self._first_byte_s = first_byte_s
        self._first_byte_by = now + first_byte_s
        self._idle_s = idle_s
        self._deadline_total = now + total_s if total_s else None
        # One timer for the request, never further ahead than the idle limit: the first byte
        # needs no re-arming, and most answers end before it fires.
        self._arm(now + min(first_byte_s, idle_s))
        assert self.transport is not None
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)

    async def wait_head(self) -> None:
        ex = self.exchange
        assert ex is not None
        while not ex.head_complete:
            await self._wait()

    async def next_chunk(self) -> bytes | None:
        """The next bytes for the client, or None when the body is complete."""
        ex = self.exchange
        assert ex is not None
        while True:
            data = self._take_out()
            if data is not None:
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return data
            if ex.done:
                return None
            if self.error is not None:
                raise self.error
            if self.closed:
                raise UpstreamClosed("upstream closed the connection before the response was complete")
            await self._wait()

    async def relay(self, send: Callable[[bytes], Any]) -> None:
        """Forward the rest of the body with `send(bytes)`, called from the socket callback.

        Returns when the body is complete. Raises ClientGone when `send` reports the client
        gone, or the UpstreamError that ended the stream (after sending whatever the exchange
        emitted at the end, such as a translator's closing events).
        """
        self.sink_failed = False
        self.sink = send
        data = self._take_out()
        if data is not None:
            self._send(data)
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        try:
            ex = self.exchange
            assert ex is not None
            while not ex.done and not self.sink_failed:
                if self.error is not None:
                    raise self.error
                if self.closed:
                    raise UpstreamClosed("upstream closed the connection before the response was complete")
                fut = self._loop.create_future()
                self.waiter = fut
                try:
                    await fut
                finally:
                    self.waiter = None
        finally:
            self.sink = None
        if self.sink_failed:
            raise ClientGone()

    async def splice(self, stream: Any) -> bool:
        """Like `relay`, with the native relay reading the upstream socket and writing the
        client's (rust/relay_hub.rs). False when that cannot be (a TLS upstream, a client
        transport with bytes queued, an answer without a socket, as under Granian): `relay`
        then goes on from where this left off.
        """
        ex = self.exchange
        t = self.transport
        if self.fd < 0 or t is None or ex is None or self.closed or self.error is not None:
            return False
        if ex.done:
            return False  # nothing left: `relay` sends what is in hand and returns
        data = self._take_out()
        if data is not None:  # bytes that came while the first event went out: sent first
            try:
                stream.send_bytes(data)
            except Exception:
                self._client_gone(None)
                raise ClientGone() from None
        hub = relay_hub(self._loop)
        try:
            relay_id = hub.start(self, ex, stream, self.fd, self._relay_ended)
        except OSError:  # (a descriptor that could not be duplicated: out of them)
            relay_id = None
        if relay_id is None:
            return False
        self._relay_id = relay_id
        self._paused = False  # (paused by `_buffer` past its high water: resumed at the end)
        self.sink_failed = False
        # What connection_lost emits at a close (a translator's closing events) goes here.
        self.sink = stream.send_bytes
        t.pause_reading()
        fut = self.waiter = self._loop.create_future()
        try:
            await fut
        finally:
            self.waiter = None
            self.sink = None
            if self._relay_id is not None:
                hub.cancel(self._relay_id)
            if not self.closed:
                t.resume_reading()
        if self.sink_failed:
            raise ClientGone()
        if self.error is not None:
            raise self.error
        if not ex.done:
            raise UpstreamClosed("upstream closed the connection before the response was complete")
        return True

    def _relay_ended(self, outcome: int, detail: str | None) -> None:
        """The native relay's one call: how it ended."""
        self._relay_id = None
        if outcome == _native.RELAY_CLIENT_GONE:
            self.sink_failed = True
            self._abort()
        elif outcome == _native.RELAY_UPSTREAM_EOF:
            # The socket closed under the relay: end the exchange as connection_lost does (the
            # closing bytes go through `sink`), then let the transport go.
            self.connection_lost(None)
            self._abort()
        elif outcome == _native.RELAY_INVALID:
            self._invalid_response(ValueError(detail or "unparsable bytes"))
        self._wake()

    def _take_out(self) -> bytes | None:
        """The bytes buffered for the client (`_buffer`), taken as one; None when none are."""
        out = self.out
        if not out:
            return None
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._buffered = 0
        return data

    def _send(self, data: bytes) -> None:
        sink = self.sink
        assert sink is not None
        try:
            result = sink(data)
        except Exception:
            self._client_gone(None)
        else:
            self._sent(result)

    def _sent(self, result: Any) -> None:
        """What `sink` returned for a chunk, unless ProtocolCore already knows its type is done."""
        kind = _send_kind(result)
        if kind == 0:
            self._learn_sent_type(type(result))
            return
        if kind == 2:
            task = asyncio.ensure_future(result)
            _pending_sends.add(task)
            task.add_done_callback(_pending_sends.discard)
            return
        self._client_gone(result)

    def _client_gone(self, result: Any) -> None:
        # The client is gone: stop reading from the upstream and end the relay.
        if result is not None and hasattr(result, "close"):
            result.close()
        self.sink_failed = True
        self._abort()
        self._wake()

    async def wait_done(self) -> None:
        ex = self.exchange
        assert ex is not None
        while not ex.done:
            if self.out:
                # A body we do not stream (non-event-stream): nothing to forward yet.
                self.out.clear()
                self._buffered = 0
            await self._wait()

    def finish(self) -> bool:
        """Detach the exchange; True when the connection may be reused."""
        self._cancel_timer()
        ex = self.exchange
        self.exchange = None
        self.sink = None
        reusable = (
            ex is not None
            and ex.done
            and ex.keep_alive
            and not self.closed
            and self.error is None
            and not self.out
        )
        if not reusable:
            self._abort()
        return reusable

    def abort(self) -> None:
        self._abort()

    # -- internals ---------------------------------------------------------------------------
    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        ex = self.exchange
        if self.closed and ex is not None and not ex.done:
            raise UpstreamClosed("upstream closed the connection before the response was complete")
        fut = self.waiter = self._loop.create_future()
        try:
            await fut
        finally:
            self.waiter = None
        if self.error is not None and not self.out:
            raise self.error

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _abort(self) -> None:
        self.closed = True
        if self._relay_id is not None and _hub is not None:
            _hub[1].cancel(self._relay_id)
        t = self.transport
        if t is not None:
            t.abort()

    def _arm(self, when: float) -> None:
        if self._deadline_total is not None and self._deadline_total < when:
            when = self._deadline_total
        self._cancel_timer()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        # One timer per request, re-armed lazily: data_received only records a timestamp.
        self._timer = None
        ex = self.exchange
        if ex is None or ex.done:
            return
        now = self._loop.time()
        if self._deadline_total is not None and now >= self._deadline_total:
            return self._time_out("total time limit reached")
        if not self.received:
            first_byte_by = self._first_byte_by
            if now >= first_byte_by:
                return self._time_out(f"no response within {self._first_byte_s:g} s")
            # Still waiting for the first byte; never arm past the idle limit, which applies
            # from the first byte on (a stream quiet after its head must not last until
            # first_byte_s).
            return self._arm(min(first_byte_by, now + self._idle_s))
        idle = self.rx_idle_s()
        if idle >= self._idle_s:
            return self._time_out(f"no data for {self._idle_s:g} s")
        self._arm(now + self._idle_s - idle)

    def _time_out(self, why: str) -> None:
        self.error = UpstreamTimeout(f"upstream timed out: {why}")
        self._abort()
        self._wake()
