"""The runs of a design catalog (`designs query`'s `runs`): here, a colourways run."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.history import COLOURWAYS, run_records
from pipeline.catalog.inputs import load_input_catalog
from pipeline.config import Config
from pipeline.engine.palette import inks_palette
from pipeline.engine.weights import resolve_weights
from pipeline.execution.colourways import make_colourways
from pipeline.execution.shard import run_shard
from pipeline.planning.plan import plan_designs
from pipeline.planning.variants import job_specs
from pipeline.views.contact_sheet import colourways_sheet
from pipeline.views.query import query

ANALYSTS = Path(__file__).resolve().parents[2] / "docs" / "ANALYSTS.md"


def one_design_and_its_colourway(sample_catalog: Path, out: Path) -> str:
    """One optimized design (run "r"), then a colourways run over it: the colourways run's id."""
    config = Config(weights="random", size=24, steps=2, loss_every=1)
    weights = resolve_weights("random", 0)
    inputs = load_input_catalog(sample_catalog)
    plan = plan_designs(inputs, config, weights.identity, set(), job_specs(inputs, config))
    catalog = DesignCatalog(out)
    catalog.commit(run_shard(plan.todo[:1], config, weights, "cpu", catalog, "r"), "r")
    report = make_colourways(out, inks_palette(2))
    colourways_sheet(report, out)  # as `designs colourways` draws it, into the run's folder
    assert len(report.made) == 1
    (run_id,) = {row for row in catalog.to_pandas().run_id if row != "r"}
    return run_id


def test_a_colourways_run_is_listed_from_its_folder_and_its_rows_name_their_device(
    sample_catalog: Path, tmp_path: Path
):
    out = tmp_path / "out"
    run_id = one_design_and_its_colourway(sample_catalog, out)
    assert (out / "runs" / run_id).is_dir()

    (record,) = [r for r in run_records(out) if r["run_id"] == run_id]
    assert record["state"] == COLOURWAYS
    assert (record["ok"], record["commits"], record["devices"]) == (1, 1, ["cpu"])
    assert record["started_at"] is not None and record["finished_at"] == record["last_commit_at"]
    assert record["finished_at"] >= record["started_at"]

    frame = DesignCatalog(out).to_pandas()
    colourway = frame[frame.parent_design_id.notna()].iloc[0]
    assert (colourway.device, colourway.device_name) == ("cpu", "cpu")


def test_the_analysts_throughput_query_counts_optimized_designs_only(sample_catalog: Path, tmp_path: Path):
    out = tmp_path / "out"
    one_design_and_its_colourway(sample_catalog, out)
    (sql,) = [
        block
        for block in re.findall(r"^```sql\n(.*?)^```", ANALYSTS.read_text(), flags=re.S | re.M)
        if block.startswith("-- Throughput per device")
    ]
    rows = query(out, sql).to_pylist()
    assert [(r["device"], r["designs"]) for r in rows] == [("cpu", 1)]
