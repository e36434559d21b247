"""Colourways: finished designs recoloured into other inks, without optimizing again
(`designs colourways OUT --palette FILE | --from-image IMG | --inks N`).

Every colourway is a flat N-ink image, as a screen printer separates it: each
pixel takes one of N colours, with no dithering (a dither would need more screens
or a finer mesh than the design's own). The method:

1. The design's pixels are clustered into N colours by k-means in OKLab.
   OKLab is perceptual: a Euclidean distance there tracks how different two
   colours look, so clusters split where the eye sees different inks (sRGB
   k-means spends clusters on greens and merges dark blues), and its hue stays
   straight under lightness changes where CIELAB bends blues toward purple.
   It needs no white point and is two 3x3 matrices and a cube root. k-means is
   seeded (k-means++ on a fixed stride of the pixels) so the same design always
   gives the same inks.
2. `--inks N`: each pixel takes its cluster's centre: the design in its own N inks.
   `--palette FILE` (N hex colours) and `--from-image IMG` (the N colours k-means
   finds in that image): the design's clusters are matched to the palette by
   lightness rank, darkest to darkest, so the light and dark structure of the
   motif (what reads as figure and ground) survives the new colours.

A colourway's id is a hash of its parent's design id and the palette's
definition (the hex colours, the source image's SHA-256 and N, or N inks), so a
rerun finds it made and adds nothing. Its row copies the parent's (inputs,
params, weights), with `parent_design_id` and the `palette` it was printed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.images import (
    DEFAULT_MAX_BYTES,
    ImageLoadError,
    decode_rgb,
    decode_rgb_reduced,
    design_file_bytes,
    read_image_bytes,
)
from pipeline.catalog.schema import params_type
from pipeline.config import Config, config_field
from pipeline.engine.losses import seam_score
from pipeline.execution.rows import versions
from pipeline.files import write_atomic
from pipeline.views.contact_sheet import CONTACT_SHEET, write_contact_sheet
from pipeline.views.timeout import DEFAULT_TIMEOUT_S

MAX_INKS = 16  # a screen per ink: more than a print table holds
DEFAULT_IMAGE_INKS = 6
KMEANS_SAMPLE = 1 << 16  # pixels k-means fits on; every pixel is then assigned
KMEANS_ITERATIONS = 40
MAX_PIXELS: int = config_field("max_image_pixels").default
MAX_PALETTE_BYTES = 1 << 20  # a palette is a few lines of hex colours; checked before reading
PALETTE_IMAGE_PIXELS = 1 << 18  # --from-image is decoded down to about this many: k-means fits on 1 << 16
QUOTED = 80  # characters of a bad value an error line quotes
_HEX = re.compile(r"#?([0-9A-Fa-f]{6})\b")


class ColourwayError(ValueError):
    """A palette, image or selection that cannot make colourways; the message says what is accepted."""


# --- colour ---

_M1 = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_M2 = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)


def _linear(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _gamma(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def srgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] -> OKLab (Ottosson 2020)."""
    lms = _linear(np.asarray(rgb, dtype=np.float64)) @ _M1.T
    return np.cbrt(lms) @ _M2.T


def oklab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """OKLab -> (..., 3) sRGB in [0, 1] (out-of-gamut colours clipped)."""
    lms = (np.asarray(lab, dtype=np.float64) @ np.linalg.inv(_M2).T) ** 3
    return np.clip(_gamma(lms @ np.linalg.inv(_M1).T), 0.0, 1.0)


def to_hex(rgb: np.ndarray) -> list[str]:
    return ["#" + "".join(f"{round(float(c) * 255):02x}" for c in colour) for colour in np.atleast_2d(rgb)]


