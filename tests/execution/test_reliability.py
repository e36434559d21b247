"""Crashes, concurrent runs, divergence, out-of-memory, and `designs verify`."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

import pytest
import torch
from helpers import SAMPLE_PAIRINGS, square_jobs

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.inputs import load_input_catalog
from pipeline.catalog.verify import verify_catalog
from pipeline.config import Config
from pipeline.engine.transfer import DesignResult, StyleTransfer
from pipeline.engine.weights import resolve_weights
from pipeline.execution.shard import _retry_diverged, run_shard
from pipeline.files import write_atomic
from pipeline.planning.plan import plan_designs

CLI_FLAGS = ["--weights", "random", "--size", "32", "--steps", "12", "--batch-size", "2", "--shard-size", "2"]


def start_generate(catalog: Path, out: Path, *extra: str) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "generate", str(catalog), "--out", str(out), *CLI_FLAGS, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def pngs(out: Path) -> set[Path]:
    return set((out / "images").rglob("*.png")) if (out / "images").is_dir() else set()


def table_version(out: Path) -> int:
    log = out / "designs" / "_delta_log"
    return max((int(p.stem) for p in log.glob("*.json")), default=-1) if log.is_dir() else -1


def runs_started(out: Path) -> int:
    return len(list((out / "runs").glob("*/config.json"))) if (out / "runs").is_dir() else 0


def kill_when(process: subprocess.Popen, milestone, timeout: float = 240.0) -> bool:
    """SIGKILL the process as soon as milestone() is true; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if milestone():
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.01)
    process.kill()
    raise AssertionError("milestone not reached in time")


def assert_consistent(out: Path) -> None:
    """The table reads at its last version; no ok row lacks its PNG or has a different one."""
    if not DesignCatalog(out).exists():
        return
    report = verify_catalog(out)
    assert not (report.missing or report.mismatched or report.duplicate_ok_ids or report.unsafe_uris), report.lines()


# The table is created with delta-rs' own creation, paused just before it renames
# version 0 into place, so the process can be killed in that window.
CREATE_HELD_BEFORE_RENAME = """
import os, sys, time
from pathlib import Path
from deltalake import DeltaTable
from pipeline.catalog.designs import DesignCatalog

out, leftover, pid_file = sys.argv[1:]
Path(pid_file).write_text(str(os.getpid()))
if leftover != "strace":
    def create_held_before_rename(path, *args, **kwargs):
        # delta-rs' steps: the log folder, version 0 staged under a temporary name, the rename
        log = Path(path) / "_delta_log"
        log.mkdir(parents=True)
        if leftover == "temp file":
            (log / "00000000000000000000.json#1").write_text('{"commitInfo":{"timestamp":1}}\\n')
        (log.parent / "held").touch()
        time.sleep(600)

    DeltaTable.create = create_held_before_rename
DesignCatalog(out).ensure_table()
"""


def ok_row_with_png(catalog: DesignCatalog, design_id: str) -> dict:
    from datetime import datetime

    png = b"\x89PNG stand-in for " + design_id.encode()
    uri = catalog.image_relpath(design_id, hashlib.sha256(png).hexdigest())
    return {
        "design_id": design_id,
        "pairing_key": f"key-{design_id}",
        "run_id": "r",
        "created_at": datetime.now(UTC),
        "status": "ok",
        "content_id": "c",
        "style_id": "s",
        "output_uri": uri,
        "output_sha256": write_atomic(catalog.out / uri, png),
    }


