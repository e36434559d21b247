"""A run's summary from a tally kept as shards commit: exact counts and device time,
the first failures listed and the rest counted, a bounded sample for the pictures."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.execution.summary import MAX_FAILURES, SAMPLE_FIELDS, SAMPLE_SIZE, Sample, Tally, summarize
from pipeline.planning.plan import Plan


def rows(start: int, n: int, failed_every: int = 0) -> list[dict]:
    made = []
    for i in range(start, start + n):
        failed = failed_every and i % failed_every == 0
        made.append(
            {
                "design_id": f"d{i:07d}",
                "status": "failed" if failed else "ok",
                "error": "bad input" if failed else None,
                "content_id": "c",
                "style_id": f"s{i}",
                "style_ids": [f"s{i}"],
                "params": {"steps": 3},
                "seam_score": None,
                "output_uri": None if failed else f"images/x/{i}.png",
                "loss_total": [3.0, 2.0, 1.0],
                "loss_every": 10,
                "device": "cuda:0" if i % 2 else "cuda:1",
                "content_extra": "x" * 1000,
                "timings": {"targets_s": 0.5, "optimize_s": 1.5},
            }
        )
    return made


def test_the_tally_counts_exactly_and_lists_only_the_first_failures():
    tally, sample = Tally(), Sample()
    for shard in range(200):  # 200 shards of 128: 25,600 designs, one in 10 failed
        batch = rows(shard * 128, 128, failed_every=10)
        tally.add(batch)
        sample.add(batch)
    assert (tally.ok, tally.failed, tally.rows) == (23_040, 2_560, 25_600)
    assert len(tally.failures) == MAX_FAILURES and tally.failures[0]["design_id"] == "d0000000"
    assert tally.busy_seconds == {"cuda:0": 12_800 * 2.0, "cuda:1": 12_800 * 2.0}
    assert len(sample.rows) == SAMPLE_SIZE and sample.seen == 25_600
    assert all(set(r) == set(SAMPLE_FIELDS) for r in sample.rows)  # no whole records kept
    # drawn from the whole run, not its first shards
    assert max(int(r["design_id"][1:]) for r in sample.rows) > 20_000


def test_the_sample_keeps_every_row_of_a_small_run_and_is_seeded():
    small = Sample()
    small.add(rows(0, 10))
    assert [r["design_id"] for r in small.rows] == [f"d{i:07d}" for i in range(10)]
    a, b = Sample(size=5), Sample(size=5)
    for s in (a, b):
        s.add(rows(0, 1000))
    assert [r["design_id"] for r in a.rows] == [r["design_id"] for r in b.rows]


def test_the_summary_comes_from_the_tally():
    tally = Tally()
    tally.add(rows(0, 100, failed_every=4))
    plan = Plan(todo=tuple(range(110)), failed=(), already_done=5, pairings=115, duplicates=0)
    summary = summarize("r", "f", "c.parquet", "out", datetime.now(UTC), 100.0, plan, tally, ["cuda:0", "cuda:1"], 3)
    assert (summary.ok, summary.failed, summary.left) == (75, 25, 10)
    assert len(summary.failures) == 25
    assert summary.device_busy_fraction == {"cuda:0": 1.0, "cuda:1": 1.0}
    lines = summary.report_lines()
    assert lines[0].startswith("run r: 75 ok, 25 failed, 5 already in the catalog (of 115 pairings)")
