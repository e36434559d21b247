"""A static HTML gallery of the design catalog (`designs gallery`, `make gallery`).

One self-contained file: inline CSS and JS, no library, no network. The
thumbnails are the catalog's PNGs, linked by relative path (so the file works
when opened from where it was written, OUT/gallery.html by default) and scaled
by CSS. Each card shows the key parameters, every parameter in a <details>,
and the loss curve as an inline SVG polyline drawn here from `loss_total`, its
final image's loss (after colour and mask post-processing) a dot apart.
Filters by content, style, tag and free text are plain JS over data-attributes.
Failed designs are listed in their own section with their errors.

Every string from the catalog is HTML-escaped (quotes too), catalog data never
goes inside the <script>, and a Content-Security-Policy allows only this file's
own script and style (by hash), so an injected tag could not run anyway.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow.compute as pc
from deltalake import DeltaTable

from pipeline.catalog.curation import curation_table
from pipeline.catalog.datafiles import (
    data_files,
    read_rows,
    read_table,
)
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.history import resolve_version
from pipeline.config import CURATE_SCORE_WEIGHTS, GALLERY_MAX_DESIGNS
from pipeline.files import check_output, write_output

GALLERY_FILE = "gallery.html"
# What the score reads (pipeline/execution/curate.py), for the first designs by score past the bound.
SCORE_COLUMNS = ("style_ratio", "content_kept", "seam_score", "mask_leakage")
# Shown on each card; every params field is in the card's <details>.
KEY_PARAMS = (
    "size",
    "steps",
    "optimizer",
    "learning_rate",
    "content_weight",
    "style_weight",
    "tv_weight",
    "init",
    "color",
    "repeat",
    "style_scale",
    "pooling",
    "format",
    "scales",
    "weights",
)
CURVE_WIDTH, CURVE_HEIGHT, CURVE_PAD = 240, 64, 2


@dataclass(frozen=True)
class GalleryReport:
    path: Path
    version: int
    designs: int
    failed: int
    missing_images: int
    notice: str = ""  # what a catalog past the bound leaves out

    def line(self) -> str:
        text = f"gallery {self.path}: {self.designs} design(s), {self.failed} failed, table version {self.version}"
        if self.missing_images:
            text += f"; {self.missing_images} PNG(s) missing (designs verify lists them)"
        if self.notice:
            text += f"\n{self.notice}"
        return text


def e(value: Any) -> str:
    """HTML-escaped text, quotes included (safe in text and in quoted attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any) -> str:
    """A parameter or metric as short text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if value else "–"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def image_href(output_uri: str | None, out: Path, page_dir: Path) -> str | None:
    """The PNG's URL relative to the page, or None for a path that is not a plain
    relative path inside OUT (never a scheme, an absolute path or '..')."""
    if not output_uri or "\\" in output_uri or ":" in output_uri or any(ord(c) < 32 for c in output_uri):
        return None
    pure = PurePosixPath(output_uri)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        return None
    relative = os.path.relpath(out.resolve() / pure, page_dir.resolve())
    return quote(PurePosixPath(*Path(relative).parts).as_posix(), safe="/")


def loss_curve_svg(values: list[float] | None, steps: Any = None) -> str:
    """An inline SVG of a loss curve, log scale when every value is positive: a polyline of the
    optimization samples and, apart from it, a dot for the last value, the final image's loss after
    the colour and mask post-processing (joined to the curve, a rise there would read as the
    optimization getting worse)."""
    values = list(values or [])
    points = [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if len(points) < 2:
        return '<p class="nocurve">no loss curve</p>'
    log = all(v > 0 for _, v in points)
    ys = [math.log10(v) if log else v for _, v in points]
    last = len(values) - 1
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or 1.0
    width, height, pad = CURVE_WIDTH, CURVE_HEIGHT, CURVE_PAD

    def xy(i: int, y: float) -> str:
        return f"{pad + (i / last) * (width - 2 * pad):.1f},{pad + (1 - (y - lo) / span) * (height - 2 * pad):.1f}"

    final = points[-1] if points[-1][0] == last else None
    samples = [(point, y) for point, y in zip(points, ys) if point[0] != last]
    coords = " ".join(xy(i, y) for (i, _), y in samples)
    first_value = points[0][1]
    last_sample = samples[-1][0][1] if samples else first_value
    label = f"loss_total from {first_value:.4g} to {last_sample:.4g} over {fmt(steps)} steps ({'log' if log else 'linear'} scale)"
    parts = [
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" vector-effect="non-scaling-stroke" points="{coords}"/>'
    ]
    caption = f"loss {e(f'{first_value:.4g}')} → {e(f'{last_sample:.4g}')} over {e(fmt(steps))} steps{' (log scale)' if log else ''}"
    if final is not None:
        final_text = f"final image {final[1]:.4g}"
        label += f"; {final_text} (after colour and mask post-processing)"
        # A zero-length round-capped path: a dot that stays round in the stretched viewBox.
        parts.append(
            f'<path class="final" d="M{xy(last, ys[-1])}h0" stroke-width="6" stroke-linecap="round" '
            f'vector-effect="non-scaling-stroke"><title>{e(final_text)} (after colour and mask post-processing)</title></path>'
        )
        caption += f'; <span class="final-key">●</span> {e(final_text)}'
    return (
        f'<svg class="curve" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" aria-label="{e(label)}">'
        f"<title>{e(label)}</title>{''.join(parts)}</svg>"
        f'<p class="curve-range">{caption}</p>'
    )


def _kv_rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(f"<tr><th>{e(k)}</th><td>{e(fmt(v))}</td></tr>" for k, v in pairs)


def _extra_pairs(prefix: str, text: str | None) -> list[tuple[str, Any]]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return [(prefix, text)]
    if isinstance(value, dict):
        return [
            (f"{prefix}.{k}", v if isinstance(v, (str, int, float, bool, type(None))) else json.dumps(v, default=str))
            for k, v in sorted(value.items())
        ]
    return [(prefix, text)]


def _colourway(row: dict[str, Any], out: Path, page_dir: Path) -> str:
    """A colourway inside its parent's card: its image and its inks."""
    href = image_href(row.get("output_uri"), out, page_dir)
    palette = [str(c) for c in (row.get("palette") or [])]
    if href is None or not (out / str(row.get("output_uri"))).is_file():
        picture = f'<div class="noimage">image missing: {e(row.get("output_uri"))}</div>'
    else:
        picture = (
            f'<a href="{e(href)}"><img src="{e(href)}" alt="colourway {e(row.get("design_id"))}" loading="lazy"></a>'
        )
    # SVG fills, not style attributes: the page's CSP allows no inline styles.
    inks = [c for c in palette if _HEX_COLOUR.fullmatch(c)]
    rects = "".join(
        f'<rect x="{12 * i}" width="12" height="12" fill="{c}"><title>{c}</title></rect>' for i, c in enumerate(inks)
    )
    swatches = f'<svg class="swatches" width="{12 * len(inks)}" height="12" role="img">{rects}</svg>'
    return (
        f'<figure class="colourway" data-colourway="{e(row.get("design_id"))}">{picture}'
        f"<figcaption>{swatches} {e(', '.join(palette))}<br>"
        f"<code>{e(row.get('design_id'))}</code></figcaption></figure>"
    )


