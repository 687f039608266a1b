"""Malformed requests against a real gateway process: a bounded, seeded, deterministic barrage.

The rule under test: bad input gets a clear error in the API's own error shape (Anthropic's on
/v1/messages*, OpenAI's on /v1/chat/completions), never a 5xx or a traceback, and never shows a
secret (provider API keys, client keys, the admin token); prompt text never reaches the log.

Every request goes over a raw socket (`Connection: close`), so a case decides every byte: bodies
that are not JSON or not UTF-8, wrong types for each known field, odd content blocks, odd model
names, malformed auth and other headers, Content-Length that lies, chunked bodies, wrong methods
and unknown paths. A case the HTTP layer itself refuses (Granian answers a bare 400 before the
application sees it: a Content-Length that is not a number, control bytes in a header value) is
marked `protocol`: it must get a 4xx, and only those cases may get an empty error body.

After each group: the access lines and event lines hold no Traceback, no "internal error", no
5xx, no secret and no prompt marker, and the gateway still answers a normal request.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import GatewayProcess
from fakes import Action, FakeUpstream, Request, json_response
from fakes import anthropic as fa
from fakes import openai as fo

SEED = 0x5E1C_E6A7
MARKER = "PROMPT-MARKER-q7ZxK2"  # in message contents only: must never reach the log
ANT_KEY = "sk-ant-FUZZ-SECRET-4f1c"
OAI_KEY = "sk-oai-FUZZ-SECRET-9b2e"
TOKEN = "sg-fuzz-CLIENT-KEY-1d7e"
NARROW = "sg-narrow-CLIENT-KEY-5a0c"  # may use `gpt` only
ADMIN = "adm-FUZZ-ADMIN-TOKEN-3c8b0123"
SECRETS = (ANT_KEY, OAI_KEY, TOKEN, NARROW, ADMIN)
MAX_BODY = 512 * 1024
ANSWER_TIMEOUT_S = 10.0

MESSAGES = "/v1/messages"
COUNT = "/v1/messages/count_tokens"
CHAT = "/v1/chat/completions"
# (path, model, translated): `claude` is an Anthropic-format target, `gpt` an OpenAI-compatible
# one, so each endpoint is tried both passed through and translated (count_tokens to `gpt` is a
# local estimate from the parsed body).
COMBOS = [
    (MESSAGES, "claude", False),
    (MESSAGES, "gpt", True),
    (COUNT, "claude", False),
    (COUNT, "gpt", True),
    (CHAT, "gpt", False),
    (CHAT, "claude", True),
]


def fuzz_config(base_url: str) -> dict[str, Any]:
    return {
        "server": {"max_body_bytes": MAX_BODY},
        "providers": {
            "ant": {"type": "anthropic", "base_url": base_url, "api_key": ANT_KEY},
            "oai": {"type": "openai", "base_url": base_url + "/v1", "api_key": OAI_KEY},
        },
        "models": {
            "claude": {"targets": [{"provider": "ant", "model": "claude-sonnet-4-6"}]},
            "gpt": {"targets": [{"provider": "oai", "model": "qwen2.5-coder"}]},
        },
        "admin": {"token": ADMIN},
        "keys": [
            {"name": "fuzz", "token": TOKEN, "models": ["*"]},
            {"name": "narrow", "token": NARROW, "models": ["gpt"]},
        ],
    }


def tolerant(req: Request) -> list[Action] | None:
    """The fake's default answer parses the body with `json.loads`, which raises RecursionError
    on 10,000 nested arrays (the fake would answer 500); such a body gets a plain answer here."""
    try:
        req.json  # noqa: B018
    except RecursionError:
        if req.path.endswith("/count_tokens"):
            return json_response(200, fa.count_tokens_json())
        if req.path.endswith("/chat/completions"):
            return fo.completion_response()
        return fa.message_response()
    return None


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        server.script(tolerant)
        yield server


@pytest.fixture(scope="module")
def gw(up: FakeUpstream) -> Iterator[GatewayProcess]:
    g = GatewayProcess(fuzz_config(up.base_url)).start()
    yield g
    g.stop()


# ---- the wire --------------------------------------------------------------------------------


# The suite runs under the native front (the default) and under Granian (SLUICEGATE_SERVER=granian).
NATIVE_FRONT = os.environ.get("SLUICEGATE_SERVER", "auto") in ("auto", "native")


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes  # the whole request as it goes on the wire
    api: str  # whose error shape an answer >= 400 must have: "anthropic" | "openai"
    half_close: bool = False  # shut the write side after sending (the body ends early)
    protocol: bool = False  # refused by the HTTP layer before the application: a 4xx, maybe bare
    expect: int | None = None  # the status the docs promise, where they promise one
    # Framing Granian hands on to the application but the native front refuses itself (a 4xx
    # in the API's shape, before any application code): no access line there.
    front_refuses: bool = False

    @property
    def reaches_v1(self) -> bool:
        """The application gets it on a /v1/ path, which always ends in an access line."""
        if self.protocol or (self.front_refuses and NATIVE_FRONT):
            return False
        return self.raw.split(b" ", 2)[1].startswith(b"/v1/")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


def request(
    method: str,
    path: str,
    body: bytes | None = b"",
    headers: Iterable[bytes] = (),
    *,
    auth: bytes | None = b"x-api-key: " + TOKEN.encode(),
    length: bool = True,
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """A request head (`Connection: close`, a JSON content type unless `headers` names one) and
    body. `auth` is the whole auth header line; `length=False` leaves Content-Length out."""
    lines = [method.encode() + b" " + path.encode("latin-1") + b" " + version, b"Host: gateway"]
    lines.append(b"Connection: close")
    extra = list(headers)
    if auth is not None:
        lines.append(auth)
    if not any(h.lower().startswith(b"content-type:") for h in extra):
        lines.append(b"Content-Type: application/json")
    lines.extend(extra)
    if length and body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def chunked(body: bytes, size: int = 7, ext: bytes = b"") -> bytes:
    out = b"".join(
        b"%x%s\r\n%s\r\n" % (len(body[i : i + size]), ext, body[i : i + size])
        for i in range(0, len(body), size)
    )
    return out + b"0\r\n\r\n"


def exchange(port: int, case: Case) -> Answer:
    """Send the case, read until the server closes; raise AssertionError on a hang or a
    response that is cut short."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    got = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S) as s:
        try:
            s.sendall(case.raw)
            if case.half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all: read what it said
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no complete answer within {ANSWER_TIMEOUT_S}s (hang): {bytes(got[:300])!r}"
                )
            s.settimeout(left)
            try:
                data = s.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not data:
                break
            got += data
    return parse_answer(bytes(got), head_request=case.raw.startswith(b"HEAD "))


