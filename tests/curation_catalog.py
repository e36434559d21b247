"""A small design catalog with embeddings for the curation tests (`designs curate`, the
gallery's bound): rows committed directly (no image is made), embeddings written as the
engine would. Three styles of four near-duplicate designs each (a parameter grid), one failed
design, and a colourway of design 1 without an embedding (its weights are not at hand)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import EMBEDDING_METHOD, write_embeddings

DIM = 32


def design_id(i: int) -> str:
    return hashlib.sha256(f"design-{i}".encode()).hexdigest()[:32]


def row(i: int, style: str, style_ratio: float | None, content_kept: float | None, **extra) -> dict:
    quality = None
    if style_ratio is not None:
        quality = {"style_ratio": style_ratio, "content_kept": content_kept, "style_ratio_per_layer": [style_ratio]}
    return {
        "design_id": design_id(i),
        "pairing_key": f"key-{i}",
        "run_id": "r1",
        "created_at": datetime.now(UTC),
        "status": "ok",
        "content_id": "tshirt",
        "style_id": style,
        "output_uri": f"images/{i}.png",
        "params": {"network": "vgg16", "weights": "sha256:" + "ab" * 32},
        "quality": quality,
        **extra,
    }


def build_curation_catalog(out: Path) -> Path:
    """Three styles, four designs each (near-duplicates of one another: a parameter grid), one
    failed design, and a colourway of design 1 (no embedding: the weights are not at hand)."""
    rng = np.random.default_rng(0)
    rows, vectors = [], []
    centres = rng.standard_normal((3, DIM))
    for i in range(12):
        style = i // 4
        # Design 4 * style + 2 has the best score in its style (lowest ratio, content kept).
        ratio = 0.1 if i % 4 == 2 else 0.3 + 0.1 * (i % 4)
        rows.append(row(i, f"style{style}", ratio, 0.8))
        vectors.append(centres[style] + 0.01 * rng.standard_normal(DIM))
    failed = row(50, "style0", None, None, status="failed", error="a fault")
    colourway = row(60, "style0", None, None, parent_design_id=design_id(1), palette=["#000000", "#ffffff"])
    DesignCatalog(out).commit([*rows, failed, colourway], "r1")
    vectors = np.asarray(vectors) / np.linalg.norm(vectors, axis=1, keepdims=True)
    write_embeddings(out, [design_id(i) for i in range(12)], vectors.astype(np.float16), EMBEDDING_METHOD, "vgg16")
    return out
