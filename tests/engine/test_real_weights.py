"""Style transfer judged on real pretrained weights: the ImageNet VGG16 in Keras' layout at
../shared/weights (beside the repository; CI has it; skipped, with the reason, where it is
absent). Each assertion here fails on random weights, where the paper's Adam (epsilon 0.1
on caffe-scale gradients) barely moves the image and the Grams mean nothing:

- texture synthesis from a style alone brings the design's Grams (on the network itself)
  at least 100x closer to the style's than the noise start, and an independent statistic
  (a striped style's orientation, a painting's colour histogram) moves the same way;
- a content + style design keeps the content's structure (its luminance at 8 px cells)
  while its style distance falls;
- block, half-drop and brick repeats come out seamless, and a mask leaks nothing while
  the garment takes the style.

The first and L-BFGS on the paper's loss run in `make test` (64 px, fp32 as every test); the rest are slow.
Credit: VGG16 by K. Simonyan and A. Zisserman, Visual Geometry Group, University of Oxford (CC BY 4.0).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import Config
from pipeline.engine.losses import gram, seam_score
from pipeline.engine.transfer import DesignResult, Pairing, StyleTransfer
from pipeline.engine.weights import WeightsSource, resolve_weights

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
REAL_WEIGHTS = SHARED / "weights" / "vgg16_weights_notop_keras_layout.h5"
STYLES = SHARED / "images" / "styles"
SHALLOW = ("conv1_1", "conv2_1", "conv3_1")  # what 64 px and a few steps can match


@pytest.fixture(scope="module")
def real_weights() -> WeightsSource:
    if not REAL_WEIGHTS.is_file():
        pytest.skip(f"real weights absent: {REAL_WEIGHTS} (../shared/weights beside the repository)")
    return resolve_weights(str(REAL_WEIGHTS), 0)


def stripes(size: int, period: int = 8) -> torch.Tensor:
    """Horizontal bands of two colours: (3, size, size) in [0, 1]."""
    y = torch.arange(size, dtype=torch.float32).view(size, 1).expand(size, size)
    band = (torch.sin(2 * math.pi * (y + 0.5) / period) > 0).float()
    return torch.stack([0.85 * band + 0.1, 0.3 * band + 0.2, 0.1 + 0.6 * (1 - band)])


def painting(name: str, size: int) -> torch.Tensor:
    path = STYLES / name
    if not path.is_file():
        pytest.skip(f"style image absent: {path} (../shared/images/styles beside the repository)")
    image = Image.open(path).convert("RGB")
    image.thumbnail((size, size))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def config(**changes) -> Config:
    """Quick settings for small images: Adam with beta1 0.9 and a larger step than the paper's 0.02."""
    base = {"weights": "test", "init": "noise", "learning_rate": 0.1, "adam_beta1": 0.9, "loss_every": 10}
    return Config(**{**base, **changes})


def gram_distance(engine: StyleTransfer, cfg: Config, image: torch.Tensor, style: torch.Tensor) -> float:
    """Sum over the style layers of the mean squared Gram difference, on the engine's network."""
    with torch.no_grad():
        ours, theirs = engine.features(image[None], cfg), engine.features(style[None], cfg)
    return sum(float(((gram(ours[n]) - gram(theirs[n])) ** 2).mean()) for n in cfg.style_layers)


def noise_start(cfg: Config) -> torch.Tensor:
    """The engine's noise init (pipeline/engine/transfer.py: seeded uniform noise)."""
    return torch.rand((3, cfg.size, cfg.size), generator=torch.Generator().manual_seed(cfg.seed))


def synthesize(weights: WeightsSource, cfg: Config, style: torch.Tensor) -> tuple[StyleTransfer, DesignResult]:
    engine = StyleTransfer(cfg, weights, "cpu", precision="fp32")
    (result,) = engine.run([Pairing("p", None, None, "s", style, out_size=(cfg.size, cfg.size))])
    assert result.error is None
    return engine, result


def orientation(image: torch.Tensor) -> float:
    """Mean vertical over mean horizontal neighbour difference: 1 for noise, large for horizontal bands."""
    dy = (image[:, 1:, :] - image[:, :-1, :]).abs().mean()
    dx = (image[:, :, 1:] - image[:, :, :-1]).abs().mean()
    return float(dy / dx)


def test_texture_synthesis_matches_a_striped_styles_grams_and_its_orientation(real_weights):
    cfg = config(size=64, steps=80, style_layers=SHALLOW, content_layers=("conv3_1",), content_weight=0.0)
    style = stripes(64)
    engine, result = synthesize(real_weights, cfg, style)
    start = noise_start(cfg)
    before, after = gram_distance(engine, cfg, start, style), gram_distance(engine, cfg, result.image, style)
    assert after * 100 <= before, (before, after)
    # Independent of the Grams: the bands' direction shows (noise has no direction).
    assert orientation(start) < 1.05 and orientation(result.image) > 1.4


def colour_histogram_distance(a: torch.Tensor, b: torch.Tensor, bins: int = 16) -> float:
    """L1 distance between the per-channel colour histograms (bins each, each summing to 1), summed over R, G, B."""

    def histogram(image: torch.Tensor) -> torch.Tensor:
        q = (image.clamp(0, 1) * (bins - 1e-6)).long()
        return torch.stack([torch.bincount(c.flatten(), minlength=bins).float() / c.numel() for c in q])

    return float((histogram(a) - histogram(b)).abs().sum())


