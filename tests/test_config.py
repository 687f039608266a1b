"""compile-config: strict validation, every error with its YAML path, snapshot hashing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sluicegate.compile import compile_file, dump_snapshot, load_snapshot, wildcard_overlap
from sluicegate.config import ConfigError
from sluicegate.snapshot import Snapshot, SnapshotError

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
providers:
  anthropic:
    type: anthropic
    api_key: ${TEST_ANTHROPIC_KEY}
models:
  big-coder:
    aliases: [sonnet, "claude-haiku-*"]
    targets:
      - provider: anthropic
        model: claude-sonnet-4-6
keys:
  - name: alice
    token: ${TEST_ALICE_TOKEN}
    models: [big-coder]
"""


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "sluicegate.yaml"
    p.write_text(text)
    return str(p)


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        compile_file(write(tmp_path, text))
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def test_good_config_compiles_without_secrets(tmp_path: Path) -> None:
    compiled = compile_file(write(tmp_path, GOOD))
    data = dump_snapshot(compiled)
    # References stay references: the snapshot never carries a secret value.
    assert b"${TEST_ANTHROPIC_KEY}" in data
    assert compiled["exact"] == {"big-coder": "big-coder", "sonnet": "big-coder"}
    assert compiled["wildcards"] == [["claude-haiku-*", "big-coder"]]
    assert load_snapshot(data) == compiled


def test_hash_is_stable_and_content_addressed(tmp_path: Path) -> None:
    a = compile_file(write(tmp_path, GOOD))["hash"]
    b = compile_file(write(tmp_path, GOOD))["hash"]
    c = compile_file(write(tmp_path, GOOD.replace("sonnet,", "sonnet, opus,")))["hash"]
    assert a == b != c


def test_edited_snapshot_is_rejected(tmp_path: Path) -> None:
    data = dump_snapshot(compile_file(write(tmp_path, GOOD)))
    with pytest.raises(ValueError, match="hash"):
        load_snapshot(data.replace(b"claude-sonnet-4-6", b"claude-opus-4-7"))


def test_unknown_provider_names_its_path(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, GOOD.replace("- provider: anthropic", "- provider: antropic"))
    assert errs == ["models.big-coder.targets[0].provider: unknown provider 'antropic'"]


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("- provider: anthropic", "- provider: antropic").replace(
        "models: [big-coder]", "models: [big-codr]"
    )
    errs = errors_of(tmp_path, text)
    assert "models.big-coder.targets[0].provider: unknown provider 'antropic'" in errs
    assert "keys[0].models[0]: unknown model group 'big-codr'" in errs


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, GOOD.replace("    type: anthropic", "    type: anthropic\n    bse_url: x"))
    assert errs == ["providers.anthropic.bse_url: unknown key"]


def test_wrong_type_and_missing_fields(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, GOOD.replace("type: anthropic", "type: antropic"))
    assert len(errs) == 1 and errs[0].startswith("providers.anthropic.type: ")
    errs = errors_of(tmp_path, "providers: {}\nmodels: {}\n")
    assert any(e.startswith("providers:") for e in errs) and any(e.startswith("models:") for e in errs)


def test_error_lines_point_into_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        compile_file(write(tmp_path, GOOD.replace("- provider: anthropic", "- provider: antropic")))
    issue = info.value.issues[0]
    assert issue.line == 9  # the line of `- provider: antropic`


def test_invalid_yaml(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, "providers: [\n")
    assert errs[0].startswith("<yaml>: invalid YAML")


def test_alias_conflicts(tmp_path: Path) -> None:
    cfg = GOOD.replace(
        "keys:", '  other:\n    aliases: [sonnet, "claude-*"]\n    targets: [{provider: anthropic}]\nkeys:'
    )
    errs = errors_of(tmp_path, cfg)
    assert any(
        e.startswith("models.other.aliases[0]: alias conflict: 'sonnet' already routes to group 'big-coder'")
        for e in errs
    )
    assert any(
        e.startswith("models.other.aliases[1]: alias conflict: 'claude-*' and 'claude-haiku-*'") for e in errs
    )


def test_wildcard_overlap() -> None:
    assert wildcard_overlap("claude-*", "claude-haiku-*")
    assert wildcard_overlap("*-haiku", "claude-*")
    assert not wildcard_overlap("claude-haiku-*", "claude-opus-*")
    assert not wildcard_overlap("gpt-*", "claude-*")


def test_snapshot_resolves_env_and_routes(tmp_path: Path) -> None:
    compiled = compile_file(write(tmp_path, GOOD))
    with pytest.raises(SnapshotError, match="TEST_ANTHROPIC_KEY"):
        Snapshot(compiled, environ={})
    snap = Snapshot(compiled, environ={"TEST_ANTHROPIC_KEY": "sk-x", "TEST_ALICE_TOKEN": "tok"})
    assert snap.resolve("big-coder") == "big-coder"
    assert snap.resolve("sonnet") == "big-coder"
    assert snap.resolve("claude-haiku-4-5-20251001") == "big-coder"
    assert snap.resolve("gpt-4o") is None
    target = snap.groups["big-coder"].targets[0]
    assert ("x-api-key", "sk-x") in target.extra_headers


