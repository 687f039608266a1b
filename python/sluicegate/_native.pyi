"""sluicegate's native hot path (Rust, PyO3): request inspection, upstream heads, response relay."""

from collections.abc import Callable, Sequence
from typing import Any, Self, final

from typing_extensions import disjoint_base

__all__ = [
    "ANTHROPIC_TO_OPENAI",
    "OPENAI_TO_ANTHROPIC",
    "RELAY_ANTHROPIC",
    "RELAY_CANCELLED",
    "RELAY_CLIENT_GONE",
    "RELAY_DONE",
    "RELAY_INVALID",
    "RELAY_OPENAI",
    "RELAY_UPSTREAM_EOF",
    "BodyChunks",
    "ClientClosed",
    "Exchange",
    "FrontCore",
    "HeadTemplate",
    "Headers",
    "LedgerBatch",
    "ProtocolCore",
    "Ready",
    "RelayHub",
    "Request",
    "RequestInfo",
    "RequestSink",
    "RowQueue",
    "SqliteLedgerWriter",
    "Stream",
    "StreamTranslator",
    "__version__",
    "anthropic_error_to_openai",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "ask_for_usage",
    "count_tokens_estimate",
    "inspect_request",
    "ledger_batch",
    "openai_error_to_anthropic",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
    "replace_model",
    "sqlite_libversion_address",
    "sqlite_version",
]

__version__: str

RELAY_ANTHROPIC: int
"""0: Anthropic SSE passed through unchanged, usage tallied from message_start/message_delta."""
RELAY_OPENAI: int
"""1: OpenAI chat.completion.chunk SSE passed through unchanged (optionally minus the usage-only
chunk), usage tallied from the chunk carrying "usage"."""
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
    @property
    def include_usage(self) -> bool:
        """Top-level "stream_options" is an object whose "include_usage" is true."""

def inspect_request(body: bytes) -> RequestInfo:
    """One pass over the body. Raises ValueError with a short human message (e.g. 'invalid JSON at
    byte 17: expected ...' or 'request body must be a JSON object') when the body is not valid JSON
    or not an object."""

def replace_model(body: bytes, span: tuple[int, int], model: str) -> bytes:
    """The body with bytes[span] replaced by model JSON-encoded as a string; every other byte unchanged.
    Raises ValueError when the span is not inside the body."""

def ask_for_usage(body: bytes, info: RequestInfo, model: str | None = None) -> bytes:
    """The body (`info` is what inspect_request found in it) with stream_options.include_usage set
    to true, and the model value replaced by `model` JSON-encoded when given; every other byte
    unchanged. An existing include_usage value becomes true, a stream_options object gains
    "include_usage":true as its first member, any other stream_options value is replaced by
    {"include_usage":true}, and a body without stream_options gets
    "stream_options":{"include_usage":true} as its last member. Raises ValueError when a span in
    `info` is not inside `body` (info from another body) or the body is not an object."""

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

    For modes 2 and 3 the upstream's events go through a StreamTranslator built from
    translator_options {"model": name reported to the client, "flavor": vllm | ollama | llamacpp |
    lmstudio | sglang | generic (default), "include_usage": bool (default False)}; usage and
    stop_reason are then the translator's (client vocabulary). Mode 1 takes {"drop_usage_chunk":
    bool (default False)}: the usage-only chunk ("choices": [] with "usage") is tallied but left
    out of the bytes for the client (the gateway asked for it, the client did not); mode 0 takes
    no options. Raises ValueError for an unknown mode, an option the mode does not take, or an
    unknown flavor.
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
        """(input, output, cache_creation_input, cache_read_input) tokens. For an OpenAI-format
        stream that reported no usage at all (see usage_estimated): (0, estimated output, 0, 0)."""
    @property
    def usage_estimated(self) -> bool:
        """An OpenAI-format upstream stream (modes 1 and 2) with chunks but no usage report:
        `usage` is then an output estimate of one token per chunk with a non-empty delta."""
    @property
    def stop_reason(self) -> str | None:
        """Anthropic: message_delta.delta.stop_reason / message.stop_reason; OpenAI: finish_reason."""
    @property
    def upstream_cost(self) -> float | None:
        """A cost in USD the upstream reported itself (OpenAI-format `usage.cost`), or None."""
    @property
    def event_count(self) -> int:
        """SSE events relayed (events with at least one data line)."""
    @property
    def error_event(self) -> bool:
        """An `event: error` (Anthropic) or a data object with top-level "error" (OpenAI) was seen."""
    @property
    def message_stop(self) -> bool:
        """An Anthropic stream's `message_stop` has been relayed."""

