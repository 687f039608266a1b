"""The ledger record and the access line of a finished request, built for speed (positional
fields, no round()), still say exactly what they should."""

from __future__ import annotations

import dataclasses
import random
from types import SimpleNamespace

import orjson
from sluicegate.app import _decimals
from sluicegate.context import RequestContext
from sluicegate.services import usage_record
from sluicegate.usage.record import UsageRecord


def test_every_field_of_the_record_comes_from_its_own_source() -> None:
    ctx = RequestContext("messages")
    ctx.key = SimpleNamespace(key_id="k-id", name="k-name", user="k-user", project="k-project", env="k-env")
    for i, name in enumerate(
        ["group", "target", "upstream_model", "requested_model", "session_id", "agent_id", "parent_agent_id"]
    ):
        setattr(ctx, name, f"{name}-{i}")
    ctx.error_type = "error-type"
    ctx.status, ctx.stream, ctx.image_count = 529, True, 7
    ctx.usage = (11, 22, 33, 44)
    ctx.upstream_cost, ctx.ttfb = 0.25, 0.5
    ctx.client_disconnected, ctx.usage_estimated = True, False
    rec = usage_record(ctx, 1.5, 2.0)
    want = UsageRecord(
        ts=ctx.ts,
        request_id=ctx.request_id,
        endpoint="messages",
        key_id="k-id",
        key_name="k-name",
        user="k-user",
        project="k-project",
        env="k-env",
        group="group-0",
        target="target-1",
        upstream_model="upstream_model-2",
        requested_model="requested_model-3",
        session_id="session_id-4",
        agent_id="agent_id-5",
        parent_agent_id="parent_agent_id-6",
        status=529,
        stream=True,
        input_tokens=11,
        output_tokens=22,
        cache_creation_tokens=33,
        cache_read_tokens=44,
        image_count=7,
        cost_usd=1.5,
        upstream_cost_usd=0.25,
        ttfb_ms=500.0,
        duration_ms=2000.0,
        error_type="error-type",
        client_disconnected=True,
        usage_estimated=False,
    )
    assert dataclasses.asdict(rec) == dataclasses.asdict(want)


def test_a_request_without_a_key_or_a_first_byte() -> None:
    ctx = RequestContext("models")
    rec = usage_record(ctx, 0.0, 0.001)
    assert (rec.key_id, rec.key_name, rec.user, rec.project, rec.env, rec.ttfb_ms) == (None,) * 6
    assert rec.duration_ms == 1.0 and rec.endpoint == "models"


def test_access_line_numbers_round_as_round_does() -> None:
    rng = random.Random(7)
    for _ in range(20000):
        x = rng.choice([rng.uniform(0, 5000), rng.uniform(1.7e9, 1.9e9), rng.expovariate(3)])
        for scale, digits in ((1000.0, 3), (100.0, 2)):
            got = _decimals(x, scale)
            # Equal but at an exact tie, where round() goes to even and this goes up.
            assert abs(got - round(x, digits)) <= 1.0001 / scale
            text = orjson.dumps(got).decode()
            assert "e" in text or len(text.partition(".")[2]) <= digits, text
    assert _decimals(1764590400.1234, 1000.0) == 1764590400.123
    assert _decimals(12.345678, 100.0) == 12.35
