"""The `designs` command line: flags derived from Config, exit codes, query."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import EXIT_FAILED_DESIGNS, EXIT_OK, EXIT_REFUSED, build_parser, config_from_args, main
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
    assert "(default: 512)" in text and "(default: 0.02)" in text and "(default: conv5_2)" in text


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

    counted = designs(
        "query", "--out", str(out), "select status, count(*) as n from designs group by status order by status"
    )
    assert counted.returncode == EXIT_OK, counted.stderr
    lines = [line.split() for line in counted.stdout.strip().splitlines()]
    assert lines == [["status", "n"], ["failed", "3"], ["ok", "8"]]


def test_query_reports_a_missing_catalog(tmp_path: Path, capsys):
    assert main(["query", "--out", str(tmp_path / "nothing"), "select 1"]) == EXIT_REFUSED
    assert "no design catalog" in capsys.readouterr().err
