"""The scripts under data/ that make the docs' pictures: data/fabric.py (a 3x3 piece of
fabric from a repeat tile) and data/controls.py (one design per textile control), on
seeded random weights at tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import Config

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"data_script_{name}", ROOT / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fabric_script = load_script("fabric")
controls_script = load_script("controls")


def tile_png(path: Path, height: int = 24, width: int = 40) -> np.ndarray:
    """A tile whose every pixel differs from its neighbours, so a misplaced tile shows."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.mark.parametrize("repeat", ["block", "half-drop", "brick"])
def test_fabric_lays_the_tile_out_as_its_repeat_says(repeat, tmp_path):
    tile = tile_png(tmp_path / "tile.png")
    h, w = tile.shape[:2]
    out = tmp_path / "fabric.png"
    assert fabric_script.main([str(tmp_path / "tile.png"), repeat, str(out)]) == 0
    cloth = np.asarray(Image.open(out).convert("RGB"))
    assert cloth.shape == (3 * h, 3 * w, 3)
    for row in range(3):
        for column in range(3):
            cell = cloth[row * h : (row + 1) * h, column * w : (column + 1) * w]
            expected = tile
            if repeat == "half-drop":
                expected = np.roll(tile, (column * (h // 2)) % h, axis=0)
            elif repeat == "brick":
                expected = np.roll(tile, (row * (w // 2)) % w, axis=1)
            assert np.array_equal(cell, expected), (row, column)


def test_fabric_too_large_for_the_docs_is_quantized(tmp_path, monkeypatch):
    tile_png(tmp_path / "tile.png")
    monkeypatch.setattr(fabric_script, "MAX_BYTES", 1)
    data = fabric_script.fabric_png(Image.open(tmp_path / "tile.png"), "block")
    (tmp_path / "small.png").write_bytes(data)
    assert Image.open(tmp_path / "small.png").mode == "P"  # 256 colours, not full colour


def styles(tmp_path: Path) -> list[str]:
    paths = []
    for i, colour in enumerate(((200, 40, 40), (30, 60, 200))):
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        pixels[:, :] = colour
        pixels[::8] = 255  # stripes
        paths.append(tmp_path / f"style{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return [str(p) for p in paths]


def test_controls_makes_a_design_and_a_thumbnail_for_every_control(tmp_path, capsys):
    work, thumbs = tmp_path / "work", tmp_path / "thumbs"
    argv = ["--weights", "random", "--styles", *styles(tmp_path), "--work", str(work)]
    argv += ["--size", "64", "--steps", "2", "--thumbs", str(thumbs), "--thumb-size", "40"]
    assert controls_script.main(argv) == 0
    report = json.loads((work / "controls-64.json").read_text())
    assert set(report) == set(controls_script.NAMES)
    for name, entry in report.items():
        design = Image.open(work / "64" / f"{name}.png")
        assert design.size == (64, 64), name  # the hoodie is square, and so is every pattern
        assert entry["params"]["size"] == 64 and entry["params"]["steps"] == 2
        thumb = Image.open(thumbs / f"{name}.jpg")
        assert thumb.format == "JPEG" and thumb.width == 40
    for name in ("block", "half-drop", "brick", "colourway"):  # repeats are shown as 3x3 fabric
        assert Image.open(work / "64" / f"{name}-fabric.png").size == (192, 192)
    for name in ("block", "half-drop", "brick"):
        assert report[name]["seam_score"] is not None and report["pattern"]["seam_score"] is None
    params = {name: entry["params"] for name, entry in report.items()}
    assert params["colour-keep"]["color"] == "keep" and params["colour-match"]["color"] == "match"
    assert params["pooling-avg"]["pooling"] == "avg" and params["plain"]["pooling"] == "max"
    assert params["scale-0.5"]["style_scale"] == 0.5 and params["scale-2"]["style_scale"] == 2.0
    for name in ("pattern", "scale-0.5", "scale-2", "block", "half-drop", "brick"):
        assert params[name]["content_weight"] == 0 and params[name]["init"] == "noise", name
    assert params["plain"]["content_weight"] > 0
    assert report["mask"]["mask_leakage"] is not None and report["plain"]["mask_leakage"] is None
    colours = np.unique(np.asarray(Image.open(work / "64" / "colourway.png").convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) <= controls_script.INKS
    assert Image.open(work / "sheet-64.png").width > 0
    assert "colourway" in capsys.readouterr().out


def test_controls_refuses_an_unknown_control(tmp_path, capsys):
    argv = ["--weights", "random", "--styles", *styles(tmp_path), "--work", str(tmp_path / "w")]
    with pytest.raises(SystemExit) as info:
        controls_script.main([*argv, "--size", "64", "--steps", "1", "--only", "plain,stripes"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "stripes" in err and "half-drop" in err  # the bad name and those accepted
    assert not (tmp_path / "w").exists()


def test_controls_shows_designs_of_todays_defaults_only():
    """A work folder keeps designs made under older defaults; the pictures are today's."""
    plain = next(c for c in controls_script.CONTROLS if c.name == "plain")
    pattern = next(c for c in controls_script.CONTROLS if c.name == "pattern")
    today = Config(size=256, steps=300).resolved().to_dict()
    row = {"content_id": plain.content, "style_ids": ["s"], "params": controls_script._plain(today)}
    assert controls_script._matches(plain, row)
    older = {**row, "params": {**row["params"], "scales": [], "scale_steps": [], "tv_weight": 120.0}}
    assert not controls_script._matches(plain, older)
    # A pattern's defaults are pattern mode's: one scale, from noise.
    todays_pattern = Config(size=256, steps=300, content_weight=0.0, init="noise").resolved().to_dict()
    pattern_row = {"content_id": None, "style_ids": ["s"], "params": controls_script._plain(todays_pattern)}
    assert controls_script._matches(pattern, pattern_row) and not controls_script._matches(plain, pattern_row)
