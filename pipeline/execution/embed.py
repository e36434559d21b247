"""The embeddings of designs that have none (pipeline/catalog/embeddings.py): designs made
before embeddings, colourways (recoloured without a network), and designs whose run stopped
between the design commit and the embeddings write. `designs curate` runs it first.

Each design is embedded with the weights it was made with (params.weights, .preprocessing,
.network), found as a run finds them (pipeline/engine/weights.py: the file its row names,
files given here, $NST_VGG19_WEIGHTS, the Keras and hub caches), each file checked by its
SHA-256; random weights are remade from their seed. A design whose weights are not at hand is
skipped and counted, never embedded with other weights. Its image is read back from its file
(8-bit: within float16 of what the engine computed from the float image).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch

from pipeline.catalog.datafiles import data_files, plain_schema, read_rows
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import compact_embeddings, embedded_id_array, write_embeddings
from pipeline.catalog.images import DEFAULT_MAX_BYTES, ImageLoadError, decode_rgb, read_image_bytes
from pipeline.config import Config
from pipeline.engine.embedding_format import EMBEDDING_METHOD
from pipeline.engine.transfer import StyleTransfer
from pipeline.engine.weights import (
    WEIGHTS_ENV,
    WeightsError,
    WeightsSource,
    cache_path,
    known_files,
    resolve_weights,
    weights_sha256,
)

logger = logging.getLogger(__name__)

# Designs embedded per write: a stopped backfill keeps what it wrote.
WRITE_EVERY = 1024
MAX_PIXELS = Config().max_image_pixels
# The path a row's weights_source names: "<identity> (<network>, <format>, <pp> preprocessing, <path>)".
_SOURCE_PATH = re.compile(r" preprocessing, (.+)\)$")


@dataclass
class EmbedReport:
    embedded: int = 0
    skipped_no_weights: int = 0  # designs whose weights are not at hand
    already: int = 0  # designs that had an embedding by this method
    failed: list[str] = field(default_factory=list)  # "design_id: why" (an unreadable file)
    missing_weights: dict[str, int] = field(default_factory=dict)  # weights identity -> designs skipped
    compacted: int = 0  # small files of the embeddings table rewritten into large ones

    def describe(self) -> str:
        """One line for the CLI."""
        parts = [f"{self.embedded} design(s) embedded", f"{self.already} already"]
        if self.skipped_no_weights:
            which = ", ".join(f"{identity[:19]}... ({n})" for identity, n in sorted(self.missing_weights.items()))
            parts.append(
                f"{self.skipped_no_weights} skipped: their weights are not at hand ({which}); "
                "give the file with --weights"
            )
        if self.failed:
            parts.append(f"{len(self.failed)} failed (first: {self.failed[0]})")
        return "embeddings: " + "; ".join(parts)


@dataclass(frozen=True)
class _Design:
    design_id: str
    output_uri: str
    weights: str | None  # params.weights: "sha256:<hex>" or "random:<seed>"
    preprocessing: str | None
    network: str | None
    source_path: str | None  # the path the row's weights_source names


def _missing(out: Path, wanted: pa.Array | None, version: int | None, done: pa.Array) -> Iterable[_Design]:
    """The ok designs (of `wanted`, or all) that have no embedding (their ids not in `done`);
    filtered in Arrow a file at a time, so a catalog that has them all costs no Python row."""
    catalog = DesignCatalog(out)
    table = catalog.table(version)
    params = plain_schema(table).field("params").type
    columns = {
        "design_id": ds.field("design_id"),
        "status": ds.field("status"),
        "output_uri": ds.field("output_uri"),
        "weights_source": ds.field("weights_source"),
    }
    # A table made before a params field was added has none: null (network null: the file's own).
    for name in ("weights", "preprocessing", "network"):
        columns[name] = ds.field("params", name) if params.get_field_index(name) >= 0 else ds.scalar(None)
    for rows in read_rows(table, catalog.table_path, columns, data_files(table, "ok")):  # type: ignore[arg-type]
        ids = rows.column("design_id")
        # status: a table made before the partitioning holds both in one file
        keep = pc.and_(pc.equal(rows.column("status"), "ok"), pc.invert(pc.is_in(ids, value_set=done)))
        keep = pc.and_(keep, pc.is_valid(rows.column("output_uri")))
        if wanted is not None:
            keep = pc.and_(keep, pc.is_in(ids, value_set=wanted))
        for row in rows.filter(keep).to_pylist():
            found = _SOURCE_PATH.search(row["weights_source"] or "")
            yield _Design(
                row["design_id"],
                row["output_uri"],
                row["weights"],
                row["preprocessing"],
                row["network"],
                found.group(1) if found else None,
            )


def find_weights(
    identity: str | None, preprocessing: str | None, network: str | None, paths: Iterable[str | Path]
) -> WeightsSource | None:
    """The weights a design was made with, or None where no file at hand has its SHA-256."""
    if not identity:
        return None
    pp = preprocessing or "auto"
    net = network or "auto"
    if identity.startswith("random:"):
        try:
            return resolve_weights("random", int(identity.split(":", 1)[1]), preprocessing=pp, network=net)
        except (ValueError, WeightsError):
            return None
    if not identity.startswith("sha256:"):
        return None
    digest = identity.split(":", 1)[1]
    candidates = [Path(p).expanduser() for p in paths]
    if env := os.environ.get(WEIGHTS_ENV):
        candidates.append(Path(env).expanduser())
    candidates += [cache_path(known) for known in known_files()]
    for path in dict.fromkeys(candidates):
        try:
            if not path.is_file() or weights_sha256(path) != digest:
                continue
            return resolve_weights(str(path), 0, allow_download=False, preprocessing=pp, network=net)
        except (OSError, WeightsError) as err:
            logger.info("weights %s not usable for %s: %s", path, identity, err)
    return None


def _image(out: Path, uri: str) -> torch.Tensor:
    data = read_image_bytes(out / uri, 4 * DEFAULT_MAX_BYTES)
    array = np.asarray(decode_rgb(data, uri, MAX_PIXELS), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def embed_missing(
    out: str | Path,
    design_ids: Sequence[str] | None = None,
    *,
    weights: Sequence[str | Path] = (),
    device: str = "cpu",
    precision: str = "auto",
    version: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EmbedReport:
    """Embed the ok designs of OUT (or of `design_ids`) that have no embedding by the current
    method, each with the weights it was made with; `weights`: more files to look in.
    on_progress(n): called with the designs embedded so far, after each write."""
    out = Path(out)
    report = EmbedReport()
    done = embedded_id_array(out, EMBEDDING_METHOD)
    wanted = pa.array(sorted(set(map(str, design_ids))), pa.string()) if design_ids is not None else None
    report.already = len(done) if wanted is None else int(pc.sum(pc.is_in(wanted, value_set=done)).as_py() or 0)
    groups: dict[tuple[str | None, str | None, str | None], list[_Design]] = {}
    for design in _missing(out, wanted, version, done):
        groups.setdefault((design.weights, design.preprocessing, design.network), []).append(design)
    for (identity, preprocessing, network), designs in groups.items():
        paths = [*weights, *dict.fromkeys(d.source_path for d in designs if d.source_path)]
        source = find_weights(identity, preprocessing, network, paths)
        if source is None:
            report.skipped_no_weights += len(designs)
            report.missing_weights[str(identity)] = report.missing_weights.get(str(identity), 0) + len(designs)
            continue
        _embed_group(out, designs, StyleTransfer(Config(), source, device, precision=precision), report, on_progress)
    # Each shard's commit left a small file: the scans that follow (curation, similar) read a few large ones.
    report.compacted = compact_embeddings(out)
    return report


def _embed_group(
    out: Path,
    designs: list[_Design],
    engine: StyleTransfer,
    report: EmbedReport,
    on_progress: Callable[[int], None] | None,
) -> None:
    """Embed designs made with the engine's weights, written every WRITE_EVERY designs."""
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    for i, design in enumerate(designs):
        try:
            image = _image(out, design.output_uri)
        except ImageLoadError as err:
            report.failed.append(f"{design.design_id}: {err}")
        else:
            ids.append(design.design_id)
            vectors.append(engine.embed(image[None])[0])
        if ids and (len(ids) >= WRITE_EVERY or i == len(designs) - 1):
            write_embeddings(out, ids, np.stack(vectors), EMBEDDING_METHOD, engine.weights.network)
            report.embedded += len(ids)
            ids, vectors = [], []
            if on_progress is not None:
                on_progress(report.embedded)
