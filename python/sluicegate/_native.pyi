"""sluicegate's native hot path (Rust, PyO3): request inspection, upstream heads, response relay."""

from typing import Any, final

__all__ = [
    "ANTHROPIC_TO_OPENAI",
    "OPENAI_TO_ANTHROPIC",
    "RELAY_ANTHROPIC",
    "RELAY_OPENAI",
    "Exchange",
    "HeadTemplate",
    "RequestInfo",
    "__version__",
    "inspect_request",
    "replace_model",
]

__version__: str

RELAY_ANTHROPIC: int
"""0: Anthropic SSE passed through unchanged, usage tallied from message_start/message_delta."""
RELAY_OPENAI: int
"""1: OpenAI chat.completion.chunk SSE passed through unchanged, usage tallied from the chunk
carrying "usage"."""
OPENAI_TO_ANTHROPIC: int
"""2: an OpenAI-format upstream translated for an Anthropic-format client."""
ANTHROPIC_TO_OPENAI: int
"""3: an Anthropic-format upstream translated for an OpenAI-format client."""

@final
class RequestInfo:
    """What routing needs from a request body, found by `inspect_request`."""

    @property
    def model(self) -> str | None:
        """Top-level "model" string (JSON-unescaped), None if absent or not a string."""
    @property
    def model_span(self) -> tuple[int, int] | None:
        """Byte range [start, end) of the model value INCLUDING its quotes."""
    @property
    def stream(self) -> bool:
        """Top-level "stream" is true."""
    @property
    def image_count(self) -> int:
        """Number of image parts anywhere: objects with "type":"image" (Anthropic, also inside
        tool_result content) or "type":"image_url" (OpenAI)."""
    @property
    def has_tools(self) -> bool:
        """Top-level "tools" is a non-empty array."""

def inspect_request(body: bytes) -> RequestInfo:
    """One pass over the body. Raises ValueError with a short human message (e.g. 'invalid JSON at
    byte 17: expected ...' or 'request body must be a JSON object') when the body is not valid JSON
    or not an object."""

def replace_model(body: bytes, span: tuple[int, int], model: str) -> bytes:
    """The body with bytes[span] replaced by model JSON-encoded as a string; every other byte unchanged.
    Raises ValueError when the span is not inside the body."""

@final
class HeadTemplate:
    """An HTTP/1.1 request head for one upstream target, built once per config snapshot.

    Raises ValueError for a method that is not a token, a path with spaces or control characters,
    a host or extra header value containing CR, LF or NUL, an invalid header name, or an extra
    header the gateway sets itself (host, content-length, transfer-encoding).
    """

    def __new__(
        cls,
        method: str,
        path: str,
        host: str,
        extra_headers: list[tuple[str, str]],
        forward_client_headers: bool = True,
    ) -> HeadTemplate: ...
    def render(self, client_headers: list[tuple[str, str]], content_length: int) -> bytes:
        """'METHOD path HTTP/1.1\\r\\nhost: ...\\r\\n' + forwarded client headers (original case and value
        bytes, in order) + extra headers + 'content-length: N\\r\\n' + '\\r\\n'.

        Client headers dropped: hop-by-hop (connection, keep-alive, proxy-*, te, trailer,
        transfer-encoding, upgrade, and any header the client's Connection header names), host,
        content-length, authorization, x-api-key, accept-encoding (the gateway needs identity
        encoding), cookie, and any header whose name (case-insensitive) appears in extra_headers
        (config wins). When forward_client_headers is False, only the extra headers plus
        'content-type: application/json' (unless an extra header sets content-type) are sent.
        Header names are compared case-insensitively. Client headers whose value contains CR, LF
        or NUL, or whose name is not a valid token, are skipped. `path` may contain a query
        string; it is used verbatim."""

@final
class Exchange:
    """One upstream HTTP/1.1 response, fed bytes as they arrive from the socket.

    Raises ValueError for an unknown mode, for an unknown key in translator_options (known:
    flavor, model, include_usage), and, for modes 2 and 3, "translation mode not available"
    while no translator is built in.
    """

    def __new__(cls, mode: int, translator_options: dict[str, Any] | None = None) -> Exchange: ...
    def feed(self, data: bytes) -> bytes | None:
        """Parse more response bytes. Returns the bytes ready for the client now (for a 2xx
        text/event-stream response: all COMPLETE SSE events received so far, unchanged for RELAY_*
        modes; a partial trailing event is held until complete), or None. Non-event-stream bodies
        are accumulated (see take_body). Raises ValueError on an invalid HTTP response (bad status
        line, bad chunk size, header section over 64 KiB, a single SSE event over 16 MiB).

        When `data` is exactly complete events of an unframed body, `data` itself is returned."""
    def eof(self) -> bytes | None:
        """The connection closed. For a close-delimited body this completes it; otherwise the
        response is marked truncated. Returns any final bytes for the client (for RELAY modes: a
        held partial event is NOT emitted)."""
    def take_body(self) -> bytes:
        """The whole de-chunked body of a non-event-stream response (call after done). Also tallies
        usage from it: Anthropic message JSON `usage` (mode 0) or OpenAI completion `usage` (mode 1)."""
    @property
    def head_complete(self) -> bool:
        """The final (non-1xx) response head has been parsed."""
    @property
    def status(self) -> int:
        """The response status; 0 before the head is complete."""
    @property
    def headers(self) -> list[tuple[str, str]]:
        """Response headers for the client, original order/case: minus hop-by-hop, content-length,
        transfer-encoding, connection, keep-alive (a new list on each access)."""
    @property
    def content_type(self) -> str:
        """Lower-cased media type without parameters, '' if absent."""
    @property
    def is_event_stream(self) -> bool:
        """Head complete, 2xx, content-type text/event-stream."""
    @property
    def done(self) -> bool:
        """The whole body was received (content-length reached, last chunk, or eof for close-delimited)."""
    @property
    def truncated(self) -> bool:
        """The connection closed before the response was complete."""
    @property
    def keep_alive(self) -> bool:
        """The connection can be reused after done (HTTP/1.1 without 'connection: close', framed body)."""
    @property
    def usage(self) -> tuple[int, int, int, int]:
        """(input, output, cache_creation_input, cache_read_input) tokens."""
    @property
    def stop_reason(self) -> str | None:
        """Anthropic: message_delta.delta.stop_reason / message.stop_reason; OpenAI: finish_reason."""
    @property
    def event_count(self) -> int:
        """SSE events relayed (events with at least one data line)."""
    @property
    def error_event(self) -> bool:
        """An `event: error` (Anthropic) or a data object with top-level "error" (OpenAI) was seen."""
