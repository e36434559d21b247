"""Sorted compaction of the small files: only they are rewritten, into one sorted layer, in
a commit delta-rs reads, retries and time-travels like its own; the whole table is
re-sorted once the layers pass their bound."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake.exceptions import CommitFailedError
from test_commit_pruning import hex_ids, row

from pipeline.catalog import compaction
from pipeline.catalog.compaction import compact_small_files, data_files, layers
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.history import commit_history
from pipeline.catalog.maintenance import RESORT, STRATEGY, maintain

SMALL = 1 << 30  # in these tables every file is small unless a test says otherwise


def commit_shuffled(catalog: DesignCatalog, ids: list[str], per_shard: int, seed: int = 0, run_id: str = "r1"):
    shuffled = random.Random(seed).sample(ids, len(ids))
    for i in range(0, len(shuffled), per_shard):
        catalog.commit([row(d, run_id=run_id) for d in shuffled[i : i + per_shard]], run_id)


def ok_files(catalog: DesignCatalog) -> list[compaction.DataFile]:
    return [f for f in data_files(catalog.table()) if dict(f.partition).get("status") == "ok"]


def maintained(tmp_path, **options):
    return maintain(tmp_path / "out", retention_hours=0, enforce_retention=False, **options)


def test_only_the_small_files_are_rewritten_into_one_sorted_layer(tmp_path):
    catalog = DesignCatalog(tmp_path / "out")
    first = hex_ids(200, seed=1)
    commit_shuffled(catalog, first, 20)
    maintained(tmp_path, resort=True)  # the table as a full re-sort leaves it: one layer
    large = {f.path for f in ok_files(catalog)}
    assert layers(ok_files(catalog)) == 1

    second = hex_ids(120, seed=2)
    commit_shuffled(catalog, second, 10, run_id="r2")
    sizes = sorted(f.size for f in ok_files(catalog))
    # Every shard's file is under the threshold, the re-sorted ones are not.
    threshold = max(f.size for f in ok_files(catalog) if f.path not in large) + 1
    assert threshold <= min(f.size for f in ok_files(catalog) if f.path in large), sizes
    version = catalog.version()

    report = maintain(tmp_path / "out", small_file_bytes=threshold, target_size=threshold * 4)  # a week kept

    assert report.strategy == STRATEGY and report.compacted_files == 12
    after = ok_files(catalog)
    assert large <= {f.path for f in after}, "the large files are left as they were"
    new = [f for f in after if f.path not in large]
    assert 1 <= len(new) < 12 and report.layers == layers(after) == 2
    # The new files are sorted across each other, and their statistics say what they hold.
    held = []
    for f in sorted(new, key=lambda f: f.min_id):
        ids = pq.read_table(catalog.table_path / f.path, columns=["design_id"]).column("design_id").to_pylist()
        assert ids == sorted(ids) and (f.min_id, f.max_id) == (ids[0], ids[-1])
        held += ids
    assert held == second
    assert sorted(catalog.ok_design_ids()) == sorted(first + second)
    # One OPTIMIZE commit noted maintain; the version before still reads (the retention keeps its files).
    history = commit_history(catalog)
    optimize = next(c for c in history if c["version"] == version + 1)
    assert (optimize["operation"], optimize["note"]) == ("OPTIMIZE", "maintain")
    assert len(catalog.to_pandas(version)) == len(first) + len(second)


def test_the_new_files_statistics_prune_merges_and_bound_the_timestamps(tmp_path):
    catalog = DesignCatalog(tmp_path / "out")
    ids = hex_ids(64)
    commit_shuffled(catalog, ids, 8)
    maintained(tmp_path, small_file_bytes=SMALL, target_size=40_000)
    actions = pa.table(catalog.table().get_add_actions(flatten=True)).to_pylist()
    for action in actions:
        rows = pq.read_table(catalog.table_path / action["path"], columns=["design_id", "created_at", "run_id"])
        assert action["num_records"] == rows.num_rows
        created = rows.column("created_at").to_pylist()
        assert action["min.created_at"] <= min(created) and action["max.created_at"] >= max(created)
        assert action["min.created_at"] > min(created) - timedelta(milliseconds=1)
        assert action["min.run_id"] == action["max.run_id"] == "r1"
    assert len(actions) > 1
    # A shard of ids inside one new file's range: its merge reads that file only.
    inside = sorted(ids)[:3]
    catalog.commit([row(i, run_id="r2") for i in (f"{int(inside[0], 16) + 1:032x}",)], "r2")
    entry = next(h for h in catalog.history() if h.get("operation") == "MERGE")
    assert entry["operationMetrics"]["num_target_files_scanned"] <= 1


def test_rows_too_many_for_one_pass_are_sorted_in_id_ranges(tmp_path, monkeypatch):
    catalog = DesignCatalog(tmp_path / "out")
    ids = hex_ids(300)
    commit_shuffled(catalog, ids, 25)
    monkeypatch.setattr(compaction, "SORT_PASS_BYTES", 20_000)  # a few passes
    report = maintained(tmp_path, small_file_bytes=SMALL, target_size=30_000)
    assert report.strategy == STRATEGY and report.layers == 1
    files = sorted(ok_files(catalog), key=lambda f: f.min_id)
    assert len(files) > 2
    read = [
        i
        for f in files
        for i in pq.read_table(catalog.table_path / f.path, columns=["design_id"]).column("design_id").to_pylist()
    ]
    assert read == ids


def test_layers_past_the_bound_make_maintenance_re_sort_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.catalog.maintenance.MAX_LAYERS", 2)
    catalog = DesignCatalog(tmp_path / "out")
    strategies, threshold = [], None
    for night in range(3):
        commit_shuffled(catalog, hex_ids(400, seed=10 + night), 20, seed=night, run_id=f"n{night}")
        # Small: a shard's file (20 rows); not small: what compaction writes (a night's 400 rows in one).
        threshold = threshold or int(max(f.size for f in data_files(catalog.table())) * 1.2)
        report = maintained(tmp_path, small_file_bytes=threshold, target_size=1 << 20)
        strategies.append((report.strategy, report.layers))
        assert min(f.size for f in data_files(catalog.table())) >= threshold
    assert [s for s, _ in strategies] == [STRATEGY, STRATEGY, RESORT]
    assert strategies[-1][1] == 1
    assert len(catalog.ok_design_ids()) == 1200


def test_a_failed_row_in_a_compacted_file_is_still_replaced_by_its_retry(tmp_path):
    catalog = DesignCatalog(tmp_path / "out")
    ids = hex_ids(24)
    catalog.commit([row(i, "failed", key=f"k{n}") for n, i in enumerate(ids[:12])], "r1")
    catalog.commit([row(i, "failed", key=f"k{n}") for n, i in enumerate(ids[12:], start=12)], "r1")
    maintained(tmp_path, small_file_bytes=SMALL)
    assert len([f for f in data_files(catalog.table()) if dict(f.partition)["status"] == "failed"]) == 1
    catalog.commit([row(ids[3], run_id="r2", key="k3")], "r2")
    frame = catalog.to_pandas().set_index("design_id")
    assert frame.index.is_unique and len(frame) == 24
    assert frame.loc[ids[3], "status"] == "ok" and (frame.status == "failed").sum() == 23


def test_a_compaction_that_loses_the_race_for_its_version_leaves_nothing(tmp_path):
    catalog = DesignCatalog(tmp_path / "out")
    commit_shuffled(catalog, hex_ids(40), 8)
    stale = catalog.table()
    catalog.commit([row(hex_ids(1, seed=9)[0], run_id="r2")], "r2")  # takes the next version first
    files_before = sorted(p.name for p in (catalog.table_path / "status=ok").iterdir())
    with pytest.raises(CommitFailedError):
        compact_small_files(stale, catalog.table_path, SMALL, 1 << 20, {"designs.note": "maintain"})
    assert sorted(p.name for p in (catalog.table_path / "status=ok").iterdir()) == files_before
    assert not [p for p in catalog.log_dir.iterdir() if p.name.endswith(".tmp")]
    # maintain() itself retries on the new version.
    report = maintained(tmp_path, small_file_bytes=SMALL)
    assert report.compacted_files == 6 and len(catalog.ok_design_ids()) == 41


def test_a_merge_that_read_a_compacted_file_does_not_lose_or_repeat_rows(tmp_path):
    """A shard's merge planned on the version before the compaction: delta-rs' conflict
    check against the compaction's log entry refuses it (its files were removed), and the
    catalog's retry commits it on the new version."""
    catalog = DesignCatalog(tmp_path / "out")
    ids = hex_ids(32)
    catalog.commit([row(i, "failed", key=f"k{n}") for n, i in enumerate(ids[:16])], "r1")
    catalog.commit([row(i, "failed", key=f"k{n}") for n, i in enumerate(ids[16:], start=16)], "r1")
    stale = catalog.table()
    maintain(tmp_path / "out", small_file_bytes=SMALL)  # the week's retention keeps the files it read
    retry = row(ids[20], run_id="r2", key="k20")
    retry["created_at"] = datetime.now(UTC)
    from pipeline.catalog.schema import SCHEMA

    source = pa.Table.from_pylist([retry], schema=SCHEMA)
    merge = stale.merge(source, "target.design_id = source.design_id", source_alias="source", target_alias="target")
    try:
        merge.when_matched_update_all().when_not_matched_insert_all().execute()
        refused = False
    except CommitFailedError:
        refused = True
    frame = catalog.to_pandas().set_index("design_id")
    assert frame.index.is_unique, "no design twice"
    assert len(frame) == 32
    if refused:  # as a shard's commit would: again, on the new version
        catalog.commit([retry], "r2")
        frame = catalog.to_pandas().set_index("design_id")
    assert frame.loc[ids[20], "status"] == "ok" and frame.index.is_unique and len(frame) == 32


