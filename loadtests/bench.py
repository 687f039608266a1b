"""The benchmark: direct vs sluicegate vs nginx (proxy_buffering off), interleaved, one table.

    python loadtests/bench.py                 # every scenario (about 10 minutes)
    python loadtests/bench.py --quick         # shorter runs, smaller sweep
    python loadtests/bench.py --only 'c32-*,stall2s' --rounds 3 --json out.json

It starts `sluicegate mock-upstream` and this load generator pinned to CPU 1, and the gateway
(and nginx, when installed) pinned to CPU 0 with `taskset`, so the gateway's CPU time per
request is read from /proc for its whole process tree without the client or upstream
counting against it. See docs/performance.md for the method and the latest results.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

import native_load
from loadgen import ClientConnection, Scenario, Stats, open_idle_streams, percentile, run_scenario
from sluicegate import _native

TOKEN = "sg-bench-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- processes -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            continue
    return total


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start on port {port}")


SCHED_BATCH: str | None = None  # "all" gateways, or only the --compare one ("b")
NATIVE_BIN: Path | None = None  # sluicegate-loadgen, with --load native
MOCK_TICK_MS = 0.0  # --mock-tick-ms


def taskset(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


def batch_policy(name: str) -> list[str]:
    """`chrt --batch 0` when asked: woken threads then wait for the running one to block instead
    of preempting it (Granian's writer thread and the event loop share one core)."""
    wanted = SCHED_BATCH == "all" or (SCHED_BATCH == "b" and name == "sluicegate-b")
    return ["chrt", "--batch", "0"] if wanted and shutil.which("chrt") else []


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None  # None: the mock itself (direct)
    # Where the native-load scenarios go: the native mock itself (direct), nginx's second
    # server, or the gateway's own port (its model `claude-paced-native` routes there).
    native_port: int = 0

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid) if self.proc is not None else []


ACCOUNTING = {  # gateway name -> accounting switches turned off (--accounting)
    # All on, like `sluicegate`, but serving only the accounting rows as the others do: the
    # main gateway has served the whole run by then (2,000 streams, translation, ...), and it
    # was once 0.164 ms a short request there against 0.104 in the run's own c32 row.
    "sluicegate-all-on": set(),
    "sluicegate-no-log": {"access_log"},
    "sluicegate-no-metrics": {"metrics"},
    "sluicegate-no-ledger": {"ledger"},
    "sluicegate-quiet": {"access_log", "metrics", "ledger"},
}
# The gateways with one switch off, by the label the probes print.
ONE_SWITCH_OFF = {
    "log off": "sluicegate-no-log",
    "metrics off": "sluicegate-no-metrics",
    "ledger off": "sluicegate-no-ledger",
}


