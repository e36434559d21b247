"""precision="auto": bf16 autocast on CUDA and on CPUs whose oneDNN has native bf16,
fp32 on other CPUs. `cpu_has_native_bf16` is patched so that both kinds of CPU are
covered on whichever this machine is (never the real CPU's answer: the suite runs
with $NST_CPU_BF16=0, tests/conftest.py); the bf16 path runs on any CPU (emulated
where it is not native: slower, the same arithmetic)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import square_jobs
from PIL import Image

from benchmarks.common import make_pairings
from pipeline.catalog.designs import DesignCatalog
from pipeline.config import Config
from pipeline.engine import transfer
from pipeline.engine.transfer import (
    CPU_BF16_ENV,
    StyleTransfer,
    cpu_has_native_bf16,
    resolve_channels_last,
    resolve_precision,
)
from pipeline.engine.weights import resolve_weights
from pipeline.execution.preflight import Refused, preflight
from pipeline.execution.rows import RowContext
from pipeline.execution.shard import engine_for, run_shard

WEIGHTS = resolve_weights("random", 0)

# The bf16 loss curve stays within this of fp32's at every sample (relative): measured
# up to 0.5% over 20 steps at the Caffe scale (0.13% at torchvision's); bf16 keeps 8 bits
# of mantissa (0.4% per value), and the Grams and losses summing them are fp32.
CURVE_RTOL = 0.02


@pytest.fixture(params=[False, True], ids=["cpu-without-native-bf16", "cpu-with-native-bf16"])
def native_bf16(request, monkeypatch) -> bool:
    monkeypatch.setattr(transfer, "cpu_has_native_bf16", lambda: request.param)
    return request.param


def test_auto_resolves_per_device(native_bf16):
    cpu = "bf16" if native_bf16 else "fp32"
    assert resolve_precision("auto", "cpu") == cpu
    assert resolve_precision("auto", torch.device("cpu")) == cpu
    assert resolve_precision("auto", "cuda:0") == "bf16"  # no GPU needed: only the device's kind is read
    assert resolve_precision("fp32", "cuda") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    engine = StyleTransfer(Config(size=32, weights="random"), WEIGHTS, "cpu")
    # The layout follows the same detection: channels-last only where bf16 is native.
    assert engine.precision == cpu and engine.channels_last is native_bf16


def test_memory_format_auto_resolves_per_cpu_kind(native_bf16):
    """Channels-last paid 1.41x on a native-bf16 CPU running bf16 and lost on an AVX2 one
    (docs/BENCHMARKS.md): auto picks it only there, and on CUDA as before."""
    assert resolve_channels_last("auto", "cpu", "bf16") is native_bf16
    assert resolve_channels_last("auto", "cpu", "fp32") is False  # fp32 on any CPU: contiguous
    assert resolve_channels_last("auto", "cuda:0", "bf16") is True
    assert resolve_channels_last("auto", "cuda:0", "fp32") is True
    assert resolve_channels_last("channels-last", "cpu", "fp32") is True
    assert resolve_channels_last("contiguous", "cuda", "bf16") is False
    fp32 = StyleTransfer(Config(size=32, weights="random"), WEIGHTS, "cpu", precision="fp32")
    assert fp32.precision == "fp32" and fp32.channels_last is False
    forced = StyleTransfer(Config(size=32, weights="random", memory_format="contiguous"), WEIGHTS, "cpu")
    assert forced.channels_last is False
    nhwc = StyleTransfer(Config(size=32, weights="random", memory_format="channels-last"), WEIGHTS, "cpu")
    assert nhwc.channels_last is True
    assert nhwc.features(torch.rand(1, 3, 32, 32))["conv1_1"].is_contiguous(memory_format=torch.channels_last)


def test_the_shard_engine_follows_memory_format(native_bf16):
    """The engine a shard runs is built with the config's layout; another layout is another engine."""
    auto = engine_for(Config(size=32, weights="random"), WEIGHTS, "cpu")
    assert auto.channels_last is native_bf16
    forced = engine_for(Config(size=32, weights="random", memory_format="channels-last"), WEIGHTS, "cpu")
    assert forced.channels_last is True


def test_memory_format_is_checked():
    with pytest.raises(ValueError, match="memory_format='nhwc' is invalid; accepted: auto, channels-last, contiguous"):
        resolve_channels_last("nhwc", "cpu", "fp32")


def test_the_suite_runs_auto_as_fp32_whatever_the_cpu():
    """tests/conftest.py pins it: numbers compared by tests must not move with the CPU."""
    assert os.environ[CPU_BF16_ENV] == "0"
    assert cpu_has_native_bf16() is False and resolve_precision("auto", "cpu") == "fp32"
    assert StyleTransfer(Config(size=32, weights="random"), WEIGHTS, "cpu").precision == "fp32"


