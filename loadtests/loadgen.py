"""A load generator fast enough to outpace the gateway: raw asyncio sockets on uvloop.

Each virtual user holds one keep-alive HTTP/1.1 connection and sends requests back to back.
Responses are parsed by sluicegate's own native `Exchange` (the same HTTP/1.1 + SSE parser the
gateway uses on its upstream side), so per received chunk the client does one native call
and a few float operations. Per request it records the time to the response head (TTFB),
to the first complete SSE event, to the end, and the gap before every later read that
completed at least one event.
"""

from __future__ import annotations

import asyncio
import socket
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sluicegate import _native

now = time.perf_counter


@dataclass
class Scenario:
    name: str
    host: str
    port: int
    path: str
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    concurrency: int = 1
    duration_s: float = 5.0
    warmup_s: float = 1.0
    # Users start spread over this many seconds (avoids a thundering herd of connects).
    ramp_s: float = 0.0
    # The client's view of the format: RELAY_ANTHROPIC or RELAY_OPENAI (only the parsing differs).
    mode: int = _native.RELAY_ANTHROPIC
    timeout_s: float = 30.0

    def request_bytes(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"host: {self.host}:{self.port}",
            "content-type: application/json",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers]
        lines.append(f"content-length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class Stats:
    ttfb: array = field(default_factory=lambda: array("d"))
    ttfe: array = field(default_factory=lambda: array("d"))
    total: array = field(default_factory=lambda: array("d"))
    gaps: array = field(default_factory=lambda: array("d"))
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    events: int = 0
    # Completed (ok) in the measurement window, whatever their start: the throughput count.
    completed_in_window: int = 0
    window_s: float = 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def merge(self, other: Stats) -> None:
        self.ttfb.extend(other.ttfb)
        self.ttfe.extend(other.ttfe)
        self.total.extend(other.total)
        self.gaps.extend(other.gaps)
        self.ok += other.ok
        self.errors.update(other.errors)
        self.events += other.events
        self.completed_in_window += other.completed_in_window
        self.window_s += other.window_s


def percentile(values: Any, q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    i = min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))
    return float(s[i])


class RequestError(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class ClientConnection(asyncio.Protocol):
    """One keep-alive connection; `request()` sends and resolves when the response is complete."""

    def __init__(self, loop: asyncio.AbstractEventLoop, mode: int) -> None:
        self.loop = loop
        self.mode = mode
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.fut: asyncio.Future[None] | None = None
        self.ex: Any = None
        self.gaps: array | None = None
        self.t0 = self.t_head = self.t_first = self.t_end = self.last = 0.0
        self.n = 0
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(self, data: bytes, gaps: array | None) -> asyncio.Future[None]:
        self.ex = _native.Exchange(self.mode)
        self.gaps = gaps
        self.t_head = self.t_first = self.t_end = self.last = 0.0
        self.n = self.status = 0
        fut = self.fut = self.loop.create_future()
        self.t0 = now()
        assert self.transport is not None
        self.transport.write(data)
        return fut

    def data_received(self, data: bytes) -> None:
        t = now()
        ex = self.ex
        if ex is None:
            return
        try:
            out = ex.feed(data)
        except ValueError:
            return self._fail("bad_response")
        if not self.t_head and ex.head_complete:
            self.t_head = t
            self.status = ex.status
        if out is not None:
            n = ex.event_count
            if n != self.n:
                if not self.t_first:
                    self.t_first = t
                elif self.gaps is not None:
                    self.gaps.append(t - self.last)
                self.last = t
                self.n = n
        if ex.done:
            self.t_end = t
            self.ex = None
            fut = self.fut
            if fut is not None and not fut.done():
                fut.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.ex
        if ex is not None:
            ex.eof()
            if ex.done:  # a close-delimited body
                self.t_end = now()
                self.ex = None
                if self.fut is not None and not self.fut.done():
                    self.fut.set_result(None)
                return
        self._fail("connection_closed")

    def _fail(self, kind: str) -> None:
        self.ex = None
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_exception(RequestError(kind))
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


async def connect(sc: Scenario) -> ClientConnection:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: ClientConnection(loop, sc.mode), sc.host, sc.port)
    return proto


