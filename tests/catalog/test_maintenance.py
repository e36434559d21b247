"""Design catalog upkeep: compaction keeps every row, the vacuum keeps what versions inside
the retention read, a checkpoint is written; `designs maintain` and the end-of-run trigger."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import SAMPLE

from flows.cli import EXIT_ENVIRONMENT, EXIT_OK, EXIT_REFUSED, main
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.history import commit_history
from pipeline.catalog.inputs import load_input_catalog
from pipeline.catalog.maintenance import maintain, small_files
from pipeline.config import Config
from pipeline.engine.weights import resolve_weights
from pipeline.execution.rows import RowContext
from pipeline.execution.run import Run

SHARDS = 5  # one-row commits: one small data file each


def rows_of(catalog: DesignCatalog, version: int | None = None) -> dict[str, str]:
    table = catalog.table(version).to_pyarrow_dataset().to_table(columns=["design_id", "status"])
    return dict(zip(table.column("design_id").to_pylist(), table.column("status").to_pylist(), strict=True))


def planned_run(tmp_path: Path, **config_changes) -> Run:
    """A planned run of a copy of the sample catalog with SHARDS one-row commits of failed rows."""
    sample = tmp_path / "sample"
    shutil.copytree(SAMPLE, sample)
    config = Config(weights="random", size=32, steps=1, devices="cpu", **config_changes)
    weights = resolve_weights("random", 0)
    run = Run(sample / "catalog.parquet", tmp_path / "out", config, run_id="r")
    planned = run.plan(load_input_catalog(sample / "catalog.parquet"), weights, ["cpu"])
    context = RowContext(config, weights, run.run_id)
    for index, job in enumerate(planned.todo[:SHARDS]):
        run.commit([context.failed(job, "x")], f"shard-{index}")
    return run


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return planned_run(tmp_path)


def test_compaction_keeps_every_row_and_writes_a_checkpoint(run: Run):
    catalog = run.designs
    before = rows_of(catalog)
    assert len(before) == SHARDS and small_files(run.out, 1 << 30) == SHARDS

    report = maintain(run.out)

    assert (report.files_before, report.files_after) == (SHARDS, 1)
    assert report.compacted_files == SHARDS and report.written_files == 1
    assert report.bytes_before > 0 and report.bytes_after > 0
    assert rows_of(catalog) == before
    assert (catalog.log_dir / f"{report.checkpoint_version:020d}.checkpoint.parquet").is_file()
    assert report.checkpoint_version == catalog.version() == report.version
    # The default retention keeps the files that the old versions read.
    assert report.vacuumed_files == 0 and rows_of(catalog, SHARDS) == before
    notes = {c["operation"]: c["note"] for c in commit_history(catalog)}
    assert notes["OPTIMIZE"] == "maintain"
    lines = report.lines()
    assert f"data files before compaction: {SHARDS}" in lines[1] and "after compaction: 1 " in lines[2]
    assert f"checkpoint: version {report.checkpoint_version}" in lines[3]


def test_a_vacuum_without_retention_removes_the_old_files_and_old_versions_stop_reading(run: Run, capsys):
    catalog = run.designs
    before = rows_of(catalog)
    old_files = sorted(catalog.table_path.glob("status=*/*.parquet"))

    report = maintain(run.out, retention_hours=0, enforce_retention=False)

    assert report.vacuumed_files == SHARDS and report.vacuumed_bytes == report.bytes_before
    assert not any(path.exists() for path in old_files)
    assert len(list(catalog.table_path.glob("status=*/*.parquet"))) == 1
    assert rows_of(catalog) == before
    assert {c["note"] for c in commit_history(catalog) if c["operation"].startswith("VACUUM")} == {"maintain"}
    with pytest.raises(FileNotFoundError):
        rows_of(catalog, SHARDS)  # the last version before compaction: its files are gone

    # The query door says why, in one line, and refuses (exit 2).
    assert main(["query", "--out", run.out, "--version", str(SHARDS), "select count(*) from designs"]) == EXIT_REFUSED
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"version {SHARDS} of" in err and "can no longer be read" in err
    assert "removed by a vacuum" in err


def test_a_dry_run_changes_nothing(run: Run):
    catalog = run.designs
    version = catalog.version()
    report = maintain(run.out, retention_hours=0, dry_run=True, enforce_retention=False)
    assert catalog.version() == version and report.checkpoint_version is None
    assert report.vacuumed_files == 0  # nothing is unreferenced before a compaction
    assert len(list(catalog.table_path.glob("status=*/*.parquet"))) == SHARDS
    assert "dry run, nothing changed" in report.lines()[0]


@pytest.mark.parametrize(
    ("hours", "named"), [(-1, "retention -1 hours is invalid"), (24, "under the table's minimum of 168 hours")]
)
def test_a_retention_that_would_break_time_travel_is_refused(run: Run, hours: int, named: str):
    version = run.designs.version()
    with pytest.raises(ValueError, match=named):
        maintain(run.out, retention_hours=hours)
    assert run.designs.version() == version


def test_designs_maintain_prints_the_report(run: Run, capsys):
    assert main(["maintain", run.out]) == EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"design catalog {run.designs.table_path} maintained")
    assert f"data files before compaction: {SHARDS}" in out[1] and "checkpoint: version" in out[3]


def test_designs_maintain_refuses_a_missing_catalog_or_a_short_retention(tmp_path: Path, run: Run, capsys):
    assert main(["maintain", str(tmp_path / "nothing")]) == EXIT_REFUSED
    assert "no design catalog at" in capsys.readouterr().err
    assert main(["maintain", run.out, "--retention-hours", "1"]) == EXIT_REFUSED
    assert "under the table's minimum" in capsys.readouterr().err
    assert main(["maintain", run.out, "--small-file-bytes", "0"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "small file size 0 bytes is invalid" in err and len(err.splitlines()) == 1


def test_designs_maintain_says_what_it_would_do_and_resorts_when_asked(run: Run, capsys):
    assert main(["maintain", run.out, "--dry-run"]) == EXIT_OK
    assert "would do a sorted compaction of small files" in capsys.readouterr().out
    # Files under 1 byte: none is small, so only --resort rewrites them.
    assert main(["maintain", run.out, "--small-file-bytes", "1"]) == EXIT_OK
    assert "nothing to compact" in capsys.readouterr().out
    assert main(["maintain", run.out, "--resort"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{SHARDS} rewritten into 1 (z-order of the whole table)" in out and "1 sorted layer(s)" in out


def test_designs_maintain_reports_a_damaged_log_as_exit_3(run: Run, capsys):
    log = sorted(run.designs.log_dir.glob("*.json"))[-1]
    log.write_text(log.read_text()[:40])  # a truncated entry
    assert main(["maintain", run.out]) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert err.startswith("designs maintain: cannot maintain the design catalog") and len(err.splitlines()) == 1


@pytest.mark.parametrize(("after_files", "due"), [(SHARDS - 1, True), (SHARDS, False), (0, False)])
def test_a_run_maintains_the_catalog_only_past_its_count_of_small_files(tmp_path: Path, after_files: int, due: bool):
    run = planned_run(tmp_path, maintain_after_files=after_files)
    report = run.maintain_if_due()
    assert (report is not None) is due
    # The compacted file beside the old ones, which the week's retention keeps.
    assert len(list(run.designs.table_path.glob("status=*/*.parquet"))) == SHARDS + due
    assert small_files(run.out, run.config.maintain_small_file_bytes) == (1 if due else SHARDS)


def test_only_files_under_the_size_count_as_small(run: Run):
    sizes = sorted(p.stat().st_size for p in run.designs.table_path.glob("status=*/*.parquet"))
    assert small_files(run.out, sizes[0]) == 0
    assert small_files(run.out, sizes[-1] + 1) == SHARDS
    assert small_files(Path(run.out).parent / "nothing", 1 << 30) == 0


def test_the_maintenance_settings_are_checked():
    with pytest.raises(ValueError, match=r"maintain_retention_hours=24.*accepted: an integer >= 168"):
        Config(maintain_retention_hours=24)
    with pytest.raises(ValueError, match=r"maintain_after_files=-1.*accepted: 0 \(never\)"):
        Config(maintain_after_files=-1)
    with pytest.raises(ValueError, match=r"maintain_small_file_bytes=0.*accepted: a positive integer"):
        Config(maintain_small_file_bytes=0)
