"""`designs curate OUT [--version N] [--where SQL] [--threshold T] [--score-weights ...]`: every ok
design grouped with its near-duplicates, ranked inside its group, and written as a new version
of OUT/curation (pipeline/catalog/curation.py).

1. The ok designs the --where expression selects (through the catalog's read-only connection,
   pipeline/catalog/sql.py: a filter of its own, never pasted into SQL), sorted by design id.
2. Their missing embeddings computed first (pipeline/execution/embed.py: colourways, designs
   made before embeddings); a design whose weights are not at hand is skipped and counted.
3. Groups: pipeline/execution/grouping.py on the embeddings of each network (vectors compare
   within one network); a colourway joins its parent's group; a design without an embedding
   is a group of its own (method `no-embedding`).
4. Scores (`score`, below), ranks and the review order; the table written sorted by it.

The score of a design is the weighted mean of the terms that apply to it (docs/ANALYSTS.md):
style = 1 - quality.style_ratio (clipped to [-1, 1]), content = quality.content_kept,
seam = min(seam_score, 1 / seam_score) (repeats), mask = 1 - mask_leakage (masked garments).
A colourway takes its parent's score (it has no quality of its own) and ranks after it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.catalog.curation import (
    DEFAULT_SCORE_WEIGHTS,
    DEFAULT_THRESHOLD,
    SCORE_TERMS,
    group_id,
    write_curation,
)
from pipeline.catalog.timeout import DEFAULT_TIMEOUT_S
from pipeline.execution.favourites import favourite_distances, favourite_ids_of, group_first
from pipeline.execution.grouping import group

NO_EMBEDDING = "no-embedding"
COLOURWAY = "colourway"  # a colourway without an embedding: in its parent's group by the link alone


@dataclass
class CurateReport:
    designs: int = 0
    groups: int = 0
    grouped: int = 0  # designs in a group of two or more
    embedded: int = 0  # embeddings computed by this run
    skipped: int = 0  # designs without an embedding (weights not at hand): a group of their own
    embed_line: str = ""  # the backfill's own line (pipeline/execution/embed.py)
    prefer_line: str = ""  # --prefer-favourites' (pipeline/execution/favourites.py)
    version: int | None = None
    run_id: str = ""
    methods: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        if not self.designs:
            return ["curate: no ok design selected; nothing written"]
        took = sum(self.seconds.values())
        lines = [
            f"curate: {self.designs:,} design(s) in {self.groups:,} group(s) ({self.grouped:,} in groups of two "
            f"or more); curation table version {self.version}; run {self.run_id}",
            self.embed_line or "embeddings: every design selected has one",
            f"grouped by: {', '.join(self.methods) or NO_EMBEDDING}"
            + (
                f"; {self.skipped:,} design(s) without an embedding (alone, or a colourway with its parent)"
                if self.skipped
                else ""
            ),
            f"time: {took:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()) + ")",
        ]
        if self.prefer_line:
            lines.append(self.prefer_line)
        return lines


def parse_score_weights(text: str | None) -> dict[str, float]:
    """`style=1,content=1,seam=1,mask=1` (any of them; the rest keep their defaults)."""
    weights = dict(DEFAULT_SCORE_WEIGHTS)
    if not text:
        return weights
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in SCORE_TERMS:
            raise ValueError(
                f"--score-weights {part!r} is invalid; accepted: TERM=WEIGHT, comma-separated, TERM one of "
                f"{', '.join(SCORE_TERMS)} (e.g. style=2,seam=0)"
            )
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"--score-weights {name}={value!r} is invalid; accepted: a finite number >= 0")
        weights[name] = weight
    if not any(weights.values()):
        raise ValueError("--score-weights are all 0; accepted: at least one term with a positive weight")
    return weights


def score_terms(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each term of the score, higher is better, NaN where it does not apply."""
    with np.errstate(divide="ignore", invalid="ignore"):
        seam = np.asarray(columns["seam_score"], dtype=np.float64)
        seam = np.where(seam > 0, np.minimum(seam, 1 / seam), np.nan)
        return {
            "style": np.clip(1 - np.asarray(columns["style_ratio"], dtype=np.float64), -1, 1),
            "content": np.clip(np.asarray(columns["content_kept"], dtype=np.float64), -1, 1),
            "seam": seam,
            "mask": 1 - np.clip(np.asarray(columns["mask_leakage"], dtype=np.float64), 0, 1),
        }


