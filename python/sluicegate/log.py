"""Structured JSON log lines, never carrying secrets or prompt text.

Event lines are written at once. Access lines (one per request) are buffered for up to the
snapshot's `access_log_flush_ms` and written several per syscall: a write per request cost more
than the rest of the access log. Each write is at most PIPE_BUF bytes and ends on a line, so lines
from several workers sharing one pipe never interleave mid-line. An event line first writes out
the access lines before it, so the order on stderr stays the order things happened.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import select
import sys
import threading
import time
from typing import Any

import orjson

_FD = 2
_CHUNK = select.PIPE_BUF  # a pipe write up to this size is atomic (POSIX)
_BUFFER_MAX = 64 * 1024  # buffered access lines written at once past this many bytes

_lock = threading.Lock()
_pending: list[bytes] = []
_pending_bytes = 0
_timer: asyncio.TimerHandle | None = None
_timer_loop: asyncio.AbstractEventLoop | None = None


def emit(event: str, **fields: Any) -> None:
    record = {"ts": round(time.time(), 3), "event": event, **fields}
    line = orjson.dumps(record, default=str) + b"\n"
    if _pending:
        flush_access()
    _write(line)


def info(message: str, **fields: Any) -> None:
    emit("log", level="info", message=message, **fields)


def warning(message: str, **fields: Any) -> None:
    emit("log", level="warning", message=message, **fields)


def error(message: str, **fields: Any) -> None:
    emit("log", level="error", message=message, **fields)


def write_access(line: bytes, flush_s: float = 0.0) -> None:
    """One access line; with flush_s > 0 (on the event loop) it is written within flush_s."""
    global _pending_bytes, _timer, _timer_loop
    if flush_s <= 0:
        if _pending:
            flush_access()
        _write(line)
        return
    with _lock:
        _pending.append(line)
        _pending_bytes += len(line)
        full = _pending_bytes >= _BUFFER_MAX
    if full:
        flush_access()
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no event loop here to flush later: write it now
        flush_access()
        return
    if _timer is None or _timer_loop is not loop:  # (a timer of a loop that ended never fires)
        _timer, _timer_loop = loop.call_later(flush_s, _on_timer), loop


def _on_timer() -> None:
    global _timer
    _timer = None
    flush_access()


def flush_access() -> None:
    """Write the buffered access lines now (any thread)."""
    global _pending, _pending_bytes
    with _lock:
        lines, _pending, _pending_bytes = _pending, [], 0
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            if chunk and size + len(line) > _CHUNK:
                _write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        if chunk:
            _write(b"".join(chunk))


def _write(data: bytes) -> None:
    try:
        os.write(_FD, data)
    except OSError:
        with contextlib.suppress(Exception):
            sys.stderr.write(data.decode("utf-8", "replace"))


atexit.register(flush_access)