@disjoint_base
class ProtocolCore:
    """The per-chunk half of an asyncio protocol for one upstream connection (rust/protocol.rs);
    sluicegate.upstream.connection.UpstreamConnection subclasses it. `data_received` feeds the
    exchange and sends what it returns to `sink` without an interpreter frame; everything else is
    a call back into the subclass by name: `_stray_bytes()` (bytes with no exchange),
    `_invalid_response(exc)` (the exchange raised ValueError), `_buffer(chunk)` (bytes for the
    client while no sink is set), `_sent(result)` (what sink returned, unless its type was
    learnt as done), `_client_gone(None)` (sink raised) and `_wake()` (the response is
    complete, or its head is while no sink is set)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Self: ...
    exchange: Exchange | None
    sink: Callable[[bytes], Any] | None
    received: bool
    def rx_idle_s(self) -> float:
        """Seconds since bytes last arrived (infinite when none have)."""
    def _learn_sent_type(self, kind: type) -> None:
        """A send result of this type needs nothing more: data_received stops asking `_sent`."""
    def data_received(self, data: bytes) -> None: ...

# -- the native stream relay (rust/relay_hub.rs) --------------------------------------------------

RELAY_DONE: int
"""0: the body is complete."""
RELAY_CLIENT_GONE: int
"""1: the client socket failed a write or hung up."""
RELAY_UPSTREAM_EOF: int
"""2: the upstream closed (or reset) its side; the exchange is ended by the caller."""
RELAY_INVALID: int
"""3: the upstream's bytes do not parse (detail says why)."""
RELAY_CANCELLED: int
"""4: cancelled by the caller."""

@final
class RelayHub:
    """One epoll set per event loop: the streams whose upstream socket is read and client socket
    written natively, one reader callback (`poll`) for all of them."""

    def __new__(cls) -> RelayHub: ...
    def fileno(self) -> int: ...
    def start(
        self,
        core: ProtocolCore,
        exchange: Exchange,
        stream: Stream,
        upstream_fd: int,
        done: Callable[[int, str | None], Any],
    ) -> int | None:
        """Relay the rest of `exchange`'s body to `stream`'s client; None when the stream cannot
        be written directly (HEAD, bytes queued in its transport, no socket)."""
    def cancel(self, id: int) -> None: ...
    def poll(self) -> None: ...

# -- the native front (rust/front/py.rs) ---------------------------------------------------------

class ClientClosed(ConnectionError):
    """The client closed the connection (or its side of it) before the body or the answer was complete."""

@final
class Ready:
    """An awaitable whose value is already known: the request body, or None (what
    Stream.send_bytes returns)."""

    def __await__(self) -> Self: ...
    def __next__(self) -> None: ...

@final
class BodyChunks:
    def __aiter__(self) -> Self: ...
    def __anext__(self) -> Ready: ...

@final
class Headers:
    """A request's headers, names lower-cased, in the order sent (RSGI's scope.headers)."""

    def get(self, key: str, default: Any = None) -> Any: ...
    def get_all(self, key: str) -> list[str]: ...
    def items(self) -> list[tuple[str, str]]: ...
    def keys(self) -> list[str]: ...
    def values(self) -> list[str]: ...
    def __contains__(self, key: str, /) -> bool: ...
    def __getitem__(self, key: str, /) -> str: ...
    def __len__(self) -> int: ...

@final
class Stream:
    def send_bytes(self, data: bytes) -> Ready: ...
    def send_str(self, data: str) -> Ready: ...

