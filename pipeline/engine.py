"""Gatys-style neural style transfer: an optimization loop on the output's pixels.

The losses follow the TensorFlow tutorial that the paper ran (Gram matrices
divided by the number of positions, per-layer mean squared errors averaged over
layers, total variation as tf.image.total_variation). Many pairings of the same
output size are optimized together as one batch; each design's loss depends
only on its own pixels, so with Adam a batch gives the same result as running
its members one by one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from pipeline.config import Config
from pipeline.vgg import MIN_SIDE, FeatureExtractor
from pipeline.weights import WeightsSource, load_features

LOSS_NAMES = ("total", "content", "style", "tv")


# --- losses -----------------------------------------------------------------


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C), divided by the number of positions H*W.

    As in the TensorFlow tutorial the paper ran; Gatys et al. instead divide
    the squared error by 4 N^2 M^2. Always computed in fp32.
    """
    n, c, h, w = features.shape
    flat = features.float().reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (h * w)


def content_loss(features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], layer_weights: dict[str, float]) -> torch.Tensor:
    """Per-design feature MSE, weighted and averaged over the content layers: (N,)."""
    terms = [w * (features[name].float() - targets[name]).pow(2).mean(dim=(1, 2, 3)) for name, w in layer_weights.items()]
    return torch.stack(terms).sum(0) / len(terms)