def parse_answer(raw: bytes, head_request: bool) -> Answer:
    rest = raw
    while True:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"no complete response head: {raw[:300]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        if status >= 200:
            break  # past any 100 Continue
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if head_request or status in (204, 304):
        return Answer(status, headers, b"", raw)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            assert sep, f"chunked response cut short: {raw[-300:]!r}"
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            assert len(rest) >= size + 2, f"chunk cut short: {raw[-300:]!r}"
            body += rest[:size]
            rest = rest[size + 2 :]
        return Answer(status, headers, bytes(body), raw)
    if "content-length" in headers:
        n = int(headers["content-length"])
        assert len(rest) >= n, f"body cut short: {len(rest)} of {n} bytes"
        return Answer(status, headers, rest[:n], raw)
    return Answer(status, headers, rest, raw)


def api_of(path: str) -> str:
    """The error shape the gateway documents for a path: OpenAI's on /v1/chat/... and
    /v1/completions..., Anthropic's elsewhere (the admin API uses the same shape)."""
    p = path.split("?", 1)[0]
    return "openai" if p.startswith(("/v1/chat", "/v1/completions")) else "anthropic"


def shape_problem(api: str, answer: Answer) -> str | None:
    """Why an error answer is not in the API's error shape (None when it is)."""
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return f"content-type {answer.headers.get('content-type')!r}"
    try:
        obj = json.loads(answer.body)
    except ValueError:
        return "body is not JSON"
    if not isinstance(obj, dict) or not isinstance(obj.get("error"), dict):
        return "no `error` object"
    err = obj["error"]
    message, etype = err.get("message"), err.get("type")
    if not (isinstance(message, str) and message and isinstance(etype, str) and etype):
        return "error.message / error.type missing or empty"
    if api == "anthropic" and (obj.get("type") != "error" or set(obj) != {"type", "error"}):
        return "not {type: error, error: {...}}"
    if api == "openai" and ("type" in obj or not {"param", "code"} <= set(err)):
        return "not {error: {message, type, param, code}}"
    return None


def problems(case: Case, answer: Answer) -> list[str]:
    out = []
    if case.expect is not None and answer.status != case.expect:
        out.append(f"status {answer.status}, wanted {case.expect}")
    if answer.status >= 500:
        out.append(f"status {answer.status}")
    if case.protocol and not 400 <= answer.status < 500:
        out.append(f"status {answer.status}, wanted a 4xx refusal")
    if answer.status >= 400 and not case.raw.startswith(b"HEAD "):
        if not answer.body and not case.protocol:
            out.append(f"status {answer.status} with an empty body")
        elif answer.body and (why := shape_problem(case.api, answer)):
            out.append(f"status {answer.status}, {case.api} shape: {why}")
    for secret in SECRETS:
        if secret.encode() in answer.raw:
            out.append(f"answer shows the secret {secret}")
    if b"Traceback" in answer.raw:
        out.append("answer shows a traceback")
    return out


