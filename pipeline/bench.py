"""Throughput of the engine, measured side by side with the naive loop.

    python -m pipeline.bench            # make bench: short sizes on a CPU, full sizes on a GPU
    python -m pipeline.bench --plan     # make bench-plan: planning 1,000 x 1,000 pairings

In one process, on one device, on the same seeded synthetic images, it times:

- naive-fp32: the loop of the public tutorials (written out below, not the
  engine): one pairing at a time, targets recomputed for every pairing, fp32
  with TF32 off for matmuls and convolutions;
- naive-default: the same loop with PyTorch's default precision settings;
- engine-bN: pipeline.engine.StyleTransfer as shipped, N pairings per batch
  (on CUDA also engine-auto, the batch size pipeline.devices picks, and
  engine-fp32, the engine with precision="fp32"; --compile adds engine-compile).

Each configuration is warmed up, then timed `repeats` times round-robin with the
others (so a machine busy with other work slows them alike), best time kept. It
reports designs per hour, steps per second, achieved TFLOP/s (pipeline.flops:
the useful FLOPs of the optimization loop, from the layer shapes), the fraction
of the device's dense bf16 peak, peak memory, and the ratios to the naive
loops; writes a JSON file and appends one row per configuration to
docs/BENCHMARKS.md. The last line printed is the engine's best throughput over
naive-default's.

This module imports only torch, numpy, Pillow and the pipeline's engine, vgg,
config, weights and flops modules, so it runs on a bare GPU box
(`PYTHONPATH=. python -m pipeline.bench`). `--plan` (pyarrow) is for the
development machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pipeline.config import Config
from pipeline.engine import Pairing, Progress, StyleTransfer
from pipeline.flops import peak_bf16_tflops, step_flops
from pipeline.vgg import IMAGENET_MEAN, IMAGENET_STD, LAYER_INDEX
from pipeline.weights import WeightsSource, load_features, resolve_weights

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MARKDOWN = ROOT / "docs" / "BENCHMARKS.md"
DEFAULT_JSON = "bench-results.json"
RATIO_LINE = "engine/naive-default throughput ratio: {:.2f}"

# PyTorch's own defaults, read before anything here changes them.
DEFAULT_FLAGS = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)


@dataclass(frozen=True)
class Sizes:
    size: int  # the images are size x size
    steps: int
    batch_sizes: tuple[int, ...]
    designs: int  # pairings each engine configuration makes
    naive_designs: int  # pairings each naive configuration makes (one at a time: its rate does not depend on how many)
    repeats: int


# Short: a CPU finishes it in a few minutes. Full: a GPU at the paper's output size.
SHORT = Sizes(size=64, steps=20, batch_sizes=(1, 4), designs=4, naive_designs=4, repeats=3)
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
        self.taps = {LAYER_INDEX[name]: name for name in layers}
        self.net = load_features(weights, until_index=max(self.taps)).to(device).eval().requires_grad_(False)
        for module in self.net:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # the PyTorch tutorial's change: taps must survive
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def extract(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
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
        cfg = self.config
        content = content.unsqueeze(0).to(self.device)
        style = style.unsqueeze(0).to(self.device)
        with torch.no_grad():
            content_targets = {name: f for name, f in self.extract(content).items() if name in cfg.content_layers}
            style_targets = {name: self.gram(f) for name, f in self.extract(style).items() if name in cfg.style_layers}
        image = content.clone().requires_grad_(True)
        opt = torch.optim.Adam([image], lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
        for _ in range(cfg.steps if steps is None else steps):
            opt.zero_grad()
            feats = self.extract(image)
            content_loss = sum(F.mse_loss(feats[name], content_targets[name]) for name in cfg.content_layers)
            style_loss = sum(F.mse_loss(self.gram(feats[name]), style_targets[name]) for name in cfg.style_layers)
            tv = (image[:, :, 1:, :] - image[:, :, :-1, :]).abs().sum() + (image[:, :, :, 1:] - image[:, :, :, :-1]).abs().sum()
            loss = (cfg.content_weight * content_loss / len(cfg.content_layers)
                    + cfg.style_weight * style_loss / len(cfg.style_layers) + cfg.tv_weight * tv)
            loss.backward()
            opt.step()
            with torch.no_grad():
                image.clamp_(0.0, 1.0)
        return image.detach()[0].cpu()


# --- inputs, flags, measurement ---------------------------------------------------------


def synthetic_images(n: int, size: int, seed: int) -> list[torch.Tensor]:
    """Photo-like (smooth) seeded images: coarse noise scaled up bicubically by Pillow."""
    rng = np.random.default_rng(seed)
    coarse_side = max(2, size // 8)
    images = []
    for _ in range(n):
        coarse = rng.integers(0, 256, size=(coarse_side, coarse_side, 3), dtype=np.uint8)
        image = Image.fromarray(coarse, "RGB").resize((size, size), Image.Resampling.BICUBIC)
        images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255.0))
    return images


def make_pairings(designs: int, size: int, seed: int = 0) -> list[Pairing]:
    """`designs` pairings: every one its own content, the styles shared by two (as in a catalog)."""
    contents = synthetic_images(designs, size, seed)
    styles = synthetic_images(max(1, (designs + 1) // 2), size, seed + 1)
    return [Pairing(f"p{i}", f"c{i}", contents[i], f"s{i // 2}", styles[i // 2]) for i in range(designs)]


def set_flags(matmul_tf32: bool, cudnn_tf32: bool, benchmark: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    torch.backends.cudnn.benchmark = benchmark


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are): CUDA's peak allocation since the last reset, or the
    process's peak resident set (monotonic over the whole process) on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "process max RSS"


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model}, {os.cpu_count()} cores)"


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


def _noop(_: Progress) -> None:
    """The flow passes a progress callback; so does the bench (it reads the losses every loss_every steps)."""


def build_cases(sizes: Sizes, device: torch.device, weights: WeightsSource, config: Config, pairings: list[Pairing],
                compile_: bool = False) -> list[Case]:
    cuda = device.type == "cuda"
    cases: list[Case] = []
    naive = NaiveLoop(weights, config, device)
    naive_pairings = pairings[: sizes.naive_designs]

    def naive_run() -> None:
        for p in naive_pairings:
            naive.design(p.content, p.style)

    def naive_warm() -> None:
        naive.design(naive_pairings[0].content, naive_pairings[0].style, steps=min(3, config.steps))

    cases.append(Case("naive-fp32", "naive", 1, len(naive_pairings), "fp32 (TF32 off)", (False, False, DEFAULT_FLAGS[2]),
                      naive_run, naive_warm))
    cases.append(Case("naive-default", "naive", 1, len(naive_pairings), "PyTorch defaults", DEFAULT_FLAGS, naive_run, naive_warm))

    def engine_cases(engine: StyleTransfer, prefix: str, batch_sizes: Sequence[int], label: str | None = None) -> None:
        for batch in batch_sizes:
            batch = min(batch, len(pairings))

            def run(batch: int = batch) -> None:
                engine.clear_cache()  # every timed run computes its targets, as a fresh catalog would
                for i in range(0, len(pairings), batch):
                    engine.run(pairings[i : i + batch], on_progress=_noop, config=config)

            def warm(batch: int = batch) -> None:
                engine.run(pairings[:batch], on_progress=_noop, config=config.replace(steps=min(3, config.steps)))
                engine.clear_cache()

            cases.append(Case(f"{prefix}{label or f'b{batch}'}", "engine", batch, len(pairings), engine.precision, DEFAULT_FLAGS, run, warm))

    engine = StyleTransfer(config, weights, device)
    engine_cases(engine, "engine-", sizes.batch_sizes)
    if cuda:
        from pipeline.devices import auto_batch_size

        auto = min(auto_batch_size(str(device), sizes.size, sizes.size, engine=engine, config=config), len(pairings))
        engine_cases(engine, "engine-auto-", [auto])
        fp32 = StyleTransfer(config, weights, device, precision="fp32", channels_last=False)
        engine_cases(fp32, "engine-fp32-", [max(sizes.batch_sizes)])
    if compile_:
        compiled = StyleTransfer(config, weights, device, compile=True)
        engine_cases(compiled, "engine-compile-", sizes.batch_sizes)
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


def summarize(cases: list[Case], steps: int, flops_per_design_step: int, peak_tflops: float | None) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        row: dict[str, Any] = {"name": case.name, "kind": case.kind, "batch_size": case.batch_size, "designs": case.designs,
                               "precision": case.precision, "error": case.error, "seconds_all": case.seconds}
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

MARKDOWN_HEADER = """# Benchmarks