def test_optional_provider_is_skipped_without_key(tmp_path: Path) -> None:
    compiled = compile_file(str(ROOT / "examples" / "sluicegate.yaml"))
    snap = Snapshot(compiled, environ={})
    assert snap.skipped_providers == ["anthropic"]
    assert [t.kind for t in snap.groups["big-coder"].targets] == ["mock"]
    snap = Snapshot(compiled, environ={"ANTHROPIC_API_KEY": "sk-real"})
    assert [t.kind for t in snap.groups["big-coder"].targets] == ["anthropic", "mock"]


def test_access_log_flush_default_and_a_snapshot_compiled_before_it(tmp_path: Path) -> None:
    compiled = compile_file(str(ROOT / "examples" / "sluicegate.yaml"))
    assert compiled["server"]["access_log_flush_ms"] == 100
    assert Snapshot(compiled, environ={}).access_log_flush_s == 0.1
    del compiled["server"]["access_log_flush_ms"]  # as an older version wrote it
    assert Snapshot(compiled, environ={}).access_log_flush_s == 0.1
    doc = Path(write(tmp_path, GOOD)).read_text() + "server:\n  access_log_flush_ms: -1\n"
    (tmp_path / "bad.yaml").write_text(doc)
    with pytest.raises(ConfigError) as err:
        compile_file(str(tmp_path / "bad.yaml"))
    assert "server.access_log_flush_ms" in err.value.render()


def test_ledger_indexes_name_report_dimensions(tmp_path: Path) -> None:
    doc = Path(write(tmp_path, GOOD)).read_text() + "ledger:\n  indexes: [user, colour]\n"
    (tmp_path / "bad.yaml").write_text(doc)
    with pytest.raises(ConfigError) as err:
        compile_file(str(tmp_path / "bad.yaml"))
    # The path names the bad entry; the message lists the dimensions that may be indexed.
    assert "ledger.indexes[1]: Input should be 'key', 'user'" in err.value.render()
    (tmp_path / "good.yaml").write_text(doc.replace(", colour", ""))
    assert compile_file(str(tmp_path / "good.yaml"))["ops"]["ledger"]["indexes"] == ["user"]


def test_cli_exit_codes_and_output(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    out = tmp_path / "snap.json"
    ok = subprocess.run(
        [sys.executable, "-m", "sluicegate.cli", "compile-config", good, "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert load_snapshot(out.read_bytes())["hash"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("- provider: anthropic", "- provider: antropic"))
    res = subprocess.run(
        [sys.executable, "-m", "sluicegate.cli", "compile-config", str(bad)], capture_output=True, text=True
    )
    assert res.returncode == 1
    assert "models.big-coder.targets[0].provider: unknown provider 'antropic'" in res.stderr


def test_timeouts_layer_provider_group_target(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    aliases: [sonnet",
        "    timeouts: {first_byte_s: 30, idle_s: 20}\n    aliases: [sonnet",
    ).replace(
        "        model: claude-sonnet-4-6", "        model: claude-sonnet-4-6\n        timeouts: {idle_s: 5}"
    )
    compiled = compile_file(write(tmp_path, text))
    t = compiled["groups"]["big-coder"]["targets"][0]["timeouts"]
    assert t == {"connect_s": 10.0, "first_byte_s": 30.0, "idle_s": 5.0, "total_s": None}


@pytest.mark.parametrize(
    ("base_url", "error"),
    [
        ("http://gpu-box:8000", "add the API's path, usually /v1"),
        ("http://gpu-box:8000/", "add the API's path, usually /v1"),
        ("http://gpu-box:8000/v1/chat/completions", "end it before /chat/completions"),
        ("http://gpu-box:8000/v1", None),
        ("https://llm.example.com/openai/v1", None),
    ],
)
def test_openai_base_url_follows_the_openai_convention(
    tmp_path: Path, base_url: str, error: str | None
) -> None:
    text = GOOD.replace(
        "providers:\n",
        f"providers:\n  local:\n    type: openai\n    base_url: {base_url}\n",
        1,
    )
    if error is None:
        compile_file(write(tmp_path, text))
        return
    (err,) = errors_of(tmp_path, text)
    assert err.startswith("providers.local.base_url: ") and error in err


def test_a_config_key_token_is_hashed_once_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from sluicegate import snapshot as snapshot_module

    compiled = compile_file(write(tmp_path, GOOD))
    env = {"TEST_ANTHROPIC_KEY": "sk-x", "TEST_ALICE_TOKEN": "tok"}
    snap = Snapshot(compiled, environ=env)
    hashed: list[bytes] = []

    class CountingHashlib:
        @staticmethod
        def sha256(data: bytes) -> Any:
            hashed.append(data)
            return hashlib.sha256(data)

    monkeypatch.setattr(snapshot_module, "hashlib", CountingHashlib)
    alice, _ = snap.key_for_token("tok")
    assert alice is not None and [snap.key_for_token("tok") for _ in range(3)] == [(alice, None)] * 3
    assert hashed == [b"tok"]
    # A token that is no config key is hashed every time (only tokens that matched are kept),
    # and its digest comes back for the key store to check.
    assert snap.key_for_token("tak") == (None, hashlib.sha256(b"tak").hexdigest())
    assert snap.key_for_token("tak")[0] is None
    assert hashed == [b"tok", b"tak", b"tak"]
    # A new snapshot (a reload) remembers nothing: the token is checked against its keys again.
    assert Snapshot(compiled, environ={**env, "TEST_ALICE_TOKEN": "other"}).key_for_token("tok")[0] is None
