"""`POST /v1/chat/completions`: the OpenAI-format entry, for opencode, aider and IDE agents.

To an OpenAI-compatible target the body passes through with only `model` rewritten, and, for
a stream whose client did not ask for the usage chunk, `stream_options.include_usage` added:
the ledger, TPM and budgets need real tokens, and the native relay keeps that chunk from the
client. To an Anthropic-format target (or the mock) it is translated both ways. The gateway's
own errors here use OpenAI's error shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _native, log
from .admission import admit_request
from .context import RequestContext
from .errors import JSON_HEADERS, GatewayError, openai_error
from .providers.mock import MockReply
from .relay import forward, forward_with_failover
from .snapshot import Target
from .translation import anthropic_body_to_openai
from .usage.estimate import estimate_unreported_input

if TYPE_CHECKING:
    from .app import Gateway

_SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


async def chat_completions(gw: Gateway, scope: Any, proto: Any) -> None:
    ctx = RequestContext("chat_completions")
    snap = gw.state.snapshot
    try:
        a = await admit_request(gw, ctx, scope, proto, snap)
        body, info, model = a.body, a.info, a.model
        client_headers = scope.headers.items()
        include_usage = info.stream and info.include_usage

        async def send(target: Target, may_retry: bool) -> None:
            if target.kind == "openai":
                out = body
                options = None
                if info.stream and not include_usage and target.include_usage:
                    # Ask for the usage chunk the client did not; the relay drops it again.
                    out = _native.ask_for_usage(body, info, target.upstream_model)
                    options = {"drop_usage_chunk": True}
                elif target.upstream_model is not None and info.model_span is not None:
                    out = _native.replace_model(body, info.model_span, target.upstream_model)
                try:
                    return await forward(
                        ctx,
                        proto,
                        target,
                        "/chat/completions",
                        client_headers,
                        out,
                        mode=_native.RELAY_OPENAI,
                        api="openai",
                        may_retry=may_retry,
                        options=options,
                    )
                finally:
                    if info.stream:
                        estimate_unreported_input(
                            ctx, body, lambda b: _native.openai_request_to_anthropic(b, model)
                        )
            try:
                out = _native.openai_request_to_anthropic(body, target.upstream_model or model)
            except ValueError as exc:
                raise GatewayError(400, f"request cannot be translated for {target.name}: {exc}") from None
            if target.kind == "mock":
                return await _mock(ctx, proto, target, model, info.stream, include_usage)
            return await forward(
                ctx,
                proto,
                target,
                "/v1/messages",
                client_headers,
                out,
                mode=_native.ANTHROPIC_TO_OPENAI,
                api="openai",
                may_retry=may_retry,
                forward_client_headers=False,
                options={"model": model, "flavor": "generic", "include_usage": include_usage},
                transform_body=anthropic_body_to_openai(model),
            )

        await forward_with_failover(ctx, proto, a.targets, a.deadline_s, send)
    except GatewayError as exc:
        ctx.status = exc.status
        ctx.error_type = exc.kind
        proto.response_bytes(exc.status, JSON_HEADERS + exc.headers, exc.body("openai"))
    except Exception as exc:  # never a traceback to the client
        log.error(
            "internal error", request_id=ctx.request_id, error=type(exc).__name__, detail=str(exc)[:300]
        )
        if ctx.status == 0:
            ctx.status = 500
            ctx.error_type = "internal_error"
            proto.response_bytes(500, JSON_HEADERS, openai_error(500, "internal gateway error", "api_error"))
    finally:
        await gw.finish(ctx, snap)


async def _mock(
    ctx: RequestContext, proto: Any, target: Target, model: str, stream: bool, include_usage: bool
) -> None:
    ctx.mark_first_byte()
    reply = MockReply(target.mock or {}, target.upstream_model or model)
    ctx.usage = (reply.input_tokens, reply.output_tokens, 0, 0)
    ctx.stop_reason = "stop"
    ctx.status = 200
    rid = [("x-sluicegate-request-id", ctx.request_id)]
    if not stream:
        out, _, _ = _native.anthropic_response_to_openai(reply.message(), model)
        proto.response_bytes(200, JSON_HEADERS + rid, out)
        return
    translator = _native.StreamTranslator(_native.ANTHROPIC_TO_OPENAI, model, "generic", include_usage)
    transport = proto.response_stream(200, _SSE_HEADERS + rid)
    try:
        async for chunk in reply.stream():
            out = b"".join(translator.feed_event(name, data) for name, data in MockReply.parse(chunk))
            if out:
                await transport.send_bytes(out)
        tail = translator.finish(True)
        if tail:
            await transport.send_bytes(tail)
    except Exception:
        ctx.client_disconnected = True
        ctx.error_type = "client_disconnected"