@pytest.mark.parametrize("leftover", ["strace", "temp file", "empty log"])
def test_kill_9_while_creating_the_design_catalog_then_the_next_run_creates_it_afresh(
    tmp_path: Path, leftover: str, caplog
):
    """ "strace": real delta-rs, held by strace at the rename of its staged first version;
    the others: a creation paused after its temporary file, or after the log folder only."""
    out, pid_file = tmp_path / "out", tmp_path / "pid"
    log = out / "designs" / "_delta_log"
    command = [sys.executable, "-c", CREATE_HELD_BEFORE_RENAME, str(out), leftover, str(pid_file)]
    if leftover == "strace":
        if shutil.which("strace") is None:
            pytest.skip("strace is not installed")
        command = ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=linkat,renameat2,rename"]
        command += ["-e", "inject=linkat,renameat2,rename:delay_enter=30s"]
        command += [sys.executable, "-c", CREATE_HELD_BEFORE_RENAME, str(out), leftover, str(pid_file)]
        in_window = lambda: log.is_dir() and any("#" in name for name in os.listdir(log))  # noqa: E731
    else:
        in_window = (out / "designs" / "held").exists
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not in_window():
            if process.poll() is not None:
                if leftover == "strace" and not pid_file.exists():
                    pytest.skip(f"strace cannot trace here: {process.stderr.read()}")
                raise AssertionError(f"the creation ended before the kill: {process.stderr.read()}")
            assert time.monotonic() < deadline, "the creation window was never reached"
            time.sleep(0.005)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    finally:
        process.kill()  # strace itself, once its tracee is dead
        process.wait()
    assert log.is_dir() and not any(name.endswith(".json") for name in os.listdir(log)), os.listdir(log)

    catalog = DesignCatalog(out)
    assert catalog.ok_design_ids() == set()  # nothing was committed
    with caplog.at_level(logging.WARNING, logger="pipeline.catalog.designs"):
        assert catalog.commit([ok_row_with_png(catalog, "d1")], "r") == 1
    assert catalog.ok_design_ids() == {"d1"}
    assert [r.getMessage() for r in caplog.records if "had no committed version" in r.getMessage()]
    assert not [name for name in os.listdir(log) if "#" in name]  # the leftovers are out of the log
    if leftover != "empty log":
        (aside,) = (out / "designs").glob("_delta_log.incomplete-*")
        assert [p.name for p in aside.iterdir()] == ["00000000000000000000.json#1"]
    assert verify_catalog(out).problems == 0


@pytest.mark.usefixtures("prefect_server")
def test_kill_9_at_any_point_then_rerun_makes_every_design_exactly_once(sample_catalog: Path, tmp_path: Path):
    out = tmp_path / "out"
    milestones = [
        ("after planning, while loading", lambda: runs_started(out) >= 1),
        ("while writing PNGs", lambda: len(pngs(out)) >= 1),
        ("right after a commit", lambda: table_version(out) >= 2),
        ("mid-run, PNGs beyond the last commit", lambda: len(pngs(out)) >= 7),
    ]
    killed = 0
    for _name, milestone in milestones:
        process = start_generate(sample_catalog, out)
        if kill_when(process, milestone):
            killed += 1
        assert_consistent(out)
    assert killed >= 3, "the runs finished before most kills: the test did not exercise crashes"

    final = start_generate(sample_catalog, out)
    output, _ = final.communicate(timeout=600)
    assert final.returncode == 0, output
    frame = DesignCatalog(out).to_pandas()
    ok = frame[frame.status == "ok"]
    assert len(ok) == SAMPLE_PAIRINGS and ok.design_id.is_unique and len(frame) == SAMPLE_PAIRINGS

    report = verify_catalog(out, fix=True)
    assert report.problems == 0, report.lines()
    assert verify_catalog(out).orphans == []


@pytest.mark.usefixtures("prefect_server")
def test_two_concurrent_runs_on_one_catalog_both_finish_and_each_design_is_ok_once(
    sample_catalog: Path, tmp_path: Path
):
    out = tmp_path / "out"
    first, second = start_generate(sample_catalog, out), start_generate(sample_catalog, out)
    out_first, _ = first.communicate(timeout=600)
    out_second, _ = second.communicate(timeout=600)
    assert first.returncode == 0, out_first
    assert second.returncode == 0, out_second
    frame = DesignCatalog(out).to_pandas()
    assert set(frame.status) == {"ok"}
    assert len(frame) == SAMPLE_PAIRINGS and frame.design_id.is_unique
    assert_consistent(out)


