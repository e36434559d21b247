"""The loss-curve plot of a run: loss_total of its ok designs against the step,
log y, drawn with matplotlib's Agg backend to OUT/runs/<run_id>/loss_curves.png.

The last point of every curve is the final image's loss, after the colour and
mask post-processing, not an optimization step: it is drawn as its own marker
("final image"), not joined to the curve, where a rise would read as the
optimization getting worse."""

from __future__ import annotations

import io
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOSS_PLOT = "loss_curves.png"


MAX_CURVES = 300  # curves drawn; more are sampled evenly (the median of all is drawn too)


def plot_loss_curves(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """loss_total of every ok design against the optimization step, log y; None if no design has a curve."""
    figure = loss_curves_figure(rows, title)
    if figure is None:
        return None
    from pipeline.files import write_atomic  # local: it imports torch

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    path = Path(path)
    write_atomic(path, buffer.getvalue())
    return path


def design_curve(row: dict[str, Any]) -> tuple[list[tuple[int, float]], tuple[int, float] | None]:
    """(step, loss_total) of an ok row's optimization samples, and of its final image (None if not finite)."""
    losses = row.get("loss_total")
    if row.get("status") != "ok" or losses is None or len(losses) == 0:
        return [], None
    every = int(row.get("loss_every") or 1)
    values = [float(v) for v in losses]
    # Samples every `every` steps, then the final image's loss (at the last step).
    steps = [i * every for i in range(len(values) - 1)]
    last = (steps[-1] + every) if steps else 0
    params = row.get("params") or {}
    if isinstance(params, dict) and isinstance(params.get("steps"), int) and not params.get("scales"):
        last = max(last, params["steps"])
    samples = [(s, v) for s, v in zip(steps, values) if math.isfinite(v) and v > 0]
    final = (last, values[-1]) if math.isfinite(values[-1]) and values[-1] > 0 else None
    return samples, final


def loss_curves_figure(rows: list[dict[str, Any]], title: str = "") -> Figure | None:
    """The matplotlib Figure of plot_loss_curves, or None if no design has a curve."""
    curves, finals = [], []
    for row in rows:
        samples, final = design_curve(row)
        if samples or final:
            curves.append(samples)
            finals.append(final)
    if not curves:
        return None

    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in worker threads

    chosen = (
        range(len(curves)) if len(curves) <= MAX_CURVES else [i * len(curves) // MAX_CURVES for i in range(MAX_CURVES)]
    )
    figure = Figure(figsize=(7, 4), dpi=90)
    axes = figure.add_subplot(1, 1, 1)
    alpha = max(0.08, min(0.8, 8 / len(chosen)))
    for i in chosen:
        if curves[i]:
            xs, ys = zip(*curves[i])
            axes.plot(xs, ys, linewidth=0.8, alpha=alpha, color="tab:blue")
    median = _median_curve([c for c in curves if c])
    if median and len(curves) > 1:
        xs, ys = zip(*median)
        axes.plot(xs, ys, linewidth=2.0, color="tab:red", label=f"median of {len(curves)} designs")
    shown_finals = [finals[i] for i in chosen if finals[i] is not None]
    if shown_finals:
        xs, ys = zip(*shown_finals)
        axes.plot(
            xs,
            ys,
            linestyle="none",
            marker="D",
            markersize=4,
            alpha=max(alpha, 0.5),
            color="tab:orange",
            label="final image (after colour and mask post-processing)",
        )
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper right")
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("total loss")
    axes.set_title(
        title
        or f"loss curves of {len(curves)} design(s)" + (f" ({len(chosen)} drawn)" if len(chosen) < len(curves) else "")
    )
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    return figure


def _median_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    by_step: dict[int, list[float]] = {}
    for points in curves:
        for step, value in points:
            by_step.setdefault(step, []).append(value)
    return [(step, statistics.median(by_step[step])) for step in sorted(by_step)]
