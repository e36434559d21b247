"""Gatys-style neural style transfer: an optimization loop on the output's pixels.

The losses follow the TensorFlow tutorial that the paper ran (Gram matrices
divided by the number of positions, per-layer mean squared errors averaged over
layers, total variation as tf.image.total_variation). Many pairings of the same
output size are optimized together as one batch; each design's loss depends
only on its own pixels, so with Adam a batch gives the same result as running
its members one by one.

The network and its input are the paper's by default: the Caffe-trained VGG19
(Keras' file) fed caffe-preprocessed images (pipeline/engine/vgg.py), and
Adam with Keras' epsilon convention (`adam_convention`). Departure from the
paper: a VGG16 file runs on VGG16 (the network comes from the file; the paper's
layers all exist in it, its activations and so its loss balance differ).
Departure from the paper's defaults: the config's `scales` auto runs this loop
coarse-to-fine (size/4, size/2, size) instead of once at the output size, and the
learning rate and TV weight follow the size and steps (pipeline/config.py); the
engine runs whatever Config.resolved() gives.

Textile controls beyond the paper: seamless repeats (block, half-drop, brick:
every convolution padded and the TV term wrapped as the repeat lays the tiles
out, pipeline/engine/repeats.py), motif scale (the runner sizes the style),
average pooling, garment masks (style and TV counted inside the mask, the
content kept outside), colour preservation (YIQ luminance transfer, Gatys et
al. 2016) or colour matching, coarse-to-fine scales, and style blends.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import MEMORY_FORMATS, PRECISIONS, Config
from pipeline.engine.colour import keep_colors, match_colors
from pipeline.engine.embedding import EMBEDDING_LAYERS, embed
from pipeline.engine.losses import LOSS_NAMES, _layer_weights, content_loss, gram, seam_score, style_loss, tv_loss
from pipeline.engine.optim import PaperAdam
from pipeline.engine.quality import Quality, measure
from pipeline.engine.repeats import RepeatConv2d, upsample_tile
from pipeline.engine.targets import TargetCache
from pipeline.engine.vgg import MIN_SIDE, FeatureExtractor, layer_index
from pipeline.engine.weights import WeightsSource, load_features

# Loss evaluations one L-BFGS step may make (its first and the strong Wolfe line search's
# trials); measured steps take 2 to 3 on average.
LBFGS_MAX_EVALS = 20

# PRECISIONS (pipeline/config.py), "auto": bf16 autocast for the convolutions on CUDA and on CPUs whose oneDNN has
# native bf16 (AVX512-BF16, AMX), fp32 elsewhere. "bf16" is accepted on any CPU
# (emulated, and slower than fp32, where it is not native; tests use it).
# Overrides the CPU check, in this process and the processes it starts (Dask workers,
# a child `designs generate`): "0" makes 'auto' fp32 on every CPU, "1" bf16. Mixed
# fleets use it to get the same arithmetic everywhere; the test suite sets "0".
CPU_BF16_ENV = "NST_CPU_BF16"
_CPU_BF16_VALUES = {"0": False, "1": True}


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively on this CPU ($NST_CPU_BF16 when set).
    Looked up at call time (not cached) so tests can patch it to cover both kinds of CPU."""
    if (forced := os.environ.get(CPU_BF16_ENV, "")) != "":
        if forced not in _CPU_BF16_VALUES:
            raise ValueError(
                f"{CPU_BF16_ENV}={forced!r} is invalid; accepted: 0 (precision auto is fp32 on the CPU), "
                "1 (bf16), or unset (ask the CPU)"
            )
        return _CPU_BF16_VALUES[forced]
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        if platform.machine().lower() in ("x86_64", "amd64"):
            # oneDNN's own check on x86 is AVX512 alone, where bf16 is emulated and
            # slower than fp32: ask for the bf16 instructions (AVX512-BF16 or AMX).
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return True  # on ARM torch's check is the bf16 instructions themselves
    except (AttributeError, RuntimeError):  # a build without oneDNN, or a torch without the queries
        return False


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """'auto' made concrete for `device`: 'bf16' on CUDA and native-bf16 CPUs, else 'fp32'."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is invalid; accepted: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    return "bf16" if kind == "cuda" or (kind == "cpu" and cpu_has_native_bf16()) else "fp32"


def resolve_channels_last(memory_format: str, device: str | torch.device, precision: str) -> bool:
    """'auto' made concrete: channels-last on CUDA, and on a CPU with native bf16 running bf16
    (measured 1.41x there, docs/BENCHMARKS.md); contiguous on other CPUs, where it lost.
    `precision` is the resolved one ('fp32' or 'bf16')."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format={memory_format!r} is invalid; accepted: {', '.join(MEMORY_FORMATS)}")
    if memory_format != "auto":
        return memory_format == "channels-last"
    kind = torch.device(device).type
    return kind == "cuda" or (kind == "cpu" and precision == "bf16" and cpu_has_native_bf16())