def start_from_a_terminal(catalog: Path, out: Path, home: Path, *flags: str) -> subprocess.Popen:
    """`designs generate` as a shell starts it: in a process group of its own (the foreground group
    a terminal's Ctrl-C goes to), with no PREFECT_API_URL, so on Prefect's temporary server."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)  # a private database: other test runs may hold the project's
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "generate", str(catalog), "--out", str(out), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state, ppid, pgrp, ...); None once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has ended


def processes(where) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) and stat[0] not in ("Z", "X"):
            if where(stat):
                found.append(int(entry.name))
    return found


def wait_for_server_child(process: subprocess.Popen, timeout: float = 240.0) -> list[int]:
    """The pids of the run's temporary Prefect server, once it has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        children = processes(lambda stat: int(stat[1]) == process.pid)
        servers = [
            pid
            for pid in children
            if b"prefect.server.api.server:create_app" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        if servers:
            return servers
        time.sleep(0.1)
    raise AssertionError(f"no temporary server started: {process.poll()=}")


def wait_gone(pids: list[int], timeout: float = 60.0) -> list[int]:
    """The pids still running after timeout (a guard against a hang, not a timing)."""
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_ctrl_c_from_a_terminal_ends_the_run_and_its_server_with_the_finished_shards_committed(
    sample_catalog: Path, tmp_path: Path
):
    """A terminal's Ctrl-C is SIGINT to the whole foreground process group, not to the command alone."""
    from flows.cli import EXIT_STOPPED

    out = tmp_path / "out"
    flags = ["--weights", "random", "--size", "64", "--steps", "20", "--batch-size", "1", "--shard-size", "1"]
    process = start_from_a_terminal(sample_catalog, out, tmp_path / "prefect", *flags)
    group = os.getpgid(process.pid)
    servers: list[int] = []
    try:
        servers = wait_for_server_child(process)
        first_shard = out / "designs" / "_delta_log" / f"{1:020d}.json"
        deadline = time.monotonic() + 300  # a guard against a hang, not a timing
        while not first_shard.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first_shard.exists(), process.communicate()[1]
        os.killpg(group, signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=60)  # a guard against a hang, not a timing
        except subprocess.TimeoutExpired:
            raise AssertionError("the run did not end after Ctrl-C") from None
        assert process.returncode == EXIT_STOPPED, stderr
        assert "Traceback" not in stderr
        assert [line for line in stderr.splitlines() if line.startswith("designs generate: stopped:")]
        assert wait_gone(servers) == [], "the temporary Prefect server outlived its run"
        assert processes(lambda stat: int(stat[2]) == group) == [], "processes left in the run's group"
    finally:
        process.kill()
        process.wait()
        kill_leftovers(servers)
    frame = DesignCatalog(out).to_pandas()
    assert 1 <= len(frame) < SAMPLE_PAIRINGS and (frame.status == "ok").all()
    assert_consistent(out)


def test_kill_9_of_a_run_ends_its_temporary_prefect_server(sample_catalog: Path, tmp_path: Path):
    process = start_from_a_terminal(sample_catalog, tmp_path / "out", tmp_path / "prefect", *CLI_FLAGS)
    servers: list[int] = []
    try:
        servers = wait_for_server_child(process)
        process.kill()
        process.wait()
        assert wait_gone(servers) == [], "the temporary Prefect server outlived its run"
    finally:
        process.kill()
        process.wait()
        kill_leftovers(servers)


def test_verify_finds_missing_changed_and_orphan_pngs(sample_catalog: Path, tmp_path: Path):
    out = tmp_path / "out"
    config = Config(weights="random", size=32, steps=2, loss_every=1)
    weights = resolve_weights("random", 0)
    plan = plan_designs(load_input_catalog(sample_catalog), config, weights.identity, set())
    catalog = DesignCatalog(out)
    catalog.commit(run_shard(list(plan.todo[:4]), config, weights, "cpu", catalog, "r1"), "r1")
    assert verify_catalog(out).problems == 0

    frame = catalog.to_pandas()
    (out / frame.output_uri[0]).unlink()
    (out / frame.output_uri[1]).write_bytes(b"tampered")
    orphan = out / "images" / "zz" / "zz-000000000000.png"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left by a crashed run")

    report = verify_catalog(out)
    assert report.problems == 3
    assert report.missing == [f"{frame.design_id[0]}: {frame.output_uri[0]}"]
    assert report.mismatched == [f"{frame.design_id[1]}: {frame.output_uri[1]}"]
    assert report.orphans == ["images/zz/zz-000000000000.png"]

    assert "run with --fix" in report.lines()[-1]

    fixed = verify_catalog(out, fix=True)
    # The altered PNG belongs to no ok row once its row is retired: it goes with the orphan.
    assert fixed.removed == [frame.output_uri[1], "images/zz/zz-000000000000.png"] and not orphan.exists()
    assert fixed.retired == [
        f"{frame.design_id[0]}: {frame.output_uri[0]}",
        f"{frame.design_id[1]}: {frame.output_uri[1]}",
    ]
    assert fixed.problems == 0 and fixed.fixed_version == 2
    after = verify_catalog(out)
    assert (after.problems, after.ok_rows, after.orphans) == (0, 2, [])


def test_verify_fix_retires_missing_and_altered_pngs_and_the_next_run_remakes_exactly_them(
    sample_catalog: Path, tmp_path: Path
):
    from pipeline.execution.run import Run

    out = tmp_path / "out"
    config = Config(weights="random", size=32, steps=2, loss_every=1, devices="cpu")
    weights = resolve_weights("random", 0)
    inputs = load_input_catalog(sample_catalog)
    first = Run(sample_catalog, out, config, run_id="r1").run_local(inputs, weights, "cpu")
    assert (first.ok, first.failed) == (SAMPLE_PAIRINGS, 0)
    frame = DesignCatalog(out).to_pandas().sort_values("design_id").reset_index(drop=True)
    gone, altered = frame.iloc[0], frame.iloc[1]
    (out / gone.output_uri).unlink()
    (out / altered.output_uri).write_bytes(b"edited by hand")

    fixed = verify_catalog(out, fix=True)
    assert sorted(fixed.retired) == sorted(f"{r.design_id}: {r.output_uri}" for r in (gone, altered))
    assert fixed.problems == 0 and "retired 2 row(s) as failed" in "\n".join(fixed.lines())
    table = DesignCatalog(out).to_pandas().set_index("design_id")
    assert list(table.loc[[gone.design_id, altered.design_id], "status"]) == ["failed", "failed"]
    assert f"its PNG {gone.output_uri} was missing" in table.loc[gone.design_id, "error"]
    assert f"its PNG {altered.output_uri} differed from its recorded SHA-256" in table.loc[altered.design_id, "error"]
    assert table.loc[[gone.design_id, altered.design_id], ["output_uri", "output_sha256"]].isna().all(axis=None)
    assert DesignCatalog(out).ok_design_ids() == set(frame.design_id) - {gone.design_id, altered.design_id}

    second = Run(sample_catalog, out, config, run_id="r2").run_local(inputs, weights, "cpu")
    assert (second.ok, second.failed, second.already_done) == (2, 0, SAMPLE_PAIRINGS - 2)
    remade = DesignCatalog(out).to_pandas()
    assert len(remade) == SAMPLE_PAIRINGS and remade.design_id.is_unique and set(remade.status) == {"ok"}
    assert set(remade[remade.run_id == "r2"].design_id) == {gone.design_id, altered.design_id}
    report = verify_catalog(out)
    assert (report.problems, report.orphans, report.ok_rows) == (0, [], SAMPLE_PAIRINGS), report.lines()


def test_diverged_designs_are_retried_once_at_a_lower_learning_rate():
    """The retry policy, with an engine stand-in whose loss is finite only at the lower rate."""

    class DivergesAtFullRate:
        scales: list[float] = []

        def run(self, pairings, on_progress=None, learning_rate_scale=1.0, config=None):
            self.scales.append(learning_rate_scale)
            error = "non-finite loss after optimization: {'total': nan}" if learning_rate_scale == 1.0 else None
            return [DesignResult(p, torch.zeros(3, 1, 1), {}, {}, 0.0, 0.0, 0.0, error=error) for p in pairings]

    engine = DivergesAtFullRate()
    first = engine.run(["a", "b"])
    first[1].error = None  # only "a" diverged
    results = _retry_diverged(engine, ["a", "b"], first, Config(nonfinite_retry_factor=0.25), None)
    assert engine.scales == [1.0, 0.25]
    (a, note_a), (b, note_b) = results
    assert a.error is None and "retried with the learning rate times 0.25" in note_a
    assert b.error is None and note_b is None


def test_diverging_design_fails_with_a_clear_error_after_its_retry(sample_catalog: Path, tmp_path: Path):
    config = Config(weights="random", size=32, steps=2, loss_every=1, tv_weight=1e38)
    weights = resolve_weights("random", 0)
    plan = plan_designs(load_input_catalog(sample_catalog), config, weights.identity, set())
    rows = run_shard(list(plan.todo[:2]), config, weights, "cpu", DesignCatalog(tmp_path / "out"), "r")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    for row in rows:
        assert (
            "non-finite loss" in row["error"]
            and "again after retrying with the learning rate times 0.1" in row["error"]
        )
        assert row["design_id"] in row["error"]
        assert row["quality"] is None  # a failed design's measures mean nothing
    assert not pngs(tmp_path / "out")


@pytest.mark.parametrize("overlap", ["on", "off"])  # the halves reuse the decoded batch, or load in line
def test_out_of_memory_halves_the_batch_without_losing_a_design(
    sample_catalog: Path, tmp_path: Path, monkeypatch, overlap: str
):
    real_run = StyleTransfer.run
    batch_sizes: list[int] = []

    def run_that_fits_two(self, pairings, *args, **kwargs):
        batch_sizes.append(len(pairings))
        if len(pairings) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated: this device fits 2 designs)")
        return real_run(self, pairings, *args, **kwargs)

    monkeypatch.setattr(StyleTransfer, "run", run_that_fits_two)
    config = Config(weights="random", size=32, steps=2, loss_every=1, batch_size=8, overlap=overlap)
    weights = resolve_weights("random", 0)
    jobs = square_jobs(sample_catalog, config, 8, weights.identity)
    rows = run_shard(jobs, config, weights, "cpu", DesignCatalog(tmp_path / "out"), "r")
    assert len(rows) == len(jobs) and all(r["status"] == "ok" for r in rows)
    assert batch_sizes == [8, 4, 2, 2, 4, 2, 2]
    assert {r["batch_size"] for r in rows} == {2}


