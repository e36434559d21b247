"""Colourways: finished designs recoloured into flat inks, as new rows under their parent;
a rerun adds nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.cli import main
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.inputs import load_input_catalog
from pipeline.catalog.palettes import palette_from_file, palette_from_image
from pipeline.config import Config
from pipeline.engine.palette import ColourwayError, inks_palette
from pipeline.engine.weights import resolve_weights
from pipeline.execution.colourways import colourway_id, make_colourways
from pipeline.execution.shard import run_shard
from pipeline.planning.plan import plan_designs
from pipeline.planning.variants import job_specs
from pipeline.views.contact_sheet import CONTACT_SHEET, PAD, THUMB
from pipeline.views.gallery import build_gallery

TINY = Config(weights="random", size=32, steps=2, loss_every=1)


@pytest.fixture
def designs(sample_catalog: Path, tmp_path: Path) -> Path:
    """A design catalog of three optimized designs (two contents, one a block repeat)."""
    weights = resolve_weights("random", 0)
    inputs = load_input_catalog(sample_catalog)
    out = tmp_path / "out"
    catalog = DesignCatalog(out)
    for config, content in ((TINY, "dress"), (TINY.replace(repeat="block"), "tshirt")):
        plan = plan_designs(inputs, config, weights.identity, set(), job_specs(inputs, config))
        jobs = [j for j in plan.todo if j.content_id == content][: 2 if content == "dress" else 1]
        catalog.commit(run_shard(jobs, config, weights, "cpu", catalog, "r"), "r")
    return out


def test_palette_from_an_image_is_its_own_colours(tmp_path: Path):
    picture = np.zeros((20, 20, 3), np.uint8)
    picture[:10] = (200, 30, 30)
    picture[10:] = (20, 40, 160)
    Image.fromarray(picture).save(tmp_path / "swatch.png")
    palette = palette_from_image(tmp_path / "swatch.png", 2)
    assert palette.colours == ("#1428a0", "#c81e1e") and palette.key.startswith("image:")
    with pytest.raises(ColourwayError, match="has 2 colours; accepted: --inks 2 or fewer"):
        palette_from_image(tmp_path / "swatch.png", 3)


def test_colourways_are_new_rows_under_their_parent_and_reruns_add_nothing(designs: Path, tmp_path: Path):
    parents = DesignCatalog(designs).to_pandas()
    assert len(parents) == 3
    report = make_colourways(designs, inks_palette(3))
    assert len(report.made) == 3 and report.already == 0
    table = DesignCatalog(designs).to_pandas().set_index("design_id")
    made = table.loc[report.made]
    assert set(made.parent_design_id) == set(parents.design_id)
    for cid, row in made.iterrows():
        assert cid == colourway_id(row.parent_design_id, inks_palette(3))
        assert row.status == "ok" and len(row.palette) == 3 and row.notes.startswith("colourway of ")
        with Image.open(designs / row.output_uri) as png:
            assert png.info["parent_design_id"] == row.parent_design_id and png.info["design_id"] == cid
            assert len(png.getcolors(4096)) == 3  # three flat inks
        assert row.params["size"] == 32 and row.content_id == table.loc[row.parent_design_id].content_id
        # Not optimized: no quality of its own (its parent's row has one).
        assert row.quality is None and table.loc[row.parent_design_id].quality is not None
    tiled = made[made.params.map(lambda p: p["repeat"] == "block")]
    assert len(tiled) == 1 and tiled.seam_score.iloc[0] >= 0  # measured again on the recoloured tile
    version = DesignCatalog(designs).version()

    again = make_colourways(designs, inks_palette(3))
    assert again.made == [] and again.already == 3 and DesignCatalog(designs).version() == version

    # Another palette on the dress designs only; colourways are never recoloured themselves.
    palette = tmp_path / "autumn.txt"
    palette.write_text("#3b1f0e\n#b4451f\n#f2d49b\n")
    narrowed = make_colourways(designs, palette_from_file(palette), where="content_id = 'dress'")
    assert len(narrowed.made) == 2 and narrowed.parents == 2
    final = DesignCatalog(designs).to_pandas()
    assert len(final) == 8 and final.design_id.is_unique

    # The gallery shows each colourway inside its parent's card.
    build_gallery(designs)
    html = (designs / "gallery.html").read_text()
    for cid, row in made.iterrows():
        card = html[html.index(f'data-design="{row.parent_design_id}"') :]
        assert f'data-colourway="{cid}"' in card[: card.index("</article>")]
    assert html.count('class="card"') == 3  # the parents; the colourways are inside them


def test_the_cli_refuses_in_one_line(designs: Path, tmp_path: Path, capsys):
    assert main(["colourways", str(designs)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    bad = tmp_path / "bad.txt"
    bad.write_text("#12345\n")
    assert main(["colourways", str(designs), "--palette", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "'#12345' is not a hex colour" in err and err.strip().count("\n") == 0
    assert main(["colourways", str(designs), "--inks", "3", "--where", "no_such_column = 1"]) == 2
    assert "--where" in capsys.readouterr().err
    # A --where that closes the predicate and starts a second statement is a parse error: it is one expression.
    escape = f"true); copy (select 1 as a) to '{tmp_path / 'leak.csv'}'; select (1"
    assert main(["colourways", str(designs), "--inks", "3", "--where", escape]) == 2
    assert "syntax error" in capsys.readouterr().err and not (tmp_path / "leak.csv").exists()
    assert main(["colourways", str(tmp_path / "none"), "--inks", "3"]) == 2
    assert main(["colourways", str(designs), "--inks", "2", "--where", "content_id = 'tshirt'"]) == 0
    assert "1 made" in capsys.readouterr().out


def test_where_is_one_expression_that_only_narrows(designs: Path, tmp_path: Path, capsys):
    """--where cannot close the ok-and-not-a-colourway filter, start a statement, or write a file."""
    assert main(["colourways", str(designs), "--inks", "3"]) == 0  # three colourways to not recolour
    capsys.readouterr()
    catalog = DesignCatalog(designs)
    version = catalog.version()
    files = [Path(uri) for uri in catalog.table().file_uris()]
    before = {path: path.read_bytes() for path in files}
    target = files[0]
    attacks = [
        "1=1) or (1=1",
        f"true); explain analyze copy (select 'PWNED' as x) to '{target}' (format csv, use_tmp_file false); "
        "select design_id from designs where (true",
        "true from designs where true",
        "true; select 1",
    ]
    for where in attacks:
        assert main(["colourways", str(designs), "--inks", "2", "--where", where]) == 2, where
        err = capsys.readouterr().err
        assert err.startswith("designs colourways: refused: --where") and err.count("\n") == 1, err
    assert catalog.version() == version and {path: path.read_bytes() for path in files} == before
    # An expression that is true everywhere still selects only the three ok designs, not their colourways.
    report = make_colourways(
        designs, inks_palette(2), where="parent_design_id is not null or status = 'failed' or true"
    )
    assert report.parents == 3 and len(report.made) == 3
    # The selection has a time limit.
    endless = "(select count(*) from range(100000000000000)) > 0"
    assert main(["colourways", str(designs), "--inks", "4", "--timeout", "0.5", "--where", endless]) == 2
    err = capsys.readouterr().err
    assert err == "designs colourways: refused: the selection of designs (--where) stopped after 0.5 s (--timeout)\n"


def test_a_table_made_before_colourways_takes_the_new_columns(designs: Path, tmp_path: Path):
    import shutil

    from deltalake import write_deltalake

    old = tmp_path / "old"
    table = DesignCatalog(designs).table().to_pyarrow_table().drop_columns(["parent_design_id", "palette"])
    write_deltalake(str(old / "designs"), table)
    shutil.copytree(designs / "images", old / "images")
    assert "palette" not in DesignCatalog(old).to_pandas().columns
    report = make_colourways(old, inks_palette(2))
    assert len(report.made) == 3
    frame = DesignCatalog(old).to_pandas()
    assert len(frame) == 6 and frame.parent_design_id.notna().sum() == 3
    assert frame[frame.parent_design_id.isna()].palette.isna().all()
    assert make_colourways(old, inks_palette(2)).made == []


def test_the_cli_draws_each_colourway_beside_its_parent(designs: Path, capsys):
    assert main(["colourways", str(designs), "--inks", "2", "--where", "content_id = 'tshirt'"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("contact sheet: ")]
    sheet = Path(line.removeprefix("contact sheet: "))
    assert sheet.name == CONTACT_SHEET and sheet.parent.parent == designs / "runs"
    with Image.open(sheet) as image:
        assert image.width == 2 * (THUMB + PAD) + PAD  # two cells: the parent, then its colourway
