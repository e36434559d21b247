"""SQL over the design catalog with DuckDB (`designs query`, `make query`).

DuckDB's delta extension would need a download, so `designs` is a view over the
version's data files (deltalake lists them, for any version), read by DuckDB's own
parquet reader. Next to
it: `runs` (one row per run, pipeline/catalog/history.py) and `commits` (the table's
commit history, one row per version, with the run_id of each commit).

Time travel: `version=N`, or `as_of=<ISO 8601 timestamp>` (the latest version
committed at or before it). `runs` and `commits` always describe the whole
history: filter them on `first_version`/`version` to match.

The connection is read-only for the SQL it runs: once the three tables are
there, DuckDB's file system access is switched off but for the version's data
files, and its configuration locked; statements other than reads (COPY, EXPORT,
ATTACH, LOAD, SET, PRAGMA, CALL) are refused before they run. So a query reads
no other file, writes none (`COPY ... TO`, the table's own `_delta_log`) and
cannot switch them back on. `--output` files are written by Python, after the query.
"""

from __future__ import annotations

import io
import json
import math
import os
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from pipeline.catalog.designs import DesignCatalog, _first_line

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
from pipeline.files import write_output

READ_ONLY = (
    "designs query reads only the tables designs, runs and commits "
    "(no other files, no writes, no settings; -o FILE saves a result)"
)
FORMATS = ("table", "csv", "json", "parquet")
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet", ".txt": "table"}


# Statements a query may run: reads, and views or macros in the connection's own memory.
# COPY, EXPORT, ATTACH, LOAD/INSTALL, SET, PRAGMA and CALL are refused before DuckDB sees them:
# the version's data files are readable (allowed_paths), and a COPY TO one of them would
# overwrite it.
READ_STATEMENTS = frozenset({"SELECT", "EXPLAIN", "MULTI", "CREATE"})


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """QueryError unless every statement of `sql` is one of READ_STATEMENTS (a parse error is left
    to the query itself, which names it)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error:
        return
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_STATEMENTS:
            raise QueryError(
                f"query refused: {READ_ONLY}: {kind} is not a read (SELECT, EXPLAIN, CREATE and PIVOT are)"
            )


# The table's columns and types, the version's files, and the scan that reads them by column
# name (files written before a column was added lack it), in the connection under these names.
SCHEMA_TABLE = "designs_schema"
BY_NAME_VARIABLE = "designs_by_name_scan"
FILES_VARIABLE = "designs_files"


def designs_files(table: DeltaTable, table_path: Path) -> list[str]:
    """The version's data files, newest first: the first file's schema is the one DuckDB reads
    them all by, and the newest was written with the table's current schema."""
    actions = pa.table(table.get_add_actions()).select(["path", "modification_time"])
    newest = sorted(
        zip(actions.column("modification_time").to_pylist(), actions.column("path").to_pylist(), strict=True),
        reverse=True,
    )
    root = table_path.resolve()
    return [str(root / unquote(path)) for _, path in newest]


def _projection(con: duckdb.DuckDBPyConnection, scan: str) -> str:
    """select of every column of the table's schema from `scan`: cast where the files' type
    differs, null where no file has the column (a version made before it was written)."""
    have = {name: kind for name, kind, *_ in con.sql(f"describe select * from {scan}").fetchall()}
    columns = []
    for name, kind, *_ in con.sql(f"describe {SCHEMA_TABLE}").fetchall():
        quoted = '"' + name.replace('"', '""') + '"'
        if name not in have:
            columns.append(f"cast(null as {kind}) as {quoted}")
        elif have[name] != kind:
            columns.append(f"cast({quoted} as {kind}) as {quoted}")
        else:
            columns.append(quoted)
    return f"select {', '.join(columns)} from {scan}"