def scores(columns: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The weighted mean of the terms that apply to each design (NaN where none does)."""
    total = weight_sum = None
    for name, term in score_terms(columns).items():
        weight = float(weights.get(name, 0.0))
        present = np.isfinite(term)
        part = np.where(present, term * weight, 0.0)
        used = np.where(present, weight, 0.0)
        total = part if total is None else total + part
        weight_sum = used if weight_sum is None else weight_sum + used
    assert total is not None and weight_sum is not None
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight_sum > 0, total / weight_sum, np.nan)


@dataclass(frozen=True)
class Ranked:
    """Per design (the input's order): its group's label, rank, the group's representative
    (an index), the group's size, and the review order."""

    labels: np.ndarray
    rank: np.ndarray
    representative: np.ndarray
    size: np.ndarray
    review_order: np.ndarray


def rank(
    labels: np.ndarray, score: np.ndarray, after: np.ndarray | None = None, first: np.ndarray | None = None
) -> Ranked:
    """Ranks inside each group (best score first, NaN last; `after` rows (colourways) after the
    others at an equal score; then by index, the design id order); the representatives by
    score, then every group's other members in the representatives' order, by rank. `first`
    (--prefer-favourites, pipeline/execution/favourites.py): a value per design; groups go in
    the order of their members' least value before their score."""
    n = len(labels)
    index = np.arange(n)
    score_key = np.where(np.isfinite(score), -score, np.inf)
    late = np.zeros(n, dtype=np.int8) if after is None else after.astype(np.int8)
    order = np.lexsort((index, late, score_key, labels))  # by group, then best first
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group_of_sorted = np.repeat(np.arange(len(starts)), sizes)
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = index - starts[group_of_sorted] + 1
    reps = order[starts]  # each group's best, by group label
    representative = np.empty(n, dtype=np.int64)
    representative[order] = reps[group_of_sorted]
    size = np.empty(n, dtype=np.int64)
    size[order] = sizes[group_of_sorted]
    # Groups in the order of their representatives: best score first, ties by design id.
    group_order = np.lexsort((reps, score_key[reps]))
    if first is not None:
        group_order = np.lexsort((reps, score_key[reps], group_first(group_of_sorted, len(reps), first[order])))
    group_position = np.empty(len(reps), dtype=np.int64)
    group_position[group_order] = np.arange(len(reps))
    position = np.empty(n, dtype=np.int64)
    position[order] = group_position[group_of_sorted]
    is_rep = ranks == 1
    review = np.empty(n, dtype=np.int64)
    review[is_rep] = position[is_rep]  # representatives first: their group's position
    rest = np.flatnonzero(~is_rep)
    rest = rest[np.lexsort((ranks[rest], position[rest]))]
    review[rest] = len(reps) + np.arange(len(rest))
    return Ranked(labels, ranks, representative, size, review)


def column_expressions(columns: list[str]) -> list[str]:
    """The columns curation reads, null where a table made before them has none."""
    has_quality = "quality" in columns
    return [
        "design_id",
        "parent_design_id" if "parent_design_id" in columns else "cast(null as varchar) as parent_design_id",
        "quality.style_ratio as style_ratio" if has_quality else "cast(null as double) as style_ratio",
        "quality.content_kept as content_kept" if has_quality else "cast(null as double) as content_kept",
        "seam_score" if "seam_score" in columns else "cast(null as double) as seam_score",
        "mask_leakage" if "mask_leakage" in columns else "cast(null as double) as mask_leakage",
    ]


def select_designs(
    out: Path, version: int | None, where: str | None, timeout_s: float | None
) -> tuple[pa.Table, pa.Table]:
    """The ok designs `where` selects, sorted by design id, with the columns the score reads;
    and the same columns of the parents of selected colourways that `where` left out.

    --where is never pasted into SQL: it is a filter of its own on the ok rows, which DuckDB
    parses alone as one expression (as colourways' --where), on a connection that opens no file."""
    import duckdb

    from pipeline.catalog.history import QueryError
    from pipeline.catalog.sql import connect, one_line
    from pipeline.catalog.timeout import with_timeout

    con = connect(out, version)
    try:
        designs = con.table("designs")
        expressions = column_expressions(designs.columns)

        def select() -> pa.Table:
            chosen = designs.filter("status = 'ok'")
            if where:
                chosen = chosen.filter(where)
            return chosen.project(", ".join(expressions)).order("design_id").to_arrow_table()

        try:
            table = with_timeout(con, timeout_s, "the selection of designs (--where)", select)
        except duckdb.Error as err:  # a bad --where
            raise QueryError(f"--where {where!r} failed: {one_line(err)}") from None
        chosen = set(table.column("design_id").to_pylist())
        wanted = sorted({p for p in table.column("parent_design_id").to_pylist() if p is not None} - chosen)
        parents = table.schema.empty_table()
        if wanted:
            # Bound as a parameter: ids are data, never SQL.
            parents = (
                con.sql(
                    f"select {', '.join(expressions)} from designs where status = 'ok' and design_id in "
                    "(select unnest(?))",
                    params=[wanted],
                )
                .to_arrow_table()
                .cast(table.schema)
            )
    finally:
        con.close()
    return table, parents


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def _backfill(
    out: Path, ids: list[str], version: int | None, weights_files: Sequence[str | Path], report: CurateReport
) -> None:
    """Embeddings for the selected designs that have none (pipeline/execution/embed.py: torch,
    imported here only)."""
    from pipeline.execution.embed import embed_missing

    done = embed_missing(out, ids, weights=weights_files, version=version)
    report.embedded = done.embedded
    report.embed_line = done.describe()


def _embeddings(out: Path, ids: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray, np.ndarray]]]:
    """Which of `ids` (sorted) have an embedding, and per network (indices into ids, in id order;
    their vectors). The vectors land in one (n, d) array in id order, a file at a time: a
    catalog of one network is grouped from it without a copy."""
    from pipeline.catalog.embeddings import EMBEDDING_METHOD, iter_embeddings

    found = np.zeros(len(ids), dtype=bool)
    network_of = np.full(len(ids), -1, dtype=np.int32)
    names: dict[str, int] = {}
    vectors: np.ndarray | None = None
    for part_ids, part_vectors, networks in iter_embeddings(out, EMBEDDING_METHOD, ids.tolist()):
        if vectors is None:
            vectors = np.zeros((len(ids), part_vectors.shape[1]), dtype=part_vectors.dtype)
        at = np.searchsorted(ids, part_ids)
        vectors[at] = part_vectors
        codes = np.asarray([names.setdefault(str(name), len(names)) for name in networks], dtype=np.int32)
        network_of[at] = codes
        found[at] = True
    parts = []
    for name, code in sorted(names.items()):
        at = np.flatnonzero(network_of == code)
        assert vectors is not None
        parts.append((name, at, vectors if len(at) == len(ids) else vectors[at]))
    return found, parts


