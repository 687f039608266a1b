"""Model names to groups: exact aliases, wildcards for Claude Code's hard-coded names, the
optional `default_group` catch-all, and alias conflicts failing `sluicegate compile-config`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import GatewayProcess
from fakes import FakeUpstream

HEADERS = {"x-api-key": "sg-k", "anthropic-version": "2023-06-01"}


def config(base_url: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "providers": {"up": {"type": "anthropic", "base_url": base_url, "api_key": "sk"}},
        "models": {
            # No `model` on the target: the client's own name goes upstream unchanged.
            "fast": {
                "aliases": ["haiku", "claude-haiku-*", "claude-3-5-haiku-*"],
                "targets": [{"provider": "up"}],
            },
            "coder": {
                "aliases": ["sonnet", "claude-sonnet-*", "claude-haiku-4-5-pinned"],
                "targets": [{"provider": "up", "model": "claude-sonnet-4-6"}],
            },
            "big": {
                "aliases": ["opus", "claude-opus-4-*"],
                "targets": [{"provider": "up", "model": "claude-opus-4-7"}],
            },
            "local": {"targets": [{"provider": "up", "model": "catch-all-model"}]},
        },
        "keys": [{"name": "k", "token": "sg-k"}],
    }
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    g = GatewayProcess(config(up.base_url, default_group="local")).start()
    yield g
    g.stop()


def route(gw: GatewayProcess, up: FakeUpstream, model: str) -> tuple[int, str | None]:
    """Status and the model name the upstream received."""
    up.clear()
    r = httpx.post(
        gw.url + "/v1/messages",
        json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        headers=HEADERS,
        timeout=10,
    )
    return r.status_code, (up.requests[0].json["model"] if up.requests else None)


@pytest.mark.parametrize(
    ("asked", "upstream_model"),
    [
        # Claude Code's hard-coded background model and its relatives, by wildcard.
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5-20251001"),
        ("claude-haiku-4-5", "claude-haiku-4-5"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-6"),
        ("claude-opus-4-1-20250805", "claude-opus-4-7"),
        # Group names and exact aliases.
        ("fast", "fast"),
        ("sonnet", "claude-sonnet-4-6"),
        ("opus", "claude-opus-4-7"),
        # An exact alias wins over another group's wildcard.
        ("claude-haiku-4-5-pinned", "claude-sonnet-4-6"),
        # Nothing else matches: the default group.
        ("gpt-4o", "catch-all-model"),
        ("claude-opus-3", "catch-all-model"),
    ],
)
def test_names_route_to_their_group(
    gw: GatewayProcess, up: FakeUpstream, asked: str, upstream_model: str
) -> None:
    assert route(gw, up, asked) == (200, upstream_model)


def test_without_default_group_an_unknown_name_is_404(gateway_factory: Any, up: FakeUpstream) -> None:
    g: GatewayProcess = gateway_factory(config(up.base_url))
    up.clear()
    r = httpx.post(
        g.url + "/v1/messages",
        json={"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        headers=HEADERS,
    )
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error" and "gpt-4o" in r.json()["error"]["message"]
    assert up.requests == []
    assert route(g, up, "claude-haiku-4-5-20251001") == (200, "claude-haiku-4-5-20251001")


def compile_config(tmp_path: Path, cfg: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "sluicegate.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "sluicegate.cli", "compile-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_alias_conflicts_fail_compile_config(tmp_path: Path) -> None:
    good = compile_config(tmp_path, config("http://127.0.0.1:9", default_group="local"))
    assert good.returncode == 0, good.stderr

    cfg = config("http://127.0.0.1:9", default_group="nowhere")
    cfg["models"]["big"]["aliases"] += ["sonnet", "claude-*-4-5-*", "coder"]
    bad = compile_config(tmp_path, cfg)
    assert bad.returncode == 1
    err = bad.stderr
    # One exact name in two groups, a wildcard overlapping another group's, an alias that is
    # another group's name, and a default_group that does not exist: all listed, with paths.
    assert "models.big.aliases[2]: alias conflict: 'sonnet' already routes to group 'coder'" in err
    assert "models.big.aliases[3]: alias conflict: 'claude-*-4-5-*'" in err
    assert "models.big.aliases[4]: alias conflict: 'coder' already routes to group 'coder'" in err
    assert "default_group: unknown model group 'nowhere'" in err
