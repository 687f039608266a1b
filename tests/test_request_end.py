"""The end of a request: its ledger row is built positionally and still says exactly what it
should; the extension's RequestSink writes the access line byte for byte as the dict through
orjson did, and counts exactly what Metrics.request_done counts."""

from __future__ import annotations

import dataclasses
import random
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from sluicegate import _native, log
from sluicegate.context import RequestContext
from sluicegate.metrics import Metrics
from sluicegate.request_end import ACCESS_LINE, new_sink, usage_row
from sluicegate.usage import batches
from sluicegate.usage.record import FIELDS, UsageRecord


def test_the_rows_fields_are_the_records_in_order() -> None:
    assert list(FIELDS) == [f.name for f in dataclasses.fields(UsageRecord)]


def test_every_field_of_the_row_comes_from_its_own_source() -> None:
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
    rec = UsageRecord(*usage_row(ctx, 1.5, 2.0))
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
    rec = UsageRecord(*usage_row(RequestContext("models"), 0.0, 0.001))
    assert (rec.key_id, rec.key_name, rec.user, rec.project, rec.env, rec.ttfb_ms) == (None,) * 6
    assert rec.duration_ms == 1.0 and rec.endpoint == "models"


# -- the access line -------------------------------------------------------------------------------
def _decimals(x: float, scale: float) -> float:
    return int(x * scale + 0.5) / scale


def _oracle_line(row: tuple[Any, ...], attempts: int, prompt: Any = None) -> bytes:
    """The access line as app.py built it before the sink: a dict through orjson."""
    r = dict(zip(FIELDS, row, strict=True))
    line: dict[str, Any] = {
        "ts": _decimals(r["ts"], 1000.0),
        "event": "request",
        "request_id": r["request_id"],
        "endpoint": r["endpoint"],
        "key": r["key_name"],
        "key_id": r["key_id"],
        "user": r["user"],
        "group": r["group"],
        "target": r["target"],
        "model": r["requested_model"],
        "upstream_model": r["upstream_model"],
        "status": r["status"],
        "stream": r["stream"],
        "ttfb_ms": _decimals(r["ttfb_ms"], 100.0) if r["ttfb_ms"] is not None else None,
        "duration_ms": _decimals(r["duration_ms"], 100.0),
        "input_tokens": r["input_tokens"],
        "output_tokens": r["output_tokens"],
        "cache_creation_tokens": r["cache_creation_tokens"],
        "cache_read_tokens": r["cache_read_tokens"],
        "usage_estimated": r["usage_estimated"],
        "session_id": r["session_id"],
        "agent_id": r["agent_id"],
        "parent_agent_id": r["parent_agent_id"],
        "error": r["error_type"],
        "client_disconnected": r["client_disconnected"],
        "attempts": attempts,
    }
    if prompt is not None:
        line["request_body"] = prompt
    return orjson.dumps(line) + b"\n"


_TEXTS = ["", "sonnet", 'q"uote', "back\\slash", "new\nline\ttab\r", "\x00\x01\x1f\x7f", "équipe-β ✓ 日本 😀"]


def _random_row(rng: random.Random) -> tuple[Any, ...]:
    def text() -> str | None:
        return rng.choice([None, *_TEXTS, f"req_{rng.getrandbits(64):016x}"])

    def number() -> float:
        return rng.choice(
            [rng.uniform(0, 5000), rng.expovariate(3), rng.uniform(0, 1e-6), rng.uniform(1e13, 1e18), 0.0]
        )

    values: dict[str, Any] = {f: text() for f in FIELDS}
    values.update(
        ts=rng.choice([rng.uniform(1.7e9, 1.9e9), float(rng.randint(0, 2**31)), 1e-7]),
        status=rng.choice([200, 400, 429, 529, 0]),
        stream=rng.random() < 0.5,
        input_tokens=rng.randint(0, 2**40),
        output_tokens=rng.randint(0, 5000),
        cache_creation_tokens=rng.choice([0, rng.randint(0, 10**6)]),
        cache_read_tokens=rng.choice([0, rng.randint(0, 10**6)]),
        image_count=rng.randint(0, 3),
        cost_usd=rng.choice([0.0, number()]),
        upstream_cost_usd=rng.choice([None, number()]),
        ttfb_ms=rng.choice([None, number()]),
        duration_ms=number(),
        client_disconnected=rng.random() < 0.1,
        usage_estimated=rng.random() < 0.1,
    )
    return tuple(values[f] for f in FIELDS)


