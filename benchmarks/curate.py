"""`make bench-curate`: the near-duplicate grouping of `designs curate` (pipeline/execution/grouping.py)
at 10k, 100k and 1M designs: time, peak RSS, and the precision and recall of the groups it finds
against groups planted in synthetic embeddings.

Each size runs in a process of its own (`python -m benchmarks.curate --designs N --json`), so its
peak RSS is its own; no torch is imported there. The embeddings are 256-dim float16 as
`OUT/embeddings` holds them: seeded style centres, near-duplicate groups planted around
group centres at three thresholds' distance from each other in the same style (designs a
person would call different), their members a third of a threshold from one another
(the same design at style weight 100 and 101, another seed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.execution import grouping  # noqa: E402
from pipeline.execution.grouping import METHODS, components, group  # noqa: E402

# The alternatives measured against the product's methods (docs/SCALING.md, "Curation"): faiss'
# IVF range search, and usearch's HNSW graph (not a dependency: `pip install usearch` to run it).
MEASURED = ("ivf", "hnsw")

SIZES = (10_000, 100_000, 1_000_000)
DIM = 256
THRESHOLD = 0.05  # the bench's own: the data are planted relative to it
# Between group centres of one style (cosine distance), and members' distance from each other,
# as multiples of the threshold.
GROUP_DISTANCE = 3.0
MEMBER_DISTANCE = 0.35
DESIGNS_PER_STYLE = 2_000
# Planted group sizes: 40% singletons, the rest a parameter grid or seeds (2 to 40), a few large.
SIZE_CHOICES = np.array([1, 2, 3, 4, 6, 8, 12, 20, 40, 200])
SIZE_WEIGHTS = np.array([0.40, 0.15, 0.10, 0.10, 0.08, 0.07, 0.05, 0.03, 0.015, 0.005])


def _spread(distance: float) -> float:
    """Per-dimension noise whose draws around one unit centre are `distance` apart from each other
    in cosine distance: two draws of norm rho have 1 - cos = rho^2 / (1 + rho^2) on average."""
    rho2 = distance / (1 - distance)
    return float(np.sqrt(rho2 / DIM))


def planted(n: int, seed: int = 0, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """n float16 embeddings and their planted group (an int per row), rows shuffled."""
    rng = np.random.default_rng(seed)
    drawn = rng.choice(SIZE_CHOICES, size=n, p=SIZE_WEIGHTS / SIZE_WEIGHTS.sum())
    ends = np.cumsum(drawn)
    groups = int(np.searchsorted(ends, n)) + 1  # the last group cut to fit
    sizes = drawn[:groups].copy()
    sizes[-1] -= int(ends[groups - 1]) - n
    groups = len(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    styles = max(1, n // DESIGNS_PER_STYLE)
    style_of_group = rng.integers(0, styles, groups)
    style_centres = rng.standard_normal((styles, DIM)).astype(np.float32)
    style_centres /= np.linalg.norm(style_centres, axis=1, keepdims=True)
    # Group centres: a style centre moved so that two groups of one style are GROUP_DISTANCE
    # thresholds apart; a group's members MEMBER_DISTANCE thresholds from each other.
    group_sigma = _spread(GROUP_DISTANCE * threshold)
    member_sigma = _spread(MEMBER_DISTANCE * threshold)
    # Rows land at shuffled places (design ids are hashes: a group's members are scattered).
    places = rng.permutation(n)
    out = np.empty((n, DIM), dtype=np.float16)
    truth = np.empty(n, dtype=np.int64)
    step = 20_000
    for g0 in range(0, groups, step):
        g1 = min(groups, g0 + step)
        centres = style_centres[style_of_group[g0:g1]]
        centres = centres + group_sigma * rng.standard_normal(centres.shape).astype(np.float32)
        counts = np.asarray(sizes[g0:g1])
        vectors = np.repeat(centres, counts, axis=0)
        vectors += member_sigma * rng.standard_normal(vectors.shape).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        at = places[offsets[g0] : offsets[g1]]
        out[at] = vectors
        truth[at] = np.repeat(np.arange(g0, g1), counts)
    return out, truth


def ivf_pairs(
    x: np.ndarray, min_sim: float, seed: int, stats: grouping.GroupingStats, nprobe: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """faiss IndexIVFFlat (inner product on unit vectors): a range search of every row."""
    import faiss

    grouping._threads()
    n, d = x.shape
    clusters = grouping.cluster_count(n)
    t0 = time.perf_counter()
    centroids = grouping.kmeans_centroids(x, clusters, seed)
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, d, clusters, faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True
    step = 65_536
    for start in range(0, n, step):
        index.add(grouping.normalized(x[start : start + step]))
    index.nprobe = min(nprobe, clusters)
    t1 = time.perf_counter()
    found_a, found_b = [], []
    for start in range(0, n, step):
        lims, _, ids = index.range_search(grouping.normalized(x[start : start + step]), min_sim)
        rows = np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64)) + start
        keep = rows < ids
        found_a.append(rows[keep])
        found_b.append(ids[keep])
    t2 = time.perf_counter()
    stats.clusters = clusters
    stats.seconds.update(index=t1 - t0, pairs=t2 - t1)
    return grouping._joined(found_a, found_b)


def hnsw_pairs(
    x: np.ndarray, min_sim: float, seed: int, stats: grouping.GroupingStats, neighbours: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """usearch's HNSW graph (cosine, float16): each row's nearest neighbours within the threshold."""
    from usearch.index import Index

    n, d = x.shape
    t0 = time.perf_counter()
    index = Index(ndim=d, metric="cos", dtype="f16", connectivity=16, expansion_add=64, expansion_search=64)
    index.add(np.arange(n), np.asarray(x, dtype=np.float16), threads=len(grouping._cpus()))
    t1 = time.perf_counter()
    matches = index.search(np.asarray(x, dtype=np.float16), min(neighbours + 1, n), threads=len(grouping._cpus()))
    keys = np.asarray(matches.keys, dtype=np.int64)
    dist = np.asarray(matches.distances, dtype=np.float32)
    rows = np.repeat(np.arange(n), keys.shape[1]).reshape(keys.shape)
    keep = (dist <= 1 - min_sim) & (keys >= 0) & (rows < keys)
    t2 = time.perf_counter()
    stats.seconds.update(index=t1 - t0, pairs=t2 - t1)
    return rows[keep], keys[keep]


def group_measured(vectors: np.ndarray, threshold: float, method: str, seed: int) -> tuple[np.ndarray, Any]:
    """pipeline/execution/grouping.py's `group` by one of the measured alternatives."""
    stats = grouping.GroupingStats(method, len(vectors))
    started = time.perf_counter()
    finder = ivf_pairs if method == "ivf" else hnsw_pairs
    a, b = finder(vectors, float(1 - threshold), seed, stats)
    stats.pairs = int(a.size)
    labels = components(len(vectors), a, b)
    stats.seconds["total"] = time.perf_counter() - started
    return labels, stats