_HEX_COLOUR = re.compile(r"#[0-9a-f]{6}")


def _card(
    row: dict[str, Any], out: Path, page_dir: Path, colourways: list[dict[str, Any]] | None = None
) -> tuple[str, bool]:
    """One ok design's card, its colourways inside it; and whether its image is missing."""
    params = row.get("params") or {}
    tags = [str(t) for t in (row.get("tags") or []) if t is not None]
    content, style = str(row.get("content_id") or ""), str(row.get("style_id") or "")
    final = row.get("final_loss") or {}
    href = image_href(row.get("output_uri"), out, page_dir)
    missing = href is None or not (out / str(row.get("output_uri"))).is_file()
    title = f"{content} × {style}"
    if missing:
        picture = f'<div class="noimage">image missing: {e(row.get("output_uri"))}</div>'
    else:
        size = ""
        if isinstance(row.get("width"), int) and isinstance(row.get("height"), int):
            size = f' width="{row["width"]}" height="{row["height"]}"'
        picture = f'<a href="{e(href)}"><img src="{e(href)}" alt="{e(title)}"{size} loading="lazy"></a>'
    key = [(k, params[k]) for k in KEY_PARAMS if k in params]
    key += [("final loss", final.get("total")), ("style loss", final.get("style")), ("device", row.get("device"))]
    searchable = " ".join(
        [content, style, row.get("design_id") or "", row.get("run_id") or "", row.get("collection") or "", *tags]
    ).lower()
    timings = row.get("timings") or {}
    versions = row.get("versions") or {}
    details = (
        [
            ("design_id", row.get("design_id")),
            ("pairing_key", row.get("pairing_key")),
            ("run_id", row.get("run_id")),
            ("created_at", row.get("created_at")),
            ("collection", row.get("collection")),
            ("notes", row.get("notes")),
            ("content_uri", row.get("content_uri")),
            ("style_uri", row.get("style_uri")),
            ("content_sha256", row.get("content_sha256")),
            ("style_sha256", row.get("style_sha256")),
            ("mask_sha256", row.get("mask_sha256")),
            ("output_uri", row.get("output_uri")),
            ("output_sha256", row.get("output_sha256")),
            ("size (px)", f"{row.get('width')} x {row.get('height')}"),
            ("weights_source", row.get("weights_source")),
            ("device_name", row.get("device_name")),
            ("batch_size", row.get("batch_size")),
            ("loss_every", row.get("loss_every")),
        ]
        + [(f"final_loss.{k}", v) for k, v in final.items()]
        + [(f"timings.{k}", v) for k, v in timings.items()]
        + [(f"versions.{k}", v) for k, v in versions.items()]
        + _extra_pairs("content_extra", row.get("content_extra"))
        + _extra_pairs("style_extra", row.get("style_extra"))
    )
    return (
        f'<article class="card" data-design="{e(row.get("design_id"))}" data-content="{e(content)}" data-style="{e(style)}" '
        f'data-tags="{e(json.dumps(tags))}" data-search="{e(searchable)}">'
        f"{picture}"
        f"<h3>{e(content)} <span>×</span> {e(style)}</h3>"
        f'<ul class="tags">{"".join(f"<li>{e(t)}</li>" for t in tags)}</ul>'
        f"{loss_curve_svg(row.get('loss_total'), params.get('steps'))}"
        f'<dl class="key">{"".join(f"<div><dt>{e(k)}</dt><dd>{e(fmt(v))}</dd></div>" for k, v in key)}</dl>'
        + (
            f'<details class="colourways" open><summary>{len(colourways)} colourway(s)</summary>'
            f"{''.join(_colourway(c, out, page_dir) for c in colourways)}</details>"
            if colourways
            else ""
        )
        + "<details><summary>all parameters</summary>"
        f'<table class="params">{_kv_rows(sorted(params.items()))}</table>'
        f'<table class="params">{_kv_rows(details)}</table>'
        f"</details></article>",
        missing,
    )


