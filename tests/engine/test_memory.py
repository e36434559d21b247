"""The memory estimate: its layer shapes are the network's, what it counts as kept for the
backward pass is what autograd keeps, and it grows as the sizes say."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import Config
from pipeline.engine.losses import gram
from pipeline.engine.memory import estimate_memory, layer_shapes
from pipeline.engine.transfer import StyleTransfer
from pipeline.engine.vgg import LAYER_INDEX, make_features
from pipeline.engine.weights import resolve_weights

CFG = Config(weights="random", size=48, steps=1, precision="fp32")


def test_layer_shapes_are_the_networks_own():
    features = make_features(until_index=LAYER_INDEX["conv5_2"]).eval()
    x = torch.rand(1, 3, 40, 56)
    shapes = []
    with torch.no_grad():
        for module in features:
            x = module(x)
            shapes.append(tuple(x.shape[1:]))
    assert [(layer.channels, layer.height, layer.width) for layer in layer_shapes(40, 56, LAYER_INDEX["conv5_2"])] == (
        shapes
    )


def saved_bytes(engine: StyleTransfer, cfg: Config, size: int) -> int:
    """Bytes of the tensors autograd keeps for one design's backward pass (weights left out)."""
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    with torch.no_grad():
        feats = engine.features(image, cfg)
        content_t = {name: feats[name].float() for name in cfg.content_layers}
        style_t = {name: gram(feats[name]) for name in cfg.style_layers}
    weights = {p.data_ptr() for p in engine._features.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        is_weight = t.data_ptr() in weights or (t.dim() == 4 and tuple(t.shape[-2:]) == (3, 3)) or t.dim() == 1
        if not is_weight and t.data_ptr() != image.data_ptr():
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        engine.losses(image, content_t, style_t, cfg)
    return sum(kept.values())


@pytest.mark.parametrize(
    "changes",
    [{}, {"repeat": "block"}, {"pooling": "avg"}, {"precision": "bf16"}, {"precision": "bf16", "repeat": "half-drop"}],
)
def test_what_the_estimate_keeps_for_the_backward_pass_is_what_autograd_keeps(changes: dict):
    cfg = CFG.replace(**changes)
    engine = StyleTransfer(cfg, resolve_weights("random", 0), "cpu", precision=cfg.precision)
    measured = saved_bytes(engine, cfg, 64)
    estimate = estimate_memory(
        64,
        64,
        64,
        1,
        content_layers=cfg.content_layers,
        style_layers=cfg.style_layers,
        precision=cfg.precision,
        repeat=cfg.repeat,
        pooling=cfg.pooling,
    )
    assert 0.95 < estimate.saved / measured < 1.1, (estimate.saved, measured)  # repeats: a little over


def test_the_estimate_grows_with_the_pixels_the_batch_and_the_style_side():
    def peak(size: int = 256, style: int = 256, batch: int = 1, **kw) -> int:
        layers = {"content_layers": ("conv5_2",), "style_layers": Config().style_layers}
        return estimate_memory(size, size, style, batch, **layers, **kw)

    one, four = peak(), peak(batch=4)
    assert four.loop == 4 * one.loop and four.style_targets == one.style_targets
    assert 3.5 < peak(512).per_design / one.per_design < 4.5  # four times the pixels
    assert peak(style=1024).style_targets > 12 * one.style_targets
    assert peak(precision="bf16").saved < one.saved
    assert peak(optimizer="lbfgs").per_design > one.per_design + 200 * 3 * 256 * 256 * 4 - 1
    # --size 4096 in fp32 needs tens of GiB for one design: what a CPU run cannot hold.
    assert peak(4096, 4096).peak > 20 * 2**30