`make bench` (`python -m pipeline.bench`) times, in one process, on one device and
the same seeded synthetic images, the naive loop of the public tutorials
(`naive-fp32`: TF32 off; `naive-default`: PyTorch's default precision settings;
one pairing at a time, targets recomputed per pairing) against the engine as
shipped at several batch sizes (`engine-bN`). Each configuration is warmed up,
then timed round-robin with the others, best of the repeats. Every run appends
one row per configuration below.

Columns: designs/h at the row's size and steps; steps/s: optimizer steps per
second (one step advances a whole batch); TFLOP/s: the useful FLOPs of the
optimization loop (`pipeline/flops.py`: convolutions forward and backward to
the image, Gram matrices forward and backward) over the time; % peak: of the
device's dense bf16 peak (none for a CPU); peak memory: CUDA's
`max_memory_allocated`, or on a CPU the process's peak RSS so far (it only
grows along a run); x naive-fp32, x naive-default: designs/h over theirs.
"""

TABLE_HEADER = ("| date | device | torch | threads | size | steps | config | batch | designs/h | steps/s | TFLOP/s | % peak "
                "| peak memory MiB | x naive-fp32 | x naive-default |\n"
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")


def fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def utc_now() -> str:
    """The date a bench row carries."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def markdown_rows(result: dict[str, Any]) -> str:
    lines = []
    for r in result["configs"]:
        if r.get("error"):
            cells = [r["error"]] + ["-"] * 6
        else:
            cells = [fmt(r["designs_per_hour"], ",.0f"), fmt(r["steps_per_second"], ".2f"), fmt(r["tflops"], ".3f"),
                     fmt(None if r["peak_fraction"] is None else 100 * r["peak_fraction"], ".1f"),
                     fmt(r["peak_memory_bytes"] / 2**20, ",.0f"), fmt(r["vs_naive_fp32"], ".2f"), fmt(r["vs_naive_default"], ".2f")]
        lines.append("| " + " | ".join([result["date"][:10], result["device_name"], result["torch"], str(result["threads"]),
                                        str(result["size"]), str(result["steps"]), r["name"], str(r["batch_size"]), *cells]) + " |")
    return "\n".join(lines) + "\n"