def style_loss(features: dict[str, torch.Tensor], target_grams: dict[str, torch.Tensor], layer_weights: dict[str, float]) -> torch.Tensor:
    """Per-design Gram MSE, weighted and averaged over the style layers: (N,)."""
    terms = [w * (gram(features[name]) - target_grams[name]).pow(2).mean(dim=(1, 2)) for name, w in layer_weights.items()]
    return torch.stack(terms).sum(0) / len(terms)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Per-design total variation, the sum of absolute neighbour differences
    (tf.image.total_variation) of images in [0, 1]: (N,)."""
    dy = (image[:, :, 1:, :] - image[:, :, :-1, :]).abs().sum(dim=(1, 2, 3))
    dx = (image[:, :, :, 1:] - image[:, :, :, :-1]).abs().sum(dim=(1, 2, 3))
    return dx + dy


# --- engine -----------------------------------------------------------------


@dataclass(frozen=True)
class Pairing:
    """One design to make. Keys identify inputs for target caching."""

    key: str
    content_key: str
    content: torch.Tensor  # (3, H, W) in [0, 1]: the output has this size
    style_key: str
    style: torch.Tensor  # (3, h, w) in [0, 1], any size


@dataclass(frozen=True)
class Progress:
    """Sent to the progress callback every `loss_every` steps."""

    step: int
    steps: int
    designs: int
    loss_total: tuple[float, ...]  # per design in the batch


@dataclass
class DesignResult:
    key: str
    image: torch.Tensor  # (3, H, W) float32 on the CPU, in [0, 1]
    loss_curves: dict[str, list[float]]  # LOSS_NAMES -> samples every loss_every steps, then the final image
    final_loss: dict[str, float]
    targets_seconds: float  # this design's share of target computation
    optimize_seconds: float  # this design's share of the batch's optimization
    steps_per_second: float  # of the whole batch
    error: str | None = None
    curve_steps: list[int] = field(default_factory=list)


class NonFiniteLossError(ArithmeticError):
    pass


class StyleTransfer:
    """Holds the VGG19 feature extractor on one device and caches targets.

    Style targets are cached per (style, size), content targets per
    (content, height, width), so each is computed once however many
    pairings use it.
    """

    def __init__(self, config: Config, weights: WeightsSource, device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        layers = tuple(config.content_layers) + tuple(config.style_layers)
        self.content_weights = _layer_weights(config.content_layers, config.content_layer_weights)
        self.style_weights = _layer_weights(config.style_layers, config.style_layer_weights)
        self.weights = weights
        self.extractor = FeatureExtractor(load_features(weights), layers).to(self.device)
        self._style_cache: dict[tuple[str, int, int], dict[str, torch.Tensor]] = {}
        self._content_cache: dict[tuple[str, int, int], dict[str, torch.Tensor]] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def style_targets(self, key: str, style: torch.Tensor) -> dict[str, torch.Tensor]:
        cache_key = (key, style.shape[-2], style.shape[-1])
        if cache_key not in self._style_cache:
            feats = self.extractor(style.unsqueeze(0).to(self.device))
            self._style_cache[cache_key] = {name: gram(feats[name])[0] for name in self.style_weights}
        return self._style_cache[cache_key]

    @torch.no_grad()
    def content_targets(self, key: str, content: torch.Tensor) -> dict[str, torch.Tensor]:
        cache_key = (key, content.shape[-2], content.shape[-1])
        if cache_key not in self._content_cache:
            feats = self.extractor(content.unsqueeze(0).to(self.device))
            self._content_cache[cache_key] = {name: feats[name][0].float() for name in self.content_weights}
        return self._content_cache[cache_key]

    def clear_cache(self) -> None:
        self._style_cache.clear()
        self._content_cache.clear()

    def losses(self, image: torch.Tensor, content_t: dict[str, torch.Tensor], style_t: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, 4) per-design losses: total, content, style, tv (weighted)."""
        cfg = self.config
        feats = self.extractor(image)
        c = cfg.content_weight * content_loss(feats, content_t, self.content_weights)
        s = cfg.style_weight * style_loss(feats, style_t, self.style_weights)
        t = cfg.tv_weight * tv_loss(image)
        return torch.stack([c + s + t, c, s, t], dim=1)

    def run(self, pairings: Sequence[Pairing], on_progress: Callable[[Progress], None] | None = None,
            learning_rate_scale: float = 1.0) -> list[DesignResult]:
        """Optimize a batch of pairings whose content images share one size.

        `learning_rate_scale` multiplies the optimizer's step (a diverged design
        is retried once with a smaller one)."""
        if not pairings:
            return []
        cfg = self.config
        height, width = pairings[0].content.shape[-2:]
        for p in pairings:
            if tuple(p.content.shape[-2:]) != (height, width):
                raise ValueError(f"pairing {p.key}: content size {tuple(p.content.shape[-2:])} differs from the batch's {(height, width)}")
            if min(p.content.shape[-2:]) < MIN_SIDE or min(p.style.shape[-2:]) < MIN_SIDE:
                raise ValueError(f"pairing {p.key}: images must be at least {MIN_SIDE} px on the short side (VGG19 pools four times)")

        self._sync()
        start = time.perf_counter()
        content_list = [self.content_targets(p.content_key, p.content) for p in pairings]
        style_list = [self.style_targets(p.style_key, p.style) for p in pairings]
        content_t = {name: torch.stack([t[name] for t in content_list]) for name in self.content_weights}
        style_t = {name: torch.stack([t[name] for t in style_list]) for name in self.style_weights}
        contents = torch.stack([p.content for p in pairings]).to(self.device)
        self._sync()
        targets_seconds = time.perf_counter() - start

        start = time.perf_counter()
        if cfg.optimizer == "lbfgs":
            # L-BFGS couples every variable it sees through its line search and
            # history, so each design is optimized on its own to stay reproducible.
            parts = [self._optimize(contents[i : i + 1], _index(content_t, i), _index(style_t, i), on_progress, learning_rate_scale)
                     for i in range(len(pairings))]
            images = torch.cat([p[0] for p in parts])
            curves = torch.cat([p[1] for p in parts])
        else:
            images, curves = self._optimize(contents, content_t, style_t, on_progress, learning_rate_scale)
        with torch.no_grad():
            final = self.losses(images, content_t, style_t)
        curves = torch.cat([curves, final.unsqueeze(2)], dim=2).cpu()
        images = images.detach().float().cpu()
        self._sync()
        optimize_seconds = time.perf_counter() - start

        steps = _curve_steps(cfg.steps, cfg.loss_every)
        n = len(pairings)
        results = []
        for i, p in enumerate(pairings):
            final_loss = {name: float(curves[i, j, -1]) for j, name in enumerate(LOSS_NAMES)}
            error = None
            if not all(map(_finite, final_loss.values())):
                error = f"non-finite loss after optimization: {final_loss}"
            results.append(
                DesignResult(
                    key=p.key,
                    image=images[i],
                    loss_curves={name: curves[i, j].tolist() for j, name in enumerate(LOSS_NAMES)},
                    final_loss=final_loss,
                    targets_seconds=targets_seconds / n,
                    optimize_seconds=optimize_seconds / n,
                    steps_per_second=cfg.steps / optimize_seconds if optimize_seconds > 0 else float("inf"),
                    error=error,
                    curve_steps=steps,
                )
            )
        return results

    def _initial_image(self, contents: torch.Tensor) -> torch.Tensor:
        if self.config.init == "content":
            return contents.clone()
        # Every design in a batch draws the same seeded noise, as it would alone.
        gen = torch.Generator().manual_seed(self.config.seed)
        noise = torch.rand(contents.shape[1:], generator=gen)
        return noise.expand_as(contents).clone().to(self.device)

    def _optimize(self, contents, content_t, style_t, on_progress, lr_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        image = self._initial_image(contents).requires_grad_(True)
        sample_steps = _curve_steps(cfg.steps, cfg.loss_every)[:-1]  # the final image is added by run()
        # Loss curves stay on the device; the host reads them at the end (or
        # every loss_every steps when a progress callback wants them).
        curves = torch.zeros(image.shape[0], len(LOSS_NAMES), len(sample_steps), device=self.device)
        if cfg.optimizer == "adam":
            opt = torch.optim.Adam([image], lr=cfg.learning_rate * lr_scale, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
        else:
            # A line search keeps L-BFGS from overshooting on rough images.
            opt = torch.optim.LBFGS([image], lr=cfg.lbfgs_learning_rate * lr_scale, max_iter=1, history_size=100, line_search_fn="strong_wolfe")

        for step in range(cfg.steps):
            record = step % cfg.loss_every == 0
            losses_at_step: list[torch.Tensor] = []

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                losses = self.losses(image, content_t, style_t)
                losses[:, 0].sum().backward()
                losses_at_step.append(losses.detach())
                return losses[:, 0].sum()

            opt.step(closure)
            if cfg.optimizer == "adam":
                with torch.no_grad():
                    image.clamp_(0.0, 1.0)  # the tutorial's clip_0_1 after each step
            if record:
                curves[:, :, step // cfg.loss_every] = losses_at_step[0]
                if on_progress is not None:
                    totals = tuple(losses_at_step[0][:, 0].tolist())
                    on_progress(Progress(step=step, steps=cfg.steps, designs=image.shape[0], loss_total=totals))
        if cfg.optimizer == "lbfgs":
            with torch.no_grad():
                image.clamp_(0.0, 1.0)  # not clamped per step: that would break L-BFGS's curvature pairs
        return image.detach(), curves


def _curve_steps(steps: int, every: int) -> list[int]:
    """Steps at which the loss curves are sampled; the last entry is the final image."""
    return list(range(0, steps, every)) + [steps]


def _layer_weights(layers: Sequence[str], weights: Sequence[float]) -> dict[str, float]:
    weights = tuple(weights) or (1.0,) * len(layers)
    merged: dict[str, float] = {}
    for name, w in zip(layers, weights):
        merged[name] = merged.get(name, 0.0) + float(w)
    return merged


def _index(targets: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: v[i : i + 1] for k, v in targets.items()}


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))
