"""The upstream HTTP/1.1 client: asyncio sockets, native parsing, keep-alive pools."""

from .connection import UpstreamConnection
from .errors import (
    ClientGone,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from .pool import Origin, Pool, close_all, pool_for

__all__ = [
    "ClientGone",
    "Origin",
    "Pool",
    "UpstreamClosed",
    "UpstreamConnectError",
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "close_all",
    "pool_for",
]
