"""`designs similar OUT DESIGN_ID`: the designs nearest to one by their embeddings (cosine
distance, 1 - cos, pipeline/engine/embedding.py), among the ok designs of a version.

Exact search: the embeddings table is read a data file at a time and compared in blocks
(float16 stored, float32 arithmetic), keeping the nearest candidates only: bounded memory, and
3.2 to 5.1 s a million designs on a busy 2-core machine (docs/ANALYSTS.md). Only designs
embedded by the same method and network as the one asked about are compared (other networks'
vectors mean other things).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.catalog.datafiles import data_files, read_rows
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import embedding_batches, may_hold
from pipeline.catalog.history import resolve_version
from pipeline.config import SIMILAR_K
from pipeline.engine.embedding_format import EMBEDDING_METHOD
from pipeline.views.query import QueryError

BLOCK = 65536  # rows compared at once: 64 MiB of float32 at 256 dims
COLUMNS = ("rank", "design_id", "distance", "content_id", "style_id", "output_uri")


class UnknownDesign(QueryError):
    """The id is no ok design of the version."""


class NoEmbedding(QueryError):
    """The design has no embedding yet (made before embeddings, a colourway, or a crash between commits)."""


def _nearest_ids(out: Path, query: np.ndarray, design_id: str, network: str | None, m: int) -> tuple[list, list, int]:
    """The m designs (other than design_id) nearest to `query`, nearest first (ties by id):
    (ids, distances), and how many were compared."""
    q = query.astype(np.float32)
    best_ids: list[pa.Array] = []
    best = np.array([], dtype=np.float32)
    seen = 0
    for ids, vectors, _ in embedding_batches(out, EMBEDDING_METHOD, network=network):
        for start in range(0, len(ids), BLOCK):
            block_ids = ids.slice(start, BLOCK)
            distances = 1.0 - vectors[start : start + BLOCK].astype(np.float32) @ q
            distances[pc.equal(block_ids, design_id).to_numpy(zero_copy_only=False)] = np.inf  # not itself
            seen += len(block_ids) - int(np.isinf(distances).sum())
            best_ids.append(block_ids)
            best = np.concatenate([best, distances])
            if len(best) > m:
                # The m smallest; every tie at the cut is kept (broken by id below).
                chosen = np.flatnonzero(best <= np.partition(best, m - 1)[m - 1])
                best_ids, best = [pa.concat_arrays(best_ids).take(pa.array(chosen))], best[chosen]
    names = pa.concat_arrays(best_ids).to_pylist() if best_ids else []
    pairs = sorted((float(d), i) for d, i in zip(best, names) if np.isfinite(d))
    first = {i: d for d, i in reversed(pairs)}  # a design written twice (two writers at once): listed once
    pairs = sorted((d, i) for i, d in first.items())
    return [i for _, i in pairs], [d for d, _ in pairs], seen


def _designs(out: Path, version: int | None, ids: list[str]) -> dict[str, dict]:
    """The rows of `ids` in the version (design_id, status, content_id, style_id, output_uri),
    reading only the data files whose id bounds hold one of them."""
    catalog = DesignCatalog(out)
    resolved = resolve_version(catalog, version)
    table = catalog.table(resolved)
    wanted = np.unique(np.array([i.encode() for i in ids], dtype=bytes)) if ids else np.array([], dtype="S1")
    files = [f for f in data_files(table) if may_hold(f, wanted)]
    found: dict[str, dict] = {}
    which = "the latest version" if version is None else f"version {version}"
    columns = ["design_id", "status", "content_id", "style_id", "output_uri"]
    for rows in read_rows(table, catalog.table_path, columns, files, which):
        rows = rows.filter(pc.is_in(rows.column("design_id"), value_set=pa.array(ids, pa.string())))
        for row in rows.to_pylist():
            if found.get(row["design_id"], {}).get("status") != "ok":  # an ok row wins over a failed one
                found[row["design_id"]] = row
    return found


def nearest(out: str | Path, design_id: str, k: int = SIMILAR_K, version: int | None = None) -> pa.Table:
    """The k ok designs of the version nearest to `design_id`, nearest first (ties by id):
    rank, design_id, distance (1 - cos, rounded to 4 places), content_id, style_id, output_uri.
    UnknownDesign, NoEmbedding: one line each, for the CLI."""
    if k < 1:
        raise QueryError(f"-k {k} is invalid; accepted: a whole number of at least 1")
    out = Path(out)
    which = "the latest version" if version is None else f"version {version}"
    own = _designs(out, version, [design_id]).get(design_id)
    if own is None or own["status"] != "ok":
        state = f" (its status there is {own['status']})" if own else ""
        raise UnknownDesign(f"no ok design {design_id!r} in {which} of {out}{state}")
    mine = [
        (v, n)
        for _, vectors, networks in embedding_batches(out, EMBEDDING_METHOD, [design_id])
        for v, n in zip(vectors, networks.to_pylist())
    ]
    if not mine:
        raise NoEmbedding(
            f"design {design_id!r} has no embedding yet; run `designs curate {out}` (it embeds the designs "
            "that have none), then ask again"
        )
    query, network = mine[0]
    m = 2 * k + 16  # candidates beyond k: a few may not be ok designs of this version
    while True:
        ids, distances, seen = _nearest_ids(out, query, design_id, network, m)
        rows = _designs(out, version, ids)
        listed = [(i, d) for i, d in zip(ids, distances) if rows.get(i, {}).get("status") == "ok"][:k]
        if len(listed) >= k or len(ids) >= seen:
            break
        m *= 4
    return pa.table(
        {
            "rank": pa.array(range(1, len(listed) + 1), pa.int32()),
            "design_id": pa.array([i for i, _ in listed], pa.string()),
            "distance": pa.array([round(d, 4) for _, d in listed], pa.float64()),
            "content_id": pa.array([rows[i]["content_id"] for i, _ in listed], pa.string()),
            "style_id": pa.array([rows[i]["style_id"] for i, _ in listed], pa.string()),
            "output_uri": pa.array([rows[i]["output_uri"] for i, _ in listed], pa.string()),
        }
    )
