"""`designs similar OUT DESIGN_ID`: the designs nearest to one by their embeddings (cosine
distance, 1 - cos, pipeline/engine/embedding.py), among the ok designs of a version.

Exact search: the embeddings table is read a data file at a time and compared in blocks
(float16 stored, float32 arithmetic), keeping the nearest candidates only: bounded memory, and
about a second per million designs. Only designs embedded by the same method and network as the
one asked about are compared (other networks' vectors mean other things).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.catalog.embeddings import iter_embeddings
from pipeline.catalog.sql import connect
from pipeline.engine.embedding import EMBEDDING_METHOD
from pipeline.views.query import QueryError

BLOCK = 65536  # rows compared at once: 64 MiB of float32 at 256 dims
DEFAULT_K = 10
COLUMNS = ("rank", "design_id", "distance", "content_id", "style_id", "output_uri")


class UnknownDesign(QueryError):
    """The id is no ok design of the version."""


class NoEmbedding(QueryError):
    """The design has no embedding yet (made before embeddings, a colourway, or a crash between commits)."""


def _nearest_ids(out: Path, query: np.ndarray, design_id: str, network: str | None, m: int) -> tuple[list, list, int]:
    """The m designs (other than design_id) nearest to `query`: (ids, distances), and how many were compared."""
    q = query.astype(np.float32)
    best_ids = np.array([], dtype=str)
    best = np.array([], dtype=np.float32)
    seen = 0
    for ids, vectors, _ in iter_embeddings(out, EMBEDDING_METHOD, network=network):
        for start in range(0, len(ids), BLOCK):
            block_ids = ids[start : start + BLOCK]
            distances = 1.0 - vectors[start : start + BLOCK].astype(np.float32) @ q
            keep = block_ids != design_id
            block_ids, distances = block_ids[keep], distances[keep]
            seen += len(block_ids)
            best_ids = np.concatenate([best_ids, block_ids])
            best = np.concatenate([best, distances])
            if len(best) > m:
                # The m smallest; ties at the cut broken by id below, so keep every tie.
                cut = np.partition(best, m - 1)[m - 1]
                chosen = best <= cut
                best_ids, best = best_ids[chosen], best[chosen]
    order = np.lexsort((best_ids, best))
    return list(best_ids[order]), [float(d) for d in best[order]], seen


def nearest(out: str | Path, design_id: str, k: int = DEFAULT_K, version: int | None = None) -> pa.Table:
    """The k ok designs of the version nearest to `design_id`, nearest first (ties by id):
    rank, design_id, distance (1 - cos, rounded to 4 places), content_id, style_id, output_uri.
    UnknownDesign, NoEmbedding: one line each, for the CLI."""
    if k < 1:
        raise QueryError(f"-k {k} is invalid; accepted: a whole number of at least 1")
    out = Path(out)
    con = connect(out, version)
    try:
        found = con.execute("select status from designs where design_id = ?", [design_id]).fetchall()
        which = "the latest version" if version is None else f"version {version}"
        if not any(status == "ok" for (status,) in found):
            state = f" (its status there is {found[0][0]})" if found else ""
            raise UnknownDesign(f"no ok design {design_id!r} in {which} of {out}{state}")
        own = [
            (v, n)
            for _, vectors, networks in iter_embeddings(out, EMBEDDING_METHOD, [design_id])
            for v, n in zip(vectors, networks)
        ]
        if not own:
            raise NoEmbedding(
                f"design {design_id!r} has no embedding yet; run `designs curate {out}` (it embeds the designs "
                "that have none), then ask again"
            )
        query, network = own[0]
        m = 2 * k + 16  # candidates beyond k: a few may not be ok designs of this version
        while True:
            ids, distances, seen = _nearest_ids(out, query, design_id, network, m)
            candidates = pa.table({"design_id": pa.array(ids, pa.string()), "distance": pa.array(distances)})
            con.register("similar_candidates", candidates)
            rows = con.sql(
                "select c.design_id, c.distance, d.content_id, d.style_id, d.output_uri "
                "from similar_candidates c join designs d using (design_id) where d.status = 'ok' "
                "order by c.distance, c.design_id limit ?",
                params=[k],
            ).to_arrow_table()
            con.unregister("similar_candidates")
            if rows.num_rows >= k or len(ids) >= seen:
                break
            m *= 4
    finally:
        con.close()
    distance = pa.array([round(float(d), 4) for d in rows.column("distance").to_pylist()], pa.float64())
    return pa.table(
        {
            "rank": pa.array(range(1, rows.num_rows + 1), pa.int32()),
            "design_id": rows.column("design_id"),
            "distance": distance,
            "content_id": rows.column("content_id"),
            "style_id": rows.column("style_id"),
            "output_uri": rows.column("output_uri"),
        }
    )
