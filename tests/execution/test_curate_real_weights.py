"""`designs curate` on real pretrained weights (../shared/weights' VGG16; skipped where absent):
designs that differ invisibly (the same pairing at style weights 100 and 101) share a group,
designs of different styles never do, and each group's representative is its best score.

The designs are made by a Run (their embeddings written at each shard's commit, as a night's
are) at 48 px and 15 steps, the tshirt against the sample's four styles."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from analyst_catalog import run_without_prefect
from deltalake import DeltaTable

from pipeline.catalog.curation import curation_path
from pipeline.catalog.designs import DesignCatalog
from pipeline.config import Config
from pipeline.execution.curate import curate

ROOT = Path(__file__).resolve().parents[2]
REAL_WEIGHTS = ROOT.parent / "shared" / "weights" / "vgg16_weights_notop_keras_layout.h5"
STYLES = ("stripes", "gingham", "waves", "speckle")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    if not REAL_WEIGHTS.is_file():
        pytest.skip(f"real weights absent: {REAL_WEIGHTS} (../shared/weights beside the repository)")
    work = tmp_path_factory.mktemp("curate-real")
    sample = work / "sample"
    shutil.copytree(ROOT / "data" / "sample", sample)
    table = pq.read_table(sample / "catalog.parquet")
    keep = [r for r in table.to_pylist() if r["image_id"] in ("tshirt", *STYLES)]
    pq.write_table(table.from_pylist(keep, schema=table.schema), sample / "catalog.parquet")
    out = work / "out"
    base = dict(
        weights=str(REAL_WEIGHTS),
        size=48,
        steps=15,
        learning_rate=0.1,
        adam_beta1=0.9,
        loss_every=15,
        precision="fp32",
        devices="cpu",
        batch_size=4,
        shard_size=8,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared machine
    try:
        for weight in (100.0, 101.0):
            run_without_prefect(sample / "catalog.parquet", out, Config(**base, style_weight=weight), f"run-{weight:g}")
    finally:
        torch.set_num_threads(threads)
    return out


def test_on_real_weights_twins_share_a_group_other_styles_never_and_the_best_represents(made: Path):
    report = curate(made)
    assert report.designs == 8 and report.skipped == 0 and report.embedded == 0  # written at the commits
    designs = {
        r["design_id"]: r
        for r in DesignCatalog(made).table().to_pyarrow_table(columns=["design_id", "style_id", "params"]).to_pylist()
    }
    rows = DeltaTable(str(curation_path(made))).to_pyarrow_table().to_pylist()
    group_of = {r["design_id"]: r["group_id"] for r in rows}
    style_of = {d: designs[d]["style_id"] for d in group_of}
    for style in STYLES:
        twins = {group_of[d] for d, s in style_of.items() if s == style}
        assert len(twins) == 1, style  # style weight 100 and 101: one group
    for a in STYLES:
        for b in STYLES:
            if a < b:
                ga = {group_of[d] for d, s in style_of.items() if s == a}
                gb = {group_of[d] for d, s in style_of.items() if s == b}
                assert not ga & gb, (a, b)
    for r in rows:
        members = [m for m in rows if m["group_id"] == r["group_id"]]
        best = max(members, key=lambda m: (m["score"], [-ord(c) for c in m["design_id"]]))
        assert r["representative"] == best["design_id"]
        assert (r["rank_in_group"] == 1) == (r["design_id"] == best["design_id"])
