"""The reviews table: designers' verdicts on designs, an append-only Delta table at OUT/reviews.

One row per verdict given (`designs review`'s POST /verdict): verdict_id (the page's
idempotence key: a retried POST with the same key adds nothing), design_id, verdict
(favourite, reject or clear), reviewer, at, review_session (one per `designs review` process).
Nothing is updated or deleted: the latest verdict per reviewer and design counts, and `clear`
withdraws the ones before it. The design and curation tables are never written here.

Each verdict is a Delta merge on verdict_id (insert when not matched): delta-rs refuses a merge
that a concurrent commit changed the read of, and `retrying` reruns it against the new version,
so two processes appending at once lose nothing and add no duplicate; in one process a lock
serialises them. The table grows by one small file a verdict; `compact_reviews` rewrites them
into one when they pass COMPACT_FILES (the review server does so at its start).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from pipeline.catalog.datafiles import contained_path, data_files, dataset, fragment, plain_schema, read_table
from pipeline.catalog.designs import DesignCatalog

REVIEWS_DIR = "reviews"
VERDICTS = ("favourite", "reject", "clear")
# The page's key: 32 lowercase hex digits (16 random bytes).
VERDICT_ID = re.compile(r"[0-9a-f]{32}")
# A reviewer's name: letters, digits and . _ @ - (what a login or an e-mail address has), at most 64.
REVIEWER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
COMPACT_FILES = 64

SCHEMA = pa.schema(
    [
        pa.field("verdict_id", pa.string(), nullable=False),
        pa.field("design_id", pa.string(), nullable=False),
        pa.field("verdict", pa.string(), nullable=False),
        pa.field("reviewer", pa.string(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("review_session", pa.string(), nullable=False),
    ]
)
LATEST_SCHEMA = pa.schema([SCHEMA.field(n) for n in ("design_id", "reviewer", "verdict", "at")])

_LOCK = threading.Lock()  # one writer at a time in this process


@dataclass(frozen=True)
class Verdict:
    verdict_id: str
    design_id: str
    verdict: str
    reviewer: str
    review_session: str

    def check(self) -> None:
        """ValueError naming the bad field and what is accepted."""
        if not VERDICT_ID.fullmatch(self.verdict_id):
            raise ValueError(f"verdict_id {self.verdict_id[:40]!r} must be 32 lowercase hex digits")
        if not (self.design_id.isascii() and self.design_id.isalnum() and len(self.design_id) <= 128):
            raise ValueError(f"design_id {self.design_id[:40]!r} must be ASCII letters and digits")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict[:40]!r} is invalid; accepted: {', '.join(VERDICTS)}")
        check_reviewer(self.reviewer)
        if not (self.review_session.isascii() and self.review_session.isalnum() and len(self.review_session) <= 64):
            raise ValueError(f"review_session {self.review_session[:40]!r} must be ASCII letters and digits")


def check_reviewer(name: str) -> str:
    if not REVIEWER.fullmatch(name):
        raise ValueError(
            f"reviewer {name[:70]!r} is invalid: 1 to 64 ASCII letters, digits and . _ @ -, starting with a letter or digit"
        )
    return name


def reviews_path(out: str | Path) -> Path:
    return Path(out) / REVIEWS_DIR


def _exists(path: Path) -> bool:
    return (path / "_delta_log").is_dir() and any((path / "_delta_log").glob("*.json"))


def _table(path: Path) -> DeltaTable | None:
    if not _exists(path):
        return None
    try:
        return DeltaTable(str(path))
    except TableNotFoundError:
        return None


def _ensure(path: Path) -> DeltaTable:
    table = _table(path)
    if table is not None:
        return table
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        DeltaTable.create(
            str(path),
            schema=SCHEMA,
            mode="ignore",
            name="reviews",
            description="Designers' verdicts on designs, append-only; the latest per reviewer and design counts",
            configuration={"delta.dataSkippingStatsColumns": "verdict_id,design_id,at"},
        )
    except DeltaError:
        if not _exists(path):  # a concurrent creator won: fine
            raise
    return DeltaTable(str(path))


def append_verdict(out: str | Path, verdict: Verdict, at: datetime | None = None) -> bool:
    """Record a verdict; True when added, False when its verdict_id was already there (a retry).
    ValueError for a bad field (nothing written)."""
    verdict.check()
    path = reviews_path(out)
    with _LOCK:
        stamp = at or datetime.now(UTC)
        source = pa.Table.from_pylist(
            [
                {
                    "verdict_id": verdict.verdict_id,
                    "design_id": verdict.design_id,
                    "verdict": verdict.verdict,
                    "reviewer": verdict.reviewer,
                    "at": stamp,
                    "review_session": verdict.review_session,
                }
            ],
            schema=SCHEMA,
        )

        def attempt() -> bool:
            metrics = (
                _ensure(path)
                .merge(
                    source,
                    predicate="target.verdict_id = source.verdict_id",
                    source_alias="source",
                    target_alias="target",
                    commit_properties=CommitProperties(custom_metadata={"designs.note": "review"}),
                )
                .when_not_matched_insert_all()
                .execute()
            )
            return int(metrics.get("num_target_rows_inserted", 0)) > 0

        # The design catalog's retry of a commit a concurrent one refused.
        return DesignCatalog(out).retrying(attempt)


def read_reviews(out: str | Path) -> pa.Table:
    """Every verdict row (empty, with SCHEMA, when there is no table), read through the data
    files reader (a file leaving the table's folder is refused)."""
    path = reviews_path(out)
    table = _table(path)
    if table is None:
        return SCHEMA.empty_table()
    return read_table(table, path).select(SCHEMA.names).cast(SCHEMA)


def reviews_dataset(out: str | Path) -> ds.Dataset:
    """The latest version's files as a pyarrow dataset (`designs query`'s `reviews`, through
    pipeline/catalog/sql.py); empty with SCHEMA when there is no table. OutsideTable (a
    ValueError) for a file whose real path leaves the table's folder."""
    path = reviews_path(out)
    table = _table(path)
    if table is None:
        return ds.dataset(SCHEMA.empty_table())
    schema = plain_schema(table)
    which = "the latest version of the reviews table"
    return dataset([fragment(f, contained_path(path, f, which), schema) for f in data_files(table)], schema)


def latest_verdicts(out: str | Path) -> pa.Table:
    """The latest verdict per reviewer and design (design_id, reviewer, verdict, at), `clear`
    included: later `at` wins, then the later verdict_id (two verdicts in one microsecond)."""
    rows = read_reviews(out)
    if rows.num_rows == 0:
        return LATEST_SCHEMA.empty_table()
    order = pc.sort_indices(
        rows,
        sort_keys=[
            ("design_id", "ascending"),
            ("reviewer", "ascending"),
            ("at", "ascending"),
            ("verdict_id", "ascending"),
        ],
    )
    rows = rows.take(order)
    design, reviewer = rows.column("design_id"), rows.column("reviewer")
    n = rows.num_rows
    # A row is the latest of its (design, reviewer) when the next row belongs to another pair.
    if n > 1:
        same = pc.and_(
            pc.equal(design.slice(0, n - 1), design.slice(1)), pc.equal(reviewer.slice(0, n - 1), reviewer.slice(1))
        )
        last = pa.concat_arrays([pc.invert(same).combine_chunks(), pa.array([True])])
    else:
        last = pa.array([True])
    return rows.filter(last).select(LATEST_SCHEMA.names)


def favourite_ids(out: str | Path, reviewer: str | None = None) -> list[str]:
    """The designs whose latest verdict is favourite, by any reviewer (None) or by this one; sorted."""
    latest = latest_verdicts(out)
    keep = pc.equal(latest.column("verdict"), "favourite")
    if reviewer is not None:
        keep = pc.and_(keep, pc.equal(latest.column("reviewer"), reviewer))
    return sorted(set(latest.filter(keep).column("design_id").to_pylist()))


def verdicts_of(out: str | Path, reviewer: str) -> dict[str, str]:
    """design_id -> this reviewer's latest verdict, `clear` left out."""
    latest = latest_verdicts(out)
    mine = latest.filter(
        pc.and_(pc.equal(latest.column("reviewer"), reviewer), pc.not_equal(latest.column("verdict"), "clear"))
    )
    return dict(zip(mine.column("design_id").to_pylist(), mine.column("verdict").to_pylist(), strict=True))


def compact_reviews(out: str | Path, min_files: int = COMPACT_FILES) -> int:
    """Rewrite the table's small files into one when it has at least `min_files`; returns the
    number of files removed (0: nothing done). Old files stay for Delta's retention."""
    path = reviews_path(out)
    table = _table(path)
    if table is None or len(data_files(table)) < min_files:
        return 0

    def attempt() -> int:
        metrics = DeltaTable(str(path)).optimize.compact(
            commit_properties=CommitProperties(custom_metadata={"designs.note": "review-compact"})
        )
        return int(metrics.get("numFilesRemoved", 0))

    return DesignCatalog(out).retrying(attempt)
