"""Rendering usage aggregations (table, csv, json) and parsing the --since/--until times."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NUMERIC = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
)


def parse_time(text: str, *, now: float | None = None) -> float:
    """Unix seconds from `1763769600`, `2026-11-22`, `2026-11-22T10:00:00Z`, `24h`/`7d` ago, `today`."""
    s = text.strip()
    now = time.time() if now is None else now
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    m = _RELATIVE.match(s)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    if s in ("today", "yesterday"):
        day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return day.timestamp() - (86400 if s == "yesterday" else 0)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read time {text!r}: use unix seconds, YYYY-MM-DD, an ISO time, 'today', or 30m/24h/7d"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def render(rows: list[dict[str, Any]], by: str, fmt: str) -> str:
    if fmt == "json":
        return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        columns = list(rows[0]) if rows else _columns(by)
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return buf.getvalue()
    if fmt == "table":
        return _table(rows, by)
    raise ValueError(f"unknown format {fmt!r}; one of table, csv, json")


def render_records(records: list[dict[str, Any]]) -> str:
    """JSON lines, one record per line."""
    return "".join(orjson.dumps(r).decode() + "\n" for r in records)


def _columns(by: str) -> list[str]:
    head = [by, "key_name"] if by == "key" else [by]
    return [*head, *_NUMERIC, "cost_usd", "upstream_cost_usd"]


def _table(rows: list[dict[str, Any]], by: str) -> str:
    headers = [by, "name"] if by == "key" else [by]
    headers += ["requests", "errors", "input", "output", "cache_write", "cache_read", "cost_usd"]
    body: list[list[str]] = []
    totals = dict.fromkeys((*_NUMERIC, "cost_usd"), 0.0)
    for row in rows:
        line = [_cell(row.get(by))]
        if by == "key":
            line.append(_cell(row.get("key_name")))
        line += [str(row[k]) for k in _NUMERIC] + [f"{row['cost_usd']:.4f}"]
        body.append(line)
        for k in totals:
            totals[k] += row[k]
    total = ["TOTAL"] + ([""] if by == "key" else [])
    total += [str(int(totals[k])) for k in _NUMERIC] + [f"{totals['cost_usd']:.4f}"]
    table = [headers, *body, total]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    text_cols = 2 if by == "key" else 1
    out = []
    for n, r in enumerate(table):
        if n == len(table) - 1:
            out.append("  ".join("-" * w for w in widths))
        cells = [
            c.ljust(w) if i < text_cols else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def _cell(v: Any) -> str:
    return "-" if v is None else str(v)
