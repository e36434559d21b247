"""The embeddings table (OUT/embeddings): one row per design_id with its method, dim, float16
bytes and network; merged idempotently, a new method replacing an old one; read back exactly,
filtered, a file at a time; empty when absent; `designs query` reads it as `embeddings`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from test_commit_pruning import hex_ids, row

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import (
    EMBEDDING_KEY,
    EMBEDDING_METHOD,
    commit_embeddings,
    compact_embeddings,
    embedded_ids,
    embeddings_path,
    iter_embeddings,
    read_embeddings,
    write_embeddings,
)
from pipeline.engine.embedding import to_bytes
from pipeline.views.query import query


def vectors(n: int, dim: int = 256, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def test_what_is_written_is_read_back_exactly_at_512_bytes_a_design(tmp_path):
    ids, x = hex_ids(20), vectors(20)
    assert write_embeddings(tmp_path, ids, x, EMBEDDING_METHOD, "vgg16") == 20
    got_ids, got = read_embeddings(tmp_path)
    order = np.argsort(got_ids)
    assert list(got_ids[order]) == ids and got.dtype == np.float16
    assert np.array_equal(got[order], x)
    rows = DeltaTable(str(embeddings_path(tmp_path))).to_pyarrow_table()
    assert rows.schema.names == ["design_id", "method", "dim", "embedding", "network", "embedded_at"]
    assert set(rows.column("dim").to_pylist()) == {256}
    assert {len(b) for b in rows.column("embedding").to_pylist()} == {512}
    assert pa.types.is_timestamp(rows.schema.field("embedded_at").type)
    assert rows.schema.field("embedded_at").type.tz == "UTC"


def test_a_design_keeps_one_row_and_a_new_method_replaces_the_old(tmp_path):
    ids = hex_ids(10)
    write_embeddings(tmp_path, ids[:6], vectors(6), "m1", "vgg16")
    write_embeddings(tmp_path, ids[3:], vectors(7, seed=1), "m1", "vgg16")  # 3..5 again: kept as they were
    got_ids, got = read_embeddings(tmp_path, "m1")
    assert sorted(got_ids) == ids
    kept = dict(zip(got_ids, got))
    assert np.array_equal(kept[ids[4]], vectors(6)[4])
    write_embeddings(tmp_path, ids[:2], vectors(2, dim=8, seed=2), "m2", "vgg16")
    m2_ids, m2 = read_embeddings(tmp_path, "m2")
    assert sorted(m2_ids) == ids[:2] and m2.shape == (2, 8)
    assert sorted(read_embeddings(tmp_path, "m1")[0]) == ids[2:]
    assert embedded_ids(tmp_path, "m2") == set(ids[:2])
    with pytest.raises(ValueError, match="more than one method"):
        read_embeddings(tmp_path)


def test_reads_filter_by_design_and_network_and_are_empty_without_a_table(tmp_path):
    ids = hex_ids(8)
    write_embeddings(tmp_path, ids[:4], vectors(4), EMBEDDING_METHOD, "vgg16")
    write_embeddings(tmp_path, ids[4:], vectors(4, seed=1), EMBEDDING_METHOD, "vgg19")
    assert sorted(read_embeddings(tmp_path, network="vgg19")[0]) == ids[4:]
    assert sorted(read_embeddings(tmp_path, design_ids=[ids[1], ids[6], "nope"])[0]) == [ids[1], ids[6]]
    assert {n for _, _, networks in iter_embeddings(tmp_path) for n in networks} == {"vgg16", "vgg19"}
    empty_ids, empty = read_embeddings(tmp_path / "elsewhere")
    assert empty_ids.shape == (0,) and empty.shape[0] == 0
    assert embedded_ids(tmp_path / "elsewhere") == set()


@pytest.mark.parametrize(
    ("ids", "x", "match"),
    [
        (["a", "b"], vectors(3), "shape"),
        (["a"], vectors(1, dim=300), "dim 300"),
        (["a", "a"], vectors(2), "repeat"),
    ],
)
def test_a_bad_write_is_refused_naming_what_is_accepted(tmp_path, ids, x, match):
    with pytest.raises(ValueError, match=match):
        write_embeddings(tmp_path, ids, x, EMBEDDING_METHOD, "vgg16")
    assert not embeddings_path(tmp_path).exists()


def test_committed_rows_write_their_embeddings_failed_ones_none(tmp_path):
    ids = hex_ids(4)
    x = vectors(4)
    rows = [row(d, status="failed" if i == 3 else "ok") for i, d in enumerate(ids)]
    for r, v in zip(rows, x):
        r["params"] = {"network": "vgg16"}
        r[EMBEDDING_KEY] = to_bytes(v)
    rows[2].pop(EMBEDDING_KEY)  # an ok row without one (a colourway): left to the backfill
    catalog = DesignCatalog(tmp_path)
    catalog.commit(rows, "r1")  # the embedding is no column of `designs`
    assert EMBEDDING_KEY not in catalog.table().schema().to_arrow().names
    assert commit_embeddings(tmp_path, rows) == 2
    got_ids, got = read_embeddings(tmp_path, EMBEDDING_METHOD, network="vgg16")
    assert sorted(got_ids) == ids[:2]


def test_designs_query_reads_the_embeddings_table(tmp_path):
    ids = hex_ids(5)
    DesignCatalog(tmp_path).commit([row(d) for d in ids], "r1")
    empty = query(tmp_path, "select count(*) as n from embeddings")
    assert empty.column("n").to_pylist() == [0]
    write_embeddings(tmp_path, ids[:3], vectors(3), EMBEDDING_METHOD, "vgg16")
    result = query(
        tmp_path,
        "select e.design_id, e.dim, octet_length(e.embedding) as bytes, d.status "
        "from embeddings e join designs d using (design_id) order by 1",
    )
    assert result.column("design_id").to_pylist() == ids[:3]
    assert set(result.column("bytes").to_pylist()) == {512}
    assert set(result.column("status").to_pylist()) == {"ok"}


def test_the_small_files_of_shard_commits_are_compacted_once_due_and_nothing_is_lost(tmp_path):
    ids = hex_ids(40)
    x = vectors(40)
    for start in range(0, 40, 5):  # eight commits, eight small files
        write_embeddings(tmp_path, ids[start : start + 5], x[start : start + 5], EMBEDDING_METHOD, "vgg16")
    assert compact_embeddings(tmp_path, due_files=9) == 0  # not due
    assert len(DeltaTable(str(embeddings_path(tmp_path))).file_uris()) == 8
    assert compact_embeddings(tmp_path, due_files=8) == 8
    assert len(DeltaTable(str(embeddings_path(tmp_path))).file_uris()) == 1
    got_ids, got = read_embeddings(tmp_path)
    order = np.argsort(got_ids)
    assert list(got_ids[order]) == ids and np.array_equal(got[order], x)


def test_a_new_design_is_appended_reading_only_the_files_its_ids_meet_and_a_duplicate_is_read_once(
    tmp_path, monkeypatch
):
    import pipeline.catalog.embeddings as embeddings

    ids = hex_ids(30)
    for start in range(0, 30, 10):  # three files, each its own id range
        write_embeddings(tmp_path, ids[start : start + 10], vectors(10, seed=start), EMBEDDING_METHOD, "vgg16")
    opened = []
    real_read_rows = embeddings.read_rows

    def counting(table, path, columns=None, files=None, which="the latest version"):
        files = list(files) if files is not None else None
        opened.append(len(files) if files is not None else -1)
        return real_read_rows(table, path, columns, files, which)

    monkeypatch.setattr(embeddings, "read_rows", counting)
    assert write_embeddings(tmp_path, [ids[12], ids[15]], vectors(2), EMBEDDING_METHOD, "vgg16") == 0
    assert opened == [1]  # the one file whose id bounds hold them
    monkeypatch.undo()
    # Two writers at once may both append a design: readers keep one row.
    from deltalake import write_deltalake

    again = DeltaTable(str(embeddings_path(tmp_path))).to_pyarrow_table().slice(0, 1)
    write_deltalake(str(embeddings_path(tmp_path)), again, mode="append")
    got_ids, _ = read_embeddings(tmp_path)
    assert len(got_ids) == 30 and sorted(got_ids) == ids
