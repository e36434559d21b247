"""--format tiff16: a 16-bit RGB TIFF with an embedded sRGB ICC profile, the DPI, and the
design id, params and weights in its metadata, read back as written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.images import srgb_icc_profile, tensor_to_tiff16_bytes
from pipeline.catalog.inputs import load_input_catalog
from pipeline.catalog.verify import verify_catalog
from pipeline.config import Config
from pipeline.engine.weights import resolve_weights
from pipeline.execution.shard import run_shard
from pipeline.planning.plan import plan_designs
from pipeline.planning.variants import job_specs


def tiff_samples(data: bytes) -> np.ndarray:
    """The 16-bit samples of a one-strip uncompressed RGB TIFF, (H, W, 3), read from its strip."""
    with Image.open(io.BytesIO(data)) as tiff:
        width, height = tiff.size
        (offset,) = tiff.tag_v2[273] if isinstance(tiff.tag_v2[273], tuple) else (tiff.tag_v2[273],)
    return np.frombuffer(data, dtype="<u2", count=width * height * 3, offset=offset).reshape(height, width, 3)


def test_tiff16_keeps_16_bits_the_srgb_profile_the_dpi_and_the_metadata():
    image = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(1))
    data = tensor_to_tiff16_bytes(image, text={"design_id": "abc123", "params": '{"size": 30}'}, dpi=300)
    with Image.open(io.BytesIO(data)) as tiff:
        assert tiff.format == "TIFF" and tiff.size == (30, 20)
        assert tiff.tag_v2[258] == (16, 16, 16) and tiff.tag_v2[277] == 3
        assert tiff.info["dpi"] == (300.0, 300.0)
        assert tiff.info["icc_profile"] == srgb_icc_profile()
        profile = ImageCms.ImageCmsProfile(io.BytesIO(tiff.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(profile)
        assert json.loads(tiff.tag_v2[270]) == {"design_id": "abc123", "params": '{"size": 30}'}
        tiff.load()  # Pillow decodes it (to 8 bits)
    samples = tiff_samples(data)
    expected = (image.permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    np.testing.assert_array_equal(samples, expected)
    assert len(np.unique(samples)) > 256  # more levels than 8 bits hold


def test_tiff16_without_dpi_has_no_resolution():
    data = tensor_to_tiff16_bytes(torch.zeros(3, 16, 16))
    with Image.open(io.BytesIO(data)) as tiff:
        assert 282 not in tiff.tag_v2 and 283 not in tiff.tag_v2  # (Pillow then reports dpi (1, 1))


def test_a_tiff16_run_writes_tifs_with_the_design_id_and_verifies(sample_catalog: Path, tmp_path: Path):
    config = Config(weights="random", size=32, steps=2, loss_every=1, dpi=150, format="tiff16")
    weights = resolve_weights("random", 0)
    inputs = load_input_catalog(sample_catalog)
    plan = plan_designs(inputs, config, weights.identity, set(), job_specs(inputs, config))
    out = tmp_path / "out"
    catalog = DesignCatalog(out)
    rows = run_shard(list(plan.todo)[:2], config, weights, "cpu", catalog, "r")
    catalog.commit(rows, "r")
    for row in rows:
        assert row["status"] == "ok" and row["output_uri"].endswith(".tif")
        data = (out / row["output_uri"]).read_bytes()
        with Image.open(io.BytesIO(data)) as tiff:
            assert tiff.tag_v2[258] == (16, 16, 16) and tiff.info["icc_profile"] == srgb_icc_profile()
            assert tiff.info["dpi"] == (150.0, 150.0)
            meta = json.loads(tiff.tag_v2[270])
        assert meta["design_id"] == row["design_id"] and meta["weights"] == weights.identity
        assert json.loads(meta["params"])["format"] == "tiff16"
        assert tiff_samples(data).shape == (row["height"], row["width"], 3)
    # the format is part of the design id: the PNG of the same pairing is another design
    png = config.replace(format="png")
    png_ids = {j.design_id for j in plan_designs(inputs, png, weights.identity, set(), job_specs(inputs, png)).todo}
    assert not png_ids & {r["design_id"] for r in rows}
    assert not verify_catalog(out).problems


def test_a_tiff16_run_without_dpi_writes_300_dpi(sample_catalog: Path, tmp_path: Path):
    config = Config(weights="random", size=32, steps=2, loss_every=1, format="tiff16")
    assert config.dpi == 300
    weights = resolve_weights("random", 0)
    inputs = load_input_catalog(sample_catalog)
    job = plan_designs(inputs, config, weights.identity, set(), job_specs(inputs, config)).todo[0]
    (row,) = run_shard([job], config, weights, "cpu", DesignCatalog(tmp_path / "out"), "r")
    with Image.open(tmp_path / "out" / row["output_uri"]) as tiff:
        assert tiff.info["dpi"] == (300.0, 300.0)
        assert tiff.tag_v2[296] == 2  # inches


def test_a_bad_format_is_refused():
    with pytest.raises(ValueError, match="format='jpeg' is invalid; accepted: png or tiff16"):
        Config(format="jpeg")
