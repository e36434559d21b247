"""The one reader of a design table version's data files: what the log's add actions say of
each file (`DataFile`), where it is on disk, and its rows as the table's current schema.

Commits, compaction, maintenance, `designs query`, `verify`, the gallery and colourways all
list files here. Not delta-rs' pyarrow dataset: it prepares every file's statistics (seconds
on a large table) and keeps every file's footer (1.7 GB for the ids of 10M designs); rows
are read a file at a time. The tables have no deletion vectors: the files are the rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from deltalake import DeltaTable

_FORMAT = ds.ParquetFileFormat()
_LOCAL = pafs.LocalFileSystem()


@dataclass(frozen=True)
class DataFile:
    """One data file of a table version, as its add action describes it."""

    path: str  # relative to the table's folder and URL-encoded as the log names it, or a URI
    partition: tuple[tuple[str, str | None], ...]  # (column, value) pairs, the table's partition order
    size: int
    rows: int | None  # numRecords of its statistics (None: the file has none)
    min_id: str | None  # design_id statistics (None: the file has none)
    max_id: str | None
    null_ids: int | None  # rows whose design_id is null (None: unknown)
    modification_time: int  # milliseconds since the epoch
    # (column, min, max) of the statistics data_files was asked for (stats_columns)
    stats: tuple[tuple[str, Any, Any], ...] = ()

    def bounds(self, column: str) -> tuple[Any, Any]:
        """The (min, max) statistics of `column` (asked for by data_files' stats_columns), (None, None) if unknown."""
        return next(((low, high) for name, low, high in self.stats if name == column), (None, None))

    def local_path(self, table_path: Path) -> str:
        """The file's local path, links not resolved."""
        if "://" in self.path:
            parsed = urlparse(self.path)
            return unquote(parsed.path) if parsed.scheme == "file" else self.path
        return os.path.join(table_path, unquote(self.path))


class OutsideTable(ValueError):
    """A data file whose real path, links resolved, leaves the table's folder."""

    def __init__(self, table_path: Path, file: DataFile, which: str):
        self.file = file
        super().__init__(
            f"{which} of {table_path} lists a data file outside its folder: {file.path!r} resolves to a path "
            f"outside {os.path.realpath(table_path)} (a symlink?); refused, nothing read. Put the file back, or "
            "run `designs verify`"
        )


def data_files(table: DeltaTable, status: str | None = None, stats_columns: Sequence[str] = ()) -> list[DataFile]:
    """The version's data files; with `status`, only those that may hold rows of it: its
    partition's, or in a table made before the partitioning those whose statistics allow it;
    with `stats_columns`, each file's min and max of those columns (DataFile.bounds)."""
    actions = pa.table(table.get_add_actions(flatten=True))
    names = set(actions.column_names)
    partitions = table.metadata().partition_columns

    def column(name: str) -> list:
        return actions.column(name).to_pylist() if name in names else [None] * actions.num_rows

    paths, sizes, times = column("path"), column("size_bytes"), column("modification_time")
    rows, low, high, nulls = (
        column("num_records"),
        column("min.design_id"),
        column("max.design_id"),
        column("null_count.design_id"),
    )
    values = {p: column(f"partition.{p}") for p in partitions}
    stats = {c: (column(f"min.{c}"), column(f"max.{c}")) for c in stats_columns}
    keep = [True] * actions.num_rows
    if status is not None and "status" in partitions:
        keep = [v == status for v in values["status"]]
    elif status is not None:
        lows, highs = column("min.status"), column("max.status")
        keep = [(a is None or a <= status) and (b is None or status <= b) for a, b in zip(lows, highs, strict=True)]
    return [
        DataFile(
            path=paths[i],
            partition=tuple((p, values[p][i]) for p in partitions),
            size=sizes[i],
            rows=rows[i],
            min_id=low[i],
            max_id=high[i],
            null_ids=nulls[i],
            modification_time=times[i],
            stats=tuple((c, low_high[0][i], low_high[1][i]) for c, low_high in stats.items()),
        )
        for i in range(actions.num_rows)
        if keep[i]
    ]


def contained_path(table_path: Path, file: DataFile, which: str = "the latest version") -> str:
    """The file's real path (links resolved); OutsideTable when it leaves the table's folder."""
    root = os.path.realpath(table_path)
    real = os.path.realpath(file.local_path(table_path))
    if os.path.commonpath([root, real]) != root:
        raise OutsideTable(table_path, file, which)
    return real


def _plain_type(kind: pa.DataType) -> pa.DataType:
    """`kind` with string_view as string (and binary_view as binary), nested types too: delta-rs
    writes views, and DuckDB pushes no filter into an Arrow scan of a string_view column."""
    if pa.types.is_string_view(kind) or pa.types.is_large_string(kind):
        return pa.string()
    if pa.types.is_binary_view(kind) or pa.types.is_large_binary(kind):
        return pa.binary()
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_plain_type(field.type)) for field in kind])
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind):
        return pa.list_(kind.value_field.with_type(_plain_type(kind.value_type)))
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(kind.value_field.with_type(_plain_type(kind.value_type)), kind.list_size)
    if pa.types.is_map(kind):
        return pa.map_(_plain_type(kind.key_type), kind.item_field.with_type(_plain_type(kind.item_type)))
    return kind


def plain_schema(table: DeltaTable) -> pa.Schema:
    """The version's schema as every file is read: views as plain strings."""
    schema = pa.schema(table.schema().to_arrow())
    return pa.schema([field.with_type(_plain_type(field.type)) for field in schema])


def fragment(file: DataFile, real_path: str, schema: pa.Schema) -> ds.FileFragment:
    """The file as a pyarrow fragment whose guarantee is its partition values (which fill the
    partition columns) and its design_id bounds (which let a filtered scan skip it)."""
    guarantee = ds.scalar(True)
    for name, value in file.partition:
        field = ds.field(name)
        guarantee &= field.is_null() if value is None else field == pa.scalar(value, schema.field(name).type)
    if file.min_id is not None and file.max_id is not None and file.null_ids == 0:
        # Bounds, not values (delta-rs truncates a long max upwards): enough to skip a file.
        guarantee &= (ds.field("design_id") >= file.min_id) & (ds.field("design_id") <= file.max_id)
    return _FORMAT.make_fragment(real_path, filesystem=_LOCAL, partition_expression=guarantee)


def dataset(fragments: list[ds.FileFragment], schema: pa.Schema) -> ds.FileSystemDataset:
    """Fragments as one dataset of the table's schema: a file written before a column or a
    params field was added reads it as null."""
    return ds.FileSystemDataset(fragments, schema, _FORMAT, _LOCAL)


def read_rows(
    table: DeltaTable,
    table_path: Path,
    columns: list[str] | None = None,
    files: Iterable[DataFile] | None = None,
    which: str = "the latest version",
) -> Iterator[pa.Table]:
    """The rows of the version's files (or of `files`), a file at a time, as the table's schema
    with views as plain strings; `columns` None: every column. OutsideTable for a file whose
    real path leaves the table's folder (nothing of it is read)."""
    schema = plain_schema(table)
    for file in data_files(table) if files is None else files:
        real = contained_path(table_path, file, which)
        yield dataset([fragment(file, real, schema)], schema).to_table(columns=columns)


def read_table(table: DeltaTable, table_path: Path, columns: list[str] | None = None) -> pa.Table:
    """Every row of the version (read_rows, concatenated)."""
    schema = plain_schema(table)
    parts = list(read_rows(table, table_path, columns))
    if not parts:
        return (schema if columns is None else pa.schema([schema.field(c) for c in columns])).empty_table()
    return pa.concat_tables(parts)
