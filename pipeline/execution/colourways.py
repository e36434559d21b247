"""Colourways: finished designs recoloured into other inks, without optimizing again
(`designs colourways OUT --palette FILE | --from-image IMG | --inks N`).

The recolouring is pipeline/engine/palette.py's (flat N-ink images, OKLab k-means, darkest
to darkest); the palettes read from files are pipeline/catalog/palettes.py's.

A colourway's id is a hash of its parent's design id and the palette's definition (the hex
colours, the source image's SHA-256 and N, or N inks), so a rerun finds it made and adds
nothing. Its row copies the parent's (inputs, params, weights), with `parent_design_id` and
the `palette` it was printed in (RowContext.colourway, which writes its file as every design's
is written). The run's contact sheet, each colourway beside its parent, is the views'
(pipeline/views/contact_sheet.py `colourways_sheet`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.images import DEFAULT_MAX_BYTES, ImageLoadError, decode_rgb, read_image_bytes
from pipeline.catalog.palettes import MAX_PIXELS
from pipeline.catalog.schema import params_type
from pipeline.catalog.timeout import DEFAULT_TIMEOUT_S
from pipeline.config import Config, with_repeat
from pipeline.engine.palette import Palette, recolour
from pipeline.execution.rows import RowContext


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
    run_id: str = ""
    title: str = ""  # the contact sheet's
    # Each colourway made, beside its parent: what the contact sheet shows.
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list, repr=False)

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
    connection opens no file (pipeline/catalog/sql.py); `timeout_s` bounds the selection."""
    import duckdb

    from pipeline.catalog.history import QueryError
    from pipeline.catalog.sql import connect, one_line
    from pipeline.catalog.timeout import with_timeout

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
    # Colourways copy their parent's weights, and the recolouring runs here, in numpy.
    context = RowContext(Config(), None, run_id, "cpu", catalog)
    report = ColourwayReport(version=None, parents=len(parents), run_id=run_id)
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
        found = with_repeat(dict(parent.get("params") or {}))  # a row made before `repeat` has `tile`
        params = {name: found.get(name) for name in params_type().names}
        image = torch.from_numpy(flat.astype(np.float32)).permute(2, 0, 1).contiguous()
        note = f"colourway of {parent['design_id']}: {palette.describe()}"
        row = context.colourway(parent, cid, image, colours, params, note, (t0, load_s))
        rows.append(row)
        report.pairs.append((parent, row))
        report.made.append(cid)
    if rows:
        note = f"colourways: {palette.describe()}"
        report.version = catalog.commit(rows, run_id, note)
        report.title = f"colourways {run_id}: {palette.describe()}"
    else:
        report.version = catalog.version()
    return report
