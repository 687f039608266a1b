"""The RSGI application, served by the native front or Granian: routing of paths, auth, and
the per-request flow.

Per request the work is: read the snapshot reference once, a header look-up and a sha256 for
the key, one native pass over the body (`inspect_request`), dictionary look-ups for the
model, and then the upstream exchange whose bytes are handled natively.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from typing import Any
from urllib.parse import parse_qs

import orjson
from granian.rsgi import ProtocolClosed

from . import _native, allocator, health, log
from .admission import admit_request, attribute
from .chat import chat_completions
from .context import RequestContext
from .errors import JSON_HEADERS, GatewayError, anthropic_error, openai_error
from .providers.mock import MockReply
from .relay import count_streams_on, forward, forward_with_failover
from .request_end import new_sink, usage_row
from .services import Services
from .snapshot import KeyInfo, Snapshot, Target
from .state import GatewayState
from .translation import openai_body_to_anthropic
from .usage.estimate import estimate_unreported_input

_TEXT = [("content-type", "text/plain; charset=utf-8")]
_SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


_GC_SWEEP_S = 1.0
_GC_SWEEP_MAX_S = 10.0
_GC_SWEEP_RATIO = 500
# The access line of a request finished before the worker's services exist.
_LINE_ONLY = new_sink()


def _settle_gc(loop: asyncio.AbstractEventLoop) -> None:
    """Move everything alive after start-up out of the collector's sight, and collect the
    young generations less often, but at least once a second.

    Per request the gateway makes short-lived containers (headers, contexts) that refcounting
    frees; with the default threshold of 700 they still trigger a young collection every few
    requests, and a full one walks the whole start-up heap (modules, snapshot, pydantic
    models). Frozen objects are never walked again; cycles are collected in batches of 50,000
    allocations. A cycle can hold a response open (an exception's traceback referencing the
    frame that holds the client's transport), so on a quiet gateway, where 50,000 allocations
    take long, a timer sweeps the young generations when no collection has run for a second.
    A busy gateway collects by the threshold anyway and skips the sweep, so it adds no pause
    (a young collection walks every live young object: 2.6 ms for 50,000). Under steady load
    the young count stays low (objects allocated earlier are freed, which counts down), so the
    sweep runs there too, and walks every open stream's objects: the interval then grows with
    the pause, up to 10 s.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(50_000, gen1, gen2)
    last = [time.monotonic()]

    def collected(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            last[0] = time.monotonic()

    gc.callbacks.append(collected)

    def sweep() -> None:
        wait = _GC_SWEEP_S
        if time.monotonic() - last[0] >= _GC_SWEEP_S:
            t0 = time.perf_counter()
            gc.collect(1)
            # A busy gateway's young objects are its open streams' (an event's pause for each
            # of them): ~15 ms for 500 streams. Sweep that seldom enough to pause the loop
            # under 0.2 % of the time, and at least every 10 s.
            wait = min(_GC_SWEEP_MAX_S, max(_GC_SWEEP_S, (time.perf_counter() - t0) * _GC_SWEEP_RATIO))
        loop.call_later(wait, sweep)

    loop.call_later(_GC_SWEEP_S, sweep)


# A body read that ended before the body did: Granian's error, or the native front's.
_BODY_CUT_SHORT = (ProtocolClosed, _native.ClientClosed)


def _not_allowed(method: str, path: str) -> GatewayError:
    return GatewayError(405, f"method {method} not allowed on {path}")


async def _whole_body(proto: Any) -> bytes:
    """The body of a request that gave its length. A client that stops sending before that many
    bytes (it half-closed, or went away) fails Granian's read with ProtocolClosed: a malformed
    request, answered 400 like one, not an internal error."""
    try:
        body: bytes = await proto()
    except _BODY_CUT_SHORT:
        raise GatewayError(
            400, "request body ended before the length its Content-Length header gave"
        ) from None
    return body


class Gateway:
    def __init__(self, state: GatewayState | None = None) -> None:
        self.state = state or GatewayState()
        self.services: Services | None = None

    # -- lifecycle (Granian calls these in each worker) -------------------------------------------
    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        allocator.start_background_purge()
        snap = self.state.load()
        from .services import Services

        self.services = Services(snap)
        count_streams_on(self.services.metrics)
        # Breaker state of targets a reload removed is dropped with them.
        self.state.hooks.append(
            lambda new: health.forget({t.name for g in new.groups.values() for t in g.targets})
        )
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.state.reload)
        watch_s = float(os.environ.get("SLUICEGATE_WATCH_S") or 0)
        if watch_s > 0:
            self.state.watch(loop, watch_s)
        _settle_gc(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        from .upstream import close_all

        self.state.draining = True
        close_all()
        if self.services is not None:
            loop.run_until_complete(self.services.close())
        log.flush_access()

    def begin_drain(self, loop: asyncio.AbstractEventLoop, drain_s: float) -> None:
        """SIGTERM: not ready any more; streams still open at the deadline are ended."""
        if self.state.draining:
            return
        self.state.draining = True
        from .relay import open_streams

        log.info("draining", streams=len(open_streams), deadline_s=drain_s)

        def deadline() -> None:
            self.state.drain_expired = True
            if open_streams:
                log.warning("drain deadline reached; ending open streams", streams=len(open_streams))
            for conn in list(open_streams):
                conn.abort()

        loop.call_later(drain_s, deadline)

    # -- dispatch ----------------------------------------------------------------------------------
    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path = scope.path
        method = scope.method
        if path == "/v1/messages":
            if method == "POST":
                return await self.messages(scope, proto, "messages", "/v1/messages")
            return await self._refuse(scope, proto, "anthropic", "messages", _not_allowed(method, path))
        if path == "/v1/messages/count_tokens":
            if method == "POST":
                return await self.messages(scope, proto, "count_tokens", "/v1/messages/count_tokens")
            return await self._refuse(scope, proto, "anthropic", "count_tokens", _not_allowed(method, path))
        if path == "/v1/chat/completions":
            if method == "POST":
                return await chat_completions(self, scope, proto)
            return await self._refuse(scope, proto, "openai", "chat_completions", _not_allowed(method, path))
        if path == "/v1/models":
            return await self.models(scope, proto)
        if path == "/":
            if method == "HEAD":
                return proto.response_empty(200, _TEXT)
            return proto.response_bytes(200, JSON_HEADERS, b'{"name":"sluicegate","status":"ok"}')
        if path == "/healthz":
            return proto.response_bytes(200, _TEXT, b"ok\n")
        if path == "/readyz":
            ready = self.state.snapshot is not None and not self.state.draining
            return proto.response_bytes(200 if ready else 503, _TEXT, b"ready\n" if ready else b"not ready\n")
        services = self.services
        if services is not None:
            if path == services.metrics_section.path and services.metrics_enabled:
                return self.metrics(scope, proto, services)
            if path.startswith("/admin/") or path == "/admin":
                return await self.admin(scope, proto, services)
        api = "openai" if path.startswith("/v1/chat") or path.startswith("/v1/completions") else "anthropic"
        err = GatewayError(404, f"no route for {method} {path}", "not_found_error")
        if path.startswith("/v1/"):
            return await self._refuse(scope, proto, api, "unknown", err)
        return self._error(proto, api, err)

    # -- helpers -------------------------------------------------------------------------------------
    @staticmethod
    def _error(proto: Any, api: str, err: GatewayError) -> None:
        proto.response_bytes(err.status, JSON_HEADERS + err.headers, err.body(api))

    async def _refuse(self, scope: Any, proto: Any, api: str, endpoint: str, err: GatewayError) -> None:
        """An API request refused before routing (wrong method, unknown /v1/ path): answered,
        and still recorded, attributed to its key when it carries a valid one."""
        ctx = RequestContext(endpoint)
        snap = self.state.snapshot
        headers = scope.headers
        attribute(ctx, headers)
        if snap is not None:
            with contextlib.suppress(GatewayError):
                ctx.key = self.authenticate(snap, headers)
        ctx.status = err.status
        ctx.error_type = err.kind
        try:
            self._error(proto, api, err)
        finally:
            await self.finish(ctx, snap)

    def authenticate(self, snap: Snapshot, headers: Any) -> KeyInfo:
        tokens = []
        api_key = headers.get("x-api-key")
        if api_key:
            tokens.append(api_key.strip())
        auth = headers.get("authorization")
        if auth and auth[:7].lower() == "bearer ":
            tokens.append(auth[7:].strip())
        if not tokens:
            raise GatewayError(
                401, "missing API key: send it in the x-api-key header or as Authorization: Bearer"
            )
        for token in tokens:
            key, digest = snap.key_for_token(token)
            if key is not None:
                return key
            if self.services is not None and (key := self.services.lookup_key(token, digest)) is not None:
                return key
        raise GatewayError(401, "invalid API key")

    async def read_body(self, scope: Any, proto: Any, snap: Snapshot) -> bytes:
        limit = snap.max_body_bytes
        declared = scope.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise GatewayError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
        if declared is not None:
            body = await _whole_body(proto)
            if len(body) > limit:
                raise GatewayError(
                    413, f"request body of {len(body)} bytes is over the limit of {limit} bytes"
                )
            return body
        # No length given (chunked upload): read piece by piece and stop at the limit, so an
        # endless body never has to fit in memory first.
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in proto:
                size += len(chunk)
                if size > limit:
                    raise GatewayError(413, f"request body is over the limit of {limit} bytes")
                parts.append(chunk)
        except _BODY_CUT_SHORT:
            raise GatewayError(400, "request body ended before its last chunk") from None
        return b"".join(parts)

    # -- /v1/messages and /v1/messages/count_tokens ----------------------------------------------
    async def messages(self, scope: Any, proto: Any, endpoint: str, upstream_path: str) -> None:
        ctx = RequestContext(endpoint)
        snap = self.state.snapshot
        try:
            a = await admit_request(self, ctx, scope, proto, snap)
            body, info, model = a.body, a.info, a.model
            targets, deadline_s = a.targets, a.deadline_s
            del a  # it holds the body too; `release_body` must leave none behind
            qs = scope.query_string
            path = upstream_path + "?" + qs if qs else upstream_path
            client_headers = scope.headers.items()

            def release_body() -> None:
                nonlocal body, client_headers
                body = b""
                client_headers = []

            ctx.release_body = release_body

            async def send(target: Target, may_retry: bool) -> None:
                if target.kind == "mock":
                    return await self.mock_answer(ctx, proto, target, model, body, endpoint, info.stream)
                if target.kind == "anthropic":
                    # No local name for the rewritten body: forward() is then its only holder,
                    # and drops it once the stream has begun.
                    return await forward(
                        ctx,
                        proto,
                        target,
                        path,
                        client_headers,
                        _native.replace_model(body, info.model_span, target.upstream_model)
                        if target.upstream_model is not None and info.model_span is not None
                        else body,
                        mode=_native.RELAY_ANTHROPIC,
                        api="anthropic",
                        may_retry=may_retry,
                    )
                # An OpenAI-compatible upstream: translate both ways.
                if endpoint == "count_tokens":
                    ctx.status = 200
                    try:
                        n = _native.count_tokens_estimate(body)
                    except ValueError as exc:
                        raise GatewayError(400, f"invalid request body: {exc}") from None
                    proto.response_bytes(200, JSON_HEADERS, b'{"input_tokens":%d}' % n)
                    return None
                try:
                    out = _native.anthropic_request_to_openai(
                        body,
                        target.upstream_model or model,
                        target.flavor or "generic",
                        target.include_usage,
                        target.max_output_tokens,
                    )
                except ValueError as exc:
                    raise GatewayError(
                        400, f"request cannot be translated for {target.name}: {exc}"
                    ) from None
                try:
                    return await forward(
                        ctx,
                        proto,
                        target,
                        "/chat/completions",
                        client_headers,
                        out,
                        mode=_native.OPENAI_TO_ANTHROPIC,
                        api="anthropic",
                        may_retry=may_retry,
                        forward_client_headers=False,
                        options={
                            "model": model,
                            "flavor": target.flavor or "generic",
                            "include_usage": target.include_usage,
                        },
                        transform_body=openai_body_to_anthropic(model),
                    )
                finally:
                    if info.stream:
                        estimate_unreported_input(ctx, body)

            await forward_with_failover(ctx, proto, targets, deadline_s, send)
        except GatewayError as exc:
            ctx.status = exc.status
            ctx.error_type = exc.kind
            self._error(proto, "anthropic", exc)
        except Exception as exc:  # never a traceback to the client
            log.error(
                "internal error", request_id=ctx.request_id, error=type(exc).__name__, detail=str(exc)[:300]
            )
            if ctx.status == 0:
                ctx.status = 500
                ctx.error_type = "internal_error"
                proto.response_bytes(
                    500, JSON_HEADERS, anthropic_error(500, "internal gateway error", "api_error")
                )
        finally:
            await self.finish(ctx, snap)

    async def mock_answer(
        self,
        ctx: RequestContext,
        proto: Any,
        target: Target,
        model: str,
        body: bytes,
        endpoint: str,
        stream: bool,
    ) -> None:
        ctx.mark_first_byte()
        if endpoint == "count_tokens":
            ctx.status = 200
            proto.response_bytes(200, JSON_HEADERS, orjson.dumps({"input_tokens": max(1, len(body) // 4)}))
            return
        reply = MockReply(target.mock or {}, target.upstream_model or model)
        ctx.usage = (reply.input_tokens, reply.output_tokens, 0, 0)
        ctx.stop_reason = "end_turn"
        ctx.status = 200
        rid = [("x-sluicegate-request-id", ctx.request_id)]
        if not stream:
            proto.response_bytes(200, JSON_HEADERS + rid, reply.message())
            return
        ctx.stream = True
        transport = proto.response_stream(200, _SSE_HEADERS + rid)
        try:
            async for chunk in reply.stream():
                if self.state.drain_expired:
                    ctx.error_type = "drain_deadline"
                    break
                await transport.send_bytes(chunk)
        except Exception:
            ctx.client_disconnected = True
            ctx.error_type = "client_disconnected"

    # -- /v1/models --------------------------------------------------------------------------------
    async def models(self, scope: Any, proto: Any) -> None:
        ctx = RequestContext("models")
        snap = self.state.snapshot
        try:
            if scope.method not in ("GET", "HEAD"):
                raise GatewayError(405, f"method {scope.method} not allowed on /v1/models")
            if snap is None:
                raise GatewayError(503, "gateway is starting: no config loaded yet")
            key = ctx.key = self.authenticate(snap, scope.headers)
            q = parse_qs(scope.query_string) if scope.query_string else {}
            try:
                limit = int(q.get("limit", ["1000"])[0])
            except ValueError:
                raise GatewayError(400, "limit: must be an integer between 1 and 1000") from None
            if not 1 <= limit <= 1000:
                raise GatewayError(400, "limit: must be an integer between 1 and 1000")
            page = snap.models_page(key, limit, q.get("after_id", [None])[0], q.get("before_id", [None])[0])
            ctx.status = 200
            proto.response_bytes(200, JSON_HEADERS, page)
        except GatewayError as exc:
            ctx.status = exc.status
            ctx.error_type = exc.kind
            self._error(proto, "anthropic", exc)
        finally:
            await self.finish(ctx, snap)

    # -- end of request: one log line, one usage record ----------------------------------------
    async def finish(self, ctx: RequestContext, snap: Snapshot | None) -> None:
        duration = time.perf_counter() - ctx.t0
        access_log = snap is None or bool(snap.server["access_log"])
        services = self.services
        if services is None:  # (not serving yet: no metrics or ledger to tell)
            row = usage_row(ctx, 0.0, duration)
            kept = _LINE_ONLY.done(row, ctx.ttfb, duration, ctx.attempts, None, False, access_log)
        else:
            kept = services.request_done(ctx, duration, access_log)
            if ctx.limit_admission is not None:
                await services.settle(ctx)
        if kept:
            log.access_kept(kept, snap.access_log_flush_s if snap is not None else 0.0)

    # -- /metrics and /admin/ ------------------------------------------------------------------------
    @staticmethod
    def metrics(scope: Any, proto: Any, services: Services) -> None:
        from .metrics import scrape_allowed

        if not scrape_allowed(scope.headers.get("authorization"), services.metrics_section.token):
            proto.response_bytes(401, _TEXT, b"metrics: missing or invalid token\n")
            return
        proto.response_bytes(200, [("content-type", "text/plain; version=0.0.4")], services.metrics.render())

    @staticmethod
    async def admin(scope: Any, proto: Any, services: Services) -> None:
        from .admin import AdminContext, admin_token_sha256, handle_admin

        try:
            body = await _whole_body(proto) if scope.method in ("POST", "PUT", "PATCH", "DELETE") else b""
        except GatewayError as exc:
            return Gateway._error(proto, "anthropic", exc)  # the admin API's errors have this shape
        actx = AdminContext(admin_token_sha256(services.admin_token), services.keystore, services.ledger)
        headers = {k.lower(): v for k, v in scope.headers.items()}
        status, hdrs, out = await handle_admin(
            scope.method, scope.path, scope.query_string, headers, body, actx
        )
        proto.response_bytes(status, hdrs, out)


app = Gateway()

__all__ = ["Gateway", "app", "openai_error"]