def _line(sink: Any, row: tuple[Any, ...], attempts: int, tail: bytes | None = None) -> bytes:
    assert sink.done(row, None, 0.0, attempts, tail, False, True) == 1  # the first line kept
    line: bytes = sink.take_access()
    return line


def test_the_line_is_byte_for_byte_the_dicts_through_orjson() -> None:
    rng = random.Random(11)
    sink = new_sink()
    for i in range(5000):
        row = _random_row(rng)
        attempts = rng.randint(0, 3)
        prompt = {"messages": [{"role": "user", "content": rng.choice(_TEXTS)}]} if i % 7 == 0 else None
        tail = None if prompt is None else b',"request_body":' + orjson.dumps(prompt)
        assert _line(sink, row, attempts, tail) == _oracle_line(row, attempts, prompt), row


def test_the_line_is_the_same_when_the_ledger_takes_the_record_too() -> None:
    # With the ledger's queue the sink writes every value once for the record, and the line
    # copies its values from that; without it, only the line's. Both lines are the oracle's.
    rng = random.Random(12)
    sink = new_sink()
    queue = _native.RowQueue(1 << 20, 500, lambda: None, batches.SHAPE)
    for _ in range(2000):
        row = _random_row(rng)
        assert sink.done(row, None, 0.0, 1, None, False, True, queue) == 1
        assert sink.take_access() == _oracle_line(row, 1, None), row
    assert queue.waiting + queue.refused[0] == 2000  # (rows missing a required field: refused)


def test_a_text_with_a_lone_surrogate_is_written_with_a_replacement() -> None:
    r = dict(zip(FIELDS, _random_row(random.Random(4)), strict=True))
    r["user"], r["session_id"] = "al\ud800ice", "s-1"
    row = tuple(r[f] for f in FIELDS)
    sink = new_sink()
    assert sink.done(row, None, 0.0, 1, None, False, True, None) == 1
    line = orjson.loads(sink.take_access())
    assert line["user"].startswith("al") and line["user"].endswith("ice") and "\ufffd" in line["user"]
    assert line["session_id"] == "s-1"


def test_no_line_when_the_access_log_is_off() -> None:
    row = _random_row(random.Random(1))
    sink = new_sink()
    assert sink.done(row, None, 0.0, 1, None, True, False) == 0
    assert sink.take_access() is None


def test_lines_are_kept_until_taken_and_the_bound_is_told() -> None:
    sink = new_sink()
    row = _random_row(random.Random(2))
    states = [sink.done(row, None, 0.0, 1, None, False, True) for _ in range(3)]
    assert states == [1, 0, 0]  # the first since the last take, then nothing to do
    taken = sink.take_access()
    assert taken is not None and taken.count(b"\n") == 3 and sink.take_access() is None
    n, state = 0, 0
    while state != 2:  # past log.BUFFER_MAX: "write them now"
        state = sink.done(row, None, 0.0, 1, None, False, True)
        n += 1
    assert n * len(taken) // 3 >= log.BUFFER_MAX
    assert (sink.take_access() or b"").count(b"\n") == n


