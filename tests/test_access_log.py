"""The buffered access log: the lines a RequestSink keeps (the gateway's own) go out in few
writes of whole lines, in order with event lines."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
from collections.abc import Iterator

import orjson
import pytest
from sluicegate import log
from sluicegate.request_end import new_sink
from sluicegate.usage.record import FIELDS

F_SETPIPE_SZ = 1031  # Linux fcntl


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[int]]]:
    """log's fd swapped for a pipe; the sizes of the writes it makes are recorded."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    fcntl.fcntl(w, F_SETPIPE_SZ, 1 << 20)  # room for a full buffer: this thread is also the reader
    sizes: list[int] = []
    real = os.write

    def counting_write(fd: int, data: bytes) -> int:
        if fd == w:
            sizes.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(log, "_FD", w)
    monkeypatch.setattr(log.os, "write", counting_write)
    yield r, sizes
    log.flush_access()
    os.close(r)
    os.close(w)


def _read(r: int) -> list[bytes]:
    out = b""
    while True:
        try:
            part = os.read(r, 1 << 16)
        except BlockingIOError:
            break
        if not part:
            break
        out += part
    return out.splitlines()


_SINK = new_sink()


def write(i: int, pad: int, flush_s: float) -> None:
    """As the gateway does: the sink keeps the line and tells log when to write it out."""
    values = {f: None for f in FIELDS}
    values.update(ts=1.0, request_id=f"r{i}", requested_model="x" * pad, status=200, stream=False)
    values.update(input_tokens=0, output_tokens=0, cache_creation_tokens=0, cache_read_tokens=0)
    values.update(duration_ms=1.0, client_disconnected=False, usage_estimated=False)
    kept = _SINK.done(tuple(values[f] for f in FIELDS), None, 0.001, 1, None, False, True)
    if kept:
        log.access_kept(kept, flush_s)


def test_lines_wait_for_the_timer_then_go_out_in_few_whole_line_writes(pipe: tuple[int, list[int]]) -> None:
    r, sizes = pipe

    async def main() -> list[bytes]:
        for i in range(20):
            write(i, 600, 0.05)
        assert _read(r) == []  # nothing written yet
        await asyncio.sleep(0.2)
        return _read(r)

    lines = asyncio.run(main())
    assert [orjson.loads(x)["request_id"] for x in lines] == [f"r{i}" for i in range(20)]
    # 20 lines of ~0.6-1 KB: a handful of writes, none over PIPE_BUF, each of whole lines, each
    # but the last full to within a line of PIPE_BUF.
    longest = max(len(x) + 1 for x in lines)
    assert 2 <= len(sizes) <= sum(sizes) // (select.PIPE_BUF - longest) + 1
    assert max(sizes) <= select.PIPE_BUF
    assert sum(sizes) == sum(len(x) + 1 for x in lines)


def test_an_event_line_writes_the_waiting_access_lines_first(pipe: tuple[int, list[int]]) -> None:
    r, _ = pipe

    async def main() -> None:
        write(1, 600, 10.0)
        log.info("reloaded")
        write(2, 600, 0.0)  # unbuffered: written at once, after the others

    asyncio.run(main())
    events = [orjson.loads(x) for x in _read(r)]
    assert [e.get("request_id") or e["message"] for e in events] == ["r1", "reloaded", "r2"]


def test_a_line_longer_than_pipe_buf_is_written_whole_and_alone(pipe: tuple[int, list[int]]) -> None:
    r, sizes = pipe

    async def main() -> None:
        write(1, 600, 10.0)
        write(2, 3 * select.PIPE_BUF, 10.0)
        write(3, 600, 10.0)
        log.flush_access()

    asyncio.run(main())
    lines = _read(r)
    assert [orjson.loads(x)["request_id"] for x in lines] == ["r1", "r2", "r3"]
    assert sizes == [len(x) + 1 for x in lines] and sizes[1] > select.PIPE_BUF


def test_a_full_buffer_is_written_without_waiting(pipe: tuple[int, list[int]]) -> None:
    r, _ = pipe

    async def main() -> list[bytes]:
        n = 0
        while not (lines := _read(r)):
            write(n, 600, 60.0)
            n += 1
        return lines

    lines = asyncio.run(main())
    kept = sum(len(x) + 1 for x in lines)  # what was written when the bound was reached
    assert log.BUFFER_MAX <= kept < log.BUFFER_MAX + max(len(x) + 1 for x in lines)


def test_outside_an_event_loop_a_line_is_written_at_once(pipe: tuple[int, list[int]]) -> None:
    r, _ = pipe
    write(7, 600, 10.0)
    assert [orjson.loads(x)["request_id"] for x in _read(r)] == ["r7"]
