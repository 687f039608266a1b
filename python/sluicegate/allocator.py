"""Which malloc the server runs on: jemalloc for the Python heap, when the system has it.

CPython's own small-object allocator hands memory back only a whole 1 MiB arena at a time,
and an arena goes back only once every object in it is gone. After a wave of streams a few
survivors in each arena kept the memory of all of them: 2,000 idle streams closed left RSS
1.22x what it was before they opened. Under jemalloc (`PYTHONMALLOC=malloc` with the library
preloaded) freed pages go back a page at a time: 1.05x, at the same CPU per request (see
docs/performance.md). Granian's Rust side already runs on its own, statically linked jemalloc.

A preload only takes effect at process start, so `serve` re-executes itself once with it.
In a forked worker jemalloc's background thread, which returns freed pages off the request
path, is not running any more; `start_background_purge` starts it again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence
from pathlib import Path

MODES = ("auto", "jemalloc", "system")
# Marks the re-executed process, so it never re-executes again (whatever LD_PRELOAD holds).
_ACTIVE = "SLUICEGATE_MALLOC_ACTIVE"
# Freed pages go back after about a second, by the background thread: cheaper per request than
# returning each one at once (dirty_decay_ms:0 cost 25 % more CPU on short requests).
_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
_KNOWN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


class AllocatorError(Exception):
    pass


def find_jemalloc() -> str | None:
    for path in _KNOWN_PATHS:
        if Path(path).is_file():
            return path
    name = ctypes.util.find_library("jemalloc")
    return name or None


def reexec_env(mode: str, environ: dict[str, str]) -> dict[str, str] | None:
    """The environment to re-execute `serve` with, or None to go on in this process."""
    if mode not in MODES:
        raise AllocatorError(f"--malloc must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "system" or environ.get(_ACTIVE):
        return None
    lib = find_jemalloc()
    if lib is None:
        if mode == "jemalloc":
            raise AllocatorError(
                "--malloc jemalloc: libjemalloc.so.2 not found (Debian: apt-get install libjemalloc2)"
            )
        return None
    env = dict(environ)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{lib} {preload}".strip() if lib not in preload else preload
    env["PYTHONMALLOC"] = "malloc"
    env.setdefault("MALLOC_CONF", _CONF)  # an operator's own setting wins
    env[_ACTIVE] = "jemalloc"
    return env


def reexec_argv(argv: Sequence[str], script: str | None = None) -> list[str]:
    """The command line of the re-executed process: this interpreter with the same flags (-X,
    -W, -O, ...; the environment carries the PYTHON* variables), then `-m sluicegate.cli` and
    `argv`, or `script` and `argv`."""
    import subprocess
    import sys

    # The stdlib's own rebuild of the interpreter's flags, as multiprocessing uses for its children.
    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    head = [script] if script is not None else ["-m", "sluicegate.cli"]
    return [sys.executable, *flags, *head, *argv]


def reexec(argv: Sequence[str], env: dict[str, str], script: str | None = None) -> None:
    """Replace this process (same pid, so signals and container init are unaffected)."""
    import sys

    os.execve(sys.executable, reexec_argv(argv, script), env)


def start_background_purge() -> bool:
    """In a worker under jemalloc: restart the background thread fork left behind."""
    if os.environ.get(_ACTIVE) != "jemalloc":
        return False
    try:
        mallctl = ctypes.CDLL(None).mallctl
    except (AttributeError, OSError):
        return False
    on = ctypes.c_bool(True)
    rc = mallctl(b"background_thread", None, None, ctypes.byref(on), ctypes.c_size_t(ctypes.sizeof(on)))
    return int(rc) == 0
