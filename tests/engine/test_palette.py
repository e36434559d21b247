"""The colourway maths (pipeline/engine/palette.py): OKLab, palettes parsed, flat N-ink
recolouring without dithering, darkest to darkest."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.engine.palette import (
    ColourwayError,
    Palette,
    inks_palette,
    oklab_to_srgb,
    parse_palette,
    recolour,
    srgb_to_oklab,
)


def test_oklab_round_trips_and_palettes_parse():
    rgb = np.random.default_rng(0).random((50, 3))
    np.testing.assert_allclose(oklab_to_srgb(srgb_to_oklab(rgb)), rgb, atol=1e-9)
    np.testing.assert_allclose(srgb_to_oklab(np.ones(3)), [1.0, 0.0, 0.0], atol=1e-4)  # white: L 1, no chroma
    assert parse_palette("#1F6FB4, f08a5d\n# a comment\n#ffffff  # white", "p") == ("#1f6fb4", "#f08a5d", "#ffffff")
    with pytest.raises(ColourwayError, match="'blue' is not a hex colour; accepted: #RRGGBB"):
        parse_palette("#000000 blue", "p")
    with pytest.raises(ColourwayError, match="colour count 1 is invalid; accepted: 2 to 16 colours"):
        parse_palette("#000000", "p")
    with pytest.raises(ColourwayError, match="--inks 40 is invalid"):
        inks_palette(40)


def test_inks_are_flat_n_colours_without_dithering_and_deterministic():
    rng = np.random.default_rng(1)
    rgb = np.clip(np.linspace(0, 1, 32)[None, :, None] + rng.normal(0, 0.003, (32, 32, 3)), 0, 1)
    flat, colours = recolour(rgb, inks_palette(4))
    assert len(colours) == 4 and len(np.unique(flat.reshape(-1, 3), axis=0)) == 4
    again, colours_again = recolour(rgb, inks_palette(4))
    assert colours == colours_again and np.array_equal(flat, again)
    # No dithering: a pixel takes its nearest ink, so a smooth ramp gives contiguous bands.
    bands = np.unique(flat[16], axis=0, return_index=True)[1]
    assert len(bands) == 4
    labels = [tuple(p) for p in flat[16]]
    assert sum(labels[i] != labels[i + 1] for i in range(31)) == 3


def test_a_palette_maps_darkest_to_darkest():
    two_tone = np.zeros((8, 8, 3))
    two_tone[:, 4:] = 0.9  # a light stripe on dark
    flat, colours = recolour(two_tone, Palette("palette", ("#ffe0a0", "#102060")))
    assert colours == ["#102060", "#ffe0a0"]
    assert np.allclose(flat[0, 0] * 255, [0x10, 0x20, 0x60]) and np.allclose(flat[0, 7] * 255, [0xFF, 0xE0, 0xA0])