def test_the_line_numbers_round_as_round_does() -> None:
    rng = random.Random(7)
    sink = new_sink()
    base = dict(zip(FIELDS, _random_row(rng), strict=True))
    for _ in range(5000):
        x = rng.choice([rng.uniform(0, 5000), rng.uniform(1.7e9, 1.9e9), rng.expovariate(3)])
        row = tuple({**base, "ts": x, "duration_ms": x, "ttfb_ms": x}[f] for f in FIELDS)
        line = orjson.loads(_line(sink, row, 1))
        for key, digits in (("ts", 3), ("duration_ms", 2), ("ttfb_ms", 2)):
            # Equal but at an exact tie, where round() goes to even and this goes up.
            assert abs(line[key] - round(x, digits)) <= 1.0001 / 10**digits
    row = tuple({**base, "ts": 1764590400.1234, "duration_ms": 12.345678}[f] for f in FIELDS)
    line = orjson.loads(_line(sink, row, 1))
    assert (line["ts"], line["duration_ms"]) == (1764590400.123, 12.35)


def test_the_lines_keys_are_the_access_logs() -> None:
    row = _random_row(random.Random(3))
    line = orjson.loads(_line(new_sink(), row, 2))
    assert list(line) == [key for key, _, _ in ACCESS_LINE]


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="values, not"):
        new_sink().done((1.0, "x"), None, 0.0, 1, None, True, True)


# -- the metrics -----------------------------------------------------------------------------------
def test_the_sink_counts_what_request_done_counts() -> None:
    rng = random.Random(5)
    by_hand = Metrics()
    by_sink = Metrics()
    sink = new_sink()
    by_sink.drain_from(sink)
    for i in range(3000):
        row = list(_random_row(rng))
        r = dict(zip(FIELDS, row, strict=True))
        r["group"] = rng.choice(["sonnet", "haiku", None, ""])
        r["target"] = rng.choice(["anthropic", "vllm", None])
        r["error_type"] = rng.choice([None, None, "", "overloaded_error", "rate_limit_error"])
        r["input_tokens"] = rng.choice([0, 10])
        row = [r[f] for f in FIELDS]
        ttfb = rng.choice([None, rng.choice([0.005, 0.01, 60.0]), rng.expovariate(10)])
        duration = rng.choice([rng.expovariate(1), 600.0, 1e4])
        tokens = (r["input_tokens"], r["output_tokens"], r["cache_creation_tokens"], r["cache_read_tokens"])
        by_hand.request_done(
            r["group"], r["target"], r["status"], ttfb, duration, tokens, r["cost_usd"], r["error_type"]
        )
        sink.done(tuple(row), ttfb, duration, 1, None, True, False)
        if i % 1000 == 999:
            by_sink.dump()  # drained in parts, as scrapes and publishes do
    want, got = by_hand.dump(), by_sink.dump()
    for name in ("requests", "errors"):
        assert sorted(map(tuple, got[name])) == sorted(map(tuple, want[name])), name
    for name in ("ttfb", "duration", "tokens", "cost"):
        w = {(k[0], k[1]): k[2] for k in want[name]}
        g = {(k[0], k[1]): k[2] for k in got[name]}
        assert g.keys() == w.keys(), name
        for pair, value in w.items():
            assert g[pair] == pytest.approx(value, rel=1e-12), (name, pair)
    assert sink.drain() == []  # the dump took everything


def test_with_every_switch_off_a_finished_request_builds_nothing() -> None:
    from sluicegate.services import Services

    calls: list[str] = []

    class Spy:
        def done(self, *args: Any) -> int:
            calls.append("line/metrics")
            return 1

        def submit_row(self, row: tuple[Any, ...]) -> None:
            calls.append("ledger")

    services = Services.__new__(Services)  # the decision alone, without stores or threads
    services.sink = services.ledger = Spy()
    services.metrics_enabled, services.recording = False, False
    services._batch_queue = None  # a ledger that queues rows itself
    ctx = RequestContext("messages")
    assert services.request_done(ctx, 0.01, access_log=False) == 0 and calls == []
    assert services.request_done(ctx, 0.01, access_log=True) == 1
    assert calls == ["line/metrics", "ledger"]
    services.recording, calls[:] = True, []  # metrics or the ledger on: the row is built
    services.request_done(ctx, 0.01, access_log=False)
    assert calls == ["line/metrics", "ledger"]
