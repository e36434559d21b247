"""What every benchmark shares: synthetic inputs, device names, peak memory,
and appending result rows to docs/BENCHMARKS.md."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.engine.transfer import Pairing

ROOT = Path(__file__).resolve().parents[1]


DEFAULT_MARKDOWN = ROOT / "docs" / "BENCHMARKS.md"


DEFAULT_JSON = "bench-results.json"


# PyTorch's own defaults, read before anything here changes them.
DEFAULT_FLAGS = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)


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


def fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def utc_now() -> str:
    """The date a bench row carries."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


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


MARKDOWN_HEADER = """# Benchmarks

`make bench` (`python -m benchmarks`) times, in one process, on one device and
the same seeded synthetic images, the naive loop of the public tutorials
(`naive-fp32`: TF32 off; `naive-default`: PyTorch's default precision settings;
one pairing at a time, targets recomputed per pairing) against the engine as
shipped at several batch sizes (`engine-bN`). Each configuration is warmed up,
then timed round-robin with the others, best of the repeats. Every run appends
one row per configuration below.

Columns: designs/h at the row's size and steps; steps/s: optimizer steps per
second (one step advances a whole batch); TFLOP/s: the useful FLOPs of the
optimization loop (`benchmarks/flops.py`: convolutions forward and backward to
the image, Gram matrices forward and backward) over the time; % peak: of the
device's dense bf16 peak (none for a CPU); peak memory: CUDA's
`max_memory_allocated`, or on a CPU the process's peak RSS so far (it only
grows along a run); x naive-fp32, x naive-default: designs/h over theirs.
"""
