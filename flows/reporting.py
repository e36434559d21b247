"""Watching a run: a terminal progress bar, and Prefect artifacts per run.

- `RunProgress`: designs done of total, designs/s, ETA and failures so far; a
  rich progress bar on a terminal, plain lines otherwise (logs, cron mail).
- `publish_run_artifacts(summary, rows, out, run_id)`: a table artifact (counts,
  throughput, device busy fraction when the summary has one, failures with
  their errors), a markdown report (links to the gallery, the contact sheet and
  the loss-curve plot) and a link artifact, all keyed so the Prefect UI's
  Artifacts page shows the latest run and keeps every earlier one.
- `plot_loss_curves(rows, path)`: loss_total of the run's ok designs against the
  step, log y, drawn with matplotlib's Agg backend to OUT/runs/<run_id>/loss_curves.png.
"""

from __future__ import annotations

import base64
import io
import math
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from pipeline.config import DEFAULT_OUT

TABLE_KEY = "designs-run-table"
REPORT_KEY = "designs-run-report"
GALLERY_KEY = "designs-gallery"
LOSS_PLOT = "loss_curves.png"
CONTACT_SHEET = "contact_sheet.png"
MAX_CURVES = 300  # curves drawn; more are sampled evenly (the median of all is drawn too)
MAX_FAILURE_ROWS = 100
MAX_EMBEDDED_PLOT_BYTES = 256_000  # a larger plot is linked, not embedded in the markdown


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RunProgress:
    """Designs done of total, designs/s, ETA, failures so far.

    progress = RunProgress(); progress.start(total); progress.advance(ok=3, failed=1); progress.close()

    On a terminal it is a rich progress bar; on anything else (a file, a pipe,
    Prefect's served runs, cron) a plain line per `every` seconds and a last
    one at close. `enabled=False` makes every method a no-op. On a terminal the
    bar shares the console of Prefect's log handler, so log lines scroll above it.
    """

    def __init__(self, stream: IO[str] | None = None, every: float = 30.0, enabled: bool = True, label: str = "designs"):
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.enabled = enabled
        self.label = label
        self.total = 0
        self.ok = 0
        self.failed = 0
        self._started = 0.0
        self._last_line = -math.inf
        self._lock = threading.Lock()
        self._bar = None
        self._task = None
        self._pushed_theme = None
        self._closed = False

    # --- numbers ---

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started if self._started else 0.0

    @property
    def rate(self) -> float:
        """Designs per second since start (failures included: they take their turn too)."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def line(self) -> str:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.label} {self.done}/{self.total} ({percent:.0f}%), {self.failed} failed, "
                f"{self.rate:.2f} designs/s, elapsed {_duration(self.elapsed)}, ETA {_duration(self.eta)}")

    # --- the three calls of the flow ---

    def start(self, total: int) -> RunProgress:
        with self._lock:
            self.total, self.ok, self.failed = int(total), 0, 0
            self._started = time.monotonic()
            self._closed = False
            if not self.enabled:
                return self
            if self._is_terminal():
                self._start_bar()
            else:
                self._write(self.line())
        return self

    def advance(self, ok: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.ok += ok
            self.failed += failed
            if not self.enabled or self._closed:
                return
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done, failed=self.failed, rate=self.rate)
            elif time.monotonic() - self._last_line >= self.every:
                self._write(self.line())

    def advance_rows(self, rows: list[dict[str, Any]]) -> None:
        """advance() by the status of a finished shard's rows."""
        ok = sum(1 for r in rows if r.get("status") == "ok")
        self.advance(ok=ok, failed=len(rows) - ok)

    def close(self) -> None:
        with self._lock:
            if self._closed or not self.enabled:
                self._closed = True
                return
            self._closed = True
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done, failed=self.failed, rate=self.rate)
                self._bar.stop()
                self._bar = None
                if self._pushed_theme is not None:
                    self._pushed_theme.pop_theme()
                    self._pushed_theme = None
            else:
                self._write(self.line(), force=True)

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- output ---

    def _is_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        try:
            return bool(isatty and isatty())
        except ValueError:  # a closed stream
            return False

    def _write(self, text: str, force: bool = False) -> None:
        self._last_line = time.monotonic()
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except ValueError:  # the stream was closed under us; progress is not worth a failed run
            self.enabled = False

    def _console(self):
        from rich.console import Console
        from rich.default_styles import DEFAULT_STYLES
        from rich.theme import Theme

        console = _prefect_console(self.stream)
        if console is None:
            return Console(file=self.stream)
        # Prefect's console has a theme of its own, without rich's progress styles.
        console.push_theme(Theme({k: v for k, v in DEFAULT_STYLES.items() if k.startswith(("bar.", "progress."))}))
        self._pushed_theme = console
        return console

    def _start_bar(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.2f} designs/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            console=self._console(),
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._bar.add_task(self.label, total=self.total, failed=0, rate=0.0)
        self._bar.start()


