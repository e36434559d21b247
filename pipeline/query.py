"""SQL over the design catalog with DuckDB (`designs query`, `make query`).

DuckDB's delta extension would need a download, so the table is read through
deltalake's pyarrow dataset (any version) and registered as `designs`. Next to
it: `runs` (one row per run, pipeline/runs.py) and `commits` (the table's
commit history, one row per version, with the run_id of each commit).

Time travel: `version=N`, or `as_of=<ISO 8601 timestamp>` (the latest version
committed at or before it). `runs` and `commits` always describe the whole
history: filter them on `first_version`/`version` to match.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from deltalake.exceptions import DeltaError

from pipeline.design_catalog import DesignCatalog
from pipeline.runs import COMMITS_SCHEMA, commit_history, runs_table

FORMATS = ("table", "csv", "json", "parquet")
SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet", ".txt": "table"}


class QueryError(ValueError):
    """A refused query: bad SQL, a version or timestamp the table lacks, an unknown format."""


def parse_as_of(text: str) -> datetime:
    """An ISO 8601 timestamp; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(f"--as-of {text!r} is not an ISO 8601 timestamp (e.g. 2026-11-24T01:30:00Z or 2026-11-24)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def resolve_version(catalog: DesignCatalog, version: int | None = None, as_of: str | datetime | None = None) -> int | None:
    """The table version to read: `version`, the latest committed at or before `as_of`, or None (latest)."""
    if version is not None and as_of is not None:
        raise QueryError("give --version or --as-of, not both")
    if version is None and as_of is None:
        return None
    if not catalog.exists():
        catalog.table()  # raises FileNotFoundError naming the path
    commits = commit_history(catalog)
    versions = [c["version"] for c in commits]
    if version is not None:
        if version not in versions:
            raise QueryError(f"version {version} does not exist in {catalog.table_path}; it has versions {_ranges(versions)}")
        return version
    moment = parse_as_of(as_of) if isinstance(as_of, str) else as_of
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    before = [c for c in commits if c["committed_at"] is not None and c["committed_at"] <= moment]
    if not before:
        first = commits[0]
        shown = as_of if isinstance(as_of, str) else moment.isoformat()
        raise QueryError(f"--as-of {shown!r} ({moment.isoformat()}) is before the first commit of {catalog.table_path} "
                         f"(version {first['version']} at {first['committed_at'].isoformat()})")
    return max(c["version"] for c in before)


def _ranges(versions: list[int]) -> str:
    if not versions:
        return "none"
    if versions == list(range(versions[0], versions[-1] + 1)):
        return f"{versions[0]}..{versions[-1]}"
    return ", ".join(map(str, versions))


def _string_view(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pa.string_view()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pa.list_(kind.value_field.with_type(_string_view(kind.value_type)))
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_string_view(field.type)) for field in kind])
    return kind


def string_views(schema: pa.Schema) -> pa.Schema:
    """The schema with every string (nested ones too) as string_view.

    DuckDB pushes its filters down to the pyarrow dataset with string_view
    literals; pyarrow cannot compare those with a `string` column
    ("Function 'equal' has no kernel matching input types (string, string_view)"),
    so `where content_id = 'tshirt'` would fail. Read as string_view, both
    sides match, whichever string type the parquet files hold.
    """
    return pa.schema([field.with_type(_string_view(field.type)) for field in schema], metadata=schema.metadata)


