"""Nothing lost, nothing let in: every image a design team really has makes a
design, and every image that cannot be used fails only its own pairings.

Each test runs the pure-Python pipeline (no Prefect): load_input_catalog ->
plan_designs -> run_shard, with random weights at size 32 and two steps."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import (
    catalog_row,
    encode,
    exif_jpeg_bytes,
    image_array,
    png16_bytes,
    png_bytes,
    png_chunk,
    tiff16_rgb_bytes,
    with_ihdr_size,
    write_catalog,
    write_png,
    ycck_jpeg_bytes,
)
from PIL import Image, ImageFile

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.images import decode_rgb, header_size
from pipeline.catalog.inputs import CatalogError, load_input_catalog
from pipeline.config import Config
from pipeline.engine.weights import resolve_weights
from pipeline.execution.run import Run
from pipeline.execution.shard import run_shard
from pipeline.planning.plan import plan_designs

CFG = Config(weights="random", size=32, steps=2, loss_every=1)
WEIGHTS = resolve_weights("random", 0)
RUN_ID = "t"
LIMIT = CFG.max_image_pixels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
CYAN = (0, 255, 255)


def run_pipeline(catalog_path: Path, out: Path, config: Config = CFG, allow_roots: tuple[str, ...] = ()):
    """The run's steps without Prefect, uncommitted; returns (plan, rows keyed by (content_id, style_id))."""
    catalog = load_input_catalog(catalog_path, allow_roots)
    run = Run(catalog_path, out, config, run_id=RUN_ID)
    plan = run.plan(catalog, WEIGHTS, ["cpu"])
    rows = run.input_fault_rows()
    rows += run_shard(list(plan.todo), config, WEIGHTS, "cpu", run.designs, RUN_ID)
    keyed = {(r["content_id"], r["style_id"]): r for r in rows}
    assert len(keyed) == len(rows), "one row per pairing"
    return plan, keyed


