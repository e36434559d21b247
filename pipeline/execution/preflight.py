"""Everything that can refuse a run, checked before any work and before any
Prefect server starts, so a refusal is one line and a fast exit.

`preflight(catalog, out, config, pairs, grid)` validates the input catalog and
the pairings (pairs file, grid, the pairing limit), the devices, the design
catalog's folder and table, and finds and loads the weights once. It raises
`Refused` (exit 2: the run's inputs or flags) or `CatalogFault` (exit 3: the
environment). A run whose designs need more memory than a device has left
(estimated from the loaded network's layer shapes, pipeline/engine/memory.py) is refused with
the figure. `Run.prepare` (pipeline/execution/run.py) runs these checks once: the
CLI before Prefect starts, handing what it checked to the flow; the flow itself
only for a run that no CLI prepared (a deployment).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.catalog.designs import CatalogFault, DesignCatalog, check_out_path
from pipeline.catalog.inputs import CatalogError, InputCatalog, load_input_catalog
from pipeline.config import Config
from pipeline.engine.layers import VGG19, layer_index
from pipeline.engine.memory import MemoryEstimate, estimate_memory, gib
from pipeline.engine.transfer import cpu_has_native_bf16, resolve_precision
from pipeline.engine.weights import WeightsError, WeightsSource, load_features, resolve_weights
from pipeline.execution.devices import CPU_BATCH_SIZE, DeviceError, resolve_devices
from pipeline.planning.more_like import MoreLike, more_like_specs, read_favourites
from pipeline.planning.variants import JobSpecs, job_specs

__all__ = ["CatalogFault", "Checked", "Refused", "check_run", "preflight"]


class Refused(ValueError):
    """The run cannot start with these inputs or flags; the message says what to change."""


@dataclass(frozen=True)
class Checked:
    inputs: InputCatalog
    specs: JobSpecs
    weights: WeightsSource
    table_version: int | None
    more_like: MoreLike | None = None  # what --more-like planned and left out


def preflight(
    catalog: str | Path,
    out: str | Path,
    config: Config,
    pairs: str | None = None,
    grid: dict[str, list[Any]] | None = None,
    devices: bool = True,
    more_like: str | Path | None = None,
) -> Checked:
    """`check_run`, its faults of inputs, flags, devices and weights as one `Refused`."""
    try:
        return check_run(catalog, out, config, pairs, grid, devices, more_like)
    except (CatalogError, WeightsError, DeviceError, ValueError) as err:
        raise Refused(str(err)) from None


def check_run(
    catalog: str | Path,
    out: str | Path,
    config: Config,
    pairs: str | None = None,
    grid: dict[str, list[Any]] | None = None,
    devices: bool = True,
    more_like: str | Path | None = None,
) -> Checked:
    """Every check, raising each fault as its own kind (CatalogError, WeightsError, DeviceError,
    ValueError, `Refused` for memory, `CatalogFault`); the input catalog and the weights are
    loaded here once. `devices=False` skips resolving config.devices (a Dask cluster's
    workers resolve theirs). `more_like`: an OUT whose favourites to vary instead of the
    pairings (pipeline/planning/more_like.py)."""
    check_out_path(out)
    if more_like is not None and (pairs or grid):
        raise Refused("--more-like plans its own variations; --pairs and --grid go without it")
    used = resolve_devices(config.devices) if devices else []
    cpu_has_native_bf16()  # a bad $NST_CPU_BF16 is refused here, not in every shard
    favourites = read_favourites(more_like) if more_like is not None else None  # before the catalog: cheap
    inputs = load_input_catalog(catalog, config.allow_roots, config.max_catalog_images)
    planned = more_like_specs(inputs, config, favourites) if favourites is not None else None
    specs = planned.specs if planned is not None else job_specs(inputs, config, pairs, grid)
    weights = resolve_weights(config.weights, config.seed, preprocessing=config.preprocessing, network=config.network)
    check_layers(specs.configs(), weights)  # against the network the file holds
    check_memory(specs.configs(), used, weights.network)
    load_features(weights)  # a file that cannot be loaded is refused before anything is written
    version = DesignCatalog(out).check()
    return Checked(inputs, specs, weights, version, planned)


def check_layers(configs: list[Config], weights: WeightsSource) -> None:
    """Refuse (one line naming the layers accepted) a layer the loaded network lacks:
    VGG16 ends at conv5_3, so conv3_4, conv4_4 and conv5_4 are VGG19's alone."""
    index = layer_index(weights.network)
    for config in configs:
        for flag in ("content_layers", "style_layers"):
            if missing := [name for name in getattr(config, flag) if name not in index]:
                raise Refused(
                    f"--{flag.replace('_', '-')} {missing[0]} is not a layer of {weights.network}, the network "
                    f"{weights.path or weights.identity} holds; accepted: {', '.join(index)}"
                )


def available_memory(device: str) -> int | None:
    """Bytes a run may still take on `device`: CUDA's free memory, or the CPU's available
    RAM (MemAvailable, bounded by a cgroup v2 limit when there is one); None: unknown."""
    if device.startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except RuntimeError:  # a GPU the driver cannot open: the run itself says so
            return None
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit.isdigit():
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def design_memory(config: Config, device: str, network: str = VGG19) -> tuple[MemoryEstimate, str]:
    """The estimated memory of one batch of `config`'s largest designs (a square output
    at --size) on `device` with `network`'s layout, and the precision it runs in."""
    precision = resolve_precision(config.precision, device)
    batch = config.batch_size or (CPU_BATCH_SIZE if device == "cpu" else 1)  # a GPU's auto batch fits its memory
    estimate = estimate_memory(
        config.size,
        config.size,
        config.style_side,
        batch,
        content_layers=config.content_layers,
        style_layers=config.style_layers,
        precision=precision,
        repeat=config.repeat,
        pooling=config.pooling,
        optimizer=config.optimizer,
        content=config.content_weight > 0,
        network=network,
    )
    return estimate, precision


def check_memory(configs: list[Config], devices: list[str], network: str = VGG19) -> None:
    """Refuse (one line: the estimate, what is available, the flags that lower it) a run
    whose largest batch would not fit on one of its devices."""
    for device in devices:
        available = available_memory(device)
        if available is None:
            continue
        for config in configs:
            estimate, precision = design_memory(config, device, network)
            if estimate.peak <= available:
                continue
            styles = estimate.style_targets > estimate.loop
            fixes = ["--style-scale", "--size"] if styles else ["--size"]
            if estimate.batch > 1:
                fixes.append("--batch-size")
            scale = f" --style-scale {config.style_scale:g}" if config.style_scale != 1 else ""
            raise Refused(
                f"--size {config.size}{scale} needs about {gib(estimate.peak)} of memory on {device} ({precision}, "
                f"batches of {estimate.batch}: the optimization {gib(estimate.loop)}, the style targets at "
                f"{config.style_side} px {gib(estimate.style_targets)}, the weights {gib(estimate.weights)}) and "
                f"{gib(available)} is available; lower {', '.join(fixes[:-1]) + ' or ' if len(fixes) > 1 else ''}"
                f"{fixes[-1]}"
            )