@dataclass(frozen=True)
class Pairing:
    """One design to make. Keys identify inputs for target caching."""

    key: str
    content_key: str | None  # None: pattern mode from the style(s) alone
    content: torch.Tensor | None  # (3, H, W) in [0, 1]: the output has this size
    style_key: str
    style: torch.Tensor  # (3, h, w) in [0, 1], any size
    # A blend: more styles and every style's weight (style first). Grams are mixed by weight.
    extra_styles: tuple[tuple[str, torch.Tensor], ...] = ()
    style_mix: tuple[float, ...] = ()
    mask: torch.Tensor | None = None  # (1, H, W) in [0, 1], white = garment
    out_size: tuple[int, int] | None = None  # (H, W) when there is no content

    @property
    def styles(self) -> list[tuple[str, torch.Tensor]]:
        return [(self.style_key, self.style), *self.extra_styles]

    @property
    def weights(self) -> list[float]:
        mix = list(self.style_mix) or [1.0] * len(self.styles)
        total = sum(mix)
        return [w / total for w in mix]

    @property
    def size(self) -> tuple[int, int]:
        if self.content is not None:
            return tuple(self.content.shape[-2:])
        assert self.out_size is not None
        return self.out_size


@dataclass(frozen=True)
class Progress:
    """Sent to the progress callback every `loss_every` steps."""

    step: int  # counted over all scales
    steps: int
    designs: int
    loss_total: tuple[float, ...]  # per design in the batch
    loss_style: tuple[float, ...] = ()  # the weighted style term per design (benchmarks/quality.py stops on it)


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
    seam_score: float | None = None
    mask_leakage: float | None = None  # mean |output - content| outside the mask, in [0, 1] units
    quality: Quality | None = None  # style ratio, content kept (pipeline/engine/quality.py); None when failed
    # float16 (EMBEDDING_DIM,), unit length (pipeline/engine/embedding.py); None when failed
    embedding: np.ndarray | None = None


