"""benchmarks in short mode on the CPU (no assertions on time), benchmarks.flops
against hand counts, and the engine's CUDA speed paths: their pieces that run on a
CPU here, the rest under @pytest.mark.cuda."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_bench_main, table_rows

from benchmarks import cli as bench_cli
from benchmarks import common as bench_common
from benchmarks import engine as bench
from benchmarks.flops import conv_shapes, peak_bf16_tflops, step_flops
from pipeline.config import Config
from pipeline.engine import transfer
from pipeline.engine.losses import gram
from pipeline.engine.transfer import Pairing, StyleTransfer
from pipeline.engine.weights import resolve_weights

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--short",
    "--size",
    "32",
    "--steps",
    "2",
    "--batch-sizes",
    "1,2",
    "--designs",
    "2",
    "--repeats",
    "1",
    "--threads",
    "1",
]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One tiny bench run writing its JSON and appending to a copy of docs/BENCHMARKS.md:
    run_bench_main's (result, written JSON, page before, page after), then the printed output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run = run_bench_main(TINY, tmp_path_factory.mktemp("bench"))
    return (*run, out.getvalue())


# --- flops --------------------------------------------------------------------------


def test_flops_match_a_hand_count():
    # conv1_1 3->64 and conv1_2 64->64 at 33x47, a pool (floor: 16x23), conv2_1 64->128
    got = step_flops(33, 47, content_layers=("conv2_1",), style_layers=("conv1_1", "conv2_1"))
    conv = 2 * 9 * (3 * 64 * 33 * 47 + 64 * 64 * 33 * 47 + 64 * 128 * 16 * 23)
    grams = 2 * (64 * 64 * 33 * 47) + 2 * (128 * 128 * 16 * 23)
    assert got.conv_forward == conv and got.conv_backward == conv
    assert got.gram_forward == grams and got.gram_backward == grams
    assert got.total == 2 * conv + 2 * grams
    assert got.to_dict()["total"] == got.total


def test_flops_stop_at_the_deepest_layer_and_follow_the_pools():
    shapes = conv_shapes(64, 64, "conv5_2")
    assert [s.name for s in shapes][-3:] == ["conv4_4", "conv5_1", "conv5_2"]
    assert len(shapes) == 14
    assert {s.name: s.height for s in shapes}["conv5_1"] == 4
    assert [s.name for s in conv_shapes(64, 64, "conv1_1")] == ["conv1_1"]
    # the default layers at 512 px: 194.2 GFLOP of convolutions forward
    default = step_flops(512, 512, Config().content_layers, Config().style_layers)
    assert default.conv_forward == pytest.approx(194.18e9, rel=1e-4)


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40S", 362.0),
        ("cpu (AMD EPYC, 2 cores)", None),
        ("Some Future GPU", None),
    ],
)
def test_peak_table(name, peak):
    assert peak_bf16_tflops(name) == peak


# --- the bench ------------------------------------------------------------------------


def test_bench_json_fields(bench_run):
    result, written, _, _, _ = bench_run
    assert written == json.loads(json.dumps(result))
    for key in (
        "date",
        "device",
        "device_name",
        "torch",
        "threads",
        "mode",
        "size",
        "steps",
        "designs",
        "batch_sizes",
        "repeats",
        "weights",
        "flops_per_design_step",
        "peak_bf16_tflops",
        "memory_measure",
        "configs",
        "best_engine",
        "engine_vs_naive_default",
        "engine_vs_naive_fp32",
    ):
        assert key in written, key
    assert written["device"] == "cpu" and written["peak_bf16_tflops"] is None and written["threads"] == 1
    assert written["size"] == 32 and written["steps"] == 2 and written["mode"] == "short"
    flops = step_flops(32, 32, Config().content_layers, Config().style_layers).total
    assert written["flops_per_design_step"]["total"] == flops
    configs = {c["name"]: c for c in written["configs"]}
    assert list(configs) == ["naive-fp32", "naive-default", "engine-b1", "engine-b2"]
    for c in configs.values():
        assert c["error"] is None
        assert c["seconds"] == min(c["seconds_all"]) > 0
        assert c["designs_per_hour"] == pytest.approx(c["designs"] / c["seconds"] * 3600)
        assert c["tflops"] == pytest.approx(c["designs"] * 2 * flops / c["seconds"] / 1e12)
        assert c["steps_per_second"] == pytest.approx(-(-c["designs"] // c["batch_size"]) * 2 / c["seconds"])
        assert c["peak_fraction"] is None
        assert c["peak_memory_bytes"] > 0
        assert c["vs_naive_default"] == pytest.approx(
            c["designs_per_hour"] / configs["naive-default"]["designs_per_hour"]
        )
    assert configs["naive-fp32"]["vs_naive_fp32"] == 1.0
    assert configs["engine-b2"]["batch_size"] == 2 and configs["engine-b2"]["kind"] == "engine"
    best = max((c for c in configs.values() if c["kind"] == "engine"), key=lambda c: c["designs_per_hour"])
    assert written["best_engine"] == best["name"]
    assert written["engine_vs_naive_default"] == best["vs_naive_default"]


def test_bench_appends_one_markdown_row_per_config(bench_run):
    result, _, original, after, _ = bench_run
    # The rows go at the end of the results table, wherever it is on the page.
    lines, added = original.splitlines(), after.splitlines()
    header = lines.index(bench.TABLE_HEADER.splitlines()[0])
    end = next((i for i in range(header, len(lines)) if not lines[i].startswith("|")), len(lines))
    new = added[end : end + len(result["configs"])]
    assert added[:end] == lines[:end] and added[end + len(new) :] == lines[end:]
    assert len(new) == len(result["configs"])
    for line, config in zip(new, result["configs"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == result["device_name"] and cells[2] == torch.__version__
        assert cells[6] == config["name"] and cells[7] == str(config["batch_size"])
        assert len(cells) == len(bench.TABLE_HEADER.splitlines()[0].strip("|").split("|"))


def test_a_new_markdown_file_gets_the_header(tmp_path, bench_run):
    result = bench_run[0]
    path = tmp_path / "docs" / "B.md"
    bench.append_markdown(path, result)
    bench.append_markdown(path, result)
    text = path.read_text()
    assert text.startswith("# Benchmarks")
    assert text.count(bench.TABLE_HEADER.splitlines()[0]) == 1
    assert text.count(f"| {result['configs'][0]['name']} |") == 2


def test_bench_ends_with_the_ratio_line(bench_run):
    result, _, _, _, out = bench_run
    last = out.rstrip("\n").splitlines()[-1]
    assert re.fullmatch(r"engine/naive-default throughput ratio: \d+\.\d\d", last)
    assert last == bench.RATIO_LINE.format(result["engine_vs_naive_default"])


def test_bench_imports_neither_prefect_nor_arrow():
    code = (
        "import sys, benchmarks.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'deltalake', 'pyarrow', 'pandas', 'duckdb'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_naive_loop_computes_what_the_engine_does():
    """The baseline is a fair one: same losses and optimizer, so the same design."""
    cfg = Config(size=32, steps=4, weights="random", style_weight=1e4)
    weights = smooth_weights()
    (pairing,) = bench_common.make_pairings(1, 32)
    naive = bench.NaiveLoop(weights, cfg, torch.device("cpu")).design(pairing.content, pairing.style)
    (engine,) = StyleTransfer(cfg, weights, "cpu", precision="fp32").run([pairing])  # the naive loop is fp32
    torch.testing.assert_close(naive, engine.image, atol=1e-5, rtol=0)
    assert (naive - pairing.content).abs().max() > 1e-2  # it did optimize


def test_synthetic_images_are_seeded_and_in_range():
    a, b = bench_common.synthetic_images(2, 24, seed=5), bench_common.synthetic_images(2, 24, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (3, 24, 24) and 0 <= a[0].min() and a[0].max() <= 1
    assert not torch.equal(a[0], a[1])


# --- the engine's speed paths, the parts a CPU runs ---------------------------------------

# style_weight raised: at torchvision's scale (smooth_weights) the style term is otherwise negligible.
# The paper's learning rate and TV weight, as these bounds were measured with (auto would give 0.1 at 6 steps).
CFG = Config(size=32, steps=6, loss_every=2, weights="random", style_weight=1e4, learning_rate=0.02, tv_weight=30.0)


def smooth_weights():
    """Random weights at torchvision's input scale. These tests compare float paths (channels-last,
    bf16, the naive loop): there Adam stays in its smooth regime, where float noise stays small. At
    the Caffe network's scale gradients dwarf epsilon and a flipped near-sign step moves a pixel by
    the learning rate (tests/engine/test_engine.py::test_batch_matches_single_runs_at_the_caffe_scale)."""
    return resolve_weights("random", 0, preprocessing="torchvision")


def _pairings(n: int = 2) -> list[Pairing]:
    return bench_common.make_pairings(n, 32, seed=3)


def test_gram_reads_channels_last_features_without_changing_the_result():
    f = torch.randn(2, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    nhwc = f.contiguous(memory_format=torch.channels_last)
    assert not nhwc.is_contiguous()
    torch.testing.assert_close(gram(nhwc), gram(f))
    mask = torch.rand(2, 1, 4, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(gram(nhwc, mask), gram(f, mask))


@pytest.mark.parametrize("native_bf16, expected", [(False, "fp32"), (True, "bf16")])
def test_precision_is_checked_and_resolved(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(transfer, "cpu_has_native_bf16", lambda: native_bf16)
    weights = smooth_weights()
    with pytest.raises(ValueError, match="precision='fp16' is invalid; accepted: auto, fp32, bf16"):
        StyleTransfer(CFG, weights, "cpu", precision="fp16")
    cpu = StyleTransfer(CFG, weights, "cpu")
    assert cpu.precision == expected and cpu.channels_last is native_bf16 and cpu.compile is False
    assert StyleTransfer(CFG, weights, "cpu", precision="fp32").precision == "fp32"


def test_channels_last_on_the_cpu_gives_the_same_designs():
    weights = smooth_weights()
    plain = StyleTransfer(CFG, weights, "cpu", precision="fp32").run(_pairings())
    nhwc = StyleTransfer(CFG, weights, "cpu", precision="fp32", channels_last=True).run(_pairings())
    for a, b in zip(plain, nhwc):
        assert b.image.is_contiguous()
        # Float sums in another order; the TV term's sign() flips a pixel now and then.
        assert (a.image - b.image).abs().mean() < 2e-4
        assert ((a.image - b.image).abs() > 1e-3).float().mean() < 0.01
        assert (a.image - b.image).abs().max() < 0.1
        assert a.final_loss["total"] == pytest.approx(b.final_loss["total"], rel=1e-3)


def test_bf16_autocast_covers_the_network_only():
    """precision="bf16" (CUDA's default) runs on a CPU too: bf16 activations, fp32 Grams and losses."""
    weights = smooth_weights()
    engine = StyleTransfer(CFG, weights, "cpu", precision="bf16")
    image = torch.rand(2, 3, 32, 32)
    feats = engine.features(image)
    assert all(f.dtype == torch.bfloat16 for f in feats.values())
    assert gram(feats["conv1_1"]).dtype == torch.float32
    (pairing,) = _pairings(1)
    content_t = {k: v.unsqueeze(0) for k, v in engine.content_targets(pairing.content_key, pairing.content).items()}
    style_t = {k: v.unsqueeze(0) for k, v in engine.style_targets(pairing.style_key, pairing.style).items()}
    assert all(v.dtype == torch.float32 for v in [*content_t.values(), *style_t.values()])
    losses = engine.losses(pairing.content.unsqueeze(0), content_t, style_t)
    assert losses.dtype == torch.float32
    assert losses[0, 1].item() == pytest.approx(0.0, abs=1e-6)  # targets made in the same precision


def test_bf16_designs_are_close_to_fp32_designs():
    weights = smooth_weights()
    fp32 = StyleTransfer(CFG, weights, "cpu", precision="fp32").run(_pairings())
    bf16 = StyleTransfer(CFG, weights, "cpu", precision="bf16").run(_pairings())
    for a, b in zip(fp32, bf16):
        assert b.error is None
        assert (a.image - b.image).abs().mean() < 2e-3
        assert (a.image - b.image).abs().max() < 0.05
        assert b.final_loss["total"] == pytest.approx(a.final_loss["total"], rel=1e-2)


# --- CUDA ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda_weights():
    return smooth_weights()


@pytest.mark.cuda
def test_cuda_defaults_are_bf16_channels_last_and_fp32_results(cuda_weights):
    engine = StyleTransfer(CFG, cuda_weights, "cuda")
    assert engine.precision == "bf16" and engine.channels_last is True
    assert torch.backends.cudnn.benchmark is True
    feats = engine.features(torch.rand(2, 3, 32, 32, device="cuda"))
    assert all(f.dtype == torch.bfloat16 for f in feats.values())
    assert feats["conv1_1"].is_contiguous(memory_format=torch.channels_last)
    results = engine.run(_pairings())
    for r in results:
        assert r.error is None and r.image.dtype == torch.float32 and r.image.device.type == "cpu"
        assert r.image.is_contiguous()
        assert all(isinstance(v, float) for v in r.final_loss.values())


@pytest.mark.cuda
def test_cuda_bf16_is_close_to_cuda_fp32_and_to_the_cpu(cuda_weights):
    bf16 = StyleTransfer(CFG, cuda_weights, "cuda").run(_pairings())
    fp32 = StyleTransfer(CFG, cuda_weights, "cuda", precision="fp32", channels_last=False).run(_pairings())
    cpu = StyleTransfer(CFG, cuda_weights, "cpu", precision="fp32").run(_pairings())
    for a, b, c in zip(fp32, bf16, cpu):
        assert (a.image - b.image).abs().mean() < 2e-3
        assert (a.image - b.image).abs().max() < 0.05
        assert b.final_loss["total"] == pytest.approx(a.final_loss["total"], rel=1e-2)
        assert (a.image - c.image).abs().max() < 5e-3  # cuDNN's TF32 convolutions (PyTorch's default) against the CPU


@pytest.mark.cuda
def test_cuda_batch_equals_singles(cuda_weights):
    engine = StyleTransfer(CFG, cuda_weights, "cuda")
    together = engine.run(_pairings(3))
    for pairing, batched in zip(_pairings(3), together):
        (alone,) = engine.run([pairing])
        assert (batched.image - alone.image).abs().mean() < 1e-3
        assert (batched.image - alone.image).abs().max() < 0.03
        assert batched.final_loss["total"] == pytest.approx(alone.final_loss["total"], rel=1e-2)


@pytest.mark.cuda
def test_cuda_step_loop_never_waits_for_the_device(cuda_weights, monkeypatch):
    engine = StyleTransfer(CFG, cuda_weights, "cuda")
    engine.run(_pairings())  # warm up (cudnn.benchmark's trials)
    inner = engine._optimize

    def strict(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return inner(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(engine, "_optimize", strict)
    assert all(r.error is None for r in engine.run(_pairings()))  # no progress callback: nothing reads the losses


@pytest.mark.cuda
def test_cuda_measured_batch_size(cuda_weights):
    from pipeline.execution.devices import MAX_AUTO_BATCH, auto_batch_size, measured_step_memory

    engine = StyleTransfer(CFG, cuda_weights, "cuda")
    fixed, per_design = measured_step_memory(engine, 64, 48)
    assert per_design > 3 * 64 * 48 * 4  # more than the image itself
    assert fixed >= 0
    assert 1 <= auto_batch_size("cuda:0", 64, 48, engine=engine) <= MAX_AUTO_BATCH
    assert auto_batch_size("cuda:0", 2048, 2048, engine=engine) <= auto_batch_size("cuda:0", 256, 256, engine=engine)


@pytest.mark.cuda
def test_cuda_bench_short_run(tmp_path):
    threads = torch.get_num_threads()
    try:
        result = bench_cli.main(["--device", "cuda", *TINY, "--json", str(tmp_path / "r.json"), "--no-markdown"])
    finally:
        torch.set_num_threads(threads)
    names = [c["name"] for c in result["configs"]]
    assert names[:4] == ["naive-fp32", "naive-default", "engine-b1", "engine-b2"]
    assert any(n.startswith("engine-auto-b") for n in names) and any(n.startswith("engine-fp32-b") for n in names)
    assert result["memory_measure"] == "cuda max_memory_allocated"
    assert all(c["peak_memory_bytes"] > 0 for c in result["configs"] if not c["error"])
    # PyTorch's defaults are restored after the naive-fp32 case turned TF32 off
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == bench_common.DEFAULT_FLAGS[:2]


@pytest.mark.cuda
def test_cuda_compiled_extractor_matches_eager(cuda_weights):
    eager = StyleTransfer(CFG, cuda_weights, "cuda").run(_pairings())
    compiled = StyleTransfer(CFG, cuda_weights, "cuda", compile=True).run(_pairings())
    for a, b in zip(eager, compiled):
        assert (a.image - b.image).abs().mean() < 2e-3


def test_plan_bench_reports_times_memory_and_a_profile(tmp_path):
    result = bench_cli.main(
        [
            "--plan",
            "--plan-contents",
            "12",
            "--plan-styles",
            "10",
            "--plan-profile-side",
            "4",
            "--json",
            str(tmp_path / "plan.json"),
        ]
    )
    assert result["pairings"] == 120
    assert result["already_done"] == 108 and result["todo"] == 12  # 90% done
    assert result["shards"] == 1 and result["shard_size"] == 16
    for key in (
        "load_seconds",
        "plan_fresh_seconds",
        "read_done_seconds",
        "plan_seconds",
        "shard_seconds",
        "peak_rss_mib",
        "plan_peak_allocated_mib",
    ):
        assert result[key] >= 0
    assert "plan_designs" in result["profile"] and result["profile_pairings"] == 16
    assert json.loads((tmp_path / "plan.json").read_text())["todo"] == 12


# --- the CPU's convolution-dominated size ------------------------------------------------------


def test_a_cpu_runs_the_short_then_the_conv_size_unless_told():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert bench.bench_modes(bench_cli.parse_args([]), cpu) == ["short", "conv"]
    assert bench.bench_modes(bench_cli.parse_args(["--size", "96"]), cpu) == ["short"]
    assert bench.bench_modes(bench_cli.parse_args(["--conv"]), cpu) == ["conv"]
    assert bench.bench_modes(bench_cli.parse_args(["--short"]), cpu) == ["short"]
    assert bench.bench_modes(bench_cli.parse_args([]), cuda) == ["full"]
    assert (bench.CONV.size, bench.CONV.steps, bench.CONV.batch_sizes) == (192, 20, (1, 4))


CONV_TINY = ["--size", "32", "--steps", "1", "--batch-sizes", "1,2", "--designs", "2", "--repeats", "1"]


@pytest.mark.parametrize("native_bf16", [False, True], ids=["cpu-without-native-bf16", "cpu-with-native-bf16"])
def test_the_conv_size_times_naive_default_engine_fp32_layout_and_as_shipped(tmp_path, monkeypatch, native_bf16):
    monkeypatch.setattr(transfer, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: native_bf16)
    if native_bf16:
        args = ["--conv", *CONV_TINY]
    else:  # the default of a CPU: both sizes, one JSON
        monkeypatch.setattr(bench_cli, "bench_modes", lambda args, device: ["short", "conv"])
        args = CONV_TINY
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _, written, original, after = run_bench_main(args, tmp_path)
    runs = written["runs"] if not native_bf16 else [written]
    conv = runs[-1]
    assert [r["mode"] for r in runs] == (["conv"] if native_bf16 else ["short", "conv"])
    configs = {c["name"]: c for c in conv["configs"]}
    # naive-fp32 is naive-default's code on a CPU: timed at the short size only
    # The other layout than the shipped one: channels-last ships where bf16 is native (memory_format auto).
    layout = "engine-contig-b2" if native_bf16 else "engine-cl-b2"
    assert list(configs) == ["naive-default", "engine-b1", "engine-b2", "engine-fp32-b2", layout]
    shipped = "bf16" if native_bf16 else "fp32"
    assert conv["engine_precision"] == shipped and conv["cpu_native_bf16"] is native_bf16
    assert {n: c["precision"] for n, c in configs.items() if n != "naive-default"} == {
        "engine-b1": shipped,
        "engine-b2": shipped,
        "engine-fp32-b2": "fp32",
        layout: shipped,
    }
    assert [n for n, c in configs.items() if c["shipped"]] == ["engine-b1", "engine-b2"]
    # The ratio line: the engine as shipped over naive-default at the conv size.
    best = max((configs["engine-b1"], configs["engine-b2"]), key=lambda c: c["designs_per_hour"])
    assert conv["best_engine"] == best["name"] and written["engine_vs_naive_default"] == best["vs_naive_default"]
    assert out.getvalue().rstrip().splitlines()[-1] == bench.RATIO_LINE.format(best["vs_naive_default"])
    added = len(table_rows(after, bench.TABLE_HEADER)) - len(table_rows(original, bench.TABLE_HEADER))
    assert added == sum(len(r["configs"]) for r in runs)
