"""Shared fixtures: a real sluicegate server (the native front by default, or Granian with
SLUICEGATE_SERVER=granian; on a loopback port) per test or module."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

# Real Redis and PostgreSQL servers (started on first use) for every test module.
pytest_plugins = ("_services",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`sluicegate serve` in a subprocess, with its stderr (JSON log lines) captured to a file."""

    def __init__(
        self, config: dict[str, Any] | str, workers: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sluicegate-test-"))
        self.config_path = self.dir / "sluicegate.yaml"
        self.write_config(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.dir / "gateway.log"
        self.workers = workers
        self.env = {**os.environ, "SLUICEGATE_STATE_DIR": str(self.dir / "state"), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sluicegate.cli",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway did not become ready:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        import orjson

        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(orjson.loads(line))
        return out

    def access_records(self) -> list[dict[str, Any]]:
        # Access lines reach the log within server.access_log_flush_ms (100 ms by default).
        time.sleep(0.15)
        return [r for r in self.log_records() if r.get("event") == "request"]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def gateway_factory() -> Iterator[Any]:
    started: list[GatewayProcess] = []

    def make(config: dict[str, Any] | str, **kw: Any) -> GatewayProcess:
        gw = GatewayProcess(config, **kw)
        started.append(gw)
        return gw.start()

    yield make
    for gw in started:
        gw.stop()


def anthropic_config(base_url: str, **extra: Any) -> dict[str, Any]:
    """A config with one Anthropic-format provider at `base_url` and two keys."""
    cfg: dict[str, Any] = {
        "providers": {"up": {"type": "anthropic", "base_url": base_url, "api_key": "sk-upstream-SECRET-123"}},
        "models": {
            "big-coder": {
                "display_name": "Big coder",
                "aliases": ["sonnet", "claude-sonnet-4-6", "claude-haiku-*"],
                "targets": [{"provider": "up", "model": "claude-sonnet-4-6"}],
            },
            "other": {"targets": [{"provider": "up", "model": "claude-opus-4-7"}]},
        },
        "keys": [
            {
                "name": "alice",
                "token": "sg-alice-token",
                "user": "alice",
                "project": "payments",
                "models": ["big-coder"],
            },
            {"name": "bob", "token": "sg-bob-token", "user": "bob", "models": ["*"]},
        ],
    }
    cfg.update(extra)
    return cfg
