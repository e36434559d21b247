"""Motif scale and pooling: each changes the design id and the style targets, and the
runner sizes the style as --style-scale says; the targets are cached per scale."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_image_catalog

from pipeline.catalog.inputs import load_input_catalog
from pipeline.config import Config
from pipeline.engine.transfer import StyleTransfer
from pipeline.engine.weights import resolve_weights
from pipeline.execution.shard import _ImageCache, _load_pairing
from pipeline.planning.plan import plan_designs
from pipeline.planning.variants import job_specs, parse_grid

TINY = Config(weights="random", size=64, steps=2, loss_every=1)
WEIGHTS = resolve_weights("random", 0)


def plan(catalog: Path, config: Config, grid=None):
    inputs = load_input_catalog(catalog)
    return plan_designs(inputs, config, WEIGHTS.identity, set(), job_specs(inputs, config, None, grid))


def test_style_scale_and_pooling_change_the_design_id_and_are_recorded(sample_catalog: Path):
    base = {job.design_id for job in plan(sample_catalog, TINY).todo}
    grid = parse_grid(["style_scale=0.5,2", "pooling=max,avg"])
    swept = plan(sample_catalog, TINY, grid).todo
    ids = {job.design_id for job in swept}
    assert len(ids) == len(swept) == 4 * len(base)
    # style_scale 1 and max pooling are the defaults: the designs they make keep their ids
    assert {j.design_id for j in plan(sample_catalog, TINY, parse_grid(["style_scale=1"])).todo} == base
    assert {j.config.style_scale for j in swept} == {0.5, 2.0} and {j.config.pooling for j in swept} == {"max", "avg"}


def test_the_runner_sizes_the_style_by_the_style_scale(sample_catalog: Path):
    for scale, side in ((1.0, 64), (0.5, 32), (2.0, 128)):
        cfg = TINY.replace(style_scale=scale)
        job = next(iter(plan(sample_catalog, cfg).todo))
        pairing = _load_pairing(
            job, cfg, _ImageCache(cfg.max_image_pixels, cfg.max_image_bytes), (job.width, job.height)
        )
        assert max(pairing.style.shape[-2:]) == side
        assert max(pairing.size) == 64  # the output keeps --size


def test_a_style_too_small_at_its_scale_is_refused_naming_the_fix(tmp_path: Path):
    # A wide style: its longest side keeps the 16 px the config asks for, its short side does not.
    catalog = make_image_catalog(tmp_path, {"c": (64, 64)}, {"wide": (64, 24)})
    result = plan(catalog, TINY.replace(size=64, style_scale=0.25))
    assert not result.todo and result.failed
    assert "style_scale 0.25" in result.failed[0].error and "--style-scale" in result.failed[0].error


def test_targets_differ_per_style_scale_and_pooling_and_are_cached_for_each():
    engine = StyleTransfer(TINY, WEIGHTS, "cpu")
    gen = torch.Generator().manual_seed(3)
    style = torch.rand(3, 64, 64, generator=gen)
    small = torch.nn.functional.interpolate(style[None], size=(32, 32), mode="area")[0]
    grams = {
        ("full", "max"): engine.style_targets("s", style, TINY),
        ("half", "max"): engine.style_targets("s", small, TINY.replace(style_scale=0.5)),
        ("full", "avg"): engine.style_targets("s", style, TINY.replace(pooling="avg")),
    }
    assert len(engine.targets.style) == 3  # one entry per scale and pooling
    for a in grams:
        for b in grams:
            if a != b:
                assert not torch.allclose(grams[a]["conv3_1"], grams[b]["conv3_1"])
    # cached: asking again computes nothing new
    assert engine.style_targets("s", small, TINY.replace(style_scale=0.5)) is grams[("half", "max")]
    assert len(engine.targets.style) == 3


@pytest.mark.parametrize("bad", [0.0, -1.0, 5.0, 1e-9, 0.03, float("nan")])  # 0.03: under 16 px at 512
def test_a_style_scale_out_of_range_is_refused(bad: float):
    # The default's coarsest scale (auto: 128 px at 512) bounds it; one scale, the output size.
    with pytest.raises(
        ValueError, match=rf"style_scale={bad!r} is invalid; accepted: a number from 0.125 to 4 at --scales 128,256,512"
    ):
        Config(style_scale=bad)
    with pytest.raises(
        ValueError, match=rf"style_scale={bad!r} is invalid; accepted: a number from 0.03125 to 4 at --size 512"
    ):
        Config(style_scale=bad, scales=())


def test_the_least_style_scale_keeps_16_px_at_the_coarsest_scale():
    assert Config(size=64, style_scale=0.25).style_side == 16
    with pytest.raises(ValueError, match=r"from 0.25 to 4 at --size 64 \(the style's longest side, 64 px"):
        Config(size=64, style_scale=0.2)
    # Coarse-to-fine: the style shrinks with the coarsest scale, which bounds it.
    Config(size=256, scales=(64, 256), style_scale=0.25)
    with pytest.raises(ValueError, match=r"from 0.25 to 4 at --scales 64,256"):
        Config(size=256, scales=(64, 256), style_scale=0.125)
