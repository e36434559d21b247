"""`make demo`: WEIGHTS=PATH as given, else --weights auto where it finds or downloads a file,
else random weights with one line saying so and where real ones come from."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from flows import demo_weights as demo
from pipeline.engine import weights

ROOT = Path(__file__).resolve().parents[2]


def test_an_explicit_file_is_used_as_given(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an explicit file needs no search")

    monkeypatch.setattr(weights, "resolve_weights", refuse)
    assert demo.demo_weights("../shared/weights/vgg16.h5") == ("../shared/weights/vgg16.h5", None)


def test_auto_where_a_file_is_found_or_downloaded(monkeypatch):
    calls = []
    monkeypatch.setattr(weights, "resolve_weights", lambda spec, seed: calls.append(spec) or object())
    assert demo.demo_weights() == ("auto", None)
    assert calls == ["auto"]


def test_random_with_one_line_saying_where_real_weights_come_from(monkeypatch, capsys):
    def offline(spec, seed):
        raise weights.WeightsError(weights.how_to_provide("download failed: <urlopen error no network>"))

    monkeypatch.setattr(weights, "resolve_weights", offline)
    assert demo.main([]) == 0
    out, err = capsys.readouterr()
    assert out == "random\n"
    assert err.count("\n") == 1, err
    assert "download failed: <urlopen error no network>" in err
    assert "random weights" in err and "`designs weights fetch`" in err and "make demo WEIGHTS=PATH" in err


def test_the_makefile_picks_the_flags_from_the_answer():
    """Real weights get the paper's defaults at a CPU size; only random weights get the tuned flags."""
    text = (ROOT / "Makefile").read_text()
    flags = dict(re.findall(r"^(DEMO_\w+) := (.*)$", text, re.M))
    assert "--weights" not in flags["DEMO_FLAGS"] and "--weights" not in flags["DEMO_RANDOM_FLAGS"]
    assert not re.search(r"--(tv-weight|learning-rate|style-weight|grid)", flags["DEMO_FLAGS"])
    assert "--tv-weight 1" in flags["DEMO_RANDOM_FLAGS"]
    if shutil.which("make") is None:
        pytest.skip("no make on this machine")
    dry = subprocess.run(
        ["make", "-n", "demo", "WEIGHTS=/w/vgg16.h5", "STAMP=Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '-m flows.demo_weights "/w/vgg16.h5"' in dry
    assert '--weights "$weights" $flags' in dry