def append_markdown(path: Path, result: dict[str, Any]) -> None:
    """Append the run's rows to the throughput results table."""
    append_table_rows(path, "Results", TABLE_HEADER, markdown_rows(result))


def append_table_rows(path: Path, title: str, header: str, rows: str) -> None:
    """Add rows at the end of the table that starts with `header` (a new
    section `## title` at the end of the page when there is none yet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else MARKDOWN_HEADER
    lines = text.splitlines(keepends=True)
    first = header.splitlines()[0]
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == first]
    if not starts:
        text = text.rstrip("\n") + f"\n\n## {title}\n\n" + header + rows
    else:
        end = starts[0]
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        if not lines[end - 1].endswith("\n"):
            lines[end - 1] += "\n"
        text = "".join(lines[:end]) + rows + "".join(lines[end:])
    path.write_text(text)


# --- the throughput bench -----------------------------------------------------------------


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    short = args.short or (device.type != "cuda" and not args.full)
    base = SHORT if short else FULL
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(",")) if args.batch_sizes else base.batch_sizes
    designs = args.designs or max(base.designs, *batch_sizes)
    sizes = Sizes(size=args.size or base.size, steps=args.steps or base.steps, batch_sizes=batch_sizes, designs=designs,
                  naive_designs=min(designs, args.naive_designs or base.naive_designs), repeats=args.repeats or base.repeats)
    torch.set_num_threads(args.threads or torch.get_num_threads())  # one setting for every configuration
    threads = torch.get_num_threads()
    torch.manual_seed(0)

    weights = resolve_weights(args.weights, 0, allow_download=args.weights != "random")
    config = Config(size=sizes.size, steps=sizes.steps, weights=args.weights, devices=str(device))
    flops = step_flops(sizes.size, sizes.size, config.content_layers, config.style_layers)
    name = device_label(device)
    peak = peak_bf16_tflops(name) if device.type == "cuda" else None
    log(f"bench on {name}, torch {torch.__version__}, {threads} threads: {sizes.size} px, {sizes.steps} steps, "
        f"{sizes.designs} designs (naive {sizes.naive_designs}), batch sizes {list(sizes.batch_sizes)}, "
        f"best of {sizes.repeats}; {flops.total / 1e9:.3f} GFLOP per design-step")

    pairings = make_pairings(sizes.designs, sizes.size)
    cases = build_cases(sizes, device, weights, config, pairings, compile_=args.compile)
    measure(cases, sizes.repeats, device, log)
    rows = summarize(cases, sizes.steps, flops.total, peak)

    engines = [r for r in rows if r["kind"] == "engine" and r.get("designs_per_hour")]
    best = max(engines, key=lambda r: r["designs_per_hour"]) if engines else None
    # On a CPU the two naive cases run the same code: how far apart they are is the noise.
    noise = None
    naive = {r["name"]: r.get("designs_per_hour") for r in rows if r["kind"] == "naive"}
    if device.type == "cpu" and all(naive.values()) and len(naive) == 2:
        noise = abs(naive["naive-fp32"] / naive["naive-default"] - 1)
        if noise > 0.1:
            log(f"warning: naive-fp32 and naive-default (the same code on a CPU) differ by {100 * noise:.0f}%: the machine is "
                f"busy and the timings unreliable; rerun, or with --threads 1 (threads waiting on each other suffer most)")
    result = {
        "bench": "pipeline.bench",
        "date": utc_now(),
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        "threads": threads,
        "mode": "short" if short else "full",
        "size": sizes.size,
        "steps": sizes.steps,
        "designs": sizes.designs,
        "naive_designs": sizes.naive_designs,
        "batch_sizes": list(sizes.batch_sizes),
        "repeats": sizes.repeats,
        "weights": weights.identity,
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
    log(f"{'config':<22}{'batch':>6}{'designs/h':>12}{'steps/s':>10}{'TFLOP/s':>10}{'%peak':>7}{'mem MiB':>10}{'x fp32':>8}{'x default':>10}")
    for r in result["configs"]:
        if r.get("error"):
            log(f"{r['name']:<22}{r['batch_size']:>6}  {r['error']}")
            continue
        pct = "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}"
        log(f"{r['name']:<22}{r['batch_size']:>6}{r['designs_per_hour']:>12,.0f}{r['steps_per_second']:>10.2f}{r['tflops']:>10.3f}"
            f"{pct:>7}{r['peak_memory_bytes'] / 2**20:>10,.0f}{r['vs_naive_fp32']:>8.2f}{r['vs_naive_default']:>10.2f}")


# --- the planning bench -------------------------------------------------------------------


def run_plan_bench(contents: int, styles: int, done_fraction: float, profile_side: int, shard_size: int,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Validate, plan and shard a catalog of `contents` x `styles` pairings of 16x16
    PNGs, `done_fraction` of them already in the design catalog; cProfile of a
    `profile_side` x `profile_side` catalog shows where planning's time goes.
    Needs pyarrow and deltalake (the done designs are read from a Delta table)."""
    import cProfile
    import io
    import pstats
    import tempfile
    import tracemalloc

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.inputs import load_input_catalog
    from pipeline.plan import cut_shards, plan_designs

    config = Config(weights="random")
    identity = "random:0"
    result: dict[str, Any] = {"contents": contents, "styles": styles, "pairings": contents * styles, "done_fraction": done_fraction}

    def rss_mib() -> float:
        return peak_memory(torch.device("cpu"))[0] / 2**20

    def write_catalog(folder: Path, n_contents: int, n_styles: int) -> Path:
        rng = np.random.default_rng(0)
        rows = []
        for role, prefix, count in (("content", "c", n_contents), ("style", "s", n_styles)):
            for i in range(count):
                image_id = f"{prefix}{i:05d}"
                Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8), "RGB").save(folder / f"{image_id}.png")
                rows.append({"image_id": image_id, "role": role, "uri": f"{image_id}.png"})
        path = folder / "catalog.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path

    def write_design_catalog(out: Path, ok_ids: list[str]):
        from deltalake import write_deltalake

        from pipeline.design_catalog import SCHEMA, DesignCatalog

        design_catalog = DesignCatalog(out)
        table = design_catalog.ensure_table()
        n = len(ok_ids)
        columns = {"design_id": ok_ids, "status": ["ok"] * n, "run_id": ["bench"] * n, "style_id": ["s"] * n,
                   "created_at": pa.array([datetime.datetime.now(datetime.timezone.utc)] * n, pa.timestamp("us", tz="UTC"))}
        data = pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in SCHEMA}, schema=SCHEMA)
        write_deltalake(table, data, mode="append")
        return design_catalog

    with tempfile.TemporaryDirectory(prefix="plan-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        path = write_catalog(folder, contents, styles)
        log(f"wrote {contents + styles} PNGs and the catalog in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        catalog = load_input_catalog(path, max_images=contents + styles)
        result["load_seconds"] = time.perf_counter() - t0
        log(f"load_input_catalog: {result['load_seconds']:.2f} s")

        t0 = time.perf_counter()
        fresh = plan_designs(catalog, config, identity, set())
        result["plan_fresh_seconds"] = time.perf_counter() - t0
        result["rss_after_fresh_plan_mib"] = rss_mib()
        ids = [job.design_id for job in fresh.todo]
        # Spread evenly: floor(len(ids) * done_fraction) of them.
        done = {design_id for i, design_id in enumerate(ids) if math.floor((i + 1) * done_fraction) > math.floor(i * done_fraction)}
        log(f"plan_designs, nothing done: {result['plan_fresh_seconds']:.1f} s, {len(fresh.todo)} to do; peak RSS {result['rss_after_fresh_plan_mib']:,.0f} MiB")
        del fresh, ids

        # The done designs as a design catalog holds them: ok rows of a Delta table, read back
        # as the flow's plan task reads them.
        t0 = time.perf_counter()
        design_catalog = write_design_catalog(folder / "out", sorted(done))
        log(f"wrote a design catalog of {len(done)} ok rows in {time.perf_counter() - t0:.1f} s")
        del done
        t0 = time.perf_counter()
        done = design_catalog.ok_design_ids()
        result["read_done_seconds"] = time.perf_counter() - t0
        log(f"DesignCatalog.ok_design_ids: {result['read_done_seconds']:.2f} s, {len(done)} ids")

        t0 = time.perf_counter()
        plan = plan_designs(catalog, config, identity, done)
        result["plan_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        shards = cut_shards(plan.todo, shard_size)
        result["shard_seconds"] = time.perf_counter() - t0
        result.update(todo=len(plan.todo), already_done=plan.already_done, shards=len(shards), shard_size=shard_size,
                      peak_rss_mib=rss_mib())
        log(f"plan_designs, {len(done)} done: {result['plan_seconds']:.1f} s, {len(plan.todo)} to do, {plan.already_done} already done; "
            f"cut_shards({shard_size}): {result['shard_seconds']:.3f} s, {len(shards)} shards; peak RSS {result['peak_rss_mib']:,.0f} MiB")
        del plan, shards

        # The process's RSS peak is the first plan's (1M jobs to learn the ids); what planning
        # itself holds is measured again, untimed, by the allocations it makes.
        tracemalloc.start()
        plan = plan_designs(catalog, config, identity, done)
        shards = cut_shards(plan.todo, shard_size)
        result["plan_peak_allocated_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        log(f"plan_designs + cut_shards with {len(done)} done: peak of its own allocations {result['plan_peak_allocated_mib']:,.0f} MiB "
            f"(tracemalloc; the done ids are the caller's)")
        del plan, shards

        small = folder / "profile"
        small.mkdir()
        small_catalog = load_input_catalog(write_catalog(small, profile_side, profile_side))
        profiler = cProfile.Profile()
        profiler.enable()
        plan_designs(small_catalog, config, identity, set())
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        result["profile_pairings"] = profile_side * profile_side
        result["profile"] = out.getvalue()
        log(f"cProfile of plan_designs on {profile_side} x {profile_side} pairings (by own time):")
        log(result["profile"])
    return result


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--plan", action="store_true", help="the planning bench (1,000 x 1,000 pairings) instead")
    which.add_argument("--scales", action="store_true", help="coarse-to-fine: time to reach the single-scale run's final loss")
    which.add_argument("--max-size", action="store_true", help="peak memory of one design by size, and the largest size that fits")
    which.add_argument("--pipeline", action="store_true", help="how busy run_shard keeps the device, overlap on against off "
                                                               "(needs pyarrow and deltalake)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when there is one)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--short", action="store_true", help=f"short sizes ({SHORT.size} px, {SHORT.steps} steps); the default on a CPU")
    mode.add_argument("--full", action="store_true", help=f"full sizes ({FULL.size} px, {FULL.steps} steps) even on a CPU")
    parser.add_argument("--size", type=int, help="image side in pixels")
    parser.add_argument("--steps", type=int, help="optimization steps per design")
    parser.add_argument("--batch-sizes", help="engine batch sizes, comma-separated")
    parser.add_argument("--designs", type=int, help="pairings per engine configuration (default: the largest batch size or more)")
    parser.add_argument("--naive-designs", type=int, help="pairings per naive configuration")
    parser.add_argument("--repeats", type=int, help="timed repeats per configuration (the best is kept)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for every configuration (default: torch's)")
    parser.add_argument("--weights", default="random", help="random (default), auto, or a path to vgg19-dcbb9e9d.pth")
    parser.add_argument("--compile", action="store_true", help="add engine-compile-bN (torch.compile of the feature extractor)")
    parser.add_argument("--json", default=None, help=f"where to write the results (default {DEFAULT_JSON}; with --plan: none)")
    parser.add_argument("--markdown", default=str(DEFAULT_MARKDOWN), help="the benchmarks page rows are appended to")
    parser.add_argument("--no-markdown", action="store_true", help="append no rows")
    parser.add_argument("--scales-size", type=int, help="--scales: output size (default: 64 on a CPU, 1024 on a GPU)")
    parser.add_argument("--scales-steps", type=int, help="--scales: single-scale steps (default: 40 on a CPU, 300 on a GPU)")
    parser.add_argument("--scales-designs", type=int, help="--scales: pairings in the batch (default: 2 on a CPU, 4 on a GPU)")
    parser.add_argument("--sizes", help="--max-size: sizes to try, comma-separated "
                                        "(default: 128,256,384,512 on a CPU; 1024,2048,...,8192 on a GPU)")
    parser.add_argument("--size-steps", type=int, default=3, help="--max-size: steps per size")
    parser.add_argument("--memory-gib", type=float, help="--max-size: the memory budget the largest size is fitted to "
                                                         "(default: the GPU's; on a CPU: none, or give one)")
    parser.add_argument("--pipeline-contents", type=int, help="--pipeline: content photos (default: 8 on a CPU, 16 on a GPU)")
    parser.add_argument("--pipeline-styles", type=int, default=8, help="--pipeline: style images")
    parser.add_argument("--plan-contents", type=int, default=1000)
    parser.add_argument("--plan-styles", type=int, default=1000)
    parser.add_argument("--plan-done", type=float, default=0.9, help="fraction of the pairings already in the design catalog")
    parser.add_argument("--plan-profile-side", type=int, default=100, help="contents = styles of the profiled catalog")
    parser.add_argument("--plan-shard-size", type=int, default=16)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.plan:
        result = run_plan_bench(args.plan_contents, args.plan_styles, args.plan_done, args.plan_profile_side, args.plan_shard_size)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return result
    if args.scales or args.max_size or args.pipeline:
        return _run_large_output_bench(args)
    result = run_bench(args)
    json_path = Path(args.json or DEFAULT_JSON)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_markdown:
        append_markdown(Path(args.markdown), result)
    print_table(result)
    print(f"results in {json_path}" + ("" if args.no_markdown else f"; rows appended to {args.markdown}"))
    ratio = result["engine_vs_naive_default"]
    print(RATIO_LINE.format(ratio if ratio is not None else float("nan")))
    return result


def _run_large_output_bench(args: argparse.Namespace) -> dict[str, Any]:
    from pipeline import bench_scales

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = resolve_weights(args.weights, 0, allow_download=args.weights != "random")
    if gpu:
        set_flags(DEFAULT_FLAGS[0], DEFAULT_FLAGS[1], True)  # the engine's own settings (cudnn.benchmark)
    if args.scales:
        result = bench_scales.run_scales_bench(device, weights, args.scales_size or (1024 if gpu else 64),
                                               args.scales_steps or (300 if gpu else 40), args.scales_designs or (4 if gpu else 2))
        title, header, rows = "Coarse-to-fine results", bench_scales.SCALES_TABLE, bench_scales.scales_rows(result)
    elif args.pipeline:
        from pipeline import bench_pipeline

        batch = int(args.batch_sizes.split(",")[0]) if args.batch_sizes else (16 if gpu else 4)
        result = bench_pipeline.run_pipeline_bench(
            device, weights, contents=args.pipeline_contents or (16 if gpu else 8), styles=args.pipeline_styles,
            content_size=(4000, 3000) if gpu else (2400, 1600), style_side=2000 if gpu else 1200,
            size=args.size or (512 if gpu else 96), steps=args.steps or (200 if gpu else 10), batch_size=batch,
            repeats=args.repeats or 2)
        title, header, rows = "Pipeline results", bench_pipeline.PIPELINE_TABLE, bench_pipeline.pipeline_rows(result)
    else:
        sizes = [int(v) for v in args.sizes.split(",")] if args.sizes else (
            [1024, 2048, 3072, 4096, 5120, 6144, 7168, 8192] if gpu else [128, 256, 384, 512])
        result = bench_scales.run_max_size_bench(device, weights, sizes, args.size_steps, args.memory_gib)
        title, header, rows = "Largest size results", bench_scales.MAX_SIZE_TABLE, bench_scales.max_size_rows(result)
    json_path = Path(args.json or f"bench-{'scales' if args.scales else 'pipeline' if args.pipeline else 'max-size'}.json")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_markdown:
        append_table_rows(Path(args.markdown), title, header, rows)
    print(f"results in {json_path}" + ("" if args.no_markdown else f"; rows appended to {args.markdown}"))
    return result


if __name__ == "__main__":
    main()
