"""Input tokens for a stream whose server reported no usage (an OpenAI-compatible server that
sent no usage chunk): the relay counted the output natively; the input is estimated from the
request as `count_tokens` would, once per request, and the record is marked as an estimate."""

from __future__ import annotations

from collections.abc import Callable

from .. import _native
from ..context import RequestContext


def estimate_unreported_input(
    ctx: RequestContext, body: bytes, to_anthropic: Callable[[bytes], bytes] | None = None
) -> None:
    """`body` as the client sent it; `to_anthropic` turns it into Anthropic's format first when
    it is in OpenAI's."""
    u = ctx.usage
    if not (ctx.stream and 200 <= ctx.status < 300 and u[0] == u[2] == u[3] == 0):
        return
    try:
        n = _native.count_tokens_estimate(to_anthropic(body) if to_anthropic else body)
    except ValueError:  # a request the translator does not take: bytes of JSON, 3.5 a token
        n = len(body) * 2 // 7
    ctx.usage = (n, u[1], 0, 0)
    ctx.usage_estimated = True
