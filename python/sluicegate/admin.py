"""The admin HTTP API under /admin/: keys and usage, guarded by its own token.

Off (404 for every path) unless `admin.token` is configured. A developer key never opens it:
only the admin token's sha256 is compared, in constant time. Store calls run in a thread so
the event loop never waits on SQLite or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from .keys import KeyStore
from .usage.ledger import BY_COLUMNS
from .usage.report import parse_time

_JSON = [("content-type", "application/json")]
_CREATE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "user": str,
    "project": str,
    "env": str,
    "rpm": int,
    "tpm": int,
    "max_concurrent": int,
    "budget_usd": (int, float),
    "budget_period": str,
}

Response = tuple[int, list[tuple[str, str]], bytes]


@dataclass(frozen=True, slots=True)
class AdminContext:
    admin_token_sha256: str | None
    keystore: KeyStore
    ledger: Any  # usage.Ledger (or NullLedger)


def admin_token_sha256(token: str | None) -> str | None:
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def _json(status: int, body: Any) -> Response:
    return status, list(_JSON), orjson.dumps(body)


def _error(status: int, kind: str, message: str) -> Response:
    return _json(status, {"type": "error", "error": {"type": kind, "message": message}})


def _authorized(headers: dict[str, str], expected_sha256: str) -> bool:
    auth = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    presented = hashlib.sha256(token.strip().encode()).hexdigest()
    return hmac.compare_digest(presented, expected_sha256)


async def handle_admin(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes, ctx: AdminContext
) -> Response:
    if not ctx.admin_token_sha256:
        return _error(404, "not_found_error", f"no route for {method} {path}")
    if not _authorized(headers, ctx.admin_token_sha256):
        return _error(401, "authentication_error", "admin API: missing or invalid admin token")
    try:
        return await _route(method, path.rstrip("/") or "/", query, body, ctx)
    except ValueError as exc:
        return _error(400, "invalid_request_error", str(exc))
    except Exception as exc:  # the store is down, or a bug: say so, never a traceback
        return _error(503, "api_error", f"admin API: store unavailable ({type(exc).__name__})")


async def _route(method: str, path: str, query: str, body: bytes, ctx: AdminContext) -> Response:
    parts = path.strip("/").split("/")
    if parts[:2] == ["admin", "keys"]:
        if len(parts) == 2:
            if method == "GET":
                keys = await asyncio.to_thread(ctx.keystore.list)
                return _json(200, {"keys": [k.to_json() for k in keys]})
            if method == "POST":
                return await _create(body, ctx)
            return _error(405, "invalid_request_error", f"method {method} not allowed on {path}")
        if len(parts) == 4 and parts[3] in ("revoke", "rotate"):
            if method != "POST":
                return _error(405, "invalid_request_error", f"method {method} not allowed on {path}")
            key_id = parts[2]
            if parts[3] == "revoke":
                if await asyncio.to_thread(ctx.keystore.revoke, key_id):
                    return _json(200, {"key_id": key_id, "revoked": True})
                return _error(404, "not_found_error", f"no active key {key_id}")
            try:
                entry, token = await asyncio.to_thread(ctx.keystore.rotate, key_id)
            except KeyError:
                return _error(404, "not_found_error", f"no active key {key_id}")
            return _json(200, {"key": entry.to_json(), "token": token})
    if parts[:2] == ["admin", "usage"] and len(parts) in (2, 3):
        if method != "GET":
            return _error(405, "invalid_request_error", f"method {method} not allowed on {path}")
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=False).items()}
        since = parse_time(q.pop("since")) if "since" in q else None
        until = parse_time(q.pop("until")) if "until" in q else None
        filters = {k: q.pop(k) for k in list(q) if k in BY_COLUMNS}
        if len(parts) == 3:
            if parts[2] != "records":
                return _error(404, "not_found_error", f"no route for {method} {path}")
            limit = int(q.pop("limit", "1000"))
            recs = await asyncio.to_thread(ctx.ledger.records, since, until, filters, min(limit, 100_000))
            return _json(200, {"records": recs})
        by = q.pop("by", "key")
        rows = await asyncio.to_thread(ctx.ledger.query, by, since, until, filters)
        return _json(200, {"by": by, "since": since, "until": until, "rows": rows})
    return _error(404, "not_found_error", f"no route for {method} {path}")


async def _create(body: bytes, ctx: AdminContext) -> Response:
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise ValueError("body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name == "models":
            if isinstance(value, str):
                value = value.split(",")
            if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                raise ValueError("models must be a list of model names")
            kwargs["models"] = value
            continue
        kind = _CREATE_FIELDS.get(name)
        if kind is None:
            raise ValueError(f"unknown field {name!r}")
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ValueError(f"{name} has the wrong type")
        kwargs[name] = value
    entry, token = await asyncio.to_thread(lambda: ctx.keystore.create(**kwargs))
    return _json(201, {"key": entry.to_json(), "token": token})
