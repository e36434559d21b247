"""The `designs` command line: flags derived from Config, exit codes, query."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flows.cli import EXIT_FAILED_DESIGNS, EXIT_OK, EXIT_REFUSED, build_parser, config_from_args, main
from pipeline.config import Config
from pipeline.design_catalog import DesignCatalog

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
        ["generate", "c.parquet", "--size", "64", "--style-layers", "conv1_1,conv3_1", "--style-weight", "1e-1",
         "--allow-root", "/a", "--allow-root", "/b", "--optimizer", "lbfgs"]
    )
    config = config_from_args(args)
    assert config == Config(size=64, style_layers=("conv1_1", "conv3_1"), style_weight=0.1, allow_roots=("/a", "/b"), optimizer="lbfgs")
    assert config_from_args(build_parser().parse_args(["generate", "c.parquet"])) == Config()


def test_bad_flag_values_are_refused_naming_the_value(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "c.parquet", "--style-layers", "conv9_9"])
    assert exit_info.value.code == 2
    assert "conv9_9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "c.parquet", "--optimizer", "sgd"])
    assert "sgd" in capsys.readouterr().err


@pytest.mark.usefixtures("prefect_server")
def test_exit_codes(sample_catalog: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    not_parquet = tmp_path / "notes.parquet"
    not_parquet.write_text("this is not parquet")
    assert main(["generate", str(not_parquet), "--out", str(out), *TINY_FLAGS]) == EXIT_REFUSED
    assert "not a readable parquet file" in capsys.readouterr().err
    assert not DesignCatalog(out).exists()

    assert main(["generate", str(sample_catalog), "--out", str(out), "--devices", "cuda:7", *TINY_FLAGS]) == EXIT_REFUSED
    assert "cuda:7" in capsys.readouterr().err

    (sample_catalog.parent / "styles" / "waves.png").unlink()
    assert main(["generate", str(sample_catalog), "--out", str(out), *TINY_FLAGS]) == EXIT_FAILED_DESIGNS
    printed = capsys.readouterr().out
    assert "8 ok, 3 failed" in printed and "'waves'" in printed

    assert main(["query", "--out", str(out), "select status, count(*) as n from designs group by status order by status"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "failed" in printed and "ok" in printed and " 8" in printed and " 3" in printed


def test_query_reports_a_missing_catalog(tmp_path: Path, capsys):
    assert main(["query", "--out", str(tmp_path / "nothing"), "select 1"]) == EXIT_REFUSED
    assert "no design catalog" in capsys.readouterr().err
