"""The native front's processes: a main process that binds the socket and supervises N forked
workers, each an event loop serving the app on that socket.

Signals as under Granian: SIGTERM/SIGINT drain (the app's drain clock, then the workers exit),
SIGHUP reloads the config in every worker without dropping a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import traceback
from typing import Any

from .. import log
from .connection import FrontConnection


def _seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        return default
    return value if value > 0 else default


# A connection that has sent part of a request (head or body) and then nothing for this long is
# answered 408 and closed; one idle between requests for KEEPALIVE_S is closed. Checked once a
# second, so they hold to within a second.
READ_TIMEOUT_S = _seconds("SLUICEGATE_READ_TIMEOUT_S", 30.0)
KEEPALIVE_S = _seconds("SLUICEGATE_KEEPALIVE_S", 75.0)
_SWEEP_S = 1.0


class Front:
    """One worker's server: the app, its loop, and the open connections."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.connections: set[FrontConnection] = set()
        self.draining = False

    def protocol(self) -> FrontConnection:
        return FrontConnection(self)

    def max_body(self) -> int:
        snap = self.app.state.snapshot
        return int(snap.max_body_bytes) if snap is not None else 32 << 20

    def sweep(self) -> None:
        """Once a second: end connections stuck mid-request or idle past keep-alive."""
        for conn in list(self.connections):
            if conn.busy:
                continue
            idle = conn.idle_s()
            if idle > (READ_TIMEOUT_S if conn.reading else KEEPALIVE_S):
                conn._expire()
        self.loop.call_later(_SWEEP_S, self.sweep)

    def drain(self) -> None:
        self.draining = True
        for conn in list(self.connections):
            conn._drain()

    async def closed(self, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def _run_worker(sock: socket.socket, drain_s: float) -> None:
    import uvloop

    from ..app import app

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    # Until the app installs its reload handler, a SIGHUP must not end the worker (its default).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app.__rsgi_init__(loop)
    front = Front(app, loop)
    server = loop.run_until_complete(loop.create_server(front.protocol, sock=sock, backlog=4096))
    loop.call_later(_SWEEP_S, front.sweep)
    stopped: asyncio.Future[None] = loop.create_future()

    def on_stop() -> None:
        if stopped.done():
            return
        app.begin_drain(loop, drain_s)
        server.close()
        front.drain()
        stopped.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop)
    loop.run_until_complete(stopped)
    # Streams end by the drain deadline (the app aborts them); answers then have a moment.
    loop.run_until_complete(front.closed(drain_s + 2.0))
    app.__rsgi_del__(loop)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def serve_front(host: str, port: int, workers: int, drain_s: float) -> None:
    sock = _listen(host, port)
    children: dict[int, float] = {}
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _run_worker(sock, drain_s)
            except BaseException as exc:
                # Where it failed (file:line of the innermost frames), never the values in them.
                frames = traceback.extract_tb(exc.__traceback__)[-4:]
                at = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames))
                log.error("worker failed", error=type(exc).__name__, detail=str(exc)[:200], at=at)
                code = 1
            finally:
                log.flush_access()
                os._exit(code)
        children[pid] = time.monotonic()

    def forward(signum: int, _frame: Any = None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT) and not stopping:
            stopping = True
            # New connections are refused once no process holds the socket: the workers close
            # theirs as they start draining, this one now (it needs it only to respawn).
            sock.close()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    log.info("serving (native front)", address=f"{host}:{port}", workers=workers)
    for _ in range(workers):
        spawn()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        started = children.pop(pid, None)
        if started is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        log.warning("worker exited; starting another", pid=pid, code=code)
        if time.monotonic() - started < 1.0:
            time.sleep(1.0)  # a worker that dies at start-up must not spin the CPU
        spawn()
    if not stopping:
        sock.close()
