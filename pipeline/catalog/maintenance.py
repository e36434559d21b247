"""Upkeep of the design catalog: compact small data files, vacuum what no version
inside the retention needs, write a checkpoint.

Every shard is one merge, and every merge writes new data files, so a catalog of
millions of designs made in small shards holds thousands of small files that
every read opens. `maintain` rewrites them into few large ones sorted by design_id
(a commit that changes no row; pipeline/catalog/compaction.py), re-sorts the whole
table when those sorted layers pile up (a z-order on design_id), deletes files that
no version committed within the retention reads any more, and writes a checkpoint
so readers start from one parquet file instead of replaying the whole log.

The vacuum (pipeline/catalog/vacuum.py) deletes only files the table's log once named, or
that a killed compaction recorded, inside the table's own folder and never through a link;
a link where the table's folders or data files are is refused before anything is done.

The tables beside the catalog (OUT/embeddings, OUT/curation, OUT/reviews) grow files too: a
shard commit's embeddings, a curate run's overwrite, a verdict. Where they exist, `maintain`
compacts the embeddings and reviews once their owners' thresholds are passed, vacuums each
with the same retention and the same vacuum (its minimum where its own property asks for
more), and writes its checkpoint; a link in any of them refuses the whole maintenance first.

Time travel: a version stays readable while the commit that replaced its files
is inside the retention. After a vacuum, `--version` / `--as-of` to an older
version fails (its files are gone); every version committed within the
retention keeps working.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from pipeline.catalog.compaction import (
    MAX_LAYERS,
    STRATEGY,
    compact_small_files,
    layers,
    layers_after_compaction,
    writes_protocol,
)
from pipeline.catalog.datafiles import DataFile, data_files
from pipeline.catalog.designs import (
    COMMIT_ATTEMPTS,
    LOG_DIR,
    TABLE_PROPERTIES,
    CatalogFault,
    DesignCatalog,
    _first_line,
    check_out_path,
)
from pipeline.catalog.vacuum import refuse_links, vacuum
from pipeline.config import MIN_RETENTION_HOURS, config_field

NOTE = "maintain"  # designs.note of the compaction and vacuum commits, shown by `commits`
RETENTION_PROPERTY = "delta.deletedFileRetentionDuration"
STATS_PROPERTY = "delta.dataSkippingStatsColumns"
_INTERVAL = re.compile(r"interval\s+(\d+)\s+([a-z]+?)s?", re.IGNORECASE)
# Memory the z-order's sort may hold before it spills to disk (DataFusion's default is 20 GiB).
Z_ORDER_SPILL_BYTES = 2 * 2**30
# Bytes per file of the sorted table: about 3,500 designs with full loss curves, what a
# commit reads when its ids fall in one, whatever the table's size.
CLUSTERED_FILE_BYTES = 8 * 2**20
RESORT = "z-order of the whole table"
_UNIT_HOURS = {"week": 168.0, "day": 24.0, "hour": 1.0, "minute": 1 / 60, "second": 1 / 3600}
# The tables beside the design catalog, by their folder under OUT (embeddings.py's EMBEDDINGS_DIR,
# curation.py's CURATION_DIR, reviews.py's REVIEWS_DIR; named here so that a maintenance without
# an embeddings table imports no torch).
SIDE_TABLES = ("embeddings", "curation", "reviews")


@dataclass(frozen=True)
class MaintenanceReport:
    """What one `maintain` did (or, for a dry run, would do) to the table at `table_path`."""

    table_path: str
    dry_run: bool
    retention_hours: int
    files_before: int  # data files of the latest version, before compaction
    bytes_before: int
    files_after: int
    bytes_after: int
    compacted_files: int  # files the compaction replaced
    written_files: int  # files it wrote in their place
    strategy: str  # STRATEGY (the small files only) or RESORT (every file); what a dry run would do
    layers: int  # sorted layers a commit's ids may meet after it (MAX_LAYERS at most, but for a dry run)
    checkpoint_version: int | None
    vacuumed_files: int
    vacuumed_bytes: int
    version: int  # the table's version when maintenance ended
    links_left: int = 0  # symbolic links in the table's folder: nothing behind them is read or deleted
    unnamed_left: int = 0  # files no log entry names (nor a killed compaction's record): left alone
    side_tables: tuple[TableUpkeep, ...] = ()  # the tables beside it that exist, SIDE_TABLES' order

    def lines(self) -> list[str]:
        return self._catalog_lines() + [line for side in self.side_tables for line in side.lines(self.dry_run)]

    def _catalog_lines(self) -> list[str]:
        if self.dry_run:
            return [
                f"design catalog {self.table_path} at version {self.version}: dry run, nothing changed",
                f"  data files: {self.files_before:,} ({_size(self.bytes_before)}), not compacted; "
                f"maintenance would do a {self.strategy}",
                "  checkpoint: none written",
                f"  vacuum: would remove {self.vacuumed_files:,} file(s) ({_size(self.vacuumed_bytes)}) that no "
                f"version of the last {self.retention_hours} h reads{self._left()}",
            ]
        compaction = (
            f"{self.compacted_files:,} rewritten into {self.written_files:,} ({self.strategy})"
            if self.compacted_files
            else "nothing to compact"
        )
        return [
            f"design catalog {self.table_path} maintained, now at version {self.version}",
            f"  data files before compaction: {self.files_before:,} ({_size(self.bytes_before)})",
            f"  data files after compaction: {self.files_after:,} ({_size(self.bytes_after)}); {compaction}; "
            f"{self.layers} sorted layer(s) by design_id",
            f"  checkpoint: version {self.checkpoint_version}",
            f"  vacuum: {self.vacuumed_files:,} file(s) removed, {_size(self.vacuumed_bytes)} freed; "
            f"versions of the last {self.retention_hours} h stay readable{self._left()}",
        ]

    def _left(self) -> str:
        return _left(self.links_left, self.unnamed_left)


@dataclass(frozen=True)
class TableUpkeep:
    """What one `maintain` did (or would do) to a table beside the design catalog."""

    name: str  # SIDE_TABLES' name: embeddings, curation or reviews
    table_path: str
    retention_hours: int  # the one asked for, or the table's minimum where that is more
    files: int  # data files of the latest version, after any compaction
    bytes: int
    compacted_files: int  # files its owner's compaction replaced (0: not due, or a dry run)
    checkpoint_version: int | None
    vacuumed_files: int
    vacuumed_bytes: int
    version: int
    links_left: int = 0
    unnamed_left: int = 0

    def lines(self, dry_run: bool) -> list[str]:
        if dry_run:
            return [
                f"{self.name} table {self.table_path} at version {self.version}: {self.files:,} data file(s) "
                f"({_size(self.bytes)}); dry run, nothing changed",
                f"  vacuum: would remove {self.vacuumed_files:,} file(s) ({_size(self.vacuumed_bytes)}) that no "
                f"version of the last {self.retention_hours} h reads{_left(self.links_left, self.unnamed_left)}",
            ]
        compaction = (
            f"{self.compacted_files:,} small file(s) compacted" if self.compacted_files else "nothing compacted"
        )
        return [
            f"{self.name} table {self.table_path} maintained, now at version {self.version}: {self.files:,} data "
            f"file(s) ({_size(self.bytes)}); {compaction}; checkpoint: version {self.checkpoint_version}",
            f"  vacuum: {self.vacuumed_files:,} file(s) removed, {_size(self.vacuumed_bytes)} freed; versions of "
            f"the last {self.retention_hours} h stay readable{_left(self.links_left, self.unnamed_left)}",
        ]


def _left(links: int, unnamed: int) -> str:
    left = []
    if links:
        left.append(f"{links:,} symbolic link(s), not followed")
    if unnamed:
        left.append(f"{unnamed:,} file(s) no log entry names")
    return f"; left alone: {', '.join(left)}" if left else ""


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} B"
    value, unit = n / 1024, "KiB"
    for larger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.1f} {unit}"


def small_files(out: str | Path, below_bytes: int) -> int:
    """How many data files of the latest version are smaller than `below_bytes` (0 without a catalog).
    CatalogFault when the table cannot be read."""
    catalog = DesignCatalog(out)
    if not catalog.exists():
        return 0
    try:
        files = data_files(catalog.table())
    except (DeltaError, OSError) as err:
        raise _fault(catalog, err) from None
    return sum(1 for f in files if f.size < below_bytes)


def minimum_retention_hours(table: DeltaTable) -> float | None:
    """The shortest vacuum retention the table allows (its delta.deletedFileRetentionDuration,
    a week when unset); None when the property is in a form this does not read."""
    text = table.metadata().configuration.get(RETENTION_PROPERTY)
    if text is None:
        return float(MIN_RETENTION_HOURS)
    match = _INTERVAL.fullmatch(text.strip())
    if not match or match.group(2).lower() not in _UNIT_HOURS:
        return None
    return int(match.group(1)) * _UNIT_HOURS[match.group(2).lower()]


def maintain(
    out: str | Path,
    retention_hours: int = MIN_RETENTION_HOURS,
    target_size: int | None = None,
    dry_run: bool = False,
    enforce_retention: bool = True,
    small_file_bytes: int | None = None,
    resort: bool = False,
) -> MaintenanceReport:
    """Compact the latest version's small data files, vacuum files no version committed within
    `retention_hours` reads, then write a checkpoint of the latest version.

    The compaction rewrites each partition's files under `small_file_bytes` (None: the
    config's maintain_small_file_bytes, 2 MiB) sorted by design_id: its cost follows the
    small files, not the table. When that would leave a commit's ids meeting more than
    MAX_LAYERS sorted layers of files, or with resort=True, it z-orders the whole table instead.
    target_size: bytes per rewritten file (None: CLUSTERED_FILE_BYTES, 8 MiB).
    dry_run: change nothing; report the files and what the vacuum would remove.
    enforce_retention=False lifts the table's minimum retention: only for tests, since a
    retention under it can delete files that a run still writing or a reader still needs.

    FileNotFoundError: no catalog at OUT. ValueError: a bad OUT or retention, or a symbolic link
    where the table's folders or data files are (LinkRefused).
    CatalogFault: the disk or the log failed, or concurrent commits kept refusing the compaction.
    """
    check_out_path(out)
    if isinstance(retention_hours, bool) or not isinstance(retention_hours, int) or retention_hours < 0:
        raise ValueError(f"retention {retention_hours!r} hours is invalid; accepted: a whole number of hours >= 0")
    if small_file_bytes is not None and (
        isinstance(small_file_bytes, bool) or not isinstance(small_file_bytes, int) or small_file_bytes < 1
    ):
        raise ValueError(f"small file size {small_file_bytes!r} bytes is invalid; accepted: a whole number >= 1")
    catalog = DesignCatalog(out)
    if not catalog.exists():
        catalog.table()  # raises FileNotFoundError naming the path
    refuse_links(catalog.table_path)  # before delta-rs reads the log through one
    properties = CommitProperties(custom_metadata={"designs.note": NOTE})
    try:
        table = catalog.table()
        minimum = minimum_retention_hours(table)
        if enforce_retention:
            if minimum is None:
                text = table.metadata().configuration.get(RETENTION_PROPERTY)
                raise ValueError(
                    f"the table's {RETENTION_PROPERTY} {text!r} is in a form this does not read; accepted: "
                    "'interval <n> <weeks|days|hours|minutes|seconds>'; set it so, then run again"
                )
            if retention_hours < minimum:
                raise ValueError(
                    f"retention {retention_hours} hours is under the table's minimum of {minimum:g} hours "
                    f"({RETENTION_PROPERTY}); accepted: {minimum:g} or more, so that no version inside it loses files"
                )
        before = data_files(table)
        refuse_links(catalog.table_path, table.metadata().partition_columns, (f.path for f in before))
        sides = _side_tables(out, retention_hours, enforce_retention)  # refused here, before any change
        small = small_file_bytes or config_field("maintain_small_file_bytes").default
        strategy = _strategy(table, before, small, resort)
        compacted = written = 0
        if not dry_run:
            # Concurrent merges refuse a compaction that removed files they read (and the reverse);
            # each try re-reads the table, as a shard's commit does.
            def attempt() -> tuple[int, int]:
                if strategy == RESORT:
                    return _compact(catalog.table(), target_size, properties)
                return compact_small_files(
                    catalog.table(),
                    catalog.table_path,
                    small,
                    target_size or CLUSTERED_FILE_BYTES,
                    {"designs.note": NOTE},
                )

            try:
                compacted, written = catalog.retrying(attempt)
            except CommitFailedError:
                raise CatalogFault(
                    f"cannot compact the design catalog at {str(catalog.table_path)!r}: concurrent commits "
                    f"refused it {COMMIT_ATTEMPTS} times; run `designs maintain` again when fewer runs write"
                ) from None
            table = catalog.table()
        after = data_files(table) if not dry_run else before
        sorted_layers = layers(after) if not dry_run else layers_after_compaction(before, small)
        swept = vacuum(
            catalog.table_path,
            (f.path for f in after),
            retention_hours,
            dry_run,
            {"designs.note": NOTE},
            minimum if minimum is not None else MIN_RETENTION_HOURS,
            enforce_retention,
        )
        checkpoint = None
        if not dry_run:
            table = catalog.table()
            table.create_checkpoint()
            checkpoint = table.version()
        version = catalog.table().version()
        kept_up = tuple(_keep_up(out, side, dry_run, enforce_retention) for side in sides)
    except CatalogFault:
        raise
    except (DeltaError, OSError) as err:
        raise _fault(catalog, err) from None
    return MaintenanceReport(
        table_path=str(catalog.table_path),
        dry_run=dry_run,
        retention_hours=retention_hours,
        files_before=len(before),
        bytes_before=sum(f.size for f in before),
        files_after=len(after),
        bytes_after=sum(f.size for f in after),
        compacted_files=compacted,
        written_files=written,
        strategy=strategy,
        layers=sorted_layers,
        checkpoint_version=checkpoint,
        vacuumed_files=swept.files,
        vacuumed_bytes=swept.bytes,
        version=version,
        links_left=swept.links,
        unnamed_left=swept.unnamed,
        side_tables=kept_up,
    )


@dataclass(frozen=True)
class _Side:
    name: str
    path: Path
    retention_hours: int
    minimum_hours: float


def _side_tables(out: str | Path, retention_hours: int, enforce_retention: bool) -> list[_Side]:
    """The tables of SIDE_TABLES that exist, each checked as the catalog is: LinkRefused for a
    link where its folders or data files are, ValueError for a retention property this does not
    read. Each keeps the retention asked for, or its own minimum where that is longer."""
    found = []
    for name in SIDE_TABLES:
        path = Path(out) / name
        refuse_links(path)  # before delta-rs reads a log through one
        if not (path / LOG_DIR).is_dir():
            continue
        try:
            table = DeltaTable(str(path))
        except TableNotFoundError:
            continue  # a log without a first commit: nothing to keep up
        except (DeltaError, OSError) as err:
            raise _side_fault(name, path, err) from None
        refuse_links(path, table.metadata().partition_columns, (f.path for f in data_files(table)))
        minimum = minimum_retention_hours(table)
        if minimum is None and enforce_retention:
            text = table.metadata().configuration.get(RETENTION_PROPERTY)
            raise ValueError(
                f"the {name} table's {RETENTION_PROPERTY} {text!r} is in a form this does not read; accepted: "
                "'interval <n> <weeks|days|hours|minutes|seconds>'; set it so, then run again"
            )
        minimum = MIN_RETENTION_HOURS if minimum is None else minimum
        retention = max(retention_hours, math.ceil(minimum)) if enforce_retention else retention_hours
        found.append(_Side(name, path, retention, minimum))
    return found


def _compact_side(out: str | Path, name: str) -> int:
    """The owner's compaction of a side table, once its own threshold is passed; files replaced."""
    if name == "reviews":
        from pipeline.catalog.reviews import compact_reviews

        return compact_reviews(out)
    if name == "embeddings":
        from pipeline.catalog.embeddings import compact_embeddings  # imports torch: only where the table is

        return compact_embeddings(out)
    return 0  # curation: each run overwrites its one version; only the vacuum has work


