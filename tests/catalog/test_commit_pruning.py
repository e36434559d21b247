"""A shard's commit reads only the catalog files its design ids can be in: the table is
partitioned by status, each merge names the shard's id ranges, and delta-rs skips every
ok file whose id statistics lie outside them. Correctness stays that of a full merge."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.ids import id_ranges
from pipeline.catalog.maintenance import maintain


def hex_ids(n: int, seed: int = 0) -> list[str]:
    return sorted(hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:32] for i in range(n))


def row(design_id: str, status: str = "ok", key: str | None = None, run_id: str = "r1") -> dict:
    return {
        "design_id": design_id,
        "pairing_key": key or f"k-{design_id}",
        "run_id": run_id,
        "created_at": datetime.now(UTC),
        "status": status,
        "error": None if status == "ok" else "a fault",
        "content_id": "c",
        "style_id": "s",
    }


def last_merge_metrics(catalog: DesignCatalog) -> dict:
    entry = next(h for h in catalog.history() if h.get("operation") == "MERGE")  # newest first
    return entry["operationMetrics"]


@pytest.mark.parametrize("limit", [1, 2, 3, 8])
def test_id_ranges_cover_every_id_in_at_most_limit_ranges_split_at_the_widest_gaps(limit):
    rng = random.Random(limit)
    clusters = [hex_ids(20, seed=s) for s in range(3)]
    # Three tight clusters far apart: the two widest gaps separate them.
    ids = [f"{c:01x}" + i[1:] for c, cluster in zip((1, 7, 13), clusters, strict=True) for i in cluster]
    rng.shuffle(ids)
    ranges = id_ranges(ids, limit)
    assert 1 <= len(ranges) <= limit
    assert all(any(low <= i <= high for low, high in ranges) for i in ids)
    assert all(low <= high for low, high in ranges) and ranges == sorted(ranges)
    if limit >= 3:  # no range bridges two clusters
        assert all(low[0] == high[0] for low, high in ranges)
        assert {low[0] for low, _ in ranges} == {"1", "7", "d"}


def test_id_ranges_of_other_ids_and_of_none():
    assert id_ranges([], 8) == []
    assert id_ranges(["d3", "d1", "design-9"], 8) == [("d1", "design-9")]
    assert id_ranges(["ab"], 8) == [("ab", "ab")]


def test_a_shard_commit_reads_only_the_files_its_ids_can_be_in(tmp_path):
    catalog = DesignCatalog(tmp_path / "out")
    ids = hex_ids(20 * 16)
    # Twenty shards of neighbouring ids, committed out of order: twenty files of narrow id ranges.
    shards = [ids[i : i + 16] for i in range(0, len(ids), 16)]
    for shard in random.Random(0).sample(shards, len(shards)):
        catalog.commit([row(i) for i in shard], "r1")
    assert (tmp_path / "out" / "designs" / "status=ok").is_dir()

    # New ids between two neighbours of the 8th shard: only its file can hold them.
    low, high = int(shards[7][3], 16), int(shards[7][4], 16)
    new = [f"{low + (high - low) * k // 5:032x}" for k in range(1, 5)]
    catalog.commit([row(i, run_id="r2") for i in new], "r2")
    metrics = last_merge_metrics(catalog)
    assert metrics["num_target_files_scanned"] <= 1
    assert metrics["num_target_files_skipped_during_scan"] >= 19
    assert metrics["num_target_rows_inserted"] == 4

    frame = catalog.to_pandas()
    assert len(frame) == len(ids) + 4 and frame.design_id.is_unique and set(frame.status) == {"ok"}


def test_pruned_merges_still_keep_ok_final_replace_failed_and_supersede(tmp_path):
    catalog = DesignCatalog(tmp_path / "out")
    ids = hex_ids(64)
    catalog.commit([row(i) for i in ids[:32]], "r1")
    catalog.commit([row(i, "failed", key=f"k{n}") for n, i in enumerate(ids[32:40])], "r1")

    # An ok design again (a concurrent run's): left as it was. A failed one: replaced by its retry.
    # A new ok design of a failed row's pairing (other input bytes): the failed row goes.
    again = row(ids[5], run_id="r2")
    retry = row(ids[33], run_id="r2", key="k1")
    superseding = row(ids[50], run_id="r2", key="k2")
    catalog.commit([again, retry, superseding], "r2")

    frame = catalog.to_pandas().set_index("design_id")
    assert frame.loc[ids[5], "run_id"] == "r1"
    assert frame.loc[ids[33], "status"] == "ok" and frame.loc[ids[33], "run_id"] == "r2"
    assert ids[34] not in frame.index  # the failed row of k2
    assert frame.loc[ids[50], "status"] == "ok"
    assert frame.index.is_unique and len(frame) == 32 + 8 - 1 + 1
    assert (tmp_path / "out" / "designs" / "status=failed").is_dir()


def test_maintenance_clusters_the_ok_files_by_design_id(tmp_path):
    catalog = DesignCatalog(tmp_path / "out")
    ids = hex_ids(40 * 8)
    rng = random.Random(1)
    shuffled = rng.sample(ids, len(ids))
    # Forty shards of ids from all over the id space: every file spans nearly every id.
    for i in range(0, len(shuffled), 8):
        catalog.commit([row(d) for d in shuffled[i : i + 8]], "r1")
    maintain(tmp_path / "out", retention_hours=0, enforce_retention=False)
    files = [
        tmp_path / "out" / "designs" / path
        for path in catalog.table().file_uris(file_pruning_predicate="status = 'ok'")
    ]
    per_file = sorted(pq.read_table(f, columns=["design_id"]).column("design_id").to_pylist() for f in files)
    ordered = [i for ids_of_file in per_file for i in ids_of_file]
    # z-ordered on one column is sorted: each file spans a narrow range, and files do not overlap.
    assert ordered == ids
    assert sorted(catalog.ok_design_ids()) == ids


def test_a_table_made_before_the_status_partitioning_still_commits_and_supersedes(tmp_path):
    from deltalake import DeltaTable

    from pipeline.catalog.schema import SCHEMA

    catalog = DesignCatalog(tmp_path / "out")
    DeltaTable.create(str(catalog.table_path), schema=SCHEMA)  # no partitions, as earlier versions made it
    ids = hex_ids(8)
    catalog.commit([row(ids[0], "failed", key="k"), row(ids[1])], "r1")
    catalog.commit([row(ids[2], key="k", run_id="r2"), row(ids[1], run_id="r2")], "r2")
    frame = catalog.to_pandas().set_index("design_id")
    assert sorted(frame.index) == sorted([ids[1], ids[2]])
    assert frame.loc[ids[1], "run_id"] == "r1" and set(frame.status) == {"ok"}
    assert catalog.table().metadata().partition_columns == []


def test_a_table_whose_params_carry_a_dropped_config_field_still_takes_new_designs(tmp_path):
    """Catalogs made before `--repeat` have params.tile; the Config has `repeat` instead.
    delta-rs cannot merge a params struct that lacks a field of the table's, so the commit
    adds it, derived from the row's params."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from pipeline.catalog.schema import SCHEMA, params_value
    from pipeline.config import Config

    params = SCHEMA.field("params").type
    old_params = pa.struct([f for f in params if f.name != "repeat"] + [pa.field("tile", pa.bool_())])
    old = pa.schema([pa.field("params", old_params) if f.name == "params" else f for f in SCHEMA])
    catalog = DesignCatalog(tmp_path / "out")
    DeltaTable.create(str(catalog.table_path), schema=old, partition_by=["status"])
    write_deltalake(str(catalog.table_path), pa.Table.from_pylist([row(hex_ids(1)[0])], schema=old), mode="append")

    ids = hex_ids(3, seed=1)
    made = [
        {**row(i, run_id="r2"), "params": params_value(Config(repeat=repeat), "random:0", "caffe")}
        for i, repeat in zip(ids, ("block", "none", "half-drop"), strict=True)
    ]
    catalog.commit(made, "r2")
    frame = catalog.to_pandas().set_index("design_id")
    assert [frame.loc[i, "params"]["tile"] for i in ids] == [True, False, False]
    assert [frame.loc[i, "params"]["repeat"] for i in ids] == ["block", "none", "half-drop"]