def pair_scores(found: np.ndarray, truth: np.ndarray) -> tuple[float, float, int, int]:
    """Precision and recall over pairs: of the pairs the grouping puts together, the share that
    were planted together, and of the planted pairs, the share found; and both pair counts."""

    def pairs(counts: np.ndarray) -> int:
        counts = counts.astype(np.int64)
        return int((counts * (counts - 1) // 2).sum())

    _, found_counts = np.unique(found, return_counts=True)
    _, truth_counts = np.unique(truth, return_counts=True)
    _, both_counts = np.unique(found.astype(np.int64) * (int(truth.max()) + 1) + truth, return_counts=True)
    found_pairs, truth_pairs, true_pairs = pairs(found_counts), pairs(truth_counts), pairs(both_counts)
    precision = true_pairs / found_pairs if found_pairs else 1.0
    recall = true_pairs / truth_pairs if truth_pairs else 1.0
    return precision, recall, found_pairs, truth_pairs


def cpu_seconds() -> float:
    """This process's CPU time, every thread's (faiss' and BLAS' too): what the grouping costs
    whatever else the machine runs, where wall time depends on it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(designs: int, method: str = "auto", seed: int = 0, threshold: float = THRESHOLD) -> dict[str, Any]:
    """One size in this process: make the embeddings, group them, score the groups."""
    t0 = time.perf_counter()
    vectors, truth = planted(designs, seed, threshold)
    made_s = time.perf_counter() - t0
    rss_before = peak_rss()
    t1 = time.perf_counter()
    cpu0 = cpu_seconds()
    if method in MEASURED:
        labels, stats = group_measured(vectors, threshold, method, seed)
    else:
        labels, stats = group(vectors, threshold, method=method, seed=seed)
    group_s = time.perf_counter() - t1
    group_cpu_s = cpu_seconds() - cpu0
    precision, recall, found_pairs, truth_pairs = pair_scores(labels, truth)
    return {
        "designs": designs,
        "method": stats.method,
        "clusters": stats.clusters,
        "threshold": threshold,
        "seconds": round(group_s, 2),
        "cpu_seconds": round(group_cpu_s, 2),
        "steps": {k: round(v, 2) for k, v in stats.seconds.items()},
        "peak_rss_bytes": peak_rss(),
        "rss_after_data_bytes": rss_before,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "groups_found": int(np.unique(labels).size),
        "groups_planted": int(np.unique(truth).size),
        "pairs_found": found_pairs,
        "pairs_planted": truth_pairs,
        "data_seconds": round(made_s, 2),
    }


def run_sizes(sizes: Sequence[int], method: str = "auto", seed: int = 0) -> list[dict[str, Any]]:
    """Each size in its own process (its own peak RSS); their results, with the machine's load
    average (1 minute) before and after: other work on the machine shows there."""
    results = []
    for designs in sizes:
        command = [sys.executable, "-m", "benchmarks.curate", "--designs", str(designs), "--method", method]
        command += ["--seed", str(seed), "--json"]
        load_before = os.getloadavg()[0]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"bench-curate at {designs} designs failed: {done.stderr.strip()[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["load_before"], result["load_after"] = round(load_before, 1), round(os.getloadavg()[0], 1)
        results.append(result)
        print(line(result), flush=True)
    return results


def cpu_label() -> str:
    model = ""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or 'cpu'}, {len(os.sched_getaffinity(0))} cores"


CURATE_TABLE = """| date | cpu | designs | method | clusters | seconds | CPU seconds | peak RSS | precision | recall | load (1 min) before, after |
| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
"""


def curate_rows(results: Sequence[dict[str, Any]], date: str, cpu: str) -> str:
    return "".join(
        f"| {date} | {cpu} | {r['designs']:,} | {r['method']} | {r['clusters']:,} | {r['seconds']:.1f} | "
        f"{r['cpu_seconds']:.1f} | {r['peak_rss_bytes'] / 2**30:.2f} GiB | {r['precision']:.4f} | {r['recall']:.4f} | "
        f"{r.get('load_before', '-')}, {r.get('load_after', '-')} |\n"
        for r in results
    )


def run_curate_bench(
    sizes: Sequence[int] = SIZES,
    method: str = "auto",
    markdown: Path | None = None,
    json_path: Path | None = None,
) -> list[dict[str, Any]]:
    """`make bench-curate`: every size, rows appended to `markdown` (docs/BENCHMARKS.md)."""
    import datetime

    results = run_sizes(sizes, method)
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    if markdown is not None:
        from benchmarks.common import append_table_rows

        date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        append_table_rows(markdown, "Curation results", CURATE_TABLE, curate_rows(results, date, cpu_label()))
    return results


def line(result: dict[str, Any]) -> str:
    return (
        f"{result['designs']:>10,} designs  {result['method']:<6} {result['seconds']:>8.1f} s "
        f"({result['cpu_seconds']:.1f} s CPU)  "
        f"peak RSS {result['peak_rss_bytes'] / 2**30:5.2f} GiB  precision {result['precision']:.4f}  "
        f"recall {result['recall']:.4f}  steps {result['steps']}"
    )


def build_end_to_end(out: Path, designs: int, seed: int = 0) -> dict[str, Any]:
    """A design catalog of `designs` ok designs (benchmarks/catalog.py's rows of the real schema,
    with quality measures) and their embeddings (the planted groups), as `designs curate` finds
    a night's catalog: every embedding present. Returns the planted group of each design id."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from benchmarks.catalog import _hex_ids, synthetic_rows
    from pipeline.catalog.designs import DesignCatalog
    from pipeline.catalog.embeddings import EMBEDDING_METHOD, write_embeddings

    rng = np.random.default_rng(seed)
    ids = np.sort(_hex_ids(rng, designs))
    vectors, truth = planted(designs, seed)
    catalog = DesignCatalog(out)
    table = catalog.ensure_table()
    t0 = time.perf_counter()
    step = 250_000
    for start in range(0, designs, step):
        batch = synthetic_rows(ids[start : start + step], rng, "bench-curate", failed_every=10**12)
        n = batch.num_rows
        quality = pa.StructArray.from_arrays(
            [
                pa.array(rng.uniform(0.05, 0.9, n)),
                pa.array(rng.uniform(0.3, 0.95, n)),
                pa.nulls(n, pa.list_(pa.float64())),
            ],
            names=["style_ratio", "content_kept", "style_ratio_per_layer"],
        )
        batch = batch.set_column(
            batch.schema.get_field_index("quality"), "quality", quality.cast(batch.schema.field("quality").type)
        )
        write_deltalake(table, batch, mode="append", target_file_size=8 * 2**20)
        table = catalog.table()
    designs_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    names = ids.astype(str)
    for start in range(0, designs, step):
        write_embeddings(out, names[start : start + step], vectors[start : start + step], EMBEDDING_METHOD, "vgg19")
    embeddings_s = time.perf_counter() - t0
    np.save(out / "planted.npy", truth)
    return {"designs_s": round(designs_s, 1), "embeddings_s": round(embeddings_s, 1)}


def end_to_end(out: Path, designs: int) -> dict[str, Any]:
    """`designs curate OUT` in a process of its own on the catalog build_end_to_end made (kept in
    OUT and reused): its wall time, CPU time and peak RSS, and its groups against the planted ones."""
    built: dict[str, Any] = {}
    if not (out / "planted.npy").is_file():
        built = build_end_to_end(out, designs)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "curate", str(out), "--threshold", str(THRESHOLD)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"designs curate failed: {done.stderr.strip()[-2000:]}")
    from deltalake import DeltaTable

    from pipeline.catalog.curation import curation_path

    rows = DeltaTable(str(curation_path(out))).to_pyarrow_table(columns=["design_id", "group_id"]).sort_by("design_id")
    _, labels = np.unique(np.asarray(rows.column("group_id").to_pylist()), return_inverse=True)
    precision, recall, _, _ = pair_scores(labels, np.load(out / "planted.npy"))
    return {
        "designs": designs,
        "seconds": round(wall, 1),
        "cpu_seconds": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1),
        "peak_rss_bytes": after.ru_maxrss * 1024,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "summary": done.stdout.strip().splitlines(),
        **built,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.curate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--designs", type=int, default=None, help="one size, in this process")
    parser.add_argument("--method", default="auto", choices=METHODS + MEASURED)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument(
        "--end-to-end",
        metavar="OUT",
        help="with --designs: `designs curate OUT` itself on a synthetic catalog of that many designs with their "
        "embeddings, built in OUT the first time (reused after)",
    )
    args = parser.parse_args(argv)
    if args.end_to_end is not None:
        result = end_to_end(Path(args.end_to_end), args.designs or SIZES[-1])
        print(json.dumps(result, indent=2))
        return 0
    if args.designs is not None:
        result = measure(args.designs, args.method, args.seed)
        print(json.dumps(result) if args.json else line(result))
        return 0
    run_sizes(SIZES, args.method, args.seed)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    raise SystemExit(main())