def _failed_row(row: dict[str, Any]) -> str:
    return (
        f"<tr><td>{e(row.get('content_id'))}</td><td>{e(row.get('style_id'))}</td>"
        f"<td><code>{e(row.get('design_id'))}</code></td><td>{e(row.get('run_id'))}</td>"
        f"<td>{e(fmt(row.get('created_at')))}</td><td><pre>{e(row.get('error'))}</pre></td></tr>"
    )


def _options(values: set[str]) -> str:
    return "".join(f'<option value="{e(v)}">{e(v)}</option>' for v in sorted(values))


CSS = """
:root { color-scheme: light dark; --fg: #1b1b1f; --muted: #666; --line: #ddd; --card: #fafafa; --accent: #b4451f; --final: #1f6fb4; }
@media (prefers-color-scheme: dark) { :root { --fg: #e8e8ea; --muted: #999; --line: #333; --card: #1d1d21; --accent: #f08a5d; --final: #6cb4f0; } }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5rem 2rem; color: var(--fg); }
header { position: sticky; top: 0; background: Canvas; padding: .75rem 0; border-bottom: 1px solid var(--line); z-index: 1; }
h1 { font-size: 1.3rem; margin: 0 0 .4rem; }
.meta { color: var(--muted); margin: 0 0 .5rem; }
form { display: flex; flex-wrap: wrap; gap: .75rem; align-items: end; }
label { display: flex; flex-direction: column; font-size: .8rem; color: var(--muted); }
select, input { font: inherit; padding: .2rem .3rem; min-width: 10rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1rem; margin-top: 1rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .6rem; display: flex; flex-direction: column; gap: .35rem; }
[hidden] { display: none !important; }
.card img { width: 100%; height: auto; image-rendering: auto; border-radius: 4px; background: #8884; display: block; }
.noimage { aspect-ratio: 1; display: grid; place-items: center; color: var(--accent); border: 1px dashed var(--line); padding: .5rem; overflow-wrap: anywhere; }
h3 { font-size: 1rem; margin: .2rem 0 0; word-break: break-word; }
h3 span { color: var(--muted); }
.tags { list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: .25rem; }
.tags li { font-size: .75rem; border: 1px solid var(--line); border-radius: 999px; padding: 0 .5rem; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-size: .8rem; }
th { text-align: left; font-weight: normal; color: var(--muted); padding-right: .5rem; white-space: nowrap; vertical-align: top; }
td { overflow-wrap: anywhere; }
.curve { width: 100%; height: 3rem; color: var(--accent); border-bottom: 1px solid var(--line); border-left: 1px solid var(--line); overflow: visible; }
.curve .final { stroke: var(--final); }
.final-key { color: var(--final); }
.key { display: flex; flex-wrap: wrap; gap: .1rem .8rem; margin: 0; font-size: .8rem; }
.key div { display: flex; gap: .3rem; max-width: 100%; }
.key dt { color: var(--muted); }
.key dd { margin: 0; overflow-wrap: anywhere; }
.curve-range, .nocurve { font-size: .75rem; color: var(--muted); margin: 0; }
details summary { cursor: pointer; color: var(--muted); }
.colourways figure { margin: .3rem 0; }
.colourways img { width: 48%; }
.colourways figcaption { font-size: .75rem; color: var(--muted); overflow-wrap: anywhere; }
.failed { scroll-margin-top: 10rem; }
.failed table { font-size: .85rem; }
.failed td:nth-child(-n+2), .failed td:nth-child(5) { white-space: nowrap; }
.failed td, .failed th { border-top: 1px solid var(--line); padding: .3rem .4rem; vertical-align: top; }
.failed pre { white-space: pre-wrap; word-break: break-word; margin: 0; font-size: .8rem; }
"""

