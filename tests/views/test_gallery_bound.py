"""The static gallery past its bound (pipeline/views/gallery.py): the curated representatives
only, saying so; without a curation, the first designs by score and a line saying to run
`designs curate`; never the whole table read into Python."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from curation_catalog import build_curation_catalog, design_id

from flows.cli import main
from pipeline.execution.curate import curate
from pipeline.views import gallery
from pipeline.views.gallery import build_gallery


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch) -> Path:
    out = build_curation_catalog(tmp_path / "out")

    def whole_table(*args, **kwargs):
        raise AssertionError("the whole table was read past the bound")

    monkeypatch.setattr(gallery, "read_table", whole_table)
    return out


def cards(page: Path) -> list[str]:
    return re.findall(r'<article class="card" data-design="([0-9a-f]+)"', page.read_text())


def test_past_the_bound_without_a_curation_the_first_by_score_and_a_hint(catalog: Path):
    report = build_gallery(catalog, max_designs=5)
    # Scores: each style's design 4s+2 first (0.85), then 4s (0.75), 4s+1 (0.7), 4s+3 (0.6); ties by id.
    second = sorted(design_id(i) for i in (0, 4, 8))[:2]
    assert sorted(cards(report.path)) == sorted([design_id(2), design_id(6), design_id(10), *second])
    text = report.path.read_text()
    assert "13 designs: past the gallery&#x27;s bound of 5, showing the first 5 by score" in text
    assert "Run `designs curate`" in text
    assert "showing the first 5 by score" in report.line()


def test_past_the_bound_with_a_curation_the_representatives_only(catalog: Path, monkeypatch, capsys):
    curate(catalog, threshold=0.02)
    report = build_gallery(catalog, max_designs=5)
    assert sorted(cards(report.path)) == sorted(design_id(i) for i in (2, 6, 10))
    assert "showing the 3 curated representatives" in report.path.read_text()
    assert report.designs == 3
    # The command line's bound is the module's (pipeline/config.py GALLERY_MAX_DESIGNS), and it says so.
    monkeypatch.setattr(gallery, "GALLERY_MAX_DESIGNS", 5)
    assert main(["gallery", str(catalog)]) == 0
    assert "showing the 3 curated representatives (each near-duplicate group's best" in capsys.readouterr().out


def test_a_colourway_stays_in_its_parents_card_past_the_bound(catalog: Path):
    report = build_gallery(catalog, max_designs=9)  # down to the 0.7 designs: 1, 5, 9
    shown = cards(report.path)
    assert len(shown) == 9 and design_id(1) in shown and design_id(60) not in shown
    assert f'data-colourway="{design_id(60)}"' in report.path.read_text()


def test_under_the_bound_every_design_as_before(tmp_path: Path, capsys):
    out = build_curation_catalog(tmp_path / "out")
    assert main(["gallery", str(out)]) == 0
    page = out / "gallery.html"
    assert len(cards(page)) == 12  # the colourway inside its parent's card
    assert 'id="bound"' not in page.read_text()
    assert "past the gallery's bound" not in capsys.readouterr().out
