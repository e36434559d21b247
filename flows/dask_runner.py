"""The Dask task runner of `generate`: prefect-dask's DaskTaskRunner whose
every shard task asks its worker for one GPU. Imported only for --runner dask
(dask and distributed are slow to import)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
from prefect_dask import DaskTaskRunner

from pipeline.execution.devices import DeviceError

GPU_RESOURCE = "GPU"
DEFAULT_RESOURCES = {GPU_RESOURCE: 1}
WORKER_WAIT_SECONDS = 60.0


class ShardDaskTaskRunner(DaskTaskRunner):
    """A DaskTaskRunner whose every task asks its worker for `resources`
    (default one GPU), through dask.annotate around the submission."""

    def __init__(self, *args: Any, resources: dict[str, float] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.resources: dict[str, float] = dict(DEFAULT_RESOURCES if resources is None else resources)

    def duplicate(self):
        return type(self)(
            address=self.address,
            cluster_class=self.cluster_class,
            cluster_kwargs=self.cluster_kwargs,
            adapt_kwargs=self.adapt_kwargs,
            client_kwargs=self.client_kwargs,
            performance_report_path=self.performance_report_path,
            resources=self.resources,
        )

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and getattr(other, "resources", None) == self.resources

    __hash__ = object.__hash__

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        # distributed merges dask.get_annotations() into every submission.
        with dask.annotate(resources=self.resources):
            return super().submit(task, parameters, wait_for=wait_for, dependencies=dependencies)

    def worker_slots(self, timeout: float = WORKER_WAIT_SECONDS) -> dict[str, int]:
        """Worker address -> how many shard tasks it can run at once (its resources / the task's)."""
        try:
            client = self.client
        except OSError as err:
            raise DeviceError(f"cannot reach the Dask scheduler at {self.address}: {err}") from None
        try:
            client.wait_for_workers(1, timeout=timeout)
        except Exception as err:  # distributed raises its own TimeoutError
            raise DeviceError(
                f"the Dask cluster at {self.address or client.scheduler.address} has no worker after {timeout:.0f} s: {err}"
            ) from None
        workers = client.scheduler_info(n_workers=-1)["workers"]
        slots = {}
        for address, info in workers.items():
            offered = info.get("resources") or {}
            fits = min(
                (int(offered.get(name, 0) // need) for name, need in self.resources.items() if need > 0),
                default=int(info.get("nthreads", 1)),
            )
            if fits > 0:
                slots[address] = fits
        return slots

    def worker_cuda_counts(self, addresses: Sequence[str]) -> dict[str, int]:
        """How many CUDA GPUs each worker's process sees."""
        return self.client.run(_cuda_device_count, workers=list(addresses))


def _cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0
