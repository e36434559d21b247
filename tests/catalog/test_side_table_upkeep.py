"""`designs maintain` keeps up the tables beside the design catalog (OUT/embeddings,
OUT/curation, OUT/reviews): the files no version inside the retention reads are vacuumed by
the catalog's own vacuum (log-named files only, no link followed), a checkpoint is written,
each table reported; a dry run deletes nothing; a link where a table is refuses it all."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable
from test_curation import rows as curation_rows
from test_maintenance import SHARDS, planned_run
from test_vacuum_safety import MONTH_AGO, catalog_with_small_files, left, move_behind_link, outside_folder

from flows.cli import EXIT_OK, EXIT_REFUSED, main
from pipeline.catalog import curation, embeddings, reviews
from pipeline.catalog.curation import curation_path, write_curation
from pipeline.catalog.datafiles import data_files
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import compact_embeddings, embeddings_path, read_embeddings, write_embeddings
from pipeline.catalog.maintenance import SIDE_TABLES, maintain
from pipeline.catalog.reviews import Verdict, append_verdict, compact_reviews, read_reviews, reviews_path

METHOD = embeddings.EMBEDDING_METHOD


def side_tables(out: Path) -> dict[str, Path]:
    """Each side table with files its latest version no longer reads: three verdicts compacted
    into one, two embedding commits compacted, two curate runs. Their paths by name."""
    for design in ("d1", "d2", "d3"):
        append_verdict(out, Verdict(uuid.uuid4().hex, design, "favourite", "ana", "s1"))
    assert compact_reviews(out, min_files=2) == 3
    rng = np.random.default_rng(0)
    for ids in (["a1", "a2"], ["b1", "b2"]):
        write_embeddings(out, ids, rng.standard_normal((2, 8)).astype(np.float16), METHOD, "vgg16")
    assert compact_embeddings(out, due_files=2) == 2
    write_curation(out, curation_rows(20), "run-1")
    write_curation(out, curation_rows(10, seed=1), "run-2")
    return {"embeddings": embeddings_path(out), "curation": curation_path(out), "reviews": reviews_path(out)}


def files_on_disk(path: Path) -> set[str]:
    return {p.name for p in path.rglob("*.parquet") if "_delta_log" not in p.parts}


def latest_rows(out: Path) -> tuple:
    ids, vectors = read_embeddings(out)
    cur = curation.curation_table(out).to_pyarrow_table().sort_by("review_order")
    return (
        sorted(read_reviews(out).column("design_id").to_pylist()),
        sorted(ids.tolist()),
        vectors.shape,
        cur.column("design_id").to_pylist(),
    )


@pytest.fixture
def out(tmp_path: Path) -> Path:
    catalog_with_small_files(tmp_path)
    return tmp_path / "out"


def test_the_side_tables_are_named_as_their_modules_name_them():
    assert SIDE_TABLES == (embeddings.EMBEDDINGS_DIR, curation.CURATION_DIR, reviews.REVIEWS_DIR)


def test_files_no_version_inside_the_retention_reads_are_vacuumed_and_a_checkpoint_written(out: Path):
    paths = side_tables(out)
    before = latest_rows(out)
    read_now = {name: {Path(f.path).name for f in data_files(DeltaTable(str(p)))} for name, p in paths.items()}
    old = {name: files_on_disk(p) - read_now[name] for name, p in paths.items()}
    assert all(old.values())

    report = maintain(out, retention_hours=0, enforce_retention=False)

    by_name = {side.name: side for side in report.side_tables}
    assert list(by_name) == list(SIDE_TABLES)
    for name, path in paths.items():
        side = by_name[name]
        assert side.vacuumed_files == len(old[name]) and side.vacuumed_bytes > 0
        assert files_on_disk(path) == read_now[name]
        assert (path / "_delta_log" / f"{side.checkpoint_version:020d}.checkpoint.parquet").is_file()
        assert side.version == DeltaTable(str(path)).version()
    assert latest_rows(out) == before
    text = "\n".join(report.lines())
    assert f"reviews table {paths['reviews']} maintained" in text
    assert f"vacuum: {len(old['curation'])} file(s) removed" in text


def test_files_a_version_inside_the_retention_reads_are_kept(out: Path):
    paths = side_tables(out)
    on_disk = {name: files_on_disk(p) for name, p in paths.items()}
    first = DeltaTable(str(paths["curation"]), version=0).to_pyarrow_table().num_rows

    report = maintain(out)  # a week: every replaced file was replaced moments ago

    assert [side.vacuumed_files for side in report.side_tables] == [0, 0, 0]
    assert {side.retention_hours for side in report.side_tables} == {168}
    assert {name: files_on_disk(p) for name, p in paths.items()} == on_disk
    assert DeltaTable(str(paths["curation"]), version=0).to_pyarrow_table().num_rows == first == 20
    assert DeltaTable(str(paths["reviews"]), version=1).to_pyarrow_table().num_rows == 1


def test_a_retention_under_a_side_tables_own_minimum_keeps_its_minimum(out: Path):
    """The catalog may allow a shorter retention than a side table does: that table keeps its week."""
    paths = side_tables(out)
    catalog = DesignCatalog(out)
    catalog.table().alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 0 hours"})
    on_disk = files_on_disk(paths["reviews"])

    report = maintain(out, retention_hours=0)

    assert report.retention_hours == 0
    assert {side.retention_hours for side in report.side_tables} == {168}
    assert files_on_disk(paths["reviews"]) == on_disk


def test_a_dry_run_deletes_nothing_and_writes_no_version(out: Path, capsys):
    paths = side_tables(out)
    on_disk = {name: files_on_disk(p) for name, p in paths.items()}
    versions = {name: DeltaTable(str(p)).version() for name, p in paths.items()}

    report = maintain(out, retention_hours=0, enforce_retention=False, dry_run=True)

    assert all(side.vacuumed_files > 0 and side.checkpoint_version is None for side in report.side_tables)
    assert {name: files_on_disk(p) for name, p in paths.items()} == on_disk
    assert {name: DeltaTable(str(p)).version() for name, p in paths.items()} == versions
    assert not [c for p in paths.values() for c in (p / "_delta_log").glob("*.checkpoint.parquet")]

    assert main(["maintain", str(out), "--dry-run"]) == EXIT_OK
    printed = capsys.readouterr().out
    for name, path in paths.items():
        assert f"{name} table {path} at version {versions[name]}" in printed
    assert printed.count("dry run, nothing changed") == 4
    assert {name: files_on_disk(p) for name, p in paths.items()} == on_disk


def test_a_link_left_in_a_side_table_is_not_followed(out: Path, tmp_path: Path):
    """A link in place of a file the log removed: the link stays, and what it names."""
    paths = side_tables(out)
    outside = outside_folder(tmp_path / "elsewhere")
    read_now = {Path(f.path).name for f in data_files(DeltaTable(str(paths["reviews"])))}
    swapped = paths["reviews"] / sorted(files_on_disk(paths["reviews"]) - read_now)[0]
    swapped.unlink()
    swapped.symlink_to(tmp_path / "elsewhere" / "notes.txt")
    os.utime(swapped, (MONTH_AGO, MONTH_AGO), follow_symlinks=False)

    report = maintain(out, retention_hours=0, enforce_retention=False)

    side = next(s for s in report.side_tables if s.name == "reviews")
    assert side.links_left == 1 and side.vacuumed_files == 2
    assert swapped.is_symlink() and left(tmp_path / "elsewhere") == outside
    assert "left alone: 1 symbolic link(s), not followed" in "\n".join(side.lines(False))


@pytest.mark.parametrize("table", SIDE_TABLES)
@pytest.mark.parametrize("where", ["the table's folder", "the log", "a data file"])
def test_a_link_where_a_side_table_is_refuses_maintenance_before_anything_changes(
    out: Path, tmp_path: Path, table: str, where: str, capsys
):
    paths = side_tables(out)
    catalog = DesignCatalog(out)
    version = catalog.version()
    (tmp_path / "elsewhere").mkdir()
    path = paths[table]
    if where == "the table's folder":
        linked = path
    elif where == "the log":
        linked = path / "_delta_log"
    else:
        linked = path / data_files(DeltaTable(str(path)))[0].path
    move_behind_link(linked, tmp_path / "elsewhere" / linked.name)
    for old in (tmp_path / "elsewhere").rglob("*"):
        if old.is_file():
            os.utime(old, (MONTH_AGO, MONTH_AGO))
    before = left(tmp_path / "elsewhere")

    assert main(["maintain", str(out)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "is a symbolic link" in err and str(linked) in err
    assert main(["maintain", str(out), "--dry-run"]) == EXIT_REFUSED
    with pytest.raises(ValueError, match="symbolic link"):
        maintain(out, retention_hours=0, enforce_retention=False)
    assert left(tmp_path / "elsewhere") == before
    # Nothing done to the catalog either: no compaction, no checkpoint.
    assert catalog.version() == version and len(catalog.ok_design_ids()) == 50
    assert not list(catalog.log_dir.glob("*.checkpoint.parquet"))


def test_the_end_of_run_maintenance_keeps_up_the_side_tables(tmp_path: Path):
    run = planned_run(tmp_path, maintain_after_files=SHARDS - 1)
    append_verdict(run.out, Verdict(uuid.uuid4().hex, "d1", "favourite", "ana", "s1"))

    report = run.maintain_if_due()

    assert report is not None and [side.name for side in report.side_tables] == ["reviews"]
    assert report.side_tables[0].checkpoint_version == DeltaTable(str(reviews_path(run.out))).version()
