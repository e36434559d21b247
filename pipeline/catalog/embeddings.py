"""The designs' embeddings: a Delta table at OUT/embeddings, one row per design_id, apart from
`designs` so the catalog stays lean (512 bytes a design here).

Columns: design_id, method (pipeline/engine/embedding.py's EMBEDDING_METHOD: a change of
method is a new name), dim, embedding (float16 little-endian, dim values), network (the VGG
the vector comes from: vectors compare within one method and network), embedded_at.

New designs' rows carry their embedding (EMBEDDING_KEY, from the engine's final forward); it
is written here right after the design catalog's commit of the same rows (`commit_embeddings`).
A crash between the two leaves designs without embeddings: `designs curate` backfills them
(pipeline/execution/embed.py), as it does colourways and designs made before embeddings.

Reads go through pipeline/catalog/datafiles.py, a file at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from pipeline.catalog.datafiles import DataFile, contained_path, data_files, dataset, fragment, plain_schema, read_rows
from pipeline.catalog.designs import DesignCatalog, _first_line, _merge_predicate
from pipeline.catalog.ids import DesignIds, id_ranges
from pipeline.engine.embedding_format import EMBEDDING_DTYPE, EMBEDDING_METHOD

__all__ = [
    "EMBEDDING_KEY",
    "EMBEDDING_METHOD",
    "EMBEDDINGS_DIR",
    "EMBEDDINGS_SCHEMA",
    "commit_embeddings",
    "compact_embeddings",
    "embedded_id_array",
    "embedding_batches",
    "embedded_ids",
    "embeddings_dataset",
    "embeddings_path",
    "iter_embeddings",
    "read_embeddings",
    "write_embeddings",
]

EMBEDDINGS_DIR = "embeddings"
# A design row's key for its embedding (float16 bytes) between the engine and the commit;
# not a column of `designs` (pa.Table.from_pylist with its schema leaves it out).
EMBEDDING_KEY = "embedding"
EMBEDDINGS_SCHEMA = pa.schema(
    [
        pa.field("design_id", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("dim", pa.int32(), nullable=False),
        pa.field("embedding", pa.binary(), nullable=False),
        pa.field("network", pa.string()),
        pa.field("embedded_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
MAX_DIM = 256
MERGE_RANGES = 8
TABLE_PROPERTIES = {"delta.dataSkippingStatsColumns": "design_id,method"}

logger = logging.getLogger(__name__)


def embeddings_path(out: str | Path) -> Path:
    return Path(out) / EMBEDDINGS_DIR


def _table(out: str | Path) -> DeltaTable | None:
    try:
        return DeltaTable(str(embeddings_path(out)))
    except TableNotFoundError:
        return None


def _ensure_table(out: str | Path) -> DeltaTable:
    path = embeddings_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        DeltaTable.create(
            str(path),
            schema=EMBEDDINGS_SCHEMA,
            mode="ignore",
            name="embeddings",
            description="One embedding per design_id (pipeline/engine/embedding.py)",
            configuration=dict(TABLE_PROPERTIES),
            commit_properties=CommitProperties(custom_metadata={"designs.note": "create"}),
        )
    except DeltaError:
        if _table(out) is None:  # losing a creation race to another writer is fine
            raise
    table = _table(out)
    assert table is not None
    return table


def write_embeddings(
    out: str | Path, design_ids: Sequence[str], vectors: np.ndarray, method: str, network: str | None
) -> int:
    """Write the designs' embeddings (float16 (n, d), d <= 256) in one commit, one row a design:
    a design already embedded by `method` keeps its row, one embedded by another method takes
    the new one. Returns the rows written (0: every design had one).

    Which designs have a row is read from the design_id column of the files whose id bounds meet
    these ids (a shard's ids are neighbours: a few small files); new rows are appended, which reads
    nothing else. Only a change of method merges (reading the files the ids' ranges meet). Two
    writers of the same new design at once may both append it: readers keep one row a design."""
    ids = [str(d) for d in design_ids]
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"vectors of shape {vectors.shape} for {len(ids)} design ids; accepted: ({len(ids)}, dim)")
    if not 0 < vectors.shape[1] <= MAX_DIM:
        raise ValueError(f"embedding dim {vectors.shape[1]} is invalid; accepted: 1 to {MAX_DIM}")
    if len(set(ids)) != len(ids):
        raise ValueError("design ids repeat; accepted: each design once")
    if not ids:
        return 0
    dim = vectors.shape[1]
    data = np.ascontiguousarray(vectors, dtype=EMBEDDING_DTYPE)
    offsets = pa.array(np.arange(0, (len(ids) + 1) * dim * 2, dim * 2, dtype=np.int32))
    column = pa.BinaryArray.from_buffers(pa.binary(), len(ids), [None, offsets.buffers()[1], pa.py_buffer(data)])
    now = datetime.now(UTC)
    source = pa.table(
        [
            pa.array(ids, pa.string()),
            pa.array([method] * len(ids), pa.string()),
            pa.array([dim] * len(ids), pa.int32()),
            column,
            pa.array([network] * len(ids), pa.string()),
            pa.array([now] * len(ids), pa.timestamp("us", tz="UTC")),
        ],
        schema=EMBEDDINGS_SCHEMA,
    )
    catalog = DesignCatalog(out)
    had = _methods_of(out, ids)
    if not any(m != method for m in had.values()):
        fresh = [i for i, d in enumerate(ids) if d not in had]
        if not fresh:
            return 0
        rows = source if len(fresh) == len(ids) else source.take(pa.array(fresh))
        note = CommitProperties(custom_metadata={"designs.note": f"embeddings: {method}"})

        def append() -> None:
            _ensure_table(out)
            write_deltalake(str(embeddings_path(out)), rows, mode="append", commit_properties=note)

        catalog.retrying(append)
        return len(fresh)

    def attempt() -> None:
        (
            _ensure_table(out)
            .merge(
                source,
                predicate=_merge_predicate(id_ranges(ids, MERGE_RANGES)),
                source_alias="source",
                target_alias="target",
                commit_properties=CommitProperties(custom_metadata={"designs.note": f"embeddings: {method}"}),
            )
            .when_matched_update_all(predicate="target.method <> source.method")
            .when_not_matched_insert_all()
            .execute()
        )

    catalog.retrying(attempt)
    return sum(1 for d in ids if had.get(d) != method)


def _methods_of(out: str | Path, ids: list[str]) -> dict[str, str]:
    """design_id -> method of the rows these ids have, reading only the id and method columns
    of the files whose id bounds meet them."""
    table = _table(out)
    if table is None or not ids:
        return {}
    wanted = np.unique(np.array([d.encode() for d in ids], dtype=bytes))
    files = [f for f in data_files(table) if may_hold(f, wanted)]
    found: dict[str, str] = {}
    for rows in read_rows(table, embeddings_path(out), ["design_id", "method"], files):
        rows = rows.filter(pa.array(_members(rows.column("design_id"), wanted)))
        found.update(zip(rows.column("design_id").to_pylist(), rows.column("method").to_pylist()))
    return found


# Compaction: each shard's commit adds a small file (a few hundred designs); a scan of a million
# designs in thousands of files spends its time opening them. Past this many small files the
# backfill (`designs curate` runs it first) rewrites them into files of COMPACT_TARGET_BYTES.
SMALL_FILE_BYTES = 8 << 20
COMPACT_DUE_FILES = 64
COMPACT_TARGET_BYTES = 64 << 20


def compact_embeddings(out: str | Path, due_files: int = COMPACT_DUE_FILES) -> int:
    """Rewrite the table's small files into large ones (delta-rs' optimize, one commit that only
    removes the files it rewrote: concurrent writes of new embeddings are kept) once there are
    `due_files` of them. Returns the files removed (0: not due). The old files stay on disk until
    a vacuum, as every Delta table's do."""
    table = _table(out)
    if table is None:
        return 0
    if sum(1 for f in data_files(table) if f.size < SMALL_FILE_BYTES) < due_files:
        return 0

    def attempt() -> int:
        done = _table(out)
        assert done is not None
        metrics = done.optimize.compact(
            target_size=COMPACT_TARGET_BYTES,
            commit_properties=CommitProperties(custom_metadata={"designs.note": "embeddings: compaction"}),
        )
        return int(metrics.get("numFilesRemoved", 0))

    return DesignCatalog(out).retrying(attempt)


def commit_embeddings(out: str | Path, rows: Sequence[dict[str, Any]]) -> int:
    """The embeddings that committed ok rows carry (EMBEDDING_KEY), written by network. Called
    after the design catalog's commit: a failure here is logged, not raised (the designs are
    committed, and `designs curate` backfills what is missing). Returns the rows written."""
    by_network: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "ok" and row.get(EMBEDDING_KEY) is not None:
            by_network.setdefault((row.get("params") or {}).get("network"), []).append(row)
    written = 0
    for network, group in by_network.items():
        vectors = np.stack([np.frombuffer(r[EMBEDDING_KEY], dtype=EMBEDDING_DTYPE) for r in group])
        try:
            written += write_embeddings(out, [r["design_id"] for r in group], vectors, EMBEDDING_METHOD, network)
        except (DeltaError, OSError) as err:
            logger.warning(
                "embeddings of %d committed design(s) not written to %s: %s; `designs curate` computes them",
                len(group),
                embeddings_path(out),
                _first_line(err),
            )
    return written


def embedding_batches(
    out: str | Path,
    method: str | None = None,
    design_ids: Sequence[str] | None = None,
    network: str | None = None,
) -> Iterator[tuple[pa.Array, np.ndarray, pa.Array]]:
    """(ids, vectors float16 (n, d), networks) a data file at a time, ids and networks as Arrow
    string arrays (no Python object a row), filtered by method, design ids and network. With
    design ids, only the files whose id bounds (the log's statistics) hold one of them are read."""
    table = _table(out)
    if table is None:
        return
    wanted = None
    files = data_files(table)
    if design_ids is not None:
        wanted = np.unique(np.array([str(d).encode() for d in design_ids], dtype=bytes))
        files = [f for f in files if may_hold(f, wanted)]
    for rows in read_rows(table, embeddings_path(out), ["design_id", "method", "dim", "embedding", "network"], files):
        mask = None
        if method is not None:
            mask = pc.equal(rows.column("method"), method)
        if network is not None:
            on = pc.equal(rows.column("network"), network)
            mask = on if mask is None else pc.and_(mask, on)
        if wanted is not None:
            on = pa.array(_members(rows.column("design_id"), wanted))
            mask = on if mask is None else pc.and_(mask, on)
        if mask is not None:
            rows = rows.filter(mask)
        if rows.num_rows == 0:
            continue
        dims = pc.unique(rows.column("dim")).to_pylist()
        for dim in dims:
            part = rows if len(dims) == 1 else rows.filter(pc.equal(rows.column("dim"), dim))
            yield (
                part.column("design_id").combine_chunks(),
                _matrix(part.column("embedding"), int(dim)),
                part.column("network").combine_chunks(),
            )


def may_hold(file: DataFile, wanted: np.ndarray) -> bool:
    """Whether a file's design_id bounds meet any wanted id (sorted bytes); True without bounds."""
    if file.min_id is None or file.max_id is None:
        return True
    # delta-rs truncates a long max upwards: a bound, enough to skip a file.
    low = np.searchsorted(wanted, file.min_id.encode(), side="left")
    return low < len(wanted) and wanted[low] <= file.max_id.encode()


def _members(column: pa.ChunkedArray, wanted: np.ndarray) -> np.ndarray:
    """Whether each id is among `wanted` (sorted bytes): a binary search each, no hash table of
    the wanted ids built per file (a million of them for `designs curate`)."""
    ids = DesignIds.from_arrow(column, sort=False).ids
    if len(wanted) == 0 or len(ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    width = max(ids.dtype.itemsize, wanted.dtype.itemsize)
    ids, keys = ids.astype(f"S{width}"), wanted.astype(f"S{width}")
    at = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    return keys[at] == ids


def iter_embeddings(
    out: str | Path,
    method: str | None = None,
    design_ids: Sequence[str] | None = None,
    network: str | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids, vectors float16 (n, d), networks) a data file at a time as numpy arrays, filtered
    by method, design ids and network: bounded memory for a scan of millions of rows."""
    for ids, vectors, networks in embedding_batches(out, method, design_ids, network):
        yield (
            np.asarray(ids.to_pylist(), dtype=object).astype(str),
            vectors,
            np.asarray(networks.to_pylist(), dtype=object),
        )


def _matrix(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """A binary column of fixed-size float16 values as an (n, dim) matrix (one copy)."""
    array = column.combine_chunks()
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + n + 1]
    if n and not np.all(np.diff(offsets) == dim * 2):
        raise ValueError(f"embeddings of {dim} dims whose bytes are not {dim * 2} each: the table is damaged")
    if n == 0:
        return np.empty((0, dim), EMBEDDING_DTYPE)
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.view(EMBEDDING_DTYPE).reshape(n, dim).copy()


def read_embeddings(
    out: str | Path,
    method: str | None = None,
    design_ids: Sequence[str] | None = None,
    network: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(ids as str, vectors float16 (n, d)); empty arrays when the table is absent or nothing
    matches. ValueError where the rows chosen mix dims (several methods: name one)."""
    ids, vectors = [], []
    for part_ids, part_vectors, _ in iter_embeddings(out, method, design_ids, network):
        if vectors and part_vectors.shape[1] != vectors[0].shape[1]:
            raise ValueError(
                f"embeddings of {vectors[0].shape[1]} and {part_vectors.shape[1]} dims: more than one method; "
                "accepted: a method naming one"
            )
        ids.append(part_ids)
        vectors.append(part_vectors)
    if not ids:
        return np.array([], dtype=str), np.empty((0, 0), EMBEDDING_DTYPE)
    all_ids, all_vectors = np.concatenate(ids), np.concatenate(vectors)
    # One row a design (two writers at once may have appended one twice): the first kept.
    _, first = np.unique(all_ids, return_index=True)
    if len(first) < len(all_ids):
        first.sort()
        all_ids, all_vectors = all_ids[first], all_vectors[first]
    return all_ids, all_vectors


def embedded_id_array(out: str | Path, method: str = EMBEDDING_METHOD) -> pa.Array:
    """The design ids with an embedding by `method`, as one string array (no Python object a row)."""
    table = _table(out)
    parts = []
    if table is not None:
        for rows in read_rows(table, embeddings_path(out), ["design_id", "method"]):
            parts.append(rows.filter(pc.equal(rows.column("method"), method)).column("design_id"))
    return pa.chunked_array(parts, pa.string()).combine_chunks() if parts else pa.array([], pa.string())


def embedded_ids(out: str | Path, method: str = EMBEDDING_METHOD) -> set[str]:
    """The design ids with an embedding by `method`."""
    return set(embedded_id_array(out, method).to_pylist())


def embeddings_dataset(out: str | Path) -> ds.Dataset:
    """The latest version's files as a pyarrow dataset (`designs query`'s `embeddings`, through
    pipeline/catalog/sql.py); empty with EMBEDDINGS_SCHEMA when there is no table. OutsideTable
    (a ValueError) for a file whose real path leaves the table's folder."""
    table = _table(out)
    if table is None:
        return ds.dataset(EMBEDDINGS_SCHEMA.empty_table())
    path = embeddings_path(out)
    schema = plain_schema(table)
    which = "the latest version of the embeddings table"
    return dataset([fragment(f, contained_path(path, f, which), schema) for f in data_files(table)], schema)