def test_a_compaction_killed_before_its_log_entry_changes_nothing_and_its_files_are_vacuumed(tmp_path):
    """kill -9 between writing the sorted files and linking the log entry into place."""
    import subprocess
    import sys
    import textwrap

    catalog = DesignCatalog(tmp_path / "out")
    ids = hex_ids(60)
    commit_shuffled(catalog, ids, 10)
    version = catalog.version()
    script = textwrap.dedent(
        f"""
        import os, signal
        from pipeline.catalog import compaction
        from pipeline.catalog.maintenance import maintain
        compaction.os.link = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
        maintain({str(tmp_path / "out")!r}, small_file_bytes={SMALL})
        """
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, check=False)
    assert done.returncode == -9, done.stderr
    assert catalog.version() == version and sorted(catalog.ok_design_ids()) == ids
    written = {p.name for p in (catalog.table_path / "status=ok").iterdir()}
    referenced = {Path(f.path).name for f in ok_files(catalog)}
    assert len(written - referenced) >= 1, "the killed compaction's sorted files are there, in no version"
    maintained(tmp_path, small_file_bytes=SMALL)
    left = {p.name for p in (catalog.table_path / "status=ok").iterdir()}
    assert left == {Path(f.path).name for f in ok_files(catalog)}
    assert sorted(catalog.ok_design_ids()) == ids


def test_a_table_made_before_the_status_partitioning_is_compacted_in_place(tmp_path):
    from deltalake import DeltaTable

    from pipeline.catalog.schema import SCHEMA

    catalog = DesignCatalog(tmp_path / "out")
    DeltaTable.create(str(catalog.table_path), schema=SCHEMA)  # no partitions, as earlier versions made it
    ids = hex_ids(30)
    catalog.commit([row(i, "failed", key="k") if i == ids[0] else row(i) for i in ids[:10]], "r1")
    commit_shuffled(catalog, ids[10:], 5)
    report = maintained(tmp_path, small_file_bytes=SMALL)
    assert report.strategy == STRATEGY and report.written_files == 1 and report.layers == 1
    assert [f.partition for f in data_files(catalog.table())] == [()]
    catalog.commit([row(hex_ids(1, seed=5)[0], key="k", run_id="r2")], "r2")  # supersedes the failed row
    frame = catalog.to_pandas().set_index("design_id")
    assert ids[0] not in frame.index and len(frame) == 30 and set(frame.status) == {"ok"}
