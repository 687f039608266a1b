"""Structured JSON log lines, never carrying secrets or prompt text.

Event lines are written at once. Access lines (one per request) are kept by the extension's
RequestSink (request_end.py), registered here with `add_access_source`, for up to the
snapshot's `access_log_flush_ms`, and written several per syscall: a write per request cost more
than the rest of the access log. Each write is at most PIPE_BUF bytes and ends on a line, so
lines from several workers sharing one pipe never interleave mid-line. An event line first
writes out the access lines before it, so the order on stderr stays the order things happened.
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
from collections.abc import Callable
from typing import Any

import orjson

_FD = 2
_CHUNK = select.PIPE_BUF  # a pipe write up to this size is atomic (POSIX)
BUFFER_MAX = 64 * 1024  # kept access lines are written at once past this many bytes

_lock = threading.Lock()
_timer: asyncio.TimerHandle | None = None
_timer_loop: asyncio.AbstractEventLoop | None = None
# Where access lines wait: each a callable that hands them over (whole lines) or None.
_sources: list[Callable[[], bytes | None]] = []
_sources_pending = False  # a source has told of lines since the last flush


def emit(event: str, **fields: Any) -> None:
    record = {"ts": round(time.time(), 3), "event": event, **fields}
    line = orjson.dumps(record, default=str) + b"\n"
    if _sources_pending:
        flush_access()
    _write(line)


def info(message: str, **fields: Any) -> None:
    emit("log", level="info", message=message, **fields)


def warning(message: str, **fields: Any) -> None:
    emit("log", level="warning", message=message, **fields)


def error(message: str, **fields: Any) -> None:
    emit("log", level="error", message=message, **fields)


def add_access_source(take: Callable[[], bytes | None]) -> None:
    """Where access lines are kept (a RequestSink's `take_access`): flushes take them from it."""
    _sources.append(take)


def access_kept(state: int, flush_s: float) -> None:
    """A source kept an access line and said (RequestSink.done) 1: the first since it was last
    taken, or 2: past its bound. Its lines are written within flush_s (at once for flush_s 0 or
    state 2)."""
    global _sources_pending
    _sources_pending = True
    if state >= 2 or flush_s <= 0:
        flush_access()
    else:
        _flush_within(flush_s)


def _flush_within(flush_s: float) -> None:
    global _timer, _timer_loop
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
    """Write the kept access lines now (any thread)."""
    global _sources_pending
    with _lock:
        _sources_pending = False
        for take in _sources:
            data = take()
            if not data:
                continue
            # At most PIPE_BUF bytes a write, ending on a line (a longer line goes alone); the
            # writes are views of the one buffer, not copies of what is left of it.
            view, start, end = memoryview(data), 0, len(data)
            while start < end:
                cut = end if end - start <= _CHUNK else data.rfind(b"\n", start, start + _CHUNK) + 1
                if cut <= start:
                    cut = data.find(b"\n", start + _CHUNK) + 1 or end
                _write(view[start:cut])
                start = cut


def _write(data: bytes | memoryview) -> None:
    try:
        os.write(_FD, data)
    except OSError:
        with contextlib.suppress(Exception):
            sys.stderr.write(bytes(data).decode("utf-8", "replace"))


atexit.register(flush_access)
