"""Run the gateway under Granian: one main process, N worker processes, each with its own loop.

Granian's own SIGHUP behaviour respawns workers; sluicegate instead forwards SIGHUP to the
workers, which recompile and swap their snapshot in place, so streams in flight keep going.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

from granian.constants import HTTPModes, Interfaces, Loops
from granian.server import Server

from . import log


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    drain_s: float
    http: str = "1"
    runtime_threads: int = 1


class _GatewayServer(Server):  # type: ignore[misc,valid-type]
    def _reload(self, spawn_target: Any, target_loader: Any) -> None:
        self.reload_signal = False
        self.main_loop_interrupt.clear()
        pids = [w._id() for w in self.wrks]
        log.info("SIGHUP: asking workers to reload the config", workers=pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass


def serve(opts: ServeOptions) -> None:
    server = _GatewayServer(
        "sluicegate.app:app",
        address=opts.host,
        port=opts.port,
        interface=Interfaces.RSGI,
        workers=opts.workers,
        loop=Loops.uvloop,
        http=HTTPModes(opts.http),
        runtime_threads=opts.runtime_threads,
        log_access=False,
        backlog=4096,
        workers_kill_timeout=max(1, int(opts.drain_s)) if opts.drain_s else None,
    )
    server.serve()
