"""pipeline.engine losses against direct numpy loop computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import Config
from pipeline.engine.losses import _layer_weights, content_loss, gram, style_loss, tv_loss
from pipeline.engine.transfer import StyleTransfer
from pipeline.engine.weights import resolve_weights


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _gram_loop(f: np.ndarray) -> np.ndarray:
    n, c, h, w = f.shape
    out = np.zeros((n, c, c), dtype=np.float64)
    for b in range(n):
        for i in range(c):
            for j in range(c):
                total = 0.0
                for y in range(h):
                    for x in range(w):
                        total += float(f[b, i, y, x]) * float(f[b, j, y, x])
                out[b, i, j] = total / (h * w)
    return out


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float((diff * diff).sum() / diff.size)


def _tv_loop(image: np.ndarray) -> float:
    c, h, w = image.shape
    total = 0.0
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                if y + 1 < h:
                    total += abs(float(image[ch, y + 1, x]) - float(image[ch, y, x]))
                if x + 1 < w:
                    total += abs(float(image[ch, y, x + 1]) - float(image[ch, y, x]))
    return total


# --- gram ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 4, 3, 5), (2, 3, 1, 1), (1, 8, 6, 6)])
def test_gram_of_ones_is_ones(shape):
    n, c, h, w = shape
    g = gram(torch.ones(shape))
    assert g.shape == (n, c, c)
    torch.testing.assert_close(g, torch.ones(n, c, c))


def test_gram_divides_by_positions_not_channels():
    # constant 2.0 everywhere: every entry is sum(4) over h*w positions / (h*w) = 4
    g = gram(torch.full((1, 3, 7, 2), 2.0))
    torch.testing.assert_close(g, torch.full((1, 3, 3), 4.0))


def test_gram_matches_numpy_loop():
    f = _rand(2, 5, 4, 6, seed=1)
    expected = _gram_loop(f.numpy())
    got = gram(f)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    # symmetric, per-design
    torch.testing.assert_close(got, got.transpose(1, 2))


def test_gram_is_fp32_for_half_input():
    f = _rand(1, 3, 4, 4, seed=2)
    g = gram(f.half())
    assert g.dtype == torch.float32
    np.testing.assert_allclose(g.numpy(), _gram_loop(f.half().float().numpy()), rtol=1e-3, atol=1e-3)


# --- content loss ---------------------------------------------------------------


def test_content_loss_single_layer_is_mse():
    feats = {"conv5_2": _rand(2, 4, 3, 3, seed=3)}
    targets = {"conv5_2": _rand(2, 4, 3, 3, seed=4)}
    got = content_loss(feats, targets, {"conv5_2": 1.0})
    assert got.shape == (2,)
    for b in range(2):
        assert got[b].item() == pytest.approx(
            _mse(feats["conv5_2"][b].numpy(), targets["conv5_2"][b].numpy()), rel=1e-5
        )


def test_content_loss_weighted_average_over_layers():
    feats = {"conv4_2": _rand(3, 4, 4, 4, seed=5), "conv5_2": _rand(3, 6, 2, 2, seed=6)}
    targets = {"conv4_2": _rand(3, 4, 4, 4, seed=7), "conv5_2": _rand(3, 6, 2, 2, seed=8)}
    weights = {"conv4_2": 0.25, "conv5_2": 3.0}
    got = content_loss(feats, targets, weights)
    for b in range(3):
        expected = sum(w * _mse(feats[k][b].numpy(), targets[k][b].numpy()) for k, w in weights.items()) / 2
        assert got[b].item() == pytest.approx(expected, rel=1e-5)


def test_content_loss_zero_at_target():
    f = _rand(1, 4, 3, 3, seed=9)
    assert content_loss({"a": f}, {"a": f.clone()}, {"a": 1.0}).item() == 0.0


# --- style loss -----------------------------------------------------------------


def test_style_loss_unweighted_matches_loop():
    feats = {"conv1_1": _rand(2, 3, 4, 5, seed=10), "conv2_1": _rand(2, 5, 2, 3, seed=11)}
    style_feats = {"conv1_1": _rand(2, 3, 6, 6, seed=12), "conv2_1": _rand(2, 5, 3, 3, seed=13)}
    targets = {k: torch.from_numpy(_gram_loop(v.numpy())).float() for k, v in style_feats.items()}
    got = style_loss(feats, targets, {"conv1_1": 1.0, "conv2_1": 1.0})
    assert got.shape == (2,)
    for b in range(2):
        mses = [_mse(_gram_loop(feats[k][b : b + 1].numpy())[0], targets[k][b].numpy()) for k in feats]
        assert got[b].item() == pytest.approx(sum(mses) / 2, rel=1e-5)


def test_style_loss_weighted_is_sum_of_weighted_mse_over_num_layers():
    names = ("conv1_1", "conv2_1", "conv3_1")
    weights = (0.5, 3.0, 0.0)
    feats = {k: _rand(1, 4, 3, 3, seed=20 + i) for i, k in enumerate(names)}
    targets = {k: _rand(1, 4, 4, seed=30 + i).abs() for i, k in enumerate(names)}
    got = style_loss(feats, targets, dict(zip(names, weights))).item()
    mses = [_mse(_gram_loop(feats[k].numpy())[0], targets[k][0].numpy()) for k in names]
    expected = sum(w * m for w, m in zip(weights, mses)) / len(names)
    assert got == pytest.approx(expected, rel=1e-5)
    # and it is not the unweighted average
    assert got != pytest.approx(sum(mses) / len(names), rel=1e-3)


def test_layer_weights_default_to_one_and_follow_config_order():
    assert _layer_weights(("conv1_1", "conv2_1"), ()) == {"conv1_1": 1.0, "conv2_1": 1.0}
    assert _layer_weights(("conv1_1", "conv2_1"), (2, 0.5)) == {"conv1_1": 2.0, "conv2_1": 0.5}


# --- total variation ------------------------------------------------------------------


def test_tv_loss_matches_loop():
    image = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(40))
    got = tv_loss(image)
    assert got.shape == (2,)
    for b in range(2):
        assert got[b].item() == pytest.approx(_tv_loop(image[b].numpy()), rel=1e-5)


def test_tv_loss_known_values():
    flat = torch.full((1, 3, 4, 4), 0.3)
    assert tv_loss(flat).item() == 0.0
    # one vertical edge: left half 0, right half 1, on 3 channels and 4 rows -> 3 * 4 * 1
    edge = torch.zeros(1, 3, 4, 4)
    edge[..., 2:] = 1.0
    assert tv_loss(edge).item() == pytest.approx(12.0)
    # a checkerboard of 0/1 on 1 channel 3x3: 6 horizontal + 6 vertical differences of 1
    checker = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    assert tv_loss(checker).item() == pytest.approx(12.0)


# --- independence ---------------------------------------------------------------------


def test_loss_functions_are_per_design():
    feats = {"a": _rand(3, 4, 3, 3, seed=50)}
    content_t = {"a": _rand(3, 4, 3, 3, seed=51)}
    style_t = {"a": _rand(3, 4, 4, seed=52)}
    image = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(53))
    batch_c = content_loss(feats, content_t, {"a": 2.0})
    batch_s = style_loss(feats, style_t, {"a": 2.0})
    batch_t = tv_loss(image)
    for b in range(3):
        one = {"a": feats["a"][b : b + 1]}
        torch.testing.assert_close(batch_c[b : b + 1], content_loss(one, {"a": content_t["a"][b : b + 1]}, {"a": 2.0}))
        torch.testing.assert_close(batch_s[b : b + 1], style_loss(one, {"a": style_t["a"][b : b + 1]}, {"a": 2.0}))
        torch.testing.assert_close(batch_t[b : b + 1], tv_loss(image[b : b + 1]))


def test_engine_losses_of_a_batch_equal_each_member_alone():
    cfg = Config(size=16, steps=1, weights="random", style_layer_weights=(1, 2, 3, 4, 5))
    engine = StyleTransfer(cfg, resolve_weights("random", 0), "cpu", precision="fp32")
    gen = torch.Generator().manual_seed(60)
    images = torch.rand(3, 3, 16, 20, generator=gen)
    contents = [torch.rand(3, 16, 20, generator=gen) for _ in range(3)]
    styles = [torch.rand(3, 18, 18, generator=gen) for _ in range(3)]
    c_list = [engine.content_targets(f"c{i}", c) for i, c in enumerate(contents)]
    s_list = [engine.style_targets(f"s{i}", s) for i, s in enumerate(styles)]
    content_t = {k: torch.stack([t[k] for t in c_list]) for k in c_list[0]}
    style_t = {k: torch.stack([t[k] for t in s_list]) for k in s_list[0]}
    with torch.no_grad():
        batch = engine.losses(images, content_t, style_t)
    assert batch.shape == (3, 4)
    for i in range(3):
        with torch.no_grad():
            alone = engine.losses(
                images[i : i + 1],
                {k: v[i : i + 1] for k, v in content_t.items()},
                {k: v[i : i + 1] for k, v in style_t.items()},
            )
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-4, atol=1e-6)
    # columns: total = content + style + tv, each weighted by the config
    torch.testing.assert_close(batch[:, 0], batch[:, 1] + batch[:, 2] + batch[:, 3])
    torch.testing.assert_close(batch[:, 3], cfg.resolved().tv_weight * tv_loss(images))  # "auto" at 16 px
    # the members differ, so independence is not trivially satisfied
    assert len({round(v, 3) for v in batch[:, 0].tolist()}) == 3
