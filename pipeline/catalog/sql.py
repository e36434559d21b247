"""The catalog's read-only SQL door: a DuckDB connection with `designs` (a version's data
files, through pipeline/catalog/datafiles.py), `runs` and `commits`, that can open no file.
`designs query` (pipeline/views/query.py) runs statements on it; colourways selects its
parents through it (pipeline/execution/colourways.py)."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from pipeline.catalog.curation import CURATION_SCHEMA, curation_path, curation_table
from pipeline.catalog.datafiles import OutsideTable, contained_path, data_files, dataset, fragment, plain_schema
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import embeddings_dataset
from pipeline.catalog.history import COMMITS_SCHEMA, QueryError, commit_history, resolve_version, runs_table
from pipeline.catalog.reviews import reviews_dataset

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


def register_designs(con: duckdb.DuckDBPyConnection, files: DesignsFiles, name: str = "designs") -> None:
    """`designs` (or `name`) in `con`: the scanned files, the streamed ones, or a view of both."""
    scanned, streamed = bool(files.scanned.files), bool(files.streamed.files)
    if scanned and streamed:
        con.register(f"{name}_scanned", files.scanned)
        con.register(f"{name}_streamed", _Stream(files.streamed))
        con.execute(f"create view {name} as select * from {name}_scanned union all select * from {name}_streamed")
    else:
        con.register(name, _Stream(files.streamed) if streamed else files.scanned)


def curation_files(out: str | Path) -> DesignsFiles:
    """The latest version of OUT/curation (pipeline/catalog/curation.py) as designs_files splits
    a version; empty where `designs curate` never ran."""
    table = curation_table(out)
    if table is None:
        return DesignsFiles(dataset([], CURATION_SCHEMA), dataset([], CURATION_SCHEMA))
    return designs_files(table, curation_path(out), "the latest version of the curation table")


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
    try:
        reviews = reviews_dataset(out)  # the designers' verdicts (pipeline/catalog/reviews.py), latest version
    except OutsideTable as err:
        raise QueryError(str(err)) from None
    curation = curation_files(out)  # the last `designs curate` (pipeline/catalog/curation.py)
    try:
        embeddings = embeddings_dataset(out)  # one vector per design (pipeline/catalog/embeddings.py), latest version
    except OutsideTable as err:
        raise QueryError(str(err)) from None
    con = duckdb.connect(config=_CONFIG)
    try:
        # Off before anything runs. Not in the connect config: DuckDB then allows its in-memory
        # database's would-be files (<cwd>/:memory:.wal, ...), and a COPY could write them.
        con.execute("SET enable_external_access = false")
        register_designs(con, files)
        con.register("runs", runs)
        con.register("commits", pa.Table.from_pylist(commits, schema=COMMITS_SCHEMA))
        con.register("embeddings", _Stream(embeddings))  # written with views by merges: read whole
        con.register("reviews", _Stream(reviews))  # small, and written with string views: read whole
        register_designs(con, curation, "curation")
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
