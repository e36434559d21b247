"""Two measurements of large outputs, run through `python -m benchmarks`:

    python -m benchmarks --scales     # make bench-scales: coarse-to-fine against one scale
    python -m benchmarks --max-size   # make bench-max-size: the largest size that fits

--scales optimizes the same pairings twice with the engine as shipped: once at
`size` alone for `steps` steps, once coarse-to-fine (size/4, size/2, size;
`steps`, `steps`/2, then up to `steps` at full size). The loss is read after
every step; the figure is the wall time until every design's loss at full size
is at or under what the single-scale run ended at. The same run also gives
where the default schedule (each scale half the steps of the one before) ends.

--max-size runs a few steps of one design at growing sizes and records each
size's peak memory (CUDA: max_memory_allocated after a reset; CPU: the peak RSS
of a process of its own per size, above its RSS before the run) until one runs
out of memory or the list ends. It fits bytes = a + b * pixels through the points and
gives the largest square size that fits a memory budget (the device's, or
--memory-gib).

Imports only torch, numpy, Pillow and the pipeline's engine modules, as benchmarks.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import device_label, fmt, make_pairings, peak_memory, sync, utc_now
from pipeline.config import Config
from pipeline.engine.transfer import Progress, StyleTransfer
from pipeline.engine.weights import WeightsSource


def _timed_run(
    engine: StyleTransfer, pairings, config: Config, device: torch.device
) -> tuple[float, list[tuple[int, float, tuple[float, ...]]]]:
    """Run once; (seconds, [(step, seconds since start, loss per design)]) with the loss read every step."""
    marks: list[tuple[int, float, tuple[float, ...]]] = []
    engine.clear_cache()  # targets computed inside the timed run, as for a fresh catalog
    sync(device)
    start = time.perf_counter()

    def on_progress(progress: Progress) -> None:
        marks.append((progress.step, time.perf_counter() - start, progress.loss_total))

    engine.run(pairings, on_progress=on_progress, config=config)
    sync(device)
    return time.perf_counter() - start, marks


def coarse_to_fine(
    engine: StyleTransfer, device: torch.device, size: int, steps: int, designs: int, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Time for coarse-to-fine to reach the single-scale run's final loss (see the module's docstring)."""
    base = engine.config.replace(size=size, steps=steps, loss_every=1, scales=(), scale_steps=())
    scales = (size // 4, size // 2, size)
    ladder = (steps, max(1, steps // 2), steps)
    c2f = base.replace(scales=scales, scale_steps=ladder)
    pairings = make_pairings(designs, size)
    for cfg in (base, c2f):  # warm-up: every shape once (cudnn.benchmark's trials are not timed)
        engine.run(pairings, config=cfg.replace(steps=2, scale_steps=(1, 1, 1) if cfg.scales else ()))
    single_seconds, single_marks = _timed_run(engine, pairings, base, device)
    c2f_seconds, c2f_marks = _timed_run(engine, pairings, c2f, device)

    target = single_marks[-1][2]  # each design's loss at the single-scale run's last step
    fine_start = ladder[0] + ladder[1]
    fine = [m for m in c2f_marks if m[0] >= fine_start]
    reached = next((m for m in fine if all(loss <= t for loss, t in zip(m[2], target))), None)
    # The default schedule halves the steps at each scale: steps, steps/2, steps/4.
    default_fine_steps = max(1, steps // 4)
    default_end = fine[min(default_fine_steps, len(fine)) - 1]
    result = {
        "size": size,
        "steps": steps,
        "designs": designs,
        "scales": list(scales),
        "scale_steps": list(ladder),
        "single_seconds": single_seconds,
        "single_final_loss": list(target),
        "coarse_to_fine_seconds": c2f_seconds,
        "reached": reached is not None,
        "reached_after_fine_steps": reached[0] - fine_start if reached else None,  # full-size updates before that loss
        "seconds_to_single_loss": reached[1] if reached else None,
        "speedup": single_marks[-1][1] / reached[1] if reached else None,
        "default_schedule_steps": [steps, max(1, steps // 2), default_fine_steps],
        "default_schedule_seconds": default_end[1],
        "default_schedule_loss_ratio": max(loss / t for loss, t in zip(default_end[2], target)),
        "coarse_to_fine_final_loss_ratio": max(loss / t for loss, t in zip(fine[-1][2], target)),
    }
    if reached:
        log(
            f"coarse-to-fine {scales} reached the single-scale loss after {result['reached_after_fine_steps']} of {steps} "
            f"full-size steps: {reached[1]:.2f} s against {single_marks[-1][1]:.2f} s (x{result['speedup']:.2f})"
        )
    else:
        log(
            f"coarse-to-fine {scales} did not reach the single-scale loss in {steps} full-size steps "
            f"(it ended at {result['coarse_to_fine_final_loss_ratio']:.3f} x that loss)"
        )
    log(
        f"default schedule {result['default_schedule_steps']}: {default_end[1]:.2f} s, loss {result['default_schedule_loss_ratio']:.3f} "
        f"x the single-scale run's ({single_seconds:.2f} s)"
    )
    return result


def one_size_peak(engine: StyleTransfer, device: torch.device, size: int, steps: int) -> tuple[int, float]:
    """(peak bytes above what was held before, seconds) of one design at `size`."""
    config = engine.config.replace(size=size, steps=steps, loss_every=steps, scales=(), scale_steps=())
    pairings = make_pairings(1, size)
    engine.clear_cache()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _reset_cpu_peak()
    start = time.perf_counter()
    engine.run(pairings, config=config)
    sync(device)
    seconds = time.perf_counter() - start
    after = peak_memory(device)[0] if device.type == "cuda" else _cpu_peak()
    return after - before, seconds


_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> int:
    """Hand freed memory back to the system and restart the peak-RSS count
    (Linux: /proc/self/clear_refs), so the next peak is the run's own; returns
    the resident bytes now. Elsewhere: the peak so far (the run's growth above it)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        now = _status_kib("VmRSS")
        if now is not None:
            return now * 1024
    except OSError:
        pass
    return peak_memory(torch.device("cpu"))[0]


def _cpu_peak() -> int:
    peak = _status_kib("VmHWM")
    return peak * 1024 if peak is not None else peak_memory(torch.device("cpu"))[0]


def _one_size_in_a_new_process(weights: WeightsSource, size: int, steps: int) -> tuple[int, float] | None:
    """On a CPU the peak RSS only grows and freed memory is kept for reuse, so
    each size is measured in a process of its own; None when it ran out of memory."""
    code = (
        "import json, sys, torch; from benchmarks import scales as b; "
        "print(json.dumps(b._child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))"
    )
    spec = "random" if weights.path is None else str(weights.path)
    done = subprocess.run(
        [sys.executable, "-c", code, spec, str(size), str(steps)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    if done.returncode != 0:
        if "out of memory" in done.stderr.lower() or done.returncode in (-9, 137):
            return None
        raise RuntimeError(f"measuring {size} px failed (exit {done.returncode}): {done.stderr[-2000:]}")
    peak, seconds = json.loads(done.stdout.strip().splitlines()[-1])
    return peak, seconds


def _child(weights_spec: str, size: int, steps: int) -> tuple[int, float]:
    from pipeline.engine.weights import resolve_weights

    device = torch.device("cpu")
    engine = StyleTransfer(Config(), resolve_weights(weights_spec, 0, allow_download=False), device)
    return one_size_peak(engine, device, size, steps)


def max_size(
    engine: StyleTransfer,
    device: torch.device,
    sizes: Sequence[int],
    steps: int,
    budget_bytes: int | None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Peak memory of one design at each size until one runs out of memory; the fit and the largest size in budget."""
    points: list[dict[str, Any]] = []
    largest_run = None
    for size in sorted(sizes):
        if device.type == "cuda":
            try:
                measured = one_size_peak(engine, device, size, steps)
            except torch.OutOfMemoryError:
                measured = None
                engine.clear_cache()
                torch.cuda.empty_cache()
        else:
            measured = _one_size_in_a_new_process(engine.weights, size, steps)
        if measured is None:
            log(f"{size} px: out of memory")
            points.append({"size": size, "out_of_memory": True})
            break
        used, seconds = measured
        points.append({"size": size, "out_of_memory": False, "peak_bytes": used, "seconds": seconds})
        largest_run = size
        log(f"{size} px: {used / 2**30:.2f} GiB, {steps} steps in {seconds:.1f} s")
    fit = _fit([(p["size"] ** 2, p["peak_bytes"]) for p in points if not p["out_of_memory"]])
    largest_in_budget = None
    if fit and budget_bytes and fit[1] > 0:
        largest_in_budget = int(math.sqrt(max(0.0, budget_bytes - fit[0]) / fit[1]))
    return {
        "points": points,
        "largest_run": largest_run,
        "fit": {"bytes_intercept": fit[0], "bytes_per_pixel": fit[1]} if fit else None,
        "budget_bytes": budget_bytes,
        "largest_in_budget": largest_in_budget,
    }


def _fit(xy: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares y = a + b x; None under two points."""
    if len(xy) < 2:
        return None
    n = len(xy)
    mx = sum(x for x, _ in xy) / n
    my = sum(y for _, y in xy) / n
    sxx = sum((x - mx) ** 2 for x, _ in xy)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in xy) / sxx
    return my - b * mx, b


def device_memory_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return None


def run_scales_bench(
    device: torch.device,
    weights: WeightsSource,
    size: int,
    steps: int,
    designs: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    engine = StyleTransfer(Config(), weights, device)
    name = device_label(device)
    log(f"coarse-to-fine on {name}, torch {torch.__version__}: {designs} designs at {size} px, {steps} steps")
    result = coarse_to_fine(engine, device, size, steps, designs, log)
    result.update(
        bench="coarse-to-fine",
        date=utc_now(),
        device=str(device),
        device_name=name,
        torch=torch.__version__,
        precision=engine.precision,
        weights=weights.identity,
    )
    return result


def run_max_size_bench(
    device: torch.device,
    weights: WeightsSource,
    sizes: Sequence[int],
    steps: int,
    budget_gib: float | None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    engine = StyleTransfer(Config(), weights, device)
    name = device_label(device)
    budget = int(budget_gib * 2**30) if budget_gib else device_memory_bytes(device)
    log(
        f"largest size on {name}, torch {torch.__version__}, {engine.precision}: sizes {list(sizes)}, {steps} steps, one design"
    )
    result = max_size(engine, device, sizes, steps, budget, log)
    result.update(
        bench="max-size",
        date=utc_now(),
        device=str(device),
        device_name=name,
        torch=torch.__version__,
        precision=engine.precision,
        weights=weights.identity,
        steps=steps,
        memory_measure=peak_memory(device)[1]
        if device.type == "cuda"
        else "peak RSS above the start, a process per size",
    )
    if result["largest_in_budget"]:
        log(
            f"fit: {result['fit']['bytes_per_pixel']:.0f} bytes per pixel + {result['fit']['bytes_intercept'] / 2**20:.0f} MiB; "
            f"largest square size in {budget / 2**30:.0f} GiB: about {result['largest_in_budget']} px"
        )
    return result


# --- rows for docs/BENCHMARKS.md ---

SCALES_TABLE = (
    "| date | device | torch | precision | size | scales | designs | single-scale s | coarse-to-fine s to that loss "
    "| full-size steps to it | speedup | default schedule s | its loss / single's |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
MAX_SIZE_TABLE = (
    "| date | device | torch | precision | memory measure | size px | peak GiB | steps s | bytes/pixel (fit) "
    "| largest size in budget (fit) |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def scales_rows(r: dict[str, Any]) -> str:
    cells = [
        r["date"][:10],
        r["device_name"],
        r["torch"],
        r["precision"],
        str(r["size"]),
        ",".join(map(str, r["scales"])),
        str(r["designs"]),
        f"{r['single_seconds']:.2f} ({r['steps']} steps)",
        fmt(r["seconds_to_single_loss"], ".2f", "not reached"),
        fmt(r["reached_after_fine_steps"], "d", f"> {r['steps']}"),
        fmt(r["speedup"], ".2f"),
        f"{r['default_schedule_seconds']:.2f} ({','.join(map(str, r['default_schedule_steps']))} steps)",
        f"{r['default_schedule_loss_ratio']:.3f}",
    ]
    return "| " + " | ".join(cells) + " |\n"


def max_size_rows(r: dict[str, Any]) -> str:
    lines = []
    fit = r["fit"]
    for p in r["points"]:
        fitted = [
            f"{fit['bytes_per_pixel']:.0f}" if fit else "-",
            f"{r['largest_in_budget']} px in {r['budget_bytes'] / 2**30:.0f} GiB" if r["largest_in_budget"] else "-",
        ]
        head = [r["date"][:10], r["device_name"], r["torch"], r["precision"], r["memory_measure"], str(p["size"])]
        if p["out_of_memory"]:
            lines.append("| " + " | ".join([*head, "out of memory", "-", *fitted]) + " |")
        else:
            lines.append(
                "| " + " | ".join([*head, f"{p['peak_bytes'] / 2**30:.2f}", f"{p['seconds']:.1f}", *fitted]) + " |"
            )
    return "\n".join(lines) + "\n"
