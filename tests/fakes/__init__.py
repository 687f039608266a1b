"""Fake upstream providers for the tests: real HTTP servers on loopback (see server.py)."""

from . import anthropic, openai
from ._actions import (
    Action,
    Close,
    Hang,
    Response,
    Send,
    Sleep,
    Status,
    empty_response,
    json_response,
    paced,
    split_at,
    split_every,
)
from .server import (
    FakeUpstream,
    NeverAccepts,
    NeverAnswers,
    RefusingPort,
    Request,
    StallsBeforeFirstByte,
    default_response,
)

__all__ = [
    "Action",
    "Close",
    "FakeUpstream",
    "Hang",
    "NeverAccepts",
    "NeverAnswers",
    "RefusingPort",
    "Request",
    "Response",
    "Send",
    "Sleep",
    "StallsBeforeFirstByte",
    "Status",
    "anthropic",
    "default_response",
    "empty_response",
    "json_response",
    "openai",
    "paced",
    "split_at",
    "split_every",
]
