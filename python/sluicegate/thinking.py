"""Earlier thinking that a target cannot verify: which blocks to drop, and when to retry.

A thinking block's `signature` (a redacted block's `data`) is made by the deployment that wrote
it, and the API checks it when the conversation comes back. A conversation that moved to another
target (failover, a new key) can carry blocks that target rejects with a 400:

    messages.1.content.0: Invalid `signature` in `thinking` block
    messages.23.content.2: Invalid `data` in `redacted_thinking` block

The relay then retries the same target once with `without_thinking`: every `thinking` and
`redacted_thinking` block of every assistant turn removed. Earlier thinking is optional input
(the API does not need it back, except in one place), so the retried request is still valid:

- an assistant turn left empty is dropped (the API merges consecutive user turns);
- the one place it is needed: with thinking on, the final assistant turn of an open tool-use
  loop (the last message is a user turn carrying `tool_result`s) must start with a thinking
  block ("a final `assistant` message must start with a thinking block"). When that turn has
  lost it, the retry also drops the top-level `thinking`, and `clear_thinking_*` context edits
  with it ("`clear_thinking_20251015` strategy requires `thinking` to be enabled"): this one
  answer is written without thinking, and the loop goes on.

That second 400 is also retried the same way: it is what the next request of such a loop gets
when the previous answer was written without thinking.

Per worker, the signatures a target rejected are remembered for the Claude Code session
(`x-claude-code-session-id`), so its later requests to that target have just those blocks
removed up front instead of paying a rejected round trip each time; blocks the target wrote
itself since then are kept. Both paths parse and re-serialize the body in Python (orjson):
acceptable because they only run for conversations that already moved and were rejected, never
on the ordinary path, which forwards the body byte for byte.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

_SIGNATURE_REJECTED = re.compile(
    rb"Invalid `?signature`? in `?thinking`? block|Invalid `?data`? in `?redacted_thinking`? block"
)
_FINAL_TURN_NEEDS_THINKING = b"final `assistant` message must start with a thinking block"
_THINKING_BLOCKS = ("thinking", "redacted_thinking")

# (session id, target name) -> digests of the blocks that target rejected. Bounded: the oldest
# session is forgotten first.
MAX_SESSIONS = 10_000
_rejected: dict[tuple[str, str], set[bytes]] = {}


def retry_worthy(status: int, body: bytes) -> bool:
    """Whether an upstream answer is a 400 about earlier thinking that a retry without it fixes."""
    if status != 400 or b"invalid_request_error" not in body:
        return False
    return _SIGNATURE_REJECTED.search(body) is not None or _FINAL_TURN_NEEDS_THINKING in body


def _digest(block: dict[str, Any]) -> bytes | None:
    value = block.get("signature") if block.get("type") == "thinking" else block.get("data")
    if not isinstance(value, str):
        return None
    return hashlib.blake2b(value.encode(), digest_size=12).digest()


def without_thinking(body: bytes, only: set[bytes] | None = None) -> tuple[bytes, set[bytes]] | None:
    """`body` with thinking blocks removed from the assistant turns (all of them, or only those
    whose digest is in `only`) and, if that leaves an open tool-use loop without its thinking,
    with `thinking` turned off; plus the digests of the blocks removed. None when nothing would
    change or the body is not a Messages request."""
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    messages = req.get("messages") if isinstance(req, dict) else None
    if not isinstance(messages, list):
        return None
    removed: set[bytes] = set()
    changed = False
    kept: list[Any] = []
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list) or msg.get("role") != "assistant":
            kept.append(msg)
            continue
        blocks = []
        for block in content:
            if isinstance(block, dict) and block.get("type") in _THINKING_BLOCKS:
                digest = _digest(block)
                if only is None or digest in only:
                    if digest is not None:
                        removed.add(digest)
                    changed = True
                    continue
            blocks.append(block)
        if len(blocks) != len(content):
            if not blocks:
                continue  # nothing left of this turn: the API merges the user turns around it
            msg = {**msg, "content": blocks}
        kept.append(msg)
    if _open_loop_lacks_thinking(req, kept):
        _thinking_off(req)
        changed = True
    if not changed:
        return None
    req["messages"] = kept
    return orjson.dumps(req), removed


def _thinking_on(req: dict[str, Any]) -> bool:
    thinking = req.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _open_loop_lacks_thinking(req: dict[str, Any], messages: list[Any]) -> bool:
    """Thinking is on, the last message hands back tool results, and the assistant turn that
    asked for them does not start with a thinking block: the API would refuse it."""
    if not _thinking_on(req) or len(messages) < 2:
        return False
    last, turn = messages[-1], messages[-2]
    if not isinstance(last, dict) or last.get("role") != "user" or not isinstance(turn, dict):
        return False
    content = last.get("content")
    if not isinstance(content, list) or not any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    ):
        return False
    asked = turn.get("content")
    if not isinstance(asked, list) or not asked:
        return True
    first = asked[0]
    return not (isinstance(first, dict) and first.get("type") in _THINKING_BLOCKS)


def _thinking_off(req: dict[str, Any]) -> None:
    req.pop("thinking", None)
    cm = req.get("context_management")
    if isinstance(cm, dict) and isinstance(cm.get("edits"), list):
        edits = [
            e
            for e in cm["edits"]
            if not (isinstance(e, dict) and str(e.get("type", "")).startswith("clear_thinking"))
        ]
        if edits:
            req["context_management"] = {**cm, "edits": edits}
        elif len(cm) == 1:
            del req["context_management"]
        else:
            req["context_management"] = {k: v for k, v in cm.items() if k != "edits"}


# -- per session ---------------------------------------------------------------------------------


def remember(session: str | None, target: str, digests: set[bytes]) -> None:
    if not session or not digests:
        return
    key = (session, target)
    known = _rejected.pop(key, None)
    if known is None:
        known = set()
        while len(_rejected) >= MAX_SESSIONS:
            del _rejected[next(iter(_rejected))]
    known |= digests
    _rejected[key] = known  # re-inserted: most recently used last


def rejected_before(session: str | None, target: str) -> set[bytes] | None:
    """Digests of blocks this target rejected earlier in the session, or None (the usual case:
    one falsy check while no session was ever rejected)."""
    if not _rejected or not session:
        return None
    return _rejected.get((session, target))