def from_hex(colours: Sequence[str]) -> np.ndarray:
    return np.array([[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in colours], dtype=np.float64)


def kmeans(points: np.ndarray, k: int, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """k centres of (N, 3) points, seeded k-means++ on a fixed stride of at most KMEANS_SAMPLE
    points, sorted by lightness (the first coordinate). Fewer distinct points than k: those points."""
    sample = points[:: max(1, len(points) // KMEANS_SAMPLE)]
    distinct = np.unique(np.round(sample, 6), axis=0)
    if len(distinct) <= k:
        return distinct[np.argsort(distinct[:, 0], kind="stable")]
    rng = np.random.default_rng(0)
    centres = [sample[rng.integers(len(sample))]]
    for _ in range(1, k):
        d2 = ((sample[:, None, :] - np.array(centres)[None]) ** 2).sum(-1).min(1)
        centres.append(sample[rng.choice(len(sample), p=d2 / d2.sum())])
    centres = np.array(centres)
    for _ in range(iterations):
        labels = assign(sample, centres)
        moved = np.array([sample[labels == i].mean(0) if (labels == i).any() else centres[i] for i in range(k)])
        if np.allclose(moved, centres, atol=1e-7):
            break
        centres = moved
    return centres[np.argsort(centres[:, 0], kind="stable")]


def assign(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The nearest centre of each point, in chunks to bound memory."""
    out = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), 1 << 18):
        chunk = points[start : start + (1 << 18)]
        out[start : start + len(chunk)] = ((chunk[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    return out


# --- palettes ---


@dataclass(frozen=True)
class Palette:
    """How a colourway is coloured: given colours, another image's N colours, or the design's own N inks."""

    method: str  # "palette", "image" or "inks"
    colours: tuple[str, ...] = ()  # the hex colours given or found (not for "inks": found per design)
    inks: int = 0
    source: str = ""  # --palette FILE or --from-image IMG, as given
    source_sha256: str = ""  # --from-image: the image's bytes

    @property
    def key(self) -> str:
        """What the colourway's id hashes: the same palette definition gives the same ids."""
        if self.method == "palette":
            return "palette:" + ",".join(self.colours)
        if self.method == "image":
            return f"image:{self.source_sha256}:{self.inks}"
        return f"inks:{self.inks}"

    def describe(self) -> str:
        if self.method == "palette":
            return f"palette {self.source} ({len(self.colours)} colours)"
        if self.method == "image":
            return f"{self.inks} colours of {self.source}"
        return f"{self.inks} inks of its own"


def _check_inks(n: int, what: str) -> None:
    if not 2 <= n <= MAX_INKS:
        raise ColourwayError(f"{what} {n} is invalid; accepted: 2 to {MAX_INKS} colours")


def parse_palette(text: str, name: str) -> tuple[str, ...]:
    """Hex colours (#RRGGBB or RRGGBB) separated by whitespace, commas or semicolons, in their
    order; a '#' followed by a space (or ending the line) starts a comment to the end of the line."""
    colours = []
    for line in text.splitlines():
        for token in re.split(r"[\s,;]+", line.strip()):
            if not token:
                continue
            match = _HEX.fullmatch(token)
            if match:
                colours.append("#" + match.group(1).lower())
            elif token == "#":
                break  # a comment: "#" then a space
            else:
                raise ColourwayError(
                    f"palette {name}: {_quote(token)} is not a hex colour; accepted: #RRGGBB, e.g. #1f6fb4"
                )
    if len(set(colours)) != len(colours):
        raise ColourwayError(f"palette {name}: a colour is listed twice; accepted: distinct #RRGGBB colours")
    _check_inks(len(colours), f"palette {name}: colour count")
    return tuple(colours)


def _quote(value: str) -> str:
    """repr(value), cut to QUOTED characters: an error line never echoes a whole file."""
    return repr(value) if len(value) <= QUOTED else repr(value[:QUOTED]) + f"... ({len(value)} characters)"


def _not_regular(mode: int) -> str | None:
    """What a file that is not a regular file is, for the refusal; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"))
    kinds += ((stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), f"file type {stat.S_IFMT(mode):o}")


def read_palette_text(path: str | Path, max_bytes: int = MAX_PALETTE_BYTES) -> str:
    """The text of a palette file: a regular file of at most `max_bytes`, both checked before
    reading (a FIFO would block, /dev/zero never ends), UTF-8 with or without a BOM."""
    name = repr(str(path))
    try:
        # stat before open: opening a FIFO waits for a writer.
        if kind := _not_regular(os.stat(path).st_mode):
            raise ColourwayError(f"palette {name} is {kind}; accepted: a regular text file of hex colours")
        # O_NONBLOCK: should a FIFO replace the file after the stat, the open does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise ColourwayError(f"palette {name}: cannot read: {err.strerror or err}") from None
    with os.fdopen(fd, "rb") as handle:
        found = os.fstat(handle.fileno())  # the file opened, in case it was swapped after the stat
        if kind := _not_regular(found.st_mode):
            raise ColourwayError(f"palette {name} is {kind}; accepted: a regular text file of hex colours")
        if found.st_size > max_bytes:
            raise ColourwayError(f"palette {name}: {found.st_size} bytes; accepted: at most {max_bytes} bytes")
        try:
            data = handle.read(max_bytes + 1)  # bounded even if the file grew after the stat
        except OSError as err:
            raise ColourwayError(f"palette {name}: cannot read: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise ColourwayError(f"palette {name}: more than {max_bytes} bytes; accepted: at most {max_bytes} bytes")
    try:
        return data.decode("utf-8-sig")  # a BOM, as some editors save, is not a colour
    except UnicodeDecodeError as err:
        raise ColourwayError(
            f"palette {name}: not UTF-8 text (byte {err.start}); accepted: a text file of hex colours"
        ) from None


def palette_from_file(path: str | Path) -> Palette:
    return Palette("palette", parse_palette(read_palette_text(path), repr(str(path))), source=str(path))


def palette_from_image(path: str | Path, inks: int) -> Palette:
    _check_inks(inks, "--inks")
    try:
        data = read_image_bytes(Path(path), DEFAULT_MAX_BYTES)
        # Decoded reduced (JPEG's DCT scaling, then a nearest-pixel resize): a 62-megapixel photo
        # would otherwise take gigabytes for colours that a quarter-million pixels show as well.
        image = decode_rgb_reduced(data, str(path), MAX_PIXELS, PALETTE_IMAGE_PIXELS)
    except ImageLoadError as err:
        raise ColourwayError(f"--from-image: {err}") from None
    rgb = np.asarray(image, dtype=np.float64).reshape(-1, 3) / 255
    centres = kmeans(srgb_to_oklab(rgb), inks)
    if len(centres) < inks:
        raise ColourwayError(
            f"--from-image {str(path)!r} has {len(centres)} colours; accepted: --inks {len(centres)} or fewer"
        )
    colours = tuple(to_hex(oklab_to_srgb(centres)))
    return Palette("image", colours, inks, str(path), hashlib.sha256(data).hexdigest())


def inks_palette(inks: int) -> Palette:
    _check_inks(inks, "--inks")
    return Palette("inks", inks=inks)


def recolour(rgb: np.ndarray, palette: Palette) -> tuple[np.ndarray, list[str]]:
    """(H, W, 3) sRGB in [0, 1] -> the flat colourway and the hex colours it is printed in."""
    h, w, _ = rgb.shape
    lab = srgb_to_oklab(rgb.reshape(-1, 3))
    k = palette.inks if palette.method == "inks" else len(palette.colours)
    centres = kmeans(lab, k)
    labels = assign(lab, centres)
    if palette.method == "inks":
        inks = oklab_to_srgb(centres)
    else:
        # Lightness rank to lightness rank; a design with fewer colours takes the palette's spread over them.
        target = from_hex(palette.colours)
        order = np.argsort(srgb_to_oklab(target)[:, 0], kind="stable")
        picks = np.round(np.linspace(0, len(order) - 1, len(centres))).astype(int) if len(centres) < k else np.arange(k)
        inks = target[order[picks]]
    used = sorted(set(labels.tolist()))
    out = inks[labels].reshape(h, w, 3)
    return out, to_hex(inks[used])


# --- catalog ---


def colourway_id(parent_id: str, palette: Palette) -> str:
    payload = json.dumps({"parent": parent_id, "palette": palette.key}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass
class ColourwayReport:
    version: int | None
    parents: int
    made: list[str] = field(default_factory=list)
    already: int = 0
    failed: list[str] = field(default_factory=list)  # parents whose image could not be read
    contact_sheet: Path | None = None

    def lines(self) -> list[str]:
        lines = [
            f"colourways: {len(self.made)} made, {self.already} already in the catalog, of {self.parents} design(s)"
            + (f"; table version {self.version}" if self.version is not None else "")
        ]
        if self.contact_sheet is not None:
            lines.append(f"contact sheet: {self.contact_sheet}")
        lines += [f"  skipped {f}" for f in self.failed]
        return lines


def _parents(out: Path, version: int | None, where: str | None, timeout_s: float | None) -> list[dict[str, Any]]:
    """The ok, optimized designs (not colourways) the --where expression selects, at the version.

    --where is never pasted into SQL: it is a filter of its own on the ok, not-a-colourway
    rows, which DuckDB parses alone as one expression, so it can only narrow them (a `)` that
    would close a predicate, a second statement or `... from ...` are parse errors). The
    connection opens no file (pipeline/views/query.py); `timeout_s` bounds the selection."""
    import duckdb

    from pipeline.views.query import QueryError, connect, one_line, with_timeout

    con = connect(out, version)
    try:
        designs = con.table("designs")

        def select() -> pa.Table:
            chosen = designs.filter("status = 'ok'")
            if "parent_design_id" in designs.columns:  # tables made before colourways have none
                chosen = chosen.filter("parent_design_id is null")
            if where:
                chosen = chosen.filter(where)
            return chosen.order("design_id").to_arrow_table()

        try:
            table = with_timeout(con, timeout_s, "the selection of designs (--where)", select)
        except duckdb.Error as err:  # a bad --where
            raise QueryError(f"--where {where!r} failed: {one_line(err)}") from None
    finally:
        con.close()
    return table.to_pylist()


def _read_design(path: Path) -> np.ndarray:
    data = read_image_bytes(path, 4 * DEFAULT_MAX_BYTES)
    return np.asarray(decode_rgb(data, str(path), MAX_PIXELS), dtype=np.float64) / 255


def make_colourways(
    out: str | Path,
    palette: Palette,
    version: int | None = None,
    where: str | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> ColourwayReport:
    """Recolour every selected design of the catalog at OUT into `palette`; commit the new rows at once."""
    out = Path(out)
    catalog = DesignCatalog(out)
    parents = _parents(out, version, where, timeout_s)
    existing = catalog.done_ids()
    started = datetime.now(UTC)
    run_id = f"{started:%Y%m%dT%H%M%SZ}-colourways"
    report = ColourwayReport(version=None, parents=len(parents))
    rows = []
    for parent in parents:
        cid = colourway_id(parent["design_id"], palette)
        if cid in existing:
            report.already += 1
            continue
        t0 = time.perf_counter()
        try:
            rgb = _read_design(out / str(parent["output_uri"]))
        except ImageLoadError as err:
            report.failed.append(f"{parent['design_id']}: {err}")
            continue
        load_s = time.perf_counter() - t0
        flat, colours = recolour(rgb, palette)
        found = dict(parent.get("params") or {})
        if found.get("repeat") is None and found.get("tile") is not None:  # a row made before `repeat`
            found["repeat"] = "block" if found["tile"] else "none"
        params = {name: found.get(name) for name in params_type().names}
        image = torch.from_numpy(flat.astype(np.float32)).permute(2, 0, 1).contiguous()
        text = {
            "design_id": cid,
            "params": json.dumps(params, sort_keys=True, default=str),
            "weights": str(params.get("weights")),
            "parent_design_id": parent["design_id"],
            "palette": json.dumps(colours),
        }
        data, ext = design_file_bytes(image, params.get("format") or "png", text, int(params.get("dpi") or 0))
        sha = hashlib.sha256(data).hexdigest()
        relpath = catalog.image_relpath(cid, sha, ext)
        write_atomic(out / relpath, data)
        write_s = time.perf_counter() - t0 - load_s
        repeat = params.get("repeat") or "none"
        row = dict(parent)
        row.update(
            params=params,
            design_id=cid,
            run_id=run_id,
            created_at=datetime.now(UTC),
            status="ok",
            error=None,
            notes=f"colourway of {parent['design_id']}: {palette.describe()}",
            pairing_key=None,
            parent_design_id=parent["design_id"],
            palette=colours,
            output_uri=relpath,
            output_sha256=sha,
            loss_total=None,
            loss_content=None,
            loss_style=None,
            loss_tv=None,
            final_loss=None,
            seam_score=seam_score(image, repeat) if repeat != "none" else None,
            mask_leakage=None,
            device="cpu",  # the recolouring runs here, in numpy
            device_name="cpu",
            batch_size=None,
            timings={"load_s": load_s, "write_s": write_s, "total_s": load_s + write_s},
            versions=dict(versions()),
        )
        rows.append(row)
        report.made.append(cid)
    if rows:
        note = f"colourways: {palette.describe()}"
        report.version = catalog.commit(rows, run_id, note)
        # Each colourway beside its parent, as a run's contact sheet.
        by_id = {p["design_id"]: p for p in parents}
        shown = [by_id[r["parent_design_id"]] for r in rows] + rows
        report.contact_sheet = write_contact_sheet(
            shown,
            out,
            catalog.run_dir(run_id) / CONTACT_SHEET,
            f"colourways {run_id}: {palette.describe()}",
            Config().to_dict(),
        )
    else:
        report.version = catalog.version()
    return report
