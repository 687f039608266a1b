"""Failures talking to an upstream, before or during its response."""

from __future__ import annotations


class UpstreamError(Exception):
    """Base: `retryable` says whether another target may be tried (nothing sent to the client yet)."""

    status = 502
    kind = "upstream_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UpstreamConnectError(UpstreamError):
    kind = "connect_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout"


class UpstreamProtocolError(UpstreamError):
    kind = "protocol_error"


class UpstreamClosed(UpstreamError):
    """The connection closed before the response was complete."""

    kind = "connection_closed"


class ClientGone(Exception):
    """The client went away while a stream was relayed to it (not an upstream failure)."""
