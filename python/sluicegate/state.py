"""The one mutable thing in a worker: the reference to the current snapshot.

Reload compiles a new snapshot and swaps this reference; requests already running hold the
snapshot they started with until they end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import log
from .compile import compile_file, load_snapshot
from .config import ConfigError
from .snapshot import Snapshot, SnapshotError


def load_from_env() -> Snapshot:
    """Build the snapshot named by SLUICEGATE_SNAPSHOT or SLUICEGATE_CONFIG."""
    snap_path = os.environ.get("SLUICEGATE_SNAPSHOT")
    config_path = os.environ.get("SLUICEGATE_CONFIG")
    if snap_path:
        compiled = load_snapshot(Path(snap_path).read_bytes())
    elif config_path:
        compiled = compile_file(config_path)
    else:
        raise SnapshotError("set SLUICEGATE_CONFIG or SLUICEGATE_SNAPSHOT (or use `sluicegate serve`)")
    return Snapshot(compiled)


class GatewayState:
    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.draining = False
        self.drain_expired = False
        self.hooks: list[Any] = []

    def load(self) -> Snapshot:
        snap = load_from_env()
        self.snapshot = snap
        log.info(
            "snapshot loaded", hash=snap.hash[:16], pid=os.getpid(), skipped_providers=snap.skipped_providers
        )
        return snap

    def watch(self, loop: Any, interval_s: float) -> None:
        """Reload when the config file changes (a Kubernetes ConfigMap update swaps a symlink,
        so the resolved path and its mtime are compared, not just the mtime)."""
        path = os.environ.get("SLUICEGATE_CONFIG") or os.environ.get("SLUICEGATE_SNAPSHOT")
        if not path:
            return

        def stamp() -> tuple[str, int] | None:
            try:
                real = os.path.realpath(path)
                return real, os.stat(real).st_mtime_ns
            except OSError:
                return None

        last = stamp()

        def check() -> None:
            nonlocal last
            now = stamp()
            if now is not None and now != last:
                last = now
                log.info("config file changed", path=path)
                self.reload()
            loop.call_later(interval_s, check)

        loop.call_later(interval_s, check)

    def reload(self) -> bool:
        """Recompile and swap; on failure keep the running snapshot and log why."""
        try:
            snap = load_from_env()
        except ConfigError as exc:
            log.error(
                "reload failed; keeping the running config", pid=os.getpid(), errors=exc.render().splitlines()
            )
            return False
        except (SnapshotError, ValueError, OSError) as exc:
            log.error("reload failed; keeping the running config", pid=os.getpid(), errors=[str(exc)])
            return False
        old = self.snapshot
        self.snapshot = snap
        log.info(
            "snapshot reloaded",
            pid=os.getpid(),
            hash=snap.hash[:16],
            previous=old.hash[:16] if old else None,
            skipped_providers=snap.skipped_providers,
        )
        for hook in self.hooks:
            hook(snap)
        return True