@pytest.mark.usefixtures("prefect_server")
def test_a_shard_task_that_dies_is_retried(sample_catalog: Path, tmp_path: Path, monkeypatch):
    import flows.generate
    from flows.generate import generate

    calls: list[str] = []
    real = flows.generate.run_shard

    def dies_once(jobs, config, weights, device, *args, **kwargs):
        calls.append(device)
        if len(calls) == 1:
            raise RuntimeError("worker lost (simulated)")
        return real(jobs, config, weights, device, *args, **kwargs)

    monkeypatch.setattr(flows.generate, "run_shard", dies_once)
    monkeypatch.setattr(flows.generate.run_shard_task, "retry_delay_seconds", 0)
    summary = generate(
        catalog=str(sample_catalog),
        out=str(tmp_path / "out"),
        config=Config(weights="random", size=32, steps=2, shard_size=SAMPLE_PAIRINGS),
    )
    assert (summary.ok, summary.failed) == (SAMPLE_PAIRINGS, 0)
    assert calls == ["cpu", "cpu"]  # one device: the retry runs where it can


def test_done_ids_and_supersedes_read_a_commit_that_mixes_ok_and_failed_rows(tmp_path: Path):
    """delta-rs writes string_view columns; a scan filter on them once failed to compare
    with a string literal when file statistics were used (a rerun's plan then crashed)."""
    from datetime import datetime

    catalog = DesignCatalog(tmp_path / "out")
    now = datetime.now(UTC)

    def row(design_id: str, key: str, status: str, run_id: str) -> dict:
        return {
            "design_id": design_id,
            "pairing_key": key,
            "run_id": run_id,
            "created_at": now,
            "status": status,
            "content_id": "c",
            "style_id": "s",
        }

    catalog.commit([row(f"d{i}", f"k{i}", "ok" if i % 2 else "failed", "r1") for i in range(4)], "r1")
    assert catalog.ok_design_ids() == {"d1", "d3"}
    catalog.commit([row("d9", "k0", "ok", "r2")], "r2")  # supersedes the failed d0 of the same pairing
    assert catalog.ok_design_ids() == {"d1", "d3", "d9"}
    assert sorted(catalog.to_pandas().design_id) == ["d1", "d2", "d3", "d9"]
