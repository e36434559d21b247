"""Textile controls end to end through the runner: pairs files, grids, masks,
PNG metadata and the contact sheet."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import SAMPLE_PAIRINGS
from PIL import Image

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.inputs import CatalogError, load_input_catalog
from pipeline.config import Config
from pipeline.engine.weights import resolve_weights
from pipeline.execution.shard import run_shard
from pipeline.planning.plan import plan_designs
from pipeline.planning.variants import expand_grid, job_specs, parse_grid
from pipeline.views.contact_sheet import write_contact_sheet

TINY = Config(weights="random", size=32, steps=3, loss_every=1, dpi=300)
WEIGHTS = resolve_weights("random", 0)


def make(catalog: Path, out: Path, pairs=None, grid=None, config: Config = TINY):
    inputs = load_input_catalog(catalog)
    specs = job_specs(inputs, config, pairs, grid)
    plan = plan_designs(inputs, config, WEIGHTS.identity, set(), specs)
    design_catalog = DesignCatalog(out)
    rows = run_shard(list(plan.todo), config, WEIGHTS, "cpu", design_catalog, "r")
    design_catalog.commit(rows, "r")
    return plan, rows


def test_grid_multiplies_every_pairing_with_its_own_design_ids(sample_catalog: Path, tmp_path: Path):
    grid = parse_grid(["style_weight=1e-2,1e-1", "seed=0,1"])
    assert grid == {"style_weight": [0.01, 0.1], "seed": [0, 1]}
    assert len(expand_grid(grid)) == 4
    inputs = load_input_catalog(sample_catalog)
    specs = job_specs(inputs, TINY, None, grid)
    plan = plan_designs(inputs, TINY, WEIGHTS.identity, set(), specs)
    assert len(plan.todo) == SAMPLE_PAIRINGS * 4 and len({j.design_id for j in plan.todo}) == SAMPLE_PAIRINGS * 4
    assert {(j.config or TINY).style_weight for j in plan.todo} == {0.01, 0.1}


def test_specs_are_produced_on_demand_and_share_configs(sample_catalog: Path):
    inputs = load_input_catalog(sample_catalog)
    grid = parse_grid(["style_weight=1e-2,1e-1", "seed=0,1"])
    specs = job_specs(inputs, TINY, None, grid)
    assert not isinstance(specs, list)
    first, second = list(specs), list(specs)
    assert len(specs) == len(first) == SAMPLE_PAIRINGS * 4 and first == second  # re-iterable, same order
    assert len({id(s.config) for s in first}) == 4  # one Config per distinct variant, shared
    plain = list(job_specs(inputs, TINY))
    assert len(plain) == SAMPLE_PAIRINGS and all(s.config is TINY for s in plain)


def test_a_grid_value_the_config_refuses_is_refused_before_planning(sample_catalog: Path):
    with pytest.raises(CatalogError, match="size"):
        job_specs(load_input_catalog(sample_catalog), TINY, None, {"size": [8]})


def test_grid_refuses_fields_that_do_not_change_a_design():
    with pytest.raises(ValueError, match="'devices' is not a field that changes a design"):
        parse_grid(["devices=cpu"])
    with pytest.raises(ValueError, match="not NAME=V1,V2"):
        parse_grid(["style_weight"])


def test_pairs_file_with_blend_pattern_and_overrides(sample_catalog: Path, tmp_path: Path):
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "content_id": "tshirt",
                    "style_ids": ["stripes", "waves"],
                    "style_mix": [3.0, 1.0],
                    "color": None,
                    "tile": None,
                },
                {"content_id": None, "style_ids": ["speckle"], "style_mix": None, "color": None, "tile": True},
                {"content_id": "dress", "style_ids": ["waves"], "style_mix": None, "color": "keep", "tile": None},
            ]
        ),
        pairs,
    )
    out = tmp_path / "out"
    plan, rows = make(sample_catalog, out, pairs=str(pairs))
    assert plan.pairings == 3 and all(r["status"] == "ok" for r in rows)
    frame = DesignCatalog(out).to_pandas().set_index("style_id")
    blend = frame.loc["stripes+waves"]
    assert list(blend.style_ids) == ["stripes", "waves"] and list(blend.style_mix) == [0.75, 0.25]
    pattern = frame.loc["speckle"]
    assert (
        pd.isna(pattern.content_id)
        and pattern.params["repeat"] == "block"
        and (pattern.width, pattern.height) == (32, 32)
    )
    assert pattern.seam_score < 1.5
    dress = frame.loc["waves"]
    assert dress.params["color"] == "keep" and dress.mask_leakage < 1 / 255  # the sample garments have masks

    with Image.open(out / dress.output_uri) as png:
        assert png.info["design_id"] == dress.design_id
        assert json.loads(png.info["params"])["color"] == "keep"
        assert round(png.info["dpi"][0]) == 300
    raw = (out / dress.output_uri).read_bytes()
    assert b"sRGB" in raw[: raw.index(b"IDAT")]


def test_pairs_file_faults_are_refused_naming_the_row(sample_catalog: Path, tmp_path: Path):
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([{"content_id": "nosuch", "style_ids": ["stripes"], "bogus": 1}]), pairs)
    with pytest.raises(CatalogError, match="bogus"):
        job_specs(load_input_catalog(sample_catalog), TINY, pairs)
    pq.write_table(pa.Table.from_pylist([{"content_id": "nosuch", "style_ids": ["stripes", "gone"]}]), pairs)
    with pytest.raises(CatalogError, match=r"pairs row 0: content_id 'nosuch'.*\n.*pairs row 0: style_ids \['gone'\]"):
        job_specs(load_input_catalog(sample_catalog), TINY, pairs)


def test_masked_garments_leave_the_background_untouched(sample_catalog: Path, tmp_path: Path):
    out = tmp_path / "out"
    _, rows = make(sample_catalog, out, config=TINY.replace(style_weight=1e6))
    for row in rows:
        assert row["status"] == "ok" and row["mask_leakage"] < 1 / 255


def test_contact_sheet_has_a_cell_per_design(sample_catalog: Path, tmp_path: Path):
    out = tmp_path / "out"
    _, rows = make(sample_catalog, out)
    rows[0] = {**rows[0], "status": "failed", "output_uri": None}
    path = write_contact_sheet(rows, out, out / "runs" / "r" / "contact_sheet.png", "run r", Config().to_dict())
    with Image.open(path) as sheet:
        assert sheet.width == 8 + 6 * (160 + 8)
        assert sheet.height == 28 + 2 * (160 + 8 + 3 * 14) + 8  # 11 designs in rows of 6


def test_repeat_files_are_seamless_laid_out_as_their_repeat(sample_catalog: Path, tmp_path: Path):
    """The written PNGs of a half-drop and a brick repeat, laid out 3x3 as each repeat says, show no seam."""
    import numpy as np
    import torch
    from helpers import fabric_seams

    from pipeline.engine.losses import seam_score
    from pipeline.engine.repeats import fabric

    pairs = tmp_path / "pairs.parquet"
    rows = [
        {"content_id": None, "style_ids": ["speckle"], "repeat": "half-drop", "tile": None},
        {"content_id": None, "style_ids": ["waves"], "repeat": "brick", "tile": None},
        {"content_id": None, "style_ids": ["stripes"], "repeat": None, "tile": True},  # the old flag: block
    ]
    pq.write_table(pa.Table.from_pylist(rows), pairs)
    config = TINY.replace(steps=60, loss_every=10, learning_rate=0.05)
    out = tmp_path / "out"
    _, made = make(sample_catalog, out, pairs=str(pairs), config=config)
    assert sorted(r["params"]["repeat"] for r in made) == ["block", "brick", "half-drop"]
    for row in made:
        repeat = row["params"]["repeat"]
        with Image.open(out / row["output_uri"]) as png:
            tile = torch.from_numpy(np.asarray(png.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        assert row["seam_score"] == pytest.approx(seam_score(tile, repeat), abs=0.05)
        assert row["seam_score"] < 1.2
        assert fabric_seams(fabric(tile, repeat), 32, 32) < 1.2


def test_content_weight_0_is_the_pattern_mode_of_a_null_content_id(sample_catalog: Path, tmp_path: Path):
    """Both spellings make the same designs: from seeded noise, no content, no mask, recorded as such."""
    inputs = load_input_catalog(sample_catalog)
    zero = TINY.replace(content_weight=0.0, repeat="block")
    cross = plan_designs(inputs, zero, WEIGHTS.identity, set(), job_specs(inputs, zero))
    styles = sorted(s.image_id for s in inputs.styles)
    # Every content gives the same pattern: one design per style, the rest counted as duplicates.
    assert sorted(j.style.image_id for j in cross.todo) == styles
    assert cross.duplicates == SAMPLE_PAIRINGS - len(styles)
    assert all(j.content is None and j.mask_sha256 is None for j in cross.todo)
    assert all((j.config.init, j.config.content_weight) == ("noise", 0.0) for j in cross.todo)

    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([{"content_id": None, "style_ids": [s]} for s in styles]), pairs)
    tiled = TINY.replace(repeat="block")  # the run's content weight: unused by a null content_id
    rows_plan = plan_designs(inputs, tiled, WEIGHTS.identity, set(), job_specs(inputs, tiled, str(pairs)))
    assert {j.design_id for j in rows_plan.todo} == {j.design_id for j in cross.todo}

    out = tmp_path / "out"
    design_catalog = DesignCatalog(out)
    rows = run_shard(list(cross.todo)[:1], zero, WEIGHTS, "cpu", design_catalog, "r")
    (row,) = rows
    assert row["status"] == "ok" and row["content_id"] is None
    assert (row["params"]["init"], row["params"]["content_weight"]) == ("noise", 0.0)
    assert (row["width"], row["height"]) == (32, 32)  # a square repeat, not a garment's outline


def test_designs_with_a_content_keep_their_ids_and_init(sample_catalog: Path):
    inputs = load_input_catalog(sample_catalog)
    plan = plan_designs(inputs, TINY, WEIGHTS.identity, set(), job_specs(inputs, TINY))
    assert len(plan.todo) == SAMPLE_PAIRINGS and all(j.content is not None and j.config is None for j in plan.todo)


def test_content_weight_0_with_a_content_colour_is_refused_before_planning(sample_catalog: Path):
    inputs = load_input_catalog(sample_catalog)
    with pytest.raises(CatalogError, match="content_weight=0 is pattern mode .* color='keep' needs a content"):
        job_specs(inputs, TINY.replace(content_weight=0.0, color="keep"))
    with pytest.raises(CatalogError, match=r"--grid \{'content_weight': 0.0\}: content_weight=0 is pattern mode"):
        job_specs(inputs, TINY.replace(color="match"), None, parse_grid(["content_weight=0,1e4"]))
