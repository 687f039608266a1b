"""Routing and the circuit breaker in-process: strategies, capability filters, breaker states.

The end-to-end behaviour (real gateway, fake upstreams) is in the other test_routing_* files;
these pin down the rules with a controlled clock and thousands of draws.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sluicegate import health, routing
from sluicegate.errors import GatewayError
from sluicegate.health import (
    BASE_COOLDOWN_S,
    FAILURES_TO_OPEN,
    PROBE_TIMEOUT_S,
    TargetHealth,
    parse_retry_after,
)
from sluicegate.routing import attempt_order, eligible_targets, strategy_order
from sluicegate.snapshot import Group, Target


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    health.all_health().clear()
    routing._pinned.clear()
    yield
    health.all_health().clear()
    routing._pinned.clear()


def target(name: str, weight: float = 1.0, image: bool = True, tools: bool = True) -> Target:
    return Target(
        name=name,
        provider=name.split("/")[0],
        kind="anthropic",
        upstream_model=None,
        modalities=frozenset({"text", "image"} if image else {"text"}),
        supports_tools=tools,
        weight=weight,
        price=None,
        connect_s=1.0,
        first_byte_s=1.0,
        idle_s=1.0,
        total_s=None,
    )


def group(targets: list[Target], strategy: str = "priority", max_attempts: int = 3) -> Group:
    return Group("g", "g", strategy, max_attempts, None, targets)


# ---- the breaker ---------------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_only() -> None:
    h = TargetHealth("a")
    for _ in range(FAILURES_TO_OPEN - 1):
        h.failure("connect_error", now=100.0)
    assert h.state_at(100.0) == "closed" and h.claim(100.0)
    h.success(0.1)  # a success in between resets the count
    for _ in range(FAILURES_TO_OPEN - 1):
        h.failure("connect_error", now=100.0)
    assert h.state_at(100.0) == "closed"
    h.failure("connect_error", now=100.0)
    assert h.state_at(100.0) == "open" and h.opened_total == 1
    assert not h.claim(100.0) and not h.selectable(100.0 + BASE_COOLDOWN_S - 0.01)


def test_one_probe_when_half_open_then_close_or_reopen_longer() -> None:
    h = TargetHealth("a")
    for _ in range(FAILURES_TO_OPEN):
        h.failure("status 529", now=0.0)
    t = BASE_COOLDOWN_S
    assert h.state_at(t) == "half_open" and h.selectable(t)
    assert h.claim(t)  # this request is the probe
    assert not h.selectable(t) and not h.claim(t + 1)  # nobody else meanwhile
    h.failure("status 529", now=t + 1)  # the probe failed: open again, twice as long
    assert h.cooldown_s == 2 * BASE_COOLDOWN_S
    assert h.state_at(t + 1 + 2 * BASE_COOLDOWN_S - 0.01) == "open"
    t2 = t + 1 + 2 * BASE_COOLDOWN_S
    assert h.claim(t2)
    h.success(0.2)
    assert h.state_at(t2) == "closed" and h.cooldown_s == BASE_COOLDOWN_S and h.consecutive_failures == 0
    assert h.claim(t2) and h.claim(t2)  # closed: everyone


def test_abandoned_or_lost_probe_frees_the_slot() -> None:
    h = TargetHealth("a")
    for _ in range(FAILURES_TO_OPEN):
        h.failure("timeout", now=0.0)
    assert h.claim(10.0)
    h.abandon()  # e.g. the client left before the upstream answered
    assert h.claim(10.0)
    assert not h.claim(10.0 + PROBE_TIMEOUT_S - 1)
    assert h.claim(10.0 + PROBE_TIMEOUT_S + 1)  # a probe that never reported back


def test_an_attempt_that_is_not_the_probe_leaves_the_probe_slot_alone() -> None:
    h = TargetHealth("a")
    for _ in range(FAILURES_TO_OPEN):
        h.failure("timeout", now=0.0)
    assert h.claim(BASE_COOLDOWN_S)
    # A forced attempt (every target open or probed) fails meanwhile: counted, but the probe
    # keeps its slot and the cool-down is not doubled on its account.
    h.failure("timeout", now=BASE_COOLDOWN_S, probe=False)
    assert h.probing and h.cooldown_s == BASE_COOLDOWN_S
    h.failure("timeout", now=BASE_COOLDOWN_S + 1, probe=True)
    assert not h.probing and h.cooldown_s == 2 * BASE_COOLDOWN_S


def test_retry_after_alone_opens_for_exactly_that_long() -> None:
    h = TargetHealth("a")
    h.failure("status 429", retry_after_s=2.0, now=50.0)
    assert h.consecutive_failures == 1
    assert h.state_at(51.99) == "open" and h.state_at(52.0) == "half_open"
    # When the breaker trips as well, the longer of the two.
    h2 = TargetHealth("b")
    h2.failure("x", now=0.0)
    h2.failure("x", now=0.0)
    h2.failure("status 429", retry_after_s=30.0, now=0.0)
    assert h2.open_until == 30.0
    h3 = TargetHealth("c")
    h3.failure("x", now=0.0)
    h3.failure("x", now=0.0)
    h3.failure("status 429", retry_after_s=1.0, now=0.0)
    assert h3.open_until == BASE_COOLDOWN_S
    # A shorter retry-after never shortens an open circuit.
    h2.failure("status 429", retry_after_s=1.0, now=1.0)
    assert h2.open_until == 30.0


def test_ttfb_moving_average_and_gauges() -> None:
    h = TargetHealth("a")
    h.success(1.0)
    h.success(0.0)
    assert h.ttfb_ewma == pytest.approx(0.8)
    h.inflight = 2
    g = h.gauges(now=0.0)
    assert g["state"] == "closed" and g["inflight"] == 2 and g["consecutive_failures"] == 0
    assert g["ttfb_ewma_s"] == pytest.approx(0.8)
    h.failure("timeout", retry_after_s=3.0, now=0.0)
    g = h.gauges(now=1.0)
    assert g["state"] == "open" and g["open_for_s"] == pytest.approx(2.0) and g["last_failure"] == "timeout"
    assert set(g) >= {"state", "consecutive_failures", "inflight", "ttfb_ewma_s", "opened_total"}


def test_parse_retry_after() -> None:
    assert parse_retry_after("17") == 17.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("0") is None
    assert parse_retry_after("-3") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("999999") == 3600.0
    now = datetime(2030, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=40), usegmt=True)
    assert parse_retry_after(date, now=now.timestamp()) == pytest.approx(40.0)
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now.timestamp())
        is None
    )


# ---- capability filters -------------------------------------------------------------------------


def test_capability_filter_and_its_errors() -> None:
    text = target("text", image=False)
    vision = target("vision")
    notools = target("notools", tools=False)
    g = group([text, vision, notools])
    assert eligible_targets(g, 0, False) == [text, vision, notools]
    assert eligible_targets(g, 2, False) == [vision, notools]
    assert eligible_targets(g, 0, True) == [text, vision]
    assert eligible_targets(g, 1, True) == [vision]

    with pytest.raises(GatewayError) as info:
        eligible_targets(group([text]), 3, False)
    assert info.value.status == 400 and info.value.kind == "invalid_request_error"
    assert (
        "'g'" in info.value.message
        and "image input" in info.value.message
        and "3 images" in info.value.message
    )
    with pytest.raises(GatewayError) as info:
        eligible_targets(group([notools]), 0, True)
    assert "supports tools" in info.value.message
    with pytest.raises(GatewayError) as info:
        eligible_targets(group([target("t", image=False), target("v", tools=False)]), 1, True)
    assert "both accepts image input and supports tools" in info.value.message
    with pytest.raises(GatewayError) as info:
        eligible_targets(group([]), 0, False)
    assert info.value.status == 503


# ---- strategies ---------------------------------------------------------------------------------


def test_priority_skips_open_targets_and_caps_attempts() -> None:
    a, b, c, d = (target(n) for n in "abcd")
    g = group([a, b, c, d], max_attempts=3)
    assert attempt_order(g, g.targets, now=0.0) == [a, b, c]
    health.health_of("a").failure("x", retry_after_s=10.0, now=0.0)
    assert attempt_order(g, g.targets, now=1.0) == [b, c, d]
    # Half-open: back in its place, for the one request that will probe it.
    assert attempt_order(g, g.targets, now=10.0) == [a, b, c]
    health.health_of("a").claim(10.0)
    assert attempt_order(g, g.targets, now=10.5) == [b, c, d]


def test_all_open_still_tries_the_one_that_reopens_first() -> None:
    a, b = target("a"), target("b")
    health.health_of("a").failure("x", retry_after_s=20.0, now=0.0)
    health.health_of("b").failure("x", retry_after_s=5.0, now=0.0)
    assert attempt_order(group([a, b]), [a, b], now=1.0) == [b]


def test_weighted_random_split() -> None:
    a, b = target("a", weight=3), target("b", weight=1)
    g = group([a, b], "weighted")
    firsts = Counter(strategy_order(g, g.targets)[0].name for _ in range(20_000))
    assert firsts["a"] / 20_000 == pytest.approx(0.75, abs=0.015)
    # The rest of the order is the fallback: every target appears once.
    assert sorted(t.name for t in strategy_order(g, g.targets)) == ["a", "b"]


def test_weighted_session_affinity_is_stable_and_split_by_weight() -> None:
    a, b, c = target("a", weight=2), target("b", weight=1), target("c", weight=1)
    g = group([a, b, c], "weighted")
    for s in ("sess-1", "sess-2", "0c7d9f0e-1b2a-4c3d-9e8f-001122334455"):
        orders = {tuple(t.name for t in strategy_order(g, g.targets, session=s)) for _ in range(20)}
        assert len(orders) == 1
    n = 8000
    picks = {f"session-{i}": strategy_order(g, g.targets, session=f"session-{i}")[0].name for i in range(n)}
    share = Counter(picks.values())
    assert share["a"] / n == pytest.approx(0.5, abs=0.03)
    assert share["b"] / n == pytest.approx(0.25, abs=0.03)
    # Rendezvous: taking a target out moves only the sessions that were on it.
    g2 = group([a, b], "weighted")
    moved = [
        s for s, t in picks.items() if t != "c" and strategy_order(g2, g2.targets, session=s)[0].name != t
    ]
    assert moved == []


def test_least_inflight_prefers_idle_then_splits_ties() -> None:
    a, b, c = target("a"), target("b"), target("c")
    g = group([a, b, c], "least_inflight")
    health.health_of("a").inflight = 2
    health.health_of("b").inflight = 1
    assert [t.name for t in strategy_order(g, g.targets)] == ["c", "b", "a"]
    health.health_of("c").inflight = 1
    firsts = Counter(strategy_order(g, g.targets)[0].name for _ in range(2000))
    assert set(firsts) == {"b", "c"} and min(firsts.values()) > 800


def test_latency_measures_unmeasured_first_then_fastest() -> None:
    a, b, c = target("a"), target("b"), target("c")
    g = group([a, b, c], "latency")
    health.health_of("a").success(0.5)
    health.health_of("b").success(0.1)
    assert strategy_order(g, g.targets)[0].name == "c"  # never measured yet
    health.health_of("c").success(0.9)
    firsts = Counter(strategy_order(g, g.targets)[0].name for _ in range(4000))
    assert firsts["b"] / 4000 == pytest.approx(0.95, abs=0.015)
    assert set(firsts) == {"a", "b"}  # exploration goes to the runner-up


def test_least_inflight_keeps_a_session_where_it_started() -> None:
    a, b = target("a"), target("b")
    g = group([a, b], "least_inflight")
    health.health_of("a").inflight = 1
    assert attempt_order(g, g.targets, session="s1")[0].name == "b"  # placed by the strategy
    health.health_of("b").inflight = 5
    # Busier now, but the session stays; a new session and one without an id go by load.
    assert [t.name for t in attempt_order(g, g.targets, session="s1")] == ["b", "a"]
    assert attempt_order(g, g.targets, session="s2")[0].name == "a"
    assert attempt_order(g, g.targets)[0].name == "a"
    # Its target open: the session moves, and stays on the new one after recovery.
    for _ in range(FAILURES_TO_OPEN):
        health.health_of("b").failure("status 529")
    assert [t.name for t in attempt_order(g, g.targets, session="s1")] == ["a"]
    health.health_of("b").success(0.1)
    health.health_of("a").inflight = 9
    assert attempt_order(g, g.targets, session="s1")[0].name == "a"


def test_latency_keeps_a_session_and_skips_only_what_cannot_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    slow, fast = target("slow", image=False), target("fast")
    g = group([slow, fast], "latency")
    health.health_of("slow").success(0.2)
    health.health_of("fast").success(0.9)
    # The session's first request is placed by the strategy, which explores 5 % of the time:
    # without exploration for that one request the pin is the lowest latency, deterministically.
    with monkeypatch.context() as m:
        m.setattr(routing, "LATENCY_EXPLORE", 0.0)
        assert attempt_order(g, g.targets, session="s1")[0].name == "slow"
    picks = {attempt_order(g, g.targets, session="s1")[0].name for _ in range(200)}
    assert picks == {"slow"}  # no 5 % exploration for a pinned session
    health.health_of("fast").ttfb_ewma = 0.05
    assert attempt_order(g, g.targets, session="s1")[0].name == "slow"
    # An image request cannot go to the text-only target: it goes elsewhere, the pin stays.
    images = eligible_targets(g, image_count=1, has_tools=False)
    assert [t.name for t in attempt_order(g, images, session="s1")] == ["fast"]
    assert attempt_order(g, g.targets, session="s1")[0].name == "slow"
    # Other strategies are untouched by pins; the table is bounded.
    assert routing._pinned == {("g", "s1"): "slow"}
    for i in range(routing.MAX_PINNED_SESSIONS):
        attempt_order(g, g.targets, session=f"x{i}")
    assert len(routing._pinned) == routing.MAX_PINNED_SESSIONS and ("g", "s1") not in routing._pinned


def test_target_timeouts_override_only_what_they_name(tmp_path: Path) -> None:
    from sluicegate.compile import compile_file

    path = tmp_path / "sluicegate.yaml"
    path.write_text(
        "providers:\n"
        "  up: {type: anthropic, base_url: 'http://127.0.0.1:9', timeouts: {connect_s: 2, first_byte_s: 30, idle_s: 20}}\n"
        "models:\n"
        "  g:\n"
        "    targets:\n"
        "      - {provider: up}\n"
        "      - {provider: up, timeouts: {first_byte_s: 5, total_s: 900}}\n"
    )
    first, second = compile_file(str(path))["groups"]["g"]["targets"]
    assert first["timeouts"] == {"connect_s": 2, "first_byte_s": 30, "idle_s": 20, "total_s": None}
    assert second["timeouts"] == {"connect_s": 2, "first_byte_s": 5, "idle_s": 20, "total_s": 900}