def test_files_carry_statistics_only_for_the_columns_that_prune(tmp_path):
    from deltalake import DeltaTable

    from pipeline.catalog.designs import STATS_COLUMNS
    from pipeline.catalog.schema import SCHEMA

    catalog = DesignCatalog(tmp_path / "out")
    catalog.commit([row(i) for i in hex_ids(4)], "r1")
    stats = catalog.table().get_add_actions(flatten=True).schema.names
    assert {f"min.{c}" for c in STATS_COLUMNS.split(",")} <= set(stats)
    assert "min.content_id" not in stats and "min.style_id" not in stats

    # A partitioned table made before the narrowing takes it at its next maintenance.
    older = DesignCatalog(tmp_path / "older")
    DeltaTable.create(str(older.table_path), schema=SCHEMA, partition_by=["status"])
    older.commit([row(i) for i in hex_ids(4, seed=2)], "r1")
    assert "min.content_id" in older.table().get_add_actions(flatten=True).schema.names
    maintain(tmp_path / "older", retention_hours=0, enforce_retention=False)
    assert "min.content_id" not in older.table().get_add_actions(flatten=True).schema.names
    assert older.table().metadata().configuration["delta.dataSkippingStatsColumns"] == STATS_COLUMNS
    assert sorted(older.ok_design_ids()) == hex_ids(4, seed=2)
