"""The Prefect artifacts of a run, keyed so the Prefect UI's Artifacts page
shows the latest run and keeps every earlier one: a table (counts, throughput,
device busy fraction, failures with their errors), a markdown report (links to
the gallery, the contact sheet and the loss-curve plot) and a link artifact."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

from pipeline.config import DEFAULT_OUT
from pipeline.views.contact_sheet import CONTACT_SHEET
from pipeline.views.loss_plot import LOSS_PLOT, plot_loss_curves

TABLE_KEY = "designs-run-table"
REPORT_KEY = "designs-run-report"
GALLERY_KEY = "designs-gallery"
MAX_FAILURE_ROWS = 100
MAX_EMBEDDED_PLOT_BYTES = 256_000  # a larger plot is linked, not embedded in the markdown


def _get(summary: Any, name: str, default: Any = None) -> Any:
    if isinstance(summary, dict):
        return summary.get(name, default)
    return getattr(summary, name, default)


def run_table(summary: Any) -> list[dict[str, str]]:
    """The rows of the table artifact: what / value; failures last, one row each."""
    table = []

    def add(what: str, value: Any) -> None:
        table.append({"what": what, "value": str(value)})

    add("run", _get(summary, "run_id"))
    add("catalog", _get(summary, "catalog"))
    add("pairings", _get(summary, "pairings"))
    add("already in the catalog", _get(summary, "already_done"))
    add("ok", _get(summary, "ok"))
    add("failed", _get(summary, "failed"))
    add("wall time (s)", f"{float(_get(summary, 'wall_seconds', 0.0)):.1f}")
    add("throughput (designs/hour)", f"{float(_get(summary, 'designs_per_hour', 0.0)):.1f}")
    add("devices", ", ".join(_get(summary, "devices", ()) or ()))
    busy = _get(summary, "device_busy_fraction")
    if busy is not None:
        if isinstance(busy, dict):
            for device, fraction in sorted(busy.items()):
                add(f"device busy fraction ({device})", f"{float(fraction):.2f}")
        else:
            add("device busy fraction", f"{float(busy):.2f}")
    add("table version", _get(summary, "table_version"))
    failures = list(_get(summary, "failures", ()) or ())
    for failure in failures[:MAX_FAILURE_ROWS]:
        add(
            f"failed {failure.get('content_id')} x {failure.get('style_id')} ({failure.get('design_id')})",
            failure.get("error", ""),
        )
    if len(failures) > MAX_FAILURE_ROWS:
        add(f"... {len(failures) - MAX_FAILURE_ROWS} more failures", "query the catalog: status = 'failed'")
    return table


def _md_escape(text: Any) -> str:
    """Catalog strings are untrusted: no markdown or HTML of theirs survives."""
    text = str(text)
    for char in "\\`*_{}[]<>()#+!|":
        text = text.replace(char, "\\" + char)
    return text.replace("\n", " ")


def run_report(
    summary: Any, out: str | Path, run_id: str, plot: Path | None, contact_sheet: Path | None, gallery: Path
) -> str:
    out = Path(out)
    lines = [
        f"# Run {_md_escape(run_id)}",
        "",
        f"**{_get(summary, 'ok')} ok**, **{_get(summary, 'failed')} failed**, {_get(summary, 'already_done')} already in the catalog "
        f"(of {_get(summary, 'pairings')} pairings) in {float(_get(summary, 'wall_seconds', 0.0)):.1f} s on "
        f"{_md_escape(', '.join(_get(summary, 'devices', ()) or ()))}; "
        f"{float(_get(summary, 'designs_per_hour', 0.0)):.1f} designs/hour; design catalog `{out.resolve()}/designs` "
        f"at version {_get(summary, 'table_version')}.",
        "",
        "## Files",
        "",
    ]
    if gallery.is_file():
        lines.append(
            f"- Gallery: [{gallery.resolve()}]({gallery.resolve().as_uri()}) (refresh it with `make gallery OUT={out}`)"
        )
    else:
        lines.append(f"- Gallery: `{gallery.resolve()}` (make it with `make gallery OUT={out}`)")
    if contact_sheet is not None and contact_sheet.is_file():
        lines.append(f"- Contact sheet: [{contact_sheet.resolve()}]({contact_sheet.resolve().as_uri()})")
    else:
        lines.append("- Contact sheet: none for this run")
    lines.append(f"- Summary and config: `{_run_dir(out, run_id).resolve()}/{{summary,config}}.json`")
    lines += ["", "## Loss curves", ""]
    if plot is not None and plot.is_file():
        lines.append(f"`{plot.resolve()}`")
        lines.append("")
        data = plot.read_bytes()
        if len(data) <= MAX_EMBEDDED_PLOT_BYTES:
            lines.append(f"![loss curves](data:image/png;base64,{base64.b64encode(data).decode('ascii')})")
        else:
            lines.append(f"![loss curves]({plot.resolve().as_uri()})")
    else:
        lines.append("No ok design in this run, so no loss curves.")
    failures = list(_get(summary, "failures", ()) or ())
    if failures:
        lines += ["", "## Failures", "", "| content | style | design | error |", "| --- | --- | --- | --- |"]
        for failure in failures[:MAX_FAILURE_ROWS]:
            lines.append(
                f"| {_md_escape(failure.get('content_id'))} | {_md_escape(failure.get('style_id'))} | "
                f"{_md_escape(failure.get('design_id'))} | {_md_escape(failure.get('error', ''))} |"
            )
        if len(failures) > MAX_FAILURE_ROWS:
            lines.append(f"\n... and {len(failures) - MAX_FAILURE_ROWS} more: query the catalog for status = 'failed'.")
    return "\n".join(lines) + "\n"


def publish_run_artifacts(
    summary: Any, rows: list[dict[str, Any]], out: str | Path = DEFAULT_OUT, run_id: str | None = None
) -> dict[str, Any]:
    """Draw the loss-curve plot and create the run's table, markdown and link artifacts.

    Called inside the flow the artifacts belong to its flow run. Returns the
    artifact ids ("table", "markdown", "link") and the plot's path ("plot", None
    when no design has a curve). A failure to publish is logged, never raised:
    the designs are committed already.
    """
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    out = Path(out)
    run_id = run_id or _get(summary, "run_id")
    run_dir = _run_dir(out, run_id)
    result: dict[str, Any] = {"plot": None}
    try:
        result["plot"] = plot_loss_curves(
            rows, run_dir / LOSS_PLOT, title=f"run {run_id}: total loss of {_get(summary, 'ok')} design(s)"
        )
    except Exception as err:  # matplotlib missing or a bad curve: the report goes on without the plot
        _warn(f"loss-curve plot not drawn: {err}")
    contact_sheet = run_dir / CONTACT_SHEET
    gallery = out / "gallery.html"
    description = f"designs run {run_id}"
    try:
        result["table"] = create_table_artifact(run_table(summary), key=TABLE_KEY, description=description)
        result["markdown"] = create_markdown_artifact(
            run_report(
                summary, out, run_id, result["plot"], contact_sheet if contact_sheet.is_file() else None, gallery
            ),
            key=REPORT_KEY,
            description=description,
        )
        result["link"] = create_link_artifact(
            gallery.resolve().as_uri(),
            link_text=f"gallery of {out.resolve()}",
            key=GALLERY_KEY,
            description="the static HTML gallery (make gallery OUT=...)",
        )
    except Exception as err:  # the API is down or refuses: the run's designs are committed all the same
        _warn(f"run artifacts not published: {err}")
    return result


def _run_dir(out: Path, run_id: str) -> Path:
    from pipeline.catalog.designs import DesignCatalog  # local: it imports deltalake

    return DesignCatalog(out).run_dir(run_id)


def _warn(message: str) -> None:
    try:
        from prefect import get_run_logger

        get_run_logger().warning(message)
    except Exception:
        print(message, file=sys.stderr)
