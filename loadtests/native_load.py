"""The benchmark's native load: `loadtests/native` (Rust) as load generator and paced mock.

At 1,000 paced streams and up, the Python load generator and `sluicegate mock-upstream`
share one core and saturate it (client core 95-100 % in the 2026-12-03 sweeps), so the sweep
measured them as much as the gateway. `bench.py --load native` runs the paced sweep with
these instead: the same closed loop and the same answer bytes, without an interpreter.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import tempfile
from array import array
from collections.abc import Callable
from pathlib import Path

from loadgen import Scenario, Stats

CRATE = Path(__file__).resolve().parent / "native"
BINARY = CRATE / "target" / "release" / "sluicegate-loadgen"


def build() -> Path | None:
    """Build (or find up to date) the binary; None when there is no cargo to build it with."""
    if shutil.which("cargo") is None:
        return BINARY if BINARY.exists() else None
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", str(CRATE / "Cargo.toml")],
        check=True,
    )
    return BINARY


def write_answer(path: Path, model: str, headers: dict[str, str]) -> None:
    """The answer the native mock replays: `sluicegate mock-upstream`'s bytes for these headers,
    as records of a little-endian u32 length and the bytes."""
    from sluicegate.providers.mock_server import stream_records

    with open(path, "wb") as f:
        for rec in stream_records("anthropic", model, headers):
            f.write(struct.pack("<I", len(rec)) + rec)


def mock_cmd(binary: Path, port: int, answer: Path, tick_ms: float = 0.0) -> list[str]:
    """`tick_ms` > 0 rounds the mock's write times up to multiples of it (bursts across
    streams, as from uvloop's 1 ms timers); 0 writes each stream's event at its own time."""
    cmd = [str(binary), "mock", "--port", str(port), "--answer", str(answer)]
    return [*cmd, "--tick-ms", str(tick_ms)] if tick_ms else cmd


async def run_scenario(
    binary: Path,
    sc: Scenario,
    on_window: Callable[[str], None],
    pids: list[int],
) -> Stats:
    """`loadgen.run_scenario` with the native load generator; its pid goes into `pids` (so the
    client core's CPU counts it) and `on_window` is called as it reports the window edges."""
    with tempfile.NamedTemporaryFile(prefix="sluicegate-req-", delete=False) as f:
        f.write(sc.request_bytes())
        req_path = f.name
    try:
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            "load",
            "--host",
            sc.host,
            "--port",
            str(sc.port),
            "--request",
            req_path,
            "--concurrency",
            str(sc.concurrency),
            "--warmup",
            str(sc.warmup_s),
            "--duration",
            str(sc.duration_s),
            "--ramp",
            str(sc.ramp_s),
            "--timeout",
            str(sc.timeout_s),
            stdout=asyncio.subprocess.PIPE,
            limit=2**30,
        )
        pids.append(proc.pid)
        assert proc.stdout is not None
        result: dict[str, object] = {}
        while line := await proc.stdout.readline():
            text = line.strip()
            if text in (b"start", b"end"):
                on_window(text.decode())
            elif text.startswith(b"{"):
                result = json.loads(text)
        if await proc.wait() != 0 or not result:
            raise SystemExit(f"sluicegate-loadgen load exited with {proc.returncode}")
    finally:
        os.unlink(req_path)
    stats = Stats(window_s=sc.duration_s)
    for name in ("ttfb", "ttfe", "total", "gaps"):
        setattr(stats, name, array("d", result[name]))  # type: ignore[arg-type]
    stats.errors.update(result["errors"])  # type: ignore[arg-type]
    stats.ok = int(result["ok"])  # type: ignore[call-overload]
    stats.events = int(result["events"])  # type: ignore[call-overload]
    stats.completed_in_window = int(result["completed_in_window"])  # type: ignore[call-overload]
    return stats
