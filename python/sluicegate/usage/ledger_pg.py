"""How the ledger's writer stores records on PostgreSQL: one row a record, two ways in.

- A batch the extension's queue built (the default, `ledger.native_writer`): its records' JSON
  text is the one parameter of one INSERT, and PostgreSQL unpacks it into rows
  (`jsonb_array_elements`, each field cast to its column's type). The gateway's core spends
  nothing a record here: the text was written once on the loop, for the access line and the
  batch together (rust/record_text.rs). Measured: ~0.9 us of the gateway's CPU a record, against
  ~3.9-5.2 us through COPY (docs/accounting.md, "The writer").
- Rows (tuples; `native_writer: false`, and a batch PostgreSQL refused, retried a record at a
  time so that only the records it refuses are dropped): COPYed into a temporary table of the
  writer's session and moved from there with the ON CONFLICT guard, since COPY has none. A
  multi-row VALUES statement cost the gateway's CPU more than the database's: psycopg parses a
  statement over 4 KB for its placeholders on every execute, in Python (~120 us a row,
  measured); COPY's rows are formatted in C (~4-5 us a row, with the row built).

Both skip a record already stored (the same request id and time), so a retried batch adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .record import COLUMNS

ROW_COLUMNS = ", ".join(["day", *(col for _, col in COLUMNS)])  # a row's values, in order
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS usage_records_staging ON COMMIT DELETE ROWS"
    f" AS SELECT {ROW_COLUMNS} FROM usage_records WITH NO DATA"
)
_COPY = f"COPY usage_records_staging ({ROW_COLUMNS}) FROM STDIN"
_MERGE = (
    f"INSERT INTO usage_records ({ROW_COLUMNS}) SELECT {ROW_COLUMNS} FROM usage_records_staging"
    " ON CONFLICT (request_id, ts) DO NOTHING"
)
_COLUMN_TYPES = (
    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = 'usage_records'::regclass AND attnum > 0 AND NOT attisdropped"
)
# The UTC day of field 0 (the unix time) as "YYYY-MM-DD": the day of its whole seconds' floor,
# as the SQLite writer (rust/ledger.rs) and time.gmtime name it.
_DAY = "to_char(date '1970-01-01' + floor((r->>0)::float8 / 86400)::integer, 'YYYY-MM-DD')"


def write_rows(conn: Any, rows: Iterable[tuple[Any, ...]]) -> None:
    """Rows of (day, then the record's fields in order), in one transaction."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_STAGE)
        with cur.copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(_MERGE)


def batch_insert_sql(conn: Any) -> str:
    """The statement that stores a batch's records text (its one parameter). Each field is cast to
    the type the store declares for its column, read from the catalog on connecting."""
    declared = dict(conn.execute(_COLUMN_TYPES).fetchall())
    values = [_DAY]
    for i, (field, col) in enumerate(COLUMNS):
        kind = declared.get(col)
        if kind is None:
            raise RuntimeError(f"usage_records has no column {col!r} (record field {field!r})")
        values.append(f"r->>{i}" if kind == "text" else f"(r->>{i})::{kind}")
    return (
        f"INSERT INTO usage_records ({ROW_COLUMNS}) SELECT {', '.join(values)}"
        " FROM jsonb_array_elements(%s::jsonb) AS r ON CONFLICT (request_id, ts) DO NOTHING"
    )


def write_batch(conn: Any, sql: str, records_json: str) -> None:
    """A batch's records (`LedgerBatch.records_for_postgres()`) in one statement (autocommit)."""
    conn.execute(sql, (records_json,))
