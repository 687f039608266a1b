"""Run the gateway under Granian: one main process, N worker processes, each with its own loop.

Granian's own SIGHUP behaviour respawns workers; sluicegate instead forwards SIGHUP to the
workers, which recompile and swap their snapshot in place, so streams in flight keep going.
"""

from __future__ import annotations

import contextlib
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
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)


def _install_drain_hook(drain_s: float) -> None:
    """Let each worker see SIGTERM/SIGINT before Granian does, to start its drain clock.

    Granian registers its own loop signal handlers in each worker; we wrap the function that
    does it (workers are forked, so the patch is inherited) and chain to Granian's handler.
    """
    import granian._signals as gsignals

    original = gsignals.set_loop_signals

    def set_loop_signals(loop: Any) -> Any:
        event = original(loop)

        def on_stop(signum: int, frame: Any = None) -> None:
            from .app import app

            app.begin_drain(loop, drain_s)
            event.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_stop, sig, None)
            except (NotImplementedError, RuntimeError):
                signal.signal(sig, on_stop)
        return event

    gsignals.set_loop_signals = set_loop_signals


def serve(opts: ServeOptions) -> None:
    _install_drain_hook(opts.drain_s)
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
        # The workers end their own streams at the drain deadline; this is the last resort.
        workers_kill_timeout=int(opts.drain_s) + 10,
    )
    server.serve()