def create_designs_view(con: duckdb.DuckDBPyConnection, table: DeltaTable, files: list[str]) -> None:
    """`designs`: the version's data `files` (newest first, from designs_files) read by DuckDB's
    own parquet reader, as the table's schema says.

    Not a registered pyarrow dataset: DuckDB reads the parquet files itself, skipping row
    groups by their statistics and reading only the struct fields a query names (at 1M designs:
    a point lookup 2 s against 16 s, a grouped scan 1.5 s against 4.2 s). The files are read
    by the newest file's schema: a missing struct field reads as null. A file that lacks a
    whole column makes DuckDB fail the scan ("schema mismatch"); run_sql then reads every file
    by name instead (union_by_name), which opens every file's footer before the query
    (3 s at 10M designs), so only when a query needs it. The tables have no deletion vectors:
    the files are the rows."""
    # The list as a variable, not a literal of thousands of paths in every statement.
    con.execute(f"set variable {FILES_VARIABLE} = ?", [files])
    listed = f"getvariable('{FILES_VARIABLE}')"
    partitions = table.metadata().partition_columns
    hive = ", hive_partitioning = true, hive_types_autocast = false" if partitions else ""
    con.register(SCHEMA_TABLE, pa.schema(table.schema().to_arrow()).empty_table())
    # What run_sql reads instead when a file lacks a column; kept as text, since a view or even
    # a macro over it would open every file's footer now (2 s at 10M designs).
    con.execute(f"set variable {BY_NAME_VARIABLE} = ?", [f"read_parquet({listed}, union_by_name = true{hive})"])
    con.execute(f"create view designs as {_projection(con, f'read_parquet({listed}{hive})')}")


def _schema_mismatch(err: duckdb.Error) -> bool:
    return "schema mismatch" in str(err)


def run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """The result of `sql` on a connection from connect() (an empty table for a statement without
    one); a scan that meets files of an older schema is run again with the files read by name."""
    for by_name in (False, True):
        try:
            relation = con.sql(sql)
            return pa.table({}) if relation is None else relation.to_arrow_table()
        except duckdb.Error as err:
            if by_name or not _schema_mismatch(err):
                raise
            [(by_name_scan,)] = con.sql(f"select getvariable('{BY_NAME_VARIABLE}')").fetchall()
            con.execute(f"create or replace view designs as {_projection(con, by_name_scan)}")
    raise AssertionError("unreachable")


def connect(
    out: str | Path, version: int | None = None, as_of: str | datetime | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with `designs` (the table at the chosen version), `runs` and `commits`."""
    catalog = DesignCatalog(out)
    # Time travel reads the commit history to find its version; the views reuse it.
    commits = commit_history(catalog) if version is not None or as_of is not None else None
    resolved = resolve_version(catalog, version, as_of, commits)
    try:
        table = catalog.table(resolved)
    except FileNotFoundError:
        raise
    except (DeltaError, OSError) as err:  # a damaged log
        raise QueryError(f"cannot read {catalog.table_path} at version {resolved}: {err}") from None
    # A version older than the last vacuum's retention names files that are gone: say so
    # before pyarrow fails on the first of them.
    files = designs_files(table, catalog.table_path)  # newest first, as create_designs_view wants them
    gone = sum(1 for path in files if not os.path.exists(path))
    if gone:
        which = "the latest version" if version is None and as_of is None else f"version {resolved}"
        raise QueryError(
            f"{which} of {catalog.table_path} can no longer be read: {gone} of its data files are gone, removed "
            "by a vacuum (`designs maintain` keeps only what the versions of its retention read) or by hand; "
            "query a later version, or the latest"
        )
    # No extension downloads: a query naming one fails at once instead of waiting on the network.
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "TimeZone": "UTC"})
    try:
        if files:
            create_designs_view(con, table, files)
        else:  # a table with no rows yet
            con.register("designs", pa.schema(table.schema().to_arrow()).empty_table())
    except duckdb.Error as err:  # a file unreadable, or removed since the check
        con.close()
        raise QueryError(f"cannot read {catalog.table_path} at version {resolved}: {_first_line(err)}") from None
    if commits is None:  # read after the table, so the views cover at least its version
        commits = commit_history(catalog)
    con.register("runs", runs_table(out, commits))
    con.register("commits", pa.Table.from_pylist(commits, schema=COMMITS_SCHEMA))
    # The version's data files stay readable, nothing else is; the statements that could
    # write one are refused by check_read_only.
    con.execute("SET allowed_paths = ?", [files])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def query(out: str | Path, sql: str, version: int | None = None, as_of: str | datetime | None = None) -> pa.Table:
    con = connect(out, version, as_of)
    try:
        check_read_only(con, sql)
        return run_sql(con, sql)
    except duckdb.Error as err:
        # A file access, or a setting changed after the lock (DuckDB says so only in its message).
        refused = isinstance(err, duckdb.PermissionException) or "configuration has been locked" in str(err)
        raise QueryError(f"query refused: {READ_ONLY}: {err}" if refused else f"query failed: {err}") from None
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
) -> pa.Table:
    """What `designs query` does: check the output choice first, run the SQL, print or write the result."""
    chosen = format_for(fmt, output)
    table = query(out, sql, version, as_of)
    write_result(table, chosen, output)
    return table
