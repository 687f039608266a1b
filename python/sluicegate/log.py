"""Structured JSON log lines, one write per line, never carrying secrets or prompt text."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any

import orjson

_FD = 2


def emit(event: str, **fields: Any) -> None:
    record = {"ts": round(time.time(), 3), "event": event, **fields}
    line = orjson.dumps(record, default=str) + b"\n"
    with contextlib.suppress(OSError):
        os.write(_FD, line)


def info(message: str, **fields: Any) -> None:
    emit("log", level="info", message=message, **fields)


def warning(message: str, **fields: Any) -> None:
    emit("log", level="warning", message=message, **fields)


def error(message: str, **fields: Any) -> None:
    emit("log", level="error", message=message, **fields)


def write_access(line: bytes) -> None:
    try:
        os.write(_FD, line)
    except OSError:
        sys.stderr.write(line.decode("utf-8", "replace"))
