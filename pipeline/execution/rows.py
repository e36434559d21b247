"""The design catalog's rows, built from one `RowContext` per shard (or per
run, for input faults; per command, for colourways): the fields known before any
work, a failed row, an ok row and a colourway row, whose file `write_design` writes."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import torch

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import EMBEDDING_KEY
from pipeline.catalog.images import design_file_bytes
from pipeline.catalog.schema import params_value
from pipeline.config import Config
from pipeline.engine.embedding_format import to_bytes
from pipeline.engine.losses import seam_score
from pipeline.engine.transfer import DesignResult, resolve_precision
from pipeline.engine.weights import WeightsSource
from pipeline.execution.devices import device_name
from pipeline.files import write_atomic
from pipeline.planning.plan import Job


@functools.cache
def versions() -> dict[str, str]:
    """The package, torch and Python versions every row records (looked up once per process)."""
    try:
        package = metadata.version("designs")
    except metadata.PackageNotFoundError:
        package = "unknown"
    return {"package": package, "torch": torch.__version__, "python": platform.python_version()}


def now_utc() -> datetime:
    return datetime.now(UTC)


def write_design(
    catalog: DesignCatalog, design_id: str, image: torch.Tensor, fmt: str, text: dict[str, str], dpi: int
) -> tuple[str, str]:
    """A design's file (PNG text chunks or the TIFF's ImageDescription hold `text`), written
    atomically under its content hash: (its path relative to OUT, its SHA-256)."""
    data, ext = design_file_bytes(image, fmt, text, dpi)
    sha = hashlib.sha256(data).hexdigest()
    relpath = catalog.image_relpath(design_id, sha, ext)
    write_atomic(catalog.out / relpath, data)
    return relpath, sha


@dataclass(frozen=True)
class RowContext:
    """What every row made in one place shares: the run's config (a job's own
    config overrides it), the weights, the run id, the device (None for rows
    made before any device work) and the catalog the PNGs are written into.
    Colourways have no weights of their own (None): their rows copy their parent's."""

    config: Config
    weights: WeightsSource | None
    run_id: str
    device: str | None = None
    catalog: DesignCatalog | None = None

    @functools.cached_property
    def device_name(self) -> str | None:
        return device_name(self.device) if self.device else None

    def base(self, job: Job) -> dict[str, Any]:
        """The row fields known before any work: inputs, params, provenance."""
        assert self.weights is not None, "optimized designs' rows need the weights"
        cfg = job.config or self.config
        content = job.content
        refs = ([content] if content else []) + list(job.styles)
        return {
            "design_id": job.design_id,
            "pairing_key": job.pairing_key,
            "run_id": self.run_id,
            "created_at": now_utc(),
            "content_id": job.content_id,
            "style_id": job.style_label,
            "style_ids": [s.image_id for s in job.styles],
            "style_mix": list(job.weights_normalized()) if len(job.styles) > 1 else None,
            "content_uri": content.uri if content else None,
            "style_uri": "+".join(s.uri for s in job.styles),
            "content_sha256": job.content_sha256,
            "style_sha256": "+".join(sha or "" for sha in job.style_sha256s),
            "mask_sha256": job.mask_sha256,
            "collection": next((r.collection for r in refs if r.collection), None),
            "params": params_value(
                cfg,
                self.weights.identity,
                self.weights.preprocessing,
                # A row made before any device work (an input fault) keeps what was asked.
                resolve_precision(cfg.precision, self.device) if self.device else None,
                network=self.weights.network,
            ),
            "weights_source": self.weights.label,
            "loss_every": cfg.loss_every,
            "tags": list(dict.fromkeys(t for r in refs for t in r.tags)),
            "content_extra": content.extra_json if content else None,
            "style_extra": job.style.extra_json,
            "versions": dict(versions()),  # a copy: the cached dict is shared
            "more_like": job.more_like,
        }

    def failed(self, job: Job, error: str) -> dict[str, Any]:
        row = self.base(job)
        row.update(status="failed", error=error, device=self.device, device_name=self.device_name)
        return row

    def design(
        self, job: Job, result: DesignResult, note: str | None, batch_size: int, load_seconds: float
    ) -> dict[str, Any]:
        """The row of an optimized design; writes its PNG into the catalog when it is ok."""
        assert self.catalog is not None and self.device is not None, "design rows need the catalog and the device"
        assert self.weights is not None, "optimized designs' rows need the weights"
        cfg = job.config or self.config
        row = self.base(job)
        row.update(
            device=self.device,
            device_name=self.device_name,
            batch_size=batch_size,
            notes=note,
            seam_score=result.seam_score,
            mask_leakage=result.mask_leakage,
        )
        if note:  # record the learning rate that made the design
            row["params"]["learning_rate"] = cfg.resolved().learning_rate * cfg.nonfinite_retry_factor
            row["params"]["lbfgs_learning_rate"] = cfg.lbfgs_learning_rate * cfg.nonfinite_retry_factor
        row.update({f"loss_{k}": v for k, v in result.loss_curves.items()})
        row["final_loss"] = result.final_loss
        row["quality"] = result.quality.as_row() if result.quality is not None and not result.error else None
        if result.error:
            label = f"{job.content_id or '(pattern)'} x {job.style_label}"
            row.update(status="failed", error=f"design {job.design_id} ({label}): {result.error}")
            write_seconds = 0.0
        else:
            write_start = time.perf_counter()
            text = {
                "design_id": job.design_id,
                "params": json.dumps(row["params"], sort_keys=True),
                "weights": self.weights.identity,
            }
            relpath, sha = write_design(self.catalog, job.design_id, result.image, cfg.format, text, cfg.dpi)
            write_seconds = time.perf_counter() - write_start
            row.update(
                status="ok",
                error=None,
                output_uri=relpath,
                output_sha256=sha,
                width=int(result.image.shape[-1]),
                height=int(result.image.shape[-2]),
            )
            if result.embedding is not None:  # written beside the commit (pipeline/catalog/embeddings.py)
                row[EMBEDDING_KEY] = to_bytes(result.embedding)
        row["timings"] = {
            "load_s": load_seconds,
            "targets_s": result.targets_seconds,
            "optimize_s": result.optimize_seconds,
            "write_s": write_seconds,
            "total_s": load_seconds + result.targets_seconds + result.optimize_seconds + write_seconds,
            "steps_per_second": result.steps_per_second,
        }
        return row

    def colourway(
        self,
        parent: dict[str, Any],
        design_id: str,
        image: torch.Tensor,
        colours: list[str],
        params: dict[str, Any],
        note: str,
        timing: tuple[float, float],
    ) -> dict[str, Any]:
        """The row of `parent` recoloured (pipeline/execution/colourways.py): the parent's row
        (inputs, params, weights) with its own id, file and inks; writes its file. `timing`:
        (perf_counter when the work began, seconds the parent's image took to load)."""
        assert self.catalog is not None and self.device is not None, "colourway rows need the catalog and the device"
        started, load_seconds = timing
        text = {
            "design_id": design_id,
            "params": json.dumps(params, sort_keys=True, default=str),
            "weights": str(params.get("weights")),
            "parent_design_id": parent["design_id"],
            "palette": json.dumps(colours),
        }
        fmt, dpi = params.get("format") or "png", int(params.get("dpi") or 0)
        relpath, sha = write_design(self.catalog, design_id, image, fmt, text, dpi)
        write_seconds = time.perf_counter() - started - load_seconds
        repeat = params.get("repeat") or "none"
        row = dict(parent)
        row.update(
            params=params,
            design_id=design_id,
            run_id=self.run_id,
            created_at=now_utc(),
            status="ok",
            error=None,
            notes=note,
            pairing_key=None,
            parent_design_id=parent["design_id"],
            palette=colours,
            output_uri=relpath,
            output_sha256=sha,
            loss_total=None,
            loss_content=None,
            loss_style=None,
            loss_tv=None,
            final_loss=None,
            quality=None,  # not optimized: the parent's row holds its quality
            more_like=None,  # planned from its parent, not from a favourite
            seam_score=seam_score(image, repeat) if repeat != "none" else None,
            mask_leakage=None,
            device=self.device,
            device_name=self.device_name,
            batch_size=None,
            timings={"load_s": load_seconds, "write_s": write_seconds, "total_s": load_seconds + write_seconds},
            versions=dict(versions()),
        )
        return row
