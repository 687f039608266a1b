"""How the SQLite ledger stores records: one row per batch, and sums per UTC day.

`usage_batches` holds each batch the writer stored as one row, its records a JSON array of
arrays (each record's fields in `record.FIELDS` order), keyed by its first record's time and
request id so a retried batch adds nothing. `usage_daily` holds, per UTC day and attribution
(key, user, project, env, group, target, upstream model), the requests, errors, tokens and cost
of the records of that day; the writer adds a batch's sums in the transaction that stores it.
`usage_records` is a view that unpacks the batches into the columns of one record a row, so
reports, `records()` and SQL against the file read as before.

Why: a row of 30 columns and an index entry cost SQLite ~12,800 instructions a record on the
gateway's core (its VDBE runs a few hundred a column), against ~1,400 a record stored within a
batch's text (measured with callgrind, rust/ledger_batch.rs). Reading through the view costs
~10 us a record (json_each and json_extract), ~10x a plain table's scan, so what reads whole days
(budgets seeded at start-up, reports over whole days) reads the daily sums instead.

PostgreSQL keeps one row per record (ledger_pg.py): it unpacks a batch's JSON text into rows
itself, so the inserts are the database host's work, not the gateway's.
"""

from __future__ import annotations

from .record import COLUMNS, FIELDS

_COLUMN_OF = dict(COLUMNS)
_FIELD_INDEX = {field: i for i, field in enumerate(FIELDS)}

# The record field the writer keys a batch by (with the time, field 0).
ID_FIELD = _FIELD_INDEX["request_id"]

# What a daily row is attributed by: report dimensions (BY_COLUMNS names, and the key's name that
# reports by key show) -> record fields. Session and agent ids are left out: about one daily row
# per session would make a second copy of the ledger.
ROLLUP_DIMENSIONS: dict[str, str] = {
    "key": "key_id",
    "key_name": "key_name",
    "user": "user",
    "project": "project",
    "env": "env",
    "group": "group",
    "target": "target",
    "model": "upstream_model",
}
_ROLLUP_INTS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")
_ROLLUP_REALS = ("cost_usd",)
_ROLLUP_OPTIONAL = ("upstream_cost_usd",)

# What the extension's batch builder takes: (dimensions, status, int sums, real sums, optional
# sums), field indexes each.
ROLLUP_SPEC: tuple[list[int], int, list[int], list[int], list[int]] = (
    [_FIELD_INDEX[f] for f in ROLLUP_DIMENSIONS.values()],
    _FIELD_INDEX["status"],
    [_FIELD_INDEX[f] for f in _ROLLUP_INTS],
    [_FIELD_INDEX[f] for f in _ROLLUP_REALS],
    [_FIELD_INDEX[f] for f in _ROLLUP_OPTIONAL],
)

# Fields a record must have (a null, NaN or infinity is refused as IntegrityError, as the NOT NULL
# columns of the one-row-a-record table refused them).
_REQUIRED = (
    "ts",
    "request_id",
    "endpoint",
    "status",
    "stream",
    *_ROLLUP_INTS,
    "image_count",
    "cost_usd",
    "duration_ms",
    "client_disconnected",
    "usage_estimated",
)

# A record's shape as the extension's writer takes it: (width, request id field, required fields,
# rollup spec).
SHAPE = (len(FIELDS), ID_FIELD, [_FIELD_INDEX[f] for f in _REQUIRED], ROLLUP_SPEC)

DIMENSION_COLUMNS = ["day", *(_COLUMN_OF[f] for f in ROLLUP_DIMENSIONS.values())]
_SUM_COLUMNS = [
    "requests",
    "errors",
    *(_COLUMN_OF[f] for f in _ROLLUP_INTS),
    *(_COLUMN_OF[f] for f in _ROLLUP_REALS),
    # An optional sum and the count of records that had the field (none: the report shows null).
    *(c for f in _ROLLUP_OPTIONAL for c in (_COLUMN_OF[f], _COLUMN_OF[f] + "_count")),
]

