"""`designs curate` (pipeline/execution/curate.py): groups from the embeddings, the best score
represents its group, colourways join their parent, --where only narrows, the curation table
is a new version readable with `designs query`, and a rerun gives the same groups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from curation_catalog import build_curation_catalog, design_id, row
from deltalake import DeltaTable

from flows.cli import main
from pipeline.catalog.curation import curation_path, group_id
from pipeline.execution.curate import curate, parse_score_weights, rank, scores


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return build_curation_catalog(tmp_path / "out")


def curation_rows(out: Path) -> dict[str, dict]:
    table = DeltaTable(str(curation_path(out))).to_pyarrow_table()
    return {r["design_id"]: r for r in table.to_pylist()}


def test_groups_are_the_styles_and_the_best_score_represents_each(catalog: Path):
    report = curate(catalog, threshold=0.02)
    assert report.designs == 13 and report.groups == 3 and report.skipped == 1  # the colourway
    rows = curation_rows(catalog)
    assert design_id(50) not in rows  # failed designs are not curated
    for style in range(3):
        members = [design_id(4 * style + k) for k in range(4)]
        ids = {rows[m]["group_id"] for m in members}
        assert len(ids) == 1
        best = design_id(4 * style + 2)
        assert all(rows[m]["representative"] == best for m in members)
        assert rows[best]["rank_in_group"] == 1
        ranked = sorted(members, key=lambda m: rows[m]["rank_in_group"])
        assert [rows[m]["score"] for m in ranked] == sorted((rows[m]["score"] for m in members), reverse=True)
        # The group's id comes from its smallest member.
        assert ids == {group_id(min(members + ([design_id(60)] if style == 0 else [])))}
    # Review order: the three representatives first, best score first, then the rest.
    order = sorted(rows.values(), key=lambda r: r["review_order"])
    assert [r["rank_in_group"] for r in order[:3]] == [1, 1, 1]
    assert all(r["rank_in_group"] > 1 for r in order[3:])
    assert [r["review_order"] for r in order] == list(range(13))


def test_a_colourway_joins_its_parents_group_and_ranks_after_it(catalog: Path):
    curate(catalog, threshold=0.02)
    rows = curation_rows(catalog)
    parent, child = rows[design_id(1)], rows[design_id(60)]
    assert child["group_id"] == parent["group_id"] and child["group_size"] == 5
    assert child["score"] == parent["score"]  # the parent's quality: the colourway has none
    assert child["rank_in_group"] == parent["rank_in_group"] + 1
    assert child["method"] == "colourway"


def test_the_score_weights_choose_the_representative():
    """The same two designs: the first reached its style best, the second kept its content best."""
    rows = [row(i, "s", 0.1 if i == 0 else 0.5, 0.9 if i == 1 else 0.5) for i in range(2)]
    columns = {
        "style_ratio": np.array([r["quality"]["style_ratio"] for r in rows]),
        "content_kept": np.array([r["quality"]["content_kept"] for r in rows]),
        "seam_score": np.array([np.nan, 1.2]),
        "mask_leakage": np.array([np.nan, np.nan]),
    }
    both = scores(columns, parse_score_weights(None))
    # (0.9 + 0.5) / 2 against (0.5 + 0.9 + 1 / 1.2) / 3: the seam counts only where there is one.
    assert both == pytest.approx([0.7, (0.5 + 0.9 + 1 / 1.2) / 3])
    style_only = scores(columns, parse_score_weights("content=0,seam=0"))
    assert style_only == pytest.approx([0.9, 0.5])
    content_only = scores(columns, parse_score_weights("style=0,seam=0"))
    assert content_only == pytest.approx([0.5, 0.9])
    ranked = rank(np.array([0, 0]), content_only)
    assert ranked.rank.tolist() == [2, 1] and ranked.representative.tolist() == [1, 1]
    # No term applies: no score, and last in its group.
    none = scores({k: np.array([np.nan]) for k in columns}, parse_score_weights(None))
    assert np.isnan(none).all()
    assert rank(np.array([0, 0]), np.array([np.nan, 0.1])).rank.tolist() == [2, 1]


def test_ties_fall_to_the_smaller_design_id():
    ranked = rank(np.array([0, 0, 0, 3]), np.array([0.5, 0.5, 0.5, 0.9]))
    assert ranked.rank.tolist() == [1, 2, 3, 1]
    assert ranked.review_order.tolist() == [1, 2, 3, 0]  # representatives by score, then the rest


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("style", "'style' is invalid"),
        ("colour=1", "'colour=1' is invalid"),
        ("style=-1", "style='-1' is invalid"),
        ("style=nan", "style='nan' is invalid"),
        ("style=0,content=0,seam=0,mask=0", "all 0"),
    ],
)
def test_bad_score_weights_name_the_value(text, says):
    with pytest.raises(ValueError, match="accepted") as err:
        parse_score_weights(text)
    assert says in str(err.value)


def test_the_curation_table_is_a_new_version_readable_with_designs_query(catalog: Path, capsys):
    # Before the first curation the table is there, empty.
    assert main(["query", str(catalog), "select count(*) as n from curation", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 0}]
    assert main(["curate", str(catalog), "--threshold", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "13 design(s) in 3 group(s)" in out and "time:" in out
    assert "1 design(s) without an embedding (alone, or a colourway with its parent)" in out
    assert "1 skipped: their weights are not at hand" in out  # the backfill's own line
    sql = "select group_size, count(*) as n from curation where rank_in_group = 1 group by all order by 1"
    assert main(["query", str(catalog), sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"group_size": 4, "n": 2}, {"group_size": 5, "n": 1}]
    # A join with designs: the representative of each style.
    sql = (
        "select d.style_id, c.design_id from curation c join designs d using (design_id) "
        "where c.rank_in_group = 1 order by d.style_id"
    )
    assert main(["query", str(catalog), sql, "--format", "json"]) == 0
    best = [r["design_id"] for r in json.loads(capsys.readouterr().out)]
    assert best == [design_id(2), design_id(6), design_id(10)]
    assert main(["curate", str(catalog)]) == 0
    assert DeltaTable(str(curation_path(catalog))).version() == 1


def test_a_rerun_over_an_unchanged_catalog_gives_the_same_groups(catalog: Path):
    curate(catalog, threshold=0.02)
    first = curation_rows(catalog)
    curate(catalog, threshold=0.02, method="kmeans")  # the clustered search finds the same groups here
    second = curation_rows(catalog)
    keys = ("group_id", "group_size", "representative", "rank_in_group", "score", "review_order")
    assert {k: {d: r[k] for d, r in first.items()} for k in keys} == {
        k: {d: r[k] for d, r in second.items()} for k in keys
    }


def test_where_narrows_and_is_bound_as_one_expression(catalog: Path, tmp_path: Path, capsys):
    assert main(["curate", str(catalog), "--where", "style_id = 'style1'"]) == 0
    capsys.readouterr()
    rows = curation_rows(catalog)
    assert set(rows) == {design_id(i) for i in range(4, 8)}
    # The colourway's parent selected alone: the colourway is not, and the reverse reads the parent's score.
    report = curate(catalog, where=f"design_id = '{design_id(60)}'")
    assert report.designs == 1
    assert curation_rows(catalog)[design_id(60)]["score"] is not None
    version = DeltaTable(str(curation_path(catalog))).version()
    for where in ["1=1) or (1=1", "true; select 1", "true from designs where true", "no_such_column = 1"]:
        assert main(["curate", str(catalog), "--where", where]) == 2, where
        err = capsys.readouterr().err
        assert err.startswith("designs curate: refused: --where") and err.count("\n") == 1, err
    assert DeltaTable(str(curation_path(catalog))).version() == version


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--threshold", "1.5"], "--threshold 1.5 is out of range"),
        (["--threshold", "nan"], "--threshold nan is out of range"),
        (["--score-weights", "shine=1"], "'shine=1' is invalid"),
        (["--version", "9"], "version 9"),
    ],
)
def test_the_cli_refuses_in_one_line(catalog: Path, args, says, capsys):
    assert main(["curate", str(catalog), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("designs curate: refused:") and says in err and err.count("\n") == 1, err


def test_a_missing_catalog_is_refused(tmp_path: Path, capsys):
    assert main(["curate", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("designs curate: refused:") and err.count("\n") == 1


def test_the_backfill_is_handed_only_the_designs_without_an_embedding(catalog: Path, monkeypatch):
    from pipeline.execution import embed

    handed = []

    def embed_missing(out, design_ids, **kwargs):
        handed.append(sorted(design_ids))
        return embed.EmbedReport(skipped_no_weights=len(design_ids))

    monkeypatch.setattr(embed, "embed_missing", embed_missing)
    curate(catalog, threshold=0.02)
    assert handed == [[design_id(60)]]  # the colourway alone
    # Every selected design has one: no backfill at all.
    report = curate(catalog, where="parent_design_id is null")
    assert len(handed) == 1 and report.lines()[1] == "embeddings: every design selected has one"