def _keep_up(out: str | Path, side: _Side, dry_run: bool, enforce_retention: bool) -> TableUpkeep:
    """Compact (when due), vacuum and checkpoint one side table; for a dry run, only count."""
    try:
        compacted = 0 if dry_run else _compact_side(out, side.name)
        files = data_files(DeltaTable(str(side.path)))
        swept = vacuum(
            side.path,
            (f.path for f in files),
            side.retention_hours,
            dry_run,
            {"designs.note": NOTE},
            side.minimum_hours,
            enforce_retention,
        )
        checkpoint = None
        if not dry_run:
            table = DeltaTable(str(side.path))
            table.create_checkpoint()
            checkpoint = table.version()
        version = DeltaTable(str(side.path)).version()
    except CatalogFault:
        raise
    except (DeltaError, OSError) as err:
        raise _side_fault(side.name, side.path, err) from None
    return TableUpkeep(
        name=side.name,
        table_path=str(side.path),
        retention_hours=side.retention_hours,
        files=len(files),
        bytes=sum(f.size for f in files),
        compacted_files=compacted,
        checkpoint_version=checkpoint,
        vacuumed_files=swept.files,
        vacuumed_bytes=swept.bytes,
        version=version,
        links_left=swept.links,
        unnamed_left=swept.unnamed,
    )