@final
class Request:
    """One request, as both the RSGI scope and protocol the app is handed."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def headers(self) -> Headers: ...
    @property
    def http_version(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    @property
    def authority(self) -> str | None: ...
    @property
    def client(self) -> str: ...
    @property
    def server(self) -> str: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Ready: ...
    def __aiter__(self) -> BodyChunks: ...
    def response_empty(self, status: int, headers: Any) -> None: ...
    def response_bytes(self, status: int, headers: Any, body: bytes) -> None: ...
    def response_str(self, status: int, headers: Any, body: str) -> None: ...
    def response_stream(self, status: int, headers: Any, first: bytes | None = None) -> Stream: ...
    def client_disconnect(self) -> Any: ...

@disjoint_base
class FrontCore:
    """The per-byte half of a client connection's protocol (rust/front/py.rs);
    sluicegate.front.connection.FrontConnection subclasses it. It calls back `_dispatch(request)`
    for each complete request, `_disconnect_waiter()` for Request.client_disconnect, and
    `_refused(status, reason, client)` after answering a request it refused itself."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Self: ...
    def _attach(self, transport: Any, client: str, server: str, max_body: int, fd: int) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def _eof(self) -> bool: ...
    def _lost(self) -> None: ...
    def _finish(self) -> None: ...
    def _drain(self) -> None: ...
    def _expire(self) -> None: ...
    @property
    def busy(self) -> bool: ...
    @property
    def reading(self) -> bool: ...
    def idle_s(self) -> float: ...

# -- the ledger's SQLite writer (rust/ledger.rs) ------------------------------------------------

_RollupSpec = tuple[list[int], int, list[int], list[int], list[int]]
# (width, request id field, required fields, rollup spec)
_RecordShape = tuple[int, int, list[int], _RollupSpec]

@final
class LedgerBatch:
    """A batch RowQueue built, for SqliteLedgerWriter.write_batch (or PostgreSQL's one statement)."""

    @property
    def n(self) -> int:
        """Its records."""
    def records_for_postgres(self) -> str | None:
        """The records' JSON text, each \\u0000 as \\ufffd; None once a writer took the batch."""

@final
class SqliteLedgerWriter:
    """One connection to a migrated SQLite ledger (usage/batches.py). A record is a tuple of
    `shape`'s width of values, the unix time first and the request id at its id field; each
    batch is one `batch_sql` row (first time, first request id, least and greatest time, count,
    the records' JSON text) and one `rollup_sql` upsert per (UTC day, dimensions) with their
    sums, as the rollup spec (dimensions, status, int sums, real sums, optional sums; field
    indexes) says. Errors are the sqlite3 module's own exception classes: IntegrityError for a
    required field that is null, ProgrammingError for a value of another type, OverflowError
    for an int past 64 bits."""

    def __new__(
        cls, path: str, batch_sql: str, rollup_sql: str, shape: _RecordShape, busy_timeout_ms: int
    ) -> Self: ...
    def write(self, records: Sequence[tuple[object, ...]]) -> int:
        """All records in one transaction, or none; their count. A batch already stored adds
        nothing. The values are read with the GIL held, the SQLite work is done without it."""
    def write_batch(self, batch: LedgerBatch) -> int:
        """Store a batch RowQueue built, without the GIL; its records' count. Stored, the batch is
        empty (writing it again stores nothing); after a failure it is kept for the retry."""
    def close(self) -> None:
        """Close the connection; a write after it raises sqlite3.ProgrammingError."""

def ledger_batch(
    records: Sequence[tuple[object, ...]], shape: _RecordShape
) -> tuple[float, str, float, float, int, str, list[tuple[object, ...]]]:
    """What SqliteLedgerWriter stores for these records, for the sqlite3 driver to store: the
    batch row's six parameters, then the rollup upserts' parameters."""

def sqlite_libversion_address() -> int:
    """The address of `sqlite3_libversion` in the SQLite this extension runs on."""

def sqlite_version() -> str:
    """That SQLite's version, e.g. "3.40.1"."""

# -- translators (rust/translate/py.rs) ---------------------------------------------------------
# Usage tuples are (input, output, cache_creation, cache_read), Anthropic's breakdown:
# `input` excludes cached tokens (OpenAI's prompt_tokens = input + cache_creation + cache_read).

