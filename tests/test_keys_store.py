"""Key store on a real SQLite file and a real PostgreSQL: create, lookup, revoke, rotate, and a
second instance (another replica) seeing changes within refresh_s."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _services import PostgresServer, pg_db_url, postgres_server, postgres_url  # noqa: F401
from sluicegate.keys import KeyStore


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keys.db"
    return str(request.getfixturevalue("pg_db_url"))


def _wait_for(cond: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
    return time.monotonic() - start


def test_create_lookup_list(store_url: str) -> None:
    ks = KeyStore.from_url(store_url)
    ks.start(refresh_s=0.1)
    try:
        entry, token = ks.create(
            user="alice", project="payments", env="dev", models=["sonnet", "haiku"], rpm=60
        )
        assert token.startswith(f"sgk_alice_payments_dev_{entry.key_id}_")
        assert entry.name == "alice-payments-dev"
        found = ks.lookup(token)
        assert found is not None
        assert (found.key_id, found.user, found.models, found.rpm, found.revoked) == (
            entry.key_id,
            "alice",
            ("sonnet", "haiku"),
            60,
            False,
        )
        assert ks.lookup(token[:-1] + ("a" if token[-1] != "a" else "b")) is None
        assert ks.lookup("sk-ant-not-ours") is None
        e2, _ = ks.create(name="ci", budget_usd=5.0, budget_period="day")
        listed = {e.key_id: e for e in ks.list()}
        assert set(listed) == {entry.key_id, e2.key_id}
        assert listed[e2.key_id].budget_usd == 5.0 and listed[e2.key_id].budget_period == "day"
    finally:
        ks.close()


def test_revocation_and_rotation_reach_another_replica_within_refresh(store_url: str) -> None:
    admin, replica = KeyStore.from_url(store_url), KeyStore.from_url(store_url)
    admin.start(refresh_s=0.2)
    _, token = admin.create(user="bob", project="web")
    entry_b, token_b = admin.create(user="carol")
    replica.start(refresh_s=0.2)
    try:
        assert replica.lookup(token) is not None
        key_id = replica.lookup(token).key_id  # type: ignore[union-attr]
        assert admin.revoke(key_id) is True
        assert admin.revoke(key_id) is False  # already revoked
        assert admin.lookup(token) is None  # the instance that revoked sees it at once
        took = _wait_for(lambda: replica.lookup(token) is None, timeout=2.0)
        assert took < 0.2 + 0.5
        assert [e.revoked for e in admin.list() if e.key_id == key_id] == [True]
        with pytest.raises(KeyError):
            admin.rotate(key_id)

        entry_r, new_token = admin.rotate(entry_b.key_id)
        assert entry_r.key_id == entry_b.key_id and new_token != token_b
        _wait_for(
            lambda: replica.lookup(token_b) is None and replica.lookup(new_token) is not None, timeout=2.0
        )
    finally:
        admin.close()
        replica.close()


def test_lookup_keeps_last_keys_when_postgres_is_down(
    pg_db_url: str,  # noqa: F811
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    ks = KeyStore.from_url(pg_db_url)
    _, token = ks.create(user="dana")
    ks.start(refresh_s=0.05)
    try:
        with postgres_server.down():
            time.sleep(0.2)
            assert ks.refresh() is False
            assert ks.lookup(token) is not None
        assert ks.refresh() is True
    finally:
        ks.close()


def test_invalid_limits_are_refused(tmp_path: Path) -> None:
    ks = KeyStore.from_url(f"sqlite:///{tmp_path}/k.db")
    with pytest.raises(ValueError):
        ks.create(budget_usd=1.0, budget_period="week")
    with pytest.raises(ValueError):
        ks.create(rpm=0)
    entry, _ = ks.create(budget_usd=2.0)
    assert entry.budget_period == "month"


def test_a_token_hashed_by_the_caller_is_not_hashed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluicegate.keys import tokens

    ks = KeyStore.from_url(f"sqlite:///{tmp_path}/keys.db")
    ks.start(refresh_s=60)
    try:
        entry, token = ks.create(user="dana")
        digest = tokens.hash_token(token)
        hashed: list[str] = []
        real = tokens.hash_token
        monkeypatch.setattr(tokens, "hash_token", lambda t: hashed.append(t) or real(t))
        found = ks.lookup(token, digest)
        assert found is not None and found.key_id == entry.key_id and hashed == []
        assert ks.lookup(token) == found and hashed == [token]  # no digest given: hashed here
        # The digest is checked as the store's own would be: a wrong one is refused.
        assert ks.lookup(token, real(token + "x")) is None
        assert ks.revoke(entry.key_id) is True
        assert ks.lookup(token, digest) is None
    finally:
        ks.close()
