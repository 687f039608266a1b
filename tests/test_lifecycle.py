"""Running it like production: SIGTERM drains and flushes, SIGHUP under load fails nothing,
the container entrypoint serves outside a container, replicas share Redis and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, GatewayProcess, anthropic_config, free_port
from fakes import FakeUpstream
from fakes import anthropic as fa

MSG = {"model": "big-coder", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}


def mock_config(interval_ms: float = 0, events: int = 5, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "mock": {
                "type": "mock",
                "mock": {"text": "abcdefghij", "events": events, "interval_ms": interval_ms},
            }
        },
        "models": {"big-coder": {"targets": [{"provider": "mock", "price": {"input": 1, "output": 2}}]}},
        "keys": [{"name": "k", "token": "sg-k", "models": ["*"]}],
        **extra,
    }


def ledger_count(gw: GatewayProcess) -> int:
    conn = sqlite3.connect(Path(gw.env["SLUICEGATE_STATE_DIR"]) / "usage.db")
    try:
        return int(conn.execute("SELECT count(*) FROM usage_records").fetchone()[0])
    finally:
        conn.close()


def stream_in_thread(
    gw: GatewayProcess, out: dict[str, Any], body: dict[str, Any] | None = None, key: str = "sg-k"
) -> threading.Thread:
    """POST a streaming request in a thread; `out["started"]` is set at the first chunk, and
    `out["text"]` holds the whole body (or `out["error"]` the failure) when it ends."""
    started = out["started"] = threading.Event()

    def run() -> None:
        chunks: list[bytes] = []
        try:
            with httpx.stream(
                "POST",
                gw.url + "/v1/messages",
                json=body or {**MSG, "stream": True},
                headers={"x-api-key": key},
                timeout=30,
            ) as r:
                out["status"] = r.status_code
                for chunk in r.iter_raw():
                    chunks.append(chunk)
                    started.set()
        except httpx.HTTPError as exc:
            out["error"] = repr(exc)
        finally:
            out["text"] = b"".join(chunks).decode()
            started.set()

    t = threading.Thread(target=run)
    t.start()
    return t


def outcome(client: httpx.Client, method: str, url: str, **kw: Any) -> int | str:
    """The status code, or how the connection failed: "refused" (nothing listens), "closed"
    (an accepted connection ended without an answer)."""
    try:
        return client.request(method, url, **kw).status_code
    except httpx.ConnectError:
        return "refused"
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        return "closed"


def test_sigterm_lets_open_streams_finish_and_flushes_ledger() -> None:
    gw = GatewayProcess(mock_config(interval_ms=150, events=10)).start()
    results = [dict[str, Any]() for _ in range(3)]
    threads = [stream_in_thread(gw, out) for out in results]
    time.sleep(0.5)
    t0 = time.monotonic()
    assert gw.stop(timeout=30) == 0
    assert time.monotonic() - t0 >= 0.8  # it waited for the streams
    for t in threads:
        t.join(10)
    for out in results:
        assert out["text"].count("event: content_block_delta") == 10
        assert "event: message_stop" in out["text"]
    assert ledger_count(gw) == 3


def one_connection() -> httpx.Client:
    """A client whose every request opens a new connection."""
    return httpx.Client(timeout=2, headers={"connection": "close"})


def test_sigterm_turns_readiness_off_and_stops_accepting_while_a_held_stream_finishes() -> None:
    gw = GatewayProcess(mock_config(interval_ms=150, events=20)).start()  # a 3 s stream
    kept = httpx.Client(timeout=2)
    try:
        assert outcome(kept, "GET", gw.url + "/readyz") == 200  # the kept-alive connection
        held: dict[str, Any] = {}
        t = stream_in_thread(gw, held)
        assert held["started"].wait(10) and held.get("status") == 200
        gw.signal(signal.SIGTERM)

        # Until the worker has the signal /readyz may still say 200; from the first answer
        # that is not 200 on, nothing may be accepted as ready or served anew.
        deadline = time.monotonic() + 2
        with one_connection() as probe:
            while outcome(probe, "GET", gw.url + "/readyz") == 200:
                assert time.monotonic() < deadline, "readiness still 200 two seconds after SIGTERM"
                time.sleep(0.02)
        seen = []
        for _ in range(5):
            with one_connection() as new:
                ready = outcome(new, "GET", gw.url + "/readyz")
            with one_connection() as new:
                message = outcome(
                    new, "POST", gw.url + "/v1/messages", json=MSG, headers={"x-api-key": "sg-k"}
                )
            again = outcome(kept, "GET", gw.url + "/readyz")
            seen.append((ready, message, again))
            time.sleep(0.05)
        assert t.is_alive(), "the held stream ended before the checks: they proved nothing"
        for ready, message, again in seen:
            assert ready in (503, "refused"), seen  # not ready, or not accepting at all
            assert message != 200, seen  # a new request is never served
            assert again in (503, "refused", "closed"), seen  # the kept-alive connection too
        t.join(15)
        assert not t.is_alive()
        assert "error" not in held, held.get("error")
        assert held["text"].count("event: content_block_delta") == 20
        assert "event: message_stop" in held["text"]
        assert gw.proc is not None and gw.proc.wait(20) == 0
        assert ledger_count(gw) == 1
    finally:
        kept.close()
        gw.stop()


def test_serve_drains_for_30_seconds_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluicegate.cli import build_parser

    # The Deployment's terminationGracePeriodSeconds and compose's stop_grace_period count on it.
    monkeypatch.delenv("SLUICEGATE_DRAIN_S", raising=False)
    assert build_parser().parse_args(["serve"]).drain_s == 30


def test_drain_deadline_ends_streams_then_exits_cleanly() -> None:
    with FakeUpstream() as up:
        # 40 events half a second apart: far longer than the one-second drain deadline.
        up.script(lambda req: fa.sse_response(fa.Text("x" * 40, pieces=40), pause=0.5))
        gw = GatewayProcess(anthropic_config(up.base_url), env={"SLUICEGATE_DRAIN_S": "1"}).start()
        out: dict[str, Any] = {}
        body = {**MSG, "stream": True, "messages": [{"role": "user", "content": "long"}]}
        t = stream_in_thread(gw, out, body=body, key="sg-alice-token")
        assert out["started"].wait(10) and out.get("status") == 200
        t0 = time.monotonic()
        assert gw.stop(timeout=30) == 0
        assert time.monotonic() - t0 < 8
        t.join(10)
    assert "event: message_stop" not in out.get("text", "")
    records = gw.log_records()
    deadline = [r for r in records if r.get("message") == "drain deadline reached; ending open streams"]
    assert deadline and deadline[0]["streams"] == 1, gw.logs()
    assert ledger_count(gw) == 1


STREAM_TEXT = "abcdefghij"


def reload_config(up: FakeUpstream, alias: str | None = None) -> dict[str, Any]:
    """The mock answers short requests; `streamer` relays paced streams from a real upstream."""
    cfg = mock_config()
    cfg["providers"]["up"] = {"type": "anthropic", "base_url": up.base_url, "api_key": "sk-up"}
    cfg["models"]["streamer"] = {"targets": [{"provider": "up", "model": "claude-sonnet-4-6"}]}
    if alias:
        cfg["models"]["big-coder"]["aliases"] = [alias]
        cfg["models"]["streamer"]["aliases"] = [f"{alias}-stream"]
    return cfg


def test_sighup_under_steady_load_fails_no_request(gateway_factory: Any) -> None:
    with FakeUpstream() as up:
        # Ten events 60 ms apart: every reload lands while streams are open.
        up.script(lambda req: fa.sse_response(fa.Text(STREAM_TEXT, pieces=10), pause=0.06))
        gw: GatewayProcess = gateway_factory(reload_config(up), workers=2)
        failures: list[str] = []
        done = threading.Event()
        counts = [0]
        streams: list[tuple[float, float]] = []

        def load() -> None:
            with httpx.Client(timeout=10) as c:
                while not done.is_set():
                    try:
                        r = c.post(gw.url + "/v1/messages", json=MSG, headers={"x-api-key": "sg-k"})
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text[:100]}")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                    counts[0] += 1

        def stream() -> None:
            body = {**MSG, "model": "streamer", "stream": True}
            with httpx.Client(timeout=10) as c:
                while not done.is_set():
                    t0 = time.monotonic()
                    try:
                        with c.stream(
                            "POST", gw.url + "/v1/messages", json=body, headers={"x-api-key": "sg-k"}
                        ) as r:
                            text = r.read().decode()
                        deltas = text.count("event: content_block_delta")
                        if r.status_code != 200 or deltas != 10 or "event: message_stop" not in text:
                            failures.append(f"stream {r.status_code}, {deltas} deltas: {text[-200:]}")
                        else:
                            streams.append((t0, time.monotonic()))
                    except httpx.HTTPError as exc:
                        failures.append(f"stream {exc!r}")

        threads = [threading.Thread(target=load) for _ in range(3)]
        threads += [threading.Thread(target=stream) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        reloads = []
        for i in range(3):
            gw.write_config(reload_config(up, f"alias-{i}"))
            reloads.append(time.monotonic())
            gw.signal(signal.SIGHUP)
            time.sleep(0.7)
        done.set()
        for t in threads:
            t.join(15)
    assert failures == []
    assert counts[0] > 50
    # Each reload happened while at least one complete stream was under way.
    for at in reloads:
        assert any(start < at < end for start, end in streams), (at, streams)
    assert gw.logs().count("snapshot reloaded") == 6  # 3 reloads x 2 workers
    r = httpx.post(gw.url + "/v1/messages", json={**MSG, "model": "alias-2"}, headers={"x-api-key": "sg-k"})
    assert r.status_code == 200


def compile_snapshot(config: dict[str, Any], out: Path, work: Path) -> None:
    """`sluicegate compile-config CONFIG -o OUT`, replacing OUT atomically as a deploy tool would."""
    import yaml

    source = work / f"source-{time.monotonic_ns()}.yaml"
    source.write_text(yaml.safe_dump(config))
    tmp = work / "snapshot.json.new"
    res = subprocess.run(
        [sys.executable, "-m", "sluicegate.cli", "compile-config", str(source), "-o", str(tmp)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    os.replace(tmp, out)


@pytest.mark.parametrize("source", ["config", "snapshot"])
def test_entrypoint_serves_outside_a_container(tmp_path: Path, source: str) -> None:
    import yaml

    # The image's layout: config or snapshot in a read-only /etc/sluicegate/.
    etc = tmp_path / "etc-sluicegate"
    etc.mkdir()
    cfg = etc / "sluicegate.yaml"
    port = free_port()
    env = {
        **os.environ,
        "SLUICEGATE_BIN": f"{sys.executable} -m sluicegate.cli",
        # The image's default config path; with a snapshot nothing is mounted there.
        "SLUICEGATE_CONFIG": str(cfg),
        "SLUICEGATE_PORT": str(port),
        "SLUICEGATE_HOST": "127.0.0.1",
        "SLUICEGATE_STATE_DIR": str(tmp_path / "state"),
    }
    if source == "config":
        cfg.write_text(yaml.safe_dump(mock_config()))
    else:
        snapshot = etc / "snapshot.json"
        compile_snapshot(mock_config(), snapshot, tmp_path)
        env["SLUICEGATE_SNAPSHOT"] = str(snapshot)
    for path in etc.iterdir():
        path.chmod(0o444)
    etc.chmod(0o555)
    proc = subprocess.Popen(
        ["bash", str(ROOT / "deploy" / "docker-entrypoint.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            time.sleep(0.1)
        assert ready, proc.stdout.read().decode() if proc.stdout and proc.poll() is not None else "not ready"
        r = httpx.post(url + "/v1/messages", json=MSG, headers={"x-api-key": "sg-k"})
        assert r.status_code == 200
        if source == "snapshot":
            # A new snapshot put in place (the mount is read-only to the gateway, not to the
            # operator), then SIGHUP: the gateway serves it.
            etc.chmod(0o755)
            newer = mock_config()
            newer["models"]["big-coder"]["aliases"] = ["from-new-snapshot"]
            compile_snapshot(newer, etc / "snapshot.json", tmp_path)
            etc.chmod(0o555)
            proc.send_signal(signal.SIGHUP)
            body = {**MSG, "model": "from-new-snapshot"}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                r = httpx.post(url + "/v1/messages", json=body, headers={"x-api-key": "sg-k"})
                if r.status_code == 200:
                    break
                time.sleep(0.1)
            assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        etc.chmod(0o755)


def test_bad_config_never_serves(tmp_path: Path) -> None:
    cfg = tmp_path / "sluicegate.yaml"
    cfg.write_text("providers: {m: {type: mock}}\nmodels: {g: {targets: [{provider: nope}]}}\n")
    res = subprocess.run(
        [sys.executable, "-m", "sluicegate.cli", "serve", "--config", str(cfg), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1
    assert "models.g.targets[0].provider: unknown provider 'nope'" in res.stderr


def test_two_replicas_share_redis_and_postgres(
    gateway_factory: Any, redis_url: str, postgres_server: Any
) -> None:
    db = postgres_server.new_database()
    cfg = mock_config(
        ledger={"url": db, "flush_interval_s": 0.2},
        keystore={"url": db, "refresh_s": 0.5},
        limits={"backend": redis_url, "key_prefix": f"rep{time.time_ns()}"},
    )
    cfg["keys"][0]["rpm"] = 6
    a: GatewayProcess = gateway_factory(cfg)
    b: GatewayProcess = gateway_factory(cfg)
    statuses = [
        httpx.post(gw.url + "/v1/messages", json=MSG, headers={"x-api-key": "sg-k"}).status_code
        for _ in range(5)
        for gw in (a, b)
    ]
    assert statuses.count(200) == 6 and statuses.count(429) == 4, statuses
    # A key created through one replica's store works on the other.
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluicegate.cli",
            "keys",
            "create",
            "--user",
            "eve",
            "--config",
            str(a.config_path),
        ],
        capture_output=True,
        text=True,
        env=a.env,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        status = httpx.post(b.url + "/v1/messages", json=MSG, headers={"x-api-key": token}).status_code
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200
    import psycopg

    deadline = time.monotonic() + 10
    count = 0
    while time.monotonic() < deadline:
        with psycopg.connect(db) as conn:
            count = conn.execute("SELECT count(*) FROM usage_records").fetchone()[0]  # type: ignore[index]
        if count >= 11:
            break
        time.sleep(0.2)
    assert count >= 11


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes(gateway_factory: Any, path: str) -> None:
    gw: GatewayProcess = gateway_factory(mock_config())
    assert httpx.get(gw.url + path).status_code == 200


def wait_for_status(gw: GatewayProcess, body: dict[str, Any], want: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        status = httpx.post(gw.url + "/v1/messages", json=body, headers={"x-api-key": "sg-k"}).status_code
        if status == want:
            break
        time.sleep(0.1)
    return status


def test_config_file_watch_reloads(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(mock_config(), env={"SLUICEGATE_WATCH_S": "0.2"})
    cfg = mock_config()
    cfg["models"]["big-coder"]["aliases"] = ["watched-alias"]
    time.sleep(0.05)
    gw.write_config(cfg)
    assert wait_for_status(gw, {**MSG, "model": "watched-alias"}, 200) == 200


class ConfigMapVolume:
    """A directory laid out as the kubelet writes a ConfigMap volume: each version in a hidden
    `..<timestamp>` directory, `..data` a symlink to the current one, and each key a symlink
    `<key> -> ..data/<key>`. An update writes a new version, swaps `..data` with a rename (the
    atomic step), then deletes the old version."""

    def __init__(self, root: Path, key: str, text: str) -> None:
        self.root, self.key, self.version = root, key, 0
        root.mkdir()
        self._write(text)
        (root / key).symlink_to(Path("..data") / key)

    def _write(self, text: str) -> Path:
        self.version += 1
        version = self.root / f"..2026_12_01_00_00_00.{self.version:09d}"
        version.mkdir()
        (version / self.key).write_text(text)
        return version

    def update(self, text: str) -> None:
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        new = self._write(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(new.name)
        os.replace(tmp, self.root / "..data")
        if old is not None:
            shutil.rmtree(old)

    @property
    def path(self) -> Path:
        return self.root / self.key


@pytest.mark.parametrize("trigger", ["watch", "sighup"])
def test_reload_follows_a_configmap_update(tmp_path: Path, trigger: str) -> None:
    import yaml

    volume = ConfigMapVolume(tmp_path / "etc-sluicegate", "sluicegate.yaml", "")
    volume.update(yaml.safe_dump(mock_config()))
    gw = GatewayProcess(mock_config(), env={"SLUICEGATE_WATCH_S": "0.2" if trigger == "watch" else "0"})
    gw.config_path = volume.path  # serve --config <volume>/sluicegate.yaml, as in the pod
    gw.start()
    try:
        # Twice: the version directory the gateway started on is gone after the first update.
        for alias in ("first-update", "second-update"):
            cfg = mock_config()
            cfg["models"]["big-coder"]["aliases"] = [alias]
            volume.update(yaml.safe_dump(cfg))
            if trigger == "sighup":
                gw.signal(signal.SIGHUP)
            assert wait_for_status(gw, {**MSG, "model": alias}, 200) == 200, gw.logs()
        assert "reload failed" not in gw.logs()
    finally:
        gw.stop()
