"""`make bench-catalog` at its smallest size (CI runs 10k rows only): the table is built
through the real commit path and maintenance, and every figure the docs quote is
reported. No assertion on time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import catalog as bench_catalog
from pipeline.catalog.schema import SCHEMA

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def catalog_run(tmp_path_factory) -> tuple[dict, str]:
    tmp = tmp_path_factory.mktemp("bench-catalog")
    markdown, result = tmp / "BENCHMARKS.md", tmp / "bench-catalog.json"
    command = [sys.executable, "-m", "benchmarks", "--catalog", "--catalog-sizes", "10000", "--catalog-night", "20000"]
    command += ["--catalog-dir", str(tmp), "--markdown", str(markdown), "--json", str(result)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(result.read_text()), markdown.read_text()


def test_synthetic_rows_have_the_real_schema_and_full_loss_curves():
    rng = np.random.default_rng(0)
    ids = np.sort(bench_catalog._hex_ids(rng, 1000))
    table = bench_catalog.synthetic_rows(ids, rng, "r", failed_every=100)
    assert table.schema == SCHEMA and table.num_rows == 1000
    assert table.column("design_id").to_pylist() == [i.decode() for i in ids]
    statuses = table.column("status").to_pylist()
    assert 0 < statuses.count("failed") <= 10
    curves = table.column("loss_total")
    ok = [i for i, s in enumerate(statuses) if s == "ok"]
    assert all(len(curves[i].as_py()) == bench_catalog.LOSS_POINTS for i in ok[:20])
    assert pa.compute.all(pa.compute.is_valid(table.column("params"))).as_py()


def test_a_night_cuts_shards_of_neighbouring_ids():
    night = bench_catalog.Night(10_000, np.random.default_rng(1))
    shard = night.shard()
    assert len(shard) == bench_catalog.SHARD
    position = int(np.searchsorted(night.ids, shard[0]))
    assert (night.ids[position : position + len(shard)] == shard).all()


def test_the_catalog_bench_reports_every_figure(catalog_run):
    result, _ = catalog_run
    (size,) = result["sizes"]
    assert size["rows"] == 10_000
    assert len(size["commit_s"]) == bench_catalog.TIMED_SHARDS and len(size["full_merge_s"]) == 3
    assert size["commit_rss_mib"] > 0 and size["full_merge_rss_mib"] > 0 and size["done_ids_rss_mib"] > 0
    assert size["files_after"] < size["files_before"]
    names = [q["query"] for q in size["queries"]]
    assert len(names) == len(bench_catalog.query_blocks()) >= 2
    assert all(q["rows"] >= 0 for q in size["queries"])


def test_the_catalog_bench_appends_its_rows(catalog_run):
    result, markdown = catalog_run
    assert bench_catalog.CATALOG_TABLE.splitlines()[0] in markdown
    assert bench_catalog.QUERY_TABLE.splitlines()[0] in markdown
    assert f"| {result['device']} | 10,000 |" in markdown


def test_bad_sizes_are_refused_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--catalog", "--catalog-sizes", "10k", "--no-markdown"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0 and "--catalog-sizes '10k'" in done.stderr
    assert "Traceback" not in done.stderr
