"""How busy the pipeline keeps the device: `python -m benchmarks --pipeline`
(make bench-pipeline).

Photo-sized synthetic JPEG inputs (catalog photos are megapixels, the designs
far smaller, so decoding them is real work) are planned once, then made twice
per repeat, round-robin, by pipeline.execution.shard.run_shard one shard after another
as one device of the flow does: with config.overlap on (decoding the next batch
and writing PNGs on threads) and off (one stage after the other). Target caches
are cleared before every run. Reported per mode: wall seconds, designs per
hour, and the device-busy fraction the run summary reports (targets and
optimization seconds over wall seconds). Catalog commits are left out: the flow
commits a shard while the device already runs the next one.

Needs pyarrow and deltalake besides torch, numpy and Pillow (the runner's imports).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.common import device_label, utc_now
from pipeline.config import Config
from pipeline.engine.weights import WeightsSource


def write_inputs(
    folder: Path, contents: int, styles: int, content_size: tuple[int, int], style_side: int, seed: int = 0
) -> Path:
    """Smooth seeded JPEGs (coarse noise scaled up) and their catalog parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    rows = []
    for role, count, size in (("content", contents, content_size), ("style", styles, (style_side, style_side))):
        for i in range(count):
            image_id = f"{role}-{i:03d}"
            coarse = rng.integers(0, 256, size=(max(2, size[1] // 32), max(2, size[0] // 32), 3), dtype=np.uint8)
            Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC).save(
                folder / f"{image_id}.jpg", quality=90
            )
            rows.append({"image_id": image_id, "role": role, "uri": f"{image_id}.jpg"})
    path = folder / "catalog.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run_pipeline_bench(
    device: torch.device,
    weights: WeightsSource,
    *,
    contents: int,
    styles: int,
    content_size: tuple[int, int],
    style_side: int,
    size: int,
    steps: int,
    batch_size: int,
    repeats: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    from pipeline.catalog.designs import DesignCatalog
    from pipeline.catalog.inputs import load_input_catalog
    from pipeline.execution.shard import engine_for, run_shard
    from pipeline.planning.plan import cut_shards, plan_designs

    config = Config(
        size=size, steps=steps, batch_size=batch_size, devices=str(device), scales=()
    )  # one scale: per-step load
    name = device_label(device)
    modes = {"overlap": config.replace(overlap="on"), "in-line": config.replace(overlap="off")}
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    busy: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        folder = Path(tmp)
        catalog = load_input_catalog(write_inputs(folder, contents, styles, content_size, style_side))
        plan = plan_designs(catalog, config, weights.design_identity, set())
        shards = cut_shards(plan.todo, 4 * batch_size)  # the flow's default: four batches a shard
        log(
            f"pipeline on {name}: {len(plan.todo)} designs at {size} px, {steps} steps, batch {batch_size}, from "
            f"{contents} {content_size[0]}x{content_size[1]} and {styles} {style_side}x{style_side} JPEGs; "
            f"{len(shards)} shards; best of {repeats}"
        )
        # Warm-up: the engine's weights on the device and every batch shape once.
        run_shard(
            list(plan.todo[:batch_size]),
            config.replace(steps=1),
            weights,
            str(device),
            DesignCatalog(folder / "warm"),
            "warm",
        )
        for r in range(repeats):
            for mode, cfg in modes.items():
                engine_for(cfg, weights, str(device)).clear_cache()
                out = DesignCatalog(folder / f"out-{mode}-{r}")
                start = time.perf_counter()
                rows = [
                    row for shard in shards for row in run_shard(shard, cfg, weights, str(device), out, f"{mode}-{r}")
                ]
                wall = time.perf_counter() - start
                failed = [row["error"] for row in rows if row["status"] != "ok"]
                if failed:
                    raise RuntimeError(f"pipeline bench: {len(failed)} design(s) failed, first: {failed[0]}")
                device_seconds = sum(row["timings"]["targets_s"] + row["timings"]["optimize_s"] for row in rows)
                seconds[mode].append(wall)
                busy[mode].append(device_seconds / wall)
                log(f"  repeat {r + 1}/{repeats} {mode}: {wall:.2f} s, device busy {device_seconds / wall:.1%}")
    designs = len(plan.todo)
    result: dict[str, Any] = {
        "bench": "pipeline",
        "date": utc_now(),
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "designs": designs,
        "size": size,
        "steps": steps,
        "batch_size": batch_size,
        "contents": contents,
        "content_size": list(content_size),
        "styles": styles,
        "style_side": style_side,
        "weights": weights.identity,
        "modes": {},
    }
    for mode in modes:
        best = min(range(repeats), key=lambda i: seconds[mode][i])
        result["modes"][mode] = {
            "seconds": seconds[mode][best],
            "seconds_all": seconds[mode],
            "busy_fraction": busy[mode][best],
            "busy_all": busy[mode],
            "designs_per_hour": designs / seconds[mode][best] * 3600,
        }
    result["overlap_vs_in_line"] = (
        result["modes"]["overlap"]["designs_per_hour"] / result["modes"]["in-line"]["designs_per_hour"]
    )
    log(
        f"overlap: {result['modes']['overlap']['busy_fraction']:.1%} busy, in-line: {result['modes']['in-line']['busy_fraction']:.1%} "
        f"busy; overlap/in-line throughput {result['overlap_vs_in_line']:.2f}"
    )
    return result


PIPELINE_TABLE = (
    "| date | device | torch | threads | designs | size | steps | batch | inputs | mode | wall s | designs/h "
    "| device busy | x in-line |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def pipeline_rows(r: dict[str, Any]) -> str:
    inputs = (
        f"{r['contents']} x {r['content_size'][0]}x{r['content_size'][1]} + {r['styles']} x "
        f"{r['style_side']}x{r['style_side']} JPEG"
    )
    base = r["modes"]["in-line"]["designs_per_hour"]
    lines = []
    for mode, m in r["modes"].items():
        lines.append(
            "| "
            + " | ".join(
                [
                    r["date"][:10],
                    r["device_name"],
                    r["torch"],
                    str(r["threads"]),
                    str(r["designs"]),
                    str(r["size"]),
                    str(r["steps"]),
                    str(r["batch_size"]),
                    inputs,
                    mode,
                    f"{m['seconds']:.2f}",
                    f"{m['designs_per_hour']:,.0f}",
                    f"{m['busy_fraction']:.1%}",
                    f"{m['designs_per_hour'] / base:.2f}",
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"
