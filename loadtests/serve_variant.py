"""Serve the gateway with Granian settings other than `sluicegate serve`'s, for experiments.

    python loadtests/serve_variant.py CONFIG PORT '{"task_impl": "rust", "runtime_mode": "st"}'

`bench.py --granian '{...}'` uses it. Keys are `granian.server.Server` arguments; enum values
are given by their value ("rust", "st", "uvloop", "1"); `http1_settings` takes a dict.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from granian.constants import HTTPModes, Interfaces, Loops, RuntimeModes, TaskImpl
from granian.http import HTTP1Settings
from granian.server import Server
from sluicegate import allocator

_ENUMS = {"loop": Loops, "runtime_mode": RuntimeModes, "task_impl": TaskImpl, "http": HTTPModes}


def main() -> None:
    # The allocator `sluicegate serve --malloc auto` picks, so variants compare like with like.
    env = allocator.reexec_env(os.environ.get("SLUICEGATE_MALLOC", "auto"), dict(os.environ))
    if env is not None:
        allocator.reexec(sys.argv[1:], env, script=str(Path(__file__).resolve()))
    config, port, overrides = (
        sys.argv[1],
        int(sys.argv[2]),
        json.loads(sys.argv[3] if len(sys.argv) > 3 else "{}"),
    )
    os.environ["SLUICEGATE_CONFIG"] = str(Path(config).resolve())
    os.environ.pop("SLUICEGATE_SNAPSHOT", None)
    kwargs: dict[str, Any] = {
        "address": "127.0.0.1",
        "port": port,
        "interface": Interfaces.RSGI,
        "workers": 1,
        "loop": Loops.uvloop,
        "http": HTTPModes.http1,
        "runtime_threads": 1,
        "log_access": False,
        "backlog": 4096,
    }
    for key, value in overrides.items():
        if key in _ENUMS:
            value = _ENUMS[key](value)
        elif key == "http1_settings":
            value = HTTP1Settings(**value)
        kwargs[key] = value
    Server("sluicegate.app:app", **kwargs).serve()


if __name__ == "__main__":
    main()
