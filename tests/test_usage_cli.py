"""`sluicegate usage` through argparse: a range, a grouping, three formats, and --records."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sluicegate.usage import Ledger, UsageRecord
from test_keys_cli import config, load_config, run  # noqa: F401


def _usage_records(url: str) -> None:
    led = Ledger.from_url(url)
    now = time.time()
    for i, (user, session) in enumerate([("alice", "s1"), ("alice", "s2"), ("bob", "s3")]):
        led.submit(
            UsageRecord(
                ts=now - 60 + i, request_id=f"r{i}", endpoint="messages", key_id=f"k-{user}", key_name=user,
                user=user, project="p", env=None, group="sonnet", target="t", upstream_model="m",
                requested_model="sonnet", session_id=session, agent_id=None, parent_agent_id=None,
                status=200, stream=False, input_tokens=10, output_tokens=1, cost_usd=0.5,
            )
        )  # fmt: skip
    led.close()


def test_usage_command_formats_and_records(
    config: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg: Any = load_config(config)
    _usage_records(cfg.ledger.resolved_url())
    code, out, _ = run(["usage", "--config", config, "--by", "user"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[0] == "user" and lines[1].split()[:2] == ["alice", "2"]
    code, out, _ = run(
        ["usage", "--config", config, "--by", "session", "--format", "csv", "--since", "1h"], capsys
    )
    assert code == 0 and out.splitlines()[0].startswith("session,requests") and len(out.splitlines()) == 4
    code, out, _ = run(["usage", "--config", config, "--by", "day", "--format", "json"], capsys)
    assert json.loads(out)[0]["requests"] == 3 and json.loads(out)[0]["cost_usd"] == pytest.approx(1.5)
    code, out, _ = run(["usage", "--config", config, "--records", "--user", "bob"], capsys)
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["request_id"] for r in recs] == ["r2"] and recs[0]["session_id"] == "s3"
    code, _, err = run(["usage", "--config", config, "--since", "someday"], capsys)
    assert code == 2 and "cannot read time" in err