async def run_scenario(
    sc: Scenario,
    on_window: Callable[[str], None] | None = None,
) -> Stats:
    """Closed loop: `concurrency` users, each sending requests back to back for the duration.

    Latency figures cover requests started inside the window (after warm-up) that finished;
    throughput counts the requests that finished inside it. `on_window("start"/"end")` is
    called at the window edges (the benchmark samples CPU there).
    """
    loop = asyncio.get_running_loop()
    stats = Stats()
    req = sc.request_bytes()
    t_start = now()
    ws = t_start + sc.warmup_s
    we = ws + sc.duration_s
    stats.window_s = sc.duration_s
    if on_window is not None:
        loop.call_at(loop.time() + sc.warmup_s, on_window, "start")
        loop.call_at(loop.time() + sc.warmup_s + sc.duration_s, on_window, "end")

    async def user(i: int) -> None:
        if sc.ramp_s and sc.concurrency > 1:
            await asyncio.sleep(sc.ramp_s * i / sc.concurrency)
        conn: ClientConnection | None = None
        while now() < we:
            if conn is None or conn.closed:
                try:
                    conn = await asyncio.wait_for(connect(sc), 10.0)
                except (OSError, TimeoutError):
                    stats.errors["connect"] += 1
                    conn = None
                    await asyncio.sleep(0.05)
                    continue
            t0 = now()
            in_window = t0 >= ws
            fut = conn.request(req, stats.gaps if in_window else None)
            timer = loop.call_later(sc.timeout_s, conn._fail, "timeout")
            try:
                await fut
            except RequestError as exc:
                timer.cancel()
                if in_window or now() <= we:
                    stats.errors[exc.kind] += 1
                conn = None
                continue
            except asyncio.CancelledError:
                timer.cancel()
                conn.abort()
                raise
            timer.cancel()
            t_end = conn.t_end
            if conn.status != 200:
                if in_window:
                    stats.errors[f"http_{conn.status}"] += 1
                continue
            if ws <= t_end <= we:
                stats.completed_in_window += 1
            if in_window and t_end <= we:
                stats.ttfb.append(conn.t_head - t0)
                if conn.t_first:
                    stats.ttfe.append(conn.t_first - t0)
                stats.total.append(t_end - t0)
                stats.events += conn.n
                stats.ok += 1
        if conn is not None:
            conn.abort()

    users = [asyncio.ensure_future(user(i)) for i in range(sc.concurrency)]
    try:
        await asyncio.wait_for(
            asyncio.gather(*users), sc.warmup_s + sc.duration_s + sc.timeout_s + sc.ramp_s + 5
        )
    except TimeoutError:
        stats.errors["run_timeout"] += 1
    return stats


async def open_idle_streams(
    sc: Scenario, count: int, conns: list[ClientConnection], timeout_s: float = 60.0
) -> int:
    """Open streams until `conns` holds `count` of them, each past its first event; returns errors."""
    req = sc.request_bytes()
    errors = 0
    sem = asyncio.Semaphore(200)

    async def one() -> None:
        nonlocal errors
        async with sem:
            try:
                conn = await asyncio.wait_for(connect(sc), 10.0)
            except (OSError, TimeoutError):
                errors += 1
                return
            # Aborted later on purpose: its failure is expected, so mark it retrieved.
            conn.request(req, None).add_done_callback(lambda f: f.cancelled() or f.exception())
            deadline = now() + timeout_s
            while not conn.t_first and not conn.closed and now() < deadline:
                await asyncio.sleep(0.01)
            if conn.t_first:
                conns.append(conn)
            else:
                errors += 1
                conn.abort()

    await asyncio.gather(*(one() for _ in range(count - len(conns))))
    return errors
