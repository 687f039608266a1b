"""Usage aggregations by key/user/project/session/group/day over a range, on SQLite and PostgreSQL,
rendered as table, csv and json."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _services import pg_db_url, postgres_server, postgres_url  # noqa: F401
from sluicegate.usage import Ledger, Price, UsageRecord, cost_usd
from sluicegate.usage.report import parse_time, render

PRICE = Price(3.0, 15.0, 3.75, 0.30)
DAY1 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC).timestamp()


def _rec(
    n: int, ts: float, key: str, user: str, project: str, session: str, group: str, **kw: object
) -> UsageRecord:
    tokens = dict(input_tokens=100, output_tokens=10, cache_creation_tokens=1000, cache_read_tokens=5000)
    tokens.update({k: v for k, v in kw.items() if k.endswith("_tokens")})  # type: ignore[misc]
    return UsageRecord(
        ts=ts,
        request_id=f"r{n}",
        endpoint="messages",
        key_id=key,
        key_name=f"{user}-laptop",
        user=user,
        project=project,
        env="dev",
        group=group,
        target=f"anthropic/{group}",
        upstream_model=f"claude-{group}",
        requested_model=group,
        session_id=session,
        agent_id=None,
        parent_agent_id=None,
        status=int(kw.get("status", 200)),  # type: ignore[call-overload]
        stream=True,
        cost_usd=cost_usd(
            PRICE,
            tokens["input_tokens"],
            tokens["output_tokens"],
            tokens["cache_creation_tokens"],
            tokens["cache_read_tokens"],
        ),
        **tokens,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    url = (
        f"sqlite:///{tmp_path}/usage.db"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_db_url")
    )
    led = Ledger.from_url(url)
    recs = [
        _rec(1, DAY1, "k1", "alice", "payments", "s1", "sonnet"),
        _rec(2, DAY1 + 60, "k1", "alice", "payments", "s1", "haiku"),
        _rec(3, DAY2, "k1", "alice", "payments", "s2", "sonnet"),
        _rec(4, DAY2 + 1, "k2", "bob", "web", "s3", "sonnet", status=429, input_tokens=0, output_tokens=0,
             cache_creation_tokens=0, cache_read_tokens=0),
        _rec(5, DAY2 + 2, "k2", "bob", "web", "s3", "sonnet"),
    ]  # fmt: skip
    for r in recs:
        led.submit(r)
    led.close()
    return led


ONE = (100 * 3.0 + 10 * 15.0 + 1000 * 3.75 + 5000 * 0.30) / 1e6


def test_by_key_user_project_session_group_day(ledger: Ledger) -> None:
    by_key = {r["key"]: r for r in ledger.query("key")}
    assert by_key["k1"]["requests"] == 3 and by_key["k1"]["key_name"] == "alice-laptop"
    assert by_key["k1"]["cost_usd"] == pytest.approx(3 * ONE)
    assert by_key["k2"]["errors"] == 1 and by_key["k2"]["cache_read_tokens"] == 5000
    assert {r["user"]: r["requests"] for r in ledger.query("user")} == {"alice": 3, "bob": 2}
    assert {r["project"]: r["input_tokens"] for r in ledger.query("project")} == {"payments": 300, "web": 100}
    assert {r["session"]: r["requests"] for r in ledger.query("session")} == {"s1": 2, "s2": 1, "s3": 2}
    assert {r["group"]: r["requests"] for r in ledger.query("group")} == {"sonnet": 4, "haiku": 1}
    days = ledger.query("day")
    assert [(r["day"], r["requests"]) for r in days] == [("2026-11-21", 2), ("2026-11-22", 3)]


def test_spend_since_for_budget_seeding(ledger: Ledger) -> None:
    since = parse_time("2026-11-22")
    by_period = ledger.spend_by_period("project", day_start=since, month_start=since)
    spend = {project: day for project, (day, _month) in by_period.items()}
    assert spend == pytest.approx({"payments": ONE, "web": ONE})


def test_since_until_and_filters(ledger: Ledger) -> None:
    since = parse_time("2026-11-22")
    rows = ledger.query("user", since=since)
    assert {r["user"]: r["requests"] for r in rows} == {"alice": 1, "bob": 2}
    rows = ledger.query("day", until=since)
    assert [r["day"] for r in rows] == ["2026-11-21"]
    assert ledger.query("session", filters={"user": "alice"})[0]["user" if False else "session"] in (
        "s1",
        "s2",
    )
    recs = ledger.records(since=since, filters={"project": "web"})
    assert [r["request_id"] for r in recs] == ["r4", "r5"] and recs[0]["status"] == 429
    with pytest.raises(ValueError):
        ledger.query("colour")


def test_formats(ledger: Ledger) -> None:
    rows = ledger.query("project")
    table = render(rows, "project", "table")
    lines = table.splitlines()
    assert lines[0].split() == [
        "project",
        "requests",
        "errors",
        "input",
        "output",
        "cache_write",
        "cache_read",
        "cost_usd",
    ]
    assert lines[-1].split()[:2] == ["TOTAL", "5"]
    parsed = list(csv.DictReader(io.StringIO(render(rows, "project", "csv"))))
    assert {r["project"]: int(r["requests"]) for r in parsed} == {"payments": 3, "web": 2}
    data = json.loads(render(rows, "project", "json"))
    assert data == rows


def test_parse_time_forms() -> None:
    now = 1_800_000_000.0
    assert parse_time("1700000000") == 1_700_000_000.0
    assert parse_time("24h", now=now) == now - 86400
    assert parse_time("2026-11-22") == DAY2 - 9 * 3600
    assert parse_time("2026-11-22T09:00:00Z") == DAY2
    assert parse_time("today", now=DAY2) == DAY2 - 9 * 3600
    with pytest.raises(ValueError):
        parse_time("last tuesday")


def _by_hand(
    records: list[dict[str, object]], by: str, filters: dict[str, str]
) -> dict[object, tuple[int, ...]]:
    """What a report over these records must say, summed in Python: (requests, errors, input tokens,
    cost in 1e-10 USD, upstream cost or None) per value of `by`."""
    from sluicegate.usage import BY_COLUMNS
    from sluicegate.usage.ledger import _FIELD_OF

    def field(r: dict[str, object], name: str) -> object:
        return r[_FIELD_OF[BY_COLUMNS[name]]] if name != "day" else r["day"]

    out: dict[object, list[object]] = {}
    for r in records:
        if any(field(r, k) != v for k, v in filters.items()):
            continue
        t = out.setdefault(field(r, by), [0, 0, 0, 0.0, None])
        t[0] = int(t[0]) + 1  # type: ignore[call-overload]
        t[1] = int(t[1]) + (int(r["status"]) >= 400)  # type: ignore[call-overload]
        t[2] = int(t[2]) + int(r["input_tokens"])  # type: ignore[call-overload]
        t[3] = float(t[3]) + float(r["cost_usd"])  # type: ignore[arg-type]
        if r["upstream_cost_usd"] is not None:
            t[4] = float(t[4] or 0.0) + float(r["upstream_cost_usd"])  # type: ignore[arg-type]
    return {
        k: (
            int(v[0]),
            int(v[1]),
            int(v[2]),
            round(float(v[3]) * 1e10),
            None if v[4] is None else round(float(v[4]) * 1e10),
        )  # type: ignore[arg-type, call-overload]
        for k, v in out.items()
    }


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_reports_over_any_range_match_the_records(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # On SQLite a report reads the daily sums for whole days and the records of the partial days
    # at its ends: over random ranges, dimensions and filters it must say what the records say.
    import random
    import time

    rnd = random.Random(7)
    url = f"sqlite:///{tmp_path}/u.db" if store == "sqlite" else str(request.getfixturevalue("pg_db_url"))
    led = Ledger.from_url(url, batch_max=37)
    start = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    for n in range(400):
        user = rnd.choice(["alice", "bob", None])
        led.submit(
            UsageRecord(
                ts=start + rnd.uniform(0, 5 * 86400),
                request_id=f"r{n}",
                endpoint="messages",
                key_id=rnd.choice(["k1", "k2", "k3"]),
                key_name=rnd.choice(["laptop", "ci"]),
                user=user,
                project=rnd.choice(["payments", "web"]),
                env="dev",
                group=rnd.choice(["sonnet", "haiku"]),
                target="anthropic/x",
                upstream_model="claude-x",
                requested_model="x",
                session_id=f"s{rnd.randrange(20)}",
                agent_id=None,
                parent_agent_id=None,
                status=rnd.choice([200, 200, 200, 429, 500]),
                stream=True,
                input_tokens=rnd.randrange(1000),
                cost_usd=rnd.randrange(10**6) / 1e8,
                upstream_cost_usd=rnd.choice([None, rnd.randrange(1000) / 1e6]),
            )
        )
    led.close()
    records = led.records()
    assert len(records) == 400
    for r in records:
        r["day"] = time.strftime("%Y-%m-%d", time.gmtime(float(r["ts"])))  # type: ignore[arg-type]
    for _ in range(80):
        by = rnd.choice(["key", "user", "project", "group", "day", "session"])
        since = rnd.choice([None, start + rnd.uniform(-86400, 6 * 86400), start + 86400 * rnd.randrange(5)])
        until = rnd.choice(
            [None, (since or start) + rnd.uniform(0, 4 * 86400), start + 86400 * rnd.randrange(1, 6)]
        )
        filters = rnd.choice([{}, {"project": "web"}, {"user": "alice"}, {"session": "s3"}])
        inside = [
            r
            for r in records
            if (since is None or float(r["ts"]) >= since) and (until is None or float(r["ts"]) < until)  # type: ignore[arg-type]
        ]
        got = {
            r[by]: (
                r["requests"],
                r["errors"],
                r["input_tokens"],
                round(r["cost_usd"] * 1e10),
                None if r["upstream_cost_usd"] is None else round(r["upstream_cost_usd"] * 1e10),
            )
            for r in led.query(by, since, until, filters)
        }
        assert got == _by_hand(inside, by, filters), (by, since, until, filters)