def anthropic_request_to_openai(
    body: bytes, model: str, flavor: str, include_usage: bool, max_tokens_cap: int | None = None
) -> bytes:
    """An Anthropic Messages request body as an OpenAI Chat Completions body for a server of `flavor`
    (vllm, ollama, llamacpp, lmstudio, sglang, generic), with `model` as the upstream model name.
    `max_tokens_cap` bounds the `max_tokens` sent (for servers with small context windows).

    Built field by field from what such servers accept: cache_control, context_management,
    output_config, metadata, service_tier, container, mcp_servers, server tools (typed tools
    without input_schema) and unknown fields are dropped. Tool results become `tool` messages;
    images inside them follow in one user message. Earlier thinking goes back as the flavor's
    reasoning field (vllm: reasoning and reasoning_content, ollama: reasoning, others:
    reasoning_content). `thinking` maps to chat_template_kwargs.enable_thinking (vllm, sglang,
    llamacpp), reasoning_effort "none" when disabled (ollama), reasoning_effort from an explicit
    budget (generic), nothing (lmstudio). Base64 images Ollama rejects (anything but JPEG, PNG,
    WebP) and Files API images become a short text note. stream_options.include_usage is added
    when streaming and include_usage is true.

    Raises ValueError (message suited to a 400) for invalid JSON, a missing messages array, an
    unknown role or flavor, or a block missing a required field."""

def openai_request_to_anthropic(body: bytes, model: str) -> bytes:
    """An OpenAI Chat Completions request body as an Anthropic Messages body for upstream `model`.

    system/developer messages form the system prompt; image_url parts become base64 or url image
    blocks; tool_calls become tool_use blocks (arguments that are not a JSON object are kept as
    {"_raw": "<arguments>"}); tool messages become tool_result blocks in one user turn; max_tokens
    defaults to 4096; temperature is clamped to 0..1; reasoning_effort low/medium/high becomes a
    thinking budget of 2048/8192/16384 (capped to 3/4 of max_tokens, dropped under 1024 or with a
    forced tool). Previous reasoning text is not sent (Anthropic needs its own signatures).

    Raises ValueError for invalid JSON, n > 1, function-role messages, audio or non-PDF file parts,
    or image URLs that are neither data: nor http(s)."""

def openai_response_to_anthropic(
    body: bytes, model: str
) -> tuple[bytes, tuple[int, int, int, int], str | None]:
    """An OpenAI chat.completion body as an Anthropic message reporting `model`, with its usage and
    Anthropic stop_reason. Raises ValueError when the body is not a completion (invalid JSON, an
    error object, no choices)."""

def anthropic_response_to_openai(
    body: bytes, model: str
) -> tuple[bytes, tuple[int, int, int, int], str | None]:
    """An Anthropic message body as an OpenAI chat.completion reporting `model`, with its usage and
    OpenAI finish_reason. Thinking is returned as message.reasoning_content. Raises ValueError when
    the body is not a message."""

def openai_error_to_anthropic(status: int, body: bytes) -> bytes:
    """An OpenAI-compatible server's error body as {"type":"error","error":{"type","message"}}: the
    type by status (400 invalid_request_error, 401 authentication_error, 402 billing_error,
    403 permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error,
    504 timeout_error, 529 overloaded_error, other 4xx invalid_request_error, other 5xx api_error),
    the message verbatim from error.message, error (a string), message, detail, or the body text."""

def anthropic_error_to_openai(status: int, body: bytes) -> bytes:
    """An Anthropic error body as {"error":{"message","type","param":null,"code":null}}, the
    Anthropic error type kept (by status when absent), the message verbatim."""

def count_tokens_estimate(body: bytes) -> int:
    """Estimated input tokens of a Messages/count_tokens request for targets with no counting
    endpoint: text (system, messages, tool inputs and results, tool names, descriptions, schemas)
    at one token per 3.5 UTF-8 bytes, 1600 per image, 3000 per document, 4 per message, 8 per tool.
    Errs high rather than low. Raises ValueError for invalid JSON or a missing messages array."""

