"""A run's contact sheet: a labelled grid of thumbnails, OUT/runs/<run_id>/contact_sheet.png."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from pipeline.execution.colourways import ColourwayReport

CONTACT_SHEET = "contact_sheet.png"  # in OUT/runs/<run_id>/
THUMB = 160
LABEL_LINES = 3
LINE_HEIGHT = 14
LABEL_CHARS = 26  # what fits under a thumbnail at the default font
ELLIPSIS = "\u2026"
PAD = 8
MAX_DESIGNS = 400  # a sheet of a nightly run stays viewable; the gallery shows everything
# Params worth naming under a thumbnail when they differ from the defaults.
NOTABLE = ("repeat", "style_scale", "pooling", "color", "style_weight", "content_weight", "seed", "scales", "init")


def _label(row: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """At most LABEL_LINES lines of at most LABEL_CHARS: the pairing, then the params that differ
    from the defaults, wrapped between tokens; a token too long for a line is shortened with an
    ellipsis, and a label too long for its lines ends in one, so no number is cut unmarked."""
    styles = "+".join(row.get("style_ids") or [row["style_id"]])
    lines = [_fit(f"{row['content_id'] or '(pattern)'} x {styles}")]
    params = row.get("params") or {}
    varied = [
        f"{k}={_value(params[k])}"
        for k in NOTABLE
        if k in params and params[k] != defaults.get(k) and params[k] not in ((), [], None)
    ]
    if row.get("seam_score") is not None and params.get("repeat", "none") != "none":
        varied.append(f"seam={row['seam_score']:.2f}")
    if row.get("parent_design_id"):  # a colourway: its inks, not its parent's params
        varied = ["colourway", f"inks={len(row.get('palette') or [])}"] + [v for v in varied if v.startswith("seam=")]
    room = LABEL_LINES - 1 - (row["status"] != "ok")
    if varied and room > 0:
        # No whitespace inside a token, so textwrap breaks only between tokens.
        tokens = ["".join(token.split()) for token in varied]
        wrapped = textwrap.wrap(
            " ".join(tokens),
            width=LABEL_CHARS,
            break_long_words=False,
            break_on_hyphens=False,
            max_lines=room,
            placeholder=" " + ELLIPSIS,
        )
        lines += [_fit(line) for line in wrapped]
    if row["status"] != "ok":
        lines.append("FAILED")
    return lines


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_value(v) for v in value)
    return str(value)


def _fit(text: str) -> str:
    """text, or as much of it as fits in LABEL_CHARS with an ellipsis saying that something is missing."""
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - len(ELLIPSIS)] + ELLIPSIS


def write_contact_sheet(
    rows: list[dict[str, Any]], out: str | Path, path: str | Path, title: str, defaults: dict[str, Any]
) -> Path | None:
    """Draw the run's designs (failed ones as grey tiles) into one PNG; None if there are none."""
    # A colourway right after its parent.
    rows = sorted(
        rows,
        key=lambda r: (
            r["status"] != "ok",
            r["content_id"] or "",
            r["style_id"],
            r.get("parent_design_id") or r["design_id"],
            r.get("parent_design_id") is not None,
            r["design_id"],
        ),
    )[:MAX_DESIGNS]
    if not rows:
        return None
    columns = min(len(rows), 6)
    cell_w, cell_h = THUMB + PAD, THUMB + PAD + LABEL_LINES * LINE_HEIGHT
    header = 28
    sheet = Image.new("RGB", (columns * cell_w + PAD, header + math.ceil(len(rows) / columns) * cell_h + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    draw.text((PAD, 8), title, fill="black", font=ImageFont.load_default(size=14))
    for i, row in enumerate(rows):
        x = PAD + (i % columns) * cell_w
        y = header + (i // columns) * cell_h
        if row["status"] == "ok" and row.get("output_uri"):
            with Image.open(Path(out) / row["output_uri"]) as image:
                thumb = image.convert("RGB")
                thumb.thumbnail((THUMB, THUMB))
            sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        else:
            draw.rectangle([x, y, x + THUMB - 1, y + THUMB - 1], fill=(225, 225, 225), outline=(200, 60, 60))
        for j, line in enumerate(_label(row, defaults)):
            draw.text(
                (x, y + THUMB + 2 + j * LINE_HEIGHT),
                line,
                fill=(150, 20, 20) if line == "FAILED" else "black",
                font=font,
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path


def colourways_sheet(report: ColourwayReport, out: str | Path) -> Path | None:
    """The contact sheet of a `designs colourways` run, each colourway made beside its parent,
    in OUT/runs/<run_id>/ (sets report.contact_sheet); None when it made none."""
    from pipeline.catalog.designs import DesignCatalog
    from pipeline.config import Config

    if not report.pairs:
        return None
    shown = [parent for parent, _ in report.pairs] + [row for _, row in report.pairs]
    path = DesignCatalog(out).run_dir(report.run_id) / CONTACT_SHEET
    report.contact_sheet = write_contact_sheet(shown, out, path, report.title, Config().to_dict())
    return report.contact_sheet
