"""Instructions a request costs the gateway, by thread, under callgrind (not part of the test command).

    python loadtests/instructions_probe.py [--rounds 2] [--duration 20] [--switches]
        [--spec API:PACING:CONCURRENCY ...]

CPU time on this VM moves by 15-30 % between windows and between gateways of one build, which is
more than the accounting switches cost; the count of instructions executed does not move with
the neighbours. This runs gateways (every accounting switch on, every one off, and with
`--switches` one off at a time) under `valgrind --tool=callgrind`, zeroes the counters at the
start of each measured window and dumps them at its end, and prints instructions per request:
the event loop's, the other threads' (Granian's), the ledger writer's per row written in the
window (in 500-row batches, as at full speed), and the whole request (the writer's share counted
at one row a request). Instructions
are not time (a cache miss costs no instruction), so this complements accounting_probe.py's
per-thread CPU; it does not replace it. Needs valgrind (`apt-get install valgrind`); a
gateway under callgrind serves ~150 short requests a second and takes ~1 minute to start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (
    ACCOUNTING,
    ONE_SWITCH_OFF,
    PACING,
    Spec,
    free_port,
    gateway_config,
    ledger_rows,
    serve_cmd,
    tree_pids,
    wait_port_plain,
)
from loadgen import run_scenario

GATEWAYS = {"all on": set(), "all off": ACCOUNTING["sluicegate-quiet"]}
SWITCHES = {label: ACCOUNTING[name] for label, name in ONE_SWITCH_OFF.items()}
_TOTALS = re.compile(rb"^totals:\s*(\d+)", re.M)


class Gateway:
    def __init__(self, label: str, off: set[str], work: Path, mock_port: int) -> None:
        self.label = label
        self.slug = re.sub(r"\W+", "-", label)
        self.port = free_port()
        self.state = work / f"state-{self.slug}"
        self.out = work / f"cg-{self.slug}"
        cfg = work / f"{self.slug}.yaml"
        config = gateway_config(mock_port, off)
        if "ledger" not in off:
            # Under callgrind a gateway serves ~200 requests a second, so every 0.5 s interval
            # would write a batch of ~100 rows; at full speed (~7,000 a second) the 500-row
            # batch fills first. A long interval gives the full-speed batches.
            config["ledger"]["flush_interval_s"] = 30
        if "access_log" not in off:
            # The same for the access log: at full speed the 64 KB of lines kept fill within
            # its 100 ms (a write of ~115 lines, with no timer); at callgrind's pace the 100 ms
            # timer fires every ~20 lines, each firing an armed timer, a flush and its writes.
            config["server"]["access_log_flush_ms"] = 10_000
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        env = {**os.environ, "SLUICEGATE_STATE_DIR": str(self.state), "SLUICEGATE_MALLOC": "system"}
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            "--separate-threads=yes",
            f"--callgrind-out-file={self.out}.%p",
            *serve_cmd(cfg, self.port),
        ]
        self.log = open(work / f"{self.slug}.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        self.worker = 0
        self.dumps = 0

    def wait(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                wait_port_plain(self.port, self.proc, self.label)
                break
            except SystemExit:
                if self.proc.poll() is not None:
                    raise
        # The worker is the descendant with the most threads (Granian's runtime, the ledger).
        pids = [p for p in tree_pids(self.proc.pid) if p != self.proc.pid]
        self.worker = max(pids, key=lambda p: len(os.listdir(f"/proc/{p}/task")))

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.worker)], capture_output=True, check=False)

    def threads_since_zero(self) -> dict[int, tuple[int, bool]]:
        """Per thread of the last dump: its instructions, and whether it is the ledger writer."""
        self.dumps += 1
        out = {}
        for path in self.out.parent.glob(f"{self.out.name}.{self.worker}.{self.dumps}-*"):
            data = path.read_bytes()
            m = _TOTALS.search(data)
            thread = int(path.name.rsplit("-", 1)[1])
            out[thread] = (int(m.group(1)) if m else 0, b"SqliteLedgerWriter" in data)
        return out

    def rows(self) -> int:
        return ledger_rows(self.state)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        self.log.close()


def parse_spec(text: str, duration_s: float) -> Spec:
    """`API:PACING:CONCURRENCY` as a Spec (bench.py's scenarios by the same names)."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in ("anthropic", "chat", "translated") or parts[1] not in PACING:
        raise SystemExit(f"--spec {text!r}: API:PACING:CONCURRENCY, e.g. translated:stream50:1")
    api, pacing, concurrency = parts
    if not concurrency.isdigit() or int(concurrency) < 1:
        raise SystemExit(f"--spec {text!r}: the concurrency is a whole number from 1")
    return Spec(f"{api}:{pacing}:c{concurrency}", api, pacing, int(concurrency), duration_s)


async def measure(gw: Gateway, spec: Spec) -> dict[str, float]:
    marks: dict[str, int] = {}

    def on_window(edge: str) -> None:
        if edge == "start":
            gw.control("-z")
        else:
            gw.control("-d", "window")
        marks[edge] = gw.rows()

    stats = await run_scenario(spec.scenario(gw.label, gw.port), on_window)
    await asyncio.sleep(1.5)  # the writer's last batch of the window lands; its rows were counted at the edge
    threads = gw.threads_since_zero()
    requests = max(1, stats.completed_in_window)
    rows = marks["end"] - marks["start"]
    loop = threads.get(1, (0, False))[0]
    writer = sum(n for t, (n, is_writer) in threads.items() if is_writer and t != 1)
    other = sum(n for t, (n, is_writer) in threads.items() if not is_writer and t != 1)
    per_row = writer / rows if rows > 0 else 0.0
    return {
        "event loop": loop / requests,
        "other threads": other / requests,
        "writer per row": per_row,
        "whole": (loop + other) / requests + (per_row if rows > 0 else 0.0),
        "requests": float(requests),
    }


async def main_async(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="sluicegate-instructions-"))
    env = {**os.environ, "SLUICEGATE_STATE_DIR": str(work / "state")}
    mock_port = free_port()
    mock_log = open(work / "mock.log", "wb")  # noqa: SIM115
    mock = subprocess.Popen(
        [sys.executable, "-m", "sluicegate.cli", "mock-upstream", "--port", str(mock_port)],
        stdout=mock_log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    wanted = dict(GATEWAYS)
    if args.switches:
        wanted.update(SWITCHES)
    gateways = [Gateway(label, off, work, mock_port) for label, off in wanted.items()]
    try:
        wait_port_plain(mock_port, mock, "mock-upstream")
        for gw in gateways:
            gw.wait()
        specs = [parse_spec(text, args.duration) for text in args.spec or ["anthropic:json1k:8"]]
        # The port opens before the worker has imported the app and opened its stores; under
        # callgrind that takes most of a minute, and a window over it counted those imports
        # (and their compiles) against the requests: up to ~24,000 instructions a request, the
        # "unexplained" spread of the all-on gateway. Every gateway serves a while unmeasured.
        # (Each scenario's own path too: a translated request's modules load on its first.)
        settles = [Spec("settle", "anthropic", "json1k", 8, 8.0)]
        settles += [Spec("settle", s.api, s.pacing, s.concurrency, 4.0) for s in specs]
        for gw in gateways:
            for settle in settles:
                await run_scenario(settle.scenario(gw.label, gw.port))
        results: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
        for i in range(args.rounds):
            for spec in specs:
                for gw in gateways[i % len(gateways) :] + gateways[: i % len(gateways)]:
                    results[gw.label, spec.name].append(await measure(gw, spec))
        print(
            "| scenario | gateway | event loop Ir/req | other threads Ir/req | ledger writer Ir/row"
            " | whole Ir/req | vs all off |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for spec in specs:
            base = statistics.median(r["whole"] for r in results["all off", spec.name])
            for label in wanted:
                runs = results[label, spec.name]

                def med(key: str, runs: list[dict[str, float]] = runs) -> float:
                    return statistics.median(r[key] for r in runs)

                writer = f"{med('writer per row'):,.0f}" if med("writer per row") else "-"
                print(
                    f"| {spec.name} | {label} | {med('event loop'):,.0f} | {med('other threads'):,.0f}"
                    f" | {writer} | {med('whole'):,.0f} | {med('whole') / base - 1:+.1%} |"
                )
        requests = sum(r["requests"] for runs in results.values() for r in runs)
        print(
            f"\n(medians of {args.rounds} rounds of {args.duration:g} s, {requests:.0f} requests; logs in {work})"
        )
    finally:
        for gw in gateways:
            gw.close()
        mock.terminate()
        mock.wait(10)
        mock_log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds measured per window")
    ap.add_argument("--switches", action="store_true", help="also a gateway with each switch off on its own")
    ap.add_argument(
        "--spec",
        action="append",
        metavar="API:PACING:CONCURRENCY",
        help="a scenario to measure (repeatable; default anthropic:json1k:8): API anthropic, chat or"
        " translated; PACING json1k or stream50 (bench.py's PACING); e.g. translated:stream50:1",
    )
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
