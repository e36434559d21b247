"""The one reader of a version's data files: every stage lists the design table's files
through it, it reads the rows delta-rs reads, and it refuses a file that leaves the table."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from test_commit_pruning import hex_ids, row

from pipeline.catalog.datafiles import OutsideTable, contained_path, data_files, read_table
from pipeline.catalog.designs import DesignCatalog

ROOT = Path(__file__).resolve().parents[2]
# The calls that list or read a table version's files on their own.
OWN_READS = {"get_add_actions", "file_uris", "to_pyarrow_dataset", "to_pyarrow_table"}


def test_no_module_but_the_reader_lists_or_reads_a_versions_files():
    found = set()
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        if path.name == "datafiles.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in OWN_READS:
                found.add((str(path.relative_to(ROOT)), node.attr))
    # DesignCatalog.check() asks the log for the schema alone: no file is listed or read.
    assert found <= {("pipeline/catalog/designs.py", "to_pyarrow_dataset")}, found


def committed(tmp_path: Path) -> DesignCatalog:
    catalog = DesignCatalog(tmp_path / "out")
    ids = hex_ids(30, seed=3)
    catalog.commit([row(d, status="failed" if i % 5 == 0 else "ok") for i, d in enumerate(ids[:15])], "r1")
    catalog.commit([row(d) for d in ids[15:]], "r2")
    return catalog


def test_the_rows_read_are_the_rows_delta_rs_reads(tmp_path):
    catalog = committed(tmp_path)
    table = catalog.table()
    ours = read_table(table, catalog.table_path).sort_by("design_id").to_pylist()
    assert ours == table.to_pyarrow_table().sort_by("design_id").to_pylist()
    columns = read_table(table, catalog.table_path, ["design_id", "status"])
    assert columns.column_names == ["design_id", "status"] and sorted(set(columns.column("status").to_pylist())) == [
        "failed",
        "ok",
    ]


def test_a_status_lists_its_partitions_files_with_their_statistics(tmp_path):
    catalog = committed(tmp_path)
    files = data_files(catalog.table())
    failed = data_files(catalog.table(), "failed")
    assert failed and {dict(f.partition)["status"] for f in failed} == {"failed"}
    assert len(failed) + len(data_files(catalog.table(), "ok")) == len(files)
    for f in files:
        on_disk = os.stat(f.local_path(catalog.table_path))
        assert f.size == on_disk.st_size and f.rows and f.null_ids == 0 and f.min_id <= f.max_id
        assert f.modification_time > 0


def test_a_file_whose_real_path_leaves_the_table_is_refused(tmp_path):
    catalog = committed(tmp_path)
    victim = data_files(catalog.table())[0]
    inside = Path(victim.local_path(catalog.table_path))
    outside = tmp_path / "elsewhere.parquet"
    os.replace(inside, outside)
    inside.symlink_to(outside)
    with pytest.raises(OutsideTable, match="outside its folder"):
        contained_path(catalog.table_path, victim)
    with pytest.raises(OutsideTable):
        read_table(catalog.table(), catalog.table_path)
