"""The "auto" learning rate, TV weight and scales (pipeline/config.py): the engine runs the numbers they
resolve to at the design's size and steps, rows record those numbers, and the design id is the
one the same numbers given explicitly have."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import square_jobs

from pipeline.catalog.designs import DesignCatalog
from pipeline.config import Config, auto_learning_rate, auto_tv_weight
from pipeline.engine.transfer import Pairing, StyleTransfer
from pipeline.engine.weights import resolve_weights
from pipeline.execution.shard import run_shard

WEIGHTS = resolve_weights("random", 0)
GEN = torch.Generator().manual_seed(7)
CONTENT, STYLE = torch.rand(3, 32, 32, generator=GEN), torch.rand(3, 32, 32, generator=GEN)


def _design(config: Config) -> torch.Tensor:
    engine = StyleTransfer(config, WEIGHTS, "cpu", precision="fp32")
    (result,) = engine.run([Pairing("p", "c", CONTENT, "s", STYLE)])
    assert result.error is None
    return result.image


def test_the_engine_runs_what_auto_resolves_to_at_the_designs_size_and_steps():
    auto = Config(size=32, steps=4, weights="random", loss_every=2)
    explicit = auto.replace(learning_rate=auto_learning_rate(4), tv_weight=auto_tv_weight(32))
    papers = auto.replace(learning_rate=0.02, tv_weight=30.0)
    assert (explicit.learning_rate, explicit.tv_weight) != (0.02, 30.0)
    image = _design(auto)
    torch.testing.assert_close(image, _design(explicit), rtol=0, atol=0)
    assert not torch.equal(image, _design(papers))


def test_rows_record_the_resolved_numbers_and_the_explicit_designs_id(sample_catalog: Path, tmp_path: Path):
    auto = Config(weights="random", size=32, steps=2, loss_every=1)
    explicit = auto.replace(learning_rate=auto_learning_rate(2), tv_weight=auto_tv_weight(32))
    (job,) = square_jobs(sample_catalog, auto, 1, WEIGHTS.identity)
    (same,) = square_jobs(sample_catalog, explicit, 1, WEIGHTS.identity)
    assert job.design_id == same.design_id
    (row,) = run_shard([job], auto, WEIGHTS, "cpu", DesignCatalog(tmp_path / "out"), "r")
    assert row["status"] == "ok"
    assert row["params"]["learning_rate"] == auto_learning_rate(2)
    assert row["params"]["tv_weight"] == auto_tv_weight(32)


def test_auto_scales_run_coarse_to_fine_as_the_explicit_ladder():
    """At 128 px and 50 steps "auto" is the ladder 64, 128 px with 30 and 20 steps: the engine runs
    it (the progress climbs the scales) and makes the design the explicit ladder makes."""
    content = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(3))
    auto = Config(size=128, steps=50, weights="random", loss_every=10)
    assert (auto.resolved().scales, auto.resolved().scale_steps) == ((64, 128), (30, 20))
    engine = StyleTransfer(auto, WEIGHTS, "cpu", precision="fp32")
    seen: list[int] = []
    (result,) = engine.run([Pairing("p", "c", content, "s", STYLE)], on_progress=lambda p: seen.append(p.step))
    assert seen == [0, 10, 20, 30, 40] and result.curve_steps == [0, 10, 20, 30, 40, 50]  # then the final image
    explicit = auto.replace(scales=(64, 128), scale_steps=(30, 20))
    (same,) = engine.run([Pairing("p", "c", content, "s", STYLE)], config=explicit)
    torch.testing.assert_close(result.image, same.image, rtol=0, atol=0)
    (single,) = engine.run([Pairing("p", "c", content, "s", STYLE)], config=auto.replace(scales=()))
    assert not torch.equal(result.image, single.image)
