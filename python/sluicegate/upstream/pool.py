"""Keep-alive connection pools, one per upstream origin, shared across snapshot reloads."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from .connection import UpstreamConnection
from .errors import UpstreamConnectError, UpstreamTimeout

# Idle keep-alive connections kept per origin. Bounded for a runaway, not for the common case:
# a burst of N concurrent streams that ends leaves N connections idle, and each one closed here
# is a new connect (to a TLS upstream, a handshake) for the next burst. At 512, a 25 s run of
# 2,000 paced streams under Granian made 9,301 TCP connects, the client's 2,000 included, where
# 4,021 do: one per stream slot (docs/performance.md). An idle connection costs a few KB here;
# the upstream closes what it no longer wants, and the pool drops those.
_MAX_IDLE_PER_ORIGIN = 4096


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    base_path: str  # path prefix from base_url, without a trailing slash

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
        _ssl_context.set_alpn_protocols(["http/1.1"])
    return _ssl_context


class Pool:
    __slots__ = ("_idle", "origin")

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self._idle: list[UpstreamConnection] = []

    async def acquire(self, connect_s: float) -> tuple[UpstreamConnection, bool]:
        """A connection and whether it was reused from the pool."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        return await self._connect(connect_s), False

    async def connect_fresh(self, connect_s: float) -> UpstreamConnection:
        return await self._connect(connect_s)

    def release(self, conn: UpstreamConnection) -> None:
        if conn.finish() and len(self._idle) < _MAX_IDLE_PER_ORIGIN:
            self._idle.append(conn)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().abort()

    async def _connect(self, connect_s: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        o = self.origin
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(loop),
                    o.host,
                    o.port,
                    ssl=_tls() if o.scheme == "https" else None,
                    server_hostname=o.host if o.scheme == "https" else None,
                ),
                connect_s,
            )
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to {o.host_header} timed out after {connect_s:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
            raise UpstreamConnectError(f"cannot connect to {o.host_header}: {reason}") from None
        sock = proto.transport.get_extra_info("socket") if proto.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if o.scheme != "https":  # the native relay reads plain sockets only
                proto.fd = sock.fileno()
        return proto


_pools: dict[Origin, Pool] = {}


def pool_for(origin: Origin) -> Pool:
    pool = _pools.get(origin)
    if pool is None:
        pool = _pools[origin] = Pool(origin)
    return pool


def close_all() -> None:
    for pool in _pools.values():
        pool.close()
