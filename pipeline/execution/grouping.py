"""Near-duplicate groups of design embeddings (`designs curate`): torch-free, numpy and faiss.

Two designs are near-duplicates when the cosine distance of their embeddings (1 - cos) is at
most the threshold; a group is a connected component of those pairs (union-find), so a chain
of near-duplicates is one group. How the pairs are found (docs/SCALING.md, "Curation"):

- `exact`: every pair, in blocks of rows against all (a matrix product a block): n^2 d work,
  the reference, and what small catalogs use.
- `kmeans`: SemDeDup's way (embed, k-means, pairwise inside each cluster), with each design
  also compared with the members of its second-nearest centroid, so a pair split by a
  cluster boundary is still found. faiss' k-means on a seeded sample; the work inside the
  clusters is matrix products of a cluster's rows (float32) against its members.
The alternatives measured against these (faiss' inverted-file range search, an HNSW graph) are
benchmarks/curate.py's.

Deterministic: the vectors come sorted by design id, the k-means sample and its seed are
fixed, ties fall to the lower index, and a group's label is its smallest member's index.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

METHODS = ("auto", "exact", "kmeans")
# Below this many designs `auto` compares every pair (exact); above, k-means clusters.
EXACT_LIMIT = 20_000
# Rows per block of a matrix product: a block of 1,024 rows against 20,000 is 80 MB of float32.
BLOCK_ROWS = 1024
BLOCK_VALUES = 2**25  # 128 MB of float32 similarities at most in one block
# k-means clusters: about sqrt(2n), where the two costs that grow with the catalog balance:
# assigning every design to its nearest centroids (n x clusters) and comparing the members of
# each cluster with one another and its guests (n x 2n / clusters); n^1.5 in all.
MAX_CLUSTERS = 65_536
# At most this many sampled points per centroid train the k-means (faiss' default is 256).
SAMPLE_PER_CENTROID = 128
# Centroids each design is compared through: its own cluster's, and the second-nearest's members
# (1: SemDeDup's plain k-means, which misses the pairs a cluster border cuts).
ASSIGNMENTS = 2
KMEANS_ITERATIONS = 10


@dataclass
class GroupingStats:
    """How a grouping went: its method, the pairs found, the time of each step."""

    method: str
    designs: int
    pairs: int = 0  # links found: the pairs, or (kmeans) a forest connecting the same designs
    clusters: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 (a zero row stays zero: it meets nothing)."""
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return out / norms


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union-find of n nodes over the pairs (a[i], b[i]): each node's label is the smallest
    node of its component. Vectorised: hook each pair's larger root under the smaller, then
    jump pointers until every node points at its root; a few rounds even for long chains."""
    parent = np.arange(n, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    while a.size:
        ra, rb = parent[a], parent[b]
        keep = ra != rb
        a, b, ra, rb = a[keep], b[keep], ra[keep], rb[keep]
        if not a.size:
            break
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        np.minimum.at(parent, hi, lo)
        while True:  # full path compression: every node to its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def exact_pairs(x: np.ndarray, min_sim: float) -> tuple[np.ndarray, np.ndarray]:
    """Links connecting every pair i < j with cos >= min_sim: blocks of rows against the rows
    after them, each block's pairs folded into a forest at once (one link a row, where 20,000
    near-identical designs would be 200M pairs)."""
    n = len(x)
    forest_a, forest_b = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for start in range(0, n, block_rows(n)):
        block = x[start : start + block_rows(n)]
        sims = block @ x[start:].T
        sims[np.tril_indices(len(block))] = -np.inf  # the block's own square: only j > i
        rows, cols = np.nonzero(sims >= min_sim)
        if rows.size:
            labels = components(n, np.concatenate([forest_a, rows + start]), np.concatenate([forest_b, cols + start]))
            forest_a = np.flatnonzero(labels != np.arange(n))
            forest_b = labels[forest_a]
    return forest_a, forest_b


def block_rows(columns: int) -> int:
    """Rows a block of similarities against `columns` has: BLOCK_ROWS, fewer against very many
    columns (a cluster of many near-identical designs), so a block stays within BLOCK_VALUES."""
    return max(1, min(BLOCK_ROWS, BLOCK_VALUES // max(1, columns)))


def _joined(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a).astype(np.int64), np.concatenate(b).astype(np.int64)


def _threads() -> None:
    import faiss

    faiss.omp_set_num_threads(max(1, len(_cpus())))


def _cpus() -> set[int]:
    import os

    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def kmeans_centroids(x: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """Spherical k-means centroids (faiss) trained on a seeded sample of at most 256 a centroid."""
    import faiss

    _threads()
    rng = np.random.default_rng(seed)
    sample_size = min(len(x), clusters * SAMPLE_PER_CENTROID)
    sample = np.sort(rng.choice(len(x), sample_size, replace=False)) if sample_size < len(x) else np.arange(len(x))
    train = normalized(x[sample])
    kmeans = faiss.Kmeans(
        x.shape[1],
        clusters,
        niter=KMEANS_ITERATIONS,
        seed=seed,
        spherical=True,
        max_points_per_centroid=SAMPLE_PER_CENTROID,
        min_points_per_centroid=1,  # a small catalog's few points a centroid are enough: no warning
        verbose=False,
    )
    kmeans.train(train)
    return np.asarray(kmeans.centroids, dtype=np.float32)


def nearest_centroids(x: np.ndarray, centroids: np.ndarray, k: int = 2) -> np.ndarray:
    """Each row's k nearest centroids by cosine (faiss' exact inner-product search), in blocks."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    out = np.empty((len(x), k), dtype=np.int64)
    step = 65_536
    for start in range(0, len(x), step):
        _, ids = index.search(normalized(x[start : start + step]), k)
        out[start : start + step] = ids
    return out


