"""pipeline.config: defaults, validation messages, from_dict coercion, identity fields."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from pipeline.config import Config, coerce, config_field
from pipeline.engine.vgg import LAYER_INDEX


def test_defaults_are_the_papers_run():
    cfg = Config().resolved()
    assert cfg.optimizer == "adam"
    assert cfg.learning_rate == 0.02
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps) == (0.99, 0.999, 0.1)
    assert cfg.style_weight == 1e-2
    assert cfg.content_weight == 1e4
    assert cfg.tv_weight == 30
    assert cfg.steps == 1000
    assert cfg.size == 512
    assert cfg.content_layers == ("conv5_2",)
    assert cfg.style_layers == ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
    assert cfg.content_layer_weights == () and cfg.style_layer_weights == ()
    assert cfg.init == "content"
    assert cfg.weights == "auto"


@pytest.mark.parametrize(
    "changes, field, bad, accepted",
    [
        ({"size": 0}, "size", "0", ">= 16"),
        ({"size": 15}, "size", "15", ">= 16"),
        ({"steps": 0}, "steps", "0", ">= 1"),
        ({"loss_every": 0}, "loss_every", "0", ">= 1"),
        ({"optimizer": "sgd"}, "optimizer", "'sgd'", "adam or lbfgs"),
        ({"init": "zeros"}, "init", "'zeros'", "content or noise"),
        ({"learning_rate": 0.0}, "learning_rate", "0.0", "> 0"),
        ({"adam_eps": -1.0}, "adam_eps", "-1.0", "> 0"),
        ({"style_weight": -1.0}, "style_weight", "-1.0", ">= 0"),
        ({"style_layers": ("conv9_9",)}, "style_layers", "'conv9_9'", "conv1_1"),
        ({"content_layers": ("conv1_1", "conv9_9")}, "content_layers", "'conv9_9'", "conv5_4"),
        ({"content_layers": ()}, "content_layers", "()", "one or more of conv1_1"),
        ({"style_layer_weights": (1.0, 2.0)}, "style_layer_weights", "(1.0, 2.0)", "empty or 5 numbers"),
        ({"content_layer_weights": (1.0, 2.0)}, "content_layer_weights", "(1.0, 2.0)", "empty or 1 numbers"),
        ({"batch_size": -1}, "batch_size", "-1", "positive integer"),
        ({"shard_size": -2}, "shard_size", "-2", "positive integer"),
        ({"max_image_pixels": 0}, "max_image_pixels", "0", "positive integer"),
    ],
)
def test_invalid_values_name_field_value_and_accepted(changes, field, bad, accepted):
    with pytest.raises(ValueError) as info:
        Config(**changes)
    message = str(info.value)
    assert f"{field}={bad}" in message
    assert "accepted:" in message
    assert accepted in message.split("accepted:", 1)[1]


def test_unknown_layer_message_lists_valid_layers():
    with pytest.raises(ValueError) as info:
        Config(style_layers=("conv9_9",))
    accepted = str(info.value).split("accepted:", 1)[1]
    for name in LAYER_INDEX:
        assert name in accepted


def test_layer_weights_of_matching_length_are_accepted():
    cfg = Config(
        style_layer_weights=(1, 2, 3, 4, 5), content_layers=("conv4_2", "conv5_2"), content_layer_weights=(0.5, 0.5)
    )
    assert cfg.style_layer_weights == (1, 2, 3, 4, 5)
    assert cfg.content_layer_weights == (0.5, 0.5)


def test_replace_validates():
    cfg = Config(size=32)
    assert cfg.replace(steps=3).steps == 3
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        cfg.replace(optimizer="sgd")


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError) as info:
        Config.from_dict({"size": 32, "colour": "red", "stepz": 3})
    message = str(info.value)
    assert "['colour', 'stepz']" in message
    assert "size" in message.split("accepted:", 1)[1]


def test_from_dict_coerces_strings_and_lists():
    cfg = Config.from_dict(
        {
            "size": "64",
            "steps": 10.0,
            "learning_rate": "0.5",
            "style_weight": 3,
            "style_layers": "conv1_1, conv2_1,",
            "style_layer_weights": ["1", 2],
            "content_layers": ["conv4_2"],
            "allow_roots": "/a,/b",
        }
    )
    assert cfg.size == 64 and isinstance(cfg.size, int)
    assert cfg.steps == 10 and isinstance(cfg.steps, int)
    assert cfg.learning_rate == 0.5
    assert cfg.style_weight == 3.0 and isinstance(cfg.style_weight, float)
    assert cfg.style_layers == ("conv1_1", "conv2_1")
    assert cfg.style_layer_weights == (1.0, 2.0)
    assert cfg.content_layers == ("conv4_2",)
    assert cfg.allow_roots == ("/a", "/b")


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"size": "big"}, "size='big'"),
        ({"style_layer_weights": "1,x"}, "style_layer_weights="),
        ({"learning_rate": "fast"}, "learning_rate='fast'"),
    ],
)
def test_from_dict_rejects_uncoercible_values(values, fragment):
    with pytest.raises(ValueError) as info:
        Config.from_dict(values)
    assert fragment in str(info.value)
    assert "accepted:" in str(info.value)


def test_coerce_integral_float_for_int_field():
    value = coerce(config_field("steps"), 2.0)
    assert value == 2 and isinstance(value, int)


def test_coerce_non_integral_float_for_int_field_is_refused():
    with pytest.raises(ValueError, match="steps=2.5"):
        Config.from_dict({"steps": 2.5})


def test_to_dict_round_trips_through_from_dict():
    cfg = Config(
        size=48, steps=7, style_layers=("conv1_1", "conv3_1"), style_layer_weights=(0.25, 4.0), allow_roots=("/x",)
    )
    data = cfg.to_dict()
    assert data["style_layers"] == ["conv1_1", "conv3_1"]
    json.dumps(data)  # JSON-able
    assert Config.from_dict(json.loads(json.dumps(data))) == cfg


def test_identity_dict_excludes_run_only_fields():
    cfg = Config()
    identity = cfg.identity_dict()
    run_only = {
        "weights",
        "devices",
        "batch_size",
        "loss_every",
        "shard_size",
        "allow_roots",
        "max_image_pixels",
        "max_image_bytes",
        "max_catalog_images",
        "max_pairings",
        "per_favourite",  # how many variations --more-like plans, not what one looks like
        "maintain_after_files",
        "maintain_small_file_bytes",
        "maintain_retention_hours",
        "nonfinite_retry_factor",
        "dpi",
        "runner",
        "dask_address",
        "precision",
        "memory_format",  # the same design up to rounding, like precision
        "overlap",
        "preprocessing",  # the resolved value enters the design id with the weights' identity
        "network",  # likewise, and only when it is not vgg19 (VGG19 designs keep their ids)
    }
    for name in run_only:
        assert name not in identity
    for name in (
        "size",
        "steps",
        "optimizer",
        "learning_rate",
        "style_weight",
        "content_weight",
        "tv_weight",
        "content_layers",
        "style_layers",
        "init",
        "seed",
    ):
        assert name in identity
    all_fields = {f.name for f in dataclasses.fields(Config)}
    # Fields added later are left out at their defaults, and repeat none/block is the old tile flag.
    added = {"repeat", "style_scale", "pooling", "format"}
    assert set(identity) == (all_fields - run_only - added) | {"tile"}
    changed = cfg.replace(repeat="brick", style_scale=0.5, pooling="avg", format="tiff16").identity_dict()
    assert set(changed) == all_fields - run_only


def test_designs_made_before_the_repeat_and_motif_fields_keep_their_ids():
    # The identity hashes of these configs before repeat, style_scale, pooling and format existed.
    def digest(cfg: Config) -> str:
        return hashlib.sha256(cfg.identity_json().encode()).hexdigest()

    # Made before auto scales: one scale, now given explicitly (scales=(): --scales none).
    assert digest(Config(scales=())) == "1d8b290e3130443aa280b33c98b1aaca9407053f3942e8d76d2867460dc1d9ac"
    assert digest(Config(repeat="block", scales=())) == (
        "778b04302fd082a72befeedbbd838bcf6666920b5fd1490aecd1a1a9067f465c"
    )
    # Made before the auto learning rate and TV weight: the paper's numbers, now given explicitly.
    old_defaults = {"learning_rate": 0.02, "tv_weight": 30.0}
    assert digest(Config(size=32, steps=5, repeat="block", **old_defaults)) == (
        "bfaf17dd8da8190bd0b699e1d97176b1c2b4a465ddaead32a6248ee44c1342ea"
    )
    assert digest(Config(repeat="half-drop")) != digest(Config(repeat="block"))


def test_identity_json_changes_only_with_identity_fields():
    base = Config()
    assert base.identity_json() == Config().identity_json()
    assert (
        base.replace(devices="cpu", batch_size=4, loss_every=3, weights="random").identity_json()
        == base.identity_json()
    )
    assert base.replace(style_weight=2e-2).identity_json() != base.identity_json()
    assert json.loads(base.identity_json())["style_layers"] == list(base.style_layers)


def test_a_style_scale_too_small_is_refused_by_designs_generate_in_one_line(tmp_path, capsys):
    from flows.cli import EXIT_REFUSED, main

    out = tmp_path / "out"
    catalog = Path(__file__).parents[1] / "data" / "sample" / "catalog.parquet"
    args = ["generate", str(catalog), "--out", str(out), "--weights", "random"]
    try:
        code = main([*args, "--style-scale", "1e-9"])
    except SystemExit as stop:  # argparse's own refusal
        code = stop.code
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED
    # The default's coarsest scale (auto: 128 px at --size 512) must keep the network's 16 px.
    assert "style_scale=1e-09 is invalid; accepted: a number from 0.125 to 4 at --scales 128,256,512" in err
    assert "Traceback" not in err and not out.exists()


def test_auto_learning_rate_and_tv_weight_are_the_papers_exactly_at_512_px_and_1000_steps():
    cfg = Config(size=512, steps=1000)
    assert (cfg.learning_rate, cfg.tv_weight) == (None, None)  # "auto"
    resolved = cfg.resolved()
    assert resolved.learning_rate == 0.02 and resolved.tv_weight == 30.0
    # The paper's design keeps the id it had when these were plain numbers.
    assert cfg.identity_json() == Config(learning_rate=0.02, tv_weight=30.0).identity_json()
    assert json.loads(cfg.identity_json())["tv_weight"] == 30.0


@pytest.mark.parametrize(
    "size, steps, learning_rate, tv_weight",
    [
        (256, 1000, 0.02, 60.0),
        (128, 1000, 0.02, 120.0),
        (1024, 1000, 0.02, 15.0),
        (512, 500, 0.02 * 2**0.5, 30.0),
        (256, 300, 0.02 * (1000 / 300) ** 0.5, 60.0),
        (512, 100, 0.02 * 10**0.5, 30.0),
        (512, 20, 0.1, 30.0),  # at most MAX_AUTO_LEARNING_RATE
        (512, 2000, 0.02 / 2**0.5, 30.0),
    ],
)
def test_auto_learning_rate_follows_the_steps_and_tv_weight_the_size(size, steps, learning_rate, tv_weight):
    resolved = Config(size=size, steps=steps).resolved()
    assert resolved.learning_rate == pytest.approx(learning_rate)
    assert resolved.tv_weight == pytest.approx(tv_weight)
    # What "auto" resolves to is what the design id hashes: the same numbers given explicitly make the same design.
    explicit = Config(size=size, steps=steps, learning_rate=resolved.learning_rate, tv_weight=resolved.tv_weight)
    assert Config(size=size, steps=steps).identity_json() == explicit.identity_json()


def test_explicit_learning_rate_and_tv_weight_win_over_auto():
    cfg = Config(size=256, steps=300, learning_rate=0.02, tv_weight=30.0, scales=())
    assert cfg.resolved() is cfg
    assert (cfg.resolved().learning_rate, cfg.resolved().tv_weight) == (0.02, 30.0)
    assert cfg.identity_json() != Config(size=256, steps=300).identity_json()
    # A variant that changes the size re-resolves "auto", not the base's numbers.
    assert Config(size=512).replace(size=256).resolved().tv_weight == Config(size=256).resolved().tv_weight


def test_auto_is_accepted_as_a_value_and_kept_through_to_dict():
    assert coerce(config_field("tv_weight"), "auto") is None
    assert coerce(config_field("learning_rate"), "AUTO") is None
    assert coerce(config_field("tv_weight"), "12") == 12.0
    cfg = Config.from_dict({"size": 256, "tv_weight": "auto", "learning_rate": None})
    assert cfg.to_dict()["tv_weight"] is None  # the run's config keeps "auto"; params record the numbers
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="tv_weight=-1.0 is invalid; accepted: a number >= 0 or auto"):
        Config(tv_weight=-1.0)
    with pytest.raises(ValueError, match="style_weight"):
        coerce(config_field("style_weight"), "auto")


@pytest.mark.parametrize(
    "size, steps, scales, scale_steps",
    [
        (512, 1000, (128, 256, 512), (400, 200, 400)),
        (256, 1000, (64, 128, 256), (400, 200, 400)),
        (256, 300, (64, 128, 256), (120, 60, 120)),
        (300, 77, (75, 150, 300), (31, 15, 31)),
        (128, 300, (64, 128), (180, 120)),
        (200, 1000, (100, 200), (600, 400)),
        (127, 1000, (), ()),  # below two of the coarsest 64 px: one scale
        (512, 49, (), ()),  # too few steps to spread: one scale
    ],
)
def test_auto_scales_spread_the_steps_coarse_to_fine(size, steps, scales, scale_steps):
    resolved = Config(size=size, steps=steps).resolved()
    assert (resolved.scales, resolved.scale_steps) == (scales, scale_steps)
    assert sum(resolved.scale_steps or (steps,)) == steps  # --steps is still the design's step count
    explicit = Config(size=size, steps=steps, scales=scales, scale_steps=scale_steps)
    assert Config(size=size, steps=steps).identity_json() == explicit.identity_json()


def test_scales_none_is_the_papers_single_scale_and_keeps_old_ids():
    assert coerce(config_field("scales"), "none") == ()
    assert coerce(config_field("scales"), "auto") is None
    assert coerce(config_field("scales"), "64,128") == (64, 128)
    single = Config.from_dict({"scales": "none"})
    assert single.resolved().scales == () and single.resolved().scale_steps == ()
    # The default design of the releases before auto scales, now asked for with --scales none.
    digest = hashlib.sha256(single.identity_json().encode()).hexdigest()
    assert digest == "1d8b290e3130443aa280b33c98b1aaca9407053f3942e8d76d2867460dc1d9ac"
    assert Config().identity_json() != single.identity_json()  # the coarse-to-fine default is another design


def test_scale_steps_need_explicit_scales():
    with pytest.raises(ValueError, match=r"scale_steps=\(1, 2, 3\) is invalid; accepted: empty with scales auto"):
        Config(scale_steps=(1, 2, 3))
    assert Config(scales=(256, 512), scale_steps=(10, 5)).resolved().scale_steps == (10, 5)
    with pytest.raises(ValueError, match=r"scale_steps=\(5,\) is invalid; accepted: empty with one scale"):
        Config(scales=(), scale_steps=(5,))


def test_auto_scales_are_one_scale_for_a_pattern():
    """Texture synthesis from noise gains nothing from the ladder (README, Defaults at other sizes)."""
    pattern = Config(size=256, steps=300, content_weight=0.0, init="noise").resolved()
    assert (pattern.scales, pattern.scale_steps) == ((), ())
    assert Config(size=256, steps=300, content_weight=0.0, scales=(64, 256)).resolved().scales == (64, 256)
    # Its coarsest scale is the output size, so a small motif scale is allowed again.
    Config(size=512, content_weight=0.0, style_scale=0.05)