def _prefect_console(stream: IO[str]):
    """The rich Console of Prefect's log handler on `stream`, if there is one: log lines printed
    through it while the bar is live go above the bar instead of breaking it."""
    import logging

    try:
        from prefect.logging.handlers import PrefectConsoleHandler
    except ImportError:
        return None
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and getattr(handler, "stream", None) is stream:
                return handler.console
    return None


# --- the loss-curve plot ---


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
    axes.set_title(title or f"loss curves of {len(curves)} design(s)" + (f" ({len(shown)} drawn)" if len(shown) < len(curves) else ""))
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    from pipeline.images import write_atomic  # local: it imports torch

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


# --- Prefect artifacts ---


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
        add(f"failed {failure.get('content_id')} x {failure.get('style_id')} ({failure.get('design_id')})", failure.get("error", ""))
    if len(failures) > MAX_FAILURE_ROWS:
        add(f"... {len(failures) - MAX_FAILURE_ROWS} more failures", "query the catalog: status = 'failed'")
    return table


def _md_escape(text: Any) -> str:
    """Catalog strings are untrusted: no markdown or HTML of theirs survives."""
    text = str(text)
    for char in "\\`*_{}[]<>()#+!|":
        text = text.replace(char, "\\" + char)
    return text.replace("\n", " ")


def run_report(summary: Any, out: str | Path, run_id: str, plot: Path | None, contact_sheet: Path | None, gallery: Path) -> str:
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
        lines.append(f"- Gallery: [{gallery.resolve()}]({gallery.resolve().as_uri()}) (refresh it with `make gallery OUT={out}`)")
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
            lines.append(f"| {_md_escape(failure.get('content_id'))} | {_md_escape(failure.get('style_id'))} | "
                         f"{_md_escape(failure.get('design_id'))} | {_md_escape(failure.get('error', ''))} |")
        if len(failures) > MAX_FAILURE_ROWS:
            lines.append(f"\n... and {len(failures) - MAX_FAILURE_ROWS} more: query the catalog for status = 'failed'.")
    return "\n".join(lines) + "\n"


def publish_run_artifacts(summary: Any, rows: list[dict[str, Any]], out: str | Path = DEFAULT_OUT, run_id: str | None = None) -> dict[str, Any]:
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
        result["plot"] = plot_loss_curves(rows, run_dir / LOSS_PLOT, title=f"run {run_id}: total loss of {_get(summary, 'ok')} design(s)")
    except Exception as err:  # matplotlib missing or a bad curve: the report goes on without the plot
        _warn(f"loss-curve plot not drawn: {err}")
    contact_sheet = run_dir / CONTACT_SHEET
    gallery = out / "gallery.html"
    description = f"designs run {run_id}"
    try:
        result["table"] = create_table_artifact(run_table(summary), key=TABLE_KEY, description=description)
        result["markdown"] = create_markdown_artifact(
            run_report(summary, out, run_id, result["plot"], contact_sheet if contact_sheet.is_file() else None, gallery),
            key=REPORT_KEY, description=description)
        result["link"] = create_link_artifact(gallery.resolve().as_uri(), link_text=f"gallery of {out.resolve()}", key=GALLERY_KEY,
                                              description="the static HTML gallery (make gallery OUT=...)")
    except Exception as err:  # the API is down or refuses: the run's designs are committed all the same
        _warn(f"run artifacts not published: {err}")
    return result


def _run_dir(out: Path, run_id: str) -> Path:
    from pipeline.design_catalog import DesignCatalog  # local: it imports deltalake

    return DesignCatalog(out).run_dir(run_id)


def _warn(message: str) -> None:
    try:
        from prefect import get_run_logger

        get_run_logger().warning(message)
    except Exception:
        print(message, file=sys.stderr)
