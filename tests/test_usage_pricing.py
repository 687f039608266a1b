"""Cost from the price table: each token kind priced once at its own rate."""

from __future__ import annotations

import pytest
from sluicegate.usage import Price, cost_usd, normalize_openai

SONNET = Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30)


def test_cache_tokens_are_priced_as_cache_tokens_only() -> None:
    # Anthropic usage: input_tokens=100 excludes the 2000 written and the 50000 read from cache.
    cost = cost_usd(SONNET, input=100, output=500, cache_creation=2000, cache_read=50000)
    expected = (100 * 3.0 + 500 * 15.0 + 2000 * 3.75 + 50000 * 0.30) / 1e6
    assert cost == pytest.approx(expected)
    assert cost == pytest.approx(0.0303)


def test_no_price_costs_nothing() -> None:
    assert cost_usd(None, 1000, 1000, 1000, 1000) == 0.0


def test_openai_usage_splits_cached_tokens_out_of_prompt_tokens() -> None:
    inp, out, cw, cr = normalize_openai(prompt_tokens=1200, completion_tokens=80, cached_tokens=1000)
    assert (inp, out, cw, cr) == (200, 80, 0, 1000)
    assert cost_usd(SONNET, inp, out, cw, cr) == pytest.approx((200 * 3 + 80 * 15 + 1000 * 0.3) / 1e6)
    assert normalize_openai(10, 1, 50) == (0, 1, 0, 10)


def test_price_from_config_object() -> None:
    class Cfg:
        input, output, cache_write, cache_read = 1, 2, 3, 4

    assert Price.from_model(Cfg()) == Price(1.0, 2.0, 3.0, 4.0)
    assert Price.from_model(None) is None
