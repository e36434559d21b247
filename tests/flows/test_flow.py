"""End to end through the Prefect flow: sample catalog -> designs -> Delta table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE, SAMPLE_PAIRINGS
from PIL import Image

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.inputs import CatalogError
from pipeline.config import Config
from pipeline.files import sha256_file

CONTRACT_COLUMNS = {
    "design_id",
    "run_id",
    "created_at",
    "status",
    "error",
    "content_id",
    "style_id",
    "content_sha256",
    "style_sha256",
    "output_uri",
    "width",
    "height",
    "params",
    "weights_source",
    "loss_total",
    "loss_content",
    "loss_style",
    "loss_tv",
    "loss_every",
    "quality",
    "final_loss",
    "timings",
    "device",
    "batch_size",
    "tags",
    "versions",
}
TINY = dict(weights="random", size=32, steps=3, loss_every=1, batch_size=3, shard_size=4)

pytestmark = pytest.mark.usefixtures("prefect_server")


def run(catalog: Path, out: Path, **overrides):
    from flows.generate import generate

    return generate(catalog=str(catalog), out=str(out), config=Config(**{**TINY, **overrides}))


@pytest.fixture(scope="module")
def first_run(prefect_server, tmp_path_factory):
    """One default run on a copy of the sample catalog, shared by the module: (catalog, out, summary).
    Read it as it is; a test that changes the output works on copy_out's copy."""
    folder = tmp_path_factory.mktemp("first_run")
    shutil.copytree(SAMPLE, folder / "sample")
    catalog, out = folder / "sample" / "catalog.parquet", folder / "out"
    return catalog, out, run(catalog, out)


def copy_out(out: Path, tmp_path: Path) -> Path:
    """A private copy of a design catalog folder (the Delta table's files are relative to it)."""
    return Path(shutil.copytree(out, tmp_path / "out"))


def test_generate_writes_a_delta_version_with_the_contract_columns(first_run):
    sample_catalog, out, summary = first_run

    assert (summary.ok, summary.failed, summary.pairings) == (SAMPLE_PAIRINGS, 0, SAMPLE_PAIRINGS)
    assert set(summary.device_busy_fraction) == {"cpu"} and 0 < summary.device_busy_fraction["cpu"] <= 1
    designs = DesignCatalog(out)
    frame = designs.to_pandas()
    assert CONTRACT_COLUMNS <= set(frame.columns)
    assert len(frame) == SAMPLE_PAIRINGS and frame["design_id"].is_unique
    assert set(frame["status"]) == {"ok"}
    assert set(frame["run_id"]) == {summary.run_id}
    # dress (collection summer) never meets gingham (collection winter)
    assert not ((frame.content_id == "dress") & (frame.style_id == "gingham")).any()

    for row in frame.itertuples():
        png = out / row.output_uri
        assert png.is_file() and sha256_file(png) == row.output_sha256
        with Image.open(png) as image:
            assert image.size == (row.width, row.height)
            assert max(image.size) == 32
            assert image.text["design_id"] == row.design_id
        assert len(row.loss_total) == len(row.loss_style) == 3 + 1  # every step, then the final image
        assert row.final_loss["total"] == pytest.approx(row.loss_total[-1], rel=1e-5)
        assert row.params["weights"] == "random:0" and row.params["style_weight"] == 1e-2
        assert row.params["steps"] == 3 and list(row.params["style_layers"]) == list(Config().style_layers)
        assert (
            row.weights_source == "random:0 (vgg19, random, caffe preprocessing)"
            and row.params["preprocessing"] == "caffe"
        )
        assert row.device == "cpu" and 1 <= row.batch_size <= 3
        assert row.timings["optimize_s"] > 0 and row.timings["total_s"] >= row.timings["optimize_s"]
        assert row.versions["torch"] and row.versions["python"]
        assert json.loads(row.content_extra) == {"designer": "Sample Studio"}
        assert "garment" in list(row.tags)
        # Quality measured once per design (docs/ANALYSTS.md, "Quality measures").
        assert len(row.quality["style_ratio_per_layer"]) == len(row.params["style_layers"])
        assert row.quality["style_ratio"] > 0 and 0 < row.quality["content_kept"] <= 1
    original = pq.read_table(sample_catalog).to_pylist()
    shas = {r["image_id"]: sha256_file(sample_catalog.parent / r["uri"]) for r in original}
    assert all(frame.content_sha256 == frame.content_id.map(shas))
    assert all(frame.style_sha256 == frame.style_id.map(shas))

    # Committed as shards finished: one version per shard, each tagged with the run id.
    history = designs.history()
    shard_commits = [h for h in history if h.get("designs.note", "").startswith("shard")]
    assert len(shard_commits) == 3  # 11 designs in shards of 4
    assert all(h["run_id"] == summary.run_id for h in shard_commits)

    run_dir = out / "runs" / summary.run_id
    assert json.loads((run_dir / "config.json").read_text())["config"]["steps"] == 3
    assert json.loads((run_dir / "summary.json").read_text())["ok"] == SAMPLE_PAIRINGS


def test_every_ok_design_of_the_flow_has_its_embedding(first_run):
    """The flow's commit task writes the shard's embeddings after its designs (OUT/embeddings)."""
    from pipeline.catalog.embeddings import EMBEDDING_METHOD, read_embeddings

    _, out, _ = first_run
    ok = sorted(DesignCatalog(out).done_ids())
    ids, vectors = read_embeddings(out, EMBEDDING_METHOD, network="vgg19")
    assert ok and sorted(ids) == ok
    assert vectors.shape == (len(ok), 256)


