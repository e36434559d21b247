"""Repeat layouts of a tile and the padding that makes a tile seamless under its own.

A repeat is a lattice of translations that map the fabric onto itself. For a tile
of H x W pixels:
- block: (H, 0) and (0, W), tiles side by side;
- half-drop: (H, 0) and (H // 2, W), every next column shifted down by half the tile's height;
- brick: (0, W) and (H, W // 2), every next row shifted right by half the tile's width.
With an even height (half-drop) or width (brick) the shifts of alternate columns
(rows) are 0, H/2, 0, ...: the textile half-drop and brick repeats. With an odd one
each column (row) drops H // 2 more than the previous, so that the fabric stays a lattice.

`repeat_pad` pads with the pixels the fabric puts around the tile: convolutions
on the padded tile see what they would see inside the fabric, and the TV term and
the seam score compare each edge with its true neighbour. The shift is taken
from the padded tensor's own size, so feature maps after each 2x2 pooling keep
their repeat (exactly when the sizes halve evenly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import REPEATS


def _check(repeat: str) -> None:
    if repeat not in REPEATS:
        raise ValueError(f"repeat={repeat!r} is invalid; accepted: {', '.join(REPEATS)}")


def repeat_pad(x: torch.Tensor, repeat: str, pad: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H + 2 pad, W + 2 pad), padded as the repeat lays out the fabric
    ('none': zeros, as the network's own padding)."""
    _check(repeat)
    if pad == 0:
        return x
    if repeat == "none":
        return F.pad(x, (pad,) * 4)
    h, w = x.shape[-2:]
    if pad > min(h, w):
        raise ValueError(f"padding {pad} is wider than the {w}x{h} tile")
    if repeat == "block":
        return F.pad(x, (pad,) * 4, mode="circular")  # the same pixels, one kernel
    if repeat == "brick":
        # Rows first, shifted: the row below the tile is its first row moved right by W // 2.
        shift = w // 2
        below = x[..., :pad, :].roll(shift, dims=-1)
        above = x[..., h - pad :, :].roll(-shift, dims=-1)
        x = torch.cat([above, x, below], dim=-2)
        return torch.cat([x[..., w - pad :], x, x[..., :pad]], dim=-1)
    # half-drop: columns first, shifted down by H // 2, then plain rows.
    shift = h // 2
    right = x[..., :pad].roll(shift, dims=-2)
    left = x[..., w - pad :].roll(-shift, dims=-2)
    x = torch.cat([left, x, right], dim=-1)
    return torch.cat([x[..., h - pad :, :], x, x[..., :pad, :]], dim=-2)


class RepeatConv2d(nn.Module):
    """A 3x3 convolution (its weights shared with `conv`) on the input padded by its repeat."""

    def __init__(self, conv: nn.Conv2d, repeat: str):
        super().__init__()
        _check(repeat)
        self.repeat = repeat
        self.pad = conv.padding[0]
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=0)
        self.conv.weight, self.conv.bias = conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(repeat_pad(x, self.repeat, self.pad))


def neighbour_differences(image: torch.Tensor, repeat: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(dy, dx) of (N, C, H, W) images, each pixel minus its neighbour above (left), the
    neighbours across the top (left) edge being those the repeat puts there. Every pair of
    neighbours of the fabric appears once; the edge ones are row 0 of dy and column 0 of dx."""
    padded = repeat_pad(image, repeat, 1)
    dy = image - padded[..., :-2, 1:-1]
    dx = image - padded[..., 1:-1, :-2]
    return dy, dx


# Bicubic interpolation reads two source pixels on each side.
_BICUBIC_REACH = 2


def upsample_tile(x: torch.Tensor, size: tuple[int, int], repeat: str) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, *size), bicubic, reading across the edges what the repeat puts
    there: a coarse scale's seamless tile stays seamless at the next (coarse-to-fine). With
    'none', the plain resize (its edges replicated)."""
    _check(repeat)
    if repeat == "none":
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    h, w = x.shape[-2:]
    pad = min(_BICUBIC_REACH, h, w)
    top, left = round(pad * size[0] / h), round(pad * size[1] / w)
    padded = repeat_pad(x, repeat, pad)
    out = F.interpolate(padded, size=(size[0] + 2 * top, size[1] + 2 * left), mode="bicubic", align_corners=False)
    return out[..., top : top + size[0], left : left + size[1]]


def fabric(tile: torch.Tensor, repeat: str, rows: int = 3, columns: int = 3) -> torch.Tensor:
    """(C, H, W) tile -> (C, rows H, columns W): the fabric laid out as the repeat says,
    tile (0, 0) at the top left."""
    _check(repeat)
    h, w = tile.shape[-2:]
    lines = []
    for i in range(rows):
        cells = []
        for j in range(columns):
            cell = tile
            if repeat == "half-drop":
                cell = tile.roll((j * (h // 2)) % h, dims=-2)
            elif repeat == "brick":
                cell = tile.roll((i * (w // 2)) % w, dims=-1)
            cells.append(cell)
        lines.append(torch.cat(cells, dim=-1))
    return torch.cat(lines, dim=-2)
