"""Contact-sheet labels (pipeline/views/contact_sheet.py): wrapped between tokens, never inside
a number or a word; what cannot fit is shortened with an ellipsis."""

from __future__ import annotations

from pipeline.config import Config
from pipeline.views.contact_sheet import ELLIPSIS, LABEL_CHARS, LABEL_LINES, _label

DEFAULTS = Config().to_dict()


def row(status: str = "ok", content_id: str | None = "dress", **params) -> dict:
    return {
        "content_id": content_id,
        "style_id": "waves",
        "status": status,
        "seam_score": 1.0342 if params.get("repeat", "none") != "none" else None,
        "params": {**DEFAULTS, **params},
    }


def test_labels_break_between_tokens_and_mark_what_they_leave_out():
    varied = row(style_weight=0.0123456, content_weight=123456.789, seed=12345, init="noise")
    lines = _label(varied, DEFAULTS)
    # Every token shown is whole; the last line's ellipsis says that seed and init were left out.
    assert lines == ["dress x waves", "style_weight=0.0123456", f"content_weight=123457 {ELLIPSIS}"]
    assert all(len(line) <= LABEL_CHARS for line in lines)

    # A failed design keeps its FAILED line; a tiled one names its seam score as one token.
    failed = _label(row(status="failed", repeat="half-drop", style_weight=0.0123456), DEFAULTS)
    assert failed == ["dress x waves", f"repeat=half-drop {ELLIPSIS}", "FAILED"] and len(failed) == LABEL_LINES
    assert _label(row(repeat="brick"), DEFAULTS)[1] == "repeat=brick seam=1.03"

    # A list is one token without spaces, so it cannot be split between lines either.
    assert _label(row(scales=(128, 256, 512)), DEFAULTS)[1] == "scales=128,256,512"


def test_a_token_too_long_for_a_line_is_shortened_with_an_ellipsis():
    long_name = "a-very-long-garment-name-indeed"
    title, scales = _label(row(content_id=long_name, scales=(512, 1024, 2048, 4096, 8192)), DEFAULTS)
    assert title == f"{long_name} x waves"[: LABEL_CHARS - 1] + ELLIPSIS
    assert scales == "scales=512,1024,2048,4096,8192"[: LABEL_CHARS - 1] + ELLIPSIS


def test_a_colourway_is_labelled_by_its_inks_not_its_parents_params():
    colourway = {
        **row(repeat="half-drop", style_weight=10.0),
        "parent_design_id": "ab" * 16,
        "palette": ["#000000"] * 4,
    }
    assert _label(colourway, DEFAULTS) == ["dress x waves", "colourway inks=4 seam=1.03"]
