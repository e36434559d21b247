"""Sorted compaction of the design catalog's small files: what `designs maintain` does
between full re-sorts, at a cost that follows the small files, not the table.

Each shard's merge writes a small file; the table's large files are sorted by
design_id (a z-order on one column), each spanning a narrow id range. Rewriting the
whole table every night to fold the small files in would cost time and disk that grow
with the table (and the retention keeps each replaced copy for a week). Instead the
small files of each partition are read, sorted by design_id and written as large
files: one more sorted "layer" over the table's id space. A shard's merge then reads
one file per layer its ids fall in, so `maintain` re-sorts the whole table only when
the layers pile up past a bound (`MAX_LAYERS`), keeping a commit's reads bounded
whatever the table's size.

delta-rs has no call that replaces chosen files, so the rewrite is committed here as
the Delta protocol specifies: one JSON log entry, created only if its version does not
exist yet (a concurrent commit makes this one retry on the new version), whose remove
actions name the small files and whose add actions carry the new files' statistics.
The remove actions are `dataChange: false`, as delta-rs' own OPTIMIZE writes them, so
a merge that read a removed file fails its conflict check and retries, as it does
against delta-rs' own compaction.

Before writing a file, the compaction appends its name to a record under
`_compaction/` (INTENT_DIR) and removes the record once its commit is in place or its
files are deleted. A compaction killed in between leaves its record, and the vacuum
(pipeline/catalog/vacuum.py) deletes exactly the files it names that no log entry
does: the only files the vacuum deletes without a log entry naming them.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError

from pipeline.catalog.datafiles import DataFile, data_files
from pipeline.catalog.designs import LOG_DIR, STATS_COLUMNS

# Sorted layers of large files a commit may meet before maintenance re-sorts the table.
MAX_LAYERS = 8
# Bytes of small files sorted in memory at once; more are sorted in passes over id ranges.
SORT_PASS_BYTES = 512 * 2**20
OPERATION = "OPTIMIZE"
STRATEGY = "sorted compaction of small files"
# Records of the files a compaction is writing, one per compaction, removed once it ends;
# hidden from Delta readers (a folder whose name starts with "_").
INTENT_DIR = "_compaction"
INTENT_SUFFIX = ".intent"
# The log entries this module writes are the protocol's plainest; a table that asks writers
# for more (features, column mapping, ...) is re-sorted by delta-rs instead.
PLAIN_WRITER_VERSION = 2
# The names compaction writes, the only ones a record may name (relative to the table's folder).
WRITTEN_NAME = re.compile(r"(?:[^/]+/)*part-00000-[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}-c000\.zstd\.parquet")


@dataclass(frozen=True)
class CommitInfo:
    """A log entry's commitInfo action: what wrote it, and the entry's designs.note."""

    timestamp: int  # milliseconds since the epoch
    operation: str
    parameters: dict[str, str]
    metrics: dict[str, int]
    note: dict[str, str]
    read_version: int | None = None  # None: not a read-modify-write commit (the vacuum's)
    blind_append: bool | None = None

    def line(self) -> dict:
        info: dict = {"timestamp": self.timestamp, "operation": self.operation, "operationParameters": self.parameters}
        if self.read_version is not None:
            info["readVersion"] = self.read_version
        if self.blind_append is not None:
            info["isBlindAppend"] = self.blind_append
        return {"commitInfo": {**info, "operationMetrics": self.metrics, **self.note}}


@dataclass(frozen=True)
class AddAction:
    """A data file the entry adds; dataChange false: a rewrite of rows already in the table."""

    path: str  # relative to the table's folder
    partition_values: dict[str, str | None]
    size: int
    modification_time: int  # milliseconds since the epoch
    stats: str  # Delta statistics, as JSON text

    def line(self) -> dict:
        return {
            "add": {
                "path": self.path,
                "partitionValues": self.partition_values,
                "size": self.size,
                "modificationTime": self.modification_time,
                "dataChange": False,
                "stats": self.stats,
            }
        }


@dataclass(frozen=True)
class RemoveAction:
    """A data file the entry removes; dataChange false, as delta-rs' own OPTIMIZE writes it."""

    path: str
    partition_values: dict[str, str | None]
    size: int
    deletion_timestamp: int  # milliseconds since the epoch

    def line(self) -> dict:
        return {
            "remove": {
                "path": self.path,
                "dataChange": False,
                "deletionTimestamp": self.deletion_timestamp,
                "extendedFileMetadata": True,
                "partitionValues": self.partition_values,
                "size": self.size,
            }
        }


Action = CommitInfo | AddAction | RemoveAction


def writes_protocol(table: DeltaTable) -> bool:
    """Whether this module's plain log entries satisfy the table's writer protocol."""
    protocol = table.protocol()
    return protocol.min_writer_version <= PLAIN_WRITER_VERSION and not protocol.writer_features


