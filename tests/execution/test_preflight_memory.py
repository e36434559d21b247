"""A run whose designs cannot fit in the memory a device has left is refused before any
work, in one line naming the estimate, what is available and the flags that lower it."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import EXIT_REFUSED, main
from pipeline.config import Config
from pipeline.execution import preflight as preflight_module
from pipeline.execution.preflight import Refused, available_memory, design_memory, preflight

GIB = 2**30


def test_the_cpu_has_some_memory_available():
    assert available_memory("cpu") > 0


def test_a_run_over_the_available_memory_is_refused_with_the_figures(
    sample_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(preflight_module, "available_memory", lambda device: GIB)
    config = Config(weights="random", devices="cpu", size=1024, precision="fp32")
    estimate, _ = design_memory(config, "cpu")
    assert estimate.batch == 4 and estimate.peak > GIB
    with pytest.raises(Refused) as info:
        preflight(sample_catalog, tmp_path / "out", config)
    message = str(info.value)
    assert "\n" not in message
    assert f"--size 1024 needs about {estimate.peak / GIB:.1f} GiB of memory on cpu (fp32, batches of 4" in message
    assert "1.0 GiB is available; lower --size or --batch-size" in message
    assert not (tmp_path / "out").exists()
    # A smaller run fits in the same memory.
    preflight(sample_catalog, tmp_path / "out", config.replace(size=128))


def test_styles_too_large_for_the_memory_name_the_style_scale(
    sample_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(preflight_module, "available_memory", lambda device: 2 * GIB)
    config = Config(weights="random", devices="cpu", size=1024, style_scale=4, batch_size=1, precision="fp32")
    with pytest.raises(Refused, match=r"style targets at 4096 px .* lower --style-scale or --size$"):
        preflight(sample_catalog, tmp_path / "out", config)


def test_a_grid_variant_over_the_memory_is_refused(sample_catalog: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(preflight_module, "available_memory", lambda device: GIB)
    config = Config(weights="random", devices="cpu", size=128, precision="fp32")
    with pytest.raises(Refused, match="--size 2048 needs about"):
        preflight(sample_catalog, tmp_path / "out", config, grid={"size": [128, 2048]})


def test_designs_generate_refuses_it_in_one_line(sample_catalog: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(preflight_module, "available_memory", lambda device: GIB)
    out = tmp_path / "out"
    code = main(["generate", str(sample_catalog), "--out", str(out), "--weights", "random", "--size", "4096"])
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED
    assert err.startswith("designs generate: refused: --size 4096 needs about") and err.count("\n") == 1
    assert "lower --size or --batch-size" in err and "Traceback" not in err
    assert not out.exists()