# Reads only the DOM: no catalog data inside the script.
SCRIPT = """
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  function el(id) { return document.getElementById(id); }
  function apply() {
    var content = el('f-content').value, style = el('f-style').value, tag = el('f-tag').value;
    var text = el('f-text').value.trim().toLowerCase();
    var shown = 0;
    cards.forEach(function (card) {
      var tags = JSON.parse(card.getAttribute('data-tags') || '[]');
      var ok = (!content || card.getAttribute('data-content') === content)
        && (!style || card.getAttribute('data-style') === style)
        && (!tag || tags.indexOf(tag) >= 0)
        && (!text || card.getAttribute('data-search').indexOf(text) >= 0);
      card.hidden = !ok;
      if (ok) shown += 1;
    });
    el('shown').textContent = String(shown);
  }
  ['f-content', 'f-style', 'f-tag'].forEach(function (id) { el(id).addEventListener('change', apply); });
  el('f-text').addEventListener('input', apply);
  el('filters').addEventListener('reset', function () { setTimeout(apply, 0); });
  apply();
})();
"""


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render(
    rows: list[dict[str, Any]], out: Path, page: Path, version: int, notice: str = ""
) -> tuple[str, int, int, int]:
    """The page, and its counts: ok designs, failed designs, missing PNGs. `notice`: a line on
    what the page leaves out (a catalog past the gallery's bound)."""
    ok = sorted(
        (r for r in rows if r.get("status") == "ok"),
        key=lambda r: (
            str(r.get("content_id")),
            str(r.get("style_id")),
            str(r.get("created_at")),
            str(r.get("design_id")),
        ),
    )
    failed = sorted(
        (r for r in rows if r.get("status") != "ok"),
        key=lambda r: (str(r.get("content_id")), str(r.get("style_id")), str(r.get("design_id"))),
    )
    # Colourways go inside their parent's card (on their own where the parent is not shown).
    ok_ids = {r.get("design_id") for r in ok}
    children: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        if r.get("parent_design_id") in ok_ids:
            children.setdefault(r["parent_design_id"], []).append(r)
    cards, missing = [], 0
    for row in ok:
        if row.get("parent_design_id") in ok_ids:
            continue
        card, gone = _card(row, out, page.parent, children.get(row.get("design_id")))
        cards.append(card)
        missing += gone
    contents = {str(r.get("content_id")) for r in ok}
    styles = {str(r.get("style_id")) for r in ok}
    tags = {str(t) for r in ok for t in (r.get("tags") or []) if t is not None}
    policy = (
        f"default-src 'none'; img-src 'self' file: data:; style-src {_sha256_source(CSS)}; "
        f"script-src {_sha256_source(SCRIPT)}; base-uri 'none'; form-action 'none'"
    )
    failed_link = f'<a href="#failed">{len(failed)} failed</a>' if failed else "0 failed"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    failed_section = ""
    if failed:
        failed_section = (
            f'<section class="failed" id="failed"><h2>Failed designs ({len(failed)})</h2>'
            "<table><thead><tr><th>content</th><th>style</th><th>design_id</th><th>run</th><th>when</th><th>error</th></tr></thead>"
            f"<tbody>{''.join(_failed_row(r) for r in failed)}</tbody></table></section>"
        )
    notice_html = f'<p class="meta notice" id="bound">{e(notice)}</p>' if notice else ""
    body = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(policy)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Designs: {e(out.name or str(out))} v{version}</title>"
        f"<style>{CSS}</style></head><body>"
        "<header>"
        f"<h1>Design catalog <code>{e(out)}</code></h1>"
        f'<p class="meta">table version {version}; {len(ok)} design(s), '
        f"{failed_link}; generated {e(generated)}; "
        f'showing <b id="shown">{len(ok)}</b></p>'
        f"{notice_html}"
        '<form id="filters" role="search">'
        f'<label>content<select id="f-content"><option value="">all</option>{_options(contents)}</select></label>'
        f'<label>style<select id="f-style"><option value="">all</option>{_options(styles)}</select></label>'
        f'<label>tag<select id="f-tag"><option value="">all</option>{_options(tags)}</select></label>'
        '<label>search<input id="f-text" type="search" placeholder="id, run, collection, tag"></label>'
        '<button type="reset">clear</button>'
        "</form></header>"
        f'<main><section class="grid" id="designs">{"".join(cards)}</section>{failed_section}</main>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
    return body, len(ok), len(failed), missing


