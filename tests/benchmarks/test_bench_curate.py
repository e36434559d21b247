"""`make bench-curate` at a tiny size: the planted groups, the scores of a grouping against them,
and the command's path (each size in its own process, a row appended to the page). No
assertion on time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import table_rows

from benchmarks import curate as bench_curate

ROOT = Path(__file__).resolve().parents[2]


def test_planted_groups_are_near_inside_and_apart_outside():
    vectors, truth = bench_curate.planted(3000, seed=1)
    assert vectors.shape == (3000, bench_curate.DIM) and vectors.dtype == np.float16
    x = vectors.astype(np.float32)
    distance = 1 - x @ x.T
    same = truth[:, None] == truth[None, :]
    off_diagonal = ~np.eye(len(x), dtype=bool)
    threshold = bench_curate.THRESHOLD
    assert distance[same & off_diagonal].max() < threshold / 2
    assert distance[~same].min() > 1.5 * threshold
    sizes = np.bincount(truth)
    assert sizes.min() >= 1 and sizes.max() > 10  # singletons to a grid's worth
    assert not np.all(np.diff(truth) >= 0)  # shuffled: a group's members are scattered


def test_pair_scores_count_pairs_put_together():
    truth = np.array([0, 0, 0, 1, 1, 2])
    assert bench_curate.pair_scores(truth, truth)[:2] == (1.0, 1.0)
    merged = np.array([0, 0, 0, 0, 0, 2])  # groups 0 and 1 merged: 10 pairs found, 4 planted among them
    precision, recall, found, planted = bench_curate.pair_scores(merged, truth)
    assert (found, planted) == (10, 4) and precision == pytest.approx(0.4) and recall == 1.0
    split = np.array([0, 0, 5, 1, 1, 2])  # one member split off: 2 of the 4 planted pairs found
    assert bench_curate.pair_scores(split, truth)[:2] == (1.0, 0.5)


@pytest.mark.parametrize("method", ["exact", "kmeans"])
def test_a_size_is_measured_with_precision_and_recall(method):
    result = bench_curate.measure(2000, method=method)
    assert result["method"] == method and result["designs"] == 2000
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    assert result["peak_rss_bytes"] > 0 and result["cpu_seconds"] >= 0


def test_the_command_runs_each_size_in_its_own_process_and_appends_rows(tmp_path: Path):
    markdown, result = tmp_path / "BENCHMARKS.md", tmp_path / "bench-curate.json"
    markdown.write_text("# Benchmarks\n")
    command = [sys.executable, "-m", "benchmarks", "--curate", "--curate-sizes", "1000,3000"]
    command += ["--markdown", str(markdown), "--json", str(result)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(result.read_text())
    assert [r["designs"] for r in results] == [1000, 3000]
    assert all(r["precision"] == 1.0 and r["recall"] == 1.0 for r in results)
    rows = table_rows(markdown.read_text(), bench_curate.CURATE_TABLE)
    assert [r[2] for r in rows] == ["1,000", "3,000"]
    assert "## Curation results" in markdown.read_text()