def cluster_count(n: int) -> int:
    """The k-means clusters for n designs (MAX_CLUSTERS above)."""
    return max(1, min(round(math.sqrt(2 * n)), MAX_CLUSTERS, n))


def kmeans_pairs(x: np.ndarray, min_sim: float, seed: int, stats: GroupingStats) -> tuple[np.ndarray, np.ndarray]:
    """SemDeDup's pairs with a second assignment: each cluster's own members against its own and
    those whose second-nearest centroid it is; returned as links that connect what the pairs
    connect (a forest per cluster), not every pair."""
    n = len(x)
    clusters = cluster_count(n)
    t0 = time.perf_counter()
    centroids = kmeans_centroids(x, clusters, seed)
    t1 = time.perf_counter()
    assigned = nearest_centroids(x, centroids, min(ASSIGNMENTS, clusters))
    t2 = time.perf_counter()
    primary = assigned[:, 0]
    by_primary = np.argsort(primary, kind="stable")
    primary_bounds = np.searchsorted(primary[by_primary], np.arange(clusters + 1))
    if assigned.shape[1] > 1:
        second = assigned[:, 1]
        by_second = np.argsort(second, kind="stable")
        second_bounds = np.searchsorted(second[by_second], np.arange(clusters + 1))
    found_a, found_b = [], []
    for c in range(clusters):
        own = by_primary[primary_bounds[c] : primary_bounds[c + 1]]
        if not own.size:
            continue
        guests = by_second[second_bounds[c] : second_bounds[c + 1]] if assigned.shape[1] > 1 else own[:0]
        members = np.concatenate([own, guests])
        vectors = normalized(x[members])
        rows_found, cols_found = [], []
        step = block_rows(len(members))
        for start in range(0, len(own), step):
            block = vectors[start : min(start + step, len(own))]
            rows, cols = np.nonzero(block @ vectors.T >= min_sim)
            rows_found.append(rows + start)
            cols_found.append(cols)
        # The cluster's pairs reduced to a forest (each member to its local component's first):
        # at most one link a member, where a large group's pairs would be its size squared.
        local = components(len(members), np.concatenate(rows_found), np.concatenate(cols_found))
        linked = np.flatnonzero(local != np.arange(len(members)))
        found_a.append(members[linked])
        found_b.append(members[local[linked]])
    t3 = time.perf_counter()
    stats.clusters = clusters
    stats.seconds.update(kmeans=t1 - t0, assign=t2 - t1, pairs=t3 - t2)
    return _joined(found_a, found_b)


def group(
    vectors: np.ndarray,
    threshold: float,
    method: str = "auto",
    seed: int = 0,
    extra_pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, GroupingStats]:
    """Each row's group label (its group's smallest row index) and how the grouping went.

    vectors: (n, d) embeddings (float16 or float32), in the order that breaks ties (design id).
    threshold: the largest cosine distance (1 - cos) of a near-duplicate pair, in [0, 2).
    extra_pairs: pairs joined whatever their distance (a colourway and its parent)."""
    if method not in METHODS:
        raise ValueError(f"grouping method {method!r} is unknown; accepted: {', '.join(METHODS)}")
    if not 0 <= threshold < 2:
        raise ValueError(f"threshold {threshold!r} is out of range; accepted: a cosine distance in [0, 2)")
    n = len(vectors)
    if method == "auto":
        method = "exact" if n <= EXACT_LIMIT else "kmeans"
    stats = GroupingStats(method, n)
    min_sim = float(1 - threshold)
    started = time.perf_counter()
    finders: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
        "exact": lambda: exact_pairs(normalized(vectors), min_sim),
        "kmeans": lambda: kmeans_pairs(vectors, min_sim, seed, stats),
    }
    a, b = finders[method]() if n > 1 else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    stats.pairs = int(a.size)
    if extra_pairs is not None:
        a = np.concatenate([a, np.asarray(extra_pairs[0], np.int64)])
        b = np.concatenate([b, np.asarray(extra_pairs[1], np.int64)])
    t0 = time.perf_counter()
    labels = components(n, a, b)
    stats.seconds["components"] = time.perf_counter() - t0
    stats.seconds["total"] = time.perf_counter() - started
    return labels, stats
