"""Embeddings of new designs are written at their shard's commit; designs without one (older
designs, colourways, a crash between the two commits) are backfilled from their files with the
weights they were made with; designs whose weights are not at hand are skipped and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import EMBEDDING_KEY, read_embeddings
from pipeline.catalog.inputs import load_input_catalog
from pipeline.config import Config
from pipeline.engine.embedding import EMBEDDING_METHOD, from_bytes
from pipeline.engine.palette import inks_palette
from pipeline.engine.weights import WEIGHTS_ENV, resolve_weights
from pipeline.execution import embed
from pipeline.execution.colourways import make_colourways
from pipeline.execution.embed import embed_missing, find_weights
from pipeline.execution.run import Run
from pipeline.execution.shard import run_shard
from pipeline.planning.plan import plan_designs
from pipeline.planning.variants import job_specs

TINY = Config(weights="random", size=32, steps=2, loss_every=1, precision="fp32")


def made(sample_catalog: Path, out: Path, n: int = 3, weights_identity: str | None = None) -> list[dict]:
    """n designs committed to the catalog alone (as before embeddings); their rows, with the
    engine's embeddings. `weights_identity`: rows claiming other weights."""
    weights = resolve_weights("random", 0)
    inputs = load_input_catalog(sample_catalog)
    catalog = DesignCatalog(out)
    plan = plan_designs(inputs, TINY, weights.identity, set(), job_specs(inputs, TINY))
    rows = run_shard(plan.todo[:n], TINY, weights, "cpu", catalog, "r")
    if weights_identity is not None:
        for row in rows:
            row["params"]["weights"] = weights_identity
    catalog.commit(rows, "r")
    return rows


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_the_backfill_embeds_each_design_from_its_file_as_the_engine_did(sample_catalog, tmp_path):
    out = tmp_path / "out"
    rows = made(sample_catalog, out)
    assert read_embeddings(out)[0].size == 0
    report = embed_missing(out, precision="fp32")
    assert (report.embedded, report.skipped_no_weights, report.failed) == (3, 0, [])
    ids, vectors = read_embeddings(out, EMBEDDING_METHOD, network="vgg19")
    got = dict(zip(ids, vectors))
    assert set(got) == {r["design_id"] for r in rows}
    for row in rows:  # from the 8-bit file: within its rounding of the engine's own
        assert cosine(got[row["design_id"]], from_bytes(row[EMBEDDING_KEY])) > 0.999
    again = embed_missing(out, precision="fp32")
    assert (again.embedded, again.already) == (0, 3)


def test_designs_whose_weights_are_not_at_hand_are_skipped_and_counted(sample_catalog, tmp_path):
    out = tmp_path / "out"
    identity = "sha256:" + "0" * 64
    made(sample_catalog, out, 2, weights_identity=identity)
    report = embed_missing(out, precision="fp32")
    assert (report.embedded, report.skipped_no_weights) == (0, 2)
    assert report.missing_weights == {identity: 2}
    assert "2 skipped: their weights are not at hand" in report.describe()
    assert read_embeddings(out)[0].size == 0


def test_weights_are_found_only_by_their_checksum(tmp_path):
    fake = tmp_path / "vgg.h5"
    fake.write_bytes(b"not these weights")
    assert find_weights("sha256:" + "0" * 64, "caffe", "vgg16", [fake]) is None
    found = find_weights("random:7", "caffe", "vgg16", [])
    assert found is not None and found.identity == "random:7" and found.network == "vgg16"
    assert find_weights(None, None, None, []) is None


def test_only_the_designs_asked_for_are_embedded(sample_catalog, tmp_path):
    out = tmp_path / "out"
    rows = made(sample_catalog, out)
    report = embed_missing(out, [rows[0]["design_id"]], precision="fp32")
    assert report.embedded == 1
    assert list(read_embeddings(out)[0]) == [rows[0]["design_id"]]


def test_colourways_are_embedded_by_the_backfill(sample_catalog, tmp_path):
    out = tmp_path / "out"
    made(sample_catalog, out, 1)
    made_colourways = make_colourways(out, inks_palette(3))
    assert len(made_colourways.made) == 1
    report = embed_missing(out, precision="fp32")
    assert report.embedded == 2
    ids, vectors = read_embeddings(out)
    assert set(ids) >= set(made_colourways.made)


def test_a_runs_commit_writes_its_designs_embeddings(sample_catalog, tmp_path):
    out = tmp_path / "out"
    config = TINY.replace(shard_size=4)
    inputs = load_input_catalog(sample_catalog)
    Run(str(sample_catalog), str(out), config, run_id="r1").run_local(
        inputs, resolve_weights("random", 0), "cpu", stop_after_shards=1
    )
    ok = list(DesignCatalog(out).done_ids())
    ids, vectors = read_embeddings(out, EMBEDDING_METHOD, network="vgg19")
    assert len(ok) == 4 and sorted(ids) == sorted(ok)
    assert vectors.shape == (4, 256) and vectors.dtype == np.float16


def test_on_real_weights_a_design_is_embedded_with_the_file_its_row_names(sample_catalog, tmp_path, monkeypatch):
    """The weights are found by the path in the row's weights_source and checked by SHA-256;
    moved elsewhere and not given, its designs are skipped and counted."""
    real = Path(__file__).resolve().parents[2] / ".." / "shared" / "weights" / "vgg16_weights_notop_keras_layout.h5"
    if not real.is_file():
        pytest.skip(f"real weights absent: {real} (../shared/weights beside the repository)")
    weights = resolve_weights(str(real), 0)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)  # nowhere else to find it
    monkeypatch.setattr(embed, "known_files", lambda: ())
    out = tmp_path / "out"
    inputs = load_input_catalog(sample_catalog)
    catalog = DesignCatalog(out)
    config = TINY.replace(weights=str(real), steps=1)
    plan = plan_designs(inputs, config, weights.design_identity, set(), job_specs(inputs, config))
    rows = run_shard(plan.todo[:1], config, weights, "cpu", catalog, "r")
    assert str(real) in rows[0]["weights_source"]
    moved = [dict(r, weights_source=r["weights_source"].replace(str(real), str(tmp_path / "gone.h5"))) for r in rows]
    catalog.commit(moved, "r")
    skipped = embed_missing(out, precision="fp32")
    assert (skipped.embedded, skipped.skipped_no_weights) == (0, 1)
    found = embed_missing(out, precision="fp32", weights=[real])
    assert (found.embedded, found.skipped_no_weights) == (1, 0)
    ids, vectors = read_embeddings(out, network="vgg16")
    assert cosine(vectors[0], from_bytes(rows[0][EMBEDDING_KEY])) > 0.999
