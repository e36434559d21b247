"""`designs curate --prefer-favourites` (pipeline/execution/favourites.py, pipeline/execution/curate.py):
the groups nearest the favourites of OUT/reviews come first in review_order, by the cosine distance
of their nearest member to the nearest favourite, then by score; groups with no embedding follow,
by score as without the flag; before the first favourite the order is by score, and a line says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from curation_catalog import design_id
from curation_catalog import row as catalog_row
from deltalake import DeltaTable

from flows.cli import EXIT_OK, main
from pipeline.catalog.curation import curation_path
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import EMBEDDING_METHOD, write_embeddings
from pipeline.catalog.reviews import Verdict, append_verdict
from pipeline.execution.curate import curate

DIM = 16


def row(i: int, style: str, ratio: float) -> dict:
    return catalog_row(i, style, ratio, 0.8)


@pytest.fixture
def catalog(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Three styles of three near-duplicate designs each, their best scores 0.1, 0.15, 0.2 (so
    style0's group is reviewed first, style2's last); style1 looks like style2, style0 does not.
    Design 9 (style3, the best score of all) has no embedding."""
    out = tmp_path / "out"
    rng = np.random.default_rng(1)
    c2 = rng.standard_normal(DIM)
    c1 = c2 + 0.6 * rng.standard_normal(DIM)
    c0 = rng.standard_normal(DIM)
    centres = [c0, c1, c2]
    rows, vectors = [], []
    for i in range(9):
        style = i // 3
        ratio = 0.1 + 0.05 * style + 0.2 * (i % 3)  # the first of each style is its best, then in order
        rows.append(row(i, f"style{style}", ratio))
        vectors.append(centres[style] + 0.01 * rng.standard_normal(DIM))
    rows.append(row(9, "style3", 0.05))
    DesignCatalog(out).commit(rows, "r1")
    vectors = np.asarray(vectors) / np.linalg.norm(vectors, axis=1, keepdims=True)
    write_embeddings(out, [design_id(i) for i in range(9)], vectors.astype(np.float16), EMBEDDING_METHOD, "vgg16")
    return out, vectors


def verdict(out: Path, i: int, kind: str) -> None:
    append_verdict(out, Verdict(f"{i:031x}{len(kind):x}", design_id(i), kind, "ana", "s1"))


def review_order(out: Path) -> list[str]:
    table = DeltaTable(str(curation_path(out))).to_pyarrow_table().sort_by("review_order")
    return table.column("design_id").to_pylist()


def test_the_groups_nearest_a_favourite_are_reviewed_first(catalog):
    out, vectors = catalog
    plain = curate(out, threshold=0.02, backfill=False)
    assert plain.groups == 4
    ids = [design_id(i) for i in range(10)]
    # By score: style3's lone design, then style0, style1, style2's representatives, then the members.
    assert review_order(out)[:4] == [ids[9], ids[0], ids[3], ids[6]]

    verdict(out, 7, "favourite")  # a member of style2's group, not its representative
    verdict(out, 0, "reject")
    report = curate(out, threshold=0.02, backfill=False, prefer_favourites=True)
    # The favourite's group, then style1's (it looks like style2), then style0's; style3's design has
    # no embedding to compare: after them, as it would be by score.
    assert review_order(out) == [ids[6], ids[3], ids[0], ids[9], ids[7], ids[8], ids[4], ids[5], ids[1], ids[2]]
    cos = vectors @ vectors[7].astype(np.float16).astype(np.float32)
    assert 1 - cos[3:6].max() < 1 - cos[0:3].max()  # the order above is the distances'
    assert "prefer favourites: 1 favourite(s), 1 with an embedding; 9 design(s)" in "\n".join(report.lines())
    # The groups and ranks are curation's own: only the order of the groups changed.
    assert DeltaTable(str(curation_path(out))).to_pyarrow_table().column("group_size").to_pylist().count(3) == 9

    again = curate(out, threshold=0.02, backfill=False, prefer_favourites=True)
    assert again.groups == 4 and review_order(out)[:4] == [ids[6], ids[3], ids[0], ids[9]]  # the same order


def test_without_favourites_the_order_is_by_score_and_a_line_says_so(catalog, capsys):
    """The morning's workflow runs --prefer-favourites from the first day, before any favourite."""
    out, _ = catalog
    curate(out, threshold=0.02, backfill=False)
    plain = review_order(out)
    report = curate(out, threshold=0.02, backfill=False, prefer_favourites=True)  # no reviews table yet
    assert review_order(out) == plain
    assert "prefer favourites: no favourites in the reviews yet; the review order is by score" in report.lines()
    verdict(out, 0, "reject")
    assert main(["curate", str(out), "--prefer-favourites", "--threshold", "0.02"]) == EXIT_OK
    assert "no favourites in the reviews yet" in capsys.readouterr().out
    assert review_order(out) == plain