def run(gw: GatewayProcess, up: FakeUpstream, cases: list[Case]) -> None:
    """Send every case; fail with the whole list of violations at once."""
    up.clear()
    gw.access_records()  # waits out the flush of earlier access lines: what follows is this run's
    mark = len(gw.logs())
    found: list[str] = []
    for case in cases:
        try:
            answer = exchange(gw.port, case)
        except AssertionError as exc:
            found.append(f"{case.name}: {exc}")
            continue
        found.extend(f"{case.name}: {p} -- {answer.body[:200]!r}" for p in problems(case, answer))
    assert up.errors == [], up.errors  # the fake never answered 5xx: any 5xx was the gateway's
    assert not found, f"{len(found)} of {len(cases)} cases broke the rule:\n" + "\n".join(found)
    assert_log_clean(gw, mark, sum(c.reaches_v1 for c in cases))
    assert_still_serving(gw)


def assert_log_clean(gw: GatewayProcess, mark: int, v1_requests: int) -> None:
    """The log written since `mark`: no traceback, secret, prompt text or internal error, no
    5xx in the access lines, and one access line for each request the application got on /v1/
    (so the lines looked at are this run's)."""
    gw.access_records()  # waits out the access-line flush
    logs = gw.logs()[mark:]
    assert "Traceback" not in logs, logs[max(0, logs.index("Traceback") - 500) :][:3000]
    for secret in SECRETS:
        assert secret not in logs, f"the log shows {secret}"
    assert MARKER not in logs, "the log shows prompt text"
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    internal = [r for r in records if r.get("message") == "internal error"]
    assert internal == [], internal
    access = [r for r in records if r.get("event") == "request"]
    assert [r for r in access if r["status"] >= 500] == []
    assert len(access) == v1_requests, (len(access), v1_requests)
    # Client-chosen names are bounded (a 100,000-character model, a 20 KB session id): no line
    # grows with them, so lines from several workers stay whole (PIPE_BUF is 4 KB).
    longest = max((len(line) for line in logs.splitlines()), default=0)
    assert longest < 4096, longest


def assert_still_serving(gw: GatewayProcess) -> None:
    ok = Case("valid /v1/messages", request("POST", MESSAGES, body(MESSAGES, "claude")), "anthropic")
    answer = exchange(gw.port, ok)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["content"][0]["text"] == "Hello from fake upstream"
    ok = Case("valid /v1/chat/completions", request("POST", CHAT, body(CHAT, "gpt")), "openai")
    answer = exchange(gw.port, ok)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["choices"][0]["message"]["content"] == "Hello from fake upstream"


# ---- request bodies ---------------------------------------------------------------------------


def base(path: str, model: str) -> dict[str, Any]:
    """A valid request body for `path`, with the prompt marker in every prompt text."""
    if path == CHAT:
        msgs = [
            {"role": "system", "content": f"{MARKER} system"},
            {"role": "user", "content": f"{MARKER} hi"},
        ]
        return {"model": model, "max_tokens": 16, "messages": msgs}
    return {
        "model": model,
        "max_tokens": 16,
        "system": f"{MARKER} system",
        "messages": [{"role": "user", "content": f"{MARKER} hi"}],
    }


# Values that are not JSON to Python's encoder: written into the body as they are.
RAW_TOKENS = {
    "@1e400@": b"1e400",
    "@-1e400@": b"-1e400",
    "@2**70@": str(2**70).encode(),
    "@-2**70@": str(-(2**70)).encode(),
    "@1e-400@": b"1e-400",
    "@-0@": b"-0",
    "@NaN@": b"NaN",
    "@Infinity@": b"Infinity",
}


def encode(obj: Any) -> bytes:
    raw = json.dumps(obj, ensure_ascii=False).encode()
    for token, literal in RAW_TOKENS.items():
        raw = raw.replace(json.dumps(token).encode(), literal)
    return raw


def body(path: str, model: str, /, **patch: Any) -> bytes:
    return encode({**base(path, model), **patch})


