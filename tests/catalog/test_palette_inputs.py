"""`designs colourways --palette FILE | --from-image IMG` on inputs that are not what they seem:
devices, FIFOs, folders and huge files are refused before they are read, in one short line;
a palette saved with a UTF-8 BOM is read; a large image is decoded reduced."""

from __future__ import annotations

import builtins
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipeline.engine.palette as palette_maths
from flows.cli import main
from pipeline.catalog.palettes import (
    MAX_PALETTE_BYTES,
    PALETTE_IMAGE_PIXELS,
    palette_from_file,
    palette_from_image,
)
from pipeline.engine.palette import ColourwayError


def _refused(path: Path | str) -> str:
    with pytest.raises(ColourwayError) as info:
        palette_from_file(path)
    return str(info.value)


@pytest.fixture
def no_open(monkeypatch):
    """Opening /dev/zero fails the test: it must be refused by its kind, before it is opened
    (read, it would grow memory for as long as it is read)."""
    for module, name in ((os, "open"), (io, "open"), (builtins, "open")):
        monkeypatch.setattr(module, name, _refusing_dev_zero(getattr(module, name)))


def _refusing_dev_zero(real):
    def guarded(file, *args, **kwargs):
        if str(file) == "/dev/zero":
            raise AssertionError("/dev/zero was opened")
        return real(file, *args, **kwargs)

    return guarded


def _without_blocking(call, fifo: Path):
    """call() in a thread; should it wait on the FIFO (a regression), a writer releases it and the test fails."""
    found: list[object] = []

    def attempt():
        try:
            found.append(call())
        except BaseException as err:  # handed to the test's thread
            found.append(err)

    reader = threading.Thread(target=attempt, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():
        with open(fifo, "w") as writer:
            writer.write("#000000 #ffffff\n")
        reader.join(timeout=10)
        pytest.fail("reading a FIFO palette blocked waiting for a writer")
    return found[0]


def test_dev_zero_is_refused_by_its_kind_before_it_is_opened(no_open):
    message = _refused("/dev/zero")
    assert "'/dev/zero' is a character device; accepted: a regular text file" in message


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path):
    fifo = tmp_path / "palette.fifo"
    os.mkfifo(fifo)
    found = _without_blocking(lambda: palette_from_file(fifo), fifo)
    assert isinstance(found, ColourwayError) and "is a FIFO; accepted: a regular text file" in str(found)


def test_a_folder_is_refused(tmp_path: Path):
    assert "is a directory; accepted: a regular text file" in _refused(tmp_path)


def test_a_file_over_the_bound_is_refused_in_a_short_line(tmp_path: Path):
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"#" + b"a" * (2 * 2**20))  # one 2 MB token, no spaces
    message = _refused(huge)
    assert f"{2 * 2**20 + 1} bytes; accepted: at most {MAX_PALETTE_BYTES} bytes" in message
    assert len(message) < 300


def test_a_long_bad_token_is_quoted_cut_short(tmp_path: Path):
    long = tmp_path / "long.txt"
    long.write_text("#000000 " + "x" * 100_000 + "\n")
    message = _refused(long)
    assert "is not a hex colour" in message and "(100000 characters)" in message and len(message) < 300


def test_a_palette_saved_with_a_bom_is_read(tmp_path: Path):
    saved = tmp_path / "bom.txt"
    saved.write_bytes(b"\xef\xbb\xbf#1F6FB4\n#f08a5d\n")
    assert palette_from_file(saved).colours == ("#1f6fb4", "#f08a5d")


def test_a_palette_that_is_not_utf8_is_refused_in_one_line(tmp_path: Path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"#000000 #ffffff # noir et blanc \xe9\n")
    assert "not UTF-8 text (byte 32)" in _refused(latin)


def _one_refusal_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("designs colourways: refused: palette") and captured.out == ""
    assert captured.err.count("\n") == 1 and len(captured.err) < 300
    return captured.err


def test_the_cli_refuses_dev_zero_in_one_line(tmp_path: Path, capsys, no_open):
    assert main(["colourways", str(tmp_path / "out"), "--palette", "/dev/zero"]) == 2
    assert "character device" in _one_refusal_line(capsys)


def test_the_cli_refuses_a_fifo_in_one_line(tmp_path: Path, capsys):
    os.mkfifo(tmp_path / "fifo")
    args = ["colourways", str(tmp_path / "out"), "--palette", str(tmp_path / "fifo")]
    assert _without_blocking(lambda: main(args), tmp_path / "fifo") == 2
    assert "FIFO" in _one_refusal_line(capsys)


def test_the_cli_refuses_a_huge_palette_in_one_line(tmp_path: Path, capsys):
    (tmp_path / "huge").write_bytes(b"#000000 " * (2**20 // 4))  # 2 MiB of colours
    assert main(["colourways", str(tmp_path / "out"), "--palette", str(tmp_path / "huge")]) == 2
    assert "accepted: at most" in _one_refusal_line(capsys)


def test_a_large_image_is_decoded_reduced_for_its_palette(tmp_path: Path, monkeypatch):
    # Four flat quadrants at 4000x4000: a full decode would hand 16M pixels to the colour maths.
    side = 4000
    array = np.zeros((side, side, 3), dtype=np.uint8)
    colours = [(200, 30, 30), (30, 160, 60), (20, 40, 200), (240, 220, 40)]
    for i, colour in enumerate(colours):
        array[(i // 2) * side // 2 : (i // 2 + 1) * side // 2, (i % 2) * side // 2 : (i % 2 + 1) * side // 2] = colour
    path = tmp_path / "big.jpg"
    Image.fromarray(array).save(path, quality=95)
    seen: list[int] = []
    real = palette_maths.srgb_to_oklab

    def counted(rgb):
        seen.append(int(np.asarray(rgb).size // 3))
        assert seen[-1] <= PALETTE_IMAGE_PIXELS, f"{seen[-1]} pixels handed to the colour maths"
        return real(rgb)

    monkeypatch.setattr(palette_maths, "srgb_to_oklab", counted)
    palette = palette_from_image(path, 4)
    assert seen and seen[0] >= PALETTE_IMAGE_PIXELS // 2  # reduced, not to a handful
    found = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in palette.colours])
    for colour in colours:  # each quadrant's colour is one of the four found
        assert np.abs(found - colour).max(axis=1).min() <= 8
