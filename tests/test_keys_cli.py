"""`sluicegate keys ...` through argparse, with a stand-in config loader
that reads the ops sections from YAML (the real loader lives in config/)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml
from sluicegate import cli_ops
from sluicegate.config.ops_sections import OpsSections
from sluicegate.keys import KeyStore


def load_config(path: str) -> OpsSections:
    data = yaml.safe_load(Path(path).read_text()) or {}
    return OpsSections.model_validate({k: v for k, v in data.items() if k in OpsSections.model_fields})


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="sluicegate")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_ops.register(sub, load_config)
    args = parser.parse_args(argv)
    code = int(args.func(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "sluicegate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "providers": {"mock": {"type": "mock"}},  # other sections are the loader's business
                "keystore": {"url": f"sqlite:///{tmp_path}/state/keys.db"},
                "ledger": {"url": f"sqlite:///{tmp_path}/state/usage.db"},
            }
        )
    )
    return str(path)


def test_create_prints_the_token_alone_on_the_last_line(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        ["keys", "create", "--config", config, "--user", "alice", "--project", "payments", "--env", "dev",
         "--models", "sonnet,haiku", "--rpm", "60", "--budget-usd", "5", "--budget-period", "day"],
        capsys,
    )  # fmt: skip
    assert code == 0
    token = out.splitlines()[-1]
    assert token.startswith("sgk_alice_payments_dev_") and " " not in token
    store = KeyStore.from_url(load_config(config).keystore.resolved_url())  # type: ignore[union-attr]
    store.start(refresh_s=60)
    try:
        entry = store.lookup(token)
        assert entry is not None
        assert (entry.models, entry.rpm, entry.budget_usd, entry.budget_period) == (
            ("sonnet", "haiku"),
            60,
            5.0,
            "day",
        )
    finally:
        store.close()


def test_create_json_list_rotate_revoke(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["keys", "create", "--config", config, "--user", "bob", "--json"], capsys)
    assert code == 0
    created = json.loads(out)
    key_id, token = created["key"]["key_id"], created["token"]
    assert created["key"]["user"] == "bob" and token.startswith("sgk_bob___" + key_id)

    code, out, _ = run(["keys", "list", "--config", config], capsys)
    assert code == 0 and key_id in out and "active" in out and token not in out
    code, out, _ = run(["keys", "list", "--config", config, "--json"], capsys)
    assert [k["key_id"] for k in json.loads(out)] == [key_id]

    code, out, _ = run(["keys", "rotate", "--config", config, key_id], capsys)
    new_token = out.splitlines()[-1]
    assert code == 0 and new_token != token and key_id in new_token

    code, out, _ = run(["keys", "revoke", "--config", config, key_id], capsys)
    assert code == 0 and "revoked" in out
    code, _, err = run(["keys", "revoke", "--config", config, key_id], capsys)
    assert code == 1 and "no active key" in err
    code, _, err = run(["keys", "rotate", "--config", config, key_id], capsys)
    assert code == 1
    code, out, _ = run(["keys", "list", "--config", config, "--json"], capsys)
    assert json.loads(out)[0]["revoked"] is True


def test_create_refuses_bad_limits(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["keys", "create", "--config", config, "--rpm", "0"], capsys)
    assert code == 2 and "rpm" in err


def test_without_config_uses_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLUICEGATE_STATE_DIR", str(tmp_path / "st"))
    monkeypatch.delenv("SLUICEGATE_CONFIG", raising=False)
    code, _, _ = run(["keys", "create", "--user", "eve"], capsys)
    assert code == 0 and (tmp_path / "st" / "keys.db").exists()


def test_bad_config_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("ledger: {url: 'mysql://x'}\n")
    code, _, err = run(["keys", "list", "--config", str(path)], capsys)
    assert code == 1 and "sqlite" in err
