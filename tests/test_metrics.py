"""Prometheus exposition: counters, histograms, gauges read at render, several workers summed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import orjson
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
    # Another live worker's file (any running process will do: the parent of this one).
    (shared / f"{os.getppid()}.json").write_bytes(orjson.dumps(other.dump()))
    mine = Metrics(shared_dir=shared)
    mine.request_done("g", "t", 200, 0.1, 0.2, (1, 1, 0, 0), 0.5)
    mine.watch(ledger=SimpleNamespace(queue_depth=3, dropped=0, written=5, write_errors=0, store_up=False))
    s = _samples(mine.render().decode())
    assert s['sluicegate_requests_total{group="g",target="t",status="200"}'] == 2
    assert s['sluicegate_tokens_total{group="g",target="t",kind="input"}'] == 6
    assert s['sluicegate_cost_usd_total{group="g",target="t"}'] == 1.5
    assert s["sluicegate_ledger_queue_depth"] == 5 and s["sluicegate_ledger_store_up"] == 0
    mine.publish()
    assert (shared / f"{os.getpid()}.json").exists()


def test_scrape_token() -> None:
    assert scrape_allowed(None, None)
    assert scrape_allowed("Bearer x", None)
    assert scrape_allowed("Bearer s3cret", "s3cret")
    assert not scrape_allowed(None, "s3cret")
    assert not scrape_allowed("Bearer nope", "s3cret")
    assert not scrape_allowed("Basic s3cret", "s3cret")


def test_breaker_state_is_each_workers_current_view_and_the_worst_wins(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    states = {"t-a": "closed", "t-b": "open"}
    other = Metrics(shared_dir=shared)
    other.watch(health=lambda: dict(states))
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # Published without anyone setting it: the dump reads the live breakers.
        (shared / f"{sibling.pid}.json").write_bytes(orjson.dumps(other.dump()))
        mine = Metrics(shared_dir=shared)
        mine_states = {"t-a": "open", "t-b": "half_open", "t-c": "closed"}
        mine.watch(health=lambda: mine_states)
        s = _samples(mine.render().decode())

        def state(target: str) -> str:
            (on,) = [st for st in ("closed", "open", "half_open") if s[_health(target, st)] == 1]
            return on

        assert (state("t-a"), state("t-b"), state("t-c")) == ("open", "open", "closed")
        # This worker's breaker closes: the next scrape says so at once, with no stale copy winning.
        mine_states["t-a"] = "closed"
        s = _samples(mine.render().decode())
        assert state("t-a") == "closed" and state("t-b") == "open"
        # A file not refreshed for a while (a hung worker) no longer speaks for breakers...
        dump = other.dump()
        dump["ts"] -= 60
        (shared / f"{sibling.pid}.json").write_bytes(orjson.dumps(dump))
        s = _samples(mine.render().decode())
        assert state("t-b") == "half_open"
    finally:
        sibling.kill()
        sibling.wait()
    # ...and a file whose worker is gone (or from a previous run) counts for nothing at all.
    other.request_done("g", "t", 200, 0.1, 0.2)
    (shared / f"{sibling.pid}.json").write_bytes(orjson.dumps(other.dump()))
    s = _samples(mine.render().decode())
    assert 'sluicegate_requests_total{group="g",target="t",status="200"}' not in s
    assert state("t-b") == "half_open"


def _health(target: str, state: str) -> str:
    return f'sluicegate_target_health{{target="{target}",state="{state}"}}'


def test_stale_and_live_gauges_over_workers(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    other = Metrics(shared_dir=shared)
    other.stream_open()
    other.watch(
        ledger=SimpleNamespace(queue_depth=4, dropped=2, written=9, write_errors=1, store_up=False),
        keystore=_Keys(3),
    )
    mine = Metrics(shared_dir=shared)
    mine.watch(
        ledger=SimpleNamespace(queue_depth=1, dropped=1, written=1, write_errors=0, store_up=True),
        keystore=_Keys(3),
    )
    path = shared / f"{os.getppid()}.json"
    path.write_bytes(orjson.dumps(other.dump()))
    s = _samples(mine.render().decode())
    assert s["sluicegate_streams_in_flight"] == 1 and s["sluicegate_ledger_queue_depth"] == 5
    assert s["sluicegate_ledger_store_up"] == 0 and s["sluicegate_ledger_dropped_total"] == 3
    assert s["sluicegate_keystore_keys"] == 3  # the same keys in every worker, not 6
    dump = other.dump()
    dump["ts"] = time.time() - 60
    path.write_bytes(orjson.dumps(dump))
    s = _samples(mine.render().decode())
    # Counters still add up; what the hung worker said about now does not.
    assert s["sluicegate_ledger_dropped_total"] == 3 and s["sluicegate_ledger_written_total"] == 10
    assert s["sluicegate_streams_in_flight"] == 0 and s["sluicegate_ledger_queue_depth"] == 1
    assert s["sluicegate_ledger_store_up"] == 1


class _Keys:
    def __init__(self, n: int) -> None:
        self.n = n
        self.refresh_errors = 0

    def __len__(self) -> int:
        return self.n
