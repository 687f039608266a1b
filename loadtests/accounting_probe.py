"""Where the accounting switches' CPU goes, thread by thread (not part of the test command).

    python loadtests/accounting_probe.py [--rounds 3] [--duration 6]

The bench's `--accounting` rows compare whole gateways, whose CPU per request moves by more
than the accounting costs between two gateways of one build. This reads each gateway thread's
CPU from /proc/<pid>/task/*/stat over the measurement window instead, so the ledger's writer
thread is measured on its own (per row written), next to the event loop and Granian's I/O
thread (per request). Gateways, interleaved in each round: every switch on (the default, with
the native SQLite writer), the same with the ledger on the sqlite3 driver (`ledger.native_writer:
false`), and every switch off. The gateway is pinned to core 0 and the load generator and the
mock upstream to core 1, as in bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import ACCOUNTING, CLK_TCK, ONE_SWITCH_OFF, Fleet, Spec, ledger_rows, tree_pids
from loadgen import run_scenario

GATEWAYS = {
    "all on": "sluicegate",
    "all on, driver writer": "sluicegate-driver-ledger",
    "all off": "sluicegate-quiet",
}
SCENARIOS = [("c32-json1k", "json1k"), ("c32-stream50", "stream50")]  # name, pacing


def thread_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds per thread kind (its comm, e.g. "sluicegate-ledg", "granian-..."), all pids."""
    out: dict[str, float] = defaultdict(float)
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
            fields = stat[stat.rindex(b")") + 2 :].split()
            kind = "event loop" if tid == str(pid) else _kind(comm)
            out[kind] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def _kind(comm: str) -> str:
    return "ledger writer" if comm.startswith("sluicegate-ledg") else "other threads"


async def measure(fleet: Fleet, spec: Spec, name: str) -> tuple[dict[str, float], int]:
    target = fleet.targets[name]
    pids = tree_pids(target.proc.pid) if target.proc else []
    marks: dict[str, dict[str, float]] = {}
    ledger_rows: dict[str, int] = {}

    def on_window(edge: str) -> None:
        marks[edge] = thread_cpu(pids)
        ledger_rows[edge] = _rows_written(fleet, name)

    stats = await run_scenario(spec.scenario(name, target.port), on_window)
    start, end = marks["start"], marks["end"]
    used = {k: end.get(k, 0.0) - start.get(k, 0.0) for k in end}
    used["rows"] = float(ledger_rows["end"] - ledger_rows["start"])
    return used, stats.completed_in_window


def _rows_written(fleet: Fleet, name: str) -> int:
    """Rows in the gateway's SQLite ledger (it writes within its flush interval, 0.5 s)."""
    return ledger_rows(fleet.work / f"state-{name}")


async def main_async(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="sluicegate-acct-probe-"))
    os.sched_setaffinity(0, {1})
    fleet = Fleet(work, 0, 1, nginx=False, quiet_gw=False)
    env = {**os.environ, "SLUICEGATE_STATE_DIR": str(work / "state")}
    labels = dict(GATEWAYS)  # table label -> gateway name, the optional ones added below
    try:
        fleet.targets["sluicegate-quiet"] = fleet._gateway(
            "sluicegate-quiet", 0, env, ACCOUNTING["sluicegate-quiet"]
        )
        fleet.targets["sluicegate-driver-ledger"] = fleet._gateway(
            "sluicegate-driver-ledger", 0, env, {"native_writer"}
        )
        if args.switches:
            # One switch off at a time: which of the three the event loop's share belongs to.
            for label, name in ONE_SWITCH_OFF.items():
                fleet.targets[name] = fleet._gateway(name, 0, env, ACCOUNTING[name])
                labels[label] = name
        if args.twin:
            # A second gateway of the first's config: how far two identical gateways differ.
            fleet.targets["sluicegate-twin"] = fleet._gateway("sluicegate-twin", 0, env, set())
            labels["all on, twin"] = "sluicegate-twin"
        results: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
        gateways = list(labels.items())
        specs = [Spec(name, "anthropic", pacing, 32, args.duration) for name, pacing in SCENARIOS]
        for i in range(args.rounds):
            for spec in specs:
                # Each round starts with the next gateway: none is always measured first.
                for label, name in gateways[i % len(gateways) :] + gateways[: i % len(gateways)]:
                    used, count = await measure(fleet, spec, name)
                    # The ledger writes up to 0.5 s after the window: let it land before the next.
                    await asyncio.sleep(1.0)
                    results[(spec.name, label)].append({**used, "requests": float(count)})
        print(
            "| scenario | gateway | event loop µs/req | other threads µs/req | ledger writer µs/row | whole µs/req |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for spec in specs:
            for label in labels:
                runs = results[(spec.name, label)]

                def per(key: str, by: str = "requests", runs: list[dict[str, float]] = runs) -> str:
                    vals = [r.get(key, 0.0) / r[by] * 1e6 for r in runs if r.get(by)]
                    return f"{statistics.median(vals):.1f}" if vals else "-"

                for r in runs:
                    r["whole"] = sum(v for k, v in r.items() if k not in ("rows", "requests"))
                print(
                    f"| {spec.name} | {label} | {per('event loop')} | {per('other threads')}"
                    f" | {per('ledger writer', 'rows')} | {per('whole')} |"
                )
        print(f"\n(medians of {args.rounds} rounds of {args.duration:g} s; logs in {work})")
    finally:
        fleet.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds measured per run")
    ap.add_argument("--twin", action="store_true", help="also a second all-on gateway, for the spread")
    ap.add_argument("--switches", action="store_true", help="also a gateway with each switch off on its own")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
