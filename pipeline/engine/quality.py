"""Quality measures of a design, recorded once per design in the catalog's `quality` column
(docs/ANALYSTS.md, "Quality measures"), from features the loop already has.

- style ratio, per style layer: the design's style distance to its style target (the mean
  squared Gram difference, as the style loss defines it, without the style weight and the
  layer weights; inside the garment mask where there is one) over the same distance of the
  reference: the content image, or for a pattern without content the seeded noise start at
  the output size. 0: the design's Grams are the style's; 1: no nearer the style than the
  content; above 1: further. Overall: the mean of the layers' ratios (each layer counts once).
- content kept: the cosine between the design's and the content's features at the content
  layers (mean over them): 1 is the content's structure unchanged. Null without a content loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pipeline.engine.losses import gram

Features = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Quality:
    style_ratio: float | None  # mean of the per-layer ratios; None where a layer's ratio is undefined
    style_ratio_per_layer: tuple[float | None, ...]  # in the order of params.style_layers
    content_kept: float | None  # None: a pattern (no content loss)

    def as_row(self) -> dict:
        return {
            "style_ratio": self.style_ratio,
            "style_ratio_per_layer": list(self.style_ratio_per_layer),
            "content_kept": self.content_kept,
        }


def style_distances(
    features: Features, targets: Features, layers: Sequence[str], masks: Features | None = None
) -> torch.Tensor:
    """(N, L): per design and style layer, the mean squared difference of its Gram and the target's."""
    return torch.stack(
        [
            (gram(features[name], masks[name] if masks else None) - targets[name]).pow(2).mean(dim=(1, 2))
            for name in layers
        ],
        dim=1,
    )


def content_similarity(features: Features, targets: Features, layers: Sequence[str]) -> torch.Tensor:
    """(N,): the cosine of each design's features and its content's, flattened per layer, mean over layers."""
    n = next(iter(targets.values())).shape[0]
    terms = [
        torch.nn.functional.cosine_similarity(
            features[name].float().reshape(n, -1), targets[name].float().reshape(n, -1), dim=1, eps=1e-12
        )
        for name in layers
    ]
    return torch.stack(terms).mean(0)


def measure(
    final: Features,
    reference: Features,
    style_targets: Features,
    style_layers: Sequence[str],
    content_targets: Features | None = None,
    content_layers: Sequence[str] = (),
    masks: Features | None = None,
) -> list[Quality]:
    """The quality of each design of a batch: `final` the designs' features, `reference` their
    references' (content, or the noise start), `masks` the garment masks at each style layer's grid."""
    ratios = (
        style_distances(final, style_targets, style_layers, masks)
        / style_distances(reference, style_targets, style_layers, masks)
    ).tolist()
    kept = (
        content_similarity(final, content_targets, content_layers).tolist()
        if content_targets and content_layers
        else [None] * len(ratios)
    )
    out = []
    for per_layer, k in zip(ratios, kept):
        # A reference already at the style (distance 0) leaves its layer's ratio undefined.
        layer_ratios = tuple(r if math.isfinite(r) else None for r in per_layer)
        overall = None if any(r is None for r in layer_ratios) else sum(layer_ratios) / len(layer_ratios)
        out.append(Quality(overall, layer_ratios, k if k is None or math.isfinite(k) else None))
    return out
