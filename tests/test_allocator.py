"""`serve --malloc`: jemalloc under the Python heap when the system has it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import GatewayProcess
from sluicegate import allocator

JEMALLOC = allocator.find_jemalloc()
CONFIG = {
    "providers": {"m": {"type": "mock"}},
    "models": {"sonnet": {"targets": [{"provider": "m", "model": "claude-sonnet-4-5"}]}},
}


def test_system_and_an_active_process_never_reexecute() -> None:
    assert allocator.reexec_env("system", {}) is None
    assert allocator.reexec_env("auto", {"SLUICEGATE_MALLOC_ACTIVE": "jemalloc"}) is None
    with pytest.raises(allocator.AllocatorError, match="one of auto, jemalloc, system"):
        allocator.reexec_env("tcmalloc", {})


def test_jemalloc_asked_for_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: None)
    assert allocator.reexec_env("auto", {}) is None  # auto: the system's malloc, quietly
    with pytest.raises(allocator.AllocatorError, match="apt-get install libjemalloc2"):
        allocator.reexec_env("jemalloc", {})


def test_the_preload_keeps_an_operators_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "find_jemalloc", lambda: "/lib/libjemalloc.so.2")
    env = allocator.reexec_env("auto", {"LD_PRELOAD": "/lib/other.so", "MALLOC_CONF": "narenas:2"})
    assert env is not None
    assert env["LD_PRELOAD"] == "/lib/libjemalloc.so.2 /lib/other.so"
    assert env["MALLOC_CONF"] == "narenas:2" and env["PYTHONMALLOC"] == "malloc"
    assert env["SLUICEGATE_MALLOC_ACTIVE"] == "jemalloc"
    fresh = allocator.reexec_env("jemalloc", {})
    assert fresh is not None and "background_thread:true" in fresh["MALLOC_CONF"]


def _task_files(pid: int, name: str) -> list[str]:
    """`name` of each of the process's threads; a thread that ends while they are read (the
    worker starts and stops threads of its own) is left out."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.append((task / name).read_text())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def _descendants(pid: int) -> list[int]:
    out = []
    for children in _task_files(pid, "children"):
        for child in children.split():
            out += [int(child), *_descendants(int(child))]
    return out


def _worker_env_and_threads(gw: GatewayProcess) -> tuple[dict[str, str], list[str]]:
    assert gw.proc is not None
    worker = max(_descendants(gw.proc.pid))  # the Granian worker: forked last
    raw = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    threads = [comm.strip() for comm in _task_files(worker, "comm")]
    return env, threads


@pytest.mark.skipif(JEMALLOC is None, reason="libjemalloc2 is not installed")
def test_serve_runs_its_workers_on_jemalloc_with_the_background_purge(tmp_path: Path) -> None:
    gw = GatewayProcess(CONFIG).start()
    try:
        env, threads = _worker_env_and_threads(gw)
        assert env.get("PYTHONMALLOC") == "malloc" and JEMALLOC in env.get("LD_PRELOAD", "")
        # Forking stopped jemalloc's background thread; the worker started it again.
        assert "jemalloc_bg_thd" in threads
        assert gw.proc is not None and Path(f"/proc/{gw.proc.pid}/maps").read_text().count("libjemalloc") > 0
    finally:
        gw.stop()


def test_malloc_system_leaves_the_process_alone() -> None:
    gw = GatewayProcess(CONFIG, env={"SLUICEGATE_MALLOC": "system"}).start()
    try:
        env, threads = _worker_env_and_threads(gw)
        assert "PYTHONMALLOC" not in env and "jemalloc_bg_thd" not in threads
    finally:
        gw.stop()


def test_the_reexecuted_command_keeps_the_interpreters_flags() -> None:
    import ast
    import subprocess
    import sys

    probe = "from sluicegate import allocator; print(allocator.reexec_argv(['serve', '--port', '1']))"
    out = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-W", "error::ResourceWarning", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    argv = ast.literal_eval(out)  # a printed list of strings
    assert argv[0] == sys.executable
    line = " ".join(argv)
    assert "-X faulthandler" in line and "-Werror::ResourceWarning" in line
    assert argv[-5:] == ["-m", "sluicegate.cli", "serve", "--port", "1"]
    script = allocator.reexec_argv(["a"], script="/x/serve_variant.py")
    assert script[-2:] == ["/x/serve_variant.py", "a"]
