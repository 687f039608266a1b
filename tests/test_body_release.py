"""A stream does not keep its request body alive: once the first event has reached the client
nothing resends the request, so the gateway drops the body (Claude Code's run to hundreds of
KB, and sessions stream for minutes). Measured as the worker's memory while many streams with
large bodies are held open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import GatewayProcess, anthropic_config
from fakes import FakeUpstream
from fakes import anthropic as fa

BODY_MB = 2
STREAMS = 24


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children (Granian's main process and its worker)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    kb = 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                kb += int(line.split()[1])
    return kb / 1024


@pytest.fixture
def gw_and_up() -> Iterator[tuple[GatewayProcess, FakeUpstream]]:
    with FakeUpstream() as up:
        # First event, then the upstream holds the stream open.
        up.script(lambda r: fa.sse_response("held", pauses={0: 60.0}))
        # A fixed mmap threshold: every allocation of a big body is its own mapping and goes
        # back to the system when freed, so RSS shows what is still referenced.
        env = {"MALLOC_MMAP_THRESHOLD_": "131072"}
        gw = GatewayProcess(anthropic_config(up.base_url), env=env).start()
        try:
            yield gw, up
        finally:
            gw.stop()


def test_held_streams_do_not_keep_their_request_bodies(
    gw_and_up: tuple[GatewayProcess, FakeUpstream],
) -> None:
    gw, up = gw_and_up
    assert gw.proc is not None
    text = "x" * (BODY_MB << 20)
    body = {
        "model": "big-coder",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": text}],
    }
    headers = {"x-api-key": "sg-alice-token", "anthropic-version": "2023-06-01"}
    before = tree_rss_mb(gw.proc.pid)
    with httpx.Client(timeout=30) as client:
        held = []
        try:
            for _ in range(STREAMS):
                r = client.send(
                    client.build_request("POST", gw.url + "/v1/messages", json=body, headers=headers),
                    stream=True,
                )
                assert r.status_code == 200
                lines = r.iter_lines()  # kept: a dropped line iterator closes the stream
                assert next(lines).startswith("event: message_start")
                held.append((r, lines))
            up.wait_for_requests(STREAMS, timeout=10)
            during = tree_rss_mb(gw.proc.pid)
            # Still open: the figure is that of held streams, not of finished ones.
            assert gw.access_records() == []
        finally:
            for r, _ in held:
                r.close()
    # Each body came in once and went upstream rewritten (its model name): kept, that is
    # 2 x 2 MB a stream, ~96 MB for 24. Dropped, only the allocator's slack remains.
    grown = during - before
    assert grown < STREAMS * BODY_MB * 0.5, f"RSS grew {grown:.0f} MB with {STREAMS} streams held"
    assert all(len(req.body) > BODY_MB << 20 for req in up.requests)  # the bodies were real