@pytest.mark.parametrize("value, native", [("0", False), ("1", True)])
def test_the_environment_overrides_the_cpu_check(monkeypatch, value, native):
    """$NST_CPU_BF16 answers for the CPU, whatever oneDNN says, in this process and its children."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: not native)
    monkeypatch.setenv(CPU_BF16_ENV, value)
    assert cpu_has_native_bf16() is native
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", "cuda") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    child = subprocess.run(
        [sys.executable, "-c", "from pipeline.engine.transfer import resolve_precision as r; print(r('auto', 'cpu'))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout.strip() == ("bf16" if native else "fp32")


@pytest.mark.parametrize("value", ["yes", "2", " 1"])
def test_a_bad_environment_value_is_refused_before_the_run(monkeypatch, value, sample_catalog: Path, tmp_path: Path):
    monkeypatch.setenv(CPU_BF16_ENV, value)
    message = f"{CPU_BF16_ENV}={value!r} is invalid; accepted: 0 (precision auto is fp32 on the CPU), 1 (bf16)"
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_precision("auto", "cpu")
    with pytest.raises(Refused, match=re.escape(message)):
        preflight(sample_catalog, tmp_path / "out", Config(weights="random", size=32, steps=1))
    assert not (tmp_path / "out").exists()


def test_an_unknown_precision_names_what_is_accepted():
    with pytest.raises(ValueError, match=r"precision='fp16' is invalid; accepted: auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")


@pytest.mark.parametrize(
    "onednn, avx512_bf16, amx, native",
    [
        (False, False, False, False),  # AVX2 (this project's EPYC): no bf16 kernels
        (True, False, False, False),  # AVX512 without its bf16 instructions: emulated, slower than fp32
        (True, True, False, True),  # AVX512-BF16 (Cooper Lake, Zen 4 and later)
        (True, False, True, True),  # AMX (Sapphire Rapids and later)
    ],
)
def test_the_cpu_check_asks_onednn_and_the_bf16_instructions(monkeypatch, onednn, avx512_bf16, amx, native):
    monkeypatch.delenv(CPU_BF16_ENV)  # the CPU's own answer, patched
    monkeypatch.setattr(transfer.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu_has_native_bf16() is native
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")


def test_the_cpu_check_falls_back_to_fp32(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "")  # empty is unset: the CPU's own answer
    assert isinstance(cpu_has_native_bf16(), bool)  # this machine's answer, whichever it is

    def broken() -> bool:
        raise RuntimeError("no oneDNN in this build")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", broken)
    assert cpu_has_native_bf16() is False
    assert resolve_precision("auto", "cpu") == "fp32"


def test_params_record_the_precision_that_made_the_design(native_bf16, sample_catalog: Path, tmp_path: Path):
    config = Config(weights="random", size=32, steps=1, loss_every=1)
    assert config.precision == "auto"
    (job,) = square_jobs(sample_catalog, config, 1, WEIGHTS.identity)
    (row,) = run_shard([job], config, WEIGHTS, "cpu", DesignCatalog(tmp_path / "out"), "r")
    expected = "bf16" if native_bf16 else "fp32"
    assert row["status"] == "ok" and row["params"]["precision"] == expected
    png = Image.open(tmp_path / "out" / row["output_uri"])
    assert json.loads(png.info["params"])["precision"] == expected
    # A row no device has made (an input fault) keeps what was asked.
    assert RowContext(config, WEIGHTS, "r").base(job)["params"]["precision"] == "auto"


def test_bf16_loss_curve_stays_close_to_fp32():
    """A short run at the Caffe scale (the default network's): the bf16 engine's total-loss
    curve within CURVE_RTOL of fp32's at every sample, and both descending."""
    # The paper's learning rate and TV weight, which CURVE_RTOL was measured with (auto: 0.1, 7,680).
    config = Config(size=32, steps=8, loss_every=1, weights="random", learning_rate=0.02, tv_weight=30.0)
    pairings = make_pairings(1, 32, seed=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 32 px gains nothing from threads
    try:
        (fp32,) = StyleTransfer(config, WEIGHTS, "cpu", precision="fp32").run(pairings)
        (bf16,) = StyleTransfer(config, WEIGHTS, "cpu", precision="bf16").run(pairings)
    finally:
        torch.set_num_threads(threads)
    a, b = fp32.loss_curves["total"], bf16.loss_curves["total"]
    assert len(a) == len(b) == config.steps + 1
    assert a != b  # bf16 really ran
    for step, (x, y) in enumerate(zip(a, b)):
        assert y == pytest.approx(x, rel=CURVE_RTOL), f"step {step}: bf16 {y} against fp32 {x}"
    assert a[-1] < a[0] and b[-1] < b[0]
    # At this scale Adam's steps are nearly sign(gradient): a flipped sign moves a pixel by the
    # learning rate (0.02), so the images agree less closely than the losses (measured 0.008).
    assert (fp32.image - bf16.image).abs().mean() < 0.02
