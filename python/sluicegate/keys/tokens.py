"""Router-issued tokens: self-describing, safe to log by key id, verified by a constant-time hash compare.

    sgk_<user>_<project>_<env>_<key id>_<secret>
    sgk_alice_payments_dev_q3v7kx2mbd5a_7w3n...   (secret: 32 base32 characters, 160 bits)

The attribution fields are for people reading logs and configs; the gateway never trusts them:
attribution comes from the stored key. Each field keeps `A-Z a-z 0-9 . + -` and writes any other
byte as `~HH` (so `_` always separates fields, and the whole token stays within RFC 6750's
bearer-token characters). An absent field is empty. Only sha256 of the whole token is stored,
so a token whose fields were edited does not verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "sgk"
KEY_ID_LEN = 12
SECRET_LEN = 32  # base32 characters, 5 bits each: 160 bits
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_KEY_ID = re.compile(rf"^[{_B32}]{{{KEY_ID_LEN}}}$")
_SECRET = re.compile(rf"^[{_B32}]{{{SECRET_LEN}}}$")
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.+-")
_FIELD_CHARS = _SAFE | {"~"}


@dataclass(frozen=True, slots=True)
class ParsedToken:
    user: str | None
    project: str | None
    env: str | None
    key_id: str
    secret: str


def new_key_id() -> str:
    return "".join(secrets.choice(_B32) for _ in range(KEY_ID_LEN))


def new_secret() -> str:
    return base64.b32encode(secrets.token_bytes(SECRET_LEN * 5 // 8)).decode().lower()


def make_token(
    key_id: str, user: str | None, project: str | None, env: str | None, secret: str | None = None
) -> str:
    if not _KEY_ID.match(key_id):
        raise ValueError(f"invalid key id {key_id!r}")
    secret = secret or new_secret()
    return "_".join((PREFIX, _escape(user), _escape(project), _escape(env), key_id, secret))


def parse_token(token: str) -> ParsedToken | None:
    """The token's fields, or None when it is not a well-formed sluicegate token."""
    if not token.startswith(PREFIX + "_"):
        return None
    parts = token.split("_")
    if len(parts) != 6 or not _KEY_ID.match(parts[4]) or not _SECRET.match(parts[5]):
        return None
    if any(c not in _FIELD_CHARS for part in parts[1:4] for c in part):
        return None
    try:
        user, project, env = (_unescape(p) for p in parts[1:4])
    except ValueError:
        return None
    return ParsedToken(user, project, env, parts[4], parts[5])


def key_id_of(token: str) -> str | None:
    """The key id alone, cheaply (the request path's first step); None if not a sluicegate token."""
    if not token.startswith(PREFIX + "_") or len(token) < KEY_ID_LEN + SECRET_LEN + 6:
        return None
    key_id = token[-(SECRET_LEN + 1 + KEY_ID_LEN) : -(SECRET_LEN + 1)]
    return key_id if token[-(SECRET_LEN + 1)] == "_" and _KEY_ID.match(key_id) else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def verify(token: str, token_sha256: str) -> bool:
    return hmac.compare_digest(hash_token(token), token_sha256)


def redact(token: str) -> str:
    """Everything but the secret: what logs may show."""
    p = parse_token(token)
    if p is None:
        return "<not a sluicegate token>"
    return "_".join((PREFIX, _escape(p.user), _escape(p.project), _escape(p.env), p.key_id, "…"))


def _escape(value: str | None) -> str:
    if not value:
        return ""
    return "".join(c if c in _SAFE else "".join(f"~{b:02X}" for b in c.encode()) for c in value)


def _unescape(text: str) -> str | None:
    if not text:
        return None
    if "~" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "~":
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out += c.encode()
            i += 1
    return out.decode()