def curate(
    out: str | Path,
    version: int | None = None,
    where: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    weights: Mapping[str, float] | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    method: str = "auto",
    seed: int = 0,
    backfill: bool = True,
    weights_files: Sequence[str | Path] = (),
    prefer_favourites: bool = False,
) -> CurateReport:
    """Group, rank and write the curation of the catalog at OUT (the module's docstring).
    `prefer_favourites`: the groups nearest the favourites of OUT's reviews first
    (pipeline/execution/favourites.py)."""
    out = Path(out)
    if not 0 <= threshold < 1:
        raise ValueError(f"--threshold {threshold!r} is out of range; accepted: a cosine distance in [0, 1)")
    if prefer_favourites:
        favourites = favourite_ids_of(out)  # read before any work
    weights = dict(DEFAULT_SCORE_WEIGHTS if weights is None else weights)
    report = CurateReport()
    started = datetime.now(UTC)
    report.run_id = f"{started:%Y%m%dT%H%M%SZ}-curate"
    t0 = time.perf_counter()
    table, parents = select_designs(out, version, where, timeout_s)
    report.seconds["select"] = time.perf_counter() - t0
    n = table.num_rows
    report.designs = n
    if not n:
        return report
    ids = np.asarray(table.column("design_id").to_pylist(), dtype=str)
    t0 = time.perf_counter()
    found, parts = _embeddings(out, ids)
    report.seconds["read embeddings"] = time.perf_counter() - t0
    if backfill and not found.all():
        # Only the designs without one: a catalog that has them all costs no backfill (nor torch).
        t0 = time.perf_counter()
        _backfill(out, ids[~found].tolist(), version, weights_files, report)
        report.seconds["embed"] = time.perf_counter() - t0
        if report.embedded:
            t0 = time.perf_counter()
            found, parts = _embeddings(out, ids)
            report.seconds["read embeddings"] += time.perf_counter() - t0
    report.skipped = int(n - found.sum())

    # Colourways: joined to their parent where it is selected, scored as it is.
    parent_ids = table.column("parent_design_id").to_pylist()
    child = np.asarray([p is not None for p in parent_ids])
    parent_at = np.full(n, -1, dtype=np.int64)
    if child.any():
        wanted = np.asarray([p for p in parent_ids if p is not None], dtype=str)
        at = np.minimum(np.searchsorted(ids, wanted), n - 1)
        parent_at[child] = np.where(ids[at] == wanted, at, -1)

    t0 = time.perf_counter()
    labels = np.arange(n, dtype=np.int64)
    row_method = np.full(n, NO_EMBEDDING, dtype=object)
    for network, at, vectors in parts:
        part_labels, stats = group(vectors, threshold, method=method, seed=seed)
        labels[at] = at[part_labels]  # each part's smallest index is its smallest design id
        name = f"{stats.method}:{network}:cos<={threshold:g}"
        row_method[at] = name
        report.methods.append(f"{name} ({len(at):,})")
    joined = np.flatnonzero(parent_at >= 0)
    if joined.size:
        from pipeline.execution.grouping import components

        # Union of the embedding groups and the colourway links: label each group by its smallest index.
        a = np.concatenate([np.arange(n), joined])
        b = np.concatenate([labels, parent_at[joined]])
        labels = components(n, a, b)
        row_method[joined[~found[joined]]] = COLOURWAY
    report.seconds["group"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    columns = {name: _numbers(table, name) for name in ("style_ratio", "content_kept", "seam_score", "mask_leakage")}
    score = scores(columns, weights)
    if child.any():
        # A colourway's score is its parent's (selected or read beside the selection).
        own = parent_at >= 0
        score[own] = score[parent_at[own]]
        outside = child & ~own
        if outside.any() and parents.num_rows:
            parent_scores = scores({k: _numbers(parents, k) for k in columns}, weights)
            by_id = dict(zip(parents.column("design_id").to_pylist(), parent_scores.tolist()))
            for i in np.flatnonzero(outside):
                score[i] = by_id.get(parent_ids[i], np.nan)
    near = None
    if prefer_favourites:
        nearness = favourite_distances(out, n, parts, favourites)
        near = nearness.distance
        report.prefer_line = nearness.line()
    ranked = rank(labels, score, after=child, first=near)
    report.groups = int(np.count_nonzero(ranked.rank == 1))
    report.grouped = int(np.count_nonzero(ranked.size > 1))
    group_ids = {int(label): group_id(str(ids[label])) for label in np.unique(labels)}
    curated_at = datetime.now(UTC)
    rows = pa.table(
        {
            "design_id": pa.array(ids.tolist(), pa.string()),
            "group_id": pa.array([group_ids[int(label)] for label in labels], pa.string()),
            "group_size": pa.array(ranked.size.astype(np.int32)),
            "representative": pa.array(ids[ranked.representative].tolist(), pa.string()),
            "rank_in_group": pa.array(ranked.rank.astype(np.int32)),
            "score": pa.array(score, pa.float64(), mask=~np.isfinite(score)),
            "review_order": pa.array(ranked.review_order),
            "method": pa.array(row_method.tolist(), pa.string()),
            "curated_at": pa.array(np.full(n, curated_at.replace(tzinfo=None), dtype="datetime64[us]")).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "curation_run": pa.array(np.full(n, report.run_id, dtype=object), pa.string()),
        }
    )
    report.seconds["score"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report.version = write_curation(out, rows, report.run_id)
    report.seconds["write"] = time.perf_counter() - t0
    return report
