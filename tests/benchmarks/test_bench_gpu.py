"""`make bench-gpu` (benchmarks.gpu) at toy sizes on the CPU: every step runs, writes its
rows and reports itself; a step left out, missing a module, out of time or timed out
is said so. No assertions on time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import table_rows

from benchmarks import engine as bench
from benchmarks import gpu
from benchmarks import overlap as bench_pipeline
from benchmarks import scales as bench_scales

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `python -m benchmarks.gpu --tiny` on the CPU (compile left out: minutes of
    compilation on a CPU), into a copy of docs/BENCHMARKS.md: (summary, page before, after, stdout)."""
    tmp = tmp_path_factory.mktemp("gpu")
    markdown = tmp / "BENCHMARKS.md"
    original = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    markdown.write_text(original)
    command = [sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--tiny", "--skip", "compile"]
    # A generous time: a busy CPU must not turn this into a test of the time limits.
    command += ["--total-s", "1200", "--markdown", str(markdown), "--out-dir", str(tmp / "out")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    return summary, original, markdown.read_text(), done.stdout


def test_every_step_runs_or_says_why_not(tiny_run):
    summary, _, _, out = tiny_run
    status = {r["name"]: r["status"] for r in summary["steps"]}
    assert list(status) == [s.name for s in gpu.STEPS]
    assert status == {"engine": "ok", "compile": "skipped", "max-size": "ok", "pipeline": "ok", "scales": "ok"}
    assert summary["device"] == "cpu" and summary["device_name"].startswith("cpu (")
    assert "compile   skipped    left out (--skip)" in out
    assert out.rstrip().splitlines()[-1] == "not run or not finished: compile"
    # The engine step's targets are judged, whether met or not (a CPU meets neither).
    assert len(summary["targets"]) == 2 and all("(target >= " in t for t in summary["targets"])
    engine = next(r for r in summary["steps"] if r["name"] == "engine")
    assert "naive-default" in engine["result"] and "engine-b2" in engine["result"]


def test_each_step_appends_its_rows_with_the_device_name(tiny_run):
    summary, original, after, _ = tiny_run
    name = summary["device_name"]
    for header, count in (
        (bench.TABLE_HEADER, 4),  # naive-fp32, naive-default, engine-b1, engine-b2
        (bench_scales.MAX_SIZE_TABLE, 2),
        (bench_pipeline.PIPELINE_TABLE, 2),
        (bench_scales.SCALES_TABLE, 1),
    ):
        new = table_rows(after, header)[len(table_rows(original, header)) :]
        assert len(new) == count, header
        assert all(row[1] == name for row in new)
    runs = table_rows(after, gpu.SUMMARY_TABLE)
    assert [row[2] for row in runs[-len(gpu.STEPS) :]] == [s.name for s in gpu.STEPS]
    assert all(row[1] == name for row in runs) and runs[-4][3] == "skipped"


def test_missing_modules_no_time_and_timeouts_are_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu, "missing_modules", lambda names: [n for n in names if n == "deltalake"])

    real_run = subprocess.run

    def too_slow(command, **kwargs):
        if command[1:3] == ["-m", "benchmarks"]:  # a step; not platform's own `uname -p`
            raise subprocess.TimeoutExpired(command, kwargs["timeout"])
        return real_run(command, **kwargs)

    monkeypatch.setattr(gpu.subprocess, "run", too_slow)
    markdown = tmp_path / "B.md"
    summary = gpu.main(
        ["--device", "cpu", "--tiny", "--skip", "compile", "--total-s", "30", "--markdown", str(markdown)]
        + ["--out-dir", str(tmp_path / "out")]
    )
    steps = {r["name"]: r for r in summary["steps"]}
    assert steps["engine"]["status"] == "timed out" and "stopped after its 12 s" in steps["engine"]["result"]
    assert steps["pipeline"]["status"] == "skipped"
    assert steps["pipeline"]["result"] == "needs deltalake, not installed here"
    assert summary["targets"] == []  # no engine result to judge
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "not run or not finished: engine, compile, max-size, pipeline, scales"
    assert "## GPU runs (make bench-gpu)" in markdown.read_text()

    # The clock jumps past the end after the start: the steps left are skipped, not started.
    monkeypatch.setattr(gpu.time, "monotonic", iter([0.0] + [100.0] * 10).__next__)
    late = gpu.main(
        ["--device", "cpu", "--tiny", "--skip", "engine,compile", "--total-s", "30", "--markdown", str(markdown)]
        + ["--out-dir", str(tmp_path / "late")]
    )
    assert {r["name"]: r["result"] for r in late["steps"]}["scales"] == "no time left of --total-s"


def test_an_unknown_step_names_the_steps():
    with pytest.raises(SystemExit):
        gpu.parse_args(["--skip", "engine,warp"])


def test_bench_gpu_imports_neither_prefect_nor_arrow():
    code = (
        "import sys, benchmarks.gpu; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'deltalake', 'pyarrow', 'pandas', 'duckdb', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # not even torch until it runs: --help works anywhere
