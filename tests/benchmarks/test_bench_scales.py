"""Coarse-to-fine against one scale, and the largest size per memory
(benchmarks.scales), at tiny sizes on the CPU; no assertions on time."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_bench_main as run_main
from helpers import table_rows

from benchmarks import scales as bench_scales


def test_coarse_to_fine_is_timed_to_the_single_scale_loss(tmp_path):
    result, written, original, after = run_main(
        ["--scales", "--scales-size", "64", "--scales-steps", "6", "--scales-designs", "2"], tmp_path
    )
    assert written == json.loads(json.dumps(result))
    assert result["scales"] == [16, 32, 64] and result["scale_steps"] == [6, 3, 6]
    assert result["default_schedule_steps"] == [6, 3, 1]
    assert len(result["single_final_loss"]) == 2
    assert result["single_seconds"] > 0 and result["coarse_to_fine_seconds"] > 0
    if result["reached"]:
        assert 0 <= result["reached_after_fine_steps"] < 6
        assert 0 < result["seconds_to_single_loss"] <= result["coarse_to_fine_seconds"]
        assert result["coarse_to_fine_final_loss_ratio"] <= 1.0 + 1e-6 or result["reached_after_fine_steps"] < 5
    else:
        assert result["speedup"] is None and result["coarse_to_fine_final_loss_ratio"] > 1.0
    assert result["default_schedule_loss_ratio"] > 0
    rows = table_rows(after, bench_scales.SCALES_TABLE)
    before = (
        table_rows(original, bench_scales.SCALES_TABLE) if bench_scales.SCALES_TABLE.splitlines()[0] in original else []
    )
    assert len(rows) == len(before) + 1
    assert rows[-1][1] == result["device_name"] and rows[-1][4] == "64" and rows[-1][5] == "16,32,64"


def test_coarse_to_fine_finds_the_first_step_under_the_target(monkeypatch):
    """The search over the loss marks, with runs whose losses are given."""
    single = [(s, 0.1 * (s + 1), (10.0 - s, 20.0 - s)) for s in range(4)]  # ends at (7, 17)
    # 4 + 2 coarse steps, then full size: (9, 16), (7, 18), (6.5, 17) <- first with both under the target
    c2f = [(s, 0.01 * (s + 1), (50.0, 50.0)) for s in range(6)] + [
        (6, 0.1, (9.0, 16.0)),
        (7, 0.2, (7.0, 18.0)),
        (8, 0.3, (6.5, 17.0)),
        (9, 0.4, (6.0, 16.0)),
    ]
    runs = iter([(0.5, single), (0.45, c2f)])
    monkeypatch.setattr(bench_scales, "_timed_run", lambda *a: next(runs))

    class Engine:
        config = bench_scales.Config()

        def run(self, *args, **kwargs):
            return []

    result = bench_scales.coarse_to_fine(Engine(), torch.device("cpu"), 64, 4, 2, log=lambda _: None)
    assert result["reached"] and result["reached_after_fine_steps"] == 2
    assert result["seconds_to_single_loss"] == 0.3 and result["speedup"] == pytest.approx(0.4 / 0.3)
    # The default schedule's full-size stage is 4 // 4 = 1 step: its loss is the first full-size mark's.
    assert result["default_schedule_seconds"] == 0.1
    assert result["default_schedule_loss_ratio"] == pytest.approx(9.0 / 7.0)


def test_max_size_measures_each_size_in_its_own_process_and_fits_a_line(tmp_path):
    result, _, _, after = run_main(
        ["--max-size", "--sizes", "64,96", "--size-steps", "1", "--memory-gib", "8"], tmp_path
    )
    sizes = [p["size"] for p in result["points"]]
    assert sizes == [64, 96] and result["largest_run"] == 96
    assert all(p["peak_bytes"] > 0 for p in result["points"])
    assert result["fit"] is not None and result["budget_bytes"] == 8 * 2**30
    rows = table_rows(after, bench_scales.MAX_SIZE_TABLE)
    assert [r[5] for r in rows[-2:]] == ["64", "96"]
    assert all(r[1] == result["device_name"] for r in rows[-2:])


def test_fit_and_largest_size():
    assert bench_scales._fit([(1.0, 5.0)]) is None
    a, b = bench_scales._fit([(100.0, 1300.0), (400.0, 4300.0), (900.0, 9300.0)])
    assert a == pytest.approx(300.0) and b == pytest.approx(10.0)


def test_the_next_size_after_an_out_of_memory_is_not_tried(monkeypatch):
    tried = []

    def fake(weights, size, steps):
        tried.append(size)
        return None if size >= 300 else (1000 + 10 * size * size, 0.1)

    monkeypatch.setattr(bench_scales, "_one_size_in_a_new_process", fake)

    class Engine:
        weights = None

    result = bench_scales.max_size(
        Engine(), torch.device("cpu"), [400, 100, 200, 300], 1, 10 * 500**2 + 1000, log=lambda _: None
    )
    assert tried == [100, 200, 300]
    assert result["largest_run"] == 200 and result["points"][-1] == {"size": 300, "out_of_memory": True}
    assert result["largest_in_budget"] == 500