def build_gallery(
    out: str | Path,
    version: int | None = None,
    output: str | Path | None = None,
    max_designs: int | None = None,
) -> GalleryReport:
    """Write the gallery of the design catalog at OUT (default file OUT/gallery.html).

    Up to `max_designs` (GALLERY_MAX_DESIGNS) ok designs, every row. Past it, never the whole table: the curated
    representatives (`designs curate`'s first `max_designs` in review order) where OUT/curation
    exists, else the first `max_designs` by score with a line saying to run `designs curate`;
    each with its colourways, and the first `max_designs` failed rows."""
    out = Path(out)
    catalog = DesignCatalog(out)
    table = catalog.table(resolve_version(catalog, version))  # a missing catalog says so first
    resolved = table.version()
    page = Path(output) if output is not None else out / GALLERY_FILE
    check_output(page)  # before rendering
    ok_count = _ok_count(table, catalog.table_path)
    max_designs = GALLERY_MAX_DESIGNS if max_designs is None else max_designs
    notice = ""
    if ok_count <= max_designs:
        rows = read_table(table, catalog.table_path).to_pylist()
    else:
        rows, notice = _bounded_rows(out, resolved, ok_count, max_designs)
    text, ok, failed, missing = render(rows, out, page, resolved, notice)
    write_output(page, lambda path: Path(path).write_text(text, encoding="utf-8"))
    return GalleryReport(page, resolved, ok, failed, missing, notice)


