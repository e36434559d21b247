"""Plain helper functions shared by the unit tests (no fixtures here: tests/conftest.py
belongs to the flow tests)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


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
