"""Repeat layouts: the padding is what the fabric puts around a tile, and optimized
tiles are seamless under their own repeat (and only under it)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import fabric_seams

from pipeline.config import REPEATS, Config
from pipeline.engine.losses import seam_score, tv_loss
from pipeline.engine.repeats import fabric, repeat_pad, upsample_tile
from pipeline.engine.transfer import Pairing, StyleTransfer
from pipeline.engine.weights import resolve_weights

TILED = ("block", "half-drop", "brick")
BASE = Config(size=32, steps=60, loss_every=10, weights="random", learning_rate=0.05, content_weight=0.0, seed=3)
STYLE = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("repeat", TILED)
@pytest.mark.parametrize("size", [(8, 10), (7, 9)])
def test_padding_is_what_the_fabric_puts_around_a_tile(repeat: str, size: tuple[int, int]):
    h, w = size
    tile = torch.rand(2, h, w, generator=torch.Generator().manual_seed(1))
    cloth = fabric(tile, repeat)
    assert cloth.shape == (2, 3 * h, 3 * w)
    # Under a lattice every cell is a whole tile of the repeat: the centre one, padded, is its neighbourhood.
    centre = cloth[:, h : 2 * h, w : 2 * w]
    for pad in (1, 2):
        expected = cloth[:, h - pad : 2 * h + pad, w - pad : 2 * w + pad]
        torch.testing.assert_close(repeat_pad(centre.unsqueeze(0), repeat, pad)[0], expected)


def test_half_drop_and_brick_shift_alternate_columns_and_rows_by_half():
    tile = torch.arange(8 * 6, dtype=torch.float32).view(1, 8, 6)
    drop = fabric(tile, "half-drop", rows=1, columns=3)
    torch.testing.assert_close(drop[:, :, 6:12], tile.roll(4, dims=-2))  # second column down by half the height
    torch.testing.assert_close(drop[:, :, 12:], tile)
    brick = fabric(tile, "brick", rows=3, columns=1)
    torch.testing.assert_close(brick[:, 8:16, :], tile.roll(3, dims=-1))  # second row right by half the width
    torch.testing.assert_close(brick[:, 16:, :], tile)


def test_block_padding_and_tv_are_the_circular_ones():
    image = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(repeat_pad(image, "block", 1), F.pad(image, (1,) * 4, mode="circular"))
    old = (image - image.roll(1, dims=2)).abs().sum((1, 2, 3)) + (image - image.roll(1, dims=3)).abs().sum((1, 2, 3))
    torch.testing.assert_close(tv_loss(image, repeat="block"), old)
    torch.testing.assert_close(repeat_pad(image, "none", 1), F.pad(image, (1,) * 4))


def test_seam_score_reads_the_repeats_own_edges():
    # cos(2 pi (y / H + x / 2W)) is periodic under the half-drop lattice (H / 2, W), not under block.
    h, w = 32, 24
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    wave = (0.5 + 0.4 * torch.cos(2 * math.pi * (y / h + x / (2 * w)))).expand(3, h, w)
    assert seam_score(wave, "half-drop") == pytest.approx(1.0, abs=0.05)
    assert seam_score(wave, "block") > 5
    assert fabric_seams(fabric(wave, "half-drop"), h, w) == pytest.approx(1.0, abs=0.05)
    # the same wave turned a quarter is a brick repeat
    turned = wave.transpose(1, 2)
    assert seam_score(turned, "brick") == pytest.approx(1.0, abs=0.05) and seam_score(turned, "block") > 5


@pytest.mark.parametrize("repeat", TILED)
def test_a_flat_border_is_not_read_as_seamless(repeat: str):
    """A textured inside on plain ground (a garment on its background) repeats as bands of
    ground between the motifs: it scores as far from 1 as a hard seam does, not below 1."""
    gen = torch.Generator().manual_seed(5)
    seamless = torch.rand(3, 64, 64, generator=gen)  # i.i.d. pixels: the edges look like the inside
    flat_border = torch.full((3, 32, 32), 0.9)
    flat_border[:, 6:26, 6:26] = torch.rand(3, 20, 20, generator=gen)
    hard_seam = torch.linspace(0, 1, 32).expand(3, 32, 32).clone()  # a ramp: the wrap jumps 0 -> 1
    hard_seam = hard_seam if repeat != "brick" else hard_seam.transpose(1, 2).contiguous()
    assert seam_score(seamless, repeat) == pytest.approx(1.0, abs=0.1)
    assert seam_score(flat_border, repeat) > 5
    assert seam_score(hard_seam, repeat) > 5
    # Barely active edges (1/255 of change) round an active inside still read as a visible repeat.
    faint = flat_border + torch.rand(3, 32, 32, generator=gen) / 255
    assert seam_score(faint, repeat) > 5
    # A tile with no change at all has no seam either.
    assert seam_score(torch.full((3, 32, 32), 0.5), repeat) == 1.0


@pytest.mark.parametrize("repeat", ["half-drop", "brick"])
def test_an_optimized_tile_is_seamless_under_its_repeat_only(repeat: str):
    engine = StyleTransfer(BASE, resolve_weights("random", 0), "cpu")
    job = [Pairing("p", None, None, "s", STYLE, out_size=(32, 32))]
    (tiled,) = engine.run(job, config=BASE.replace(repeat=repeat))
    (plain,) = engine.run(job, config=BASE)
    assert tiled.seam_score == pytest.approx(seam_score(tiled.image, repeat))
    assert tiled.seam_score < 1.2
    assert seam_score(plain.image, repeat) > tiled.seam_score + 0.1
    # Laid out as the repeat says the fabric shows no seam; laid out as blocks it does,
    # where the repeat shifts the tiles: between columns (half-drop) or rows (brick).
    assert fabric_seams(fabric(tiled.image, repeat), 32, 32) < 1.2
    shifted = "columns" if repeat == "half-drop" else "rows"
    good = fabric_seams(fabric(tiled.image, repeat), 32, 32, shifted)
    assert fabric_seams(fabric(tiled.image, "block"), 32, 32, shifted) > good + 0.1


def test_repeat_changes_the_design_id_and_tile_stays_its_alias():
    assert Config().replace(tile=True).repeat == "block" and Config().replace(tile=True).tile
    assert Config.from_dict({"tile": False}).repeat == "none"
    ids = {Config(repeat=r).identity_json() for r in REPEATS}
    assert len(ids) == len(REPEATS)
    with pytest.raises(ValueError, match="tile=True and repeat='none' disagree"):
        Config().replace(tile=True, repeat="none")
    with pytest.raises(ValueError, match="repeat='zigzag' is invalid; accepted: none, block, half-drop, brick"):
        Config(repeat="zigzag")


@pytest.mark.parametrize("repeat", TILED)
def test_coarse_to_fine_upsamples_a_tile_as_its_fabric(repeat: str):
    """The next scale starts from the coarse tile upsampled as part of its fabric, so a seamless
    coarse tile stays seamless: the middle tile of the upsampled fabric, not a resize whose
    edges replicate the border."""
    tile = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(5))
    up = upsample_tile(tile, (24, 32), repeat)
    cloth = F.interpolate(fabric(tile[0], repeat).unsqueeze(0), size=(72, 96), mode="bicubic", align_corners=False)
    # The fabric's middle cell is the tile as its column (half-drop) or row (brick) shifts it.
    middle = cloth[..., 24:48, 32:64]
    middle = {"half-drop": middle.roll(-12, dims=-2), "brick": middle.roll(-16, dims=-1)}.get(repeat, middle)
    torch.testing.assert_close(up, middle, rtol=0, atol=1e-5)
    plain = F.interpolate(tile, size=(24, 32), mode="bicubic", align_corners=False)
    assert not torch.allclose(plain, middle, atol=1e-3)  # the edges differ
    torch.testing.assert_close(upsample_tile(tile, (24, 32), "none"), plain)