def _ok_count(table: DeltaTable, table_path: Path) -> int:
    """The version's ok rows: from the log's row counts, else (a file without statistics, or
    of a table made before the status partition) by reading its status column alone."""
    files = data_files(table, "ok")
    counted = sum(f.rows for f in files if f.rows is not None and dict(f.partition).get("status") == "ok")
    unknown = [f for f in files if f.rows is None or dict(f.partition).get("status") != "ok"]
    for rows in read_rows(table, table_path, ["status"], unknown):
        counted += int(pc.sum(pc.equal(rows.column("status"), "ok")).as_py() or 0)
    return counted


def _bounded_rows(out: Path, version: int, ok_count: int, max_designs: int) -> tuple[list[dict[str, Any]], str]:
    """The rows of a catalog past the bound, and the line saying which they are: only the
    columns that choose them are read for every design (through the read-only connection,
    pipeline/catalog/sql.py), whole rows only for those chosen."""
    from pipeline.catalog.sql import connect
    from pipeline.execution.curate import column_expressions, scores

    con = connect(out, version)
    try:
        columns = con.table("designs").columns
        colourways = "parent_design_id" in columns
        if curation_table(out) is not None:
            reps = con.sql(
                "select design_id from curation where rank_in_group = 1 order by review_order limit ?",
                params=[max_designs],
            ).fetchall()
            groups = con.sql("select count(*) from curation where rank_in_group = 1").fetchall()[0][0]
            chosen = [r[0] for r in reps]
            notice = (
                f"{ok_count:,} designs: past the gallery's bound of {max_designs:,}, showing the {len(chosen):,} "
                "curated representatives (each near-duplicate group's best design, from `designs curate`, in "
                f"review order) of {groups:,} group(s)"
            )
        else:
            table = con.sql(
                f"select {', '.join(column_expressions(columns))} from designs where status = 'ok'"
            ).to_arrow_table()
            score = scores(
                {k: table.column(k).to_numpy(zero_copy_only=False).astype(np.float64) for k in SCORE_COLUMNS},
                CURATE_SCORE_WEIGHTS,
            )
            key = np.where(np.isfinite(score), -score, np.inf)
            own = ~table.column("parent_design_id").is_valid().to_numpy(zero_copy_only=False)
            ids = np.asarray(table.column("design_id").to_pylist(), dtype=object)
            order = np.lexsort((ids, key))
            order = order[own[order]][:max_designs]  # colourways go inside their parent's card
            chosen = ids[order].tolist()
            notice = (
                f"{ok_count:,} designs: past the gallery's bound of {max_designs:,}, showing the first "
                f"{len(chosen):,} by score. Run `designs curate` to group near-duplicates: the gallery then "
                "shows each group's best design"
            )
        # The ids are bound as a parameter, never pasted into SQL.
        chosen_rows = "design_id in (select unnest($ids))"
        if colourways:
            chosen_rows += " or parent_design_id in (select unnest($ids))"
        rows = con.sql(f"select * from designs where status = 'ok' and ({chosen_rows})", params={"ids": chosen})
        rows = rows.to_arrow_table()
        failed = con.sql("select * from designs where status <> 'ok' limit ?", params=[max_designs]).to_arrow_table()
    finally:
        con.close()
    return rows.to_pylist() + failed.to_pylist(), notice
