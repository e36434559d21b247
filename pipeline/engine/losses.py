"""The losses of the paper's TensorFlow tutorial, per design of a batch, and the seam score of a tile."""

from __future__ import annotations

from functools import lru_cache

import torch

from pipeline.engine.repeats import neighbour_differences

LOSS_NAMES = ("total", "content", "style", "tv")


def gram(features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C), divided by the number of positions H*W.

    As in the TensorFlow tutorial the paper ran; Gatys et al. instead divide
    the squared error by 4 N^2 M^2. Always computed in fp32. With a mask
    (N, 1, H, W) in [0, 1], only masked positions count, divided by their weight.
    """
    n, c, h, w = features.shape
    flat = features.float()
    positions: torch.Tensor | float
    if mask is not None:
        flat = flat * mask
        positions = mask.float().sum(dim=(1, 2, 3)).clamp_min(1.0).view(n, 1, 1)
    else:
        positions = float(h * w)
    if _channels_last(flat):
        # (N, H, W, C) in memory: a view as (N, HW, C), no copy; the same sums.
        rows = flat.permute(0, 2, 3, 1).reshape(n, h * w, c)
        return torch.bmm(rows.transpose(1, 2), rows) / positions
    flat = flat.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / positions


def _channels_last(tensor: torch.Tensor) -> bool:
    """Stored channels-last and not also plain contiguous (C = 1 or 1x1 grids are both)."""
    return tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last)


def content_loss(
    features: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], layer_weights: dict[str, float]
) -> torch.Tensor:
    """Per-design feature MSE, weighted and averaged over the content layers: (N,)."""
    terms = [
        w * (features[name].float() - targets[name]).pow(2).mean(dim=(1, 2, 3)) for name, w in layer_weights.items()
    ]
    return torch.stack(terms).sum(0) / len(terms)


def style_loss(
    features: dict[str, torch.Tensor],
    target_grams: dict[str, torch.Tensor],
    layer_weights: dict[str, float],
    masks: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-design Gram MSE, weighted and averaged over the style layers: (N,)."""
    terms = [
        w * (gram(features[name], masks[name] if masks else None) - target_grams[name]).pow(2).mean(dim=(1, 2))
        for name, w in layer_weights.items()
    ]
    return torch.stack(terms).sum(0) / len(terms)


def tv_loss(image: torch.Tensor, repeat: str = "none", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-design total variation, the sum of absolute neighbour differences
    (tf.image.total_variation) of images in [0, 1]: (N,). A `repeat` other than
    'none' adds the differences across the edges, with the neighbours the repeat
    puts there (pipeline/engine/repeats.py); `mask` (N, 1, H, W) weights each difference."""
    wrap = repeat != "none"
    if wrap:
        dy, dx = neighbour_differences(image, repeat)
    else:
        dy = image[:, :, 1:, :] - image[:, :, :-1, :]
        dx = image[:, :, :, 1:] - image[:, :, :, :-1]
    if mask is not None:
        if wrap:
            dy, dx = dy * mask, dx * mask
        else:
            dy, dx = dy * mask[:, :, 1:, :], dx * mask[:, :, :, 1:]
    return dx.abs().sum(dim=(1, 2, 3)) + dy.abs().sum(dim=(1, 2, 3))


def seam_score(image: torch.Tensor, repeat: str = "block") -> float:
    """How the tile's edges compare with its inside, under `repeat`: the mean absolute
    difference across the edges (each edge pixel against the neighbour the repeat puts
    beside it) and the mean between interior neighbouring rows and columns, the larger
    over the smaller. 1.0 is seamless; it grows either way a repeat shows: a seam (more
    change across the edges than inside) or a flat border (less: the tile's edge is plain
    ground, which the fabric shows as bands between the motifs).

    Before the larger-over-smaller, a flat border scored far below 1 and read as seamless."""
    image = image.float()
    dy, dx = neighbour_differences(image.unsqueeze(0), repeat)
    across = torch.cat([dy[0, :, 0, :].abs().flatten(), dx[0, :, :, 0].abs().flatten()]).mean()
    inside = torch.cat(
        [(image[:, 1:, :] - image[:, :-1, :]).abs().flatten(), (image[:, :, 1:] - image[:, :, :-1]).abs().flatten()]
    ).mean()
    # A floor far under one 8-bit level (1/255): an all-flat tile is seamless (1.0), a flat border
    # round an active inside scores high instead of dividing by zero.
    floor = 1e-4
    return float(torch.maximum(across, inside).clamp_min(floor) / torch.minimum(across, inside).clamp_min(floor))


@lru_cache(maxsize=64)
def _layer_weights(layers: tuple[str, ...], weights: tuple[float, ...]) -> dict[str, float]:
    """Layer -> weight (all 1 when none are given). Cached, as `losses` asks every step:
    the dict is shared, not to be modified."""
    weights = weights or (1.0,) * len(layers)
    return {name: float(w) for name, w in zip(layers, weights)}
