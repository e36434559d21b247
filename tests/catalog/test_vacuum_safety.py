"""The vacuum deletes only files the table's log once named (or a killed compaction recorded),
inside the table's own folder, never through a link; links where the table's folders or
data files are make maintenance refuse, in one line, before it changes anything."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest
from test_commit_pruning import hex_ids
from test_compaction import commit_shuffled, ok_files
from test_maintenance import SHARDS, planned_run

from flows.cli import EXIT_OK, EXIT_REFUSED, main
from pipeline.catalog.compaction import INTENT_DIR, data_files
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.maintenance import maintain

MONTH_AGO = time.time() - 30 * 86400  # older than any retention these tests use


def outside_folder(base: Path) -> dict[str, bytes]:
    """A folder outside OUT holding old parquet files (a shard's name among them) and other
    files, one level down too: what the vacuum must never delete. Its files and contents."""
    base.mkdir(parents=True)
    files = {
        "old.parquet": b"PAR1 not a table's",
        f"part-00000-{uuid.uuid4()}-c000.zstd.parquet": b"PAR1 named as a shard's file",
        "notes.txt": b"precious",
        "deeper/old.parquet": b"PAR1 deeper",
    }
    for name, content in files.items():
        path = base / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        os.utime(path, (MONTH_AGO, MONTH_AGO))
    return files


def left(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def catalog_with_small_files(tmp_path: Path, shards: int = 5) -> DesignCatalog:
    catalog = DesignCatalog(tmp_path / "out")
    commit_shuffled(catalog, hex_ids(10 * shards), 10)
    return catalog


def test_designs_maintain_deletes_nothing_behind_a_folder_link(tmp_path: Path, capsys):
    catalog = catalog_with_small_files(tmp_path)
    outside = outside_folder(tmp_path / "elsewhere")
    link = catalog.table_path / "status=ok" / "linked"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)

    assert main(["maintain", str(tmp_path / "out")]) == EXIT_OK
    assert left(tmp_path / "elsewhere") == outside and link.is_symlink()
    vacuum_line = capsys.readouterr().out.splitlines()[4]
    assert "0 file(s) removed" in vacuum_line and "left alone: 1 symbolic link(s), not followed" in vacuum_line

    # Without retention the files the compaction replaced go; still nothing behind the link.
    replaced = {Path(f.path).name for f in data_files(catalog.table(5))}
    report = maintain(tmp_path / "out", retention_hours=0, enforce_retention=False)
    assert report.vacuumed_files == 5 and report.links_left == 1
    assert not replaced & {p.name for p in (catalog.table_path / "status=ok").iterdir()}
    assert left(tmp_path / "elsewhere") == outside and link.is_symlink()
    assert len(catalog.ok_design_ids()) == 50


def test_file_links_are_left_alone_with_their_targets(tmp_path: Path):
    """A link under a name no log entry knows, and one in place of a file the log removed."""
    catalog = catalog_with_small_files(tmp_path)
    outside = outside_folder(tmp_path / "elsewhere")
    stray = catalog.table_path / "status=ok" / f"part-00000-{uuid.uuid4()}-c000.zstd.parquet"
    stray.symlink_to(tmp_path / "elsewhere" / "old.parquet")
    os.utime(stray, (MONTH_AGO, MONTH_AGO), follow_symlinks=False)
    maintain(tmp_path / "out")  # compaction; the week's retention keeps the replaced files
    replaced = sorted(Path(f.path).name for f in data_files(catalog.table(5)))
    swapped = catalog.table_path / "status=ok" / replaced[0]
    swapped.unlink()
    swapped.symlink_to(tmp_path / "elsewhere" / "notes.txt")

    report = maintain(tmp_path / "out", retention_hours=0, enforce_retention=False)

    assert report.vacuumed_files == 4 and report.links_left == 2
    assert stray.is_symlink() and swapped.is_symlink()
    assert left(tmp_path / "elsewhere") == outside
    assert "left alone: 2 symbolic link(s), not followed" in report.lines()[4]


def test_the_end_of_run_maintenance_deletes_nothing_behind_links(tmp_path: Path):
    run = planned_run(tmp_path, maintain_after_files=SHARDS - 1)
    outside = outside_folder(tmp_path / "elsewhere")
    partition = next(run.designs.table_path.glob("status=*"))
    (partition / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (partition / "file-link.parquet").symlink_to(tmp_path / "elsewhere" / "old.parquet")

    report = run.maintain_if_due()

    assert left(tmp_path / "elsewhere") == outside
    assert (partition / "linked").is_symlink() and (partition / "file-link.parquet").is_symlink()
    assert report is not None and report.compacted_files == SHARDS and report.links_left == 2


def move_behind_link(path: Path, elsewhere: Path) -> None:
    shutil.move(path, elsewhere)
    path.symlink_to(elsewhere, target_is_directory=elsewhere.is_dir())


@pytest.mark.parametrize("where", ["the table's folder", "the log", "a partition folder", "a data file"])
def test_a_link_where_the_table_is_is_refused_before_anything_changes(tmp_path: Path, where: str, capsys):
    catalog = catalog_with_small_files(tmp_path)
    version = catalog.version()
    outside_folder(tmp_path / "elsewhere")
    if where == "the table's folder":
        linked = catalog.table_path
    elif where == "the log":
        linked = catalog.log_dir
    elif where == "a partition folder":
        linked = catalog.table_path / "status=ok"
    else:
        linked = catalog.table_path / ok_files(catalog)[0].path
    move_behind_link(linked, tmp_path / "elsewhere" / linked.name)
    for path in (tmp_path / "elsewhere").rglob("*"):  # all of it old: a vacuum would take any of it
        if path.is_file():
            os.utime(path, (MONTH_AGO, MONTH_AGO))
    before = left(tmp_path / "elsewhere")

    assert main(["maintain", str(tmp_path / "out")]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "is a symbolic link" in err and str(linked) in err
    assert "follows no link" in err
    assert main(["maintain", str(tmp_path / "out"), "--dry-run"]) == EXIT_REFUSED
    assert left(tmp_path / "elsewhere") == before
    assert catalog.version() == version and len(catalog.ok_design_ids()) == 50
    assert not (catalog.table_path / INTENT_DIR).exists() or not any((catalog.table_path / INTENT_DIR).iterdir())


def test_files_no_log_entry_names_are_left_alone_and_counted(tmp_path: Path):
    catalog = catalog_with_small_files(tmp_path)
    strays = [catalog.table_path / "status=ok" / "by-hand.parquet", catalog.table_path / "status=ok" / "notes.txt"]
    for path in strays:
        path.write_bytes(b"not the table's")
        os.utime(path, (MONTH_AGO, MONTH_AGO))

    dry = maintain(tmp_path / "out", retention_hours=0, enforce_retention=False, dry_run=True)
    report = maintain(tmp_path / "out", retention_hours=0, enforce_retention=False)

    assert all(path.read_bytes() == b"not the table's" for path in strays)
    assert dry.unnamed_left == 2 and dry.vacuumed_files == 0
    assert report.unnamed_left == 2 and report.vacuumed_files == 5
    assert "left alone: 2 file(s) no log entry names" in report.lines()[4]


def test_a_compaction_record_deletes_only_unnamed_files_inside_the_table(tmp_path: Path):
    """A killed compaction's record names what it wrote; one naming a file the table reads,
    or a path through a link, deletes neither."""
    catalog = catalog_with_small_files(tmp_path)
    outside = outside_folder(tmp_path / "elsewhere")
    folder = catalog.table_path / "status=ok"
    (folder / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    orphan = f"status=ok/part-00000-{uuid.uuid4()}-c000.zstd.parquet"
    (catalog.table_path / orphan).write_bytes(b"a killed compaction's file")
    behind_link = next(name for name in outside if name.startswith("part-"))
    active = ok_files(catalog)[0].path
    record = catalog.table_path / INTENT_DIR / f"{uuid.uuid4()}.intent"
    record.parent.mkdir()
    record.write_text(f"{orphan}\nstatus=ok/linked/{behind_link}\n{active}\n../../elsewhere/notes.txt\n")

    report = maintain(tmp_path / "out", retention_hours=0, enforce_retention=False, small_file_bytes=1)

    assert report.compacted_files == 0 and report.vacuumed_files == 1
    assert not (catalog.table_path / orphan).exists() and (catalog.table_path / active).is_file()
    assert left(tmp_path / "elsewhere") == outside
    assert not record.exists(), "the record's work is done"
    assert len(catalog.ok_design_ids()) == 50


def test_the_vacuum_reads_a_checkpoint_where_the_log_entries_before_it_are_gone(tmp_path: Path):
    """The log's cleanup removes entries before a checkpoint: the files the checkpoint's
    tombstones name are still vacuumed."""
    catalog = catalog_with_small_files(tmp_path)
    report = maintain(tmp_path / "out")  # compaction at version 6, the checkpoint of version 6
    assert report.checkpoint_version == 6 and report.vacuumed_files == 0
    for version in range(7):  # the checkpoint's version too: its tombstones alone name the files
        (catalog.log_dir / f"{version:020d}.json").unlink()

    report = maintain(tmp_path / "out", retention_hours=0, enforce_retention=False)

    assert report.vacuumed_files == 5
    assert {p.name for p in (catalog.table_path / "status=ok").iterdir()} == {
        Path(f.path).name for f in ok_files(catalog)
    }
    assert len(catalog.ok_design_ids()) == 50


def test_the_vacuum_keeps_files_a_version_within_the_retention_reads(tmp_path: Path):
    """A file removed inside the retention stays, whatever its modification time."""
    catalog = catalog_with_small_files(tmp_path)
    for path in (catalog.table_path / "status=ok").iterdir():
        os.utime(path, (MONTH_AGO, MONTH_AGO))
    maintain(tmp_path / "out")
    report = maintain(tmp_path / "out", retention_hours=1, enforce_retention=False)
    assert report.vacuumed_files == 0
    assert len(data_files(catalog.table(5))) == 5 and len(catalog.table(5).to_pyarrow_dataset().to_table()) == 50
    entries = [
        json.loads(line) for line in (catalog.log_dir / f"{catalog.version():020d}.json").read_text().splitlines()
    ]
    assert not any(e.get("commitInfo", {}).get("operation", "").startswith("VACUUM") for e in entries)
