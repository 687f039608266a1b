"""The steps a scripted fake response is made of, and small helpers to build lists of them.

A response is a plain list of actions that the fake server performs in order on the socket, so a
test decides every byte and every pause: when the status line goes out, how the body is split
into writes, where the stream stalls, and whether the connection ends cleanly or abruptly.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

HeaderList: TypeAlias = list[tuple[str, str]]
Headers: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]]


def header_list(headers: Headers | None) -> HeaderList:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


@dataclass(frozen=True)
class Status:
    """Write the status line and headers.

    framing decides how the following `Send`s are put on the wire:
    - "auto": a `content-length` header given -> sends are written as they are; a
      `transfer-encoding` header given, or neither -> chunked (the header is added when missing),
      each `Send` becoming one chunk, and the terminating chunk written when the script ends.
    - "chunked": as auto without content-length.
    - "close": `connection: close` is added, sends are written as they are and the connection
      is closed when the script ends (a close-delimited body).
    - "raw": the headers go out exactly as given (nothing added), sends are written as they are;
      the connection is kept only if a content-length was given.
    """

    code: int
    headers: Headers = ()
    reason: str | None = None
    framing: Literal["auto", "chunked", "close", "raw"] = "auto"


@dataclass(frozen=True)
class Send:
    """Write these bytes (one write, flushed before the next action). Inside a chunked response
    it becomes one chunk unless raw=True, which writes the bytes without chunk framing."""

    data: bytes
    raw: bool = False

    def __init__(self, data: bytes | str, raw: bool = False) -> None:
        object.__setattr__(self, "data", data.encode() if isinstance(data, str) else bytes(data))
        object.__setattr__(self, "raw", raw)


@dataclass(frozen=True)
class Sleep:
    """Pause. Before the `Status` it is a stall before the first byte."""

    seconds: float


@dataclass(frozen=True)
class Close:
    """End the connection now, without finishing the response (no terminating chunk).
    reset=True sends a TCP RST (SO_LINGER 0) instead of a FIN."""

    reset: bool = False


@dataclass(frozen=True)
class Hang:
    """Never go on: hold the connection open until the client leaves or the server stops."""


Action: TypeAlias = Status | Send | Sleep | Close | Hang


@dataclass
class Response:
    """An action list with a name, for readability in tests; a plain list works as well."""

    actions: list[Action] = field(default_factory=list)

    def __iter__(self) -> Any:
        return iter(self.actions)


def split_at(data: bytes | str, *offsets: int) -> list[Send]:
    """One `Send` per piece of `data` cut at the given byte offsets (any byte, even inside a
    UTF-8 character or between `\\r` and `\\n`)."""
    raw = data.encode() if isinstance(data, str) else data
    cuts = [0, *sorted(o for o in offsets if 0 < o < len(raw)), len(raw)]
    return [Send(raw[a:b]) for a, b in itertools.pairwise(cuts) if b > a]


def split_every(data: bytes | str, size: int) -> list[Send]:
    """One `Send` per `size` bytes."""
    raw = data.encode() if isinstance(data, str) else data
    return [Send(raw[i : i + size]) for i in range(0, len(raw), size)]


def paced(
    frames: Iterable[bytes | Send],
    pause: float = 0.0,
    pauses: Mapping[int, float] | None = None,
) -> list[Action]:
    """Sends for each frame with `pause` seconds between them; `pauses[i]` overrides the pause
    after frame i (0-based)."""
    out: list[Action] = []
    items = list(frames)
    for i, frame in enumerate(items):
        out.append(frame if isinstance(frame, Send) else Send(frame))
        wait = (pauses or {}).get(i, pause)
        if wait and i < len(items) - 1:
            out.append(Sleep(wait))
    return out


def json_response(status: int, body: Any, headers: Headers | None = None) -> list[Action]:
    """A complete JSON response with content-length. `body` may be a dict/list (serialized
    compactly), or str/bytes sent as they are."""
    if isinstance(body, bytes):
        raw = body
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    hdrs = header_list(headers)
    names = {k.lower() for k, _ in hdrs}
    if "content-type" not in names:
        hdrs.append(("content-type", "application/json"))
    hdrs.append(("content-length", str(len(raw))))
    return [Status(status, hdrs), Send(raw)]


def empty_response(status: int = 200, headers: Headers | None = None) -> list[Action]:
    hdrs = header_list(headers)
    hdrs.append(("content-length", "0"))
    return [Status(status, hdrs)]
