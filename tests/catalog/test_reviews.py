"""The reviews table (pipeline/catalog/reviews.py): append-only verdicts, idempotent by
verdict_id, concurrent writers losing nothing, the latest verdict per reviewer and design."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.catalog import reviews
from pipeline.catalog.reviews import Verdict, append_verdict, favourite_ids, latest_verdicts, read_reviews


def verdict(design_id: str, kind: str, reviewer: str = "ana", key: str | None = None) -> Verdict:
    return Verdict(key or uuid.uuid4().hex, design_id, kind, reviewer, "s1")


def test_no_table_reads_empty(tmp_path):
    assert read_reviews(tmp_path).num_rows == 0
    assert latest_verdicts(tmp_path).column_names == ["design_id", "reviewer", "verdict", "at"]
    assert favourite_ids(tmp_path) == []


def test_a_retried_verdict_adds_nothing(tmp_path):
    v = verdict("abc123", "favourite")
    assert append_verdict(tmp_path, v) is True
    assert append_verdict(tmp_path, v) is False
    assert read_reviews(tmp_path).num_rows == 1


def test_latest_verdict_per_reviewer_and_design_counts(tmp_path):
    t0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    append_verdict(tmp_path, verdict("d1", "favourite"), at=t0)
    append_verdict(tmp_path, verdict("d1", "reject"), at=t0 + timedelta(seconds=1))
    append_verdict(tmp_path, verdict("d2", "favourite"), at=t0)
    append_verdict(tmp_path, verdict("d2", "clear"), at=t0 + timedelta(seconds=2))
    append_verdict(tmp_path, verdict("d3", "favourite", reviewer="bo"), at=t0)
    append_verdict(tmp_path, verdict("d1", "favourite", reviewer="bo"), at=t0 - timedelta(seconds=5))
    latest = {(r["design_id"], r["reviewer"]): r["verdict"] for r in latest_verdicts(tmp_path).to_pylist()}
    assert latest == {
        ("d1", "ana"): "reject",
        ("d2", "ana"): "clear",
        ("d3", "bo"): "favourite",
        ("d1", "bo"): "favourite",
    }
    assert favourite_ids(tmp_path) == ["d1", "d3"]
    assert favourite_ids(tmp_path, "ana") == []
    assert favourite_ids(tmp_path, "bo") == ["d1", "d3"]
    assert reviews.verdicts_of(tmp_path, "ana") == {"d1": "reject"}


@pytest.mark.parametrize(
    "field, value",
    [("verdict", "love"), ("verdict_id", "not-hex"), ("design_id", "../x"), ("reviewer", "a b"), ("reviewer", "")],
)
def test_bad_fields_are_refused_and_write_nothing(tmp_path, field, value):
    good = dict(verdict_id=uuid.uuid4().hex, design_id="d1", verdict="favourite", reviewer="ana", review_session="s1")
    good[field] = value
    with pytest.raises(ValueError, match=field):
        append_verdict(tmp_path, Verdict(**good))
    assert not reviews.reviews_path(tmp_path).exists()


def _writer(out: str, prefix: str, n: int) -> None:
    for i in range(n):
        append_verdict(out, Verdict(uuid.uuid4().hex, f"{prefix}{i}", "favourite", prefix, "s1"))


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    append_verdict(tmp_path, verdict("d0", "favourite"))  # the table exists before the race
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_writer, args=(str(tmp_path), p, 8)) for p in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    rows = read_reviews(tmp_path)
    assert rows.num_rows == 17
    assert len(set(rows.column("verdict_id").to_pylist())) == 17


def test_compaction_keeps_every_verdict(tmp_path):
    for i in range(5):
        append_verdict(tmp_path, verdict(f"d{i}", "favourite"))
    assert reviews.compact_reviews(tmp_path, min_files=100) == 0
    assert reviews.compact_reviews(tmp_path, min_files=3) >= 5
    assert read_reviews(tmp_path).num_rows == 5
    assert favourite_ids(tmp_path) == [f"d{i}" for i in range(5)]
    assert os.path.isdir(reviews.reviews_path(tmp_path) / "_delta_log")


def test_designs_query_reads_reviews(tmp_path):
    from review_catalog import build_review_catalog

    from pipeline.catalog.sql import connect

    ids = build_review_catalog(tmp_path, n=4, curated=False)
    append_verdict(tmp_path, verdict(ids[0], "favourite"))
    append_verdict(tmp_path, verdict(ids[1], "reject"))
    con = connect(tmp_path)
    try:
        got = con.execute("select design_id, verdict from reviews order by verdict").fetchall()
        joined = con.execute(
            "select count(*) from reviews r join designs d using (design_id) where r.verdict = 'favourite'"
        ).fetchone()
    finally:
        con.close()
    assert got == [(ids[0], "favourite"), (ids[1], "reject")]
    assert joined == (1,)


def test_designs_query_reads_an_empty_reviews_table(tmp_path):
    from review_catalog import build_review_catalog

    from pipeline.catalog.sql import connect

    build_review_catalog(tmp_path, n=2, curated=False)
    con = connect(tmp_path)
    try:
        assert con.execute("select count(*) from reviews").fetchone() == (0,)
    finally:
        con.close()


def test_designs_query_refuses_a_reviews_file_linked_out_of_its_table(tmp_path):
    from review_catalog import build_review_catalog

    from pipeline.catalog.history import QueryError
    from pipeline.catalog.sql import connect

    build_review_catalog(tmp_path / "out", n=2, curated=False)
    append_verdict(tmp_path / "out", verdict("d1", "favourite"))
    (data,) = list((reviews.reviews_path(tmp_path / "out")).glob("*.parquet"))
    outside = tmp_path / "outside.parquet"
    data.rename(outside)
    data.symlink_to(outside)
    with pytest.raises(QueryError, match="outside its folder"):
        connect(tmp_path / "out")
    with pytest.raises(ValueError, match="outside its folder"):
        read_reviews(tmp_path / "out")
