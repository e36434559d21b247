"""Which devices a run uses and how many designs fit on one at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.engine.transfer import StyleTransfer

CPU_BATCH_SIZE = 4
MAX_AUTO_BATCH = 64


class DeviceError(ValueError):
    """A --devices value that names no usable device."""


def resolve_devices(spec: str) -> list[str]:
    """'auto' -> every visible CUDA GPU, else ['cpu']; or an explicit comma list."""
    spec = spec.strip()
    if spec == "auto":
        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return ["cpu"]
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    if not devices:
        raise DeviceError(f"devices={spec!r} is empty; accepted: 'auto', 'cpu', or a list like 'cuda:0,cuda:1'")
    for device in devices:
        if device == "cpu":
            continue
        if not device.startswith("cuda:") or not device[5:].isdigit():
            raise DeviceError(f"device {device!r} is not understood; accepted: 'auto', 'cpu', 'cuda:N'")
        index = int(device[5:])
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise DeviceError(f"device {device!r} is not available: this machine has {visible} visible CUDA GPU(s)")
    if len(set(devices)) != len(devices):
        raise DeviceError(f"devices={spec!r} names a device twice")
    return devices


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def auto_batch_size(device: str, width: int, height: int, engine: StyleTransfer, config: Config | None = None) -> int:
    """Designs of (width, height) to optimize together on `device`: CPU_BATCH_SIZE on
    the CPU; on a GPU as many as fit in 80% of the memory it has left, a design's
    memory measured with the device's `engine` (two probe steps, see measured_step_memory)."""
    if not device.startswith("cuda"):
        return CPU_BATCH_SIZE
    dev = torch.device(device)
    fixed, per_design = measured_step_memory(engine, width, height, config)
    free, _total = torch.cuda.mem_get_info(dev)
    # Memory PyTorch holds in its cache is free to it, though not to the driver.
    available = free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    fits = int((available * 0.8 - fixed) // per_design)
    return max(1, min(MAX_AUTO_BATCH, fits))


_MEASURED: dict[tuple, tuple[int, int]] = {}


def measured_step_memory(
    engine: StyleTransfer, width: int, height: int, config: Config | None = None
) -> tuple[int, int]:
    """(fixed, per design) bytes of device memory of one optimization step of
    (width, height) designs, CUDA only: the peak over the memory already in use,
    measured at batch 1 and 2 (each run once first, so that cudnn.benchmark's
    trials are not counted). Remembered per device, size, precision and layers."""
    cfg = config or engine.config
    dev = engine.device
    if dev.type != "cuda":
        raise ValueError(f"measured_step_memory needs a CUDA engine, not {dev}")
    key = (
        str(dev),
        width,
        height,
        engine.precision,
        engine.channels_last,
        cfg.optimizer,
        cfg.repeat,
        cfg.pooling,
        tuple(cfg.content_layers),
        tuple(cfg.style_layers),
    )
    if key not in _MEASURED:
        peaks = []
        for batch in (1, 2):
            engine.probe_step(batch, (height, width), cfg)
            torch.cuda.synchronize(dev)
            base = torch.cuda.memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            engine.probe_step(batch, (height, width), cfg)
            torch.cuda.synchronize(dev)
            peaks.append(torch.cuda.max_memory_allocated(dev) - base)
        per_design = max(peaks[1] - peaks[0], 1)
        _MEASURED[key] = (max(peaks[0] - per_design, 0), per_design)
    return _MEASURED[key]