def serve_cmd(cfg: Path, port: int) -> list[str]:
    """`sluicegate serve` with one worker, as every benchmark runs it."""
    return [
        sys.executable,
        "-m",
        "sluicegate.cli",
        "serve",
        "--config",
        str(cfg),
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def ledger_rows(state_dir: Path) -> int:
    """Rows in the SQLite ledger of a gateway with this state dir (0 before it has one)."""
    path = state_dir / "usage.db"
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=5) as c:
        try:
            # Each batch row knows its count: cheaper than unpacking them all through the view.
            return int(c.execute("SELECT coalesce(SUM(n), 0) FROM usage_batches").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def gateway_config(
    mock_port: int, off: set[str], ledger_url: str | None = None, native_port: int | None = None
) -> dict[str, Any]:
    mock = f"http://127.0.0.1:{mock_port}"

    def openai(headers: dict[str, str]) -> dict[str, Any]:
        return {"type": "openai", "base_url": mock + "/v1", "api_key": "sk-bench", "headers": headers}

    providers: dict[str, Any] = {
        "mock-anthropic": {"type": "anthropic", "base_url": mock, "api_key": "sk-bench"},
        "mock-openai": openai({}),
        # The translated path sends no client headers upstream: pacing comes from the provider.
        "tr-stream50": openai({"x-mock-events": "50"}),
        "tr-paced": openai({"x-mock-events": "50", "x-mock-interval-ms": "20"}),
        "tr-stall": openai({"x-mock-events": "50", "x-mock-pause-after-first-ms": "2000"}),
        "tr-json1k": openai({"x-mock-text-bytes": "900"}),
    }
    models: dict[str, Any] = {
        "sonnet": {
            "aliases": ["claude-sonnet-*", "claude-haiku-*"],
            "targets": [{"provider": "mock-anthropic", "model": "claude-sonnet-4-6"}],
        },
        "gpt-bench": {"targets": [{"provider": "mock-openai", "model": "gpt-bench-upstream"}]},
    }
    for name in ("tr-stream50", "tr-paced", "tr-stall", "tr-json1k"):
        models[name] = {"targets": [{"provider": name, "model": "gpt-bench-upstream"}]}
    if native_port is not None:
        base = f"http://127.0.0.1:{native_port}"
        providers["mock-native"] = {"type": "anthropic", "base_url": base, "api_key": "sk-bench"}
        models[NATIVE_MODEL] = {"targets": [{"provider": "mock-native", "model": "claude-sonnet-4-6"}]}
    return {
        "providers": providers,
        "models": models,
        "keys": [{"name": "bench", "token": TOKEN, "user": "bench", "models": ["*"]}],
        "server": {"access_log": "access_log" not in off},
        # native_writer only when off, so a --compare tree from before the option still starts.
        "ledger": {
            "enabled": "ledger" not in off,
            **({"native_writer": False} if "native_writer" in off else {}),
            **({"url": ledger_url} if ledger_url else {}),
        },
        "metrics": {"enabled": "metrics" not in off},
    }


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
worker_rlimit_nofile 30000;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream mock {{ server 127.0.0.1:{mock}; keepalive 4096; keepalive_requests 1000000; }}
{native}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    keepalive_requests 1000000;
    tcp_nodelay on;
    location = /readyz {{ return 200 "ready"; }}
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"""

# nginx's second server, in front of the native mock (bench.py --load native).
NGINX_NATIVE = """
  upstream native {{ server 127.0.0.1:{mock}; keepalive 4096; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    keepalive_requests 1000000;
    tcp_nodelay on;
    location / {{
      proxy_pass http://native;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
"""
NATIVE_MODEL = "claude-paced-native"


class Fleet:
    """The mock upstream, the gateway(s) and nginx, started once for the whole run."""

    def __init__(
        self,
        work: Path,
        gw_cpu: int | None,
        client_cpu: int | None,
        nginx: bool,
        quiet_gw: bool,
        granian: str | None = None,
        compare: str | None = None,
        compare_env: dict[str, str] | None = None,
        ledger_url: str | None = None,
        native_bin: Path | None = None,
    ) -> None:
        self.work = work
        self.ledger_url = ledger_url
        self.granian = granian
        self.procs: list[subprocess.Popen[bytes]] = []
        env = {**os.environ, "SLUICEGATE_STATE_DIR": str(work / "state")}
        self.mock_port = free_port()
        self.mock = self._spawn(
            [
                *taskset(client_cpu),
                sys.executable,
                "-m",
                "sluicegate.cli",
                "mock-upstream",
                "--port",
                str(self.mock_port),
            ],
            "mock.log",
            env,
        )
        wait_port_plain(self.mock_port, self.mock, "mock-upstream")
        self.native_mock: subprocess.Popen[bytes] | None = None
        self.native_port: int | None = None
        if native_bin is not None:
            answer = work / "native-answer.bin"
            native_load.write_answer(answer, "claude-sonnet-4-6", PACING["paced"])
            self.native_port = free_port()
            self.native_mock = self._spawn(
                [
                    *taskset(client_cpu),
                    *native_load.mock_cmd(native_bin, self.native_port, answer, MOCK_TICK_MS),
                ],
                "native-mock.log",
                env,
            )
            wait_port_plain(self.native_port, self.native_mock, "sluicegate-loadgen mock")
        self.targets = {"direct": Target("direct", self.mock_port, native_port=self.native_port or 0)}
        # A gateway that is never measured, started first: on this VM the first gateway of a run
        # spent ~20 % more CPU a request than identical ones started after it, for as long as it
        # ran (three runs; a restarted one was as fast as the rest). docs/performance.md, "Method".
        self._gateway("sluicegate-spare", gw_cpu, env, set())
        self.targets["sluicegate"] = self._gateway("sluicegate", gw_cpu, env, set())
        if quiet_gw:
            for name, off in ACCOUNTING.items():
                self.targets[name] = self._gateway(name, gw_cpu, env, off)
        if compare:
            # The same gateway from another source tree (A/B of a change, interleaved in one run).
            benv = {**env, "PYTHONPATH": str(Path(compare).resolve() / "python"), **(compare_env or {})}
            self.targets["sluicegate-b"] = self._gateway("sluicegate-b", gw_cpu, benv, set())
        if nginx and shutil.which("nginx"):
            port = free_port()
            d = work / "nginx"
            d.mkdir(exist_ok=True)
            conf = d / "nginx.conf"
            nport = free_port() if self.native_port else 0
            native = NGINX_NATIVE.format(mock=self.native_port, port=nport) if nport else ""
            conf.write_text(NGINX_CONF.format(dir=d, mock=self.mock_port, port=port, native=native))
            proc = self._spawn([*taskset(gw_cpu), "nginx", "-c", str(conf), "-p", str(d)], "nginx.log", env)
            wait_port(port, proc, "nginx")
            self.targets["nginx"] = Target("nginx", port, proc, native_port=nport)

    def _spawn(self, cmd: list[str], log: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = open(self.work / log, "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def _gateway(self, name: str, cpu: int | None, env: dict[str, str], off: set[str]) -> Target:
        port = free_port()
        cfg = self.work / f"{name}.yaml"
        config = gateway_config(self.mock_port, off, self.ledger_url, self.native_port)
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        genv = {**env, "SLUICEGATE_STATE_DIR": str(self.work / f"state-{name}")}
        if self.granian is not None:
            variant = str(Path(__file__).resolve().parent / "serve_variant.py")
            cmd = [sys.executable, variant, str(cfg), str(port), self.granian]
        else:
            cmd = serve_cmd(cfg, port)
        proc = self._spawn([*batch_policy(name), *taskset(cpu), *cmd], f"{name}.log", genv)
        wait_port(port, proc, name)
        return Target(name, port, proc, native_port=port)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_port_plain(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


# -- scenarios -----------------------------------------------------------------------------------
ANTHROPIC_HEADERS = [("x-api-key", TOKEN), ("anthropic-version", "2023-06-01")]
OPENAI_HEADERS = [("authorization", f"Bearer {TOKEN}")]


def messages_body(model: str, stream: bool) -> bytes:
    return json.dumps(
        {
            "model": model,
            "max_tokens": 1024,
            "stream": stream,
            "system": "You are a careful coding assistant.",
            "messages": [{"role": "user", "content": "Write a function that adds two numbers. " * 8}],
        }
    ).encode()


def chat_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 1024,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are a careful coding assistant."},
            {"role": "user", "content": "Write a function that adds two numbers. " * 8},
        ],
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


# pacing name -> (x-mock-* headers, per-request timeout)
PACING = {
    "stream50": {"x-mock-events": "50"},
    "paced": {"x-mock-events": "50", "x-mock-interval-ms": "20"},
    "stall": {"x-mock-events": "50", "x-mock-pause-after-first-ms": "2000"},
    "json1k": {"x-mock-text-bytes": "900"},
}


@dataclass
class Spec:
    """One row group of the table: a scenario run against each target."""

    name: str
    api: str  # "anthropic" | "chat" | "translated"
    pacing: str
    concurrency: int
    duration_s: float
    warmup_s: float = 1.0
    ramp_s: float = 0.0
    targets: tuple[str, ...] = ("direct", "sluicegate", "nginx")
    note: str = ""
    load: str = "python"  # "native": sluicegate-loadgen and its mock (Target.native_port)

    @property
    def stream(self) -> bool:
        return self.pacing != "json1k"

    def scenario(self, target: str, port: int) -> Scenario:
        pacing = PACING[self.pacing]
        if self.api == "chat":
            path, mode = "/v1/chat/completions", _native.RELAY_OPENAI
            body = chat_body("gpt-bench", self.stream)
            headers = OPENAI_HEADERS + list(pacing.items())
        elif self.api == "translated" and target != "direct":
            # Anthropic client -> gateway -> OpenAI-format upstream; pacing set by the provider.
            path, mode = "/v1/messages", _native.RELAY_ANTHROPIC
            body = messages_body("tr-" + self.pacing, self.stream)
            headers = list(ANTHROPIC_HEADERS)
        else:
            path, mode = "/v1/messages", _native.RELAY_ANTHROPIC
            model = NATIVE_MODEL if self.load == "native" else "claude-sonnet-4-6"
            body = messages_body(model, self.stream)
            headers = ANTHROPIC_HEADERS + list(pacing.items())
        return Scenario(
            name=self.name,
            host="127.0.0.1",
            port=port,
            path=path,
            body=body,
            headers=headers,
            concurrency=self.concurrency,
            duration_s=self.duration_s,
            warmup_s=self.warmup_s,
            ramp_s=self.ramp_s,
            mode=mode,
            timeout_s=30.0,
        )


def specs(quick: bool, sweep: list[int], load: str = "python") -> list[Spec]:
    d = 0.5 if quick else 1.0
    out = [
        Spec("c1-stream50", "anthropic", "stream50", 1, 5 * d),
        Spec("c32-json1k", "anthropic", "json1k", 32, 6 * d),
        Spec("c32-stream50", "anthropic", "stream50", 32, 6 * d),
        Spec("stall2s", "anthropic", "stall", 20, 6.0, warmup_s=0.0, ramp_s=2.0),
    ]
    for c in sweep:
        # One paced stream lasts ~1.1 s; ramp the users in over one stream's length.
        out.append(Spec(f"paced-c{c}", "anthropic", "paced", c, 8 * d, warmup_s=2.5, ramp_s=1.2, load=load))
    for api in ("chat", "translated"):
        tg: tuple[str, ...] = ("direct", "sluicegate", "nginx") if api == "chat" else ("direct", "sluicegate")
        out += [
            Spec(f"{api}:c1-stream50", api, "stream50", 1, 5 * d, targets=tg),
            Spec(f"{api}:c32-json1k", api, "json1k", 32, 6 * d, targets=tg),
            Spec(f"{api}:c32-stream50", api, "stream50", 32, 6 * d, targets=tg),
            Spec(f"{api}:paced-c200", api, "paced", 200, 8 * d, warmup_s=2.5, ramp_s=1.2, targets=tg),
            Spec(f"{api}:stall2s", api, "stall", 20, 6.0, warmup_s=0.0, ramp_s=2.0, targets=tg),
        ]
    return out


# -- running -------------------------------------------------------------------------------------
@dataclass
class Row:
    spec: str
    target: str
    concurrency: int
    stats: Stats = field(default_factory=Stats)
    cpu_s: float = 0.0
    rss: int = 0
    client_cpu_s: float = 0.0

    def client_busy(self) -> float | None:
        return self.client_cpu_s / self.stats.window_s * 100 if self.stats.window_s else None

    def rps(self) -> float:
        return self.stats.completed_in_window / self.stats.window_s if self.stats.window_s else 0.0

    def cpu_per_req_ms(self) -> float | None:
        n = self.stats.completed_in_window
        # Under ~50 requests the 10 ms tick of /proc's CPU times says nothing per request.
        return self.cpu_s / n * 1000 if n >= 50 and self.cpu_s else None

    def p(self, what: str, q: float) -> float | None:
        v = percentile(getattr(self.stats, what), q)
        return None if v is None else v * 1000


async def run_one(spec: Spec, target: Target, client_pids: list[int]) -> tuple[Stats, float, int, float]:
    """Stats, the target's CPU seconds inside the measurement window, its RSS after, and the
    CPU seconds of the load generator and the mock upstream (their core saturating shows here)."""
    native = spec.load == "native"
    sc = spec.scenario(target.name, target.native_port if native else target.port)
    cpu: dict[str, float] = {}
    pids = target.pids()
    client_pids = list(client_pids)

    def on_window(edge: str) -> None:
        if pids:
            cpu[edge] = cpu_seconds(pids)
        cpu["client-" + edge] = cpu_seconds(client_pids)

    if native:
        assert NATIVE_BIN is not None and target.native_port
        stats = await native_load.run_scenario(NATIVE_BIN, sc, on_window, client_pids)
    else:
        stats = await run_scenario(sc, on_window)
    used = cpu.get("end", 0.0) - cpu.get("start", 0.0)
    client = cpu.get("client-end", 0.0) - cpu.get("client-start", 0.0)
    return stats, used, rss_bytes(pids) if pids else 0, client


async def memory_rows(fleet: Fleet, targets: list[str], top: int) -> list[dict[str, Any]]:
    """RSS slope per idle open stream (upstream paused after its first event), and after close."""
    out = []
    for name in targets:
        target = fleet.targets[name]
        pids = target.pids()
        sc = Spec("idle", "anthropic", "stall", 1, 1).scenario(name, target.port)
        sc.headers = [h for h in sc.headers if not h[0].startswith("x-mock")]
        sc.headers += [("x-mock-events", "50"), ("x-mock-pause-after-first-ms", "600000")]
        await asyncio.sleep(1.0)
        before = rss_bytes(pids)
        conns: list[ClientConnection] = []
        errors = await open_idle_streams(sc, 100, conns)
        await asyncio.sleep(1.0)
        at_100 = rss_bytes(pids)
        errors += await open_idle_streams(sc, top, conns)
        await asyncio.sleep(1.0)
        at_top = rss_bytes(pids)
        held = len(conns)
        for c in conns:
            c.abort()
        await asyncio.sleep(3.0)
        after = rss_bytes(pids)
        out.append(
            {
                "target": name,
                "before_mb": before / 2**20,
                "at_100_mb": at_100 / 2**20,
                f"at_{top}_mb": at_top / 2**20,
                "kb_per_stream": (at_top - at_100) / max(1, held - 100) / 1024,
                "after_close_mb": after / 2**20,
                "after_vs_before": after / before if before else None,
                "streams_held": held,
                "errors": errors,
            }
        )
    return out


def fmt(v: float | None, spec: str = "{:.2f}") -> str:
    return "-" if v is None else spec.format(v)


def render(rows: list[Row], direct: dict[str, Row]) -> str:
    head = (
        "| scenario | target | RPS | TTFB p50/p99 ms | first event p50/p99 ms | total p50/p99 ms "
        "| added p50/p99 ms | gap p99 ms | CPU/req ms | RSS MB | errors | client core % |"
    )
    lines = [head, "|" + " --- |" * 12]
    for r in rows:
        d = direct.get(r.spec)
        added = "-"
        if d is not None and r.target != "direct":
            what = "ttfe" if r.spec.endswith("stall2s") else "total"
            a50, a99 = r.p(what, 50), r.p(what, 99)
            b50, b99 = d.p(what, 50), d.p(what, 99)
            if None not in (a50, a99, b50, b99):
                added = f"{a50 - b50:+.2f} / {a99 - b99:+.2f}"  # type: ignore[operator]
        errs = r.stats.error_count
        lines.append(
            f"| {r.spec} | {r.target} | {r.rps():.0f} | {fmt(r.p('ttfb', 50))} / {fmt(r.p('ttfb', 99))} "
            f"| {fmt(r.p('ttfe', 50))} / {fmt(r.p('ttfe', 99))} | {fmt(r.p('total', 50))} / {fmt(r.p('total', 99))} "
            f"| {added} | {fmt(r.p('gaps', 99))} | {fmt(r.cpu_per_req_ms(), '{:.3f}')} "
            f"| {fmt(r.rss / 2**20 if r.rss else None, '{:.0f}')} | {errs}{' ' + dict(r.stats.errors).__repr__() if errs else ''} "
            f"| {fmt(r.client_busy(), '{:.0f}')} |"
        )
    return "\n".join(lines)


def sustained(rows: list[Row], sweep: list[int]) -> dict[str, int]:
    """Per target: the highest swept concurrency held at full rate (RPS within 2 % of direct,
    p99 gap no more than 10 ms above direct's, no errors)."""
    by = {(r.spec, r.target): r for r in rows}
    best: dict[str, int] = {}
    for c in sweep:
        d = by.get((f"paced-c{c}", "direct"))
        if d is None:
            continue
        for (spec, target), r in by.items():
            if spec != f"paced-c{c}" or target == "direct":
                continue
            g, dg = r.p("gaps", 99), d.p("gaps", 99)
            ok = (
                r.rps() >= 0.98 * d.rps()
                and r.stats.error_count == 0
                and g is not None
                and dg is not None
                and g <= dg + 10
            )
            if ok and c > best.get(target, 0):
                best[target] = c
            best.setdefault(target, 0)
    return best


def versions(granian_settings: str | None = None) -> dict[str, str]:
    import platform

    import granian
    import uvloop

    def cmd(*args: str) -> str:
        try:
            p = subprocess.run(args, capture_output=True, text=True, timeout=10)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "n/a"

    from sluicegate.allocator import find_jemalloc
    from sluicegate.cli import resolve_server

    return {
        "python": platform.python_version(),
        # The gateway's Python heap (serve --malloc auto): without the library the RSS after
        # close reads ~1.22x, not ~1.05x (docs/performance.md, "Memory").
        "malloc": "jemalloc" if find_jemalloc() else "system (apt-get install libjemalloc2)",
        # The server the sluicegate target runs on: serve --server (SLUICEGATE_SERVER), or
        # Granian itself with --granian's settings (serve_variant.py).
        "server": "granian (--granian)"
        if granian_settings is not None
        else resolve_server(
            os.environ.get("SLUICEGATE_SERVER", "auto"), os.environ.get("SLUICEGATE_HTTP", "1")
        ),
        "granian": granian.__version__,
        "uvloop": uvloop.__version__,
        "rustc": cmd("rustc", "--version"),
        "nginx": cmd("nginx", "-v"),
        "sluicegate": cmd(
            "git", "-C", str(Path(__file__).resolve().parent.parent), "rev-parse", "--short", "HEAD"
        ),
        "kernel": platform.release(),
    }


async def main_async(args: argparse.Namespace) -> int:
    sweep = (
        [int(x) for x in args.sweep.split(",")]
        if args.sweep
        else ([200, 500] if args.quick else [200, 500, 1000, 2000])
    )
    only = set(args.only.split(",")) if args.only else None
    work = Path(tempfile.mkdtemp(prefix="sluicegate-bench-"))
    ncpu = os.cpu_count() or 1
    gw_cpu, client_cpu = (0, 1) if ncpu >= 2 and not args.no_pin else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    load0 = os.getloadavg()
    fleet = Fleet(
        work,
        gw_cpu,
        client_cpu,
        nginx=not args.no_nginx,
        quiet_gw=args.accounting,
        granian=args.granian,
        compare=args.compare,
        compare_env=dict(kv.split("=", 1) for kv in args.compare_env),
        ledger_url=args.ledger_url,
        native_bin=NATIVE_BIN,
    )
    rows: list[Row] = []
    mem: list[dict[str, Any]] = []
    try:
        client_pids = [os.getpid(), *tree_pids(fleet.mock.pid)]
        if fleet.native_mock is not None:
            client_pids += tree_pids(fleet.native_mock.pid)
        if not only or "memory" in only:
            # First, on fresh processes: "RSS back after close" then compares with a gateway that
            # has served only a short warm-up, not one whose heap the other scenarios grew.
            mem_targets = [t for t in ("sluicegate", "sluicegate-b", "nginx") if t in fleet.targets]
            for t in mem_targets:
                await run_one(
                    Spec("warm-up", "anthropic", "stream50", 32, 1.0), fleet.targets[t], client_pids
                )
            mem = await memory_rows(fleet, mem_targets, args.idle_top)
        all_specs = specs(args.quick, sweep, "native" if NATIVE_BIN is not None else "python")
        if args.accounting:
            all_specs.append(
                Spec(
                    "acct-on:c32-json1k",
                    "anthropic",
                    "json1k",
                    32,
                    6.0,
                    targets=("direct", *ACCOUNTING),
                )
            )
            all_specs.append(
                Spec(
                    "acct-on:c32-stream50",
                    "anthropic",
                    "stream50",
                    32,
                    6.0,
                    targets=("direct", *ACCOUNTING),
                )
            )
            # Concurrency 1: which switch, if any, sets the latency tail.
            all_specs.append(
                Spec(
                    "acct-on:c1-stream50",
                    "anthropic",
                    "stream50",
                    1,
                    6.0,
                    targets=("direct", *ACCOUNTING),
                )
            )
        for spec in all_specs:
            if only and not any(fnmatch.fnmatchcase(spec.name, o) for o in only):
                continue
            targets = [t for t in spec.targets if t in fleet.targets]
            if "sluicegate-b" in fleet.targets and "sluicegate" in targets:
                targets.insert(targets.index("sluicegate") + 1, "sluicegate-b")
            merged = {t: Row(spec.name, t, spec.concurrency) for t in targets}
            for i in range(args.rounds):
                # Interleaved: every target once per round, direct first, the others in an order
                # that turns each round, so no gateway always runs right after direct's load
                # (the accounting rows' first gateway read ~10 % over its neighbours, round
                # after round, while instructions said +9 %).
                rest = [t for t in targets if t != "direct"]
                k = i % len(rest) if rest else 0
                order = [t for t in targets if t == "direct"] + rest[k:] + rest[:k]
                for t in order:
                    stats, cpu, rss, client = await run_one(spec, fleet.targets[t], client_pids)
                    row = merged[t]
                    row.stats.merge(stats)
                    row.cpu_s += cpu
                    row.client_cpu_s += client
                    row.rss = max(row.rss, rss)
                    await asyncio.sleep(0.5)
            rows.extend(merged.values())
            print(
                render(list(merged.values()), {r.spec: r for r in merged.values() if r.target == "direct"}),
                file=sys.stderr,
                flush=True,
            )
    finally:
        fleet.close()
    load1 = os.getloadavg()
    direct = {r.spec: r for r in rows if r.target == "direct"}
    print()
    print(
        f"sluicegate benchmark, {time.strftime('%Y-%m-%d %H:%M')}, load average before/after: "
        f"{load0[0]:.2f} / {load1[0]:.2f}"
    )
    print(
        " ".join(f"{k}={v}" for k, v in versions(args.granian).items()),
        f"paced-load={args.load if NATIVE_BIN else 'python'}",
    )
    print()
    print(render(rows, direct))
    if any(r.spec.startswith("paced-c") for r in rows):
        best = sustained(rows, sweep)
        print()
        print(
            "sustained paced streams (highest swept concurrency at full rate): "
            + ", ".join(f"{t}={c}" for t, c in best.items())
        )
    if mem:
        print()
        print(
            "| idle streams | RSS before MB | at 100 MB | at top MB | KB per stream (slope) | after close MB | after/before |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for m in mem:
            print(
                f"| {m['target']} ({m['streams_held']} held, {m['errors']} errors) | {m['before_mb']:.1f} "
                f"| {m['at_100_mb']:.1f} | {m[f'at_{args.idle_top}_mb']:.1f} | {m['kb_per_stream']:.1f} "
                f"| {m['after_close_mb']:.1f} | {fmt(m['after_vs_before'], '{:.3f}')} |"
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "load": [load0, load1],
                    "versions": versions(args.granian),
                    "rows": [
                        {
                            "spec": r.spec,
                            "target": r.target,
                            "concurrency": r.concurrency,
                            "rps": r.rps(),
                            "ttfb_p50": r.p("ttfb", 50),
                            "ttfb_p99": r.p("ttfb", 99),
                            "ttfe_p50": r.p("ttfe", 50),
                            "ttfe_p99": r.p("ttfe", 99),
                            "ttfe_max": r.p("ttfe", 100),
                            "total_p50": r.p("total", 50),
                            "total_p99": r.p("total", 99),
                            "gap_p99": r.p("gaps", 99),
                            "cpu_per_req_ms": r.cpu_per_req_ms(),
                            "rss": r.rss,
                            "client_core_pct": r.client_busy(),
                            "ok": r.stats.ok,
                            "errors": dict(r.stats.errors),
                        }
                        for r in rows
                    ],
                    "memory": mem,
                },
                indent=1,
            )
        )
    print(f"\nlogs and configs: {work}", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs and a 200/500 sweep")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds per scenario")
    parser.add_argument(
        "--only", help="comma-separated scenario names or globs, e.g. 'c32-*,chat:*' (and/or 'memory')"
    )
    parser.add_argument("--sweep", help="paced-stream concurrencies, e.g. 200,500,1000,2000")
    parser.add_argument("--idle-top", type=int, default=2000, help="open idle streams for the memory slope")
    parser.add_argument(
        "--accounting",
        action="store_true",
        help="also run gateways with the access log, metrics, ledger, and all three off, for comparison",
    )
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument(
        "--load",
        choices=["native", "python"],
        default="native",
        help="the paced sweep's load generator and mock: native (loadtests/native, built with "
        "cargo; the default) or python (loadgen.py and `sluicegate mock-upstream`)",
    )
    parser.add_argument(
        "--compare",
        metavar="TREE",
        help="also run the gateway from another checkout's python/ (A/B, interleaved)",
    )
    parser.add_argument(
        "--granian", help="serve the gateway with these Granian settings (JSON, see serve_variant.py)"
    )
    parser.add_argument(
        "--compare-env",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="environment for the --compare gateway only (A/B of a setting: --compare . --compare-env K=V)",
    )
    parser.add_argument(
        "--mock-tick-ms",
        type=float,
        default=0.0,
        help="with --load native: round the paced mock's write times up to multiples of this "
        "(1 bursts events across streams as uvloop's timers do; default 0, each at its own time)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--ledger-url",
        help="every gateway's ledger store (e.g. postgresql://...; default: a SQLite file of its own)",
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--sched-batch",
        choices=["all", "b"],
        help="run the gateways (or only the --compare one: b) under SCHED_BATCH (chrt --batch 0)",
    )
    args = parser.parse_args()
    global SCHED_BATCH, NATIVE_BIN, MOCK_TICK_MS
    SCHED_BATCH = args.sched_batch
    MOCK_TICK_MS = args.mock_tick_ms
    if args.load == "native":
        NATIVE_BIN = native_load.build()
        if NATIVE_BIN is None:
            print(
                "bench: no cargo to build loadtests/native: the paced sweep uses --load python",
                file=sys.stderr,
            )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    try:
        import uvloop

        return uvloop.run(main_async(args))
    except ImportError:
        return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
