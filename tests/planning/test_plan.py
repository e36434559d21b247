"""pipeline.planning.plan: design ids, skipping done work, input faults found while planning, shards."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from helpers import catalog_row, exif_jpeg_bytes, make_image_catalog, write_catalog, write_png
from PIL import Image

from pipeline.catalog.inputs import load_input_catalog
from pipeline.config import Config
from pipeline.files import sha256_file
from pipeline.planning.plan import Job, cut_shards, design_id, pairing_key, plan_designs

CFG = Config(size=32, steps=1, weights="random")
WEIGHTS = "random:0"
CONTENTS = {"c1": (32, 24), "c2": (24, 32)}
STYLES = {"s1": (20, 20), "s2": (18, 22)}


@pytest.fixture
def folder(tmp_path) -> Path:
    make_image_catalog(tmp_path / "cat", CONTENTS, STYLES)
    return tmp_path / "cat"


def _plan(
    folder: Path, config: Config = CFG, weights: str = WEIGHTS, done: set[str] | None = None, name="catalog.parquet"
):
    catalog = load_input_catalog(folder / name, allow_roots=config.allow_roots)
    return plan_designs(catalog, config, weights, done or set())


def _ids(plan) -> dict[tuple[str, str], str]:
    return {(j.content.image_id, j.style.image_id): j.design_id for j in plan.todo + plan.failed}


def test_plan_lists_every_pairing(folder):
    plan = _plan(folder)
    assert plan.pairings == 4 and plan.already_done == 0 and plan.failed == ()
    assert len(plan.todo) == 4
    for job in plan.todo:
        assert job.error is None
        assert len(job.design_id) == 32 and job.design_id.isalnum()
        assert job.content_sha256 == sha256_file(folder / f"{job.content.image_id}.png")
        assert job.style_sha256 == sha256_file(folder / f"{job.style.image_id}.png")
        assert job.mask_sha256 is None
        assert (job.width, job.height) == {"c1": (32, 24), "c2": (24, 32)}[job.content.image_id]
    assert len({j.design_id for j in plan.todo}) == 4


def test_todo_is_sorted_by_size_then_design_id(folder):
    """Batches need one size; design id order within it keeps a shard's commit to few catalog files."""
    order = [(j.height, j.width, j.design_id) for j in _plan(folder).todo]
    assert order == sorted(order)
    assert order[0][:2] == (24, 32)


def test_ids_are_stable_across_calls_and_locations(folder, tmp_path):
    first = _ids(_plan(folder))
    assert _ids(_plan(folder)) == first
    # ids depend on bytes, not on where the files are
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    assert _ids(_plan(moved)) == first


def test_ids_match_design_id_of_the_hashes(folder):
    job = next(j for j in _plan(folder).todo if (j.content.image_id, j.style.image_id) == ("c1", "s2"))
    assert job.design_id == design_id(
        sha256_file(folder / "c1.png"), sha256_file(folder / "s2.png"), None, CFG, WEIGHTS
    )


def test_ids_change_with_content_bytes(folder):
    before = _ids(_plan(folder))
    write_png(folder / "c1.png", 32, 24, seed=999)
    after = _ids(_plan(folder))
    for key in before:
        if key[0] == "c1":
            assert after[key] != before[key]
        else:
            assert after[key] == before[key]


def test_ids_change_with_style_bytes(folder):
    before = _ids(_plan(folder))
    write_png(folder / "s2.png", 18, 22, seed=998)
    after = _ids(_plan(folder))
    assert {k for k in before if after[k] != before[k]} == {("c1", "s2"), ("c2", "s2")}


def test_ids_change_with_mask_bytes(folder):
    no_mask = _ids(_plan(folder))
    write_png(folder / "m1.png", 32, 24, seed=5)
    rows = [
        catalog_row("c1", "content", mask_uri="m1.png"),
        catalog_row("c2", "content"),
        catalog_row("s1", "style"),
        catalog_row("s2", "style"),
    ]
    write_catalog(folder / "masked.parquet", rows)
    with_mask = _plan(folder, name="masked.parquet")
    job = next(j for j in with_mask.todo if j.content.image_id == "c1")
    assert job.mask_sha256 == sha256_file(folder / "m1.png")
    masked = _ids(with_mask)
    assert masked[("c1", "s1")] != no_mask[("c1", "s1")]
    assert masked[("c2", "s1")] == no_mask[("c2", "s1")]
    write_png(folder / "m1.png", 32, 24, seed=6)
    remasked = _ids(_plan(folder, name="masked.parquet"))
    assert remasked[("c1", "s1")] != masked[("c1", "s1")] and remasked[("c1", "s2")] != masked[("c1", "s2")]
    assert remasked[("c2", "s2")] == masked[("c2", "s2")]


