"""The versioned design catalog: a Delta Lake table at OUT/designs, PNGs at OUT/images.

One row per design, keyed by `design_id`. Shards are merged as they finish:
a design already `ok` is never replaced, a `failed` one is replaced by its
retry, so reruns add no duplicates. Every commit's metadata carries its run id.

Commits stay cheap as the table grows: a shard's design ids are neighbours
(planning sorts them), each merge names the id ranges it can touch, and
`designs maintain` keeps the files sorted by id in a few layers of 8 MiB files, so
delta-rs reads only the few files whose ids (min/max statistics) meet the shard's.
The table is partitioned by `status`: planning reads the ok ids and a commit the
failed rows of its pairings without opening the other partition.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from pipeline.catalog.datafiles import data_files
from pipeline.catalog.ids import DesignIds, id_ranges
from pipeline.catalog.schema import SCHEMA, conform_params

TABLE_DIR = "designs"
IMAGES_DIR = "images"
RUNS_DIR = "runs"
IMAGE_EXTENSIONS = ("png", "tif")
COMMIT_ATTEMPTS = 12
PARTITION_BY = ("status",)
# A merge names at most this many id ranges: enough for a shard that spans a few batch groups.
MERGE_RANGES = 8
# File statistics for the columns that prune (a merge's id ranges, time travel by run and
# date) instead of delta-rs' default first 32: every commit loads every file's statistics,
# and at 1M designs in 250 files the load took 0.03 s with 32 columns, 0.01 s with these.
STATS_COLUMNS = "design_id,run_id,created_at"
TABLE_PROPERTIES = {"delta.dataSkippingStatsColumns": STATS_COLUMNS}
SUPERSEDED = "superseded"  # only in a merge's source: marks a stale failed row for deletion
LOG_DIR = "_delta_log"
# A committed table version: a log entry or a checkpoint (classic, multi-part or v2) under _delta_log.
_COMMITTED = re.compile(r"\d{20}\.(json|checkpoint(\.[^/]+)?\.(parquet|json))")

logger = logging.getLogger(__name__)
T = TypeVar("T")

# delta-rs reads a path with a scheme, or with %-escapes, as a URL: the table would land
# in one place and the PNGs (plain paths) in another.
_URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|%[0-9A-Fa-f]{2}")


class CatalogFault(RuntimeError):
    """The environment keeps the design catalog from being read or written: a corrupt
    log entry, a read-only or full disk. Not the catalog's inputs, not a design."""


def check_out_path(out: str | Path) -> None:
    """Refuse an OUT that delta-rs would read as a URL (ValueError naming it)."""
    text = str(out)
    if _URL_LIKE.search(text):
        raise ValueError(
            f"--out {text!r} reads as a URL (a scheme such as file:// or s3://, or a %-escape): the design "
            "catalog takes local paths only; give a plain folder path"
        )


