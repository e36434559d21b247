"""Speed at equal quality (benchmarks.quality): its code path on tiny random weights (no
assertion on time), and the one-line refusal without real weights."""

from __future__ import annotations

import pytest
import torch

from benchmarks import cli as bench_cli
from benchmarks import quality as bench_quality
from benchmarks.common import append_table_rows
from pipeline.config import Config
from pipeline.engine.weights import resolve_weights


def test_the_quality_bench_times_every_method_to_the_papers_style_loss(tmp_path):
    logged: list[str] = []
    result = bench_quality.run_quality_bench(
        torch.device("cpu"),
        resolve_weights("random", 0),
        size=64,
        paper_steps=8,
        lbfgs_steps=4,
        timing_steps=3,
        timing_rounds=1,
        default=Config(steps=6),
        log=logged.append,
    )
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["paper", "coarse-to-fine", "lbfgs", "default"]
    assert rows["paper"]["settings"] == "adam, 8 steps, lr 0.02, TV 30"
    assert rows["coarse-to-fine"]["settings"].endswith("scales 16x8,32x4,64x2")  # side x steps
    # The default's "auto" numbers, resolved at 64 px and 6 steps, are what it records.
    auto = Config(size=64, steps=6).resolved()
    assert f"lr {auto.learning_rate:.3g}, TV {auto.tv_weight:.3g}" in rows["default"]["settings"]
    paper = rows["paper"]
    assert 0 <= paper["reached_step"] < 8 and paper["speedup_vs_paper"] == pytest.approx(1.0)
    assert paper["style_at_target"] <= result["target_style_loss"] * bench_quality.TOLERANCE
    for row in rows.values():
        if row["reached_step"] is None:
            assert row["seconds"] is None and row["designs_per_hour"] is None
        else:
            assert row["seconds"] > 0 and row["designs_per_hour"] == pytest.approx(3600 / row["seconds"])
            assert row["style_at_target"] <= result["target_style_loss"] * bench_quality.TOLERANCE
    assert set(result["seconds_per_eval"]) >= {"adam@16", "adam@32", "adam@64", "lbfgs@64"}
    # Coarse-to-fine's curve climbs the scales; the paper's stays at its size.
    assert result["curves"]["coarse-to-fine"]["sides"][0] == 16 and set(result["curves"]["paper"]["sides"]) == {64}
    page = tmp_path / "BENCHMARKS.md"
    append_table_rows(page, "Speed at equal quality", bench_quality.QUALITY_TABLE, bench_quality.quality_rows(result))
    lines = [line for line in page.read_text().splitlines() if line.startswith("| 20")]
    assert len(lines) == 4 and all(result["device_name"] in line for line in lines)


def test_time_to_counts_each_steps_evaluations_at_its_scale():
    curve = bench_quality.Curve(
        sides=[16, 16, 32, 32],
        evals=[1, 2, 5, 6],
        style=[4, 3, 2, 1],
        content=[0] * 4,
        final_style=None,
        reached_step=3,
    )
    per_eval = {("lbfgs", 16): 0.5, ("lbfgs", 32): 2.0}
    assert bench_quality.time_to(curve, 3, "lbfgs", per_eval) == pytest.approx(0.5 + 0.5 + 3 * 2.0 + 2.0)
    assert bench_quality.time_to(curve, None, "lbfgs", per_eval) is None


@pytest.mark.parametrize("weights", ["random", "/nonexistent/vgg16.h5"])
def test_without_real_weights_the_quality_bench_refuses_in_one_line(weights, capsys):
    with pytest.raises(SystemExit) as stop:
        bench_cli.main(["--quality", "--weights", weights, "--no-markdown"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "real weights" in err
