"""`designs generate CATALOG --more-like OUT`: the favourites of OUT's reviews feed the next run.
Refusals are one line and exit 2 before Prefect starts; a run makes the variations as ordinary
designs tagged with their favourite (the `more_like` column), and a rerun makes nothing more."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import torch
from helpers import make_image_catalog

from flows.cli import EXIT_OK, EXIT_REFUSED, main
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.inputs import load_input_catalog
from pipeline.catalog.reviews import Verdict, append_verdict
from pipeline.config import Config
from pipeline.engine.weights import resolve_weights
from pipeline.execution.run import Run
from pipeline.views.query import query

BASE = Config(weights="random", size=24, steps=1, loss_every=1, devices="cpu", batch_size=4, shard_size=4)
RUN_FLAGS = ["--weights", "random", "--devices", "cpu", "--batch-size", "4", "--loss-every", "1"]


def made(tmp_path: Path, old_table: bool = False) -> tuple[Path, Path, list[str]]:
    """CATALOG (2 contents x 1 style) and OUT with its two designs; with `old_table`, OUT's table was
    made before the more_like column, holding one design of its own (d-old)."""
    catalog = make_image_catalog(tmp_path / "in", {"c1": (32, 32), "c2": (32, 24)}, {"s1": (32, 32)})
    out = tmp_path / "out"
    if old_table:
        from deltalake import DeltaTable, write_deltalake

        from pipeline.catalog.schema import SCHEMA

        old = pa.schema([f for f in SCHEMA if f.name != "more_like"])
        path = str(DesignCatalog(out).table_path)
        DeltaTable.create(path, schema=old, partition_by=["status"])
        row = {"design_id": "d-old", "run_id": "r0", "created_at": pa.scalar(0, pa.timestamp("us", "UTC")).as_py()}
        row |= {"status": "ok", "style_id": "s", "params": {"steps": 5}}
        write_deltalake(path, pa.Table.from_pylist([row], schema=old), mode="append")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest on a busy machine
    try:
        Run(catalog, out, BASE, run_id="20260101T000000Z-base").run_local(
            load_input_catalog(catalog), resolve_weights("random", 0), "cpu"
        )
    finally:
        torch.set_num_threads(threads)
    ids = sorted(i for i in DesignCatalog(out).done_ids() if i != "d-old")
    return catalog, out, ids


def verdict(out: Path, design_id: str, kind: str) -> None:
    key = f"{abs(hash((design_id, kind))):032x}"[-32:]
    append_verdict(out, Verdict(key, design_id, kind, "ana", "session1"))


@pytest.fixture
def no_prefect(monkeypatch):
    """A refusal must come before Prefect's temporary server and the flow."""

    def started(*args, **kwargs):
        raise AssertionError("Prefect was started for a refused run")

    monkeypatch.setattr("flows.server.start_temporary_server", started)
    monkeypatch.setattr("flows.generate.generate_flow", started)


@pytest.mark.usefixtures("no_prefect")
def test_refusals_are_one_line_before_prefect_starts(tmp_path: Path, capsys):
    catalog, out, ids = made(tmp_path)
    version = DesignCatalog(out).version()

    def refused(*flags: str) -> str:
        code = main(["generate", str(catalog), "--more-like", str(out), *RUN_FLAGS, *flags])
        err = capsys.readouterr().err
        assert code == EXIT_REFUSED, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        return err

    assert "no reviews at" in refused() and "designs review" in refused()
    verdict(out, ids[0], "reject")
    assert "no favourites in" in refused()
    verdict(out, ids[1], "favourite")
    err = refused("--size", "64", "--seed", "3")
    assert "--size, --seed would not apply" in err
    assert "--pairs and --grid go without it" in refused("--grid", "seed=0,1")
    with pytest.raises(SystemExit) as stop:  # the parser's own refusal
        main(["generate", str(catalog), "--more-like", str(out), *RUN_FLAGS, "--per-favourite", "0"])
    assert stop.value.code == EXIT_REFUSED and "per_favourite=0 is invalid" in capsys.readouterr().err
    other = make_image_catalog(tmp_path / "other", {"x": (32, 32)}, {"y": (32, 32)})
    code = main(["generate", str(other), "--more-like", str(out), *RUN_FLAGS])
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED and "none of the 1 favourite design(s) can be varied: the inputs of 1" in err
    assert DesignCatalog(out).version() == version  # nothing written


@pytest.mark.usefixtures("prefect_server")
def test_favourites_feed_the_next_run_as_tagged_designs_and_a_rerun_makes_nothing_more(
    tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.setattr("flows.cli.configure_prefect_env", lambda: None)  # the test server's settings stay
    catalog, out, ids = made(tmp_path, old_table=True)
    verdict(out, ids[0], "favourite")
    verdict(out, ids[1], "reject")

    # --out left out: the variations go into the --more-like OUT.
    assert main(["generate", str(catalog), "--more-like", str(out), "--per-favourite", "3", *RUN_FLAGS]) == EXIT_OK
    said = capsys.readouterr().out
    assert "more like: 3 variation(s) of 1 favourite(s)" in said
    assert "other weights" not in said  # the favourite was made with this run's weights
    rows = query(
        out,
        "select design_id, status, more_like, content_id, params.size as size, params.steps as steps, "
        "params.style_weight as style_weight, params.style_scale as style_scale from designs",
    ).to_pylist()
    new = [r for r in rows if r["more_like"] is not None]
    assert len(new) == 3 and {r["more_like"] for r in new} == {ids[0]}
    assert all(r["status"] == "ok" and (r["size"], r["steps"]) == (24, 1) for r in new)  # the favourite's params
    [fav] = [r for r in rows if r["design_id"] == ids[0]]
    assert {(r["style_weight"], r["style_scale"]) for r in new} == {
        (fav["style_weight"] * 2, 1.0),
        (fav["style_weight"] * 0.5, 1.0),
        (fav["style_weight"], 1.5),
    }
    new_ids = {r["design_id"] for r in new}
    assert len(new_ids) == 3 and not new_ids & {*ids, "d-old"}
    # The designs made before: untagged, the old table's own row too.
    assert {r["design_id"]: r["more_like"] for r in rows if r["design_id"] not in new_ids} == dict.fromkeys(
        [*ids, "d-old"]
    )

    version = DesignCatalog(out).version()
    assert main(["generate", str(catalog), "--more-like", str(out), "--per-favourite", "3", *RUN_FLAGS]) == EXIT_OK
    assert len(query(out, "select * from designs").to_pylist()) == len(rows)  # a rerun skips them
    assert DesignCatalog(out).version() == version

    # The nightly deployment's way (flows/deploy.py --more-like): the flow prepares itself and reads
    # the favourites OUT holds when it runs, today's new one included.
    from flows.generate import generate

    verdict(out, ids[1], "favourite")
    config = Config(weights="random", devices="cpu", batch_size=4, loss_every=1, per_favourite=2)
    summary = generate(catalog=str(catalog), out=str(out), config=config, more_like=str(out))
    assert summary.failed == 0
    tagged = query(out, "select more_like, count(*) as n from designs group by more_like order by n").to_pylist()
    assert {r["more_like"]: r["n"] for r in tagged if r["more_like"]} == {ids[1]: 2, ids[0]: 3}