def connect(out: str | Path, version: int | None = None, as_of: str | datetime | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with `designs` (the table at the chosen version), `runs` and `commits`."""
    catalog = DesignCatalog(out)
    resolved = resolve_version(catalog, version, as_of)
    try:
        table = catalog.table(resolved)
        dataset = table.to_pyarrow_dataset(schema=string_views(table.to_pyarrow_dataset().schema))
    except FileNotFoundError:
        raise
    except (DeltaError, OSError) as err:  # a vacuumed version, a damaged log
        raise QueryError(f"cannot read {catalog.table_path} at version {resolved}: {err}") from None
    # No extension downloads: a query naming one fails at once instead of waiting on the network.
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "TimeZone": "UTC"})
    con.register("designs", dataset)
    commits = commit_history(catalog)
    con.register("runs", runs_table(out, commits))
    con.register("commits", pa.Table.from_pylist(commits, schema=COMMITS_SCHEMA))
    return con


def query(out: str | Path, sql: str, version: int | None = None, as_of: str | datetime | None = None) -> pa.Table:
    con = connect(out, version, as_of)
    try:
        relation = con.sql(sql)
        if relation is None:  # a statement without a result (SET, CREATE VIEW, ...)
            return pa.table({})
        return relation.to_arrow_table()
    except duckdb.Error as err:
        raise QueryError(f"query failed: {err}") from None
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
        raise QueryError(f"cannot tell the format of {str(output)!r} from its suffix; pass --format {'|'.join(FORMATS)}")
    return SUFFIX_FORMATS[suffix]


def render_table(table: pa.Table) -> str:
    import pandas as pd

    if table.num_columns == 0:
        return "(no result)"
    if table.num_rows == 0:
        return f"(no rows; columns: {', '.join(table.column_names)})"
    frame = table.to_pandas(maps_as_pydicts="strict", types_mapper=_nullable)
    with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200, "display.max_colwidth", 60):
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


def _is_nested(kind: pa.DataType) -> bool:
    return pa.types.is_nested(kind)


def to_json_text(table: pa.Table) -> str:
    """A JSON array of one object per row."""
    return json.dumps([_plain(row) for row in table.to_pylist(maps_as_pydicts="strict")], indent=2, allow_nan=False) + "\n"


def to_csv_bytes(table: pa.Table) -> bytes:
    """CSV; nested columns (lists, structs: loss curves, params) as JSON text."""
    columns = []
    for name, column in zip(table.column_names, table.columns):
        if _is_nested(column.type):
            values = [None if v is None else json.dumps(_plain(v), allow_nan=False) for v in column.to_pylist(maps_as_pydicts="strict")]
            column = pa.array(values, pa.string())
        columns.append(column)
    plain = pa.Table.from_arrays(columns, names=table.column_names)
    sink = io.BytesIO()
    pacsv.write_csv(plain, sink)
    return sink.getvalue()


def write_result(table: pa.Table, fmt: str, output: str | Path | None) -> None:
    """Print (output None) or write the result in `fmt` (table, csv, json, parquet)."""
    if fmt == "parquet":
        if output is None:
            raise QueryError("--format parquet needs --output FILE")
        _write_file(Path(output), lambda path: pq.write_table(table, path))
        return
    if fmt == "csv":
        data = to_csv_bytes(table)
    elif fmt == "json":
        data = to_json_text(table).encode()
    elif fmt == "table":
        data = (render_table(table) + "\n").encode()
    else:
        raise QueryError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if output is None:
        import sys

        sys.stdout.write(data.decode())
        sys.stdout.flush()
        return
    _write_file(Path(output), lambda path: Path(path).write_bytes(data))


def _write_file(path: Path, write) -> None:
    """Write through a temporary file in the same folder, so a failed write leaves no half file."""
    if not path.parent.is_dir():
        raise QueryError(f"--output {str(path)!r}: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise QueryError(f"--output {str(path)!r} is a folder")
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise QueryError(f"--output {str(path)!r}: cannot write there: {err}") from None
    os.close(handle)
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except OSError as err:
        Path(temp).unlink(missing_ok=True)
        raise QueryError(f"--output {str(path)!r}: cannot write there: {err}") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def run_query(out: str | Path, sql: str, version: int | None = None, as_of: str | None = None, fmt: str | None = None,
              output: str | Path | None = None) -> pa.Table:
    """What `designs query` does: check the output choice first, run the SQL, print or write the result."""
    chosen = format_for(fmt, output)
    table = query(out, sql, version, as_of)
    write_result(table, chosen, output)
    return table


def print_query(out: str | Path, sql: str, version: int | None = None) -> None:
    run_query(out, sql, version)