@pytest.mark.parametrize(
    "changes",
    [
        {"style_weight": 2e-2},
        {"size": 48},
        {"steps": 2},
        {"optimizer": "lbfgs"},
        {"init": "noise"},
        {"seed": 1},
        {"style_layers": ("conv1_1", "conv2_1")},
    ],
)
def test_ids_change_with_identity_config_fields(folder, changes):
    before, after = _ids(_plan(folder)), _ids(_plan(folder, CFG.replace(**changes)))
    assert before.keys() == after.keys()
    assert all(after[k] != before[k] for k in before)


def test_ids_change_with_weights_identity(folder):
    before, after = _ids(_plan(folder)), _ids(_plan(folder, weights="sha256:" + "ab" * 32))
    assert all(after[k] != before[k] for k in before)


@pytest.mark.parametrize(
    "changes",
    [
        {"devices": "cpu"},
        {"devices": "cuda:0,cuda:1"},
        {"batch_size": 7},
        {"loss_every": 3},
        {"shard_size": 2},
        {"weights": "auto"},
        {"max_image_pixels": 10_000},
        {"allow_roots": ("/tmp",)},
    ],
)
def test_ids_do_not_change_with_run_only_fields(folder, changes):
    assert _ids(_plan(folder, CFG.replace(**changes))) == _ids(_plan(folder))


def _keys(plan) -> dict[tuple[str, str], str]:
    return {(j.content.image_id, j.style.image_id): j.pairing_key for j in plan.todo + plan.failed}


def test_pairing_key_follows_image_ids_not_bytes(folder):
    plan = _plan(folder)
    keys = _keys(plan)
    assert len(set(keys.values())) == 4
    assert keys[("c1", "s1")] == pairing_key("c1", "s1", CFG, WEIGHTS)
    ids = _ids(plan)
    write_png(folder / "c1.png", 32, 24, seed=999)
    (folder / "s2.png").unlink()
    changed = _plan(folder)
    assert _keys(changed) == keys  # same pairings, new bytes or a missing file
    assert _ids(changed)[("c1", "s1")] != ids[("c1", "s1")]
    assert {(j.content.image_id, j.style.image_id) for j in changed.failed} == {("c1", "s2"), ("c2", "s2")}
    assert _keys(_plan(folder, CFG.replace(devices="cpu", batch_size=3))) == keys
    assert all(v != keys[k] for k, v in _keys(_plan(folder, CFG.replace(style_weight=1.0))).items())
    assert all(v != keys[k] for k, v in _keys(_plan(folder, weights="random:1")).items())


def test_design_ids_in_a_plan_are_unique_when_inputs_share_bytes(folder):
    shutil.copy(folder / "c1.png", folder / "c1_copy.png")
    rows = [
        catalog_row("c1", "content"),
        catalog_row("c1_copy", "content", uri="c1_copy.png"),
        catalog_row("s1", "style"),
    ]
    write_catalog(folder / "dup.parquet", rows)
    plan = _plan(folder, name="dup.parquet")
    ids = [j.design_id for j in plan.todo + plan.failed]
    assert len(ids) == len(set(ids))


def test_done_ids_are_skipped_and_counted(folder):
    ids = _ids(_plan(folder))
    done = {ids[("c1", "s1")], ids[("c2", "s2")], "0" * 32}
    plan = _plan(folder, done=done)
    assert plan.already_done == 2
    assert plan.pairings == 4
    assert {(j.content.image_id, j.style.image_id) for j in plan.todo} == {("c1", "s2"), ("c2", "s1")}
    all_done = _plan(folder, done=set(ids.values()))
    assert (all_done.todo, all_done.failed, all_done.already_done) == ((), (), 4)


