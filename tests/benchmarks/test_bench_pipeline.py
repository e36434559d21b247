"""The pipeline bench (overlap on against off through run_shard) at a tiny size; no assertions on time."""

from __future__ import annotations

import pytest
from helpers import run_bench_main as run_main
from helpers import table_rows

from benchmarks import overlap as bench_pipeline


def test_pipeline_bench_reports_both_modes(tmp_path):
    result, written, _, after = run_main(
        [
            "--pipeline",
            "--pipeline-contents",
            "2",
            "--pipeline-styles",
            "2",
            "--size",
            "32",
            "--steps",
            "1",
            "--batch-sizes",
            "2",
            "--repeats",
            "1",
        ],
        tmp_path,
    )
    assert written["designs"] == result["designs"] == 4
    assert set(result["modes"]) == {"overlap", "in-line"}
    for mode in result["modes"].values():
        assert 0 < mode["busy_fraction"] <= 1.0
        assert mode["designs_per_hour"] == pytest.approx(4 / mode["seconds"] * 3600)
    assert result["overlap_vs_in_line"] == pytest.approx(
        result["modes"]["overlap"]["designs_per_hour"] / result["modes"]["in-line"]["designs_per_hour"]
    )
    rows = table_rows(after, bench_pipeline.PIPELINE_TABLE)
    assert [r[9] for r in rows[-2:]] == ["overlap", "in-line"]
    assert rows[-1][-1] == "1.00"
