"""Near-duplicate grouping (pipeline/execution/grouping.py): planted groups are found whole,
different groups are never merged, k-means finds what every pair finds, and a rerun gives
the same labels."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.execution import grouping
from pipeline.execution.grouping import components, group

DIM = 64


def planted(groups: int, size: int, seed: int = 0, spread: float = 0.002, apart: float = 0.2):
    """`groups` groups of `size` unit vectors (float16), members about `spread` apart in cosine
    distance, groups about `apart` from each other, rows shuffled; and each row's group."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(DIM)
    base /= np.linalg.norm(base)
    centres = base + np.sqrt(apart / (1 - apart) / DIM) * rng.standard_normal((groups, DIM))
    truth = np.repeat(np.arange(groups), size)
    vectors = centres[truth] + np.sqrt(spread / (1 - spread) / DIM) * rng.standard_normal((len(truth), DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    order = rng.permutation(len(truth))
    return vectors[order].astype(np.float16), truth[order]


def same_partition(labels: np.ndarray, truth: np.ndarray) -> bool:
    """Whether two labellings put the same rows together (a bijection between their labels)."""
    pairs = set(zip(labels.tolist(), truth.tolist()))
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


def test_components_label_each_node_with_the_smallest_of_its_component():
    # A chain 5-3-4 and a pair 1-2; 0 and 6 alone.
    labels = components(7, np.array([5, 4, 2]), np.array([3, 3, 1]))
    assert labels.tolist() == [0, 1, 1, 3, 3, 3, 6]
    # A long chain in the worst order still ends in one component, labelled by its smallest node.
    n = 1000
    chain = components(n, np.arange(n - 1)[::-1] + 1, np.arange(n - 1)[::-1])
    assert set(chain.tolist()) == {0}


@pytest.mark.parametrize("method", ["exact", "kmeans"])
def test_planted_groups_are_found_whole_and_never_merged(method, monkeypatch):
    monkeypatch.setattr(grouping, "cluster_count", lambda n: n // 100)  # several clusters at this size
    vectors, truth = planted(groups=60, size=12)
    labels, stats = group(vectors, threshold=0.02, method=method)
    assert stats.method == method
    assert same_partition(labels, truth)
    if method == "kmeans":
        assert stats.clusters == len(vectors) // 100


def test_kmeans_finds_the_pairs_a_cluster_border_cuts(monkeypatch):
    """Clusters smaller than the groups cut through them: comparing each design with the members
    of its second-nearest centroid too finds what every pair finds; its own cluster alone does not."""
    monkeypatch.setattr(grouping, "cluster_count", lambda n: n // 8)
    vectors, truth = planted(groups=100, size=8, seed=3, spread=0.01)
    exact, _ = group(vectors, threshold=0.03, method="exact")
    assert same_partition(exact, truth)
    clustered, stats = group(vectors, threshold=0.03, method="kmeans")
    assert stats.clusters == 100
    assert np.array_equal(exact, clustered)
    monkeypatch.setattr(grouping, "ASSIGNMENTS", 1)  # SemDeDup's plain k-means
    alone, _ = group(vectors, threshold=0.03, method="kmeans")
    assert len(set(alone.tolist())) > len(set(exact.tolist()))


def test_a_threshold_below_the_members_distance_splits_them():
    vectors, truth = planted(groups=5, size=10, spread=0.01)
    labels, _ = group(vectors, threshold=0.0005, method="exact")
    assert len(set(labels.tolist())) == len(vectors)
    labels, _ = group(vectors, threshold=0.05, method="exact")
    assert same_partition(labels, truth)


def test_a_rerun_gives_the_same_labels_and_the_label_is_the_smallest_member(monkeypatch):
    monkeypatch.setattr(grouping, "cluster_count", lambda n: n // 100)
    vectors, _ = planted(groups=40, size=10, seed=7)
    first, _ = group(vectors, threshold=0.02, method="kmeans", seed=0)
    second, _ = group(vectors, threshold=0.02, method="kmeans", seed=0)
    assert np.array_equal(first, second)
    for label in set(first.tolist()):
        assert label == np.flatnonzero(first == label).min()


def test_extra_pairs_join_groups_whatever_their_distance():
    vectors, _ = planted(groups=2, size=3)
    labels, _ = group(vectors, threshold=0.02, method="exact")
    a, b = np.flatnonzero(labels == labels[0])[0], np.flatnonzero(labels != labels[0])[0]
    joined, _ = group(vectors, threshold=0.02, method="exact", extra_pairs=(np.array([a]), np.array([b])))
    assert len(set(joined.tolist())) == 1


def test_auto_compares_every_pair_of_a_small_catalog_and_clusters_a_large_one(monkeypatch):
    vectors, _ = planted(groups=10, size=5)
    assert group(vectors, 0.02)[1].method == "exact"
    monkeypatch.setattr(grouping, "EXACT_LIMIT", 20)
    monkeypatch.setattr(grouping, "cluster_count", lambda n: n // 10)
    assert group(vectors, 0.02)[1].method == "kmeans"


@pytest.mark.parametrize(
    ("threshold", "method", "says"),
    [(-0.1, "exact", "threshold -0.1"), (2.0, "exact", "threshold 2.0"), (0.1, "lsh", "method 'lsh'")],
)
def test_bad_arguments_name_the_value_and_what_is_accepted(threshold, method, says):
    with pytest.raises(ValueError, match="accepted") as err:
        group(np.zeros((3, DIM), np.float16), threshold, method=method)
    assert says in str(err.value)


def test_near_identical_designs_are_one_group_held_as_one_link_each(monkeypatch):
    """3,000 copies of one design: 4.5M pairs, kept as a forest of 2,999 links; blocks shrink so
    none holds more than BLOCK_VALUES similarities."""
    rng = np.random.default_rng(5)
    vectors = np.repeat(rng.standard_normal((1, DIM)), 3000, axis=0)
    vectors += 1e-4 * rng.standard_normal(vectors.shape)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    shapes = []
    real_nonzero = np.nonzero

    def nonzero(mask):
        shapes.append(mask.shape)
        return real_nonzero(mask)

    monkeypatch.setattr(grouping, "BLOCK_VALUES", 300_000)
    monkeypatch.setattr(grouping.np, "nonzero", nonzero)
    for method in ("exact", "kmeans"):
        monkeypatch.setattr(grouping, "cluster_count", lambda n: 3)
        labels, stats = group(vectors, threshold=0.02, method=method)
        assert set(labels.tolist()) == {0}, method
        assert stats.pairs == len(vectors) - 1 if method == "exact" else stats.pairs < 2 * len(vectors)
    blocks = [shape for shape in shapes if len(shape) == 2]  # the similarity blocks
    assert blocks and max(rows * cols for rows, cols in blocks) <= 300_000
