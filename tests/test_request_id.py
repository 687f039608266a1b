"""The request id every answer carries (x-sluicegate-request-id) and every record keeps."""

from __future__ import annotations

import itertools
import re

import pytest
from sluicegate import context


def test_ids_are_the_prefix_and_a_zero_padded_hex_counter() -> None:
    ids = [context.new_request_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    shape = re.compile(r"req_[0-9a-f]{8}[0-9a-f]{10}")
    assert all(shape.fullmatch(i) for i in ids)
    # Consecutive counters: the last ten digits read as numbers one apart.
    counters = [int(i[-10:], 16) for i in ids]
    assert counters == list(range(counters[0], counters[0] + len(ids)))


def test_a_counter_past_ten_digits_keeps_all_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "_counter", itertools.count(0x1_0000_0000_00))
    assert context.new_request_id().endswith("_" + context._prefix + "10000000000")
    monkeypatch.setattr(context, "_counter", itertools.count(0xABC))
    assert context.new_request_id().endswith("0000000abc")