class DesignCatalog:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.table_path = self.out / TABLE_DIR

    # --- paths ---

    def image_relpath(self, design_id: str, png_sha256: str, ext: str = "png") -> str:
        """images/ab/<design_id>-<first 12 hex of the file's SHA-256>.<ext> (png, or tif for
        --format tiff16): addressed by
        design, and never overwritten by another rendering of the same design
        (a concurrent run's, or a crashed run's that never committed)."""
        if not (design_id.isalnum() and design_id.isascii()):
            raise ValueError(f"design_id {design_id!r} must be ASCII letters and digits (it becomes a file name)")
        if not (len(png_sha256) == 64 and all(c in "0123456789abcdef" for c in png_sha256)):
            raise ValueError(f"png_sha256 {png_sha256!r} must be 64 lowercase hex digits")
        if ext not in IMAGE_EXTENSIONS:
            raise ValueError(f"image extension {ext!r} is invalid; accepted: {', '.join(IMAGE_EXTENSIONS)}")
        return f"{IMAGES_DIR}/{design_id[:2]}/{design_id}-{png_sha256[:12]}.{ext}"

    @property
    def images_dir(self) -> Path:
        return self.out / IMAGES_DIR

    def run_dir(self, run_id: str) -> Path:
        return self.out / RUNS_DIR / run_id

    # --- table ---

    @property
    def log_dir(self) -> Path:
        return self.table_path / LOG_DIR

    def exists(self) -> bool:
        """The table has a committed version. A log folder without one is what a creation
        killed before its first entry was renamed into place leaves: no table yet."""
        try:
            with os.scandir(self.log_dir) as entries:
                return any(_COMMITTED.fullmatch(entry.name) for entry in entries)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def table(self, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(str(self.table_path), version=version)
        except TableNotFoundError:
            if self.log_dir.is_dir() and not self.exists():
                raise FileNotFoundError(
                    f"the design catalog at {self.table_path} has no committed version (its creation was "
                    "interrupted); the next `designs generate` creates it afresh"
                ) from None
            raise FileNotFoundError(f"no design catalog at {self.table_path}; run `designs generate` first") from None

    def ensure_table(self) -> DeltaTable:
        if not self.exists():
            interrupted = self.log_dir.is_dir()
            # Listed before creating, so only files of an earlier attempt are set aside.
            leftovers = sorted(os.listdir(self.log_dir)) if interrupted else []
            self.out.mkdir(parents=True, exist_ok=True)
            try:
                # delta-rs stages version 0 under a fresh name, so leftovers do not block it.
                DeltaTable.create(
                    str(self.table_path),
                    schema=SCHEMA,
                    mode="ignore",
                    name="designs",
                    description="Style-transfer designs, one row per design_id",
                    partition_by=list(PARTITION_BY),
                    configuration=dict(TABLE_PROPERTIES),
                    commit_properties=CommitProperties(custom_metadata={"designs.note": "create"}),
                )
            except DeltaError:
                if not self.exists():  # losing a creation race to another run is fine
                    raise
            if interrupted:
                self._set_aside(leftovers)
        return self.table()

    def _set_aside(self, leftovers: list[str]) -> None:
        """Move the files of a creation that never committed out of the log, kept for inspection.
        Nothing was committed, so no data file can be referenced and none is touched."""
        aside = self.table_path / f"{LOG_DIR}.incomplete-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"
        moved = []
        for name in leftovers:
            if _COMMITTED.fullmatch(name):
                continue
            aside.mkdir(exist_ok=True)
            try:
                os.replace(self.log_dir / name, aside / name)
            except FileNotFoundError:  # a concurrent creator's staged entry, renamed into place since
                continue
            moved.append(name)
        where = f"; its leftovers {', '.join(moved)} moved to {aside}" if moved else ""
        logger.warning(
            "design catalog %s had no committed version (a creation was interrupted): created it afresh%s",
            self.table_path,
            where,
        )

    def ok_design_ids(self) -> set[str]:
        """The ids of every ok design as a set of str: for small catalogs and checks; planning uses done_ids."""
        return set(self.done_ids())

    def done_ids(self) -> DesignIds:
        """The ids of every ok design, read column-wise into a sorted byte array: no Python
        object per id, so a catalog of 10M designs costs its planning 320 MB, not a set's 1+ GB."""
        empty = DesignIds.from_arrow(pa.chunked_array([], pa.string()))
        if not self.exists():
            return empty
        parts = [
            DesignIds.from_arrow(rows.column("design_id"), sort=False).ids
            for rows in _rows_of_status(self.table(), self.table_path, "ok", ["design_id"])
        ]
        return DesignIds.from_owned(np.concatenate(parts)) if parts else empty

    def commit(self, rows: list[dict[str, Any]], run_id: str, note: str = "shard") -> int | None:
        """Merge rows on design_id in one commit; returns the new table version.

        Concurrent runs on the same table conflict at commit time (delta-rs
        refuses a merge whose read data changed); the merge is then rerun
        against the new version, so each design stays ok exactly once.
        """
        try:
            return self.retrying(lambda: self._merge(rows, run_id, note))
        except CommitFailedError:
            raise
        except (DeltaError, OSError) as err:  # a damaged log, a full or read-only disk
            raise CatalogFault(
                f"cannot commit to the design catalog at {str(self.table_path)!r}: {_first_line(err)}; free disk space or fix "
                "the folder, then run again (committed designs are kept, the rest are remade)"
            ) from None

    def retrying(self, attempt_commit: Callable[[], T]) -> T:
        """attempt_commit() until it is not refused by a concurrent commit (CommitFailedError, raised
        again after COMMIT_ATTEMPTS tries); each try re-reads the table."""
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                return attempt_commit()
            except CommitFailedError:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * 2 ** min(attempt, 5))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def merge_ranges(self, design_ids: list[str]) -> list[tuple[str, str]] | None:
        """The id ranges a merge of these ids names (None: none, the merge reads the whole table)."""
        return id_ranges(design_ids, MERGE_RANGES)

    def _merge(self, rows: list[dict[str, Any]], run_id: str, note: str) -> int | None:
        """One merge attempt.

        An ok design is final. A failed one is replaced by its retry, and an ok
        design removes the failed rows of its pairing_key left by earlier inputs
        (a missing file since restored, an unreadable one since replaced).
        """
        if not rows:
            return None
        table = self.ensure_table()
        new_ids = {r["design_id"] for r in rows}
        ok_keys = sorted({r["pairing_key"] for r in rows if r["status"] == "ok" and r.get("pairing_key")})
        stale: list[str] = []
        if ok_keys:
            stale = sorted(set(self._failed_ids_of(table, ok_keys)) - new_ids)
        tombstones = [
            {
                "design_id": d,
                "run_id": run_id,
                "created_at": rows[0]["created_at"],
                "status": SUPERSEDED,
                "content_id": "",
                "style_id": "",
            }
            for d in stale
        ]
        records = rows + tombstones
        params = pa.schema(table.schema().to_arrow()).field("params").type
        source = conform_params(pa.Table.from_pylist(records, schema=SCHEMA), records, params)
        metadata = {"run_id": run_id, "designs.note": note, "designs.rows": str(len(rows))}
        (
            table.merge(
                source,
                predicate=_merge_predicate(self.merge_ranges([r["design_id"] for r in rows] + stale)),
                source_alias="source",
                target_alias="target",
                # Config fields added by later versions widen `params`; old tables take them.
                merge_schema=True,
                commit_properties=CommitProperties(custom_metadata=metadata),
            )
            .when_matched_delete(predicate=f"source.status = '{SUPERSEDED}'")
            .when_matched_update_all(predicate="target.status <> 'ok'")
            .when_not_matched_insert_all(predicate=f"source.status <> '{SUPERSEDED}'")
            .execute()
        )
        return table.version()  # the merge moved `table` to the version it committed

    def _failed_ids_of(self, table: DeltaTable, pairing_keys: list[str]) -> list[str]:
        """The ids of the failed rows under these pairing keys, read from the failed rows' files alone."""
        keys = pa.array(pairing_keys, pa.string())
        return [
            design_id
            for rows in _rows_of_status(table, self.table_path, "failed", ["design_id", "pairing_key"])
            for design_id in rows.filter(pc.is_in(rows.column("pairing_key"), keys)).column("design_id").to_pylist()
        ]

    def retire(self, retired: dict[str, tuple[str, str]], note: str = "verify-fix") -> int | None:
        """Turn ok rows whose PNG is gone or altered into failed rows, so the next run
        remakes them (planning skips only ok ids); returns the new table version.

        `retired`: design_id -> (the output_uri the row had, the error to record). A row
        changed since (remade by a run meanwhile, pointing at another PNG) is left alone.
        The commit carries no run_id: it is not a run's.
        """
        if not retired:
            return None
        source = pa.table(
            {
                "design_id": pa.array(list(retired), pa.string()),
                "output_uri": pa.array([uri for uri, _ in retired.values()], pa.string()),
                "error": pa.array([error for _, error in retired.values()], pa.string()),
            }
        )
        metadata = {"designs.note": note, "designs.rows": str(len(retired))}

        def attempt() -> int | None:
            (
                self.table()
                .merge(
                    source,
                    predicate="target.design_id = source.design_id",
                    source_alias="source",
                    target_alias="target",
                    commit_properties=CommitProperties(custom_metadata=metadata),
                )
                .when_matched_update(
                    updates={
                        "status": "'failed'",
                        "error": "source.error",
                        "output_uri": "NULL",
                        "output_sha256": "NULL",
                    },
                    predicate="target.status = 'ok' AND target.output_uri = source.output_uri",
                )
                .execute()
            )
            return self.table().version()

        return self.retrying(attempt)

    def version(self) -> int | None:
        return self.table().version() if self.exists() else None

    def check(self) -> int | None:
        """Before any work: OUT can be written and the table (if any) read; returns its version.
        CatalogFault names the fault and what to do."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".write-check-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as err:
            raise CatalogFault(
                f"cannot write to the design catalog's folder {str(self.out)!r}: {err.strerror or err}; "
                "give a writable --out, free disk space, or fix its permissions"
            ) from None
        if not self.exists():
            return None
        try:
            table = self.table()
            _ = table.to_pyarrow_dataset().schema  # reads the log through its last entry
            return table.version()
        except (DeltaError, OSError, ValueError) as err:
            raise CatalogFault(
                f"cannot read the design catalog at {str(self.table_path)!r}: {_first_line(err)}; a log entry under "
                f"{str(self.log_dir)!r} is damaged: restore it from a backup, or move the table aside to start "
                "a new one"
            ) from None

    def history(self) -> list[dict[str, Any]]:
        return self.table().history()

    def to_pandas(self, version: int | None = None):
        return self.table(version).to_pandas()

    def write_run_file(self, run_id: str, name: str, payload: dict[str, Any]) -> Path:
        path = self.run_dir(run_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        return path


def _rows_of_status(table: DeltaTable, table_path: Path, status: str, columns: list[str]) -> Iterator[pa.Table]:
    """`columns` (as string) of the rows with this status, a file and a batch at a time: the
    status partition's files, or in a table made before the partitioning those whose
    statistics allow the status (their rows filtered)."""
    partitioned = "status" in table.metadata().partition_columns
    read = columns if partitioned else [*columns, "status"]
    for file in data_files(table, status):
        for batch in pq.ParquetFile(file.local_path(table_path)).iter_batches(batch_size=1 << 16, columns=read):
            # Cast first: pyarrow has no filter kernel for the string_view columns delta-rs writes.
            rows = pa.table({name: batch.column(name).cast(pa.string()) for name in read})
            yield rows if partitioned else rows.filter(pc.equal(rows.column("status"), status))


def _merge_predicate(ranges: list[tuple[str, str]] | None) -> str:
    """A merge's match on design_id. Naming the id ranges lets delta-rs skip every file whose
    ids (min/max statistics) lie outside them: without them a merge reads the whole table."""
    match = "target.design_id = source.design_id"
    if ranges is None:
        return match
    named = " OR ".join(
        f"(target.design_id >= {_sql_text(low)} AND target.design_id <= {_sql_text(high)})" for low, high in ranges
    )
    return f"{match} AND ({named})"


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _first_line(err: BaseException) -> str:
    """delta-rs appends a multi-line Rust backtrace to some messages: the first line says what failed."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