@final
class StreamTranslator:
    """One streamed response's translator. mode 2 (OPENAI_TO_ANTHROPIC): OpenAI chunks in, Anthropic
    events out; mode 3 (ANTHROPIC_TO_OPENAI): Anthropic events in, OpenAI chunks out. `model` is the
    name reported to the client; `include_usage` (mode 3) sends the final usage chunk.

    Raises ValueError for another mode or an unknown flavor."""

    def __new__(cls, mode: int, model: str, flavor: str, include_usage: bool) -> StreamTranslator: ...
    def feed_event(self, event: str | None, data: bytes) -> bytes:
        """Translates one complete upstream SSE event (its event name, if any, and its data lines
        joined by newlines); returns the client-facing SSE bytes, possibly empty."""
    def finish(self, complete: bool) -> bytes:
        """Ends the stream. complete=False (connection lost, timeout), or a body that ended before
        the response did, gives an error event (Anthropic `event: error`, OpenAI `{"error": ...}`)
        instead of a silent truncation. Nothing after the stream already ended."""
    @property
    def usage(self) -> tuple[int, int, int, int]:
        """(input, output, cache_creation, cache_read) so far; input excludes cached tokens."""
    @property
    def stop_reason(self) -> str | None:
        """The stop reason in the client's vocabulary (Anthropic stop_reason for mode 2, OpenAI
        finish_reason for mode 3), once known."""

@final
class RequestSink:
    """The access lines and the metrics' counters of finished requests, from each one's ledger
    row. `fields`: the row's field names in order; `line`: the access line's entries, (key,
    source, scale), source a field name, "=text" for a fixed text or "attempts"; scale > 0 rounds
    a number half up to 1/scale. The bounds are the ttfb and duration histograms'. Access lines
    are kept until `take_access`; past `access_buffer_max` bytes `done` says so."""

    def __new__(
        cls,
        fields: list[str],
        line: list[tuple[str, str, float]],
        ttfb_bounds: list[float],
        duration_bounds: list[float],
        access_buffer_max: int,
    ) -> Self: ...
    def done(
        self,
        row: tuple[object, ...],
        ttfb_s: float | None,
        duration_s: float,
        attempts: int,
        tail: bytes | None,
        metrics: bool,
        access: bool,
        queue: RowQueue | None = None,
    ) -> int:
        """Count the request (when `metrics`), keep its access line (when `access`; `tail`,
        raw JSON, goes before the closing brace), and hand its values to `queue` (one that
        builds batches). 1: the first line kept since the last take; 2: the lines kept are past
        the bound; else 0."""
    def take_access(self) -> bytes | None:
        """The access lines kept since the last take, whole lines, or None."""
    def drain(
        self,
    ) -> list[
        tuple[
            str,
            str,
            list[tuple[str, int]],
            list[tuple[str, int]],
            list[float] | None,
            list[float] | None,
            list[int] | None,
            float | None,
        ]
    ]:
        """What was counted since the last drain, per (group, target): requests by status,
        errors by type, the ttfb and duration histograms (metrics.py's layout), tokens, cost;
        the counters start again from zero."""

@final
class RowQueue:
    """The ledger's records between the event loop and its writer: at most `queue_max` queued
    or being written; `wake()` is called when `batch_max` wait. With a `shape` (usage/batches.py's
    SHAPE) it builds batches for the native SQLite writer as records come (`take_batch`), else
    it holds rows (`take`)."""

    def __new__(
        cls,
        queue_max: int,
        batch_max: int,
        wake: Callable[[], object],
        shape: _RecordShape | None = None,
    ) -> Self: ...
    def push(self, row: object) -> None:
        """Queue a row; past the bound or once closed it is dropped and counted, and one a batch
        cannot hold is refused and counted. Never raises."""
    def take(self, n: int) -> list[Any]:
        """Up to n rows, oldest first; they count against the bound until `done`. (Rows.)"""
    def take_batch(self) -> LedgerBatch | None:
        """The oldest batch (the one being built, when none is full); its records count against
        the bound until `done`. (Batches.)"""
    @property
    def refused(self) -> tuple[int, str | None]:
        """Records a batch could not hold, and why the last one could not."""
    def done(self, n: int) -> None:
        """n taken rows are written (or given up)."""
    def close(self) -> None:
        """Rows pushed from now on are dropped."""
    @property
    def waiting(self) -> int:
        """Rows waiting to be taken."""
    @property
    def depth(self) -> int:
        """Rows waiting or being written."""
    @property
    def dropped(self) -> int: ...
