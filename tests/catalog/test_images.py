"""pipeline.catalog.images: decoding every Pillow mode to RGB, refusing bad files, PNG writing."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from helpers import encode, exif_jpeg_bytes, png_bytes, with_ihdr_size
from PIL import Image

from pipeline.catalog.images import (
    ImageLoadError,
    decode_rgb,
    output_size,
    read_image_bytes,
    resize_to_tensor,
    tensor_to_png_bytes,
)
from pipeline.files import write_atomic

LIMIT = 10_000_000


def _rgb(data: bytes, name: str = "test.png", limit: int = LIMIT) -> np.ndarray:
    image = decode_rgb(data, name, limit)
    assert image.mode == "RGB"
    return np.asarray(image)


# --- modes ------------------------------------------------------------------------------


def test_exif_rotated_jpeg_is_turned_upright():
    # 40 wide x 20 high: left half red, right half blue; orientation 6 = rotate 90 degrees clockwise to view
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    data = exif_jpeg_bytes(image, 6, quality=95)
    out = decode_rgb(data, "rotated.jpg", LIMIT)
    assert out.size == (20, 40)
    array = np.asarray(out).astype(int)
    top, bottom = array[2:16].reshape(-1, 3).mean(0), array[24:38].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_rgba_is_composited_on_white():
    array = np.zeros((4, 4, 4), dtype=np.uint8)
    array[0, 0] = (10, 20, 30, 0)  # fully transparent
    array[0, 1] = (10, 20, 30, 255)  # opaque
    array[0, 2] = (0, 0, 0, 128)  # half-transparent black
    data = encode(Image.fromarray(array, "RGBA"), "PNG")
    rgb = _rgb(data)
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[0, 1]) == (10, 20, 30)
    assert all(abs(int(v) - 127) <= 1 for v in rgb[0, 2])


def test_palette_png_with_transparency():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putpixel((1, 1), 1)
    data = encode(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    rgb = _rgb(data)
    assert tuple(rgb[0, 0]) == (255, 255, 255)  # index 0: transparent red -> white
    assert tuple(rgb[1, 1]) == (0, 0, 255)


def test_palette_png_without_transparency():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0] + [0] * (256 * 3 - 3))
    assert tuple(_rgb(encode(image, "PNG"))[2, 2]) == (255, 0, 0)


def test_la_is_composited_on_white():
    grey = Image.new("L", (4, 4), 100)
    alpha = Image.new("L", (4, 4), 255)
    alpha.putpixel((3, 0), 0)
    data = encode(Image.merge("LA", (grey, alpha)), "PNG")
    rgb = _rgb(data)
    assert tuple(rgb[0, 0]) == (100, 100, 100)
    assert tuple(rgb[0, 3]) == (255, 255, 255)


def test_16_bit_grayscale_is_scaled_not_clipped():
    array = np.array([[0, 65535], [32768, 200]], dtype=np.uint16)
    data = encode(Image.fromarray(array), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    rgb = _rgb(data)
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    assert tuple(rgb[0, 1]) == (255, 255, 255)
    assert tuple(rgb[1, 0]) == (128, 128, 128)
    assert tuple(rgb[1, 1]) == (1, 1, 1)  # 200/65535, not 200/255


def test_16_bit_grayscale_with_only_low_values_is_still_16_bit():
    data = encode(Image.fromarray(np.full((4, 4), 200, dtype=np.uint16)), "PNG")
    assert _rgb(data).max() <= 1


def test_cmyk_jpeg_becomes_rgb():
    image = Image.new("CMYK", (16, 16), (255, 0, 0, 0))  # pure cyan
    image.paste((0, 0, 0, 0), (0, 0, 8, 16))  # left half: no ink = white
    data = encode(image, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    rgb = _rgb(data, "cmyk.jpg").astype(int)
    assert rgb.shape == (16, 16, 3)
    left, right = rgb[:, :6].reshape(-1, 3).mean(0), rgb[:, 10:].reshape(-1, 3).mean(0)
    assert (left > 240).all()
    assert right[0] < 30 and right[1] > 225 and right[2] > 225


def test_grayscale_becomes_equal_channels():
    array = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    rgb = _rgb(encode(Image.fromarray(array, "L"), "PNG"))
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], array)


def test_bilevel_becomes_black_and_white():
    image = Image.new("1", (4, 4), 0)
    image.putpixel((0, 0), 1)
    rgb = _rgb(encode(image, "PNG"))
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[1, 1]) == (0, 0, 0)


def test_rgb_png_is_unchanged():
    data = png_bytes(9, 7, seed=3)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(_rgb(data), expected)


@pytest.mark.parametrize("mode, color, key", [("L", 100, 100), ("RGB", (10, 20, 30), (10, 20, 30))])
def test_transparency_key_on_l_and_rgb_is_composited_on_white(mode, color, key):
    data = encode(Image.new(mode, (4, 4), color), "PNG", transparency=key)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    assert tuple(_rgb(data)[0, 0]) == (255, 255, 255)


# --- refusals -------------------------------------------------------------------------------


def test_too_many_pixels_is_refused_before_decoding():
    # declares 100000 x 100000 but carries 4x4 of data: decoding would fail differently (or take forever)
    data = with_ihdr_size(png_bytes(4, 4), 100_000, 100_000)
    with pytest.raises(ImageLoadError) as info:
        decode_rgb(data, "bomb.png", 64_000_000)
    message = str(info.value)
    assert "max_image_pixels" in message
    assert "bomb.png" in message
    assert "10000000000" in message


def test_pixel_limit_is_inclusive():
    data = png_bytes(16, 16)
    assert decode_rgb(data, "ok.png", 256).size == (16, 16)
    with pytest.raises(ImageLoadError, match="max_image_pixels"):
        decode_rgb(data, "ok.png", 255)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)),
        png_bytes(32, 32, seed=1)[:200],
        png_bytes(32, 32, seed=1)[:-30],
    ],
    ids=["empty", "random", "truncated-early", "truncated-late"],
)
def test_unreadable_bytes_raise_image_load_error_naming_the_file(data):
    with pytest.raises(ImageLoadError) as info:
        decode_rgb(data, "designs/broken-file.png", LIMIT)
    assert "designs/broken-file.png" in str(info.value)


def test_read_image_bytes_missing_path(tmp_path):
    missing = tmp_path / "no" / "such.png"
    with pytest.raises(ImageLoadError) as info:
        read_image_bytes(missing)
    assert str(missing) in str(info.value) and "not found" in str(info.value)


def test_read_image_bytes_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="is a directory") as info:
        read_image_bytes(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_read_image_bytes_reads(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"abc")
    assert read_image_bytes(path) == b"abc"


# --- sizes and tensors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, longest, expected",
    [
        ((300, 200), 64, (64, 43)),
        ((200, 300), 64, (43, 64)),
        ((64, 64), 32, (32, 32)),
        ((10, 20), 40, (20, 40)),  # upscaling keeps the aspect too
        ((1000, 10), 100, (100, 1)),
        ((5000, 1), 100, (100, 1)),  # never 0
    ],
)
def test_output_size_keeps_aspect_with_longest_side(size, longest, expected):
    assert output_size(*size, longest) == expected


def test_resize_to_tensor_shape_and_range():
    image = Image.fromarray(np.asarray(Image.open(io.BytesIO(png_bytes(30, 20)))), "RGB")
    tensor = resize_to_tensor(image, (24, 16))
    assert tensor.shape == (3, 16, 24) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min().item() and tensor.max().item() <= 1.0
    same = resize_to_tensor(image, image.size)
    np.testing.assert_allclose(same.permute(1, 2, 0).numpy() * 255, np.asarray(image), atol=1e-3)


def test_png_round_trip_within_one_level_and_carries_text():
    tensor = torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(0))
    tensor[0, 0, 0], tensor[1, 0, 0] = -0.5, 1.5  # clamped
    text = {"design_id": "abc123", "params": '{"size": 32}', "note": "ünïcödé"}
    data = tensor_to_png_bytes(tensor, text)
    assert Image.open(io.BytesIO(data)).text == text
    decoded = decode_rgb(data, "out.png", LIMIT)
    assert decoded.size == (23, 17)
    back = resize_to_tensor(decoded, decoded.size)
    assert (back - tensor.clamp(0, 1)).abs().max().item() <= 0.5 / 255 + 1e-6
    assert back[0, 0, 0].item() == 0.0 and back[1, 0, 0].item() == 1.0


def test_png_without_text():
    data = tensor_to_png_bytes(torch.zeros(3, 4, 4))
    assert Image.open(io.BytesIO(data)).text == {}


def test_write_atomic_writes_and_returns_sha256(tmp_path):
    path = tmp_path / "images" / "ab" / "abcd.png"
    data = b"\x89PNG some bytes"
    digest = write_atomic(path, data)
    assert path.read_bytes() == data
    assert digest == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in path.parent.iterdir()) == ["abcd.png"]
    # overwrite
    assert write_atomic(path, b"second") == hashlib.sha256(b"second").hexdigest()
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["abcd.png"]


def test_write_atomic_failure_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_every_output_follows_the_umask(sample_catalog, tmp_path, umask, mode):
    """A design PNG, the loss plot and any write_atomic file get 0666 & ~umask, like the
    files open() makes: mkstemp's 0600 kept other users of a shared catalog out."""
    import os
    import stat

    from helpers import square_jobs

    from pipeline.catalog.designs import DesignCatalog
    from pipeline.config import Config
    from pipeline.engine.weights import resolve_weights
    from pipeline.execution.shard import run_shard
    from pipeline.views.loss_plot import plot_loss_curves

    config = Config(weights="random", size=32, steps=1, loss_every=1)
    weights = resolve_weights("random", 0)
    jobs = square_jobs(sample_catalog, config, 1, weights.identity)
    out = tmp_path / "out"
    previous = os.umask(umask)
    try:
        plain = tmp_path / "plain.bin"
        write_atomic(plain, b"bytes")
        (row,) = run_shard(jobs, config, weights, "cpu", DesignCatalog(out), "r")
        plot = plot_loss_curves([row], tmp_path / "runs" / "r" / "loss_curves.png")
    finally:
        os.umask(previous)
    assert row["status"] == "ok", row["error"]
    for path in (plain, out / row["output_uri"], plot):
        assert stat.S_IMODE(path.stat().st_mode) == mode, (path, oct(path.stat().st_mode))