def layers(files: list[DataFile]) -> int:
    """The most files of one partition whose design_id ranges share an id: the files a
    merge may read for one id. A file without statistics spans every id."""
    deepest = 0
    for partition in {f.partition for f in files}:
        events = []
        for f in files:
            if f.partition != partition:
                continue
            low, high = (f.min_id, f.max_id) if f.min_id is not None and f.max_id is not None else ("", "\U0010ffff")
            events += [(low, 0), (high, 1)]  # at equal ids, opens before closes: [a, b] and [b, c] share b
        depth = 0
        for _, kind in sorted(events):
            depth += 1 if kind == 0 else -1
            deepest = max(deepest, depth)
    return deepest


def small_groups(files: list[DataFile], below_bytes: int) -> dict[tuple, list[DataFile]]:
    """The small files of each partition that has two or more (one file alone is left as it is)."""
    groups: dict[tuple, list[DataFile]] = {}
    for f in files:
        if f.size < below_bytes:
            groups.setdefault(f.partition, []).append(f)
    return {partition: group for partition, group in groups.items() if len(group) > 1}


def layers_after_compaction(files: list[DataFile], below_bytes: int) -> int:
    """layers() once the small files are compacted: the large files, plus one sorted layer
    where a partition's small files are rewritten."""
    groups = small_groups(files, below_bytes)
    rewritten = {f.path for group in groups.values() for f in group}
    kept = [f for f in files if f.path not in rewritten]
    return layers(kept) + (1 if groups else 0)


def compact_small_files(
    table: DeltaTable, table_path: Path, below_bytes: int, target_bytes: int, note: dict[str, str]
) -> tuple[int, int]:
    """Rewrite each partition's files under `below_bytes` sorted by design_id into files of
    about `target_bytes`, in one commit; (files removed, files added), (0, 0) when no
    partition has two small files. CommitFailedError when another commit took the version
    first (nothing of this attempt stays behind: its files are deleted)."""
    if not writes_protocol(table):
        protocol = table.protocol()
        raise ValueError(
            f"the table at {table_path} asks writers for protocol {protocol.min_writer_version} "
            f"(features {protocol.writer_features}); compaction writes {PLAIN_WRITER_VERSION} with none: "
            "z-order it instead (designs maintain --resort)"
        )
    groups = small_groups(data_files(table), below_bytes)
    if not groups:
        return 0, 0
    schema = pa.schema(table.schema().to_arrow())
    partition_names = table.metadata().partition_columns
    file_schema = pa.schema([f for f in schema if f.name not in partition_names])
    removed: list[DataFile] = []
    added: list[AddAction] = []
    intent = _Intent(table_path)
    try:
        for partition, group in sorted(groups.items(), key=lambda item: str(item[0])):
            folder = "/".join(f"{quote(name, safe='')}={quote(str(value), safe='')}" for name, value in partition)
            for sorted_rows in _sorted_passes(table_path, group, file_schema):
                added += _write_files(
                    table_path, folder, dict(partition), sorted_rows, group, target_bytes, intent.record
                )
            removed += group
        _commit(table, table_path, removed, added, note, target_bytes)
    except BaseException:
        for relative in intent.paths:  # a file cut short by the error included
            (table_path / relative).unlink(missing_ok=True)
        raise
    finally:
        intent.close()
    return len(removed), len(added)


class _Intent:
    """The record of the files one compaction writes: INTENT_DIR/<uuid>.intent, a name a line,
    each synced before its file is created; removed by close()."""

    def __init__(self, table_path: Path):
        folder = table_path / INTENT_DIR
        folder.mkdir(exist_ok=True)
        self.path = folder / f"{uuid.uuid4()}{INTENT_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        self._fd: int | None = os.open(self.path, flags, 0o644)
        self.paths: list[str] = []

    def record(self, relative: str) -> None:
        if self._fd is None or not WRITTEN_NAME.fullmatch(relative):
            raise ValueError(f"{relative!r} is not a name compaction writes, or the record is closed")
        os.write(self._fd, (relative + "\n").encode())
        os.fsync(self._fd)  # on disk before the file it names
        self.paths.append(relative)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


