"""The curation table OUT/curation: one row per ok design of the last `designs curate` run, each
run a new Delta version (an overwrite), its files sorted by `review_order`.

Columns: design_id, group_id (a hash of the group's smallest design id: a rerun over an
unchanged catalog gives the same ids), group_size, representative (the design id of the
group's best design), rank_in_group (1 = best), score (pipeline/execution/curate.py, the
weights in docs/ANALYSTS.md), review_order (0..n-1: the representatives by score, best first,
then the other members group by group in the same order, by rank), method (how the row was
grouped), curated_at, curation_run.

`designs query` reads it as the table `curation` (pipeline/catalog/sql.py); the static gallery
reads its representatives past its bound (pipeline/views/gallery.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from pipeline.catalog.designs import CatalogFault, DesignCatalog, _first_line
from pipeline.config import CURATE_SCORE_WEIGHTS, CURATE_THRESHOLD

CURATION_DIR = "curation"
CURATION_SCHEMA = pa.schema(
    [
        pa.field("design_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("group_size", pa.int32(), nullable=False),
        pa.field("representative", pa.string(), nullable=False),
        pa.field("rank_in_group", pa.int32(), nullable=False),
        pa.field("score", pa.float64()),
        pa.field("review_order", pa.int64(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("curated_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("curation_run", pa.string(), nullable=False),
    ]
)
# About this many rows a data file (delta-rs cuts at a size in bytes; a row is about 64 bytes
# written): a page of the review (48 designs) meets one file by its review_order statistics,
# and a million designs are a few dozen files.
ROWS_PER_FILE = 65_536
# Defaults of `designs curate`: pipeline/config.py.
DEFAULT_THRESHOLD = CURATE_THRESHOLD
DEFAULT_SCORE_WEIGHTS = dict(CURATE_SCORE_WEIGHTS)
SCORE_TERMS = tuple(CURATE_SCORE_WEIGHTS)


def curation_path(out: str | Path) -> Path:
    return Path(out) / CURATION_DIR


def curation_table(out: str | Path, version: int | None = None) -> DeltaTable | None:
    """The curation table (at `version`), or None where `designs curate` never ran."""
    try:
        return DeltaTable(str(curation_path(out)), version=version)
    except TableNotFoundError:
        return None


def group_id(smallest_design_id: str) -> str:
    """A group's id: derived from its smallest member, so the same members give the same id."""
    return hashlib.sha256(f"curation-group:{smallest_design_id}".encode()).hexdigest()[:32]


def write_curation(out: str | Path, rows: pa.Table, run_id: str) -> int:
    """Write `rows` (CURATION_SCHEMA, any order) as the table's new version, sorted by
    review_order; return the version. CatalogFault where the disk or the log fails."""
    rows = rows.select(CURATION_SCHEMA.names).cast(CURATION_SCHEMA).sort_by("review_order")
    path = curation_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    catalog = DesignCatalog(out)

    # One chunk: delta-rs then cuts files in order (chunks would be spread over its writers).
    rows = rows.combine_chunks()

    def attempt() -> int:
        write_deltalake(
            str(path),
            rows,
            mode="overwrite",
            schema_mode="overwrite",
            name="curation",
            description="near-duplicate groups and ranks of the ok designs (designs curate)",
            target_file_size=ROWS_PER_FILE * 64,
            commit_properties=CommitProperties(custom_metadata={"designs.note": "curate", "run_id": run_id}),
        )
        table = curation_table(out)
        assert table is not None
        return table.version()

    try:
        return catalog.retrying(attempt)
    except (DeltaError, OSError) as err:
        raise CatalogFault(f"cannot write {path}: {_first_line(err)}") from None