def test_make_runs_lists_the_run_with_its_whole_flow_run_id(first_run, capsys):
    from flows.runs import main

    *_, summary = first_run
    assert main(["--limit", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["flow", "run", "id", "name", "state", "started"]
    (line,) = [line for line in lines if line.startswith(summary.flow_run_id + " ")]
    assert len(summary.flow_run_id) == 36 and line.split()[2] == "Completed"


def test_rerun_does_no_work_and_adds_no_rows(first_run, tmp_path: Path):
    sample_catalog, shared_out, _ = first_run
    out = copy_out(shared_out, tmp_path)
    version = DesignCatalog(out).version()

    again = run(sample_catalog, out)
    assert (again.ok, again.failed, again.already_done) == (0, 0, SAMPLE_PAIRINGS)
    assert DesignCatalog(out).version() == version
    assert len(DesignCatalog(out).to_pandas()) == SAMPLE_PAIRINGS

    # A changed parameter is a new design of every pairing.
    changed = run(sample_catalog, out, style_weight=0.5)
    assert changed.ok == SAMPLE_PAIRINGS
    assert len(DesignCatalog(out).to_pandas()) == 2 * SAMPLE_PAIRINGS


def test_image_faults_fail_only_their_pairings_and_are_retried(sample_catalog: Path, tmp_path: Path):
    out = tmp_path / "out"
    stripes = sample_catalog.parent / "styles" / "stripes.png"
    saved = stripes.read_bytes()
    stripes.unlink()
    (sample_catalog.parent / "content" / "hoodie.png").write_bytes(b"not an image at all")

    first = run(sample_catalog, out)
    frame = DesignCatalog(out).to_pandas()
    failed = frame[frame.status == "failed"]
    assert first.failed == len(failed) == 3 + 3  # 3 garments x stripes, hoodie x 3 other styles
    assert set(failed.design_id) == {f["design_id"] for f in first.failures}
    for row in failed.itertuples():
        assert ("'stripes'" in row.error and "not found" in row.error) or (
            "'hoodie'" in row.error and "not an image" in row.error
        )
        assert row.output_uri is None or pd.isna(row.output_uri)
    assert first.ok == SAMPLE_PAIRINGS - 6

    # Fix the inputs: the failed designs are retried, nothing is duplicated.
    stripes.write_bytes(saved)
    Image.new("RGB", (40, 40), (200, 10, 10)).save(
        sample_catalog.parent / "content" / "hoodie.png"
    )  # its mask is square
    second = run(sample_catalog, out)
    assert second.failed == 0
    frame = DesignCatalog(out).to_pandas()
    ok = frame[frame.status == "ok"]
    assert ok.design_id.is_unique and len(ok) == SAMPLE_PAIRINGS
    # The failed rows of the fixed pairings are gone, superseded by their ok designs.
    assert set(frame.status) == {"ok"} and len(frame) == SAMPLE_PAIRINGS


def test_refused_catalog_leaves_the_design_catalog_untouched(first_run, sample_catalog: Path, tmp_path: Path):
    out = copy_out(first_run[1], tmp_path)
    version = DesignCatalog(out).version()

    table = pq.read_table(sample_catalog)
    duplicated = pa.concat_tables([table, table.slice(0, 1)])
    bad = sample_catalog.parent / "bad.parquet"
    pq.write_table(duplicated, bad)
    with pytest.raises(CatalogError, match="duplicate image_id"):
        run(bad, out)
    assert DesignCatalog(out).version() == version


def test_nonfinite_loss_fails_the_design(sample_catalog: Path, tmp_path: Path):
    out = tmp_path / "out"
    summary = run(sample_catalog, out, tv_weight=1e38)
    frame = DesignCatalog(out).to_pandas()
    assert summary.failed == SAMPLE_PAIRINGS and summary.ok == 0
    for row in frame[frame.status == "failed"].itertuples():
        assert "non-finite loss" in row.error
        assert not (out / "images" / row.design_id[:2] / f"{row.design_id}.png").exists()


def test_a_run_past_its_count_of_small_files_maintains_the_catalog_at_its_end(first_run, tmp_path):
    from pipeline.catalog.history import commit_history

    sample_catalog, _, _ = first_run
    out = tmp_path / "out"
    summary = run(sample_catalog, out, maintain_after_files=1)
    assert summary.ok == SAMPLE_PAIRINGS
    catalog = DesignCatalog(out)
    notes = [(c["operation"], c["note"]) for c in commit_history(catalog)]
    assert ("OPTIMIZE", "maintain") in notes, notes
    # The shards' small files are rewritten; every design is still there, once.
    frame = catalog.to_pandas()
    assert len(frame) == SAMPLE_PAIRINGS and frame.design_id.is_unique


def test_a_failing_maintenance_leaves_the_run_and_its_designs_as_they_are(first_run, tmp_path, monkeypatch, caplog):
    import pipeline.execution.run as run_module
    from pipeline.catalog.designs import CatalogFault

    def disk_full(*args, **kwargs):
        raise CatalogFault("cannot maintain the design catalog: no space left on device (simulated)")

    monkeypatch.setattr(run_module, "maintain", disk_full)
    monkeypatch.setattr("flows.generate.maintain_catalog.retries", 0)
    sample_catalog, _, _ = first_run
    out = tmp_path / "out"
    summary = run(sample_catalog, out, maintain_after_files=1)
    assert summary.ok == SAMPLE_PAIRINGS and len(DesignCatalog(out).to_pandas()) == SAMPLE_PAIRINGS
    assert any("design catalog maintenance failed" in r.getMessage() for r in caplog.records)
