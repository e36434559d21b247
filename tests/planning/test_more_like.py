"""--more-like's planning (pipeline/planning/more_like.py): the variations of each favourite, tagged,
with their own design ids, the same plan from the same favourites; the favourites read from
OUT/reviews and OUT's designs, and the refusals of an OUT without reviews or favourites."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_image_catalog

from pipeline.catalog.inputs import CatalogError, load_input_catalog
from pipeline.config import Config
from pipeline.planning.more_like import (
    Favourite,
    favourite_rows,
    more_like_specs,
    read_favourites,
    variations,
)
from pipeline.planning.plan import plan_designs
from pipeline.planning.variants import job_specs

RUN = Config(weights="random", size=24, steps=1, loss_every=1, devices="cpu", batch_size=4, shard_size=4)


def favourite(design_id: str, content_id: str | None, style_ids: tuple[str, ...], **params) -> Favourite:
    values = Config(**{"size": 32, "steps": 3, **params}).to_dict()
    return Favourite(design_id, content_id, style_ids, (), values)


@pytest.fixture
def inputs(tmp_path: Path):
    catalog = make_image_catalog(tmp_path / "in", {"c1": (32, 32), "c2": (32, 24)}, {"s1": (32, 32), "s2": (24, 32)})
    return load_input_catalog(catalog)


def test_a_content_start_varies_style_weight_and_motif_scale_but_not_the_seed():
    """A design that starts from its content draws no noise: a new seed would make the same pixels."""
    base = Config(size=512, style_weight=0.01, style_scale=1.0)
    assert variations(base, pattern=False, count=20) == [
        {"style_weight": 0.02},
        {"style_weight": 0.005},
        {"style_scale": 1.5},
        {"style_scale": 0.75},
        {"style_weight": 0.04},
        {"style_weight": 0.0025},
        {"style_scale": 2.0},
        {"style_scale": 0.5},
    ]


def test_a_noise_start_or_a_pattern_also_takes_new_seeds_and_a_repeat_the_other_repeats():
    noise = Config(size=512, init="noise", seed=7, repeat="half-drop")
    assert variations(noise, pattern=False, count=9) == [
        {"style_weight": 0.02},
        {"style_weight": 0.005},
        {"seed": 8},
        {"style_scale": 1.5},
        {"style_scale": 0.75},
        {"repeat": "block"},
        {"repeat": "brick"},
        {"style_weight": 0.04},
        {"style_weight": 0.0025},
    ]
    pattern = variations(Config(size=512), pattern=True, count=30)
    assert [c["seed"] for c in pattern if "seed" in c][:4] == [1, 2, 3, 4]
    assert len(pattern) == 30  # past the rounds, new seeds go on


def test_per_favourite_takes_the_first_n_valid_changes():
    # At 24 px a motif scale of 0.5 would leave the style 12 px, under the 16 VGG's pools need; a
    # style weight of 0 doubled is the favourite itself.
    small = Config(size=24, style_weight=0.0)
    found = variations(small, pattern=False, count=10)
    assert found == [{"style_scale": 1.5}, {"style_scale": 0.75}, {"style_scale": 2.0}]
    assert variations(Config(size=512), pattern=False, count=1) == [{"style_weight": 0.02}]


def test_the_variations_keep_the_favourites_params_are_tagged_and_have_their_own_ids(inputs):
    favourites = [
        favourite("f2", "c2", ("s2",), style_weight=0.1),
        favourite("f1", "c1", ("s1",), steps=5),
        favourite("f3", None, ("s1", "s2"), content_weight=0.0, init="noise", seed=3),  # a pattern of a blend
        favourite("f4", "gone", ("s1",)),  # its content is not in the catalog
    ]
    config = RUN.replace(per_favourite=3)
    planned = more_like_specs(inputs, config, favourites)
    assert (planned.favourites, planned.varied, planned.variations) == (4, 3, 9)
    assert planned.not_in_catalog == ("f4",)
    assert "1 favourite(s) skipped, their inputs are not in the catalog: f4" in "\n".join(planned.lines())
    # Made with weights other than the run's: said, as their variations are made with the run's.
    assert "3 favourite(s) were made with other weights than this run's (sha256:x)" in "\n".join(
        planned.lines("sha256:x")
    )
    assert not any("other weights" in line for line in planned.lines("auto"))  # the favourites' own
    specs = list(planned.specs)
    assert [s.more_like for s in specs] == ["f1"] * 3 + ["f2"] * 3 + ["f3"] * 3  # favourites in id order
    first = specs[0]
    assert (first.content.image_id, [s.image_id for s in first.styles]) == ("c1", ["s1"])
    # The favourite's design params, not the run's: its size and steps; one field changed.
    assert (first.config.size, first.config.steps, first.config.style_weight) == (32, 5, 0.02)
    # How it runs is the run's.
    assert (first.config.weights, first.config.devices, first.config.batch_size) == ("random", "cpu", 4)
    pattern = [s for s in specs if s.more_like == "f3"]
    assert all(s.content is None and len(s.styles) == 2 for s in pattern)
    assert [s.config.seed for s in pattern] == [3, 3, 4]  # style weight x2, x0.5, then a new seed

    plan = plan_designs(inputs, config, "random-identity", set(), planned.specs)
    ids = [j.design_id for j in plan.todo]
    assert len(ids) == len(set(ids)) == 9 and not plan.failed
    assert {j.more_like for j in plan.todo} == {"f1", "f2", "f3"}
    # None is the favourite itself: f1's own params, planned as a plain pairs row, get another id.
    own = job_specs(inputs, config.replace(size=32, steps=5))
    itself = [j.design_id for j in plan_designs(inputs, config, "random-identity", set(), own).todo]
    assert not set(itself) & set(ids)

    again = more_like_specs(inputs, config, list(reversed(favourites)))  # the same favourites, another order
    assert [(s.more_like, s.config) for s in again.specs] == [(s.more_like, s.config) for s in specs]
    rerun = plan_designs(inputs, config, "random-identity", set(ids), again.specs)
    assert rerun.todo == () and rerun.already_done == 9  # a rerun skips what was made


def test_no_favourite_that_can_be_varied_is_refused(inputs):
    with pytest.raises(CatalogError, match="none of the 1 favourite design.s. can be varied: the inputs of 1"):
        more_like_specs(inputs, RUN, [favourite("f1", "c9", ("s1",))])


# --- favourites read from OUT: reviews and designs -----------------------------------------


def made_catalog(tmp_path: Path) -> tuple[Path, list[str]]:
    """OUT with the four designs of a 2 x 2 catalog (random weights, 24 px, one step)."""
    import torch

    from pipeline.engine.weights import resolve_weights
    from pipeline.execution.run import Run

    catalog = make_image_catalog(tmp_path / "in", {"c1": (32, 32), "c2": (32, 24)}, {"s1": (32, 32), "s2": (24, 32)})
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Run(catalog, out, RUN, run_id="20260101T000000Z-base").run_local(
            load_input_catalog(catalog), resolve_weights("random", 0), "cpu"
        )
    finally:
        torch.set_num_threads(threads)
    from pipeline.catalog.designs import DesignCatalog

    return out, sorted(DesignCatalog(out).done_ids())


def verdict(out: Path, design_id: str, kind: str, reviewer: str = "ana", n: int = 0) -> None:
    from pipeline.catalog.reviews import Verdict, append_verdict

    key = f"{abs(hash((design_id, kind, reviewer, n))):032x}"[-32:]
    append_verdict(out, Verdict(key, design_id, kind, reviewer, "session1"))


def test_favourites_are_read_from_the_reviews_and_the_designs(tmp_path: Path):
    out, ids = made_catalog(tmp_path)
    with pytest.raises(CatalogError, match="no reviews at .*reviews; review its designs first"):
        read_favourites(out)
    verdict(out, ids[0], "reject")
    with pytest.raises(CatalogError, match="no favourites in"):
        read_favourites(out)
    verdict(out, ids[1], "favourite")
    verdict(out, ids[2], "favourite", reviewer="bo")
    verdict(out, ids[2], "clear", reviewer="bo", n=1)  # withdrawn
    verdict(out, ids[3], "favourite")
    verdict(out, "0" * 32, "favourite")  # not a design of OUT
    found = read_favourites(out)
    assert [f.design_id for f in found.rows] == [ids[1], ids[3]]
    assert found.not_designs == ("0" * 32,) and found.count == 3
    row = found.rows[0]
    assert row.params["size"] == 24 and row.params["weights"] != "random"  # as recorded: the weights' identity
    assert row.content_id in ("c1", "c2") and row.style_ids[0] in ("s1", "s2")
    # The ids are bound as a parameter: a quote in one is a value, not SQL.
    assert favourite_rows(out, ["x' or '1'='1"]) == []
