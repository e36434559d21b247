"""The targets of the loss, cached per input: style Gram matrices per (style,
size, layers, repeat, pooling, colour source) and content features per (content,
size, layers, repeat, pooling), so each is computed once however many pairings and runs use it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

from pipeline.config import Config
from pipeline.engine.losses import gram

TARGET_CACHE_ENTRIES = 512  # per kind; bounds device memory on huge catalogs

Targets = dict[str, torch.Tensor]
Features = Callable[[torch.Tensor, Config], Targets]  # (N, 3, H, W) images -> activations per layer


class TargetCache:
    """Least-recently-used caches of style and content targets, computed with `features`."""

    def __init__(self, features: Features, device: torch.device, entries: int = TARGET_CACHE_ENTRIES):
        self.features = features
        self.device = device
        self.entries = entries
        self.style: OrderedDict[tuple, Targets] = OrderedDict()
        self.content: OrderedDict[tuple, Targets] = OrderedDict()

    def _remember(self, cache: OrderedDict, key: tuple, make: Callable[[], Targets]) -> Targets:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = cache[key] = make()
        if len(cache) > self.entries:
            cache.popitem(last=False)
        return value

    @torch.no_grad()
    def style_grams(
        self,
        key: str,
        shape: tuple[int, int],
        prepare: Callable[[], torch.Tensor],
        cfg: Config,
        color_source: str | None,
    ) -> Targets:
        """The style's Grams, cached under the (H, W) `shape` the style has once prepared;
        `prepare` (resize, colour match) runs only when they are not cached yet."""
        # The shape is the style's at its style_scale: each motif scale has its own Grams.
        cache_key = (key, shape[0], shape[1], tuple(cfg.style_layers), cfg.repeat, cfg.pooling, color_source)

        def make() -> Targets:
            style = prepare()
            assert tuple(style.shape[-2:]) == tuple(shape), (tuple(style.shape), shape)
            feats = self.features(style.unsqueeze(0).to(self.device), cfg)
            return {name: gram(feats[name])[0] for name in cfg.style_layers}

        return self._remember(self.style, cache_key, make)

    @torch.no_grad()
    def content_features(self, key: str, content: torch.Tensor, cfg: Config) -> Targets:
        cache_key = (key, content.shape[-2], content.shape[-1], tuple(cfg.content_layers), cfg.repeat, cfg.pooling)

        def make() -> Targets:
            feats = self.features(content.unsqueeze(0).to(self.device), cfg)
            return {name: feats[name][0].float() for name in cfg.content_layers}

        return self._remember(self.content, cache_key, make)

    def clear(self) -> None:
        self.style.clear()
        self.content.clear()
