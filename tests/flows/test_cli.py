"""The `designs` command line: flags derived from Config, exit codes, query."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_image_catalog

from flows.cli import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED_DESIGNS,
    EXIT_OK,
    EXIT_REFUSED,
    build_parser,
    config_from_args,
    main,
)
from pipeline.catalog.designs import DesignCatalog
from pipeline.config import Config

TINY_FLAGS = ["--weights", "random", "--size", "32", "--steps", "2"]


def test_help_shows_every_config_field_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--out", "--weights", "--size", "--steps", "--optimizer", "--devices", "--batch-size", "--allow-root"):
        assert flag in text
    for f in dataclasses.fields(Config):
        flag = "--allow-root" if f.name == "allow_roots" else "--" + f.name.replace("_", "-")
        assert flag in text, flag
    assert "(default: 512)" in text and "(default: auto)" in text and "(default: conv5_2)" in text


def test_flags_become_a_config():
    args = build_parser().parse_args(
        [
            "generate",
            "c.parquet",
            "--size",
            "64",
            "--style-layers",
            "conv1_1,conv3_1",
            "--style-weight",
            "1e-1",
            "--allow-root",
            "/a",
            "--allow-root",
            "/b",
            "--optimizer",
            "lbfgs",
        ]
    )
    config = config_from_args(args)
    assert config == Config(
        size=64, style_layers=("conv1_1", "conv3_1"), style_weight=0.1, allow_roots=("/a", "/b"), optimizer="lbfgs"
    )
    assert config_from_args(build_parser().parse_args(["generate", "c.parquet"])) == Config()


def test_bad_flag_values_are_refused_naming_the_value(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "c.parquet", "--style-layers", "conv9_9"])
    assert exit_info.value.code == 2
    assert "conv9_9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "c.parquet", "--optimizer", "sgd"])
    assert "sgd" in capsys.readouterr().err


def designs(*args: str) -> subprocess.CompletedProcess:
    """The real command in its own process, talking to the tests' Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.usefixtures("prefect_server")
def test_exit_codes(sample_catalog: Path, tmp_path: Path):
    out = tmp_path / "out"
    not_parquet = tmp_path / "notes.parquet"
    not_parquet.write_text("this is not parquet")
    refused = designs("generate", str(not_parquet), "--out", str(out), *TINY_FLAGS)
    assert refused.returncode == EXIT_REFUSED, refused.stderr
    assert "not a readable parquet file" in refused.stderr
    assert not DesignCatalog(out).exists()

    no_gpu = designs("generate", str(sample_catalog), "--out", str(out), "--devices", "cuda:7", *TINY_FLAGS)
    assert no_gpu.returncode == EXIT_REFUSED and "cuda:7" in no_gpu.stderr

    (sample_catalog.parent / "styles" / "waves.png").unlink()
    partial = designs("generate", str(sample_catalog), "--out", str(out), *TINY_FLAGS)
    assert partial.returncode == EXIT_FAILED_DESIGNS, partial.stderr
    assert "8 ok, 3 failed" in partial.stdout and "'waves'" in partial.stdout
    assert (partial.stdout + partial.stderr).count("8 ok, 3 failed") == 1  # the summary, printed once

    counted = designs(
        "query", "--out", str(out), "select status, count(*) as n from designs group by status order by status"
    )
    assert counted.returncode == EXIT_OK, counted.stderr
    lines = [line.split() for line in counted.stdout.strip().splitlines()]
    assert lines == [["status", "n"], ["failed", "3"], ["ok", "8"]]


def test_query_reports_a_missing_catalog(tmp_path: Path, capsys):
    assert main(["query", "--out", str(tmp_path / "nothing"), "select 1"]) == EXIT_REFUSED
    assert "no design catalog" in capsys.readouterr().err


# --- refusals: one line, before Prefect starts ----------------------------------------------


def designs_offline(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command with no Prefect API reachable: a refusal must not need one."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # nothing listens: starting a flow here would fail
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=300, cwd=cwd
    )


