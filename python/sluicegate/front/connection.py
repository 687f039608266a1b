"""One client connection of the native front.

`FrontCore` (rust/front/py.rs) does the per-byte work: it parses requests, buffers bodies, and
writes answers and stream chunks to the transport on the loop thread. This class keeps what
needs the loop: handing each request to the app as a task, the disconnect waiter, and the
bookkeeping the server's sweep and drain read.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from .. import log
from .._native import FrontCore

if TYPE_CHECKING:
    from .server import Front


def _address(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr or "")


class FrontConnection(FrontCore, asyncio.Protocol):
    __slots__ = ("_front", "_waiter")

    def __init__(self, front: Front) -> None:
        self._front = front
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        front = self._front
        self._attach(
            transport,
            _address(transport.get_extra_info("peername")),
            _address(transport.get_extra_info("sockname")),
            front.max_body(),
            sock.fileno() if sock is not None else -1,
        )
        front.connections.add(self)
        if front.draining:
            self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()
        self._front.connections.discard(self)
        self._client_gone()

    def eof_received(self) -> bool:
        # False: uvloop closes the transport, and connection_lost tells the waiter.
        return self._eof()

    # uvloop buffers what the socket does not take; an SSE stream is small (see docs/operations.md).
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def _client_gone(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _refused(self, status: int, reason: str, client: str) -> None:
        # A request the front answered itself, before the app (no key, no usage record): a
        # log line, so a client that keeps sending malformed requests is visible. The reason
        # is the front's own text (at most a quoted transfer coding), cut short all the same.
        log.warning("request refused by the front", status=status, reason=reason[:200], client=client)

    def _dispatch(self, request: Any) -> None:
        front = self._front
        task = front.loop.create_task(front.app.__rsgi__(request, request))
        task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[Any]) -> None:
        self._waiter = None
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                # The app answers its own errors; this is a bug. The type only: no request text.
                log.error("request handler failed", error=type(exc).__name__)
        self._finish()

    def _disconnect_waiter(self) -> asyncio.Future[None]:
        waiter = self._waiter
        # A retry asks again after the first attempt cancelled its waiter: a fresh one, then.
        if waiter is None or waiter.cancelled():
            waiter = self._waiter = self._front.loop.create_future()
            if self not in self._front.connections:
                waiter.set_result(None)
        return waiter
