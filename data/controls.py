"""One design for every textile control, made by the pipeline itself (the README's table of controls).

    python data/controls.py --weights WEIGHTS.h5 --styles STYLE.jpg OTHER.jpg --work DIR \
        --size 256 --steps 300 [--thumbs docs/controls]

Every design of one size is made in this one process, by one `Run` (the steps `designs
generate` runs, without Prefect) over a pairs file, then the block repeat is recoloured
into 4 inks as `designs colourways` does. Only `--size` and `--steps` are given: every
other setting is the shipped default, so the pictures show what the defaults make.

The first style is the style of every control; the second joins it in the blend. The
contents are the sample garments (data/sample, made by data/make_sample.py): the hoodie
without its mask for the plain transfer and the content controls, with it for the mask.
The styles are read where they are: nothing is copied into the repository, and neither
is the weights file.

Written under --work: the input catalog, the pairs file, the design catalog
(`out-<size>-<steps>/`), every design as `<size>/<control>.png` (a repeat also as its 3x3
fabric, `<control>-fabric.png`), a labelled sheet of them all (`sheet-<size>.png`) and
`controls-<size>.json` (each control's flag, design id, params and measures). With
--thumbs DIR each control's picture also goes to DIR/<control>.jpg, --thumb-size px wide.
The same command again makes only the designs not yet made (the catalog skips done ids).
On a CPU shared with other work, OMP_NUM_THREADS=1 is much faster than oversubscribed threads.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python data/controls.py` from anywhere
    sys.path.insert(0, str(ROOT))

from data.fabric import fabric_png  # noqa: E402
from pipeline.catalog.designs import DesignCatalog  # noqa: E402
from pipeline.config import Config  # noqa: E402
from pipeline.engine.palette import Palette  # noqa: E402
from pipeline.execution.colourways import make_colourways  # noqa: E402
from pipeline.execution.run import Run  # noqa: E402
from pipeline.planning.variants import pattern_config  # noqa: E402

SAMPLE = ROOT / "data" / "sample"
CONTENT = "hoodie"
INKS = 4
SHARD_SIZE = 4
THUMB_JPEG_QUALITY = 80


@dataclass(frozen=True)
class Control:
    name: str
    flag: str  # what a user passes for it (README)
    content: str | None  # None: pattern mode
    second_style: bool = False  # the blend
    overrides: dict[str, Any] = field(default_factory=dict)  # pairs-file columns
    repeat: str = "none"


CONTROLS = (
    Control("plain", "(defaults)", CONTENT),
    Control("mask", "content row's mask_uri", f"{CONTENT}_masked"),
    Control("colour-keep", "--color keep", CONTENT, overrides={"color": "keep"}),
    Control("colour-match", "--color match", CONTENT, overrides={"color": "match"}),
    Control("pooling-avg", "--pooling avg", CONTENT, overrides={"pooling": "avg"}),
    Control("blend", "style_ids [a, b], style_mix [0.5, 0.5]", CONTENT, second_style=True),
    Control("pattern", "--content-weight 0 (or a null content_id)", None),
    Control("scale-0.5", "--content-weight 0 --style-scale 0.5", None, overrides={"style_scale": 0.5}),
    Control("scale-2", "--content-weight 0 --style-scale 2", None, overrides={"style_scale": 2.0}),
    Control("block", "--content-weight 0 --repeat block", None, overrides={"repeat": "block"}, repeat="block"),
    Control(
        "half-drop",
        "--content-weight 0 --repeat half-drop",
        None,
        overrides={"repeat": "half-drop"},
        repeat="half-drop",
    ),
    Control("brick", "--content-weight 0 --repeat brick", None, overrides={"repeat": "brick"}, repeat="brick"),
)
COLOURWAY = "colourway"  # the block repeat in INKS flat inks (designs colourways --inks 4)
NAMES = tuple(c.name for c in CONTROLS) + (COLOURWAY,)
OVERRIDE_COLUMNS = ("color", "pooling", "style_scale", "repeat")
# What the "auto" defaults resolve to: a design made under older defaults is not today's.
RESOLVED_COLUMNS = ("learning_rate", "tv_weight", "scales", "scale_steps")


def write_catalog(work: Path, styles: tuple[Path, Path]) -> Path:
    """The input catalog: the sample hoodie (without and with its mask) and the two styles, by absolute path."""
    content = str((SAMPLE / "content" / f"{CONTENT}.png").resolve())
    rows = [
        {"image_id": CONTENT, "role": "content", "uri": content, "mask_uri": None},
        {
            "image_id": f"{CONTENT}_masked",
            "role": "content",
            "uri": content,
            "mask_uri": str((SAMPLE / "masks" / f"{CONTENT}_mask.png").resolve()),
        },
    ]
    rows += [
        {"image_id": f"style{i}", "role": "style", "uri": str(p.resolve()), "mask_uri": None}
        for i, p in enumerate(styles)
    ]
    path = work / "catalog.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_pairs(path: Path, controls: tuple[Control, ...]) -> Path:
    rows = []
    for c in controls:
        row: dict[str, Any] = {
            "content_id": c.content,
            "style_ids": ["style0", "style1"] if c.second_style else ["style0"],
            "style_mix": [0.5, 0.5] if c.second_style else None,
        }
        row.update({name: c.overrides.get(name) for name in OVERRIDE_COLUMNS})
        rows.append(row)
    schema = pa.schema(
        [
            ("content_id", pa.string()),
            ("style_ids", pa.list_(pa.string())),
            ("style_mix", pa.list_(pa.float64())),
            ("color", pa.string()),
            ("pooling", pa.string()),
            ("style_scale", pa.float64()),
            ("repeat", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _matches(control: Control, row: dict[str, Any]) -> bool:
    params = row["params"]
    if row["content_id"] != control.content or len(row["style_ids"]) != (2 if control.second_style else 1):
        return False
    defaults = Config()
    if not all(params[name] == control.overrides.get(name, getattr(defaults, name)) for name in OVERRIDE_COLUMNS):
        return False
    # Made with today's defaults at its size and steps (a catalog may keep designs of older ones).
    today = Config(size=params["size"], steps=params["steps"], **control.overrides)
    if control.content is None:
        today = pattern_config(today)
    today = today.resolved()
    return all(_plain(params[name]) == _plain(getattr(today, name)) for name in RESOLVED_COLUMNS)


def designs_of(out: Path, controls: tuple[Control, ...]) -> dict[str, dict[str, Any]]:
    """Each control's ok row (and the colourway's) from the design catalog at OUT."""
    rows = [_plain(r) for r in DesignCatalog(out).to_pandas().to_dict("records")]
    rows = [r for r in rows if r["status"] == "ok"]
    found: dict[str, dict[str, Any]] = {}
    for c in controls:
        hits = [r for r in rows if not r.get("parent_design_id") and _matches(c, r)]
        if hits:
            found[c.name] = hits[0]
    block = found.get("block")
    if block is not None:
        children = [r for r in rows if r.get("parent_design_id") == block["design_id"]]
        if children:
            found[COLOURWAY] = children[0]
    return found


def _plain(value: Any) -> Any:
    """A catalog value as JSON: numpy arrays and scalars to lists and numbers."""
    if hasattr(value, "tolist"):  # numpy
        return _plain(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def thumbnail(picture: Image.Image, width: int) -> bytes:
    height = max(1, round(picture.height * width / picture.width))
    small = picture.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=THUMB_JPEG_QUALITY, optimize=True)
    return out.getvalue()


def sheet(pictures: dict[str, Image.Image], cell: int = 256, columns: int = 5) -> Image.Image:
    """Every picture in a labelled grid, to look at."""
    label = 14
    rows = -(-len(pictures) // columns)
    board = Image.new("RGB", (columns * cell, rows * (cell + label)), "white")
    draw = ImageDraw.Draw(board)
    for i, (name, picture) in enumerate(pictures.items()):
        x, y = (i % columns) * cell, (i // columns) * (cell + label)
        small = picture.convert("RGB")
        small.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        board.paste(small, (x, y + label))
        draw.text((x + 2, y + 1), name, fill="black")
    return board


def make(
    weights: str,
    styles: tuple[Path, Path],
    work: Path,
    size: int,
    steps: int,
    only: tuple[str, ...] = (),
    thumbs: Path | None = None,
    thumb_size: int = 160,
) -> dict[str, dict[str, Any]]:
    """Make the controls' designs at one size in this process; returns controls-<size>.json's payload."""
    controls = tuple(c for c in CONTROLS if not only or c.name in only)
    work.mkdir(parents=True, exist_ok=True)
    catalog = write_catalog(work, styles)
    pairs = write_pairs(work / f"pairs-{size}.parquet", controls)
    out = work / f"out-{size}-{steps}"
    roots = tuple(sorted({str(SAMPLE.resolve())} | {str(p.resolve().parent) for p in styles}))
    # A shard per batch: each commits as it ends, so a stopped run's rerun makes only the rest.
    config = Config(size=size, steps=steps, weights=weights, allow_roots=roots, shard_size=SHARD_SIZE)
    run = Run(catalog, out, config)
    checked = run.prepare(str(pairs))

    def progress(p) -> None:
        if p.step % 50 == 0 or p.step == p.steps:
            print(f"  {p.designs} design(s): step {p.step}/{p.steps}", flush=True)

    summary = run.run_local(checked.inputs, checked.weights, "cpu", checked.specs, on_progress=progress)
    print(f"run {run.run_id}: {summary.ok} ok, {summary.failed} failed in {summary.wall_seconds:.0f} s", flush=True)
    if any(c.name == "block" for c in controls) and (not only or COLOURWAY in only or "block" in only):
        make_colourways(out, Palette("inks", inks=INKS), where="params.repeat = 'block'")

    found = designs_of(out, controls)
    folder = work / str(size)
    folder.mkdir(exist_ok=True)
    if thumbs is not None:
        thumbs.mkdir(parents=True, exist_ok=True)
    flags = {c.name: c.flag for c in controls} | {COLOURWAY: f"designs colourways OUT --inks {INKS}"}
    repeats = {c.name: c.repeat for c in controls} | {COLOURWAY: "block"}
    pictures: dict[str, Image.Image] = {}
    report: dict[str, dict[str, Any]] = {}
    for name, row in found.items():
        design = folder / f"{name}.png"
        shutil.copyfile(out / row["output_uri"], design)
        picture = Image.open(design)
        picture.load()
        if repeats[name] != "none":
            cloth = folder / f"{name}-fabric.png"
            cloth.write_bytes(fabric_png(picture, repeats[name]))
            picture = Image.open(cloth)
            picture.load()
        pictures[name] = picture
        if thumbs is not None:
            (thumbs / f"{name}.jpg").write_bytes(thumbnail(picture, thumb_size))
        report[name] = {
            "flag": flags[name],
            "design_id": row["design_id"],
            "file": str(design),
            "final_loss": row.get("final_loss"),
            "seam_score": row.get("seam_score"),
            "mask_leakage": row.get("mask_leakage"),
            "quality": row.get("quality"),
            "params": row["params"],
        }
    sheet(pictures).save(work / f"sheet-{size}.png")
    (work / f"controls-{size}.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    missing = [c.name for c in controls if c.name not in found]
    if missing:
        print(f"no ok design for: {', '.join(missing)}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a weights file (any known VGG19 or VGG16 file), or random")
    parser.add_argument("--styles", nargs=2, required=True, metavar=("STYLE", "OTHER"), type=Path)
    parser.add_argument("--work", required=True, type=Path, help="where the catalogs and pictures go (not the repo)")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--only", default="", help=f"comma-separated controls (of {', '.join(NAMES)}); default all")
    parser.add_argument("--thumbs", type=Path, help="also write each control's thumbnail here (docs/controls)")
    parser.add_argument("--thumb-size", type=int, default=160)
    args = parser.parse_args(argv)
    only = tuple(n for n in args.only.split(",") if n)
    unknown = [n for n in only if n not in NAMES]
    if unknown:
        parser.error(f"--only: unknown control(s) {unknown}; known: {', '.join(NAMES)}")
    for path in args.styles:
        if not path.is_file():
            parser.error(f"--styles: {str(path)!r} is not a file")
    report = make(
        args.weights, tuple(args.styles), args.work, args.size, args.steps, only, args.thumbs, args.thumb_size
    )
    for name, entry in report.items():
        print(f"{name:13} {entry['flag']:45} {entry['file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