class StyleTransfer:
    """Holds the VGG network (VGG19, or VGG16 from its file) on one device and caches targets.

    Style Grams are cached per (style, size, layers, repeat, pooling, colour source),
    content features per (content, size, layers, repeat, pooling), so each is computed
    once however many pairings and runs use it. `config` gives the defaults;
    `run(..., config=...)` may use another config on the same weights.

    Speed on CUDA (on the CPU: bf16 and channels-last where bf16 is native, eager):
    - `precision="auto"` (or "bf16"): the VGG19 forward (and so its backward)
      runs under bf16 autocast, on CUDA and on CPUs with native bf16
      (`cpu_has_native_bf16`); Gram matrices, losses, the image and Adam stay
      fp32 outside the autocast region. Gram GEMMs may use TF32: their inputs
      are bf16 values, which TF32 holds exactly. "fp32" turns all of it off.
    - `channels_last` (default: the config's memory_format, auto: on CUDA and on
      native-bf16 CPUs running bf16): the network's input, weights and
      activations in NHWC, the layout cuDNN's tensor-core kernels and oneDNN's
      bf16 kernels use; Grams read it as is (the optimized image itself stays NCHW).
    - cudnn.benchmark and fused Adam on CUDA; the step loop never waits on the
      device except when a progress callback reads the losses (every
      `loss_every` steps).
    - `compile=True`: torch.compile of the feature extractor (off by default:
      not measured to help yet; see docs/BENCHMARKS.md).
    The backend switches (cudnn.benchmark, TF32 matmul for bf16) are process-wide.
    """

    def __init__(
        self,
        config: Config,
        weights: WeightsSource,
        device: str | torch.device = "cpu",
        *,
        precision: str = "auto",
        channels_last: bool | None = None,
        compile: bool = False,
    ):
        self.config = config
        self.device = torch.device(device)
        self.weights = weights
        self.precision = resolve_precision(precision, self.device)
        # None: the config's memory_format (auto: per device and CPU kind, docs/BENCHMARKS.md engine-cl rows).
        self.channels_last = (
            resolve_channels_last(config.memory_format, self.device, self.precision)
            if channels_last is None
            else bool(channels_last)
        )
        self.compile = compile
        self._backend_flags()
        self._features = load_features(weights)
        self._extractors: dict[tuple, FeatureExtractor] = {}
        self._views: dict[tuple, _LayerView] = {}
        self.targets = TargetCache(self.features, self.device)
        self.extractor = self.extractor_for(config)

    # --- features and targets ---

    def extractor_for(self, config: Config) -> _LayerView:
        """Feature extractors share one set of weights; repeats pad every convolution with the
        pixels their layout puts around the tile; 'avg' pooling swaps each 2x2 max pool for a mean."""
        layers = tuple(dict.fromkeys(tuple(config.content_layers) + tuple(config.style_layers)))
        index = layer_index(self.weights.network)
        if missing := [name for name in layers if name not in index]:
            raise ValueError(f"layer {missing[0]!r} is not in {self.weights.network}; accepted: {', '.join(index)}")
        deepest = max(index[name] for name in layers)
        key = (deepest, config.repeat, config.pooling)
        if key not in self._extractors:
            modules = []
            for module in list(self._features)[: deepest + 1]:
                if isinstance(module, nn.Conv2d) and config.tile:
                    # Departure from the paper: the repeat's padding makes the output seamless.
                    module = RepeatConv2d(module, config.repeat)
                elif isinstance(module, nn.MaxPool2d) and config.pooling == "avg":
                    module = nn.AvgPool2d(kernel_size=2, stride=2)
                modules.append(module)
            extractor: nn.Module = FeatureExtractor(
                nn.Sequential(*modules),
                tuple(name for name, i in index.items() if i <= deepest),
                self.weights.preprocessing,
                self.weights.network,
            ).to(self.device)
            if self.channels_last:
                extractor = extractor.to(memory_format=torch.channels_last)
            if self.compile:
                extractor = torch.compile(extractor)
            self._extractors[key] = extractor
        view_key = (key, layers)
        if view_key not in self._views:
            self._views[view_key] = _LayerView(self._extractors[key], layers)
        return self._views[view_key]

    def features(self, image: torch.Tensor, config: Config | None = None) -> dict[str, torch.Tensor]:
        """VGG19 activations of (N, 3, H, W) images at the config's layers, in the
        engine's precision and layout (bf16 and channels-last on CUDA by default, bf16 on
        native-bf16 CPUs).
        Only this forward is under autocast: the caller's Gram and loss math is fp32."""
        view = self.extractor_for(config or self.config)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        if self.precision == "bf16":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return view(image)
        return view(image)

    def _backend_flags(self) -> None:
        """Process-wide switches for CUDA (set again at every run: other code may change them)."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            if self.precision == "bf16":
                torch.backends.cuda.matmul.allow_tf32 = True

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def style_targets(
        self, key: str, style: torch.Tensor, config: Config | None = None, color_source: str | None = None
    ) -> dict[str, torch.Tensor]:
        return self.targets.style_grams(
            key, tuple(style.shape[-2:]), lambda: style, config or self.config, color_source
        )

    def content_targets(self, key: str, content: torch.Tensor, config: Config | None = None) -> dict[str, torch.Tensor]:
        return self.targets.content_features(key, content, config or self.config)

    def clear_cache(self) -> None:
        self.targets.clear()

    def losses(
        self,
        image: torch.Tensor,
        content_t: dict[str, torch.Tensor],
        style_t: dict[str, torch.Tensor],
        config: Config | None = None,
        mask: torch.Tensor | None = None,
        layer_masks: dict[str, torch.Tensor] | None = None,
        features: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(N, 4) per-design losses: total, content, style, tv (weighted).

        `layer_masks`: `mask` already resized to each style layer's grid
        (`_layer_masks`), for a loop that calls this every step; computed here
        when not given. `features`: the image's, when the caller has them already."""
        cfg = (config or self.config).resolved()  # "auto" learning rate and TV weight made concrete
        feats = self.features(image, cfg) if features is None else features
        n = image.shape[0]
        if cfg.content_weight > 0 and content_t:
            c = cfg.content_weight * content_loss(
                feats, content_t, _layer_weights(cfg.content_layers, cfg.content_layer_weights)
            )
        else:
            c = torch.zeros(n, device=image.device)
        if mask is not None and layer_masks is None:
            layer_masks = {name: _resize_mask(mask, feats[name].shape[-2:]) for name in cfg.style_layers}
        elif mask is None:
            layer_masks = None
        s = cfg.style_weight * style_loss(
            feats, style_t, _layer_weights(cfg.style_layers, cfg.style_layer_weights), layer_masks
        )
        t = cfg.tv_weight * tv_loss(image, repeat=cfg.repeat, mask=mask)
        return torch.stack([c + s + t, c, s, t], dim=1)

    def probe_step(self, batch: int, size: tuple[int, int], config: Config | None = None) -> None:
        """One optimization step of `batch` seeded synthetic designs of `size` (H, W),
        through the same code as `run`: for measuring a step's device memory
        (pipeline.execution.devices.measured_step_memory). Touches no cache."""
        cfg = (config or self.config).resolved()
        image = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(self.device)
        self._backend_flags()
        with torch.no_grad():
            feats = self.features(image, cfg)
            content_t = {name: feats[name].float() for name in cfg.content_layers}
            style_t = {name: gram(feats[name]) for name in cfg.style_layers}
            del feats
        self._optimize(image.flip(-1), content_t, style_t, None, cfg, 1, 0, 1, None, 1.0)

    # --- the loop ---

    def run(
        self,
        pairings: Sequence[Pairing],
        on_progress: Callable[[Progress], None] | None = None,
        learning_rate_scale: float = 1.0,
        config: Config | None = None,
    ) -> list[DesignResult]:
        """Optimize a batch of pairings whose outputs share one size.

        `learning_rate_scale` multiplies the optimizer's step (a diverged design
        is retried once with a smaller one)."""
        if not pairings:
            return []
        # "auto" learning rate and TV weight from the config's size and steps (pipeline/config.py).
        cfg = (config or self.config).resolved()
        if cfg.optimizer == "lbfgs" and len(pairings) > 1:
            # L-BFGS couples every variable it sees through its line search and
            # history, so each design is optimized on its own to stay reproducible.
            return [r for p in pairings for r in self.run([p], on_progress, learning_rate_scale, cfg)]
        height, width = pairings[0].size
        pattern = cfg.content_weight == 0 or any(p.content is None for p in pairings)
        for p in pairings:
            if tuple(p.size) != (height, width):
                raise ValueError(
                    f"pairing {p.key}: output size {tuple(p.size)} differs from the batch's {(height, width)}"
                )
            if min(p.size) < MIN_SIDE or any(min(s.shape[-2:]) < MIN_SIDE for _, s in p.styles):
                raise ValueError(
                    f"pairing {p.key}: images must be at least {MIN_SIDE} px on the short side "
                    "(the network pools four times)"
                )
            if p.content is None and cfg.color != "style":
                raise ValueError(
                    f"pairing {p.key}: color={cfg.color!r} needs a content image; pattern mode takes color='style'"
                )
            if p.content is None and p.mask is not None:
                raise ValueError(f"pairing {p.key}: a mask needs a content image")
        ladder = _scale_ladder(cfg, height, width)
        for (h, w), _ in ladder[:-1]:
            if min(h, w) < MIN_SIDE:
                raise ValueError(
                    f"scale {max(h, w)} makes a {w}x{h} image; every scale's short side must be at least {MIN_SIDE} px: "
                    f"drop the smallest scales"
                )
        total_steps = sum(steps for _, steps in ladder)
        n = len(pairings)

        self._backend_flags()
        self._sync()
        started = time.perf_counter()
        targets_seconds = 0.0
        image: torch.Tensor | None = None
        curves: list[torch.Tensor] = []
        curve_steps: list[int] = []
        done_steps = 0
        for (h, w), steps in ladder:
            t0 = time.perf_counter()
            contents, masks, content_t, style_t = self._batch_targets(pairings, cfg, (h, w), pattern)
            self._sync()
            targets_seconds += time.perf_counter() - t0
            if image is None:
                image = self._initial_image(contents, cfg, n, (h, w), pattern)
            else:  # coarse-to-fine (the default ladder departs from the paper): the previous scale, upsampled
                image = upsample_tile(image, (h, w), cfg.repeat).clamp(0, 1)
            image, scale_curves = self._optimize(
                image, content_t, style_t, masks, cfg, steps, done_steps, total_steps, on_progress, learning_rate_scale
            )
            curves.append(scale_curves)
            curve_steps += [done_steps + s for s in range(0, steps, cfg.loss_every)]
            done_steps += steps

        assert image is not None
        with torch.no_grad():
            image = self._finish(image, contents, masks, cfg, pairings)
            # One forward of the designs and their references (content, or the noise start)
            # gives the final losses and the quality measures.
            references = self._references(pairings, cfg, (h, w))
            feats = self.features(torch.cat([image, references]), cfg)
            final_feats = {name: f[:n] for name, f in feats.items()}
            final = self.losses(image, content_t, style_t, cfg, masks, features=final_feats)
            layer_masks = _layer_masks(masks, cfg.style_layers, (h, w)) if masks is not None else None
            qualities = measure(
                final_feats,
                {name: f[n:] for name, f in feats.items()},
                style_t,
                cfg.style_layers,
                content_t or None,
                cfg.content_layers,
                layer_masks,
            )
            # The embedding reads the same forward where it has the canonical layers, else one more.
            embeddings = embed(final_feats) if _embeds_from_final(cfg) else self.embed(image)
            del feats, final_feats
        all_curves = torch.cat([*curves, final.unsqueeze(2)], dim=2).cpu()
        images = image.detach().float().contiguous().cpu()
        self._sync()
        optimize_seconds = time.perf_counter() - started - targets_seconds

        results = []
        for i, p in enumerate(pairings):
            final_loss = {name: float(all_curves[i, j, -1]) for j, name in enumerate(LOSS_NAMES)}
            error = None
            if not all(map(_finite, final_loss.values())) or not torch.isfinite(images[i]).all():
                error = f"non-finite loss after optimization: {final_loss}"
            leakage = None
            if p.mask is not None and p.content is not None:
                outside = (p.mask < 0.5).expand_as(images[i])
                leakage = float((images[i] - p.content.float())[outside].abs().mean()) if outside.any() else 0.0
            results.append(
                DesignResult(
                    key=p.key,
                    image=images[i],
                    loss_curves={name: all_curves[i, j].tolist() for j, name in enumerate(LOSS_NAMES)},
                    final_loss=final_loss,
                    targets_seconds=targets_seconds / n,
                    optimize_seconds=optimize_seconds / n,
                    steps_per_second=total_steps / optimize_seconds if optimize_seconds > 0 else float("inf"),
                    error=error,
                    curve_steps=curve_steps + [total_steps],
                    seam_score=seam_score(images[i], cfg.repeat) if cfg.tile else None,
                    mask_leakage=leakage,
                    quality=None if error else qualities[i],
                    embedding=None if error else embeddings[i],
                )
            )
        return results

    def embed(self, images: torch.Tensor) -> np.ndarray:
        """(N, EMBEDDING_DIM) float16: the embeddings of (N, 3, H, W) images in [0, 1], from the
        network as it is (zero padding, max pooling), in the engine's precision."""
        with torch.no_grad():
            return embed(self.features(images.to(self.device), EMBEDDING_CONFIG))

    def _references(self, pairings: Sequence[Pairing], cfg: Config, size: tuple[int, int]) -> torch.Tensor:
        """What each design's style distance is measured against: its content at the output size,
        or for a pattern without content the seeded noise the loop starts from, at the output size."""
        noise = torch.rand((3, *size), generator=torch.Generator().manual_seed(cfg.seed))
        references = [_resize(p.content, size).float() if p.content is not None else noise for p in pairings]
        return torch.stack(references).to(self.device)

    def _batch_targets(self, pairings: Sequence[Pairing], cfg: Config, size: tuple[int, int], pattern: bool):
        """Contents, masks and stacked targets of the batch at one scale. Styles
        are used at the size the caller gave, scaled down with the coarser scales."""
        h, w = size
        factor = max(h, w) / max(pairings[0].size)
        contents = masks = None
        content_t: dict[str, torch.Tensor] = {}
        scaled: list[torch.Tensor] | None = None  # each content at this scale, resized once
        if all(p.content is not None for p in pairings):
            scaled = [_resize(p.content, (h, w)) for p in pairings]
            contents = torch.stack(scaled).to(self.device)
            if not pattern:
                per = [self.content_targets(p.content_key, c, cfg) for p, c in zip(pairings, scaled)]
                content_t = {name: torch.stack([t[name] for t in per]) for name in cfg.content_layers}
        if any(p.mask is not None for p in pairings):
            ones = torch.ones(1, h, w)
            masks = torch.stack([_resize(p.mask if p.mask is not None else ones, (h, w)) for p in pairings]).to(
                self.device
            )
        per_style = []
        for i, p in enumerate(pairings):
            mixed: dict[str, torch.Tensor] = {}
            for (key, style), weight in zip(p.styles, p.weights):
                # The shape the style takes here keys the cache; resizing and colour
                # matching run only when its Grams are not cached yet.
                shape = (
                    tuple(style.shape[-2:])
                    if factor == 1
                    else _fit(style.shape[-2:], round(max(style.shape[-2:]) * factor))
                )
                source = p.content_key if cfg.color == "match" else None

                def prepare(style=style, shape=shape, i=i, p=p) -> torch.Tensor:
                    style_s = style if factor == 1 else _resize(style, shape)
                    if cfg.color == "match":
                        style_s = match_colors(style_s, scaled[i] if scaled is not None else _resize(p.content, (h, w)))
                    return style_s

                grams = self.targets.style_grams(key, shape, prepare, cfg, source)
                for name, g in grams.items():
                    mixed[name] = mixed.get(name, 0) + weight * g
            per_style.append(mixed)
        style_t = {name: torch.stack([t[name] for t in per_style]) for name in cfg.style_layers}
        return contents, masks, content_t, style_t

    def _initial_image(
        self, contents: torch.Tensor | None, cfg: Config, n: int, size: tuple[int, int], pattern: bool
    ) -> torch.Tensor:
        if cfg.init == "content" and not pattern:
            assert contents is not None
            return contents.clone()
        # Every design in a batch draws the same seeded noise, as it would alone.
        gen = torch.Generator().manual_seed(cfg.seed)
        noise = torch.rand((3, *size), generator=gen)
        return noise.expand(n, 3, *size).clone().to(self.device)

    def _finish(self, image: torch.Tensor, contents, masks, cfg: Config, pairings: Sequence[Pairing]) -> torch.Tensor:
        """Colour and mask post-processing of the final scale's output."""
        image = image.detach()
        if cfg.color == "keep" and contents is not None:
            image = keep_colors(image, contents)
        if masks is not None and contents is not None:
            # Outside the garment the output is the content; the soft edge lies inside the mask.
            soft = torch.stack(
                [
                    _feather(masks[i], cfg.mask_feather) if p.mask is not None else torch.ones_like(masks[i])
                    for i, p in enumerate(pairings)
                ]
            )
            image = soft * image + (1 - soft) * contents
        return image.clamp(0, 1)

    def _optimize(
        self,
        image,
        content_t,
        style_t,
        masks,
        cfg: Config,
        steps: int,
        step_offset: int,
        total_steps: int,
        on_progress,
        lr_scale: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The variable stays NCHW (Adam's fused kernel and the TV term read it flat);
        # features() hands the network a channels-last copy, a small one (3 channels).
        image = image.detach().clone().requires_grad_(True)
        sample_steps = list(range(0, steps, cfg.loss_every))
        # The mask at each style layer's grid: constant for the whole scale.
        layer_masks = _layer_masks(masks, cfg.style_layers, tuple(image.shape[-2:])) if masks is not None else None
        # Loss curves stay on the device; the host reads them at the end (or
        # every loss_every steps when a progress callback wants them).
        curves = torch.zeros(image.shape[0], len(LOSS_NAMES), len(sample_steps), device=self.device)
        if cfg.optimizer == "adam":
            # Fused: one kernel per step on CUDA; the CPU keeps the default implementation.
            fused = True if self.device.type == "cuda" else None
            opt = PaperAdam(
                [image],
                lr=cfg.learning_rate * lr_scale,
                betas=(cfg.adam_beta1, cfg.adam_beta2),
                eps=cfg.adam_eps,
                convention=cfg.adam_convention,
                fused=fused,
            )
        else:
            # A line search keeps L-BFGS from overshooting on rough images. max_eval is
            # given: torch's default (max_iter * 5 // 4 = 1) leaves the search no trial
            # beyond the first, so a rejected step is t = 0, the same step is tried again
            # and the design never moves again (measured on the real VGG16, fp32 and bf16).
            opt = torch.optim.LBFGS(
                [image],
                lr=cfg.lbfgs_learning_rate * lr_scale,
                max_iter=1,
                max_eval=LBFGS_MAX_EVALS,
                history_size=100,
                line_search_fn="strong_wolfe",
            )

        for step in range(steps):
            record = step % cfg.loss_every == 0
            losses_at_step: list[torch.Tensor] = []

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                losses = self.losses(image, content_t, style_t, cfg, masks, layer_masks=layer_masks)
                losses[:, 0].sum().backward()
                losses_at_step.append(losses.detach())  # noqa: B023 (called within this step)
                return losses[:, 0].sum()

            opt.step(closure)
            # The tutorial's clip_0_1 after each step, L-BFGS's too: unclamped it wanders far
            # outside [0, 1] and one clamp at the end undid most of its gain (real VGG16, 96 px,
            # 50 steps: a final loss 5x higher); the curvature pairs survive it in practice.
            with torch.no_grad():
                image.clamp_(0.0, 1.0)
            if record:
                curves[:, :, step // cfg.loss_every] = losses_at_step[0]
                if on_progress is not None:
                    totals, _, styles, _ = losses_at_step[0].T.tolist()
                    on_progress(
                        Progress(
                            step=step_offset + step,
                            steps=total_steps,
                            designs=image.shape[0],
                            loss_total=tuple(totals),
                            loss_style=tuple(styles),
                        )
                    )
        return image.detach(), curves


class _LayerView(nn.Module):
    """An extractor's output restricted to the layers one config uses."""

    def __init__(self, extractor: FeatureExtractor, layers: tuple[str, ...]):
        super().__init__()
        self.inner = extractor
        self.layers = layers

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.inner(image, until=self.layers)
        return {name: out[name] for name in self.layers}


# The network as the embedding reads it: its own padding and pooling, the style layers it uses.
EMBEDDING_CONFIG = Config(style_layers=EMBEDDING_LAYERS, content_layers=(EMBEDDING_LAYERS[-1],))


def _embeds_from_final(cfg: Config) -> bool:
    """Whether the final forward's activations are the embedding's: its layers, unpadded, max pooling."""
    return not cfg.tile and cfg.pooling == "max" and set(EMBEDDING_LAYERS) <= {*cfg.style_layers, *cfg.content_layers}


def _scale_ladder(cfg: Config, height: int, width: int) -> list[tuple[tuple[int, int], int]]:
    """[(size, steps)] from coarse to fine; the last is the output size."""
    if not cfg.scales:
        return [((height, width), cfg.steps)]
    steps = list(cfg.scale_steps) or [max(1, cfg.steps // 2**i) for i in range(len(cfg.scales))]
    ladder = []
    for longest, n in zip(cfg.scales, steps):
        h, w = _fit((height, width), longest)
        ladder.append(((h, w), n))
    ladder[-1] = ((height, width), ladder[-1][1])
    return ladder


def _fit(size: Sequence[int], longest: int) -> tuple[int, int]:
    h, w = int(size[0]), int(size[1])
    scale = longest / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image.unsqueeze(0).float(), size=size, mode="bicubic", align_corners=False, antialias=True)[
        0
    ].clamp(0, 1)


def _resize_mask(mask: torch.Tensor, size) -> torch.Tensor:
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask, size=tuple(size), mode="area")


def _feather(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A soft edge inside the mask: blurred, then zero wherever the mask is off."""
    binary = (mask >= 0.5).float()
    if radius <= 0:
        return binary
    kernel = torch.ones(1, 1, 2 * radius + 1, 2 * radius + 1, device=mask.device) / (2 * radius + 1) ** 2
    # Eroding first keeps the blur from reaching past the garment's edge.
    eroded = 1 - F.max_pool2d(1 - binary.unsqueeze(0), 2 * radius + 1, stride=1, padding=radius)
    blurred = F.conv2d(F.pad(eroded, (radius,) * 4, mode="replicate"), kernel)[0]
    return blurred.clamp(0, 1) * binary


def _layer_grid(name: str, size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of layer convB_L's activations for an (H, W) input: the 3x3 convolutions
    (zero or repeat padding 1) keep the grid; the B - 1 pools before it each halve it, rounding down."""
    pools = int(name[len("conv")]) - 1
    return size[0] >> pools, size[1] >> pools


def _layer_masks(mask: torch.Tensor, layers: Sequence[str], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """A (N, 1, H, W) mask resized to each layer's grid, as `losses` does it."""
    return {name: _resize_mask(mask, _layer_grid(name, size)) for name in layers}


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))
