"""Which devices a run uses and how many designs fit on one at a time."""

from __future__ import annotations

import torch

from pipeline.vgg import VGG19_LAYOUT

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


def bytes_per_design(width: int, height: int) -> int:
    """Rough fp32 memory of one design's forward and backward through VGG19
    (activations kept for autograd, their gradients, the ReLU copies)."""
    elements, h, w = 0, height, width
    for item in VGG19_LAYOUT:
        if item == "M":
            h, w = h // 2, w // 2
            elements += 64 * h * w  # pool outputs are small; a generous bound
        else:
            elements += 2 * item * h * w  # conv output and ReLU output
    return elements * 4 * 3  # values, gradients, workspace


def auto_batch_size(device: str, width: int, height: int) -> int:
    if not device.startswith("cuda"):
        return CPU_BATCH_SIZE
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    fits = int(free * 0.6 // bytes_per_design(width, height))
    return max(1, min(MAX_AUTO_BATCH, fits))
