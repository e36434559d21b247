"""The Dask task runner of `generate`: prefect-dask's DaskTaskRunner whose
every shard task asks its worker for one GPU, on the cluster of --dask-address
or, without one, on a local cluster it starts and closes itself. Imported only
for --runner dask (dask and distributed are slow to import)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any

import dask
import distributed
import torch
from prefect_dask import DaskTaskRunner

from pipeline.execution.devices import DeviceError

GPU_RESOURCE = "GPU"
DEFAULT_RESOURCES = {GPU_RESOURCE: 1}
WORKER_WAIT_SECONDS = 60.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


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


def local_cluster(device: str, resources: dict[str, float]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The cluster_class and cluster_kwargs of the local cluster of --runner dask without --dask-address.

    device: what dask_device() made of --devices. With 'auto' or 'cuda:0' on a
    machine with GPUs, one worker per visible GPU (dask-cuda, which gives each
    its own GPU as cuda:0); with 'cpu' or no GPU, one CPU worker. Every worker
    offers `resources`, so the flow counts its slots as on any cluster (on the
    CPU worker, GPU=1 is a slot for one shard at a time, not a GPU).
    """
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # 127.0.0.1: the scheduler and workers of a local cluster are nobody else's.
    kwargs: dict[str, Any] = {"resources": dict(resources), "host": "127.0.0.1", "dashboard_address": None}
    if device == "cpu" or (device == "auto" and gpus == 0):
        return cpu_cluster, {**kwargs, "n_workers": 1, "threads_per_worker": 1, "processes": True}
    if gpus == 0:
        raise DeviceError(
            f"devices={device!r}: this machine has no visible CUDA GPU for a local Dask cluster; accepted: 'auto' or 'cpu'"
        )
    if device != "cuda:0" and device != "auto":
        raise DeviceError(
            f"devices={device!r} on a local Dask cluster: each of its workers (one per GPU) sees its own GPU as cuda:0; "
            "accepted: 'auto', 'cuda:0' or 'cpu'"
        )
    if importlib.util.find_spec("dask_cuda") is None:
        raise DeviceError(
            f"--runner dask without --dask-address on {gpus} GPU(s) starts one worker per GPU, which needs dask-cuda: "
            "pip install dask-cuda; or --devices cpu for one CPU worker, or --runner thread, which uses every GPU too"
        )
    return cuda_cluster, kwargs


def cpu_cluster(**kwargs: Any) -> distributed.LocalCluster:
    """distributed.LocalCluster whose worker's torch keeps this process's thread count: distributed caps
    OMP_NUM_THREADS at 1 in the workers it spawns, which suits many workers, not one worker doing all the work.

    The variables are set in os.environ while the workers spawn: distributed takes them from there before
    its own configuration, and an earlier cluster of this process may have left its 1 there."""
    threads = str(torch.get_num_threads())
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, threads))
    try:
        return distributed.LocalCluster(**kwargs)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def cuda_cluster(**kwargs: Any) -> Any:
    """dask-cuda's LocalCUDACluster: one worker per visible GPU, each with CUDA_VISIBLE_DEVICES starting at its own."""
    from dask_cuda import LocalCUDACluster

    return LocalCUDACluster(**kwargs)


def _cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0
