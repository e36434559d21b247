"""The `quality` column (pipeline/engine/quality.py): recorded on every ok design a run makes,
null on failed rows, and null on the rows of a table made before the column existed."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import torch
from analyst_catalog import BASE, MISSING, run_without_prefect, write_hostile_sample

from flows.cli import EXIT_OK, main
from pipeline.catalog.designs import DesignCatalog
from pipeline.config import Config
from pipeline.views.query import query


def sample(tmp_path: Path) -> Path:
    catalog = write_hostile_sample(tmp_path / "sample")
    (tmp_path / "sample" / "styles" / f"{MISSING}.png").unlink()  # its pairings fail
    return catalog


def generate(catalog: Path, out: Path, run_id: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest on a busy machine
    try:
        run_without_prefect(catalog, out, Config(**BASE, steps=2), run_id)
    finally:
        torch.set_num_threads(threads)


def test_a_run_records_quality_on_ok_rows_and_null_on_failed_ones(tmp_path: Path, capsys):
    out = tmp_path / "out"
    generate(sample(tmp_path), out, "20260101T000000Z-q")
    rows = query(
        out,
        "select status, quality.style_ratio as ratio, quality.style_ratio_per_layer as per_layer, "
        "quality.content_kept as kept, len(params.style_layers) as layers from designs",
    ).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert ok and failed
    for r in ok:
        assert r["ratio"] > 0 and len(r["per_layer"]) == r["layers"]
        assert r["ratio"] == sum(r["per_layer"]) / r["layers"]
        assert 0 < r["kept"] <= 1
    assert all(r["ratio"] is None and r["per_layer"] is None and r["kept"] is None for r in failed)
    # Ranked through the command line, as docs/ANALYSTS.md does.
    code = main(["query", "--out", str(out), "select design_id from designs order by quality.style_ratio limit 1"])
    assert code == EXIT_OK and capsys.readouterr().out.strip()


def test_a_table_made_before_the_quality_column_takes_new_designs_and_reads_null_for_old_ones(tmp_path: Path, capsys):
    from deltalake import DeltaTable, write_deltalake

    from pipeline.catalog.schema import SCHEMA

    out = tmp_path / "out"
    catalog = DesignCatalog(out)
    old = pa.schema([f for f in SCHEMA if f.name != "quality"])
    DeltaTable.create(str(catalog.table_path), schema=old, partition_by=["status"])
    row = {"design_id": "d-old", "run_id": "r1", "created_at": pa.scalar(0, pa.timestamp("us", "UTC")).as_py()}
    row |= {"status": "ok", "style_id": "s", "params": {"steps": 5}}
    write_deltalake(str(catalog.table_path), pa.Table.from_pylist([row], schema=old), mode="append")

    generate(sample(tmp_path), out, "20260101T000000Z-q")  # merges rows with the column into the old table

    got = query(out, "select design_id, quality.style_ratio as ratio from designs where status = 'ok'").to_pylist()
    assert {"design_id": "d-old", "ratio": None} in got
    assert len(got) > 1 and all(r["ratio"] is not None for r in got if r["design_id"] != "d-old")
    code = main(["query", "--out", str(out), "--format", "csv", "select count(quality) as n from designs"])
    assert code == EXIT_OK and capsys.readouterr().out.split() == ['"n"', str(len(got) - 1)]

    # Compaction rewrites the old file and the new ones together: the old row stays null.
    from pipeline.catalog.compaction import compact_small_files

    removed, _ = compact_small_files(catalog.table(), catalog.table_path, 1 << 30, 1 << 30, {})
    assert removed > 1
    again = query(out, "select design_id, quality.style_ratio as ratio from designs where status = 'ok'").to_pylist()
    assert sorted(again, key=str) == sorted(got, key=str)