def test_missing_style_file_fails_only_its_pairings(folder):
    ok_ids = _ids(_plan(folder))
    (folder / "s2.png").unlink()
    plan = _plan(folder)
    assert {(j.content.image_id, j.style.image_id) for j in plan.todo} == {("c1", "s1"), ("c2", "s1")}
    assert {(j.content.image_id, j.style.image_id) for j in plan.failed} == {("c1", "s2"), ("c2", "s2")}
    for job in plan.failed:
        assert "style image 's2'" in job.error
        assert "not found" in job.error
        assert "content image" not in job.error
        assert job.style_sha256 is None and job.content_sha256 is not None
        assert (job.width, job.height) == (0, 0)
    # failed jobs get stable ids, different from the ids the pairing has with the file present
    again = _ids(_plan(folder))
    assert {k: again[k] for k in again if k[1] == "s2"} == {k: v for k, v in _ids(plan).items() if k[1] == "s2"}
    assert again[("c1", "s2")] != ok_ids[("c1", "s2")]
    assert again[("c1", "s1")] == ok_ids[("c1", "s1")]


def test_unreadable_content_fails_its_pairings(folder):
    (folder / "c2.png").write_bytes(b"not an image")
    plan = _plan(folder)
    assert len(plan.todo) == 2 and len(plan.failed) == 2
    for job in plan.failed:
        assert job.content.image_id == "c2"
        assert "content image 'c2'" in job.error and "not an image file" in job.error
        assert job.content_sha256 == hashlib.sha256(b"not an image").hexdigest()


def test_image_declaring_too_many_pixels_fails_at_plan(tmp_path):
    folder = tmp_path / "cat"
    make_image_catalog(folder, {"c_small": (20, 16), "c_big": (40, 40)}, {"s1": (16, 16)})
    plan = _plan(folder, CFG.replace(max_image_pixels=1000))
    assert [j.content.image_id for j in plan.todo] == ["c_small"]
    (failed,) = plan.failed
    assert failed.content.image_id == "c_big"
    assert "content image 'c_big'" in failed.error
    assert "1600 pixels" in failed.error and "max_image_pixels" in failed.error
    # the same inputs with a higher limit plan fine
    assert len(_plan(folder, CFG.replace(max_image_pixels=1600)).todo) == 2


def test_too_narrow_content_fails_at_plan(tmp_path):
    folder = tmp_path / "cat"
    make_image_catalog(folder, {"c_wide": (100, 10), "c_ok": (20, 20)}, {"s1": (16, 16)})
    plan = _plan(folder)
    (failed,) = plan.failed
    assert failed.content.image_id == "c_wide"
    assert "32x3" in failed.error and "raise --size" in failed.error


def test_image_level_catalog_error_fails_its_pairings(tmp_path):
    folder = tmp_path / "cat"
    make_image_catalog(
        folder, {"c1": (20, 20)}, {"s1": (16, 16)}, extra_rows=[catalog_row("c_out", "content", uri="../outside.png")]
    )
    write_png(tmp_path / "outside.png")
    plan = _plan(folder)
    (failed,) = plan.failed
    assert failed.content.image_id == "c_out"
    assert "outside the allowed roots" in failed.error
    assert failed.content_sha256 is None


def test_exif_rotation_swaps_planned_size(tmp_path):
    folder = tmp_path / "cat"
    make_image_catalog(folder, {}, {"s1": (16, 16)})
    (folder / "rot.jpg").write_bytes(exif_jpeg_bytes(Image.new("RGB", (40, 20), (200, 10, 10)), 6))
    write_catalog(
        folder / "catalog.parquet", [catalog_row("rot", "content", uri="rot.jpg"), catalog_row("s1", "style")]
    )
    (job,) = _plan(folder).todo
    assert (job.width, job.height) == (16, 32)


def _jobs(n: int) -> list[Job]:
    from pipeline.catalog.inputs import ImageRef

    ref = ImageRef("x", "content", "x.png", None)
    return [
        Job(
            design_id=f"{i:032d}",
            pairing_key=f"{i:032x}",
            content=ref,
            style=ref,
            content_sha256=None,
            style_sha256=None,
            mask_sha256=None,
            width=16,
            height=16,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "n, size, expected",
    [(7, 3, [3, 3, 1]), (6, 3, [3, 3]), (7, 7, [7]), (7, 100, [7]), (0, 4, []), (5, 1, [1, 1, 1, 1, 1])],
)
def test_cut_shards_sizes(n, size, expected):
    jobs = _jobs(n)
    shards = cut_shards(jobs, size)
    assert [len(s) for s in shards] == expected
    assert [j for s in shards for j in s] == jobs  # order kept, nothing lost
    assert cut_shards(tuple(jobs), size) == shards


def test_cut_shards_refuses_zero():
    with pytest.raises(ValueError, match="shard_size=0"):
        cut_shards(_jobs(3), 0)


# --- at catalog scale ---


def _count_reads(monkeypatch) -> list[Path]:
    """Every file planning reads, by path (read_image_bytes is what inspect_file reads with)."""
    import pipeline.planning.plan

    reads: list[Path] = []
    real = pipeline.planning.plan.read_image_bytes

    def counting(path, *args, **kwargs):
        reads.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pipeline.planning.plan, "read_image_bytes", counting)
    return reads


