"""Forwarding one request to an upstream target and relaying its answer to the client.

Failover happens only while the client has received nothing: connect errors, timeouts to the
first byte, retryable statuses (429, 500, 502, 503, 504, 529) and a stream that breaks before
its first event move on to the next target. An event stream's response head is held back until
its first event has arrived, so that last case is still invisible to the client. Once anything
has been sent it is never retried; a failure mid-stream becomes an error event in the
client's format.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import orjson

from . import _native, log, thinking
from .context import RequestContext
from .errors import GatewayError
from .health import health_of, parse_retry_after
from .snapshot import Target
from .upstream import ClientGone, UpstreamClosed, UpstreamError, UpstreamTimeout

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})

# An `error` event that is a stream's first event, by error type: the status it stands for, so
# it fails over like that status would have (types as Anthropic's API and the translators name
# them; also what OpenAI-compatible servers put in `error.type` when they copy Anthropic's).
FIRST_EVENT_ERROR_STATUS = {
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# Upstream connections of streams being relayed, so a drain deadline can end them.
open_streams: set[Any] = set()


class _NoGauge:
    def stream_open(self) -> None:
        pass

    def stream_close(self) -> None:
        pass


# What counts the streams being relayed (`sluicegate_streams_in_flight`): the worker's Metrics,
# set by the app at start-up (`count_streams_on`); nothing outside a gateway.
_streams_gauge: Any = _NoGauge()


def count_streams_on(gauge: Any) -> None:
    global _streams_gauge
    _streams_gauge = gauge


class _Walk:
    """What the attempt in progress needs to know of the failover loop around it."""

    __slots__ = ("deadline", "rest", "targets")

    def __init__(self, deadline: float | None, targets: Sequence[Target]) -> None:
        # The group's deadline (monotonic) or None: each attempt's connect and first-byte limits
        # are cut to what is left of it.
        self.deadline = deadline
        self.targets = targets
        self.rest = len(targets)  # targets[rest:] are still to come after this attempt

    def another_target_left(self) -> bool:
        """Whether the loop would go on to another target if this attempt failed now (without
        claiming anything: a target being probed or open does not count)."""
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            return False
        return any(health_of(t.name).selectable(now) for t in self.targets[self.rest :])


# The failover loop of the request being routed in this task, or None. Set by
# forward_with_failover.
_walk: ContextVar[_Walk | None] = ContextVar("sluicegate_walk", default=None)


class RetryableResponse(Exception):
    """An upstream answered with a status worth trying elsewhere; kept to return if all fail."""

    def __init__(
        self, status: int, headers: list[tuple[str, str]], body: bytes, transform: Any = None
    ) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body
        self.transform = transform


def _drop_frames(exc: BaseException) -> None:
    """Forget where a caught upstream error was raised. A timeout or protocol error is kept on
    its connection (`conn.error`) and raised from there, so its traceback closes a cycle through
    the relay's frames, which hold the client's transport; Granian ends the response only once
    that is released, and after gc.freeze the collector that would break the cycle runs rarely:
    the client saw its error event, then a stream that never ended."""
    exc.__traceback__ = None


def stream_error_event(api: str, message: str) -> bytes:
    from .errors import anthropic_error, openai_error

    if api == "openai":
        return b"data: " + openai_error(502, message) + b"\n\n"
    return b"event: error\ndata: " + anthropic_error(502, message) + b"\n\n"


def _left(limit: float) -> float:
    """`limit` cut to what is left of the group deadline; a timeout when nothing is."""
    walk = _walk.get()
    deadline = walk.deadline if walk is not None else None
    if deadline is None:
        return limit
    left = deadline - time.monotonic()
    if left <= 0:
        raise UpstreamTimeout("upstream timed out: the group's deadline was reached")
    return min(limit, left)


async def _open(
    target: Target,
    path: str,
    client_headers: list[tuple[str, str]],
    body: bytes,
    mode: int,
    forward_client_headers: bool,
    options: dict[str, Any] | None,
) -> tuple[Any, Any]:
    pool = target.pool
    assert pool is not None
    head = target.head(path, forward_client_headers).render(client_headers, len(body))
    conn, reused = await pool.acquire(_left(target.connect_s))
    try:
        first_byte_s = _left(target.first_byte_s)
    except UpstreamTimeout:
        conn.abort()
        raise
    ex = _native.Exchange(mode, options)
    conn.start(head, body, ex, first_byte_s=first_byte_s, idle_s=target.idle_s, total_s=target.total_s)
    try:
        await conn.wait_head()
    except UpstreamClosed:
        conn.abort()
        if not reused or conn.received:
            raise
        # A pooled keep-alive connection the upstream had already closed: one fresh try.
        conn = await pool.connect_fresh(_left(target.connect_s))
        ex = _native.Exchange(mode, options)
        conn.start(
            head,
            body,
            ex,
            first_byte_s=_left(target.first_byte_s),
            idle_s=target.idle_s,
            total_s=target.total_s,
        )
        await conn.wait_head()
    except BaseException:
        conn.abort()
        raise
    return conn, ex


async def _first_event(conn: Any, ex: Any) -> bytes | None:
    """The first bytes of an event stream for the client. Raises UpstreamError when the upstream
    fails, or ends the stream, before sending a single event."""
    walk = _walk.get()
    if walk is None or walk.deadline is None:
        data: bytes | None = await conn.next_chunk()
    else:
        try:
            data = await asyncio.wait_for(conn.next_chunk(), _left(3600.0))
        except TimeoutError:
            conn.abort()
            raise UpstreamTimeout("upstream timed out: no event before the group's deadline") from None
    if ex.event_count == 0:
        if ex.truncated:
            # What a translating exchange emits at eof here is its own error event, not the upstream's.
            raise conn.error or UpstreamClosed("upstream closed the stream before its first event")
        if ex.done:
            # A 200 event stream that ended cleanly with no event at all (`0\r\n\r\n` at once):
            # Claude Code's "empty or malformed response (HTTP 200)". As good as a closed
            # connection, and the client has seen nothing yet, so the next target is tried.
            raise UpstreamClosed("upstream ended its event stream without sending any event")
    return data


async def forward(
    ctx: RequestContext,
    proto: Any,
    target: Target,
    path: str,
    client_headers: list[tuple[str, str]],
    body: bytes,
    *,
    mode: int,
    api: str,
    may_retry: bool,
    forward_client_headers: bool = True,
    options: dict[str, Any] | None = None,
    transform_body: Any = None,
    retry_thinking: bool = True,
) -> None:
    """Send `body` to `target` and answer the client. Raises UpstreamError, or RetryableResponse
    when `may_retry`, only while nothing has been sent to the client.

    An Anthropic-format target that refuses earlier thinking blocks (signatures it cannot
    verify) is asked once more without them (`retry_thinking`; see thinking.py)."""
    if mode == _native.RELAY_ANTHROPIC:
        refused = thinking.rejected_before(ctx.session_id, target.name)
        if refused is not None and (cut := thinking.without_thinking(body, refused)) is not None:
            body = cut[0]  # this session's blocks this target refused before
    conn, ex = await _open(target, path, client_headers, body, mode, forward_client_headers, options)
    pool = target.pool
    assert pool is not None
    ctx.mark_first_byte()
    status: int = ex.status
    headers: list[tuple[str, str]] = ex.headers
    if not ex.is_event_stream:
        try:
            await conn.wait_done()
        except BaseException:
            conn.abort()
            raise
        resp = ex.take_body()
        pool.release(conn)
        if (
            status == 400
            and retry_thinking
            and mode == _native.RELAY_ANTHROPIC
            and thinking.retry_worthy(status, resp)
            and (cut := thinking.without_thinking(body)) is not None
        ):
            stripped, removed = cut
            thinking.remember(ctx.session_id, target.name, removed)
            log.info(
                "target refused earlier thinking: retrying without it",
                request_id=ctx.request_id,
                target=target.name,
                blocks_removed=len(removed),
            )
            ctx.attempts += 1
            return await forward(
                ctx,
                proto,
                target,
                path,
                client_headers,
                stripped,
                mode=mode,
                api=api,
                may_retry=may_retry,
                forward_client_headers=forward_client_headers,
                options=options,
                transform_body=transform_body,
                retry_thinking=False,
            )
        if may_retry and status in RETRYABLE_STATUSES:
            raise RetryableResponse(status, headers, resp, transform_body)
        ctx.usage = ex.usage
        ctx.stop_reason = ex.stop_reason
        ctx.upstream_cost = ex.upstream_cost
        if transform_body is not None:
            status, headers, resp = transform_body(status, headers, resp, ctx)
        ctx.status = status
        if status >= 400:
            ctx.error_type = f"upstream_{status}"
        headers.append(("x-sluicegate-request-id", ctx.request_id))
        proto.response_bytes(status, headers, resp)
        return

    # Granian's disconnect awaitable is future-like: a done-callback on it costs no Task.
    watcher = proto.client_disconnect()
    if not hasattr(watcher, "add_done_callback"):
        watcher = asyncio.ensure_future(watcher)

    def _client_gone(_: Any) -> None:
        ctx.client_disconnected = True
        conn.abort()

    watcher.add_done_callback(_client_gone)
    open_streams.add(conn)
    gauge = _streams_gauge
    gauge.stream_open()
    failing_over = False
    try:
        try:
            data = await _first_event(conn, ex)
        except UpstreamError as exc:
            if not ctx.client_disconnected:
                raise
            _drop_frames(exc)
            ctx.status = status
            ctx.error_type = "client_disconnected"
            return
        if ex.error_event and data is not None and may_retry:
            # The head is still held back: an overload reported as the stream's first event
            # can still go elsewhere, like the 529 it stands for.
            first_error = _first_event_error(data)
            if first_error is not None:
                walk = _walk.get()
                if walk is not None and walk.another_target_left():
                    failing_over = True
                    conn.abort()
                    error_status, error_body = first_error
                    json_headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
                    json_headers.append(("content-type", "application/json"))
                    raise RetryableResponse(error_status, json_headers, error_body)
        ctx.status = status
        ctx.stream = True
        headers.append(("x-sluicegate-request-id", ctx.request_id))
        transport: Any  # Granian's stream transport or the native front's Stream
        if data is not None and type(proto) is _native.Request:
            # The native front writes the head and the first event in one write.
            try:
                transport = proto.response_stream(status, headers, data)
            except _native.ClientClosed:
                ctx.client_disconnected = True
                conn.abort()
                return
            data_sent = True
        else:
            transport = proto.response_stream(status, headers)
            data_sent = False
        # Committed: nothing resends the request, so what only a retry needed goes now rather
        # than living as long as the stream (~2 KB an idle stream: the header lists, the first
        # event). Claude Code's bodies run to hundreds of KB.
        del headers, client_headers
        if mode == _native.RELAY_ANTHROPIC:
            body = b""
            if ctx.release_body is not None:
                ctx.release_body()
        if data is not None:
            if not data_sent:
                try:
                    await transport.send_bytes(data)
                except Exception:
                    ctx.client_disconnected = True
                    conn.abort()
                    return
            data = None
            await _relay_rest(ctx, conn, ex, transport, mode, api, target)
    finally:
        open_streams.discard(conn)
        gauge.stream_close()
        with contextlib.suppress(Exception):
            watcher.remove_done_callback(_client_gone)
        if not watcher.done():
            watcher.cancel()
        if not failing_over:
            ctx.usage = ex.usage
            ctx.usage_estimated = ex.usage_estimated  # natively: a server that reported none
            ctx.stop_reason = ex.stop_reason
            ctx.upstream_cost = ex.upstream_cost
            if ex.error_event and ctx.error_type is None:
                ctx.error_type = "stream_error_event"
        if ctx.client_disconnected and ctx.error_type is None:
            ctx.error_type = "client_disconnected"
        pool.release(conn)


async def _relay_rest(
    ctx: RequestContext,
    conn: Any,
    ex: Any,
    transport: Any,
    mode: int,
    api: str,
    target: Target,
) -> None:
    """The stream after its first event, with no coroutine per chunk: under the native front
    read and written by the native relay (`conn.splice`), otherwise from the upstream socket's
    callback (`conn.relay`), one native parse and one queued send a chunk."""
    try:
        # The native front's streams are relayed socket to socket (rust/relay_hub.rs).
        if type(transport) is not _native.Stream or not await conn.splice(transport):
            await conn.relay(transport.send_bytes)
    except ClientGone:
        ctx.client_disconnected = True
        conn.abort()
        return
    except UpstreamError as exc:
        _drop_frames(exc)
        if ctx.client_disconnected:
            return
        ctx.error_type = f"stream_{exc.kind}"
        # A translating exchange has already emitted its own error event from eof().
        if mode in (_native.RELAY_ANTHROPIC, _native.RELAY_OPENAI):
            await _send_error_event(ctx, transport, api, f"upstream {target.name}: {exc.message}")
        return
    if mode == _native.RELAY_ANTHROPIC and not ex.message_stop and not ex.error_event:
        # The body ended cleanly (last chunk, or close of a close-delimited body) but the message
        # never did: no message_stop. The SDK would hand Claude Code a half message as if
        # complete; an error event says it is not. Checked once, here.
        ctx.error_type = "stream_incomplete"
        message = f"upstream {target.name}: the event stream ended before the message was complete"
        await _send_error_event(ctx, transport, api, message)


async def _send_error_event(ctx: RequestContext, transport: Any, api: str, message: str) -> None:
    try:
        await transport.send_bytes(stream_error_event(api, message))
    except Exception:
        ctx.client_disconnected = True


def _first_event_error(data: bytes) -> tuple[int, bytes] | None:
    """(status, error JSON) when the FIRST event in `data` (client-format SSE bytes) is an error
    whose type stands for a retryable status; None otherwise. Only that one event is read, and
    only when the exchange has already seen an error event."""
    end = len(data)
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        at = data.find(sep)
        if 0 <= at < end:
            end = at
    lines = [line.rstrip(b"\r") for line in data[:end].split(b"\n")]
    payload = b"\n".join(
        line[6:] if line.startswith(b"data: ") else line[5:] for line in lines if line.startswith(b"data:")
    )
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    error = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(error, dict):
        return None
    etype = error.get("type")
    status = FIRST_EVENT_ERROR_STATUS.get(etype) if isinstance(etype, str) else None
    code = error.get("code")
    if status is None and isinstance(code, int) and code in RETRYABLE_STATUSES:
        status = code  # OpenAI-compatible servers: {"error": {"code": 503, ...}}
    return (status, payload) if status is not None else None


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


async def forward_with_failover(
    ctx: RequestContext,
    proto: Any,
    targets: list[Target],
    deadline_s: float | None,
    send: Any,
) -> None:
    """Try `send(target, may_retry)` on each target in turn until one answers the client.

    A target whose circuit another request is probing is skipped; when that leaves nothing,
    the first target is tried anyway. No further target is tried once `deadline_s` has passed,
    and every attempt's connect and first-byte limits are cut to what is left of it. When every
    attempt fails, the last upstream response (status, headers, body) is returned unmodified;
    when no upstream answered at all, a 502 (or 504 for timeouts) naming the last target.
    """
    deadline = time.monotonic() + deadline_s if deadline_s else None
    walk = _Walk(deadline, targets)
    token = _walk.set(walk)
    try:
        await _failover(ctx, proto, targets, walk, deadline_s, send)
    finally:
        _walk.reset(token)


async def _failover(
    ctx: RequestContext,
    proto: Any,
    targets: list[Target],
    walk: _Walk,
    deadline_s: float | None,
    send: Any,
) -> None:
    deadline = walk.deadline
    last_response: RetryableResponse | None = None
    response_target: Target | None = None
    last_error: UpstreamError | None = None
    last_target: Target | None = None
    deadline_hit = False

    async def attempt(target: Target, probe: bool) -> bool:
        """True when the client has been answered; False to go on with the next target.
        `probe`: this attempt holds the target's half-open probe slot."""
        nonlocal last_response, response_target, last_error, last_target, deadline_hit
        ctx.target = target.name
        ctx.upstream_model = target.upstream_model or ctx.requested_model
        ctx.price = target.price
        ctx.attempts += 1
        last_target = target
        health = health_of(target.name)
        health.inflight += 1
        began = time.perf_counter()
        try:
            # A retryable status always comes back as RetryableResponse: the last one is
            # returned unmodified below, after the breaker has seen it.
            await send(target, True)
        except RetryableResponse as resp:
            retry_after = parse_retry_after(_header(resp.headers, "retry-after"))
            health.failure(f"status {resp.status}", retry_after, probe=probe)
            last_response, response_target = resp, target
            _attempt_failed(ctx, target, f"status {resp.status}")
            return False
        except UpstreamError as exc:
            _drop_frames(exc)
            last_error = exc
            if (
                deadline is not None
                and isinstance(exc, UpstreamTimeout)
                and time.monotonic() >= deadline - 0.01
            ):
                # Cut short by the group's deadline, not by the target's own limits.
                deadline_hit = True
                if probe:
                    health.abandon()
            else:
                health.failure(exc.kind, probe=probe)
            _attempt_failed(ctx, target, exc.kind)
            return False
        except BaseException:
            if probe:
                health.abandon()
            raise
        finally:
            health.inflight -= 1
            if ctx.status == 0:
                ctx.ttfb = None
        error = ctx.error_type
        if error is not None and error.startswith("stream_"):
            health.failure(error, probe=probe)  # answered, then broke: not retried, but it counts
        elif ctx.status in RETRYABLE_STATUSES:
            health.failure(f"status {ctx.status}", probe=probe)
        elif ctx.ttfb is None:
            if probe:
                health.abandon()  # the client left before the upstream said anything
        else:
            health.success(ctx.ttfb - (began - ctx.t0))
        return True

    attempted = False
    for i, target in enumerate(targets):
        # deadline_hit: the last attempt was cut by the deadline. Its timer runs on the loop's
        # clock, which can read a little behind time.monotonic(), so the clock alone may still
        # show a moment left; no new attempt starts in it either way.
        if attempted and (deadline_hit or (deadline is not None and time.monotonic() >= deadline)):
            deadline_hit = True
            break
        walk.rest = i + 1
        health = health_of(target.name)
        now = time.monotonic()
        half_open = health.state_at(now) == "half_open"
        if not health.claim(now):
            continue  # another request is probing it right now
        attempted = True
        if await attempt(target, probe=half_open):
            return
    # Every target is open or being probed by other requests: answering late beats refusing
    # outright. This attempt is not the probe; its outcome still counts.
    walk.rest = len(targets)
    if not attempted and targets and await attempt(targets[0], probe=False):
        return

    if last_response is not None and response_target is not None:
        ctx.target = response_target.name
        ctx.upstream_model = response_target.upstream_model or ctx.requested_model
        ctx.price = response_target.price
        status, headers, body = last_response.status, last_response.headers, last_response.body
        if last_response.transform is not None:
            status, headers, body = last_response.transform(status, headers, body, ctx)
        ctx.status = status
        ctx.error_type = f"upstream_{status}"
        headers.append(("x-sluicegate-request-id", ctx.request_id))
        proto.response_bytes(status, headers, body)
        return
    name = last_target.name if last_target else "?"
    if last_error is None:
        raise GatewayError(503, f"no target of the group could be tried (last: {name})")
    message = f"upstream {name}: {last_error.message}"
    if deadline_hit and deadline_s:
        message += f" (the model group's deadline of {deadline_s:g} s was reached)"
        raise GatewayError(504, message, "api_error")
    raise GatewayError(last_error.status, message, "api_error")


def _attempt_failed(ctx: RequestContext, target: Target, reason: str) -> None:
    log.info(
        "upstream attempt failed",
        request_id=ctx.request_id,
        group=ctx.group,
        target=target.name,
        attempt=ctx.attempts,
        reason=reason,
    )
