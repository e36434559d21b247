"""Planning at catalog scale: `python -m benchmarks --plan` plans 1,000 contents
x 1,000 styles with 90% already in a real Delta design catalog (seconds, peak
allocations, a cProfile of plan_designs)."""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.common import peak_memory
from pipeline.config import Config


def run_plan_bench(
    contents: int,
    styles: int,
    done_fraction: float,
    profile_side: int,
    shard_size: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
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

    from pipeline.catalog.inputs import load_input_catalog
    from pipeline.planning.plan import cut_shards, plan_designs

    config = Config(weights="random")
    identity = "random:0"
    result: dict[str, Any] = {
        "contents": contents,
        "styles": styles,
        "pairings": contents * styles,
        "done_fraction": done_fraction,
    }

    def rss_mib() -> float:
        return peak_memory(torch.device("cpu"))[0] / 2**20

    def write_catalog(folder: Path, n_contents: int, n_styles: int) -> Path:
        rng = np.random.default_rng(0)
        rows = []
        for role, prefix, count in (("content", "c", n_contents), ("style", "s", n_styles)):
            for i in range(count):
                image_id = f"{prefix}{i:05d}"
                Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8), "RGB").save(
                    folder / f"{image_id}.png"
                )
                rows.append({"image_id": image_id, "role": role, "uri": f"{image_id}.png"})
        path = folder / "catalog.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path

    def write_design_catalog(out: Path, ok_ids: list[str]):
        from deltalake import write_deltalake

        from pipeline.catalog.designs import DesignCatalog
        from pipeline.catalog.schema import SCHEMA

        design_catalog = DesignCatalog(out)
        table = design_catalog.ensure_table()
        n = len(ok_ids)
        columns = {
            "design_id": ok_ids,
            "status": ["ok"] * n,
            "run_id": ["bench"] * n,
            "style_id": ["s"] * n,
            "created_at": pa.array([datetime.datetime.now(datetime.UTC)] * n, pa.timestamp("us", tz="UTC")),
        }
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
        done = {
            design_id
            for i, design_id in enumerate(ids)
            if math.floor((i + 1) * done_fraction) > math.floor(i * done_fraction)
        }
        log(
            f"plan_designs, nothing done: {result['plan_fresh_seconds']:.1f} s, {len(fresh.todo)} to do; peak RSS {result['rss_after_fresh_plan_mib']:,.0f} MiB"
        )
        del fresh, ids

        # The done designs as a design catalog holds them: ok rows of a Delta table, read back
        # as the flow's plan task reads them.
        t0 = time.perf_counter()
        design_catalog = write_design_catalog(folder / "out", sorted(done))
        log(f"wrote a design catalog of {len(done)} ok rows in {time.perf_counter() - t0:.1f} s")
        del done
        t0 = time.perf_counter()
        done = design_catalog.done_ids()
        result["read_done_seconds"] = time.perf_counter() - t0
        result["done_ids_bytes"] = done.nbytes
        log(
            f"DesignCatalog.done_ids: {result['read_done_seconds']:.2f} s, {len(done)} ids in {done.nbytes / 2**20:.1f} MiB"
        )

        t0 = time.perf_counter()
        plan = plan_designs(catalog, config, identity, done)
        result["plan_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        shards = cut_shards(plan.todo, shard_size)
        result["shard_seconds"] = time.perf_counter() - t0
        result.update(
            todo=len(plan.todo),
            already_done=plan.already_done,
            shards=len(shards),
            shard_size=shard_size,
            peak_rss_mib=rss_mib(),
        )
        log(
            f"plan_designs, {len(done)} done: {result['plan_seconds']:.1f} s, {len(plan.todo)} to do, {plan.already_done} already done; "
            f"cut_shards({shard_size}): {result['shard_seconds']:.3f} s, {len(shards)} shards; peak RSS {result['peak_rss_mib']:,.0f} MiB"
        )
        del plan, shards

        # The process's RSS peak is the first plan's (1M jobs to learn the ids); what planning
        # itself holds is measured again, untimed, by the allocations it makes.
        tracemalloc.start()
        plan = plan_designs(catalog, config, identity, done)
        shards = cut_shards(plan.todo, shard_size)
        result["plan_peak_allocated_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        log(
            f"plan_designs + cut_shards with {len(done)} done: peak of its own allocations {result['plan_peak_allocated_mib']:,.0f} MiB "
            f"(tracemalloc; the done ids are the caller's)"
        )
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
