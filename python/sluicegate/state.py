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


def through_volume(path: str) -> str:
    """The path a Kubernetes ConfigMap or Secret volume shows for a file `path` resolves to.

    The kubelet writes each version of such a volume to a hidden `<dir>/..<timestamp>/`
    directory, points the `<dir>/..data` symlink at it, and shows each file as the symlink
    `<dir>/<name> -> ..data/<name>`. An update writes a new version, swaps `..data`, then
    deletes the old version. `serve` hands the workers fully resolved paths, which name one
    version and vanish with it; reading `<dir>/<name>` instead always reads the current one.
    Any other path is returned as it is.
    """
    file = Path(path)
    version, volume = file.parent, file.parent.parent
    shown = volume / file.name
    if version.name.startswith("..") and (volume / "..data").is_symlink() and shown.is_symlink():
        return str(shown)
    return path


def source_paths() -> tuple[str | None, str | None]:
    """(snapshot, config) from the environment, as paths that follow volume updates."""
    snap_path = os.environ.get("SLUICEGATE_SNAPSHOT")
    config_path = os.environ.get("SLUICEGATE_CONFIG")
    return (
        through_volume(snap_path) if snap_path else None,
        through_volume(config_path) if config_path else None,
    )


def load_from_env() -> Snapshot:
    """Build the snapshot named by SLUICEGATE_SNAPSHOT or SLUICEGATE_CONFIG."""
    snap_path, config_path = source_paths()
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
        snap_path, config_path = source_paths()
        path = snap_path or config_path  # the one load_from_env reads
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
