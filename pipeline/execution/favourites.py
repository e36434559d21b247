"""`designs curate --prefer-favourites`: how near each design is to the studio's favourites.

The favourites are the designs whose latest verdict in OUT/reviews is favourite
(pipeline/catalog/reviews.py); nearness is the cosine distance (1 - cos) between embeddings
(pipeline/catalog/embeddings.py), compared only within one network as curation's groups are.
pipeline/execution/curate.py orders the groups by the distance of their nearest member to its
nearest favourite before their score, so the review's first pages hold the favourites and what
looks like them (the next night's `--more-like` variations among them); groups with no
embedding comparable with a favourite's follow, by score as without the flag. Before the first
favourite (no reviews yet) the order is by score, and the report's line says so: the morning's
workflow runs the flag from the first day.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Rows of designs compared at once with every favourite: 1,024 x 10,000 favourites is 40 MB of float32.
BLOCK_ROWS = 1024
# Distances are rounded so that the order does not hang on the last bits of a float32 product
# (another BLAS, another CPU); equal distances fall back to the score.
DECIMALS = 4


@dataclass(frozen=True)
class Nearness:
    distance: np.ndarray  # per design: to its nearest favourite; inf where none is comparable
    favourites: int  # favourite ids in the reviews
    embedded: int  # of them, with an embedding

    def line(self) -> str:
        near = int(np.isfinite(self.distance).sum())
        if not self.favourites:
            return "prefer favourites: no favourites in the reviews yet; the review order is by score"
        return (
            f"prefer favourites: {self.favourites:,} favourite(s), {self.embedded:,} with an embedding; "
            f"{near:,} design(s) ordered by their distance to the nearest, their groups first"
        )


def favourite_ids_of(out: str | Path) -> list[str]:
    """The favourites of OUT's reviews; none where there is no reviews table yet."""
    from pipeline.catalog.reviews import favourite_ids, reviews_path

    return favourite_ids(Path(out)) if (reviews_path(out) / "_delta_log").is_dir() else []


def _unit(vectors: np.ndarray) -> np.ndarray:
    v = vectors.astype(np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms > 0, norms, 1)


def favourite_distances(
    out: str | Path, n: int, parts: list[tuple[str, np.ndarray, np.ndarray]], favourites: list[str]
) -> Nearness:
    """Per design (n, curation's order): the cosine distance to its nearest favourite of the same
    network; `parts` are curation's (network, indices, vectors)."""
    from pipeline.catalog.embeddings import EMBEDDING_METHOD, read_embeddings

    distance = np.full(n, np.inf)
    embedded: set[str] = set()
    for network, at, vectors in parts if favourites else ():
        ids, found = read_embeddings(out, EMBEDDING_METHOD, favourites, network)
        if not len(ids) or found.shape[1] != vectors.shape[1]:
            continue
        embedded.update(ids.tolist())
        anchors = _unit(found).T
        for start in range(0, len(at), BLOCK_ROWS):
            cos = _unit(vectors[start : start + BLOCK_ROWS]) @ anchors
            distance[at[start : start + BLOCK_ROWS]] = np.round(1 - cos.max(axis=1), DECIMALS)
    return Nearness(np.maximum(distance, 0.0), len(favourites), len(embedded))


def group_first(group_of: np.ndarray, groups: int, values: np.ndarray) -> np.ndarray:
    """Per group (0..groups-1): the least value of its members (`group_of`: each value's group)."""
    least = np.full(groups, np.inf)
    np.minimum.at(least, group_of, values)
    return least
