"""A small real design catalog for the analyst tests (query, ANALYSTS.md, gallery),
made with the pipeline functions the flow calls, without Prefect.

`build_analyst_catalog(work)` takes the sample catalog's tshirt and hoodie
(contents) and stripes, waves and speckle (styles), with styles/speckle.png
missing, and makes on CPU with random weights at 24 px:

- run 1 (steps 1): 4 ok, 2 failed (an input-faults commit, then one shard);
- run 2 (steps 2): 4 ok, 2 failed (other params: new variants of every pairing);
- run 3 (steps 3): commits its first shard of 2 designs, then "crashes": its
  runs/<id>/config.json exists, its summary.json does not;
- then `designs curate` (the curation table).

The copy of the sample catalog carries hostile strings: stripes has tags, and
tshirt a `note` column, holding `<script>alert(1)</script>` and quotes.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.inputs import load_input_catalog
from pipeline.config import Config
from pipeline.engine.weights import resolve_weights
from pipeline.execution.curate import curate
from pipeline.execution.run import Run

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
HOSTILE = "<script>alert(1)</script>"
HOSTILE_QUOTES = "\"double\" 'single' & <b>bold</b>"
BASE = dict(weights="random", size=24, loss_every=1, batch_size=4, shard_size=4, devices="cpu")
KEEP = ("tshirt", "hoodie", "stripes", "waves", "speckle")
CONTENTS, STYLES, MISSING = ("hoodie", "tshirt"), ("speckle", "stripes", "waves"), "speckle"


def write_hostile_sample(folder: Path) -> Path:
    """A copy of the sample catalog whose stripes style has hostile tags and whose rows have a hostile `note` column."""
    shutil.copytree(SAMPLE, folder)
    path = folder / "catalog.parquet"
    table = pq.read_table(path)
    rows = [row for row in table.to_pylist() if row["image_id"] in KEEP]
    for row in rows:
        if row["image_id"] == "stripes":
            row["tags"] = list(row["tags"] or []) + [HOSTILE, HOSTILE_QUOTES]
        row["note"] = f"{HOSTILE} {HOSTILE_QUOTES}" if row["image_id"] == "tshirt" else None
    schema = table.schema.append(pa.field("note", pa.string()))
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def run_without_prefect(
    catalog: Path, out: Path, config: Config, run_id: str, crash_after_shards: int | None = None
) -> Any:
    """The flow's steps in one process on cpu (pipeline.execution.run.Run): config.json, input
    faults, one commit per shard, summary.json (unless it 'crashes' after `crash_after_shards` shards)."""
    inputs = load_input_catalog(catalog, config.allow_roots)
    weights = resolve_weights(config.weights, config.seed)
    run = Run(catalog, out, config, run_id=run_id, flow_run_id="no-prefect")
    return run.run_local(inputs, weights, "cpu", stop_after_shards=crash_after_shards)


RUN_IDS = ("20260101T000000Z-run1", "20260101T000100Z-run2", "20260101T000200Z-run3")


def build_analyst_catalog(work: Path) -> Path:
    """Make the catalog described above under work/data/catalog; returns that OUT folder."""
    sample = work / "sample"
    catalog = write_hostile_sample(sample)
    out = work / "data" / "catalog"
    (sample / "styles" / f"{MISSING}.png").unlink()
    # Tiny tensors: one thread is fastest, and far faster than several on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_without_prefect(catalog, out, Config(**BASE, steps=1), RUN_IDS[0])
        run_without_prefect(catalog, out, Config(**BASE, steps=2), RUN_IDS[1])
        run_without_prefect(
            catalog, out, Config(**{**BASE, "shard_size": 2}, steps=3), RUN_IDS[2], crash_after_shards=1
        )
        curate(out)  # the curation table ANALYSTS.md's curation queries read
    finally:
        torch.set_num_threads(threads)
    return out


def commit_times(out: Path) -> dict[int, datetime]:
    from pipeline.catalog.history import commit_history

    return {c["version"]: c["committed_at"] for c in commit_history(DesignCatalog(out))}


_BUILT: dict[str, Path] = {}


def analyst_catalog_out(tmp_path_factory) -> Path:
    """The catalog, built once per test session (test_query and test_gallery share it: read only)."""
    if "out" not in _BUILT:
        _BUILT["out"] = build_analyst_catalog(tmp_path_factory.mktemp("analyst"))
    return _BUILT["out"]