def _side_fault(name: str, path: Path, err: BaseException) -> CatalogFault:
    return CatalogFault(
        f"cannot maintain the {name} table at {str(path)!r}: {_first_line(err)}; free disk space or fix the folder "
        "(a damaged entry under _delta_log: restore it from a backup), then run again"
    )


def _lacks_narrow_statistics(table: DeltaTable) -> bool:
    """A partitioned table made before its files' statistics were narrowed to STATS_COLUMNS
    (older unpartitioned ones prune their status by statistics, so they keep them all)."""
    settings = table.metadata().configuration
    return "status" in table.metadata().partition_columns and STATS_PROPERTY not in settings


def _strategy(table: DeltaTable, files: list[DataFile], small_file_bytes: int, resort: bool) -> str:
    """RESORT when asked, when compaction.py cannot write the table's log entries (its protocol
    wants more of a writer), or when compacting only the small files would leave more than
    MAX_LAYERS sorted layers; STRATEGY otherwise."""
    if resort or not writes_protocol(table):
        return RESORT
    if _lacks_narrow_statistics(table):
        return RESORT  # rewritten once, with the narrow statistics
    return RESORT if layers_after_compaction(files, small_file_bytes) > MAX_LAYERS else STRATEGY


def _compact(table: DeltaTable, target_size: int | None, properties: CommitProperties) -> tuple[int, int]:
    """Rewrite the data files sorted by design_id (z-order on one column), each partition
    apart, in files of about `target_size` bytes (default CLUSTERED_FILE_BYTES);
    (files removed, files added).

    Z-order, not plain compaction: bin-packing merges shard files of unrelated id ranges
    into files that span every id, after which a shard's merge must read all of them.
    Sorted, each file spans a narrow id range, and a merge reads the one or two its ids
    meet. Small files because delta-rs prunes a merge's reads by file, not by row group
    (measured: a 40k-row file costs the same read with 1 or 10 row groups).
    """
    # Such a table takes the property here, so the rewrite below writes narrow statistics.
    if _lacks_narrow_statistics(table):
        table.alter.set_table_properties(dict(TABLE_PROPERTIES), commit_properties=properties)
    metrics = table.optimize.z_order(
        ["design_id"],
        target_size=target_size or CLUSTERED_FILE_BYTES,
        max_spill_size=Z_ORDER_SPILL_BYTES,
        commit_properties=properties,
    )
    return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])


def _fault(catalog: DesignCatalog, err: BaseException) -> CatalogFault:
    return CatalogFault(
        f"cannot maintain the design catalog at {str(catalog.table_path)!r}: {_first_line(err)}; free disk space "
        "or fix the folder (a damaged entry under _delta_log: restore it from a backup), then run again"
    )