BATCH_SQL = (
    "INSERT INTO usage_batches (first_ts, first_request_id, ts_min, ts_max, n, records)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (first_ts, first_request_id) DO NOTHING"
)
ROLLUP_SQL = (
    f"INSERT INTO usage_daily ({', '.join(DIMENSION_COLUMNS + _SUM_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in DIMENSION_COLUMNS + _SUM_COLUMNS)})"
    f" ON CONFLICT ({', '.join(DIMENSION_COLUMNS)}) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _SUM_COLUMNS)
)

# Batch ids times this plus a record's place in its batch give the view's `id` (ascending in
# the order records were stored); batch_max is bounded below it (config).
BATCH_ID_SPAN = 1 << 20


def schema_statements() -> list[str]:
    """The tables, their key, and the view (migration 5 on SQLite)."""
    dims = ", ".join(f"{c} TEXT NOT NULL" for c in DIMENSION_COLUMNS)
    sums = ", ".join(
        f"{c} {'DOUBLE PRECISION' if c.endswith('_usd') else 'BIGINT'} NOT NULL" for c in _SUM_COLUMNS
    )
    return [
        "CREATE TABLE usage_batches (id INTEGER PRIMARY KEY, first_ts DOUBLE PRECISION NOT NULL,"
        " first_request_id TEXT NOT NULL, ts_min DOUBLE PRECISION NOT NULL,"
        " ts_max DOUBLE PRECISION NOT NULL, n INTEGER NOT NULL, records TEXT NOT NULL)",
        "CREATE UNIQUE INDEX usage_batches_first ON usage_batches (first_ts, first_request_id)",
        f"CREATE TABLE usage_daily ({dims}, {sums}, PRIMARY KEY ({', '.join(DIMENSION_COLUMNS)})) WITHOUT ROWID",
    ]


def view_statement() -> str:
    cols = [
        f"(b.id * {BATCH_ID_SPAN} + j.key) AS id",
        "json_extract(j.value, '$[0]') AS ts",
        "strftime('%Y-%m-%d', json_extract(j.value, '$[0]'), 'unixepoch') AS day",
        *(f"json_extract(j.value, '$[{i}]') AS {_COLUMN_OF[f]}" for i, f in enumerate(FIELDS) if i),
        # For pruning: a query on a time range names these too, and SQLite skips whole batches.
        "b.ts_min AS batch_ts_min",
        "b.ts_max AS batch_ts_max",
    ]
    return (
        f"CREATE VIEW usage_records AS SELECT {', '.join(cols)}"
        " FROM usage_batches AS b, json_each(b.records) AS j"
    )


def convert_rows_statements(rows_table: str, batch_rows: int = 500) -> list[str]:
    """Move the records of a one-row-per-record table into batches and daily sums."""
    fields = ", ".join(_COLUMN_OF[f] for f in FIELDS)
    dims = ", ".join(f"coalesce({c}, '')" if c != "day" else c for c in DIMENSION_COLUMNS)
    sums = ", ".join(
        [
            "COUNT(*)",
            "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END)",
            *(f"SUM({_COLUMN_OF[f]})" for f in _ROLLUP_INTS + _ROLLUP_REALS),
            *(f"coalesce(SUM({_COLUMN_OF[f]}), 0), COUNT({_COLUMN_OF[f]})" for f in _ROLLUP_OPTIONAL),
        ]
    )
    group = ", ".join(str(i + 1) for i in range(len(DIMENSION_COLUMNS)))
    return [
        # json(): a subquery's JSON loses its subtype, and json_group_array would quote it.
        "INSERT INTO usage_batches (first_ts, first_request_id, ts_min, ts_max, n, records)"
        " SELECT MIN(ts), request_id, MIN(ts), MAX(ts), COUNT(*), json_group_array(json(rec)) FROM ("
        f"  SELECT ts, request_id, json_array({fields}) AS rec,"
        f"  (ROW_NUMBER() OVER (ORDER BY ts, id) - 1) / {int(batch_rows)} AS chunk"
        f"  FROM {rows_table} ORDER BY ts, id)"
        " GROUP BY chunk ORDER BY chunk",
        f"INSERT INTO usage_daily ({', '.join(DIMENSION_COLUMNS + _SUM_COLUMNS)})"
        f" SELECT {dims}, {sums} FROM {rows_table} GROUP BY {group}",
    ]
