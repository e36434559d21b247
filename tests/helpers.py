"""Plain helper functions shared by the unit tests (no fixtures here: tests/conftest.py
belongs to the flow tests)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

# The repo's sample catalog (made by data/make_sample.py) and its pairings:
# 3 garments x 4 textures, minus the pairs whose collections differ.
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
SAMPLE_PAIRINGS = 11


def image_array(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A seeded random RGB uint8 array of shape (height, width, 3)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def png_bytes(width: int, height: int, seed: int = 0, mode: str = "RGB", **save_args: Any) -> bytes:
    array = image_array(width, height, seed)
    image = Image.fromarray(array, "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_args)
    return buffer.getvalue()


def write_png(path: Path, width: int = 24, height: int = 24, seed: int = 0) -> Path:
    """Write a small seeded random RGB PNG; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(width, height, seed))
    return path


def catalog_row(image_id: str, role: str, uri: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"image_id": image_id, "role": role, "uri": uri if uri is not None else f"{image_id}.png", **extra}


def write_catalog(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> Path:
    """Write rows (dicts) as a parquet catalog. Columns default to strings (tags: list<string>)
    so that all-null columns keep a string type."""
    if schema is None:
        names: list[str] = []
        for row in rows:
            names += [k for k in row if k not in names]
        fields = []
        for name in names:
            values = [row.get(name) for row in rows if row.get(name) is not None]
            if name == "tags":
                fields.append(pa.field(name, pa.list_(pa.string())))
            elif values and not all(isinstance(v, str) for v in values):
                fields.append(pa.field(name, pa.array(values).type))
            else:
                fields.append(pa.field(name, pa.string()))
        schema = pa.schema(fields)
    table = pa.Table.from_pylist([{k: row.get(k) for k in schema.names} for row in rows], schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def square_jobs(catalog: Path, config: Any, n: int, weights_identity: str) -> list:
    """The first `n` planned jobs of `catalog` whose output is config.size square (asserts there are `n`)."""
    from pipeline.catalog.inputs import load_input_catalog
    from pipeline.planning.plan import plan_designs

    plan = plan_designs(load_input_catalog(catalog), config, weights_identity, set())
    jobs = [j for j in plan.todo if (j.width, j.height) == (config.size, config.size)][:n]
    assert len(jobs) == n
    return jobs


def make_image_catalog(
    folder: Path,
    contents: dict[str, tuple[int, int]],
    styles: dict[str, tuple[int, int]],
    extra_rows: list[dict[str, Any]] | None = None,
) -> Path:
    """Write content/style PNGs of the given (width, height) into `folder` and a
    catalog.parquet listing them; returns the catalog path."""
    rows = []
    for seed, (image_id, (w, h)) in enumerate(contents.items()):
        write_png(folder / f"{image_id}.png", w, h, seed=seed)
        rows.append(catalog_row(image_id, "content"))
    for seed, (image_id, (w, h)) in enumerate(styles.items(), start=100):
        write_png(folder / f"{image_id}.png", w, h, seed=seed)
        rows.append(catalog_row(image_id, "style"))
    rows += extra_rows or []
    return write_catalog(folder / "catalog.parquet", rows)


# --- hostile and unusual image files (tests/catalog/test_hostile_inputs.py, tests/execution/test_property.py) ---


def encode(image: Image.Image, fmt: str, **save_args: Any) -> bytes:
    """`image` saved in format `fmt` (Pillow's name: PNG, JPEG, GIF, TIFF, WEBP), as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, `kind`, `body`, CRC."""
    import struct
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def with_ihdr_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose header (IHDR) declares width x height, CRC fixed; the pixel data stays as it was."""
    import struct

    assert png[12:16] == b"IHDR", "not a PNG starting with IHDR"
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    return png[:8] + png_chunk(b"IHDR", bytes(ihdr)) + png[33:]


def png16_bytes(array: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB): `array` is uint16 of
    shape (H, W) grey, or (H, W, C) with C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA."""
    import struct
    import zlib

    if array.ndim == 2:
        array = array[..., None]
    height, width, channels = array.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def tiff16_rgb_bytes(array: np.ndarray) -> bytes:
    """An uncompressed little-endian 16-bit RGB TIFF written by hand; `array` is uint16 (H, W, 3)."""
    import struct

    height, width, channels = array.shape
    assert channels == 3
    pixels = array.astype("<u2").tobytes()
    bits_offset = 8 + len(pixels)
    bits = struct.pack("<HHH", 16, 16, 16)
    ifd_offset = bits_offset + len(bits)
    short, long = 3, 4
    entries = [  # tag, type, count, value (or offset)
        (256, long, 1, width),
        (257, long, 1, height),
        (258, short, 3, bits_offset),
        (259, short, 1, 1),
        (262, short, 1, 2),
        (273, long, 1, 8),
        (277, short, 1, 3),
        (278, long, 1, height),
        (279, long, 1, len(pixels)),
        (284, short, 1, 1),
    ]
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset)) + pixels + bits + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if kind == short and count == 1:
            out += struct.pack("<HHIHH", tag, kind, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, kind, count, value)
    return bytes(out + struct.pack("<I", 0))


