"""A small synthetic design catalog for the review desk's tests (tests/views/test_review*.py,
tests/catalog/test_reviews.py): rows committed through DesignCatalog.commit with real PNG files
under OUT/images, no optimization, and optionally a curation table as `designs curate` writes it
(docs/ANALYSTS.md): representatives first by score, then the rest by group and rank."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake
from PIL import Image

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.schema import SCHEMA

HOSTILE = "<script>alert(1)</script>"
RUN_ID = "20261205T000000Z-review"
COLOURWAYS_RUN = "20261205T010000Z-colourways"  # as `designs colourways` names its runs
CURATION_SCHEMA = pa.schema(
    [
        pa.field("design_id", pa.string()),
        pa.field("group_id", pa.string()),
        pa.field("group_size", pa.int32()),
        pa.field("representative", pa.string()),
        pa.field("rank_in_group", pa.int32()),
        pa.field("score", pa.float64()),
        pa.field("review_order", pa.int64()),
        pa.field("method", pa.string()),
        pa.field("curated_at", pa.timestamp("us", tz="UTC")),
        pa.field("curation_run", pa.string()),
    ]
)


def png(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def design_id(i: int) -> str:
    return hashlib.sha256(f"design{i}".encode()).hexdigest()[:32]


def build_review_catalog(out: Path, n: int = 60, image_size: int = 16, curated: bool = True) -> list[str]:
    """n ok designs (contents c0..c2, styles s0..s3 one of them hostile, repeat block or brick) and
    one failed; every 7th design a colourway of the one before. Returns the ok ids in review order
    (curation order when `curated`, else design_id order)."""
    catalog = DesignCatalog(out)
    now = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
    rows = []
    for i in range(n):
        did = design_id(i)
        data = png(i, image_size)
        sha = hashlib.sha256(data).hexdigest()
        rel = catalog.image_relpath(did, sha)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        style = HOSTILE if i % 4 == 3 else f"s{i % 4}"
        rows.append(
            {
                "design_id": did,
                "run_id": COLOURWAYS_RUN if i % 7 == 6 else RUN_ID,
                "created_at": now,
                "status": "ok",
                "content_id": f"c{i % 3}",
                "style_id": style,
                "output_uri": rel,
                "output_sha256": sha,
                "width": image_size,
                "height": image_size,
                "params": {"steps": 10 + i, "repeat": "brick" if i % 2 else "block", "style_weight": 0.1},
                "loss_total": [10.0, 5.0, 2.0 + i / 100],
                "final_loss": {"total": 2.0, "style": 1.0, "content": 1.0, "tv": 0.0},
                "quality": {"style_ratio": 0.1 + i / 1000, "style_ratio_per_layer": [0.1, 0.2], "content_kept": 0.9},
                "parent_design_id": design_id(i - 1) if i % 7 == 6 else None,
                "palette": ["#000000", "#ffffff"] if i % 7 == 6 else None,
                "tags": [HOSTILE],
                "pairing_key": f"k{i}",
            }
        )
    rows.append(
        {
            "design_id": design_id(10_000),
            "run_id": RUN_ID,
            "created_at": now,
            "status": "failed",
            "content_id": "c0",
            "style_id": "s0",
            "error": f"boom {HOSTILE}",
            "pairing_key": "kf",
        }
    )
    for run in (RUN_ID, COLOURWAYS_RUN):
        mine = [{name: row.get(name) for name in SCHEMA.names} for row in rows if row["run_id"] == run]
        if mine:
            catalog.commit(mine, run, "colourways: test" if run == COLOURWAYS_RUN else "shard")
    if any(row["run_id"] == COLOURWAYS_RUN for row in rows):
        (out / "runs" / COLOURWAYS_RUN).mkdir(parents=True, exist_ok=True)
    ok = [r["design_id"] for r in rows if r["status"] == "ok"]
    if not curated:
        return sorted(ok)
    return write_curation(out, ok)


def write_curation(out: Path, ids: list[str], group_size: int = 4) -> list[str]:
    """Groups of `group_size` consecutive ids; score falls with the index; returns the review order."""
    groups = [ids[i : i + group_size] for i in range(0, len(ids), group_size)]
    score = {d: 1.0 - i / len(ids) for i, d in enumerate(ids)}
    reps = sorted((g[0] for g in groups), key=lambda d: (-score[d], d))
    rest = [d for g in groups for d in g[1:]]
    order = reps + rest
    group_of = {d: (f"g{gi}", g) for gi, g in enumerate(groups) for d in g}
    now = datetime(2026, 12, 5, 7, 0, tzinfo=UTC)
    rows = [
        {
            "design_id": d,
            "group_id": group_of[d][0],
            "group_size": len(group_of[d][1]),
            "representative": group_of[d][1][0],
            "rank_in_group": group_of[d][1].index(d) + 1,
            "score": score[d],
            "review_order": k,
            "method": "test",
            "curated_at": now,
            "curation_run": "cur1",
        }
        for k, d in enumerate(order)
    ]
    write_deltalake(str(out / "curation"), pa.Table.from_pylist(rows, schema=CURATION_SCHEMA), mode="overwrite")
    return order
