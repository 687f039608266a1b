"""The admin API handler against a real SQLite key store and ledger."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sluicegate.admin import AdminContext, admin_token_sha256, handle_admin
from sluicegate.keys import KeyStore
from sluicegate.usage import Ledger, UsageRecord

ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[AdminContext]:
    ks = KeyStore.from_url(f"sqlite:///{tmp_path}/keys.db")
    ks.start(refresh_s=60)
    ledger = Ledger.from_url(f"sqlite:///{tmp_path}/usage.db")
    yield AdminContext(admin_token_sha256(ADMIN), ks, ledger)
    ks.close()


def call(
    ctx: AdminContext, method: str, path: str, query: str = "", body: Any = None, token: str | None = ADMIN
) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    status, hdrs, out = asyncio.run(handle_admin(method, path, query, headers, raw, ctx))
    assert ("content-type", "application/json") in hdrs
    return status, json.loads(out)


def test_off_without_admin_token(ctx: AdminContext) -> None:
    off = AdminContext(None, ctx.keystore, ctx.ledger)
    assert call(off, "GET", "/admin/keys")[0] == 404
    assert call(off, "GET", "/admin/keys", token="")[0] == 404


def test_auth_required_and_developer_keys_never_open_it(ctx: AdminContext) -> None:
    status, body = call(ctx, "GET", "/admin/keys", token=None)
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert call(ctx, "GET", "/admin/keys", token="wrong")[0] == 401
    _, dev_token = ctx.keystore.create(user="mallory")
    assert call(ctx, "GET", "/admin/keys", token=dev_token)[0] == 401


def test_keys_create_list_rotate_revoke(ctx: AdminContext) -> None:
    status, body = call(
        ctx, "POST", "/admin/keys", body={"user": "alice", "project": "p", "models": ["sonnet"], "rpm": 5}
    )
    assert status == 201
    key_id, token = body["key"]["key_id"], body["token"]
    assert ctx.keystore.lookup(token) is not None
    status, body = call(ctx, "GET", "/admin/keys")
    assert status == 200 and [k["key_id"] for k in body["keys"]] == [key_id]
    assert "token" not in json.dumps(body["keys"])
    status, body = call(ctx, "POST", f"/admin/keys/{key_id}/rotate")
    assert status == 200 and body["token"] != token
    assert ctx.keystore.lookup(token) is None and ctx.keystore.lookup(body["token"]) is not None
    status, body = call(ctx, "POST", f"/admin/keys/{key_id}/revoke")
    assert status == 200 and body["revoked"] is True
    assert call(ctx, "POST", f"/admin/keys/{key_id}/revoke")[0] == 404
    assert call(ctx, "POST", f"/admin/keys/{key_id}/rotate")[0] == 404


def test_bad_requests(ctx: AdminContext) -> None:
    assert call(ctx, "POST", "/admin/keys", body=b"{not json")[0] == 400
    status, body = call(ctx, "POST", "/admin/keys", body={"colour": "red"})
    assert status == 400 and "colour" in body["error"]["message"]
    assert call(ctx, "POST", "/admin/keys", body={"rpm": "many"})[0] == 400
    assert call(ctx, "POST", "/admin/keys", body={"budget_usd": 5, "budget_period": "week"})[0] == 400
    assert call(ctx, "DELETE", "/admin/keys")[0] == 405
    assert call(ctx, "GET", "/admin/keys/x/revoke")[0] == 405
    assert call(ctx, "GET", "/admin/nothing")[0] == 404
    assert call(ctx, "GET", "/admin/usage", query="since=someday")[0] == 400
    assert call(ctx, "GET", "/admin/usage", query="by=colour")[0] == 400


def test_usage_queries(ctx: AdminContext) -> None:
    now = time.time()
    for i, user in enumerate(["alice", "alice", "bob"]):
        ctx.ledger.submit(
            UsageRecord(
                ts=now - 10 + i, request_id=f"r{i}", endpoint="messages", key_id="k", key_name="k", user=user,
                project="p", env=None, group="g", target="t", upstream_model="m", requested_model="g",
                session_id=None, agent_id=None, parent_agent_id=None, status=200, stream=True, input_tokens=7,
                cost_usd=0.25,
            )
        )  # fmt: skip
    ctx.ledger.close()
    status, body = call(ctx, "GET", "/admin/usage", query="by=user&since=1h")
    assert status == 200 and body["by"] == "user"
    assert {r["user"]: (r["requests"], r["input_tokens"]) for r in body["rows"]} == {
        "alice": (2, 14),
        "bob": (1, 7),
    }
    status, body = call(ctx, "GET", "/admin/usage/records", query="user=bob")
    assert status == 200 and [r["request_id"] for r in body["records"]] == ["r2"]
    status, body = call(ctx, "GET", "/admin/usage", query=f"by=day&until={now - 3600}")
    assert status == 200 and body["rows"] == []
