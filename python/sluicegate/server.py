"""Run the gateway under the native front (front/) or Granian: one main process, N worker processes,
each with its own loop.

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
    sched: str = "batch"
    # "native": sluicegate's own HTTP/1.1 front on the worker's loop (front/), or "granian".
    server: str = "native"


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


def _set_sched(policy: str) -> None:
    """SCHED_BATCH for this process, inherited by the workers and all their threads.

    The worker's event loop and Granian's I/O thread share a core. Under the default policy
    each queued response wakes the I/O thread, which then preempts the loop: a context switch
    per response or per event. A batch thread that is woken waits until the running one blocks,
    so the loop finishes its callbacks and the I/O thread writes everything queued at once
    (measured: about a third less CPU per short request; docs/performance.md).
    """
    if policy != "batch":
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run as we are
        log.info("SCHED_BATCH not available; keeping the default policy", reason=str(exc))


def serve(opts: ServeOptions) -> None:
    _set_sched(opts.sched)
    if opts.server == "native":
        from .front.server import serve_front

        serve_front(opts.host, opts.port, opts.workers, opts.drain_s)
        return
    _install_drain_hook(opts.drain_s)
    log.info("serving (granian)", address=f"{opts.host}:{opts.port}", workers=opts.workers, http=opts.http)
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
