"""Prometheus exposition: counters, histograms, gauges read at render, several workers summed."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from sluicegate.metrics import Metrics, scrape_allowed


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_render_text_format() -> None:
    m = Metrics()
    m.request_done("sonnet", "anthropic", 200, 0.2, 1.5, (100, 20, 1000, 5000), 0.01)
    m.request_done("sonnet", "anthropic", 200, 0.03, 0.4, (1, 2, 0, 0), 0.005)
    m.request_done("sonnet", "anthropic", 429, None, 0.001, error_type="rate_limit_error")
    m.stream_open()
    m.stream_open()
    m.stream_close()
    m.limiter_decision(None)
    m.limiter_decision("rpm")
    m.target_health("anthropic", "open")
    m.watch(
        ledger=SimpleNamespace(queue_depth=7, dropped=3, written=100, write_errors=1, store_up=False),
        limiter=SimpleNamespace(backend_errors=2, degraded_decisions=5, available=True),
    )
    text = m.render().decode()
    for line in text.splitlines():
        assert line.startswith("#") or re.fullmatch(
            r'[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? \S+', line
        ), line
    s = _samples(text)
    g = 'group="sonnet",target="anthropic"'
    assert s[f'sluicegate_requests_total{{{g},status="200"}}'] == 2
    assert s[f'sluicegate_errors_total{{{g},error_type="rate_limit_error"}}'] == 1
    assert s[f'sluicegate_ttfb_seconds_bucket{{{g},le="0.05"}}'] == 1
    assert s[f'sluicegate_ttfb_seconds_bucket{{{g},le="0.25"}}'] == 2
    assert s[f"sluicegate_ttfb_seconds_count{{{g}}}"] == 2  # the 429 had no first byte
    assert s[f"sluicegate_request_duration_seconds_count{{{g}}}"] == 3
    assert s[f'sluicegate_request_duration_seconds_bucket{{{g},le="+Inf"}}'] == 3
    assert abs(s[f"sluicegate_request_duration_seconds_sum{{{g}}}"] - 1.901) < 1e-9
    assert s[f'sluicegate_tokens_total{{{g},kind="cache_read"}}'] == 5000
    assert abs(s[f"sluicegate_cost_usd_total{{{g}}}"] - 0.015) < 1e-12
    assert s["sluicegate_streams_in_flight"] == 1
    assert s['sluicegate_limiter_decisions_total{decision="rpm"}'] == 1
    assert s['sluicegate_target_health{target="anthropic",state="open"}'] == 1
    assert s['sluicegate_target_health{target="anthropic",state="closed"}'] == 0
    assert s["sluicegate_ledger_queue_depth"] == 7 and s["sluicegate_ledger_dropped_total"] == 3
    assert s["sluicegate_ledger_store_up"] == 0 and s["sluicegate_limiter_backend_errors_total"] == 2
    assert "# TYPE sluicegate_ttfb_seconds histogram" in text


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.request_done('we"ird\\grp', "t\nx", 200, 0.1, 0.1)
    assert 'group="we\\"ird\\\\grp",target="t\\nx"' in m.render().decode()


def test_workers_publish_and_any_scrape_sums_them(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    other = Metrics(shared_dir=shared)
    other.request_done("g", "t", 200, 0.1, 0.2, (5, 5, 0, 0), 1.0)
    other.watch(ledger=SimpleNamespace(queue_depth=2, dropped=1, written=10, write_errors=0, store_up=True))
    shared.mkdir()
    (shared / "999999.json").write_bytes(__import__("orjson").dumps(other.dump()))  # another worker's file
    mine = Metrics(shared_dir=shared)
    mine.request_done("g", "t", 200, 0.1, 0.2, (1, 1, 0, 0), 0.5)
    mine.watch(ledger=SimpleNamespace(queue_depth=3, dropped=0, written=5, write_errors=0, store_up=False))
    s = _samples(mine.render().decode())
    assert s['sluicegate_requests_total{group="g",target="t",status="200"}'] == 2
    assert s['sluicegate_tokens_total{group="g",target="t",kind="input"}'] == 6
    assert s['sluicegate_cost_usd_total{group="g",target="t"}'] == 1.5
    assert s["sluicegate_ledger_queue_depth"] == 5 and s["sluicegate_ledger_store_up"] == 0
    mine.publish()
    assert any(p.name.endswith(".json") and p.name != "999999.json" for p in shared.iterdir())


def test_scrape_token() -> None:
    assert scrape_allowed(None, None)
    assert scrape_allowed("Bearer x", None)
    assert scrape_allowed("Bearer s3cret", "s3cret")
    assert not scrape_allowed(None, "s3cret")
    assert not scrape_allowed("Bearer nope", "s3cret")
    assert not scrape_allowed("Basic s3cret", "s3cret")
