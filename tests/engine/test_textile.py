"""Textile controls in the engine, each measured by the property it promises."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import Config
from pipeline.engine.colour import keep_colors, match_colors, rgb_to_yiq
from pipeline.engine.losses import seam_score
from pipeline.engine.transfer import Pairing, StyleTransfer
from pipeline.engine.weights import resolve_weights

BASE = Config(size=32, steps=60, loss_every=10, weights="random", learning_rate=0.05)
gen = torch.Generator().manual_seed(7)
STYLE = torch.rand(3, 32, 32, generator=gen)
STYLE_2 = torch.rand(3, 32, 32, generator=gen) * torch.tensor([1.0, 0.2, 0.2]).view(3, 1, 1)


def engine(config: Config) -> StyleTransfer:
    return StyleTransfer(config, resolve_weights("random", 0), "cpu", precision="fp32")  # compares numbers


def motif_sheet() -> torch.Tensor:
    """A content that repeats itself: a smooth 8x8 motif, 4x4 times."""
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")

    def wave(phase: float) -> torch.Tensor:
        return 0.5 + 0.4 * torch.sin(2 * torch.pi * (x + phase) / 8) * torch.cos(2 * torch.pi * y / 8)

    return torch.stack([wave(0), wave(2), wave(4)])


def test_seam_score_is_about_one_for_a_tile_and_large_for_a_gradient():
    assert seam_score(motif_sheet()) == pytest.approx(1.0, abs=0.35)
    ramp = torch.linspace(0, 1, 32).view(1, 1, 32).expand(3, 32, 32)
    assert seam_score(ramp) > 10


def test_pattern_mode_tiles_when_tiled_and_not_otherwise():
    pattern = BASE.replace(content_weight=0.0, seed=3)
    job = [Pairing("p", None, None, "s", STYLE, out_size=(32, 32))]
    (tiled,) = engine(pattern.replace(repeat="block")).run(job)
    (plain,) = engine(pattern).run(job)
    assert tiled.seam_score < 1.2
    assert seam_score(plain.image) > tiled.seam_score + 0.1
    # pattern mode starts from seeded noise: another seed, another repeat
    (other,) = engine(pattern.replace(repeat="block", seed=4)).run(job)
    assert not torch.equal(other.image, tiled.image)


def test_a_repeating_motif_stays_seamless_when_tiled():
    job = [Pairing("m", "motif", motif_sheet(), "s", STYLE)]
    (tiled,) = engine(BASE.replace(repeat="block")).run(job)
    (plain,) = engine(BASE).run(job)
    assert tiled.seam_score < 1.2
    assert seam_score(plain.image) > tiled.seam_score


def test_seam_score_is_only_set_where_a_repeat_was_asked_for():
    # A garment on a plain background is not meant to repeat: no seam score, whatever it would read.
    garment = torch.full((3, 32, 32), 0.9)
    garment[:, 6:26, 10:22] = torch.tensor([0.2, 0.3, 0.6]).view(3, 1, 1)
    job = [Pairing("g", "garment", garment, "s", STYLE)]
    (plain,) = engine(BASE.replace(steps=2)).run(job)
    (tiled,) = engine(BASE.replace(steps=2, repeat="block")).run(job)
    assert plain.seam_score is None
    assert tiled.seam_score == pytest.approx(seam_score(tiled.image))


def test_mask_keeps_the_content_outside_the_garment():
    content = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:28, 6:26] = 1.0
    (result,) = engine(BASE).run([Pairing("g", "c", content, "s", STYLE, mask=mask)])
    assert result.mask_leakage is not None and result.mask_leakage < 1 / 255
    outside = (mask < 0.5).expand(3, -1, -1)
    assert torch.allclose(result.image[outside], content[outside], atol=1e-6)
    inside = (mask > 0.5).expand(3, -1, -1)
    assert (result.image[inside] - content[inside]).abs().mean() > 0.01  # styled inside


def test_color_keep_keeps_the_contents_chroma():
    content = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))
    job = [Pairing("k", "c", content, "s", STYLE_2)]
    (kept,) = engine(BASE.replace(color="keep")).run(job)
    (plain,) = engine(BASE).run(job)

    def chroma_error(image):
        return (rgb_to_yiq(image)[1:] - rgb_to_yiq(content)[1:]).abs().mean().item()

    assert chroma_error(kept.image) < 0.03
    assert chroma_error(plain.image) > 2 * chroma_error(kept.image)


def test_keep_colors_takes_luminance_from_the_output_and_chroma_from_the_content():
    output, content = (
        torch.full((3, 4, 4), 0.5),
        torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(3)) * 0.2 + 0.4,
    )
    merged = keep_colors(output, content)
    assert torch.allclose(rgb_to_yiq(merged)[0], rgb_to_yiq(output)[0], atol=1e-5)
    assert torch.allclose(rgb_to_yiq(merged)[1:], rgb_to_yiq(content)[1:], atol=1e-5)


def test_match_colors_gives_the_style_the_contents_mean_and_covariance():
    style = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(4)) * torch.tensor([0.3, 0.9, 0.5]).view(
        3, 1, 1
    )
    content = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(5)) * 0.5 + 0.3
    matched = match_colors(style, content)

    def stats(x):
        flat = x.reshape(3, -1).double()
        return flat.mean(1), torch.cov(flat, correction=0)

    m_mean, m_cov = stats(matched)
    c_mean, c_cov = stats(content)
    assert torch.allclose(m_mean, c_mean, atol=2e-3)
    assert torch.allclose(m_cov, c_cov, atol=2e-3)


def test_two_scale_job_ends_at_the_configured_size():
    config = BASE.replace(size=48, scales=(32, 48), scale_steps=(20, 10), loss_every=5)
    content = torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(6))
    steps_seen = []
    (result,) = engine(config).run(
        [Pairing("x", "c", content, "s", STYLE)], on_progress=lambda p: steps_seen.append((p.step, p.steps))
    )
    assert result.image.shape == (3, 32, 48)
    assert result.curve_steps == [0, 5, 10, 15, 20, 25, 30]
    assert len(result.loss_curves["total"]) == len(result.curve_steps)
    assert steps_seen[-1] == (25, 30)


def test_a_scale_too_small_for_vgg_is_refused():
    config = BASE.replace(size=32, scales=(16, 32))
    content = torch.rand(3, 24, 32)
    with pytest.raises(ValueError, match="scale 16 .* at least 16 px"):
        engine(config).run([Pairing("x", "c", content, "s", STYLE)])


def test_scales_must_end_at_size():
    with pytest.raises(ValueError, match="ending at --size"):
        Config(size=64, scales=(16, 32))
    with pytest.raises(ValueError, match="one per entry of scales"):
        Config(size=32, scales=(16, 32), scale_steps=(5,))


def test_blend_mixes_grams_by_weight():
    content = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(8))
    e = engine(BASE.replace(steps=5, loss_every=1))
    (single,) = e.run([Pairing("a", "c", content, "s1", STYLE)])
    (blend_all_first,) = e.run(
        [Pairing("b", "c", content, "s1", STYLE, extra_styles=(("s2", STYLE_2),), style_mix=(1.0, 0.0))]
    )
    assert torch.allclose(single.image, blend_all_first.image, atol=1e-6)
    (half,) = e.run([Pairing("h", "c", content, "s1", STYLE, extra_styles=(("s2", STYLE_2),), style_mix=(1.0, 1.0))])
    assert not torch.allclose(single.image, half.image, atol=1e-3)
    # the mixed target is the weighted mean of the two styles' Grams
    g1, g2 = e.style_targets("s1", STYLE), e.style_targets("s2", STYLE_2)
    _, _, _, style_t = e._batch_targets(
        [Pairing("h", "c", content, "s1", STYLE, extra_styles=(("s2", STYLE_2),), style_mix=(3.0, 1.0))],
        e.config,
        (32, 32),
        False,
    )
    for name in g1:
        assert torch.allclose(style_t[name][0], 0.75 * g1[name] + 0.25 * g2[name], atol=1e-6)
