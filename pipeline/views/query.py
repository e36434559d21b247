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
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from pipeline.catalog.datafiles import OutsideTable, contained_path, data_files, dataset, fragment, plain_schema
from pipeline.catalog.designs import DesignCatalog

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
from pipeline.views.timeout import DEFAULT_TIMEOUT_S, with_timeout

READ_ONLY = (
    "designs query reads only the tables designs, runs and commits "
    "(no files, no writes, no settings; -o FILE saves a result)"
)
FORMATS = ("table", "csv", "json", "parquet")
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet", ".txt": "table"}
# DuckDB's share of the machine's memory (its default is 80%); the Arrow scan's buffers are
# outside it, and with no temporary folder nothing spills to disk.
MEMORY_LIMIT = "50%"

# Set when the connection opens. The folders are not paths ("none"), so `current_setting` shows
# no home folder and nothing could be written there; TimeZone loads the built-in ICU.
_CONFIG = {
    "autoinstall_known_extensions": False,
    "allow_persistent_secrets": False,
    "python_enable_replacements": False,  # no reading of the caller's Python variables as tables
    "home_directory": "",
    "temp_directory": "",
    "secret_directory": "none",
    "extension_directory": "none",
    "memory_limit": MEMORY_LIMIT,
    "TimeZone": "UTC",
}


def _has_views(kind: pa.DataType) -> bool:
    if pa.types.is_string_view(kind) or pa.types.is_binary_view(kind):
        return True
    if pa.types.is_struct(kind):
        return any(_has_views(field.type) for field in kind)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _has_views(kind.value_type)
    if pa.types.is_map(kind):
        return _has_views(kind.key_type) or _has_views(kind.item_type)
    return False


# A parquet footer's key-value entry "ARROW:schema" in Thrift's compact protocol: field 1 (the
# key, 12 bytes), then the header of field 2 (the value, a length and base64 text).
_ARROW_SCHEMA_ENTRY = b"\x18\x0cARROW:schema\x18"


def _stored_arrow_schema(path: str) -> bytes | None:
    """The Arrow schema pyarrow reads a parquet file by (the footer's ARROW:schema entry, base64
    text), or None when the footer has none; ValueError or IndexError when the footer is not as
    expected. A few reads instead of parsing the whole footer (the metadata of every column
    chunk): a tenth of a millisecond a file against one, for every file of every query."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        file.seek(max(0, size - 8))
        tail = file.read(8)
        length = int.from_bytes(tail[:4], "little")
        if len(tail) != 8 or tail[4:] != b"PAR1" or length > size - 12:
            raise ValueError(f"{path}: not a parquet file")
        file.seek(size - 8 - length)
        footer = file.read(length)
    at = footer.rfind(_ARROW_SCHEMA_ENTRY)
    if at < 0:
        if b"ARROW:schema" in footer:
            raise ValueError(f"{path}: ARROW:schema entry not as expected")
        return None
    start, size, shift = at + len(_ARROW_SCHEMA_ENTRY), 0, 0
    while True:  # the value's length, a varint
        byte = footer[start]
        start += 1
        size |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return footer[start : start + size]


def _views_reader() -> Callable[[ds.FileFragment], bool]:
    """Whether pyarrow reads a column of a file as a view type: from its stored schema (see
    _stored_arrow_schema; the files of a table share a few, each decoded once), or from
    pyarrow's own reading of a footer that one does not understand."""
    known: dict[bytes, bool] = {}

    def views(fragment: ds.FileFragment) -> bool:
        try:
            stored = _stored_arrow_schema(fragment.path)
            if stored is None:
                return False  # no stored schema: pyarrow reads plain strings
            if stored not in known:
                schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(stored, validate=True)))
                known[stored] = any(_has_views(field.type) for field in schema)
            return known[stored]
        except (ValueError, IndexError, pa.ArrowException):
            return any(_has_views(field.type) for field in fragment.physical_schema)

    return views


