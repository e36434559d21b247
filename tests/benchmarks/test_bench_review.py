"""benchmarks/review.py: the review desk's bench builds its synthetic catalog and curation and
times every page it names (a small catalog here; the 10M one is docs/BENCHMARKS.md's)."""

from __future__ import annotations

from benchmarks import review


def test_review_bench_runs_on_a_small_catalog(tmp_path, capsys):
    review.main(["--rows", "3000", "--keep", str(tmp_path / "out"), "--no-record"])
    lines = capsys.readouterr().out.splitlines()
    row = [cell.strip() for cell in lines[-1].strip("|").split("|")]
    assert row[2] == "3,000"
    assert "(page 31)" in row[6]  # half of the 63 pages
    first, *rest = row[10].split(" / ")
    assert int(first.replace(",", "")) >= 1 and rest == ["1"]  # design files, one curation file
    assert (tmp_path / "out" / "curation").is_dir()