# Every field a translation reads; a pass-through target gets only those the gateway itself looks
# at (the rest of the body is forwarded unread).
FIELDS = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "system",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stop",
    "metadata",
    "thinking",
    "n",
    "response_format",
    "reasoning_effort",
    "parallel_tool_calls",
]
INSPECTED = ["model", "messages", "max_tokens", "stream", "stream_options", "tools"]
BAD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    "@2**70@",
    "@1e400@",
    "@-1e400@",
    "@1e-400@",
    "@-0@",
    "",
    "x",
    "\u0000\u001f\u2028",
    [],
    [None],
    [1, "a", {}],
    {},
    {"type": 5},
    {"type": "enabled", "budget_tokens": "many"},
    {"include_usage": "yes"},
    [{"type": "function"}],
]
MESSAGE_SHAPES: list[Any] = [
    [],
    [1, "x", None],
    [{"role": "user"}],
    [{"content": f"{MARKER} no role"}],
    [{"role": "robot", "content": f"{MARKER} odd role"}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": 5}],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": {"type": "text", "text": f"{MARKER} an object, not a list"}}],
    [{"role": "user", "content": [[]]}],
    [{"role": "user", "content": [{"type": "text"}]}],
    [{"role": "user", "content": [{"type": "text", "text": 5}]}],
    [{"role": "user", "content": [{"text": f"{MARKER} no type"}]}],
    [{"role": "user", "content": [{"type": "no-such-block", "text": f"{MARKER}"}]}],
    [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "!!"}}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}],
    [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": 5, "content": [{"type": "text", "text": MARKER}]}
            ],
        }
    ],
    [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": "not an object"}],
        }
    ],
    [{"role": "assistant", "content": [{"type": "thinking", "thinking": f"{MARKER} no signature"}]}],
    [
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "Bash", "arguments": "{not json"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": MARKER},
    ],
    [{"role": "assistant", "tool_calls": "nope"}],
    [{"role": "tool", "content": f"{MARKER} no tool_call_id"}],
    [{"role": "user", "content": [{"type": "text", "text": MARKER, "cache_control": "ephemeral"}]}],
]
TOOL_SHAPES: list[dict[str, Any]] = [
    {"tools": [{"name": 5}]},
    {"tools": [{"type": "function"}]},
    {"tools": [{"type": "function", "function": {"name": "Bash", "parameters": "nope"}}]},
    {"tools": [{"name": "Bash", "input_schema": []}]},
    {"tools": [{"name": "Bash", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool"}},
    {
        "tools": [{"type": "function", "function": {"name": "Bash"}}],
        "tool_choice": {"type": "function", "function": {}},
    },
    {"tool_choice": "required"},
]
# Each with the status promised for it (None: only the rule applies).
NOT_JSON: list[tuple[str, bytes, int | None]] = [
    ("empty", b"", 400),
    ("whitespace", b" \r\n\t ", 400),
    ("text", b"hello there", 400),
    ("truncated", b'{"model": "claude", "messages": [{"role": "user", "content": "' + MARKER.encode(), 400),
    ("cut after key", b'{"model":', 400),
    ("array", b"[1, 2]", 400),
    ("string", b'"a string"', 400),
    ("number", b"42", 400),
    ("null", b"null", 400),
    ("true", b"true", 400),
    ("invalid UTF-8", b"\xff\xfe\x00{", 400),
    (
        "invalid UTF-8 in a string",
        b'{"model":"claude","messages":[{"role":"user","content":"\xc3\x28 ' + MARKER.encode() + b'"}]}',
        400,
    ),
    ("BOM then object", b'\xef\xbb\xbf{"model":"claude","max_tokens":5,"messages":[]}', 400),
    ("NUL byte", b'{"model":"claude",\x00"messages":[]}', 400),
    ("single quotes", b"{'model': 'claude'}", 400),
    ("trailing comma", b'{"model":"claude","messages":[],}', 400),
    ("two objects", b'{"model":"claude"}{"model":"gpt"}', 400),
    ("10,000 nested arrays alone", b"[" * 10_000 + b"]" * 10_000, 400),
    ("10,000 unclosed arrays", b"[" * 10_000, 400),
]
MODELS: list[tuple[str, Any]] = [  # 400 without a model name or past 256 characters, else 404
    ("empty model", ""),
    ("missing model", None),
    ("unknown model", "no-such-model"),
    ("NUL in model", "claude\u0000"),
    ("control chars in model", "\u0001\u001b[31m\u007f"),
    ("very long model", "m" * 100_000),
    ("wildcard model", "*"),
    ("spaced model", " claude "),
    ("lone surrogate model", "@SURROGATE@"),
]


def body_cases(rng: random.Random) -> list[Case]:
    """Bodies that are not a request. /v1/messages and /v1/chat/completions get them all;
    count_tokens, which goes through the same admission, a sample."""
    cases = []
    for path in (MESSAGES, CHAT, COUNT):
        api = api_of(path)
        sample = path == COUNT
        for name, raw, expect in rng.sample(NOT_JSON, 6) if sample else NOT_JSON:
            cases.append(Case(f"{path} {name}", request("POST", path, raw), api, expect=expect))
        for name, model in rng.sample(MODELS, 3) if sample else MODELS:
            b = base(path, "claude")
            if model is None:
                del b["model"]
            else:
                b["model"] = model
            raw = encode(b).replace(b"@SURROGATE@", b"\\ud800")
            expect = 400 if name in ("empty model", "missing model", "very long model") else 404
            cases.append(Case(f"{path} {name}", request("POST", path, raw), api, expect=expect))
    for path, model, translated in COMBOS:
        api = api_of(path)
        tag = f"{path} -> {model}"
        for f in FIELDS if translated else INSPECTED:
            value = rng.choice(BAD_VALUES)
            cases.append(
                Case(f"{tag} {f} as {value!r}", request("POST", path, body(path, model, **{f: value})), api)
            )
        for shape in rng.sample(MESSAGE_SHAPES, 7 if translated else 3):
            cases.append(
                Case(
                    f"{tag} messages={shape!r}", request("POST", path, body(path, model, messages=shape)), api
                )
            )
        for patch in rng.sample(TOOL_SHAPES, 2):
            cases.append(Case(f"{tag} {patch!r}", request("POST", path, body(path, model, **patch)), api))
        for name, raw in structure_bodies(path, model):
            cases.append(Case(f"{tag} {name}", request("POST", path, raw), api))
    return cases


def structure_bodies(path: str, model: str) -> list[tuple[str, bytes]]:
    """Deep nesting, numbers out of every range, duplicate keys, odd escapes, a big prompt."""
    valid = body(path, model)
    nest = b"[" * 10_000 + b"]" * 10_000
    deep_objects = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    user = {"role": "user", "content": f"{MARKER} hi"}
    return [
        ("10,000 nested arrays in content", valid.replace(f'"{MARKER} hi"'.encode(), nest)),
        ("10,000 nested objects in metadata", valid[:-1] + b', "metadata": ' + deep_objects + b"}"),
        (
            "numbers out of range",
            body(path, model, max_tokens="@1e400@", temperature="@-1e400@", top_p="@2**70@"),
        ),
        ("NaN and Infinity", body(path, model, temperature="@NaN@", max_tokens="@Infinity@")),
        (
            "duplicate keys",
            valid[:-1]
            + b', "messages": 5, "stream": true, "stream": "no", "model": 7, "model": "'
            + model.encode()
            + b'"}',
        ),
        (
            "escaped NUL and lone surrogates",
            body(path, model, messages=[{"role": "user", "content": f"{MARKER} @E@"}]).replace(
                b"@E@", b"\\u0000 \\ud800 x \\udfff \\ud800"
            ),
        ),
        ("bad escapes", valid.replace(f"{MARKER} hi".encode(), f"{MARKER} \\q \\uZZZZ".encode())),
        ("300 KB prompt", body(path, model, messages=[{**user, "content": MARKER + "x" * 300_000}])),
        (
            "stream with bad stream_options",
            body(path, model, stream=True, stream_options={"include_usage": "yes"}),
        ),
    ]


# ---- headers, framing, methods and paths ------------------------------------------------------


def header_cases(rng: random.Random) -> list[Case]:
    ok = body(MESSAGES, "claude")
    chat = body(CHAT, "gpt")
    T = TOKEN.encode()
    # (name, auth line, more headers, the status promised: 401 for no or an unknown key)
    auth_lines: list[tuple[str, bytes | None, list[bytes], int | None]] = [
        ("no auth", None, [], 401),
        ("Bearer with nothing", b"Authorization: Bearer", [], 401),
        ("Bearer and a space", b"Authorization: Bearer ", [], 401),
        ("Basic auth", b"Authorization: Basic c2c6eA==", [], 401),
        ("lower-case bearer", b"authorization: bearer " + T, [], 200),
        ("Bearer with Latin-1 bytes", b"Authorization: Bearer sg-\xe9\xff\xfe", [], 401),
        ("Bearer with UTF-8", b"Authorization: Bearer " + T + "é".encode(), [], 401),
        ("Bearer 60 KB", b"Authorization: Bearer " + b"k" * 60_000, [], 401),
        ("empty x-api-key", b"x-api-key:", [], 401),
        ("x-api-key with Latin-1 bytes", b"x-api-key: \xe9\xff", [], 401),
        ("x-api-key with spaces", b"x-api-key:   " + T + b"   ", [], 200),
        ("x-api-key wrong, Bearer right", b"x-api-key: sg-wrong", [b"Authorization: Bearer " + T], None),
        ("x-api-key right, Bearer wrong", b"x-api-key: " + T, [b"Authorization: Bearer sg-wrong"], None),
        (
            "narrow x-api-key, full Bearer",
            b"x-api-key: " + NARROW.encode(),
            [b"Authorization: Bearer " + T],
            None,
        ),
        ("two x-api-key headers", b"x-api-key: sg-wrong", [b"x-api-key: " + T], None),
    ]
    cases = []
    for name, auth, extra, expect in auth_lines:
        raw = request("POST", MESSAGES, ok, extra, auth=auth)
        cases.append(Case(f"{MESSAGES} {name}", raw, "anthropic", expect=expect))
    for name, auth, extra, expect in rng.sample(auth_lines, 6):
        cases.append(
            Case(f"{CHAT} {name}", request("POST", CHAT, chat, extra, auth=auth), "openai", expect=expect)
        )
    odd: list[tuple[str, list[bytes]]] = [
        ("100 KB header", [b"x-filler: " + b"f" * 100_000]),
        ("empty anthropic-version", [b"anthropic-version:"]),
        ("odd anthropic-version", [b"anthropic-version: 1999-99-99; drop table"]),
        ("UTF-8 anthropic-version", ["anthropic-version: ✓".encode()]),
        ("10 KB anthropic-version", [b"anthropic-version: " + b"9" * 10_000]),
        ("commas anthropic-beta", [b"anthropic-beta: ,,, ,"]),
        ("Latin-1 anthropic-beta", [b"anthropic-beta: \xe9t\xe9"]),
        ("10 KB anthropic-beta", [b"anthropic-beta: " + b"b," * 5_000]),
        ("two anthropic-beta", [b"anthropic-beta: a", b"anthropic-beta: b"]),
        ("empty session id", [b"x-claude-code-session-id:"]),
        ("Latin-1 session id", [b"x-claude-code-session-id: \xff\xfe"]),
        ("UTF-8 session id", ["x-claude-code-session-id: séssion-✓".encode()]),
        ("20 KB session id", [b"x-claude-code-session-id: " + b"s" * 20_000]),
        (
            "JSON-ish session id",
            [b'x-claude-code-session-id: {"a":1}\\"', b"x-claude-code-agent-id: ../../etc/passwd"],
        ),
        ("tab in session id", [b"x-claude-code-session-id: a\tb"]),
    ]
    for name, extra in odd:
        cases.append(Case(f"{MESSAGES} {name}", request("POST", MESSAGES, ok, extra), "anthropic"))
    for name, extra in rng.sample(odd, 4):
        cases.append(Case(f"{CHAT} {name}", request("POST", CHAT, chat, extra), "openai"))
    refused: list[tuple[str, list[bytes]]] = [
        ("control byte in anthropic-version", [b"anthropic-version: \x01\x7f"]),
        ("control byte in session id", [b"x-claude-code-session-id: a\x00b"]),
        ("space in a header name", [b"x api key: 1"]),
        ("200 headers", [b"x-h%d: %d" % (i, i) for i in range(200)]),
    ]
    for name, extra in refused:
        cases.append(
            Case(f"{MESSAGES} {name}", request("POST", MESSAGES, ok, extra), "anthropic", protocol=True)
        )
    return cases


def framing_cases() -> list[Case]:
    """Content types, lengths that lie, chunked bodies, Expect, HTTP/1.0; half_close=True shuts
    the write side after sending, so a body shorter than announced ends instead of stalling."""
    cases = []
    for path, model in ((MESSAGES, "claude"), (CHAT, "gpt")):
        api = api_of(path)
        ok = body(path, model)
        head = request("POST", path, None, length=False)[:-2]  # ends after the last header line
        te = head + b"Transfer-Encoding: chunked\r\n"

        def case(name: str, raw: bytes, **kw: Any) -> Case:
            return Case(f"{path} {name}", raw, api, **kw)  # noqa: B023 (used at once)

        no_type = request("POST", path, ok).replace(b"Content-Type: application/json\r\n", b"")
        multipart = [b"Content-Type: multipart/form-data; boundary=x"]
        cases += [
            case("no content-type", no_type),
            case("text/plain", request("POST", path, ok, [b"Content-Type: text/plain"])),
            case("form", request("POST", path, ok, [b"Content-Type: application/x-www-form-urlencoded"])),
            case("multipart", request("POST", path, b"--x\r\n\r\njunk\r\n--x--", multipart)),
            case("gzip content-encoding", request("POST", path, ok, [b"Content-Encoding: gzip"])),
            case("Content-Length 0 with a body", head + b"Content-Length: 0\r\n\r\n" + ok, expect=400),
            case(
                "Content-Length short of the body",
                head + b"Content-Length: %d\r\n\r\n" % (len(ok) - 9) + ok,
                expect=400,
            ),
            case(
                "Content-Length past the body",
                head + b"Content-Length: %d\r\n\r\n" % (len(ok) + 50) + ok,
                half_close=True,
                expect=400,
            ),
            case(
                "Content-Length and nothing sent",
                head + b"Content-Length: 100\r\n\r\n",
                half_close=True,
                expect=400,
            ),
            case(
                "Content-Length over the limit",
                head + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1) + ok,
                half_close=True,
                expect=413,
            ),
            case("no length, body until close", head + b"\r\n" + ok, half_close=True),
            case("chunked", te + b"\r\n" + chunked(ok), expect=200),
            case("chunked with extensions", te + b"\r\n" + chunked(ok, 50, b";x=y"), expect=200),
            case("chunked, cut short", te + b"\r\n" + chunked(ok)[:40], half_close=True, expect=400),
            case("chunked, bad size", te + b"\r\nzz\r\nabc\r\n0\r\n\r\n", front_refuses=True),
            case(
                "chunked over the limit", te + b"\r\n" + chunked(ok + b" " * MAX_BODY, 64 * 1024), expect=413
            ),
            case(
                "chunked and Content-Length",
                te + b"Content-Length: 3\r\n\r\n" + chunked(ok),
                front_refuses=True,
            ),
            case(
                "Expect: 100-continue",
                head + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(ok) + ok,
                expect=200,
            ),
            case("HTTP/1.0", request("POST", path, ok, version=b"HTTP/1.0"), expect=200),
        ]
        refused = [
            ("Content-Length not a number", b"Content-Length: abc\r\n"),
            ("negative Content-Length", b"Content-Length: -5\r\n"),
            ("two Content-Lengths", b"Content-Length: 5\r\nContent-Length: 7\r\n"),
            ("Content-Length past 2**64", b"Content-Length: 99999999999999999999999\r\n"),
            ("Transfer-Encoding gzip", b"Transfer-Encoding: gzip\r\n"),
        ]
        cases += [case(name, head + h + b"\r\n" + ok, half_close=True, protocol=True) for name, h in refused]
    cases.append(Case("bad request line", b"POST /v1/messages HTTP/9.9\r\n\r\n", "anthropic", protocol=True))
    cases.append(Case("garbage bytes", b"\x00\x01\x02 garbage\r\n\r\n", "anthropic", protocol=True))
    return cases


def route_cases() -> list[Case]:
    ok = body(MESSAGES, "claude")
    cases = []
    for path in (MESSAGES, COUNT, CHAT, "/v1/models"):
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
            if path == "/v1/models" and method in ("GET", "HEAD"):
                continue
            data = b"" if method in ("GET", "HEAD", "OPTIONS") else ok
            cases.append(Case(f"{method} {path}", request(method, path, data), api_of(path), expect=405))
    # (path, status promised): no route is a 404; /admin wants the admin token, not a client key.
    paths = [
        ("/v1/v1/messages", 404),
        ("/v1/v1/chat/completions", 404),
        ("/v1/messages/", 404),
        ("/V1/MESSAGES", 404),
        ("//v1/messages", 404),
        ("/v1/../v1/messages", 404),
        ("/v1/messages/count_tokens/extra", 404),
        ("/v1/chat/completions/", 404),
        ("/v1/chat", 404),
        ("/v1/completions", 404),
        ("/v1/embeddings", 404),
        ("/v1/", 404),
        ("/v1", 404),
        ("/foo", 404),
        ("/%00", 404),
        ("/v1/messages%00", 404),
        ("/v1/%ff%fe", 404),
        ("/v1/" + "p" * 8_000, 404),
        ("/admin", 401),
        ("/admin/nothing", 401),
        ("/v1/messages?beta=true", 200),
        ("/v1/messages?%ff%00=&&=&a=1&a=2", 200),
        ("/v1/messages?" + "q" * 8_000, 200),
        ("/v1/messages/count_tokens?x=%", 200),
        ("/v1/chat/completions?api-version=2024-02-01&%zz", None),  # a Messages body to chat
    ]
    for path, expect in paths:
        cases.append(Case(f"POST {path[:60]}", request("POST", path, ok), api_of(path), expect=expect))
    for query in (
        "limit=abc",
        "limit=0",
        "limit=-1",
        "limit=99999999999999999999",
        "after_id=%ff&before_id=%00",
        "limit=1&limit=x",
    ):
        cases.append(Case(f"GET /v1/models?{query}", request("GET", "/v1/models?" + query, b""), "anthropic"))
    no_key = request("GET", "/v1/models", b"", auth=None)
    cases.append(Case("GET /v1/models, no key", no_key, "anthropic", expect=401))
    return cases


def admin_cases() -> list[Case]:
    """The admin API (its errors have Anthropic's shape): 401 without the admin token, 400 for a
    body it cannot use."""
    bearer = b"Authorization: Bearer " + ADMIN.encode()
    head = request("POST", "/admin/keys", None, auth=bearer, length=False)[:-2]
    posts = [
        ("not JSON", b"{nope"),
        ("array", b"[]"),
        ("invalid UTF-8", b"\xff\xfe"),
        ("wrong field types", b'{"name": 5, "rpm": "x"}'),
        ("deep nesting", b"[" * 10_000 + b"]" * 10_000),
    ]
    cases = [
        Case("admin, no token", request("GET", "/admin/keys", b"", auth=None), "anthropic", expect=401),
        Case("admin, client key", request("GET", "/admin/keys", b""), "anthropic", expect=401),
        Case(
            "admin, Bearer with nothing",
            request("GET", "/admin/keys", b"", auth=b"Authorization: Bearer"),
            "anthropic",
            expect=401,
        ),
        Case(
            "admin, Content-Length past the body",
            head + b'Content-Length: 50\r\n\r\n{"name":',
            "anthropic",
            half_close=True,
            expect=400,
        ),
        Case(
            "admin, odd usage query",
            request("GET", "/admin/usage?since=%ff&by=nothing&limit=x", b"", auth=bearer),
            "anthropic",
            expect=400,
        ),
        Case("admin, odd key id", request("DELETE", "/admin/keys/%ff%00", b"", auth=bearer), "anthropic"),
    ]
    for name, data in posts:
        raw = request("POST", "/admin/keys", data, auth=bearer)
        cases.append(Case(f"admin, {name}", raw, "anthropic", expect=400))
    return cases


def all_groups() -> dict[str, list[Case]]:
    rng = random.Random(SEED)
    groups = {
        "bodies": body_cases(rng),
        "headers": header_cases(rng),
        "framing": framing_cases(),
        "routes": route_cases(),
        "admin": admin_cases(),
    }
    for cases in groups.values():
        names = [c.name for c in cases]
        assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    return groups


GROUPS = all_groups()


def test_case_list_is_bounded_and_deterministic() -> None:
    again = all_groups()
    assert {g: [c.raw for c in cs] for g, cs in again.items()} == {
        g: [c.raw for c in cs] for g, cs in GROUPS.items()
    }
    assert sum(len(cs) for cs in GROUPS.values()) <= 400


@pytest.mark.parametrize("group", list(GROUPS))
def test_bad_input_gets_a_clean_error(gw: GatewayProcess, up: FakeUpstream, group: str) -> None:
    run(gw, up, GROUPS[group])


def test_the_checks_catch_what_they_look_for() -> None:
    """The per-answer checks, on made-up answers: each violation is named, a clean answer passes."""

    def answer(status: int, body: bytes, ctype: str = "application/json") -> Answer:
        head = f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n"
        return parse_answer(head.encode() + body, head_request=False)

    ant = Case("a", request("POST", MESSAGES, b"{}"), "anthropic", expect=400)
    oai = Case("o", request("POST", CHAT, b"{}"), "openai")
    ant_err = b'{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}'
    oai_err = b'{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}'
    assert problems(ant, answer(400, ant_err)) == []
    assert problems(oai, answer(400, oai_err)) == []
    assert problems(ant, answer(404, ant_err)) == ["status 404, wanted 400"]
    assert any("anthropic shape" in p for p in problems(ant, answer(400, oai_err)))
    assert any("openai shape" in p for p in problems(oai, answer(400, ant_err)))
    assert any("content-type" in p for p in problems(oai, answer(400, oai_err, "text/plain")))
    assert any("not JSON" in p for p in problems(oai, answer(400, b"Bad Request")))
    assert "status 400 with an empty body" in problems(oai, answer(400, b""))
    assert problems(Case("p", b"GET / HTTP/1.1\r\n\r\n", "openai", protocol=True), answer(400, b"")) == []
    assert "status 502" in problems(oai, answer(502, oai_err))
    leak = oai_err.replace(b"bad", OAI_KEY.encode())
    assert f"answer shows the secret {OAI_KEY}" in problems(oai, answer(400, leak))
    assert "answer shows a traceback" in problems(oai, answer(200, b"Traceback (most recent call last)"))


@pytest.mark.parametrize("path", [MESSAGES, COUNT, CHAT])
def test_a_model_given_twice_is_refused_before_any_upstream_sees_it(
    gw: GatewayProcess, up: FakeUpstream, path: str
) -> None:
    # A key allowed only `gpt`, naming both: the gateway would check the last one, and an
    # upstream whose parser keeps the first would serve a model the key may not use.
    up.clear()
    for first, last in (("claude", "gpt"), ("gpt", "claude"), ("gpt", "gpt")):
        raw = b'{"model": "%s", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "model": "%s"}'
        case = Case(
            f"{path} model {first} then {last}",
            request(
                "POST", path, raw % (first.encode(), last.encode()), auth=b"x-api-key: " + NARROW.encode()
            ),
            api_of(path),
            expect=400,
        )
        answer = exchange(gw.port, case)
        assert problems(case, answer) == [], answer.body
        assert b"appears twice" in answer.body and b'\\"model\\"' in answer.body, answer.body
    assert up.requests == []
