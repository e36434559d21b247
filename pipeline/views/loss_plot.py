"""The loss-curve plot of a run: loss_total of its ok designs against the step,
log y, drawn with matplotlib's Agg backend to OUT/runs/<run_id>/loss_curves.png."""

from __future__ import annotations

import io
import math
import statistics
from pathlib import Path
from typing import Any

LOSS_PLOT = "loss_curves.png"


MAX_CURVES = 300  # curves drawn; more are sampled evenly (the median of all is drawn too)


def plot_loss_curves(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """loss_total of every ok design against the optimization step, log y; None if no design has a curve."""
    curves = []
    for row in rows:
        losses = row.get("loss_total")
        if row.get("status") != "ok" or losses is None or len(losses) == 0:
            continue
        every = int(row.get("loss_every") or 1)
        values = [float(v) for v in losses]
        # Samples every `every` steps, then the final image's loss (at the last step).
        steps = [i * every for i in range(len(values) - 1)]
        last = (steps[-1] + every) if steps else 0
        params = row.get("params") or {}
        if isinstance(params, dict) and isinstance(params.get("steps"), int) and not params.get("scales"):
            last = max(last, params["steps"])
        steps.append(last)
        points = [(s, v) for s, v in zip(steps, values) if math.isfinite(v) and v > 0]
        if points:
            curves.append(points)
    if not curves:
        return None

    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in worker threads

    shown = curves if len(curves) <= MAX_CURVES else [curves[i * len(curves) // MAX_CURVES] for i in range(MAX_CURVES)]
    figure = Figure(figsize=(7, 4), dpi=90)
    axes = figure.add_subplot(1, 1, 1)
    alpha = max(0.08, min(0.8, 8 / len(shown)))
    for points in shown:
        xs, ys = zip(*points)
        axes.plot(xs, ys, linewidth=0.8, alpha=alpha, color="tab:blue")
    median = _median_curve(curves)
    if median and len(curves) > 1:
        xs, ys = zip(*median)
        axes.plot(xs, ys, linewidth=2.0, color="tab:red", label=f"median of {len(curves)} designs")
        axes.legend(loc="upper right")
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("total loss")
    axes.set_title(
        title
        or f"loss curves of {len(curves)} design(s)" + (f" ({len(shown)} drawn)" if len(shown) < len(curves) else "")
    )
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    from pipeline.files import write_atomic  # local: it imports torch

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    path = Path(path)
    write_atomic(path, buffer.getvalue())
    return path


def _median_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    by_step: dict[int, list[float]] = {}
    for points in curves:
        for step, value in points:
            by_step.setdefault(step, []).append(value)
    return [(step, statistics.median(by_step[step])) for step in sorted(by_step)]