def _sorted_passes(table_path: Path, group: list[DataFile], file_schema: pa.Schema) -> Iterator[pa.Table]:
    """The group's rows sorted by design_id, in tables of about SORT_PASS_BYTES of files each:
    one id range per pass, the ranges cut at quantiles of the group's ids."""
    dataset = ds.dataset([f.local_path(table_path) for f in group], schema=file_schema, format="parquet")
    passes = max(1, -(-sum(f.size for f in group) // SORT_PASS_BYTES))
    if passes == 1:
        yield dataset.to_table().sort_by("design_id")
        return
    ids = dataset.to_table(columns=["design_id"]).column("design_id")
    ids = ids.take(pc.sort_indices(ids))
    bounds = [None, *(ids[len(ids) * k // passes].as_py() for k in range(1, passes)), None]
    # Filtered batch by batch, not by a dataset filter: pyarrow would compare the filter's
    # string with the string_view statistics of delta-rs' files ("no kernel matching").
    for low, high in zip(bounds, bounds[1:], strict=False):
        kept = []
        for batch in dataset.to_batches():
            batch_ids = batch.column("design_id")
            keep = None
            if low is not None:
                keep = pc.greater_equal(batch_ids, low)
            if high is not None:
                below = pc.less(batch_ids, high)
                keep = below if keep is None else pc.and_(keep, below)
            kept.append(batch.filter(keep))
        yield pa.Table.from_batches(kept, schema=file_schema).sort_by("design_id")


def _write_files(
    table_path: Path,
    folder: str,
    partition: dict,
    rows: pa.Table,
    group: list[DataFile],
    target_bytes: int,
    record: Callable[[str], None],
) -> list[AddAction]:
    """Write `rows` (sorted) into files of about target_bytes, each `record`ed before it is
    created; their add actions."""
    if rows.num_rows == 0:
        return []
    per_row = max(1.0, sum(f.size for f in group) / max(1, sum(_rows(table_path, f) for f in group)))
    per_file = max(1, int(target_bytes / per_row))
    actions = []
    for start in range(0, rows.num_rows, per_file):
        chunk = rows.slice(start, per_file)
        name = f"part-00000-{uuid.uuid4()}-c000.zstd.parquet"
        relative = f"{folder}/{name}" if folder else name
        path = table_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        record(relative)
        pq.write_table(chunk, path, compression="zstd")
        written = path.stat()
        actions.append(
            AddAction(
                path=relative,
                partition_values=partition,
                size=written.st_size,
                modification_time=int(written.st_mtime * 1000),
                stats=json.dumps(_stats(chunk), separators=(",", ":")),
            )
        )
    return actions


def _rows(table_path: Path, f: DataFile) -> int:
    """The file's rows: from its statistics, from its footer where it has none."""
    return f.rows if f.rows is not None else pq.ParquetFile(f.local_path(table_path)).metadata.num_rows


def _stats(rows: pa.Table) -> dict:
    """The Delta statistics delta-rs keeps for this table: numRecords, and the minimum,
    maximum and null count of the statistics columns."""
    minimum, maximum, nulls = {}, {}, {}
    for name in STATS_COLUMNS.split(","):
        if name not in rows.column_names:
            continue
        column = rows.column(name)
        nulls[name] = column.null_count
        if column.null_count == len(column):
            continue
        if pa.types.is_string_view(column.type):
            column = column.cast(pa.string())
        low, high = pc.min_max(column).values()
        if pa.types.is_timestamp(column.type):
            # Milliseconds, as Delta keeps them: the minimum rounded down, the maximum up.
            low_ms = low.as_py().replace(microsecond=low.as_py().microsecond // 1000 * 1000)
            high_py = high.as_py()
            high_ms = high_py.replace(microsecond=high_py.microsecond // 1000 * 1000)
            if high_ms < high_py:
                high_ms += timedelta(milliseconds=1)
            minimum[name], maximum[name] = _timestamp(low_ms), _timestamp(high_ms)
        else:
            minimum[name], maximum[name] = low.as_py(), high.as_py()
    return {"numRecords": rows.num_rows, "minValues": minimum, "maxValues": maximum, "nullCount": nulls}


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _commit(
    table: DeltaTable,
    table_path: Path,
    removed: list[DataFile],
    added: list[AddAction],
    note: dict[str, str],
    target_bytes: int,
) -> None:
    """Write the log entry of version table.version() + 1, or CommitFailedError if it exists."""
    now = int(time.time() * 1000)
    info = CommitInfo(
        timestamp=now,
        operation=OPERATION,
        parameters={"strategy": STRATEGY, "targetSize": str(target_bytes)},
        metrics={"numFilesAdded": len(added), "numFilesRemoved": len(removed)},
        note=note,
        read_version=table.version(),
        blind_append=False,
    )
    gone = [RemoveAction(f.path, dict(f.partition), f.size, deletion_timestamp=now) for f in removed]
    write_log_entry(table_path, table.version() + 1, [info, *gone, *added])


def write_log_entry(table_path: Path, version: int, actions: list[Action]) -> None:
    """Write `actions` as the log entry of `version`, or CommitFailedError if that version exists."""
    log = table_path / LOG_DIR
    staged = log / f".{version:020d}.{uuid.uuid4()}.json.tmp"
    staged.write_text("".join(json.dumps(a.line(), separators=(",", ":")) + "\n" for a in actions))
    try:
        os.link(staged, log / f"{version:020d}.json")  # atomic: fails when the version exists
    except FileExistsError:
        raise CommitFailedError(f"version {version} of {table_path} was committed by another writer") from None
    finally:
        staged.unlink(missing_ok=True)