def assert_ok(row: dict, out: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An ok row has its PNG on disk with the recorded hash and size; returns its pixels."""
    assert row["status"] == "ok", row.get("error")
    assert row["error"] is None
    png = out / row["output_uri"]
    assert hashlib.sha256(png.read_bytes()).hexdigest() == row["output_sha256"]
    with Image.open(png) as image:
        assert image.size == (row["width"], row["height"])
        if size is not None:
            assert image.size == size
        return np.asarray(image.convert("RGB")).astype(int)


def assert_probes(array: np.ndarray, probes: list[tuple[float, float, tuple[int, int, int]]], tolerance: int) -> None:
    """Each probe (x, y as fractions of the size, colour): the 3x3 mean there is within `tolerance`."""
    height, width = array.shape[:2]
    for fx, fy, colour in probes:
        x, y = min(int(fx * width), width - 2), min(int(fy * height), height - 2)
        mean = array[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3).mean(0)
        assert np.abs(mean - np.array(colour)).max() <= tolerance, f"at ({x}, {y}): {mean.round()} != {colour}"


# --- every image a design team has ------------------------------------------------------------


def _halves(left, right, size=(40, 30), mode="RGB") -> Image.Image:
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def _palette(fmt: str, transparent: bool) -> bytes:
    """Left half palette index 0 (red, or transparent), right half index 1 (blue)."""
    image = Image.new("P", (40, 30), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    image.paste(0, (0, 0, 20, 30))
    return encode(image, fmt, **({"transparency": 0} if transparent else {}))


def _png_exif_after_idat() -> bytes:
    """A PNG whose eXIf chunk (orientation 6) comes after the image data."""
    data = encode(_halves(RED, BLUE, (40, 20)), "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    body = exif.tobytes()[6:]  # without the b"Exif\0\0" prefix
    end = data.rindex(b"IEND") - 4
    return data[:end] + png_chunk(b"eXIf", body) + data[end:]


@dataclass(frozen=True)
class Case:
    make: Callable[[], bytes]
    suffix: str
    source_size: tuple[int, int]  # upright
    probes: list  # (x, y, colour) of the decoded image, as fractions of its size


def _cmyk_ink() -> np.ndarray:
    ink = np.zeros((30, 40, 4), np.uint8)
    ink[:, 20:] = (255, 0, 0, 0)  # right half: cyan ink; left half: no ink (white)
    return ink


def _png16_rgb(alpha: bool) -> bytes:
    array = np.zeros((30, 40, 4 if alpha else 3), np.uint16)
    array[..., 0] = 65535
    array[:, 20:, 1] = 32768  # right half: orange
    if alpha:
        array[..., 3] = 65535
        array[:, :20, 3] = 0  # left half transparent: white
    return png16_bytes(array)


CASES = {
    "cmyk_jpeg": Case(
        lambda: encode(Image.fromarray(_cmyk_ink(), "CMYK"), "JPEG", quality=95),
        "jpg",
        (40, 30),
        [(0.2, 0.5, WHITE), (0.8, 0.5, CYAN)],
    ),
    "ycck_jpeg": Case(lambda: ycck_jpeg_bytes(_cmyk_ink()), "jpg", (40, 30), [(0.2, 0.5, WHITE), (0.8, 0.5, CYAN)]),
    "cmyk_tiff": Case(
        lambda: encode(Image.fromarray(_cmyk_ink(), "CMYK"), "TIFF"),
        "tif",
        (40, 30),
        [(0.2, 0.5, WHITE), (0.8, 0.5, CYAN)],
    ),
    "png16_grey": Case(
        lambda: encode(Image.fromarray(np.full((30, 40), 32768, np.uint16)), "PNG"),
        "png",
        (40, 30),
        [(0.5, 0.5, (128, 128, 128))],
    ),
    "png16_grey_low": Case(
        lambda: encode(Image.fromarray(np.full((30, 40), 200, np.uint16)), "PNG"),
        "png",
        (40, 30),
        [(0.5, 0.5, (1, 1, 1))],
    ),  # 200/65535 is near black, not clipped to 200/255
    "png16_rgb": Case(lambda: _png16_rgb(alpha=False), "png", (40, 30), [(0.2, 0.5, RED), (0.8, 0.5, (255, 128, 0))]),
    "png16_rgba": Case(lambda: _png16_rgb(alpha=True), "png", (40, 30), [(0.2, 0.5, WHITE), (0.8, 0.5, (255, 128, 0))]),
    "tiff16_grey": Case(
        lambda: encode(Image.fromarray(np.full((30, 40), 16384, np.uint16)), "TIFF"),
        "tif",
        (40, 30),
        [(0.5, 0.5, (64, 64, 64))],
    ),
    "tiff16_grey_lzw": Case(
        lambda: encode(Image.fromarray(np.full((30, 40), 49152, np.uint16)), "TIFF", compression="tiff_lzw"),
        "tif",
        (40, 30),
        [(0.5, 0.5, (192, 192, 192))],
    ),
    "tiff16_rgb": Case(
        lambda: tiff16_rgb_bytes(np.tile(np.array([0, 65535, 0], np.uint16), (30, 40, 1))),
        "tif",
        (40, 30),
        [(0.5, 0.5, GREEN)],
    ),
    "gif_palette": Case(lambda: _palette("GIF", False), "gif", (40, 30), [(0.2, 0.5, RED), (0.8, 0.5, BLUE)]),
    "gif_palette_transparent": Case(
        lambda: _palette("GIF", True), "gif", (40, 30), [(0.2, 0.5, WHITE), (0.8, 0.5, BLUE)]
    ),
    "png_palette": Case(lambda: _palette("PNG", False), "png", (40, 30), [(0.2, 0.5, RED), (0.8, 0.5, BLUE)]),
    "png_palette_transparent": Case(
        lambda: _palette("PNG", True), "png", (40, 30), [(0.2, 0.5, WHITE), (0.8, 0.5, BLUE)]
    ),
    "rgba_png": Case(
        lambda: encode(_halves((0, 0, 0, 0), (255, 0, 0, 255), mode="RGBA"), "PNG"),
        "png",
        (40, 30),
        [(0.2, 0.5, WHITE), (0.8, 0.5, RED)],
    ),
    "rgba_half_alpha_png": Case(
        lambda: encode(Image.new("RGBA", (40, 30), (0, 0, 0, 128)), "PNG"),
        "png",
        (40, 30),
        [(0.5, 0.5, (127, 127, 127))],
    ),
    "la_png": Case(
        lambda: encode(_halves((60, 0), (60, 255), mode="LA"), "PNG"),
        "png",
        (40, 30),
        [(0.2, 0.5, WHITE), (0.8, 0.5, (60, 60, 60))],
    ),
    "grey_png": Case(lambda: encode(Image.new("L", (40, 30), 90), "PNG"), "png", (40, 30), [(0.5, 0.5, (90, 90, 90))]),
    "grey_jpeg": Case(
        lambda: encode(Image.new("L", (40, 30), 90), "JPEG"), "jpg", (40, 30), [(0.5, 0.5, (90, 90, 90))]
    ),
    "bilevel_png": Case(
        lambda: encode(_halves(1, 0, mode="1"), "PNG"), "png", (40, 30), [(0.2, 0.5, WHITE), (0.8, 0.5, (0, 0, 0))]
    ),
    "bilevel_tiff_g4": Case(
        lambda: encode(_halves(1, 0, mode="1"), "TIFF", compression="group4"),
        "tif",
        (40, 30),
        [(0.2, 0.5, WHITE), (0.8, 0.5, (0, 0, 0))],
    ),
    # 40 wide x 20 high, left half red: orientation 6 turns it clockwise (red on top), 8 anticlockwise
    "exif6_jpeg": Case(
        lambda: exif_jpeg_bytes(_halves(RED, BLUE, (40, 20)), 6, quality=95),
        "jpg",
        (20, 40),
        [(0.5, 0.2, RED), (0.5, 0.8, BLUE)],
    ),
    "exif8_jpeg": Case(
        lambda: exif_jpeg_bytes(_halves(RED, BLUE, (40, 20)), 8, quality=95),
        "jpg",
        (20, 40),
        [(0.5, 0.2, BLUE), (0.5, 0.8, RED)],
    ),
    "exif3_jpeg": Case(
        lambda: exif_jpeg_bytes(_halves(RED, BLUE, (40, 20)), 3, quality=95),
        "jpg",
        (40, 20),
        [(0.2, 0.5, BLUE), (0.8, 0.5, RED)],
    ),
    "exif6_png": Case(
        lambda: encode(_halves(RED, BLUE, (40, 20)), "PNG", exif=_exif(6)),
        "png",
        (20, 40),
        [(0.5, 0.2, RED), (0.5, 0.8, BLUE)],
    ),
    # eXIf after the pixel data (allowed): Pillow sees it only once decoded; planning finds it without decoding
    "exif6_png_after_idat": Case(_png_exif_after_idat, "png", (20, 40), [(0.5, 0.2, RED), (0.5, 0.8, BLUE)]),
    "webp_lossy": Case(
        lambda: encode(_halves(RED, BLUE), "WEBP", quality=90), "webp", (40, 30), [(0.15, 0.5, RED), (0.85, 0.5, BLUE)]
    ),
    "webp_alpha": Case(
        lambda: encode(_halves((0, 0, 0, 0), (0, 255, 0, 255), mode="RGBA"), "WEBP", quality=90),
        "webp",
        (40, 30),
        [(0.15, 0.5, WHITE), (0.85, 0.5, GREEN)],
    ),
    "webp_lossless_alpha": Case(
        lambda: encode(_halves((0, 0, 0, 0), (0, 255, 0, 255), mode="RGBA"), "WEBP", lossless=True),
        "webp",
        (40, 30),
        [(0.15, 0.5, WHITE), (0.85, 0.5, GREEN)],
    ),
    "tiny_8x8": Case(
        lambda: encode(Image.new("RGB", (8, 8), (20, 120, 220)), "PNG"), "png", (8, 8), [(0.5, 0.5, (20, 120, 220))]
    ),
    "progressive_jpeg": Case(
        lambda: encode(_halves(RED, BLUE), "JPEG", quality=95, progressive=True),
        "jpg",
        (40, 30),
        [(0.2, 0.5, RED), (0.8, 0.5, BLUE)],
    ),
}


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _expected_output_size(source: tuple[int, int], longest: int) -> tuple[int, int]:
    scale = longest / max(source)
    return round(source[0] * scale), round(source[1] * scale)


@pytest.mark.parametrize("name", list(CASES))
def test_decoding_is_upright_rgb_and_matches_the_planned_size(name):
    case = CASES[name]
    data = case.make()
    assert header_size(data, name, LIMIT) == case.source_size  # what planning sees
    image = decode_rgb(data, name, LIMIT)
    assert image.mode == "RGB" and image.size == case.source_size  # what the runner gets
    assert_probes(np.asarray(image).astype(int), case.probes, tolerance=12)


@pytest.mark.parametrize("name", list(CASES))
def test_every_format_makes_designs_as_content_and_as_style(tmp_path, name):
    case = CASES[name]
    folder, out = tmp_path / "cat", tmp_path / "out"
    folder.mkdir()
    (folder / f"{name}.{case.suffix}").write_bytes(case.make())
    write_png(folder / "plain.png", 36, 28, seed=1)
    c, s, pc, ps = f"{name}_c", f"{name}_s", f"{name}_plain_c", f"{name}_plain_s"  # ids unique across tests
    catalog = write_catalog(
        folder / "catalog.parquet",
        [
            catalog_row(c, "content", uri=f"{name}.{case.suffix}"),
            catalog_row(pc, "content", uri="plain.png"),
            catalog_row(s, "style", uri=f"{name}.{case.suffix}"),
            catalog_row(ps, "style", uri="plain.png"),
        ],
    )
    plan, rows = run_pipeline(catalog, out)
    assert plan.failed == () and len(rows) == 4
    size = _expected_output_size(case.source_size, 32)
    for style in (s, ps):
        pixels = assert_ok(rows[(c, style)], out, size)
        # the optimization starts from the content: two small steps keep its colours
        assert_probes(pixels, case.probes, tolerance=40)
    for content in (c, pc):
        assert_ok(rows[(content, s)], out)
    assert_ok(rows[(pc, ps)], out, (32, 25))
    assert DesignCatalog(out).commit(list(rows.values()), RUN_ID) is not None
    frame = DesignCatalog(out).to_pandas()
    assert set(frame.status) == {"ok"} and len(frame) == 4


def _strip_catalog(folder: Path, name: str) -> Path:
    folder.mkdir()
    (folder / "strip.png").write_bytes(encode(Image.new("RGB", (600, 160), (40, 90, 160)), "PNG"))
    write_png(folder / "plain.png", 32, 32, seed=2)
    return write_catalog(
        folder / "catalog.parquet",
        [
            catalog_row(f"{name}_strip_c", "content", uri="strip.png"),
            catalog_row(f"{name}_plain_c", "content", uri="plain.png"),
            catalog_row(f"{name}_strip_s", "style", uri="strip.png"),
            catalog_row(f"{name}_plain_s", "style", uri="plain.png"),
        ],
    )


def test_long_strip_below_the_minimum_side_fails_naming_the_minimum(tmp_path):
    catalog = _strip_catalog(tmp_path / "cat", "s32")
    plan, rows = run_pipeline(catalog, tmp_path / "out")
    strip_path = str((tmp_path / "cat" / "strip.png").resolve())
    assert len(plan.failed) == 3 and len(plan.todo) == 1
    assert_ok(rows[("s32_plain_c", "s32_plain_s")], tmp_path / "out", (32, 32))
    for (content, style), row in rows.items():
        if "strip" not in content + style:
            continue
        assert row["status"] == "failed"
        error = row["error"]
        assert "at least 16 px" in error and "600x160" in error and strip_path in error
        assert "raise --size to 59" in error  # the smallest size that keeps 16 px: 600x160 at 59 is 59x16
        if "strip" in content:
            assert "content image 's32_strip_c'" in error and "would be 32x9" in error
        if "strip" in style:
            # the style is scaled to the same longest side: a 9 px style cannot be pooled either
            assert "style image 's32_strip_s'" in error


def test_long_strip_works_at_a_larger_size(tmp_path):
    catalog = _strip_catalog(tmp_path / "cat", "s64")
    plan, rows = run_pipeline(catalog, tmp_path / "out", CFG.replace(size=64))
    assert plan.failed == () and len(rows) == 4
    for style in ("s64_strip_s", "s64_plain_s"):
        assert_ok(rows[("s64_strip_c", style)], tmp_path / "out", (64, 17))
        assert_ok(rows[("s64_plain_c", style)], tmp_path / "out", (64, 64))


# --- every image that cannot be used fails only its own pairings --------------------------------


@dataclass
class Bad:
    """How to plant one unusable image; `paths` are the strings its error must name, `reason` a keyword."""

    uri: str
    paths: list[str]
    reason: str
    mask_uri: str | None = None  # the bad part is the mask of an otherwise good content image


def _random_png(width=48, height=40, seed=7) -> bytes:
    return png_bytes(width, height, seed=seed)


def _random_jpeg(width=48, height=40, seed=7) -> bytes:
    return encode(Image.fromarray(image_array(width, height, seed), "RGB"), "JPEG", quality=90)


def _plant(kind: str, folder: Path, outside: Path) -> Bad:
    """Write the bad file for `kind` into `folder`."""
    inside = lambda name: str((folder / name).resolve())  # noqa: E731
    write = lambda name, data: (folder / name).write_bytes(data)  # noqa: E731
    if kind == "missing":
        return Bad("gone/missing.png", [inside("gone/missing.png")], "not found")
    if kind == "empty":
        write("empty.png", b"")
        return Bad("empty.png", [inside("empty.png")], "empty file")
    if kind == "truncated_png":
        data = _random_png()
        write("half.png", data[: len(data) // 2])
        return Bad("half.png", [inside("half.png")], "truncated")
    if kind == "truncated_jpeg":
        data = _random_jpeg()
        write("half.jpg", data[: len(data) // 2])
        return Bad("half.jpg", [inside("half.jpg")], "truncated")
    if kind == "text":
        write("notes.png", b"designer notes: use the blue swatch\n" * 4)
        return Bad("notes.png", [inside("notes.png")], "not an image")
    if kind == "bomb":
        write("bomb.png", with_ihdr_size(_random_png(16, 16), 100_000, 100_000))
        return Bad("bomb.png", [inside("bomb.png")], "over the limit")
    if kind == "directory":
        (folder / "folder.png").mkdir()
        return Bad("folder.png", [inside("folder.png")], "is a directory")
    if kind == "escape_relative":
        return Bad(
            "../outside/outside.png", ["'../outside/outside.png'", str(outside.resolve())], "outside the allowed roots"
        )
    if kind == "escape_absolute":
        return Bad(str(outside), [str(outside.resolve())], "outside the allowed roots")
    if kind == "escape_symlink":
        (folder / "link.png").symlink_to(outside)
        return Bad("link.png", ["'link.png'", str(outside.resolve())], "outside the allowed roots")
    if kind == "symlink_loop":
        (folder / "loop_a.png").symlink_to(folder / "loop_b.png")
        (folder / "loop_b.png").symlink_to(folder / "loop_a.png")
        return Bad("loop_a.png", ["'loop_a.png'"], "cannot be resolved")
    if kind.startswith("mask_"):
        write_png(folder / "masked.png", 40, 30, seed=9)
        mask = {
            "mask_escape_relative": "../outside/outside.png",
            "mask_escape_absolute": str(outside),
            "mask_escape_symlink": "mask_link.png",
            "mask_missing": "masks/none.png",
            "mask_bomb": "mask_bomb.png",
        }[kind]
        if kind == "mask_escape_symlink":
            (folder / "mask_link.png").symlink_to(outside)
        if kind == "mask_bomb":
            write("mask_bomb.png", with_ihdr_size(_random_png(16, 16), 100_000, 100_000))
        if kind == "mask_missing":
            return Bad("masked.png", [inside("masks/none.png")], "not found", mask_uri=mask)
        if kind == "mask_bomb":
            return Bad("masked.png", [inside("mask_bomb.png")], "over the limit", mask_uri=mask)
        return Bad("masked.png", [repr(mask), str(outside.resolve())], "outside the allowed roots", mask_uri=mask)
    raise AssertionError(kind)


BAD_KINDS = [
    "missing",
    "empty",
    "truncated_png",
    "truncated_jpeg",
    "text",
    "bomb",
    "directory",
    "escape_relative",
    "escape_absolute",
    "escape_symlink",
    "symlink_loop",
    "mask_escape_relative",
    "mask_escape_absolute",
    "mask_escape_symlink",
    "mask_missing",
    "mask_bomb",
]


@pytest.fixture
def decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Records the declared size of every image Pillow decodes (ImageFile.load) during the test."""
    sizes: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def spy(self):
        sizes.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return sizes


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_unusable_image_fails_only_its_pairings(tmp_path, kind, decoded_sizes):
    folder, out = tmp_path / "cat", tmp_path / "out"
    folder.mkdir()
    outside = write_png(tmp_path / "outside" / "outside.png", 30, 30, seed=3)
    bad = _plant(kind, folder, outside)
    good_c, good_s = [f"{kind}_c{i}" for i in (1, 2)], [f"{kind}_s{i}" for i in (1, 2)]
    bad_c, bad_s = f"{kind}_bad_c", f"{kind}_bad_s"
    rows = []
    for i, image_id in enumerate(good_c + good_s):
        write_png(folder / f"{image_id}.png", 40, 30, seed=20 + i)
        rows.append(catalog_row(image_id, "content" if image_id in good_c else "style"))
    rows.append(catalog_row(bad_c, "content", uri=bad.uri, mask_uri=bad.mask_uri))
    if bad.mask_uri is None:  # masks belong to content rows only
        rows.append(catalog_row(bad_s, "style", uri=bad.uri, mask_uri=None))
    catalog = write_catalog(folder / "catalog.parquet", rows)

    plan, result = run_pipeline(catalog, out)

    bad_ids = {bad_c, bad_s}
    expected = {(c, s) for c in good_c + [bad_c] for s in good_s + ([bad_s] if bad.mask_uri is None else [])}
    assert set(result) == expected and plan.pairings == len(expected)
    for (content, style), row in result.items():
        if content not in bad_ids and style not in bad_ids:
            assert_ok(row, out, (32, 24))
            continue
        assert row["status"] == "failed", (content, style)
        error = row["error"]
        assert error, (content, style)
        # the error names a bad image of the pairing by id, its file and the reason
        named = [i for i in (content, style) if i in bad_ids and f"image {i!r}" in error]
        assert named, error
        for path in bad.paths:
            assert path in error, error
        assert bad.reason in error, error
        assert (
            row.get("output_uri") is None
            and not (out / "images" / row["design_id"][:2] / f"{row['design_id']}.png").exists()
        )
        if content not in bad_ids:  # a good content with a bad style: the content is not blamed
            assert f"content image {content!r}" not in error
    # nothing declaring 10^10 pixels was ever decoded, at plan time or at run time
    assert all(w * h <= LIMIT for w, h in decoded_sizes), decoded_sizes

    assert DesignCatalog(out).commit(list(result.values()), RUN_ID) is not None
    frame = DesignCatalog(out).to_pandas()
    assert len(frame) == len(expected) and frame.design_id.is_unique
    assert (frame.status == "ok").sum() == 4
    for row in frame[frame.status == "ok"].itertuples():
        assert hashlib.sha256((out / row.output_uri).read_bytes()).hexdigest() == row.output_sha256
    assert frame[frame.status == "failed"].error.str.len().min() > 0


def test_bomb_is_refused_from_its_header_without_decoding(tmp_path, decoded_sizes):
    """The PNG declares 100000 x 100000 (3 * 10^10 bytes decoded): planning must refuse it
    from the header alone. Before the fix, planning called getexif(), which made Pillow
    decode a PNG without an eXIf chunk before the pixel limit was checked."""
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(with_ihdr_size(_random_png(16, 16), 100_000, 100_000))
    # a PNG small enough to compress well but over a small limit: decoding it would be measurable
    (folder / "big.png").write_bytes(encode(Image.new("RGB", (2000, 2000), (9, 9, 9)), "PNG"))
    write_png(folder / "s.png", 20, 20)
    catalog = write_catalog(
        folder / "catalog.parquet",
        [
            catalog_row("bomb", "content", uri="bomb.png"),
            catalog_row("big", "content", uri="big.png"),
            catalog_row("s", "style", uri="s.png"),
        ],
    )
    plan = plan_designs(load_input_catalog(catalog), CFG.replace(max_image_pixels=1_000_000), WEIGHTS.identity, set())
    assert plan.todo == () and len(plan.failed) == 2
    errors = {job.content.image_id: job.error for job in plan.failed}
    assert "100000x100000 = 10000000000 pixels, over the limit of 1000000" in errors["bomb"]
    assert "2000x2000 = 4000000 pixels" in errors["big"]
    assert "refused before decoding" in errors["bomb"]
    assert decoded_sizes == [], f"planning decoded images of size {decoded_sizes}"


def test_planning_decodes_no_image(tmp_path, decoded_sizes):
    """Planning reads headers only, whatever the format (PNG's getexif would decode)."""
    folder = tmp_path / "cat"
    folder.mkdir()
    rows = []
    for name in (
        "png16_rgb",
        "exif6_png",
        "exif6_png_after_idat",
        "exif6_jpeg",
        "gif_palette",
        "webp_alpha",
        "tiff16_grey",
        "cmyk_jpeg",
    ):
        case = CASES[name]
        (folder / f"{name}.{case.suffix}").write_bytes(case.make())
        rows.append(catalog_row(f"plan_{name}", "content", uri=f"{name}.{case.suffix}"))
    write_png(folder / "s.png", 20, 20)
    rows.append(catalog_row("plan_s", "style", uri="s.png"))
    plan = plan_designs(
        load_input_catalog(write_catalog(folder / "catalog.parquet", rows)), CFG, WEIGHTS.identity, set()
    )
    assert len(plan.todo) == 8 and plan.failed == ()
    assert {(j.content.image_id, j.width, j.height) for j in plan.todo if "exif" in j.content.image_id} == {
        ("plan_exif6_png", 16, 32),
        ("plan_exif6_png_after_idat", 16, 32),
        ("plan_exif6_jpeg", 16, 32),
    }
    assert decoded_sizes == []


def test_null_byte_in_uri_is_an_image_fault(tmp_path):
    folder = tmp_path / "cat"
    make_rows = [
        catalog_row("nul_c", "content"),
        catalog_row("nul_bad", "content", uri="bad\x00.png"),
        catalog_row("nul_s", "style"),
    ]
    for image_id in ("nul_c", "nul_s"):
        write_png(folder / f"{image_id}.png", 30, 20)
    plan, rows = run_pipeline(write_catalog(folder / "catalog.parquet", make_rows), tmp_path / "out")
    assert_ok(rows[("nul_c", "nul_s")], tmp_path / "out", (32, 21))
    error = rows[("nul_bad", "nul_s")]["error"]
    assert "content image 'nul_bad'" in error and "'bad\\x00.png'" in error and "NUL" in error


def test_an_image_id_reused_with_other_bytes_is_not_served_stale_targets(tmp_path):
    def catalog(folder: Path, content_id: str, style_id: str, seed: int) -> Path:
        write_png(folder / "c.png", 32, 24, seed=seed)
        write_png(folder / "s.png", 24, 24, seed=seed + 1)
        return write_catalog(
            folder / "catalog.parquet",
            [catalog_row(content_id, "content", uri="c.png"), catalog_row(style_id, "style", uri="s.png")],
        )

    # the same ids, other images (same sizes): e.g. 'dress' of the spring and of the autumn catalog
    _, first = run_pipeline(catalog(tmp_path / "a", "stale_c", "stale_s", seed=1), tmp_path / "out_a")
    _, reused = run_pipeline(catalog(tmp_path / "b", "stale_c", "stale_s", seed=50), tmp_path / "out_b")
    # the same images as `reused` under ids never seen before
    _, fresh = run_pipeline(catalog(tmp_path / "c", "fresh_c", "fresh_s", seed=50), tmp_path / "out_c")
    (row_a,), (row_b,), (row_c,) = first.values(), reused.values(), fresh.values()
    assert row_b["design_id"] == row_c["design_id"] != row_a["design_id"]
    assert row_b["final_loss"] == row_c["final_loss"]
    assert row_b["output_sha256"] == row_c["output_sha256"]


# --- catalogs as tools really write them ---------------------------------------------------------


def test_categorical_and_large_string_columns_are_read_as_strings(tmp_path):
    """pandas writes a categorical column as dictionary<string>, polars writes large_string."""
    import pandas as pd

    for image_id in ("cat_c", "cat_s"):
        write_png(tmp_path / f"{image_id}.png", 30, 20)
    frame = pd.DataFrame(
        {
            "image_id": ["cat_c", "cat_s"],
            "role": ["content", "style"],
            "uri": ["cat_c.png", "cat_s.png"],
            "collection": ["spring", "spring"],
        }
    )
    frame["role"] = frame["role"].astype("category")
    frame["collection"] = frame["collection"].astype("category")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(0, "image_id", table.column("image_id").cast(pa.large_string()))
    assert pa.types.is_dictionary(table.schema.field("role").type)
    pq.write_table(table, tmp_path / "catalog.parquet")
    catalog = load_input_catalog(tmp_path / "catalog.parquet")
    (content,), (style,) = catalog.contents, catalog.styles
    assert (content.image_id, style.role, content.collection) == ("cat_c", "style", "spring")
    _, rows = run_pipeline(tmp_path / "catalog.parquet", tmp_path / "out")
    assert_ok(rows[("cat_c", "cat_s")], tmp_path / "out", (32, 21))


def test_a_repeated_column_name_is_refused_naming_it(tmp_path):
    table = pa.Table.from_arrays(
        [
            pa.array(["a", "b"]),
            pa.array(["content", "style"]),
            pa.array(["a.png", "b.png"]),
            pa.array([1, 2]),
            pa.array(["x", "y"]),
        ],
        names=["image_id", "role", "uri", "year", "year"],
    )
    pq.write_table(table, tmp_path / "catalog.parquet")
    with pytest.raises(CatalogError, match=r"more than one column named \['year'\]"):
        load_input_catalog(tmp_path / "catalog.parquet")


# --- files that are not regular files, or too big to read ---------------------------------------

# Planning in a child process under a memory cap and a timeout: were a FIFO read
# again it would block, were /dev/zero read it would fill memory; either way this
# test fails instead of hanging CI or the machine.
PLAN_IN_A_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from pipeline.catalog.inputs import load_input_catalog
from pipeline.config import Config
from pipeline.planning.plan import plan_designs

catalog, allow_roots, changes = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
config = Config(weights="random", size=32, steps=2, loss_every=1, **changes)
plan = plan_designs(load_input_catalog(catalog, tuple(allow_roots)), config, "random:0", set())
print(json.dumps({
    "todo": sorted([j.content_id, j.style_label] for j in plan.todo),
    "failed": {f"{j.content_id} x {j.style_label}": j.error for j in plan.failed},
}))
"""
PLAN_TIMEOUT_S = 180  # a torch import on a loaded 2-core machine; planning itself takes well under a second


def plan_in_a_child(catalog: Path, allow_roots: tuple[str, ...] = (), **changes) -> dict:
    import json
    import subprocess
    import sys

    try:
        done = subprocess.run(
            [sys.executable, "-c", PLAN_IN_A_CHILD, str(catalog), json.dumps(allow_roots), json.dumps(changes)],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=PLAN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"planning did not finish in {PLAN_TIMEOUT_S} s: it blocked on a file") from None
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


NOT_REGULAR = ["fifo", "fifo_mask", "dev_zero", "oversized"]


@pytest.mark.parametrize("kind", NOT_REGULAR)
def test_files_that_are_not_regular_or_too_big_fail_only_their_pairings(tmp_path, kind):
    import os

    folder = tmp_path / "cat"
    folder.mkdir()
    allow_roots: tuple[str, ...] = ()
    changes: dict = {}
    bad_uri, mask_uri = "bad.png", None
    if kind in ("fifo", "fifo_mask"):
        os.mkfifo(folder / "bad.png")
        named, reason = str(folder.resolve() / "bad.png"), "not a regular file (a FIFO)"
        if kind == "fifo_mask":
            write_png(folder / "masked.png", 40, 30, seed=9)
            bad_uri, mask_uri = "masked.png", "bad.png"
    elif kind == "dev_zero":
        (folder / "bad.png").symlink_to("/dev/zero")
        allow_roots = ("/dev",)
        named, reason = "/dev/zero", "not a regular file (a character device)"
    else:
        (folder / "bad.png").write_bytes(_random_png(200, 200))
        size = (folder / "bad.png").stat().st_size
        changes = {"max_image_bytes": 20_000}
        named, reason = str(folder.resolve() / "bad.png"), f"{size} bytes, over max_image_bytes=20000"
    rows = []
    for i, image_id in enumerate(("c1", "c2", "s1", "s2")):
        write_png(folder / f"{image_id}.png", 40, 30, seed=20 + i)
        rows.append(catalog_row(image_id, "content" if image_id[0] == "c" else "style"))
    rows.append(catalog_row("bad_c", "content", uri=bad_uri, mask_uri=mask_uri))
    if mask_uri is None:
        rows.append(catalog_row("bad_s", "style", uri=bad_uri, mask_uri=None))
    catalog = write_catalog(folder / "catalog.parquet", rows)

    plan = plan_in_a_child(catalog, allow_roots, **changes)

    assert plan["todo"] == [["c1", "s1"], ["c1", "s2"], ["c2", "s1"], ["c2", "s2"]]
    styles = ["s1", "s2"] + ([] if mask_uri else ["bad_s"])
    expected = {f"bad_c x {s}" for s in styles} | (set() if mask_uri else {"c1 x bad_s", "c2 x bad_s"})
    assert set(plan["failed"]) == expected
    for pairing, error in plan["failed"].items():
        assert named in error and reason in error, (pairing, error)
        role = (
            "mask of content image 'bad_c'"
            if mask_uri
            else ("content image 'bad_c'" if "bad_c" in pairing else "style image 'bad_s'")
        )
        assert role in error, (pairing, error)


def test_reading_refuses_a_fifo_a_device_and_an_oversized_file_before_reading(tmp_path):
    """read_image_bytes, which the shards use too: on a thread with a timeout, so a
    FIFO opened for reading again would fail this test instead of blocking it."""
    import os
    import threading

    from pipeline.catalog.images import ImageLoadError, read_image_bytes

    def outcome(path: Path, max_bytes: int) -> str:
        result: list[str] = []

        def read() -> None:
            try:
                result.append(f"{len(read_image_bytes(path, max_bytes))} bytes read")
            except ImageLoadError as err:
                result.append(str(err))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout=20)
        if reader.is_alive() and path.is_fifo():
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # lets the blocked reader go
        assert result, f"reading {path} blocked"
        return result[0]

    os.mkfifo(tmp_path / "pipe")
    assert (
        outcome(tmp_path / "pipe", 1000)
        == f"{tmp_path / 'pipe'}: not a regular file (a FIFO); only regular image files are read"
    )
    assert "/dev/zero: not a regular file (a character device)" in outcome(Path("/dev/zero"), 1000)
    (tmp_path / "big.png").write_bytes(b"x" * 1001)
    assert outcome(tmp_path / "big.png", 1000) == f"{tmp_path / 'big.png'}: 1001 bytes, over max_image_bytes=1000"
    assert outcome(tmp_path / "big.png", 1001) == "1001 bytes read"


def test_max_image_bytes_is_a_positive_run_setting_with_a_flag():
    from pipeline.catalog.images import DEFAULT_MAX_BYTES

    assert Config().max_image_bytes == DEFAULT_MAX_BYTES == 512 * 1024 * 1024
    assert "max_image_bytes" not in Config().identity_dict()  # a limit does not change a design's pixels
    with pytest.raises(ValueError, match="max_image_bytes.*0.*positive integer"):
        Config(max_image_bytes=0)
