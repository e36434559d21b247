"""Throughput of the engine, measured side by side with the naive loop.

    python -m benchmarks            # make bench: short and conv sizes on a CPU, full sizes on a GPU
    python -m benchmarks --plan     # make bench-plan: planning 1,000 x 1,000 pairings

In one process, on one device, on the same seeded synthetic images, it times:

- naive-fp32: the loop of the public tutorials (written out below, not the
  engine): one pairing at a time, targets recomputed for every pairing, fp32
  with TF32 off for matmuls and convolutions;
- naive-default: the same loop with PyTorch's default precision settings;
- engine-bN: pipeline.engine.transfer.StyleTransfer as shipped, N pairings per batch
  (on CUDA also engine-auto, the batch size pipeline.execution.devices picks, and
  engine-fp32, the engine with precision="fp32"; --compile adds engine-compile).
  At the CPU's convolution-dominated size (--conv: 192 px) naive-default only (on a
  CPU naive-fp32 is the same code), engine-fp32 (what bf16 brings where the CPU has it)
  and the shipped precision in the other memory layout: engine-cl (channels-last) where
  the shipped engine is contiguous, engine-contig where it is channels-last (a CPU with
  native bf16): whether the layout memory_format auto picks helps.

Each configuration is warmed up, then timed `repeats` times round-robin with the
others (so a machine busy with other work slows them alike), best time kept. It
reports designs per hour, steps per second, achieved TFLOP/s (benchmarks.flops:
the useful FLOPs of the optimization loop, from the layer shapes), the fraction
of the device's dense bf16 peak, peak memory, and the ratios to the naive
loops; writes a JSON file and appends one row per configuration to
docs/BENCHMARKS.md. The last line printed is the engine's best throughput over
naive-default's.

This module imports only torch, numpy, Pillow and the pipeline's engine, vgg,
config, weights and flops modules, so it runs on a bare GPU box
(`PYTHONPATH=. python -m benchmarks`). `--plan` (pyarrow) is for the
development machine.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    DEFAULT_FLAGS,
    append_table_rows,
    device_label,
    fmt,
    make_pairings,
    peak_memory,
    set_flags,
    sync,
    utc_now,
)
from benchmarks.flops import peak_bf16_tflops, step_flops
from pipeline.config import Config
from pipeline.engine.optim import PaperAdam
from pipeline.engine.transfer import Pairing, Progress, StyleTransfer, cpu_has_native_bf16, resolve_precision
from pipeline.engine.vgg import layer_index, preprocess
from pipeline.engine.weights import WeightsSource, load_features, resolve_weights

RATIO_LINE = "engine/naive-default throughput ratio: {:.2f}"


@dataclass(frozen=True)
class Sizes:
    size: int  # the images are size x size
    steps: int
    batch_sizes: tuple[int, ...]
    designs: int  # pairings each engine configuration makes
    naive_designs: int  # pairings each naive configuration makes (one at a time: its rate does not depend on how many)
    repeats: int


# Short: a CPU finishes it in a few minutes; per-operator overhead weighs much at 64 px.
# Conv: a CPU size where the convolutions dominate (what bf16 and batching change).
# Full: a GPU at the paper's output size.
SHORT = Sizes(size=64, steps=20, batch_sizes=(1, 4), designs=4, naive_designs=4, repeats=3)
CONV = Sizes(size=192, steps=20, batch_sizes=(1, 4), designs=4, naive_designs=2, repeats=2)
FULL = Sizes(size=512, steps=100, batch_sizes=(1, 2, 4, 8, 16, 32), designs=32, naive_designs=4, repeats=3)


# --- the naive loop -------------------------------------------------------------


class NaiveLoop:
    """Gatys et al. as the public tutorials write it (the TensorFlow tutorial the
    paper ran, PyTorch's neural-style tutorial): one pairing at a time, its
    targets computed for it, VGG19 cut after the deepest layer used with
    non-inplace ReLUs, the same losses as the engine (Gram over positions, MSE
    averaged over layers, total variation), Adam, clip to [0, 1] after each step."""

    def __init__(self, weights: WeightsSource, config: Config, device: torch.device):
        self.config = config
        self.device = device
        layers = tuple(dict.fromkeys(config.content_layers + config.style_layers))
        self.taps = {layer_index(weights.network)[name]: name for name in layers}
        self.net = load_features(weights, until_index=max(self.taps)).to(device).eval().requires_grad_(False)
        for module in self.net:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # the PyTorch tutorial's change: taps must survive
        self.preprocessing = weights.preprocessing

    def extract(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = preprocess(image, self.preprocessing)
        out = {}
        for index, layer in enumerate(self.net):
            x = layer(x)
            if index in self.taps:
                out[self.taps[index]] = x
        return out

    @staticmethod
    def gram(features: torch.Tensor) -> torch.Tensor:
        _, c, h, w = features.shape
        flat = features.view(c, h * w)
        return flat @ flat.t() / (h * w)

    def design(self, content: torch.Tensor, style: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        cfg = self.config.resolved()
        content = content.unsqueeze(0).to(self.device)
        style = style.unsqueeze(0).to(self.device)
        with torch.no_grad():
            content_targets = {name: f for name, f in self.extract(content).items() if name in cfg.content_layers}
            style_targets = {name: self.gram(f) for name, f in self.extract(style).items() if name in cfg.style_layers}
        image = content.clone().requires_grad_(True)
        opt = PaperAdam(
            [image],
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_eps,
            convention=cfg.adam_convention,
        )
        for _ in range(cfg.steps if steps is None else steps):
            opt.zero_grad()
            feats = self.extract(image)
            content_loss = sum(F.mse_loss(feats[name], content_targets[name]) for name in cfg.content_layers)
            style_loss = sum(F.mse_loss(self.gram(feats[name]), style_targets[name]) for name in cfg.style_layers)
            tv = (image[:, :, 1:, :] - image[:, :, :-1, :]).abs().sum() + (
                image[:, :, :, 1:] - image[:, :, :, :-1]
            ).abs().sum()
            loss = (
                cfg.content_weight * content_loss / len(cfg.content_layers)
                + cfg.style_weight * style_loss / len(cfg.style_layers)
                + cfg.tv_weight * tv
            )
            loss.backward()
            opt.step()
            with torch.no_grad():
                image.clamp_(0.0, 1.0)
        return image.detach()[0].cpu()


# --- inputs, flags, measurement ---------------------------------------------------------


@dataclass
class Case:
    name: str
    kind: str  # naive or engine
    batch_size: int
    designs: int
    precision: str
    flags: tuple[bool, bool, bool]
    run: Callable[[], None]
    warm_up: Callable[[], None]
    seconds: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    error: str | None = None
    shipped: bool = False  # the engine with its defaults (what the ratio line reports)


def _noop(_: Progress) -> None:
    """The flow passes a progress callback; so does the bench (it reads the losses every loss_every steps)."""


def build_cases(
    sizes: Sizes,
    device: torch.device,
    weights: WeightsSource,
    config: Config,
    pairings: list[Pairing],
    compile_: bool = False,
    conv: bool = False,
    compile_batch_sizes: Sequence[int] | None = None,
) -> list[Case]:
    """The configurations to time. `conv`: the CPU's convolution-dominated set (see the
    module's docstring); `compile_batch_sizes`: engine-compile's (default: every batch size)."""
    cuda = device.type == "cuda"
    cases: list[Case] = []
    naive = NaiveLoop(weights, config, device)
    naive_pairings = pairings[: sizes.naive_designs]

    def naive_run() -> None:
        for p in naive_pairings:
            naive.design(p.content, p.style)

    def naive_warm() -> None:
        naive.design(naive_pairings[0].content, naive_pairings[0].style, steps=min(3, config.steps))

    if cuda or not conv:
        cases.append(
            Case(
                "naive-fp32",
                "naive",
                1,
                len(naive_pairings),
                "fp32 (TF32 off)",
                (False, False, DEFAULT_FLAGS[2]),
                naive_run,
                naive_warm,
            )
        )
    cases.append(
        Case("naive-default", "naive", 1, len(naive_pairings), "PyTorch defaults", DEFAULT_FLAGS, naive_run, naive_warm)
    )

    def engine_cases(
        engine: StyleTransfer, prefix: str, batch_sizes: Sequence[int], label: str | None = None, shipped: bool = False
    ) -> None:
        for batch in batch_sizes:
            batch = min(batch, len(pairings))

            def run(batch: int = batch) -> None:
                engine.clear_cache()  # every timed run computes its targets, as a fresh catalog would
                for i in range(0, len(pairings), batch):
                    engine.run(pairings[i : i + batch], on_progress=_noop, config=config)

            def warm(batch: int = batch) -> None:
                engine.run(pairings[:batch], on_progress=_noop, config=config.replace(steps=min(3, config.steps)))
                engine.clear_cache()

            cases.append(
                Case(
                    f"{prefix}{label or f'b{batch}'}",
                    "engine",
                    batch,
                    len(pairings),
                    engine.precision,
                    DEFAULT_FLAGS,
                    run,
                    warm,
                    shipped=shipped,
                )
            )

    engine = StyleTransfer(config, weights, device)
    engine_cases(engine, "engine-", sizes.batch_sizes, shipped=True)
    largest = [max(sizes.batch_sizes)]
    if cuda:
        from pipeline.execution.devices import auto_batch_size

        auto = min(auto_batch_size(str(device), sizes.size, sizes.size, engine=engine, config=config), len(pairings))
        engine_cases(engine, "engine-auto-", [auto], shipped=True)
    if cuda or conv:
        fp32 = StyleTransfer(config, weights, device, precision="fp32", channels_last=False)
        engine_cases(fp32, "engine-fp32-", largest)
    if conv and not cuda:
        # The layout the shipped engine did not pick (memory_format auto: channels-last where bf16 is native).
        other = not engine.channels_last
        layout = StyleTransfer(config, weights, device, channels_last=other)
        engine_cases(layout, "engine-cl-" if other else "engine-contig-", largest)
    if compile_:
        compiled = StyleTransfer(config, weights, device, compile=True)
        engine_cases(compiled, "engine-compile-", compile_batch_sizes or sizes.batch_sizes)
    return cases


def measure(cases: list[Case], repeats: int, device: torch.device, log: Callable[[str], None]) -> None:
    """Warm every case up, then time them round-robin `repeats` times."""
    for case in cases:
        set_flags(*case.flags)
        try:
            case.warm_up()
            sync(device)
        except torch.cuda.OutOfMemoryError:
            case.error = "out of memory"
            torch.cuda.empty_cache()
    for r in range(repeats):
        for case in cases:
            if case.error:
                continue
            set_flags(*case.flags)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            started = time.perf_counter()
            try:
                case.run()
                sync(device)
            except torch.cuda.OutOfMemoryError:
                case.error = "out of memory"
                torch.cuda.empty_cache()
                continue
            case.seconds.append(time.perf_counter() - started)
            case.peak_bytes = max(case.peak_bytes, peak_memory(device)[0])
            log(f"  repeat {r + 1}/{repeats} {case.name}: {case.seconds[-1]:.3f} s")
    set_flags(*DEFAULT_FLAGS)


def summarize(
    cases: list[Case], steps: int, flops_per_design_step: int, peak_tflops: float | None
) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        row: dict[str, Any] = {
            "name": case.name,
            "kind": case.kind,
            "batch_size": case.batch_size,
            "designs": case.designs,
            "precision": case.precision,
            "shipped": case.shipped,
            "error": case.error,
            "seconds_all": case.seconds,
        }
        if case.seconds:
            best = min(case.seconds)
            design_steps = case.designs * steps
            tflops = design_steps * flops_per_design_step / best / 1e12
            row.update(
                seconds=best,
                designs_per_hour=case.designs / best * 3600,
                steps_per_second=math.ceil(case.designs / case.batch_size) * steps / best,
                design_steps_per_second=design_steps / best,
                tflops=tflops,
                peak_fraction=tflops / peak_tflops if peak_tflops else None,
                peak_memory_bytes=case.peak_bytes,
            )
        rows.append(row)
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        for base in ("naive-fp32", "naive-default"):
            ref = by_name.get(base, {}).get("designs_per_hour")
            r[f"vs_{base.replace('-', '_')}"] = r["designs_per_hour"] / ref if ref and "designs_per_hour" in r else None
    return rows


# --- reports ----------------------------------------------------------------------------


TABLE_HEADER = (
    "| date | device | torch | threads | size | steps | config | batch | designs/h | steps/s | TFLOP/s | % peak "
    "| peak memory MiB | x naive-fp32 | x naive-default |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def markdown_rows(result: dict[str, Any]) -> str:
    lines = []
    for r in result["configs"]:
        if r.get("error"):
            cells = [r["error"]] + ["-"] * 6
        else:
            cells = [
                fmt(r["designs_per_hour"], ",.0f"),
                fmt(r["steps_per_second"], ".2f"),
                fmt(r["tflops"], ".3f"),
                fmt(None if r["peak_fraction"] is None else 100 * r["peak_fraction"], ".1f"),
                fmt(r["peak_memory_bytes"] / 2**20, ",.0f"),
                fmt(r["vs_naive_fp32"], ".2f"),
                fmt(r["vs_naive_default"], ".2f"),
            ]
        lines.append(
            "| "
            + " | ".join(
                [
                    result["date"][:10],
                    result["device_name"],
                    result["torch"],
                    str(result["threads"]),
                    str(result["size"]),
                    str(result["steps"]),
                    r["name"],
                    str(r["batch_size"]),
                    *cells,
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def append_markdown(path: Path, result: dict[str, Any]) -> None:
    """Append the run's rows to the throughput results table."""
    append_table_rows(path, "Results", TABLE_HEADER, markdown_rows(result))


# --- the throughput bench -----------------------------------------------------------------


MODES = {"short": SHORT, "conv": CONV, "full": FULL}


def bench_device(args: argparse.Namespace) -> torch.device:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def bench_modes(args: argparse.Namespace, device: torch.device) -> list[str]:
    """The sizes one `python -m benchmarks` runs: the one asked for; else full on a GPU, and on
    a CPU short then conv (short alone when --size is given)."""
    if args.short or args.conv or args.full:
        return ["short" if args.short else "conv" if args.conv else "full"]
    if device.type == "cuda":
        return ["full"]
    return ["short"] if args.size else ["short", "conv"]


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print, mode: str | None = None) -> dict[str, Any]:
    device = bench_device(args)
    mode = mode or bench_modes(args, device)[0]
    base = MODES[mode]
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(",")) if args.batch_sizes else base.batch_sizes
    designs = args.designs or max(base.designs, *batch_sizes)
    sizes = Sizes(
        size=args.size or base.size,
        steps=args.steps or base.steps,
        batch_sizes=batch_sizes,
        designs=designs,
        naive_designs=min(designs, args.naive_designs or base.naive_designs),
        repeats=args.repeats or base.repeats,
    )
    torch.set_num_threads(args.threads or torch.get_num_threads())  # one setting for every configuration
    threads = torch.get_num_threads()
    torch.manual_seed(0)

    weights = resolve_weights(args.weights, 0, allow_download=args.weights != "random")
    # One scale, as the naive loops: this compares the cost of a step (the default ladder's gain
    # is measured at equal quality by --quality).
    config = Config(size=sizes.size, steps=sizes.steps, weights=args.weights, devices=str(device), scales=())
    flops = step_flops(sizes.size, sizes.size, config.content_layers, config.style_layers, weights.network)
    name = device_label(device)
    peak = peak_bf16_tflops(name) if device.type == "cuda" else None
    native_bf16 = cpu_has_native_bf16() if device.type == "cpu" else None
    precision = resolve_precision("auto", device)
    log(
        f"bench on {name}, torch {torch.__version__}, {threads} threads: {sizes.size} px, {sizes.steps} steps, "
        f"{sizes.designs} designs (naive {sizes.naive_designs}), batch sizes {list(sizes.batch_sizes)}, "
        f"best of {sizes.repeats}; {flops.total / 1e9:.3f} GFLOP per design-step ({weights.network}); the engine ships {precision}"
        + ("" if native_bf16 is None else f" (oneDNN native bf16 on this CPU: {'yes' if native_bf16 else 'no'})")
    )

    pairings = make_pairings(sizes.designs, sizes.size)
    compile_sizes = tuple(int(b) for b in args.compile_batch_sizes.split(",")) if args.compile_batch_sizes else None
    cases = build_cases(
        sizes,
        device,
        weights,
        config,
        pairings,
        compile_=args.compile,
        conv=mode == "conv",
        compile_batch_sizes=compile_sizes,
    )
    measure(cases, sizes.repeats, device, log)
    rows = summarize(cases, sizes.steps, flops.total, peak)

    # The ratio line's figure: the engine as shipped (not its fp32, layout or compile variants).
    engines = [r for r in rows if r["shipped"] and r.get("designs_per_hour")]
    best = max(engines, key=lambda r: r["designs_per_hour"]) if engines else None
    # On a CPU the two naive cases run the same code: how far apart they are is the noise.
    noise = None
    naive = {r["name"]: r.get("designs_per_hour") for r in rows if r["kind"] == "naive"}
    if device.type == "cpu" and all(naive.values()) and len(naive) == 2:
        noise = abs(naive["naive-fp32"] / naive["naive-default"] - 1)
        if noise > 0.1:
            log(
                f"warning: naive-fp32 and naive-default (the same code on a CPU) differ by {100 * noise:.0f}%: the machine is "
                f"busy and the timings unreliable; rerun, or with --threads 1 (threads waiting on each other suffer most)"
            )
    result = {
        "bench": "benchmarks.engine",
        "date": utc_now(),
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        "threads": threads,
        "mode": mode,
        "size": sizes.size,
        "steps": sizes.steps,
        "designs": sizes.designs,
        "naive_designs": sizes.naive_designs,
        "batch_sizes": list(sizes.batch_sizes),
        "repeats": sizes.repeats,
        "engine_precision": precision,
        "cpu_native_bf16": native_bf16,
        "weights": weights.identity,
        "network": weights.network,
        "flops_per_design_step": flops.to_dict(),
        "peak_bf16_tflops": peak,
        "memory_measure": peak_memory(device)[1],
        "configs": rows,
        "best_engine": best["name"] if best else None,
        "engine_vs_naive_default": best["vs_naive_default"] if best else None,
        "engine_vs_naive_fp32": best["vs_naive_fp32"] if best else None,
        "cpu_noise": noise,
    }
    return result


def print_table(result: dict[str, Any], log: Callable[[str], None] = print) -> None:
    log(
        f"{'config':<22}{'batch':>6}{'designs/h':>12}{'steps/s':>10}{'TFLOP/s':>10}{'%peak':>7}{'mem MiB':>10}{'x fp32':>8}{'x default':>10}"
    )
    for r in result["configs"]:
        if r.get("error"):
            log(f"{r['name']:<22}{r['batch_size']:>6}  {r['error']}")
            continue
        pct = "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}"
        log(
            f"{r['name']:<22}{r['batch_size']:>6}{r['designs_per_hour']:>12,.0f}{r['steps_per_second']:>10.2f}{r['tflops']:>10.3f}"
            f"{pct:>7}{r['peak_memory_bytes'] / 2**20:>10,.0f}{fmt(r['vs_naive_fp32'], '.2f'):>8}"
            f"{fmt(r['vs_naive_default'], '.2f'):>10}"  # no naive-fp32 at the conv size
        )