def test_a_file_named_by_many_rows_is_read_once(tmp_path, monkeypatch):
    """2,002 image ids over three files (one also a mask): three reads, not one per row."""
    folder = tmp_path / "cat"
    write_png(folder / "garment.png", 32, 24, seed=1)
    write_png(folder / "swatch_a.png", 20, 20, seed=2)
    write_png(folder / "swatch_b.png", 20, 20, seed=3)
    rows = [catalog_row("plain", "content", uri="garment.png")]
    rows.append(catalog_row("masked", "content", uri="./garment.png", mask_uri="garment.png"))
    rows += [catalog_row(f"s{i}", "style", uri=f"swatch_{'ab'[i % 2]}.png") for i in range(2000)]
    catalog = load_input_catalog(write_catalog(folder / "catalog.parquet", rows))
    reads = _count_reads(monkeypatch)

    plan = plan_designs(catalog, CFG, WEIGHTS, set())

    assert sorted(p.name for p in reads) == ["garment.png", "swatch_a.png", "swatch_b.png"]
    assert plan.pairings == 2 * 2000 and plan.failed == ()
    # Same bytes, same design: one unmasked and one masked design per swatch.
    assert len(plan.todo) == 4 and plan.duplicates == plan.pairings - 4
    garment = sha256_file(folder / "garment.png")
    assert {j.content_sha256 for j in plan.todo} == {garment}
    assert {j.mask_sha256 for j in plan.todo} == {None, garment}


def test_a_file_changed_while_planning_is_read_again(tmp_path, monkeypatch):
    """Two plans over a file rewritten between them see its new bytes: what is remembered of a
    file is keyed by its size and mtime as well as its path."""
    folder = tmp_path / "cat"
    make_image_catalog(folder, {"c1": (32, 24)}, {"s1": (20, 20)})
    catalog = load_input_catalog(folder / "catalog.parquet")
    before = plan_designs(catalog, CFG, WEIGHTS, set()).todo[0]
    write_png(folder / "s1.png", 20, 30, seed=5)
    after = plan_designs(catalog, CFG, WEIGHTS, set()).todo[0]
    assert after.style_sha256 == sha256_file(folder / "s1.png") != before.style_sha256


@pytest.mark.parametrize(
    ("grid", "limit", "named"),
    [
        (None, 3, "yields 4 pairings, over max_pairings=3"),
        ({"seed": [0, 1]}, 7, "yields 8 pairings to plan (4 x 2 grid variants), over max_pairings=7"),
    ],
)
def test_a_catalog_over_max_pairings_is_refused_before_any_file_is_read(folder, monkeypatch, grid, limit, named):
    from pipeline.catalog.inputs import CatalogError
    from pipeline.planning.variants import job_specs

    catalog = load_input_catalog(folder / "catalog.parquet")
    reads = _count_reads(monkeypatch)
    config = CFG.replace(max_pairings=limit)
    with pytest.raises(CatalogError) as refused:
        plan_designs(catalog, config, WEIGHTS, set(), job_specs(catalog, config, grid=grid) if grid else None)
    assert named in str(refused.value) and "catalog.parquet" in str(refused.value)
    assert "--max-pairings" in str(refused.value)
    assert reads == []
    at_the_limit = CFG.replace(max_pairings=limit + 1)
    assert (
        len(plan_designs(catalog, at_the_limit, WEIGHTS, set(), job_specs(catalog, at_the_limit, grid=grid)).todo)
        == limit + 1
    )


def test_max_pairings_is_a_positive_run_setting():
    assert Config().max_pairings == 10_000_000 and "max_pairings" not in Config().identity_dict()
    with pytest.raises(ValueError, match="max_pairings.*0.*positive integer"):
        Config(max_pairings=0)
