"""`python -m benchmarks`: the engine against the naive loop (default), or
--plan, --catalog, --scales, --max-size, --pipeline, --quality, --curate; rows go to docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import DEFAULT_FLAGS, DEFAULT_JSON, DEFAULT_MARKDOWN, append_table_rows, set_flags
from benchmarks.engine import (
    CONV,
    FULL,
    RATIO_LINE,
    SHORT,
    append_markdown,
    bench_device,
    bench_modes,
    print_table,
    run_bench,
)
from benchmarks.planning import run_plan_bench
from pipeline.engine.weights import resolve_weights

CATALOG_SIZES = (10_000, 100_000, 1_000_000, 10_000_000)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--plan", action="store_true", help="the planning bench (1,000 x 1,000 pairings) instead")
    which.add_argument(
        "--catalog",
        action="store_true",
        help="the design catalog at 10k to 10M rows: commits, done-id read, maintenance, analysts' queries",
    )
    which.add_argument(
        "--scales", action="store_true", help="coarse-to-fine: time to reach the single-scale run's final loss"
    )
    which.add_argument(
        "--max-size", action="store_true", help="peak memory of one design by size, and the largest size that fits"
    )
    which.add_argument(
        "--pipeline",
        action="store_true",
        help="how busy run_shard keeps the device, overlap on against off (needs pyarrow and deltalake)",
    )
    which.add_argument(
        "--quality",
        action="store_true",
        help="speed at equal quality on the real VGG16 (--weights, default ../shared/weights'): the paper's loop, "
        "coarse-to-fine, L-BFGS and the shipped default, timed to the paper's 1000-step style loss",
    )
    which.add_argument(
        "--curate",
        action="store_true",
        help="designs curate's near-duplicate grouping at 10k, 100k and 1M designs (synthetic embeddings with "
        "planted groups): time, CPU time, peak RSS, precision and recall; each size in its own process",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when there is one)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--short",
        action="store_true",
        help=f"short sizes only ({SHORT.size} px, {SHORT.steps} steps); a CPU runs short, then --conv, by default",
    )
    mode.add_argument(
        "--conv",
        action="store_true",
        help=f"the convolution-dominated CPU size only ({CONV.size} px, {CONV.steps} steps, batch "
        f"{','.join(map(str, CONV.batch_sizes))}): naive-default, engine-fp32, the engine in the other memory layout (engine-cl or engine-contig) and as shipped",
    )
    mode.add_argument(
        "--full", action="store_true", help=f"full sizes ({FULL.size} px, {FULL.steps} steps) even on a CPU"
    )
    parser.add_argument("--size", type=int, help="image side in pixels")
    parser.add_argument("--steps", type=int, help="optimization steps per design")
    parser.add_argument("--batch-sizes", help="engine batch sizes, comma-separated")
    parser.add_argument(
        "--designs", type=int, help="pairings per engine configuration (default: the largest batch size or more)"
    )
    parser.add_argument("--naive-designs", type=int, help="pairings per naive configuration")
    parser.add_argument(
        "--curate-sizes",
        default="10000,100000,1000000",
        help="--curate: designs, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, help="timed repeats per configuration (the best is kept)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for every configuration (default: torch's)")
    parser.add_argument(
        "--weights",
        default=None,
        help="random (default; --quality: ../shared/weights/vgg16_weights_notop_keras_layout.h5), auto, or a path",
    )
    parser.add_argument(
        "--compile", action="store_true", help="add engine-compile-bN (torch.compile of the feature extractor)"
    )
    parser.add_argument("--compile-batch-sizes", help="--compile: its batch sizes (default: --batch-sizes)")
    parser.add_argument(
        "--json", default=None, help=f"where to write the results (default {DEFAULT_JSON}; with --plan: none)"
    )
    parser.add_argument("--markdown", default=str(DEFAULT_MARKDOWN), help="the benchmarks page rows are appended to")
    parser.add_argument("--no-markdown", action="store_true", help="append no rows")
    parser.add_argument("--scales-size", type=int, help="--scales: output size (default: 64 on a CPU, 1024 on a GPU)")
    parser.add_argument(
        "--scales-steps", type=int, help="--scales: single-scale steps (default: 40 on a CPU, 300 on a GPU)"
    )
    parser.add_argument(
        "--scales-designs", type=int, help="--scales: pairings in the batch (default: 2 on a CPU, 4 on a GPU)"
    )
    parser.add_argument(
        "--sizes",
        help="--max-size: sizes to try, comma-separated "
        "(default: 128,256,384,512 on a CPU; 1024,2048,...,8192 on a GPU)",
    )
    parser.add_argument("--size-steps", type=int, default=3, help="--max-size: steps per size")
    parser.add_argument(
        "--memory-gib",
        type=float,
        help="--max-size: the memory budget the largest size is fitted to "
        "(default: the GPU's; on a CPU: none, or give one)",
    )
    parser.add_argument(
        "--pipeline-contents", type=int, help="--pipeline: content photos (default: 8 on a CPU, 16 on a GPU)"
    )
    parser.add_argument("--pipeline-styles", type=int, default=8, help="--pipeline: style images")
    parser.add_argument(
        "--quality-reuse",
        metavar="JSON",
        help="--quality: take the paper loop's loss curve from an earlier bench-quality.json of the same "
        "configuration, weights, precision and inputs (loss against step is deterministic; timing is measured anew)",
    )
    parser.add_argument(
        "--quality-budget",
        type=float,
        default=1.0,
        help="--quality: stop a method that has not reached the target once it has cost this fraction of the "
        "paper loop's time to it (default 1: it can no longer beat the paper; 0.34: the 3x target)",
    )
    parser.add_argument("--plan-contents", type=int, default=1000)
    parser.add_argument("--plan-styles", type=int, default=1000)
    parser.add_argument(
        "--plan-done", type=float, default=0.9, help="fraction of the pairings already in the design catalog"
    )
    parser.add_argument("--plan-profile-side", type=int, default=100, help="contents = styles of the profiled catalog")
    parser.add_argument("--plan-shard-size", type=int, default=16)
    parser.add_argument(
        "--catalog-sizes",
        default=",".join(str(n) for n in CATALOG_SIZES),
        help="--catalog: table sizes in rows, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--catalog-night",
        type=int,
        default=1_000_000,
        help="--catalog: designs of one size in the night the timed shards come from (default: %(default)s)",
    )
    parser.add_argument(
        "--catalog-full-merge-up-to",
        type=int,
        default=1_000_000,
        help="--catalog: time the full-table merge baseline on tables up to this many rows (default: %(default)s)",
    )
    parser.add_argument(
        "--catalog-dir", help="--catalog: where the tables are built (default: the system's temporary folder)"
    )
    parser.add_argument(
        "--catalog-queries",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--catalog: time the analysts' worked queries at each size (default: on)",
    )
    parser.add_argument(
        "--catalog-keep",
        action="store_true",
        help="--catalog: keep the tables (in --catalog-dir) and reuse them next time: only the measurements rerun",
    )
    args = parser.parse_args(argv)
    if args.weights is None and not args.quality:  # --quality's default is the real file
        args.weights = "random"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.plan:
        result = run_plan_bench(
            args.plan_contents, args.plan_styles, args.plan_done, args.plan_profile_side, args.plan_shard_size
        )
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        return result
    if args.catalog:
        return _run_catalog_bench(args)
    if args.curate:
        return _run_curate_bench(args)
    if args.quality:
        return _run_quality_bench(args)
    if args.scales or args.max_size or args.pipeline:
        return _run_large_output_bench(args)
    modes = bench_modes(args, bench_device(args))
    results = []
    for mode in modes:
        result = run_bench(args, mode=mode)
        if not args.no_markdown:
            append_markdown(Path(args.markdown), result)
        print_table(result)
        results.append(result)
    # One size: its result; two (a CPU's default): both, the last (conv) one's ratio on top.
    out = results[0] if len(results) == 1 else {"runs": results, **_ratios(results[-1])}
    json_path = Path(args.json or DEFAULT_JSON)
    json_path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results in {json_path}" + ("" if args.no_markdown else f"; rows appended to {args.markdown}"))
    last = results[-1]
    ratio = last["engine_vs_naive_default"]
    if len(results) > 1:
        print(f"(at {last['size']} px, {last['steps']} steps: {last['best_engine']}, {last['engine_precision']})")
    print(RATIO_LINE.format(ratio if ratio is not None else float("nan")))
    return out


def _ratios(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("size", "steps", "best_engine", "engine_precision", "engine_vs_naive_default", "engine_vs_naive_fp32")
    return {k: result[k] for k in keys}


def _run_curate_bench(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import curate as bench_curate

    try:
        sizes = tuple(int(v.replace("_", "")) for v in args.curate_sizes.split(","))
    except ValueError:
        raise SystemExit(f"--curate-sizes {args.curate_sizes!r}: give design counts, comma-separated") from None
    json_path = Path(args.json or "bench-curate.json")
    markdown = None if args.no_markdown else Path(args.markdown)
    results = bench_curate.run_curate_bench(sizes, markdown=markdown, json_path=json_path)
    print(f"results in {json_path}" + ("" if args.no_markdown else f"; rows appended to {args.markdown}"))
    return {"sizes": results}


def _run_catalog_bench(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import catalog as bench_catalog

    try:
        sizes = tuple(int(v.replace("_", "")) for v in args.catalog_sizes.split(","))
    except ValueError:
        raise SystemExit(f"--catalog-sizes {args.catalog_sizes!r}: give row counts, comma-separated") from None
    smallest = bench_catalog.SHARD * (bench_catalog.TAIL_SHARDS + 1)
    if min(sizes) < smallest or args.catalog_night < bench_catalog.SHARD:
        raise SystemExit(
            f"--catalog-sizes needs {smallest:,} rows or more and --catalog-night {bench_catalog.SHARD} or more"
        )
    result = bench_catalog.run_catalog_bench(
        sizes,
        args.catalog_night,
        args.catalog_full_merge_up_to,
        args.catalog_dir,
        args.catalog_keep,
        queries=args.catalog_queries,
    )
    json_path = Path(args.json or "bench-catalog.json")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_markdown:
        markdown = Path(args.markdown)
        append_table_rows(markdown, "Catalog results", bench_catalog.CATALOG_TABLE, bench_catalog.catalog_rows(result))
        append_table_rows(
            markdown, "Analyst query results", bench_catalog.QUERY_TABLE, bench_catalog.query_rows(result)
        )
    print(f"results in {json_path}" + ("" if args.no_markdown else f"; rows appended to {args.markdown}"))
    return result


def _run_large_output_bench(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import scales as bench_scales

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = resolve_weights(args.weights, 0, allow_download=args.weights != "random")
    if gpu:
        set_flags(DEFAULT_FLAGS[0], DEFAULT_FLAGS[1], True)  # the engine's own settings (cudnn.benchmark)
    if args.scales:
        result = bench_scales.run_scales_bench(
            device,
            weights,
            args.scales_size or (1024 if gpu else 64),
            args.scales_steps or (300 if gpu else 40),
            args.scales_designs or (4 if gpu else 2),
        )
        title, header, rows = "Coarse-to-fine results", bench_scales.SCALES_TABLE, bench_scales.scales_rows(result)
    elif args.pipeline:
        from benchmarks import overlap as bench_pipeline

        batch = int(args.batch_sizes.split(",")[0]) if args.batch_sizes else (16 if gpu else 4)
        result = bench_pipeline.run_pipeline_bench(
            device,
            weights,
            contents=args.pipeline_contents or (16 if gpu else 8),
            styles=args.pipeline_styles,
            content_size=(4000, 3000) if gpu else (2400, 1600),
            style_side=2000 if gpu else 1200,
            size=args.size or (512 if gpu else 96),
            steps=args.steps or (200 if gpu else 10),
            batch_size=batch,
            repeats=args.repeats or 2,
        )
        title, header, rows = "Pipeline results", bench_pipeline.PIPELINE_TABLE, bench_pipeline.pipeline_rows(result)
    else:
        sizes = (
            [int(v) for v in args.sizes.split(",")]
            if args.sizes
            else ([1024, 2048, 3072, 4096, 5120, 6144, 7168, 8192] if gpu else [128, 256, 384, 512])
        )
        result = bench_scales.run_max_size_bench(device, weights, sizes, args.size_steps, args.memory_gib)
        title, header, rows = "Largest size results", bench_scales.MAX_SIZE_TABLE, bench_scales.max_size_rows(result)
    json_path = Path(
        args.json or f"bench-{'scales' if args.scales else 'pipeline' if args.pipeline else 'max-size'}.json"
    )
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_markdown:
        append_table_rows(Path(args.markdown), title, header, rows)
    print(f"results in {json_path}" + ("" if args.no_markdown else f"; rows appended to {args.markdown}"))
    return result


def _run_quality_bench(args: argparse.Namespace) -> dict[str, Any]:
    import sys

    from benchmarks import quality as bench_quality
    from pipeline.engine.weights import WeightsError

    spec = args.weights or str(bench_quality.REAL_WEIGHTS)
    if spec == "random":
        print("bench-quality needs real weights: random ones say nothing about quality", file=sys.stderr)
        raise SystemExit(2)
    try:
        weights = resolve_weights(spec, 0, allow_download=False)
    except WeightsError as err:
        print(
            f"bench-quality needs real weights ({bench_quality.REAL_WEIGHTS} or --weights PATH): {err}".splitlines()[0],
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    reuse = json.loads(Path(args.quality_reuse).read_text()) if args.quality_reuse else None
    result = bench_quality.run_quality_bench(
        device, weights, size=args.size or 256, paper_steps=args.steps or 1000, reuse=reuse, budget=args.quality_budget
    )
    json_path = Path(args.json or "bench-quality.json")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_markdown:
        append_table_rows(
            Path(args.markdown),
            "Speed at equal quality results",
            bench_quality.QUALITY_TABLE,
            bench_quality.quality_rows(result),
        )
    print(f"results in {json_path}" + ("" if args.no_markdown else f"; rows appended to {args.markdown}"))
    return result