def assert_one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_refusals_are_one_line_and_exit_2_before_any_work(sample_catalog: Path, tmp_path: Path):
    out = tmp_path / "out"
    not_parquet = tmp_path / "notes.parquet"
    not_parquet.write_text("this is not parquet")
    assert_one_line(designs_offline("generate", str(not_parquet), "--out", str(out), *TINY_FLAGS), 2, "parquet")
    assert_one_line(
        designs_offline("generate", str(sample_catalog), "--out", str(out), "--weights", "/nope/vgg.pth"),
        2,
        "/nope/vgg.pth",
        "does not exist",
    )
    garbage = tmp_path / "vgg19.pth"
    garbage.write_bytes(os.urandom(4096))
    assert_one_line(
        designs_offline("generate", str(sample_catalog), "--out", str(out), "--weights", str(garbage)),
        2,
        "neither a Keras HDF5 file",
    )
    pickled = tmp_path / "evil.pth"
    import torch

    torch.save({"features.0.weight": Config()}, pickled)  # a pickle that would run code to load
    assert_one_line(
        designs_offline("generate", str(sample_catalog), "--out", str(out), "--weights", str(pickled)),
        2,
        "cannot load VGG weights",
    )
    for bad_out in ("Spring%20Sale", "file:///tmp/x", "s3://bucket/designs"):
        assert_one_line(
            designs_offline("generate", str(sample_catalog), "--out", bad_out, *TINY_FLAGS, cwd=tmp_path),
            2,
            "reads as a URL",
        )
    assert not out.exists() and not (tmp_path / "Spring%20Sale").exists()  # nothing written
    assert_one_line(
        designs_offline("generate", str(sample_catalog), "--out", str(out), "--devices", "cuda:7", *TINY_FLAGS),
        2,
        "cuda:7",
    )


def test_a_damaged_catalog_log_is_an_environment_fault_exit_3(sample_catalog: Path, tmp_path: Path):
    from pipeline.execution.rows import RowContext
    from pipeline.execution.run import Run

    out = tmp_path / "out"
    from pipeline.catalog.inputs import load_input_catalog
    from pipeline.engine.weights import resolve_weights

    config = Config(weights="random", size=32, steps=1, devices="cpu")
    run = Run(sample_catalog, out, config, run_id="r")
    planned = run.plan(load_input_catalog(sample_catalog), resolve_weights("random", 0), ["cpu"])
    context = RowContext(config, resolve_weights("random", 0), "r")
    run.commit([context.failed(job, "x") for job in planned.todo[:2]], "seed")
    log = sorted((out / "designs" / "_delta_log").glob("*.json"))[-1]
    log.write_text(log.read_text()[:40])  # a truncated entry
    result = designs_offline("generate", str(sample_catalog), "--out", str(out), *TINY_FLAGS)
    assert_one_line(result, 3, "cannot read the design catalog", str(log.parent))


def test_an_out_that_cannot_be_written_is_an_environment_fault_exit_3(sample_catalog: Path):
    # /proc takes no new folders, whoever asks (root included): a read-only place for OUT.
    result = designs_offline("generate", str(sample_catalog), "--out", "/proc/designs-out", *TINY_FLAGS)
    assert_one_line(result, 3, "cannot write to the design catalog's folder", "/proc/designs-out")


def test_flags_are_never_abbreviated_and_booleans_take_no_value(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "c.parquet", "--step", "20"])
    assert exit_info.value.code == 2 and "--step" in capsys.readouterr().err
    args = build_parser().parse_args(["generate", "c.parquet", "--tile"])
    assert config_from_args(args).tile is True
    assert config_from_args(build_parser().parse_args(["generate", "c.parquet", "--no-tile"])).tile is False


