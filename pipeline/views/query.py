"""SQL over the design catalog with DuckDB (`designs query`, `make query`).

DuckDB's delta extension would need a download, so `designs` is the version's
data files (deltalake lists them, for any version) as a pyarrow dataset
registered in the connection. Next to it: `runs` (one row per run,
pipeline/catalog/history.py) and `commits` (the table's commit history, one row
per version, with the run_id of each commit).

Time travel: `version=N`, or `as_of=<ISO 8601 timestamp>` (the latest version
committed at or before it). `runs` and `commits` always describe the whole
history: filter them on `first_version`/`version` to match.

Read-only by construction, not by a list of statement words: DuckDB's file system
access is off before anything runs (no path allowed at all, no temporary folder,
no extension or secret folder) and its configuration is locked, so no statement
can read or write a file; the three tables are Arrow objects Python hands it.
The data files are checked before pyarrow opens them: a file whose real path
(symlinks resolved) leaves the table's folder is refused. One statement per
query, stopped after a timeout. `--output` files are written by Python, after the query.
The connection is pipeline/catalog/sql.py's (colourways selects its parents through it too).
"""

from __future__ import annotations

import io
import json
import math
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

# QueryError, parse_as_of and resolve_version live in runs.py (the gallery uses them without DuckDB);
# they are imported from here too.
from pipeline.catalog.history import (  # noqa: F401
    COMMITS_SCHEMA,
    QueryError,
    commit_history,
    parse_as_of,
    resolve_version,
    runs_table,
)
from pipeline.catalog.sql import connect, one_line  # the read-only connection is the catalog's
from pipeline.catalog.timeout import DEFAULT_TIMEOUT_S, with_timeout
from pipeline.files import write_output

READ_ONLY = (
    "designs query reads only the tables designs, runs and commits "
    "(no files, no writes, no settings; -o FILE saves a result)"
)
FORMATS = ("table", "csv", "json", "parquet")
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet", ".txt": "table"}


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> pa.Table:
    """The result of `sql`, one statement, on a connection from connect() (an empty table for a
    statement without one), stopped after `timeout_s` seconds. QueryError in one line when it is
    not one statement, fails, is refused (a file, a setting) or runs out of time."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as err:
        raise QueryError(f"query failed: {one_line(err)}") from None
    if len(statements) != 1:
        raise QueryError(f"query refused: one statement per query; this is {len(statements)}")

    def work() -> pa.Table:
        relation = con.sql(sql)
        return pa.table({}) if relation is None else relation.to_arrow_table()

    try:
        return with_timeout(con, timeout_s, "query", work)
    except duckdb.Error as err:
        # A file access, or a setting changed after the lock (DuckDB says so only in its message).
        refused = isinstance(err, duckdb.PermissionException) or "configuration has been locked" in str(err)
        raise QueryError(
            f"query refused: {READ_ONLY}: {one_line(err)}" if refused else f"query failed: {one_line(err)}"
        ) from None


def query(
    out: str | Path,
    sql: str,
    version: int | None = None,
    as_of: str | datetime | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> pa.Table:
    con = connect(out, version, as_of)
    try:
        return run_sql(con, sql, timeout_s)
    finally:
        con.close()


# --- output ---


def format_for(fmt: str | None, output: str | Path | None) -> str:
    """The output format: `fmt`, else from the output file's suffix, else a terminal table."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise QueryError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        if fmt == "parquet" and output is None:
            raise QueryError("--format parquet needs --output FILE")
        return fmt
    if output is None:
        return "table"
    suffix = Path(output).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise QueryError(
            f"cannot tell the format of {str(output)!r} from its suffix; pass --format {'|'.join(FORMATS)}"
        )
    return SUFFIX_FORMATS[suffix]


def render_table(table: pa.Table) -> str:
    import pandas as pd

    if table.num_columns == 0:
        return "(no result)"
    if table.num_rows == 0:
        return f"(no rows; columns: {', '.join(table.column_names)})"
    frame = table.to_pandas(maps_as_pydicts="strict", types_mapper=_nullable)
    with pd.option_context(
        "display.max_rows", 200, "display.max_columns", 50, "display.width", 200, "display.max_colwidth", 60
    ):
        return frame.to_string(index=False)


def _nullable(kind: pa.DataType):
    """Integers and booleans with nulls stay integers and booleans on screen (<NA>, not NaN and 11.0)."""
    import pandas as pd

    if pa.types.is_integer(kind):
        return pd.Int64Dtype() if kind.bit_width < 64 or pa.types.is_signed_integer(kind) else pd.UInt64Dtype()
    if pa.types.is_boolean(kind):
        return pd.BooleanDtype()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pd.StringDtype()
    return None


def _plain(value: Any) -> Any:
    """A JSON-ready value: timestamps as ISO 8601, non-finite floats as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "total_seconds"):  # timedelta
        return value.total_seconds()
    return value


def to_json_text(table: pa.Table) -> str:
    """A JSON array of one object per row."""
    return (
        json.dumps([_plain(row) for row in table.to_pylist(maps_as_pydicts="strict")], indent=2, allow_nan=False) + "\n"
    )


def to_csv_bytes(table: pa.Table) -> bytes:
    """CSV; nested columns (lists, structs: loss curves, params) as JSON text."""
    columns = []
    for column in table.columns:
        if pa.types.is_nested(column.type):
            values = [
                None if v is None else json.dumps(_plain(v), allow_nan=False)
                for v in column.to_pylist(maps_as_pydicts="strict")
            ]
            column = pa.array(values, pa.string())
        columns.append(column)
    plain = pa.Table.from_arrays(columns, names=table.column_names)
    sink = io.BytesIO()
    pacsv.write_csv(plain, sink)
    return sink.getvalue()


def write_result(table: pa.Table, fmt: str, output: str | Path | None) -> None:
    """Print (output None) or write the result in `fmt`, as format_for(fmt, output) chose it."""
    if fmt == "parquet":
        write_output(Path(output), lambda path: pq.write_table(table, path), QueryError)
        return
    if fmt == "csv":
        data = to_csv_bytes(table)
    elif fmt == "json":
        data = to_json_text(table).encode()
    else:
        data = (render_table(table) + "\n").encode()
    if output is None:
        import sys

        sys.stdout.write(data.decode())
        sys.stdout.flush()
        return
    write_output(Path(output), lambda path: Path(path).write_bytes(data), QueryError)


def run_query(
    out: str | Path,
    sql: str,
    version: int | None = None,
    as_of: str | None = None,
    fmt: str | None = None,
    output: str | Path | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> pa.Table:
    """What `designs query` does: check the output choice first, run the SQL, print or write the result."""
    chosen = format_for(fmt, output)
    table = query(out, sql, version, as_of, timeout_s)
    write_result(table, chosen, output)
    return table
