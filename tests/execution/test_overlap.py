"""The runner keeps the device fed: the next batch is decoded and finished PNGs
are written on threads while the device optimizes (config.overlap). The tests
hold one stage until another has started, so they prove the stages run at the
same time without timing anything."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from helpers import SAMPLE_PAIRINGS, square_jobs
from PIL import Image

import pipeline.execution.rows
import pipeline.execution.shard
from pipeline.catalog.designs import DesignCatalog
from pipeline.config import Config
from pipeline.engine.transfer import StyleTransfer
from pipeline.engine.weights import resolve_weights
from pipeline.execution.shard import run_shard

WEIGHTS = resolve_weights("random", 0)
WAIT_SECONDS = 60.0  # only reached when the stages do not overlap


def test_next_batch_is_decoded_while_the_device_optimizes(sample_catalog: Path, tmp_path: Path, monkeypatch):
    config = Config(weights="random", size=32, steps=2, loss_every=1, batch_size=2, overlap="on")
    jobs = square_jobs(sample_catalog, config, 6, WEIGHTS.identity)
    second_batch = {j.design_id for j in jobs[2:4]}
    second_batch_loading = threading.Event()
    load_threads: set[str] = set()
    real_load, real_run = pipeline.execution.shard._load_pairing, StyleTransfer.run

    def load(job, *args):
        load_threads.add(threading.current_thread().name)
        if job.design_id in second_batch:
            second_batch_loading.set()
        return real_load(job, *args)

    waited: list[bool] = []

    def run(self, pairings, *args, **kwargs):
        if not waited:  # the first batch: hold the device until the second batch is being decoded
            waited.append(second_batch_loading.wait(WAIT_SECONDS))
        return real_run(self, pairings, *args, **kwargs)

    monkeypatch.setattr(pipeline.execution.shard, "_load_pairing", load)
    monkeypatch.setattr(StyleTransfer, "run", run)
    rows = run_shard(jobs, config, WEIGHTS, "cpu", DesignCatalog(tmp_path / "out"), "r")
    assert waited == [True]
    assert threading.current_thread().name not in load_threads
    assert [r["status"] for r in rows] == ["ok"] * 6


def test_pngs_are_written_while_the_device_optimizes_the_next_batch(sample_catalog: Path, tmp_path: Path, monkeypatch):
    config = Config(weights="random", size=32, steps=2, loss_every=1, batch_size=2, overlap="on")
    jobs = square_jobs(sample_catalog, config, 4, WEIGHTS.identity)
    runs_started = threading.Semaphore(0)
    real_run, real_write = StyleTransfer.run, pipeline.execution.rows.write_atomic
    waited: list[bool] = []

    def run(self, pairings, *args, **kwargs):
        runs_started.release()
        return real_run(self, pairings, *args, **kwargs)

    def write(path, data):
        if not waited:  # the first PNG: hold the writer until the device has started the second batch
            waited.append(runs_started.acquire(timeout=WAIT_SECONDS) and runs_started.acquire(timeout=WAIT_SECONDS))
        real_write(path, data)

    monkeypatch.setattr(StyleTransfer, "run", run)
    monkeypatch.setattr(pipeline.execution.rows, "write_atomic", write)
    rows = run_shard(jobs, config, WEIGHTS, "cpu", DesignCatalog(tmp_path / "out"), "r")
    assert waited == [True]
    assert all((tmp_path / "out" / r["output_uri"]).is_file() for r in rows)


def test_overlap_on_and_off_make_the_same_designs(sample_catalog: Path, tmp_path: Path):
    base = Config(weights="random", size=32, steps=3, loss_every=1, batch_size=2, overlap="on")
    jobs = square_jobs(sample_catalog, base, 5, WEIGHTS.identity)
    made = {}
    for overlap in ("on", "off"):
        rows = run_shard(
            jobs, base.replace(overlap=overlap), WEIGHTS, "cpu", DesignCatalog(tmp_path / str(overlap)), "r"
        )
        out = tmp_path / str(overlap)
        # Pixels, not file hashes: the PNG's params text records `overlap` itself.
        made[overlap] = sorted(
            (r["design_id"], r["status"], Image.open(out / r["output_uri"]).tobytes(), r["loss_total"][-1])
            for r in rows
        )
    assert made["on"] == made["off"]
    assert len(made["on"]) == 5 and {status for _, status, _, _ in made["on"]} == {"ok"}


def test_an_engine_failure_still_finishes_the_pngs_already_handed_to_the_writer(
    sample_catalog: Path, tmp_path: Path, monkeypatch
):
    config = Config(weights="random", size=32, steps=2, loss_every=1, batch_size=2, overlap="on")
    jobs = square_jobs(sample_catalog, config, 4, WEIGHTS.identity)
    real_run = StyleTransfer.run
    calls = []

    def run(self, pairings, *args, **kwargs):
        calls.append(len(pairings))
        if len(calls) == 2:
            raise RuntimeError("device lost (simulated)")
        return real_run(self, pairings, *args, **kwargs)

    monkeypatch.setattr(StyleTransfer, "run", run)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="device lost"):
        run_shard(jobs, config, WEIGHTS, "cpu", DesignCatalog(out), "r")
    # The first batch's two PNGs are complete files (no temporary left behind); the shard's
    # retry makes them again under the same names, and `designs verify --fix` removes strays.
    written = sorted((out / "images").rglob("*"))
    assert len([p for p in written if p.suffix == ".png"]) == 2
    assert not [p for p in written if p.is_file() and p.suffix != ".png"]


@pytest.mark.usefixtures("prefect_server")
def test_a_device_starts_its_next_shard_before_the_last_one_is_committed(
    sample_catalog: Path, tmp_path: Path, monkeypatch
):
    import flows.generate
    from flows.generate import generate

    events: list[str] = []
    real_run_shard, real_commit = flows.generate.run_shard, flows.generate.commit
    started = threading.Condition()

    def run_shard_logged(jobs, *args, **kwargs):
        with started:
            events.append("shard")
            started.notify_all()
        return real_run_shard(jobs, *args, **kwargs)

    def commit_logged(run, rows, note):
        index = int(note.removeprefix("shard-")) if note.startswith("shard-") else None
        if index is not None and index < len(shards) - 1:
            # Every shard but the last: the next one is already on the device.
            with started:
                assert started.wait_for(lambda: events.count("shard") >= index + 2, timeout=WAIT_SECONDS), (
                    f"{note} committed before shard {index + 1} started"
                )
        events.append(note)
        return real_commit(run, rows, note)

    shards = range(3)
    monkeypatch.setattr(flows.generate, "run_shard", run_shard_logged)
    monkeypatch.setattr(flows.generate, "commit", commit_logged)
    summary = generate(
        catalog=str(sample_catalog),
        out=str(tmp_path / "out"),
        config=Config(weights="random", size=32, steps=2, devices="cpu", batch_size=2, shard_size=4),
    )
    assert summary.ok == SAMPLE_PAIRINGS
    assert events[:2] == ["shard", "shard"] and events.count("shard") == 3
    assert [e for e in events if e != "shard"] == ["shard-0", "shard-1", "shard-2"]


def test_auto_overlaps_on_gpus_only():
    from pipeline.execution.shard import overlaps

    auto = Config()
    assert auto.overlap == "auto"
    assert overlaps(auto, "cuda:0") and overlaps(auto, "cuda:3")
    assert not overlaps(auto, "cpu")
    assert overlaps(auto.replace(overlap="on"), "cpu") and not overlaps(auto.replace(overlap="off"), "cuda:0")
    with pytest.raises(ValueError, match="overlap='yes'.*auto, on or off"):
        Config(overlap="yes")