@dataclass(frozen=True)
class DesignsFiles:
    """The version's data files as two pyarrow datasets of the table's current schema (a file
    written before a column or a params field was added reads it as null), split by how DuckDB
    can read them.

    scanned: the files with plain string columns (those maintenance writes: nearly all rows of
    a maintained catalog). DuckDB hands its filters and columns to pyarrow's scan, which skips
    files by the log's partition values (`status`) and `design_id` ranges and row groups by
    their statistics, and reads only the columns a query names.
    streamed: the files with string_view columns (what delta-rs wrote for the shards committed
    since the last maintenance). pyarrow compares no string with a string_view statistic
    and filters no string_view column, so these are read whole, as plain strings, and DuckDB
    filters them itself."""

    scanned: ds.Dataset
    streamed: ds.Dataset


class _Stream:
    """A dataset DuckDB reads through the Arrow stream protocol: a fresh scan each time it asks
    (a query may read the table twice), with no filter pushed into pyarrow."""

    def __init__(self, dataset: ds.Dataset):
        self.dataset = dataset

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return self.dataset.scanner().to_reader().__arrow_c_stream__(requested_schema)


def designs_files(table: DeltaTable, table_path: Path, which: str = "the latest version") -> DesignsFiles:
    """The version's data files (pipeline/catalog/datafiles.py), checked and split as DesignsFiles says.

    QueryError for a file whose real path, symlinks resolved, is outside the table's folder
    (nothing of it is read), for files that are gone (a vacuum removed them) and for a file
    whose footer cannot be read."""
    schema = plain_schema(table)
    fragments, gone = [], 0
    for file in data_files(table):
        try:
            real = contained_path(table_path, file, which)
        except OutsideTable as err:
            raise QueryError(str(err)) from None
        if not os.path.isfile(real):
            gone += 1
            continue
        fragments.append(fragment(file, real, schema))
    if gone:
        raise QueryError(
            f"{which} of {table_path} can no longer be read: {gone} of its data files are gone, removed "
            "by a vacuum (`designs maintain` keeps only what the versions of its retention read) or by hand; "
            "query a later version, or the latest"
        )

    views = _views_reader()
    try:
        streamed = [views(fragment) for fragment in fragments]
    except (pa.ArrowException, OSError) as err:
        raise QueryError(f"cannot read {which} of {table_path}: {one_line(err)}") from None
    split = {kind: [f for f, s in zip(fragments, streamed, strict=True) if s == kind] for kind in (False, True)}
    return DesignsFiles(dataset(split[False], schema), dataset(split[True], schema))


def register_designs(con: duckdb.DuckDBPyConnection, files: DesignsFiles) -> None:
    """`designs` in `con`: the scanned files, the streamed ones, or a view of both."""
    scanned, streamed = bool(files.scanned.files), bool(files.streamed.files)
    if scanned and streamed:
        con.register("designs_scanned", files.scanned)
        con.register("designs_streamed", _Stream(files.streamed))
        con.execute("create view designs as select * from designs_scanned union all select * from designs_streamed")
    else:
        con.register("designs", _Stream(files.streamed) if streamed else files.scanned)


def connect(
    out: str | Path, version: int | None = None, as_of: str | datetime | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with `designs` (the table at the chosen version), `runs` and `commits`,
    that can open no file: run statements on it with run_sql (one statement, a timeout)."""
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
    which = "the latest version" if version is None and as_of is None else f"version {resolved}"
    files = designs_files(table, catalog.table_path, which)
    if commits is None:  # read after the table, so the views cover at least its version
        commits = commit_history(catalog)
    runs = runs_table(out, commits)
    con = duckdb.connect(config=_CONFIG)
    try:
        # Off before anything runs. Not in the connect config: DuckDB then allows its in-memory
        # database's would-be files (<cwd>/:memory:.wal, ...), and a COPY could write them.
        con.execute("SET enable_external_access = false")
        register_designs(con, files)
        con.register("runs", runs)
        con.register("commits", pa.Table.from_pylist(commits, schema=COMMITS_SCHEMA))
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def one_line(err: BaseException) -> str:
    """DuckDB's message in one line: without the LINE n: echo of the SQL and its caret."""
    lines = [line.strip() for line in str(err).splitlines()]
    kept = [line for line in lines if line and not line.startswith("LINE ") and set(line) != {"^"}]
    return " ".join(kept) or type(err).__name__


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
