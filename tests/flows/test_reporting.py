"""Watching a run (flows/progress.py, flows/artifacts.py, pipeline/views/loss_plot.py): the loss-curve plot, the Prefect
artifacts of a run, and the progress bar's plain-text output."""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from pathlib import Path

import pytest

from flows.artifacts import GALLERY_KEY, REPORT_KEY, TABLE_KEY, publish_run_artifacts, run_table
from flows.progress import RunProgress, StepLog
from pipeline.execution.summary import RunSummary
from pipeline.views.loss_plot import loss_curves_figure, plot_loss_curves

RUN_ID = "20261124T020000Z-abcdef12"


def rows(ok: int = 5, failed: int = 1, steps: int = 20, every: int = 5) -> list[dict]:
    made = []
    for i in range(ok):
        curve = [100.0 * (i + 1) * math.exp(-k / 3) for k in range(steps // every + 1)]
        made.append(
            {
                "design_id": f"ok{i:03d}",
                "status": "ok",
                "content_id": "dress",
                "style_id": f"s{i}",
                "loss_total": curve,
                "loss_every": every,
                "params": {"steps": steps, "scales": []},
                "error": None,
            }
        )
    for i in range(failed):
        made.append(
            {
                "design_id": f"bad{i:03d}",
                "status": "failed",
                "content_id": "hoodie",
                "style_id": "stripes",
                "loss_total": None,
                "loss_every": every,
                "error": "file not found: 'stripes' <script>",
            }
        )
    return made


def summary(made: list[dict], **changes) -> RunSummary:
    failures = tuple(
        {"design_id": r["design_id"], "content_id": r["content_id"], "style_id": r["style_id"], "error": r["error"]}
        for r in made
        if r["status"] != "ok"
    )
    values = dict(
        run_id=RUN_ID,
        flow_run_id="f",
        catalog="spring.parquet",
        out="out",
        started_at="2026-11-24T02:00:00+00:00",
        wall_seconds=12.5,
        pairings=len(made) + 2,
        already_done=2,
        ok=len(made) - len(failures),
        failed=len(failures),
        failures=failures,
        designs_per_hour=1440.0,
        devices=("cuda:0", "cuda:1"),
        table_version=7,
    )
    values.update(changes)
    return RunSummary(**values)


def png_size(path: Path) -> tuple[int, int]:
    """Checks the PNG structure (signature, IHDR, chunk CRCs, IEND) and returns width, height."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, kinds = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        kinds.append(kind)
        offset += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_loss_curve_plot_is_a_valid_png(tmp_path: Path):
    from PIL import Image

    path = plot_loss_curves(rows(), tmp_path / "runs" / RUN_ID / "loss_curves.png")
    assert path == tmp_path / "runs" / RUN_ID / "loss_curves.png"
    width, height = png_size(path)
    assert width > 200 and height > 100
    with Image.open(path) as image:
        image.verify()
    assert not list(path.parent.glob("*.partial"))
    # No ok design with a curve: no plot.
    assert plot_loss_curves(rows(ok=0, failed=2), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_the_final_image_is_a_marker_apart_from_the_curve():
    made = rows(ok=3, failed=1, steps=20, every=5)
    for row in made[:3]:
        row["loss_total"][-1] = row["loss_total"][0] * 2  # colour and mask post-processing raised it
    axes = loss_curves_figure(made).axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    final = lines.pop("final image (after colour and mask post-processing)")
    assert final.get_linestyle() == "None" and final.get_marker() not in ("None", "", None)  # points, not a line
    assert list(final.get_xdata()) == [20, 20, 20]
    assert sorted(final.get_ydata()) == sorted(r["loss_total"][-1] for r in made[:3])
    # the curves, the median included, stop at the last optimization sample (step 15)
    assert lines and all(max(line.get_xdata()) == 15 for line in lines.values())
    assert "final image" in [t.get_text() for t in axes.get_legend().get_texts()][-1]


def test_table_rows_show_counts_failures_and_busy_fraction_only_when_known():
    made = rows()
    table = {r["what"]: r["value"] for r in run_table(summary(made))}
    assert table["ok"] == "5" and table["failed"] == "1" and table["throughput (designs/hour)"] == "1440.0"
    assert not any("busy" in what for what in table)
    assert table["failed hoodie x stripes (bad000)"].startswith("file not found")
    with_busy = {
        r["what"]: r["value"]
        for r in run_table({**summary(made).to_dict(), "device_busy_fraction": {"cuda:0": 0.91, "cuda:1": 0.5}})
    }
    assert with_busy["device busy fraction (cuda:0)"] == "0.91" and with_busy["device busy fraction (cuda:1)"] == "0.50"


def test_run_artifacts_are_created_in_the_flow_run(prefect_server, tmp_path: Path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.runtime import flow_run

    out = tmp_path / "out"
    made = rows()
    (out / "runs" / RUN_ID).mkdir(parents=True)
    (out / "runs" / RUN_ID / "contact_sheet.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (out / "gallery.html").write_text("<html></html>")

    @flow(name="reporting-test")
    def publish():
        return str(flow_run.id), publish_run_artifacts(summary(made), made, str(out), RUN_ID)

    flow_run_id, result = publish()
    assert result["plot"] == out / "runs" / RUN_ID / "loss_curves.png" and png_size(result["plot"])

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) == {TABLE_KEY, REPORT_KEY, GALLERY_KEY}
    assert (by_key[TABLE_KEY].type, by_key[REPORT_KEY].type) == ("table", "markdown")
    assert by_key[GALLERY_KEY].type == "markdown"  # Prefect stores a link artifact as a markdown link

    table = by_key[TABLE_KEY].data
    table = json.loads(table) if isinstance(table, str) else table
    values = {r["what"]: r["value"] for r in table}
    assert values["ok"] == "5" and values["failed"] == "1" and values["devices"] == "cuda:0, cuda:1"
    assert "file not found" in values["failed hoodie x stripes (bad000)"]

    report = by_key[REPORT_KEY].data
    assert f"# Run {RUN_ID}" in report
    assert (out / "gallery.html").resolve().as_uri() in report
    assert (out / "runs" / RUN_ID / "contact_sheet.png").resolve().as_uri() in report
    assert str((out / "runs" / RUN_ID / "loss_curves.png").resolve()) in report
    assert "![loss curves](data:image/png;base64," in report
    assert "<script>" not in report  # catalog strings are escaped
    assert f"]({(out / 'gallery.html').resolve().as_uri()})" in by_key[GALLERY_KEY].data


def test_progress_plain_text_shows_done_total_and_failures():
    stream = io.StringIO()  # not a TTY: plain lines
    progress = RunProgress(stream=stream, every=0)
    progress.start(10)
    progress.advance(ok=3)
    progress.advance_rows([{"status": "ok"}, {"status": "failed"}])
    progress.advance(failed=1)
    progress.close()
    progress.close()  # twice is fine
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("designs 0/10 (0%), 0 failed")
    assert lines[1].startswith("designs 3/10 (30%), 0 failed")
    assert lines[2].startswith("designs 5/10 (50%), 1 failed")
    assert lines[-1].startswith("designs 6/10 (60%), 2 failed")
    assert all("designs/s" in line and "ETA" in line for line in lines)
    assert (progress.ok, progress.failed, progress.done, progress.total) == (4, 2, 6, 10)


def test_progress_plain_text_ends_with_one_line_of_the_final_counts():
    stream = io.StringIO()
    progress = RunProgress(stream=stream, every=0).start(2)
    progress.advance(ok=2)  # a periodic line that already shows the end
    progress.close()
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == ["designs 0/2 (0%)", "designs 2/2 (100%)"]


def test_step_log_shows_each_batch_start_and_end_and_at_most_one_line_per_interval():
    from pipeline.engine.transfer import Progress

    now = [0.0]
    written: list[int] = []
    log = StepLog(lambda p: written.append(p.step), every=15.0, loss_every=10, clock=lambda: now[0])

    def batch(steps: int, every: int) -> None:
        for step in range(0, steps, every):
            log(Progress(step=step, steps=steps, designs=2, loss_total=(1.0, 2.0)))
            now[0] += 1.0  # one second per sample

    batch(1000, 10)  # samples 0..990: the last one is written though within 15 s of the one before
    assert written == [0, 150, 300, 450, 600, 750, 900, 990]
    written.clear()
    batch(1000, 40)  # a pairing with its own loss_every: its last sample, 960, is held back...
    batch(100, 10)  # ...and written when the next batch starts
    assert written == [0, 600, 960, 0, 90]
    written.clear()
    batch(1000, 40)
    log.close()  # the shard ended: the held sample is written
    assert written == [0, 600, 960]
    log.close()
    assert written == [0, 600, 960]


def test_progress_plain_text_is_rate_limited_and_can_be_off():
    stream = io.StringIO()
    progress = RunProgress(stream=stream, every=3600).start(100)
    for _ in range(50):
        progress.advance(ok=1)
    progress.close()
    assert len(stream.getvalue().splitlines()) == 2  # the first line and the last
    assert stream.getvalue().splitlines()[-1].startswith("designs 50/100 (50%), 0 failed")

    silent = io.StringIO()
    off = RunProgress(stream=silent, enabled=False).start(3)
    off.advance(ok=3)
    off.close()
    assert silent.getvalue() == "" and off.done == 3


@pytest.mark.parametrize("total", [0, 1])
def test_progress_on_a_terminal_draws_a_rich_bar(total: int):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with RunProgress(stream=stream).start(total) as progress:
        progress.advance(ok=total)
    assert f"{total}/{total}" in stream.getvalue() and "failed" in stream.getvalue()