@pytest.mark.parametrize(
    ("argv", "prog", "needle"),
    [
        (["generate", "c.parquet", "--steps", "0"], "designs generate", "steps=0"),  # Config's check
        (["generate", "c.parquet", "--size", "big"], "designs generate", "'big'"),  # argparse's type
        (["verify", "--fixx"], "designs", "unrecognized arguments: --fixx"),
        (["frobnicate"], "designs", "'frobnicate'"),
    ],
)
def test_a_bad_flag_or_value_prints_its_error_and_where_the_help_is_not_the_usage(argv, prog, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == EXIT_REFUSED
    captured = capsys.readouterr()
    assert captured.out == ""
    error, see = captured.err.splitlines()
    assert error.startswith(f"{prog}: error: ") and needle in error
    assert see == f"see {prog} --help"


def one_design_catalog(out: Path) -> Path:
    """A design catalog of one ok design with its PNG, made without Prefect."""
    import hashlib
    from datetime import UTC, datetime

    catalog = DesignCatalog(out)
    png = b"\x89PNG stand-in"
    uri = catalog.image_relpath("d1", hashlib.sha256(png).hexdigest())
    (out / uri).parent.mkdir(parents=True)
    (out / uri).write_bytes(png)
    row = {"design_id": "d1", "pairing_key": "k1", "run_id": "r", "created_at": datetime.now(UTC), "status": "ok"}
    row |= {"content_id": "c", "style_id": "s", "output_uri": uri, "output_sha256": hashlib.sha256(png).hexdigest()}
    catalog.commit([row], "r")
    return out


def test_a_reader_that_left_ends_the_command_quietly_with_status_141(tmp_path: Path):
    """`designs verify OUT | head`: a pipe whose reader has gone (closed before the command writes)."""
    out = one_design_catalog(tmp_path / "out")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "flows.cli", "verify", str(out)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (EXIT_BROKEN_PIPE, "")


# Stands for a C++ thread (pyarrow's I/O) that touches Python during the interpreter's teardown:
# std::terminate, exit 134, after the command had printed its result.
TEARDOWN_ABORTS = """
import os, sys
import flows.cli

class AbortsInTeardown:
    def __del__(self, abort=os.abort):
        abort()

flows.cli.aborts_in_teardown = AbortsInTeardown()
sys.argv = ["designs", *sys.argv[1:]]
sys.exit(flows.cli.main())  # as the console script does
"""


def test_the_exit_status_is_the_commands_whatever_the_interpreter_teardown_does(tmp_path: Path):
    out = one_design_catalog(tmp_path / "out")
    result = subprocess.run(
        [sys.executable, "-c", TEARDOWN_ABORTS, "verify", str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.startswith(f"{out}: table version 1, 1 ok row(s), 0 problem(s)")
    (out / "images" / "orphan.png").write_bytes(b"not in the catalog")
    result = subprocess.run(
        [sys.executable, "-c", TEARDOWN_ABORTS, "verify", str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == EXIT_FAILED_DESIGNS, result.stderr
    assert "orphan.png" in result.stdout


def test_an_in_process_call_returns_its_status_and_the_process_goes_on(tmp_path: Path, capsys):
    out = one_design_catalog(tmp_path / "out")
    assert main(["verify", str(out)]) == EXIT_OK
    assert "0 problem(s)" in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("designs ")


@pytest.mark.usefixtures("prefect_server")
def test_ctrl_c_commits_what_finished_and_a_rerun_makes_the_rest(sample_catalog: Path, tmp_path: Path):
    import signal
    import time

    from prefect.settings import PREFECT_API_URL

    out = tmp_path / "out"
    flags = ["--weights", "random", "--size", "32", "--steps", "40", "--batch-size", "1", "--shard-size", "2"]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "generate", str(sample_catalog), "--out", str(out), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first_shard = out / "designs" / "_delta_log" / f"{1:020d}.json"
    deadline = time.monotonic() + 300  # a guard against a hang, not a timing
    while not first_shard.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first_shard.exists(), "no shard was committed"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    stopped = [line for line in stderr.splitlines() if line.startswith("designs generate: stopped:")]
    assert len(stopped) == 1 and "run the same command again" in stopped[0]
    frame = DesignCatalog(out).to_pandas()
    made = set(frame.loc[frame.status == "ok", "design_id"])
    assert 2 <= len(made) < 11 and (frame.status == "ok").all()

    again = designs("generate", str(sample_catalog), "--out", str(out), *flags)
    assert again.returncode == EXIT_OK, again.stderr
    frame = DesignCatalog(out).to_pandas()
    assert len(frame) == 11 and frame.design_id.is_unique and (frame.status == "ok").all()
    assert made <= set(frame.design_id)


@pytest.mark.usefixtures("prefect_server")
def test_a_cli_run_loads_the_catalog_and_the_weights_once(tmp_path: Path, monkeypatch):
    """The checks before Prefect starts hand what they loaded to the flow, which loads nothing again:
    the catalog read once, the weights found and loaded once (the engine of each device loads its
    own copy, kept across runs of this process, so it is left out of the count)."""
    import pipeline.catalog.inputs
    import pipeline.engine.weights
    from pipeline.engine import transfer

    catalog = make_image_catalog(tmp_path / "inputs", {"c": (32, 32)}, {"s": (32, 32)})
    calls: dict[str, int] = {}

    def counted(name: str, original):
        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        return wrapper

    import flows.generate  # noqa: F401 (every module that holds a loader is patched)

    for owner, name in (
        (pipeline.catalog.inputs, "load_input_catalog"),
        (pipeline.engine.weights, "resolve_weights"),
        (pipeline.engine.weights, "load_features"),
    ):
        original = getattr(owner, name)
        wrapper = counted(name, original)
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith(("pipeline.", "flows.")) and module is not transfer:
                if getattr(module, name, None) is original:
                    monkeypatch.setattr(module, name, wrapper)
    monkeypatch.setattr("flows.cli.configure_prefect_env", lambda: None)  # the test server's settings stay
    out = tmp_path / "out"
    # No capsys: Prefect's log handler, made during the first flow run, would keep its stream once closed.
    assert main(["generate", str(catalog), "--out", str(out), *TINY_FLAGS]) == EXIT_OK
    assert len(DesignCatalog(out).done_ids()) == 1
    assert calls == {"load_input_catalog": 1, "resolve_weights": 1, "load_features": 1}
    # Only a token travels as the flow's parameter: Prefect stores parameters as JSON, and the
    # prepared input catalog grows with the catalog.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [latest] = client.read_flow_runs(limit=1, sort=FlowRunSort.START_TIME_DESC)
    assert isinstance(latest.parameters["prepared"], str) and len(latest.parameters["prepared"]) == 32
    assert not flows.generate._PREPARED  # taken by the flow, not kept


def test_a_cli_run_reads_a_weights_file_once(tmp_path: Path, monkeypatch):
    """With a weights file, the file is read once per run: the check before Prefect starts reads
    it, and the engine takes the checked tensors instead of reading the file again."""
    import pipeline.engine.weights as weights
    from tests.engine.weight_files import seeded_features, write_keras_h5

    path = write_keras_h5(seeded_features(0), tmp_path / "vgg19.h5")
    catalog = make_image_catalog(tmp_path / "inputs", {"c": (32, 32)}, {"s": (32, 32)})
    reads: list[str] = []
    original = weights._keras_state

    def counted(file: str, *args, **kwargs):
        reads.append(file)
        return original(file, *args, **kwargs)

    monkeypatch.setattr(weights, "_keras_state", counted)
    monkeypatch.setattr(weights, "_LAST_LOADED", [])
    monkeypatch.setattr("flows.cli.configure_prefect_env", lambda: None)  # the test server's settings stay
    out = tmp_path / "out"
    flags = ["--weights", str(path), "--size", "32", "--steps", "2"]
    assert main(["generate", str(catalog), "--out", str(out), *flags]) == EXIT_OK
    assert len(DesignCatalog(out).done_ids()) == 1
    assert reads == [str(path)]