@pytest.mark.slow
def test_texture_synthesis_from_a_painting_matches_its_grams_and_its_colours(real_weights):
    cfg = config(size=96, steps=150, style_layers=("conv1_1", "conv2_1", "conv3_1", "conv4_1"), content_weight=0.0)
    style = painting("starry_night.jpg", 96)
    engine, result = synthesize(real_weights, cfg, style)
    start = noise_start(cfg)
    before, after = gram_distance(engine, cfg, start, style), gram_distance(engine, cfg, result.image, style)
    assert after * 100 <= before, (before, after)
    final, noise = colour_histogram_distance(result.image, style), colour_histogram_distance(start, style)
    assert final < 0.8 * noise, (final, noise)  # measured 0.74: noise is uniform, the painting dark and blue


def structure(image: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """The luminance averaged over cells of `cell` px: the content's layout, without the
    style's finer marks (a stripe period of 8 px averages out)."""
    return torch.nn.functional.avg_pool2d(image.mean(0)[None, None], cell)[0, 0]


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def shapes(size: int) -> torch.Tensor:
    """A content with clear structure: a light disc and a dark bar on a mid ground."""
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    disc = ((y - size * 0.35) ** 2 + (x - size * 0.35) ** 2 < (size * 0.22) ** 2).float()
    bar = ((x > size * 0.6) & (x < size * 0.8) & (y > size * 0.2)).float()
    grey = 0.5 + 0.4 * disc - 0.35 * bar
    return torch.stack([grey, grey * 0.9, grey * 0.8]).clamp(0, 1)


@pytest.mark.slow
def test_a_content_and_style_design_keeps_the_contents_structure_while_its_style_distance_falls(real_weights):
    size = 96
    cfg = config(
        size=size, steps=100, init="content", style_layers=SHALLOW, content_layers=("conv3_1",), content_weight=1e3
    )
    content, style = shapes(size), stripes(size)
    engine = StyleTransfer(cfg, real_weights, "cpu", precision="fp32")
    (result,) = engine.run([Pairing("p", "c", content, "s", style)])
    assert result.error is None
    before, after = gram_distance(engine, cfg, content, style), gram_distance(engine, cfg, result.image, style)
    kept = correlation(structure(result.image), structure(content))
    print(f"style distance {before:.4g} -> {after:.4g}, structure correlation {kept:.3f}")
    assert after * 3 <= before, (before, after)
    assert kept > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("repeat", ["block", "half-drop", "brick"])
def test_repeats_stay_seamless_on_real_weights(real_weights, repeat):
    cfg = config(size=64, steps=80, repeat=repeat, style_layers=SHALLOW, content_layers=("conv3_1",), content_weight=0)
    style = stripes(64, period=7)  # 64 is no multiple of 7: a tile that ignored its repeat would show a seam
    engine, result = synthesize(real_weights, cfg, style)
    assert gram_distance(engine, cfg, result.image, style) * 100 <= gram_distance(engine, cfg, noise_start(cfg), style)
    assert result.seam_score is not None and result.seam_score < 1.3, result.seam_score
    assert seam_score(result.image, repeat) == pytest.approx(result.seam_score)


@pytest.mark.slow
def test_a_mask_leaks_nothing_while_the_garment_takes_the_style(real_weights):
    size = 64
    cfg = config(size=size, steps=80, init="content", style_layers=SHALLOW, content_layers=("conv3_1",))
    content, style = shapes(size), stripes(size)
    mask = torch.zeros(1, size, size)
    mask[:, 8:56, 8:40] = 1.0  # the garment: a rectangle on the left
    engine = StyleTransfer(cfg, real_weights, "cpu", precision="fp32")
    (result,) = engine.run([Pairing("p", "c", content, "s", style, mask=mask)])
    assert result.error is None
    assert result.mask_leakage == 0.0
    inside = (slice(None), slice(12, 52), slice(12, 36))  # away from the feathered edge
    before = gram_distance(engine, cfg, content[inside], style)
    after = gram_distance(engine, cfg, result.image[inside], style)
    print(f"garment's style distance {before:.4g} -> {after:.4g}")
    assert after * 3 <= before, (before, after)


def test_lbfgs_keeps_lowering_the_paper_loss_on_real_weights(real_weights):
    # The paper's loss weights on caffe inputs (losses ~1e10 at 64 px). Before the fix L-BFGS's
    # line search had no trial beyond its first: one rejected step and the design never moved
    # again, and the final clamp undid what it had gained (the style distance fell 1.1x).
    cfg = Config(weights="test", size=64, steps=20, tv_weight=30.0, loss_every=1, optimizer="lbfgs")
    content, style = shapes(64), stripes(64)
    engine = StyleTransfer(cfg, real_weights, "cpu", precision="fp32")
    (result,) = engine.run([Pairing("p", "c", content, "s", style)])
    assert result.error is None
    before, after = gram_distance(engine, cfg, content, style), gram_distance(engine, cfg, result.image, style)
    curve = result.loss_curves["style"]
    print(f"style distance {before:.4g} -> {after:.4g}; style loss {curve[0]:.4g} -> {curve[-1]:.4g}")
    assert after * 4 <= before, (before, after)
    assert curve[-1] * 4 <= curve[0], curve
    assert 0.0 <= result.image.min().item() and result.image.max().item() <= 1.0
