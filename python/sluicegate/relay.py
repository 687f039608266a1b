"""Forwarding one request to an upstream target and relaying its answer to the client.

Failover happens only before the first byte reaches the client: connect errors, timeouts
to first byte and retryable statuses move on to the next target. Once a stream has started
it is never retried; a failure mid-stream becomes an error event in the client's format.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import _native
from .context import RequestContext
from .errors import GatewayError
from .health import health_of, parse_retry_after
from .snapshot import Target
from .upstream import UpstreamClosed, UpstreamError

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


class RetryableResponse(Exception):
    """An upstream answered with a status worth trying elsewhere; kept to return if all fail."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, transform: Any = None) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body
        self.transform = transform


def stream_error_event(api: str, message: str) -> bytes:
    from .errors import anthropic_error, openai_error

    if api == "openai":
        return b"data: " + openai_error(502, message) + b"\n\n"
    return b"event: error\ndata: " + anthropic_error(502, message) + b"\n\n"


async def _open(
    target: Target, path: str, client_headers: list[tuple[str, str]], body: bytes, mode: int,
    forward_client_headers: bool, options: dict[str, Any] | None,
) -> tuple[Any, Any]:
    pool = target.pool
    assert pool is not None
    head = target.head(path, forward_client_headers).render(client_headers, len(body))
    conn, reused = await pool.acquire(target.connect_s)
    ex = _native.Exchange(mode, options)
    conn.start(head, body, ex, first_byte_s=target.first_byte_s, idle_s=target.idle_s, total_s=target.total_s)
    try:
        await conn.wait_head()
    except UpstreamClosed:
        conn.abort()
        if not reused or conn.received:
            raise
        # A pooled keep-alive connection the upstream had already closed: one fresh try.
        conn = await pool.connect_fresh(target.connect_s)
        ex = _native.Exchange(mode, options)
        conn.start(head, body, ex, first_byte_s=target.first_byte_s, idle_s=target.idle_s, total_s=target.total_s)
        await conn.wait_head()
    except BaseException:
        conn.abort()
        raise
    return conn, ex


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
) -> None:
    """Send `body` to `target` and answer the client. Raises UpstreamError or RetryableResponse
    only while nothing has been sent to the client."""
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
        if may_retry and status in RETRYABLE_STATUSES:
            raise RetryableResponse(status, headers, resp, transform_body)
        ctx.usage = ex.usage
        ctx.stop_reason = ex.stop_reason
        if transform_body is not None:
            status, headers, resp = transform_body(status, headers, resp, ctx)
        ctx.status = status
        if status >= 400:
            ctx.error_type = f"upstream_{status}"
        headers.append(("x-sluicegate-request-id", ctx.request_id))
        proto.response_bytes(status, headers, resp)
        return
    ctx.status = status
    ctx.stream = True
    headers.append(("x-sluicegate-request-id", ctx.request_id))
    transport = proto.response_stream(status, headers)
    watcher = asyncio.ensure_future(proto.client_disconnect())

    def _client_gone(_: Any) -> None:
        ctx.client_disconnected = True
        conn.abort()

    watcher.add_done_callback(_client_gone)
    try:
        while True:
            try:
                data = await conn.next_chunk()
            except UpstreamError as exc:
                if ctx.client_disconnected:
                    break
                ctx.error_type = f"stream_{exc.kind}"
                # A translating exchange has already emitted its own error event from eof().
                if mode in (_native.RELAY_ANTHROPIC, _native.RELAY_OPENAI):
                    try:
                        await transport.send_bytes(stream_error_event(api, f"upstream {target.name}: {exc.message}"))
                    except Exception:
                        ctx.client_disconnected = True
                break
            if data is None:
                break
            try:
                await transport.send_bytes(data)
            except Exception:
                ctx.client_disconnected = True
                conn.abort()
                break
    finally:
        watcher.remove_done_callback(_client_gone)
        if not watcher.done():
            watcher.cancel()
        ctx.usage = ex.usage
        ctx.stop_reason = ex.stop_reason
        if ex.error_event and ctx.error_type is None:
            ctx.error_type = "stream_error_event"
        if ctx.client_disconnected and ctx.error_type is None:
            ctx.error_type = "client_disconnected"
        pool.release(conn)


async def forward_with_failover(
    ctx: RequestContext,
    proto: Any,
    targets: list[Target],
    deadline_s: float | None,
    send: Any,
) -> None:
    """Try `send(target, may_retry)` on each target until one answers.

    When every target fails, the last upstream response is returned unmodified, or a 502/504
    naming the last target when none answered at all.
    """
    last_response: RetryableResponse | None = None
    last_error: UpstreamError | None = None
    last_target: Target | None = None
    started = time.monotonic()
    for i, target in enumerate(targets):
        if deadline_s is not None and i and time.monotonic() - started >= deadline_s:
            break
        may_retry = i < len(targets) - 1
        ctx.target = target.name
        ctx.upstream_model = target.upstream_model or ctx.requested_model
        ctx.price = target.price
        ctx.attempts += 1
        last_target = target
        health = health_of(target.name)
        health.inflight += 1
        attempt_started = time.perf_counter()
        try:
            await send(target, may_retry)
        except RetryableResponse as resp:
            last_response, last_error = resp, None
            retry_after = parse_retry_after(next((v for k, v in resp.headers if k.lower() == "retry-after"), None))
            health.failure(f"status {resp.status}", retry_after)
            ctx.ttfb = None
            continue
        except UpstreamError as exc:
            last_error, last_response = exc, None
            health.failure(exc.kind)
            ctx.ttfb = None
            continue
        finally:
            health.inflight -= 1
        if ctx.status in RETRYABLE_STATUSES:
            health.failure(f"status {ctx.status}")
        else:
            health.success(
                None if ctx.ttfb is None else ctx.ttfb - (attempt_started - ctx.t0)
            )
        return
    if last_response is not None:
        if last_response.transform is not None:
            status, headers, body = last_response.transform(
                last_response.status, last_response.headers, last_response.body, ctx
            )
            last_response = RetryableResponse(status, headers, body)
        ctx.status = last_response.status
        ctx.error_type = f"upstream_{last_response.status}"
        last_response.headers.append(("x-sluicegate-request-id", ctx.request_id))
        proto.response_bytes(last_response.status, last_response.headers, last_response.body)
        return
    name = last_target.name if last_target else "?"
    if last_error is None:
        raise GatewayError(504, f"deadline reached before any target of the group answered (last: {name})")
    raise GatewayError(last_error.status, f"upstream {name}: {last_error.message}", "api_error")
