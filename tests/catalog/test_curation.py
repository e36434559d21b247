"""The curation table (pipeline/catalog/curation.py): each write a new version, its files cut in
review order, so a page of the review meets one file by its statistics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable

from pipeline.catalog import curation
from pipeline.catalog.curation import CURATION_SCHEMA, curation_path, curation_table, group_id, write_curation


def rows(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = [f"{i:032x}" for i in range(n)]
    order = rng.permutation(n)  # written in any order
    return pa.table(
        {
            "design_id": ids,
            "group_id": [group_id(d) for d in ids],
            "group_size": pa.array(np.ones(n, np.int32)),
            "representative": ids,
            "rank_in_group": pa.array(np.ones(n, np.int32)),
            "score": rng.uniform(0, 1, n),
            "review_order": pa.array(order.astype(np.int64)),
            "method": ["exact:vgg16:cos<=0.02"] * n,
            "curated_at": pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
            "curation_run": ["run"] * n,
        },
        schema=CURATION_SCHEMA,
    )


def test_each_write_is_a_new_version_with_files_in_review_order(tmp_path: Path, monkeypatch):
    assert curation_table(tmp_path) is None
    monkeypatch.setattr(curation, "ROWS_PER_FILE", 64)
    assert write_curation(tmp_path, rows(20_000), "run-1") == 0
    table = DeltaTable(str(curation_path(tmp_path)))
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    bounds = sorted((a["min.review_order"], a["max.review_order"]) for a in actions)
    assert len(bounds) > 1
    assert bounds[0][0] == 0 and bounds[-1][1] == 19_999
    assert all(high < low for (_, high), (low, _) in zip(bounds, bounds[1:]))  # no two files overlap
    assert write_curation(tmp_path, rows(10, seed=1), "run-2") == 1
    assert DeltaTable(str(curation_path(tmp_path))).to_pyarrow_table().num_rows == 10  # an overwrite


def test_a_group_id_is_derived_from_its_smallest_member():
    assert group_id("a" * 32) == group_id("a" * 32) != group_id("b" * 32)
    assert len(group_id("a" * 32)) == 32
