"""Everything that can refuse a run, checked before any work and before any
Prefect server starts, so a refusal is one line and a fast exit.

`preflight(catalog, out, config, pairs, grid)` validates the input catalog and
the pairings (pairs file, grid, the pairing limit), the devices, the design
catalog's folder and table, and finds and loads the weights once. It raises
`Refused` (exit 2: the run's inputs or flags) or `CatalogFault` (exit 3: the
environment). The flow checks the same again inside (a deployment starts no
CLI), so this is a fast path, not the only guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.catalog.designs import CatalogFault, DesignCatalog, check_out_path
from pipeline.catalog.inputs import CatalogError, InputCatalog, load_input_catalog
from pipeline.config import Config
from pipeline.engine.transfer import cpu_has_native_bf16
from pipeline.engine.weights import WeightsError, WeightsSource, load_features, resolve_weights
from pipeline.execution.devices import DeviceError, resolve_devices
from pipeline.planning.variants import JobSpecs, job_specs

__all__ = ["CatalogFault", "Checked", "Refused", "preflight"]


class Refused(ValueError):
    """The run cannot start with these inputs or flags; the message says what to change."""


@dataclass(frozen=True)
class Checked:
    inputs: InputCatalog
    specs: JobSpecs
    weights: WeightsSource
    table_version: int | None


def preflight(
    catalog: str | Path,
    out: str | Path,
    config: Config,
    pairs: str | None = None,
    grid: dict[str, list[Any]] | None = None,
    devices: bool = True,
) -> Checked:
    """`devices=False` skips resolving config.devices (a Dask cluster's workers resolve theirs)."""
    try:
        check_out_path(out)
        if devices:
            resolve_devices(config.devices)
        cpu_has_native_bf16()  # a bad $NST_CPU_BF16 is refused here, not in every shard
        inputs = load_input_catalog(catalog, config.allow_roots, config.max_catalog_images)
        specs = job_specs(inputs, config, pairs, grid)
        weights = resolve_weights(config.weights, config.seed, preprocessing=config.preprocessing)
        load_features(weights)  # a file that cannot be loaded is refused before anything is written
    except (CatalogError, WeightsError, DeviceError, ValueError) as err:
        raise Refused(str(err)) from None
    version = DesignCatalog(out).check()
    return Checked(inputs, specs, weights, version)