def ycck_jpeg_bytes(ink: np.ndarray) -> bytes:
    """A real Adobe YCCK JPEG (APP14 transform 2) of the CMYK ink amounts `ink` (uint8 (H, W, 4)).

    libjpeg stores YCCK as the YCbCr of the inverted CMY plus the (Adobe-inverted) K.
    Pillow only writes Adobe CMYK (transform 0) and inverts every channel on saving,
    so the YCCK samples are computed here, handed to Pillow inverted, and the APP14
    transform byte is set to 2: a decoder must then convert YCC to CMY itself."""
    ink = ink.astype(np.float64)
    r, g, b = ink[..., 0], ink[..., 1], ink[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    stored = np.stack([y, cb, cr, 255 - ink[..., 3]], axis=-1)
    handed = np.clip(np.round(255 - stored), 0, 255).astype(np.uint8)
    data = encode(Image.fromarray(handed, "CMYK"), "JPEG", quality=100, subsampling=0)
    at = data.find(b"\xff\xee")
    assert at > 0 and data[at + 4 : at + 9] == b"Adobe" and data[at + 15] == 0, "no Adobe CMYK marker"
    return data[: at + 15] + b"\x02" + data[at + 16 :]


def exif_jpeg_bytes(image: Image.Image, orientation: int, **save_args: Any) -> bytes:
    """`image` as a JPEG whose EXIF says `orientation` (1-8)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), **save_args)


def run_bench_main(args: list[str], tmp_path: Path) -> tuple[dict, dict, str, str]:
    """benchmarks.cli.main with its JSON and a copy of docs/BENCHMARKS.md under tmp_path:
    (returned result, written JSON, the page before, the page after)."""
    import json

    import torch

    from benchmarks import cli as bench_cli

    markdown = tmp_path / "BENCHMARKS.md"
    original = (Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md").read_text()
    markdown.write_text(original)
    threads = torch.get_num_threads()
    try:
        result = bench_cli.main(
            [*args, "--threads", "1", "--json", str(tmp_path / "r.json"), "--markdown", str(markdown)]
        )
    finally:
        torch.set_num_threads(threads)
    return result, json.loads((tmp_path / "r.json").read_text()), original, markdown.read_text()


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the markdown table that starts with header's first line."""
    lines = text.splitlines()
    start = lines.index(header.splitlines()[0]) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def fabric_seams(cloth: torch.Tensor, tile_h: int, tile_w: int, edges: str = "both") -> float:
    """Mean |difference| across the tile boundaries inside a fabric (`edges`: 'both', 'rows'
    or 'columns' of tiles) over the mean between all other neighbouring rows and columns:
    about 1.0 where no seam shows."""
    dy = (cloth[:, 1:, :] - cloth[:, :-1, :]).abs()  # row r + 1 minus row r
    dx = (cloth[:, :, 1:] - cloth[:, :, :-1]).abs()
    rows = torch.zeros(dy.shape[1], dtype=torch.bool)
    rows[tile_h - 1 :: tile_h] = True
    cols = torch.zeros(dx.shape[2], dtype=torch.bool)
    cols[tile_w - 1 :: tile_w] = True
    across = torch.cat(
        ([dy[:, rows, :].flatten()] if edges != "columns" else [])
        + ([dx[:, :, cols].flatten()] if edges != "rows" else [])
    )
    inside = torch.cat([dy[:, ~rows, :].flatten(), dx[:, :, ~cols].flatten()])
    return float(across.mean() / inside.mean())
