"""The buffered access log: few writes, whole lines, kept in order with event lines."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
from collections.abc import Iterator

import orjson
import pytest
from sluicegate import log

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


def _line(i: int, pad: int = 600) -> bytes:
    return orjson.dumps({"event": "request", "request_id": f"r{i}", "pad": "x" * pad}) + b"\n"


def test_lines_wait_for_the_timer_then_go_out_in_few_whole_line_writes(pipe: tuple[int, list[int]]) -> None:
    r, sizes = pipe

    async def main() -> list[bytes]:
        for i in range(20):
            log.write_access(_line(i), 0.05)
        assert _read(r) == []  # nothing written yet
        await asyncio.sleep(0.2)
        return _read(r)

    lines = asyncio.run(main())
    assert [orjson.loads(x)["request_id"] for x in lines] == [f"r{i}" for i in range(20)]
    # 20 lines of ~640 bytes: a handful of writes, none over PIPE_BUF, each of whole lines.
    assert 2 <= len(sizes) <= 5 and max(sizes) <= select.PIPE_BUF
    assert sum(sizes) == sum(len(_line(i)) for i in range(20))


def test_an_event_line_writes_the_waiting_access_lines_first(pipe: tuple[int, list[int]]) -> None:
    r, _ = pipe

    async def main() -> None:
        log.write_access(_line(1), 10.0)
        log.info("reloaded")
        log.write_access(_line(2), 0.0)  # unbuffered: written at once, after the others

    asyncio.run(main())
    events = [orjson.loads(x) for x in _read(r)]
    assert [e.get("request_id") or e["message"] for e in events] == ["r1", "reloaded", "r2"]


def test_a_line_longer_than_pipe_buf_is_written_whole_and_alone(pipe: tuple[int, list[int]]) -> None:
    r, sizes = pipe
    big = _line(2, pad=3 * select.PIPE_BUF)

    async def main() -> None:
        log.write_access(_line(1), 10.0)
        log.write_access(big, 10.0)
        log.write_access(_line(3), 10.0)
        log.flush_access()

    asyncio.run(main())
    assert [orjson.loads(x)["request_id"] for x in _read(r)] == ["r1", "r2", "r3"]
    assert sizes == [len(_line(1)), len(big), len(_line(3))]


def test_a_full_buffer_is_written_without_waiting(pipe: tuple[int, list[int]]) -> None:
    r, _ = pipe

    async def main() -> int:
        n = 0
        while not _read(r):
            log.write_access(_line(n), 60.0)
            n += 1
        return n

    n = asyncio.run(main())
    assert n * len(_line(0)) >= log._BUFFER_MAX


def test_outside_an_event_loop_a_line_is_written_at_once(pipe: tuple[int, list[int]]) -> None:
    r, _ = pipe
    log.write_access(_line(7), 10.0)
    assert [orjson.loads(x)["request_id"] for x in _read(r)] == ["r7"]
