"""Where the shard tasks of `generate` run: threads of the flow's process
(default) or the workers of a Dask cluster, one GPU per task: the cluster at
--dask-address, or without one a local cluster the task runner starts and
closes (one worker per GPU, or one CPU worker).

- `make_task_runner(runner, dask_address, devices)` builds the task runner that
  `generate.with_options(task_runner=...)` runs with; `generate_flow(config)`
  gives the flow with config.runner's task runner (the CLI and deployments).
- `shard_devices(config)`, called inside the flow, gives the device of each
  concurrent shard slot: the flow's own devices for the thread runner, and for
  a Dask runner one slot per `GPU` resource unit the cluster's workers offer.
- `workers_prefect_api()` makes sure the flow has a Prefect API URL that the
  workers report to (they must not start servers of their own).

On a Dask cluster every shard task is annotated `resources={"GPU": 1}`, so a
worker started with `--resources GPU=1` runs one shard at a time. With
dask-cuda (one worker per GPU, CUDA_VISIBLE_DEVICES rotated per worker) the
worker's own GPU is `cuda:0`, which is what `--devices auto` resolves to on a
GPU cluster. docs/SCALING.md has the set-up across machines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from pipeline.config import Config
from pipeline.execution.devices import DeviceError, resolve_devices

RUNNERS = ("thread", "dask")
THREAD_POOL_WORKERS = 64  # the flow's device loop bounds how many shards run at once

logger = logging.getLogger("designs.task_runners")


def is_dask_runner(task_runner: Any) -> bool:
    # Not imported, no Dask runner exists: --runner thread never imports dask.
    module = sys.modules.get("flows.dask_runner")
    return module is not None and isinstance(task_runner, module.ShardDaskTaskRunner)


def make_task_runner(
    runner: str = "thread",
    dask_address: str | None = None,
    devices: Sequence[str] | str | None = None,
    resources: dict[str, float] | None = None,
) -> TaskRunner:
    """The task runner of a run.

    runner: 'thread' (every shard in a thread of the flow's process, on the
    flow machine's devices) or 'dask' (every shard on a worker of the Dask
    scheduler at dask_address, e.g. tcp://10.0.0.5:8786, asking for one GPU;
    without dask_address, on a local cluster the runner starts when the flow
    starts and closes when it ends: one worker per GPU with dask-cuda, or one
    CPU worker, each offering GPU=1; see flows.dask_runner.local_cluster).
    devices: the --devices entries; on Dask they name the one device every
    worker's tasks use ('auto', 'cpu' or a single 'cuda:N'), so a list of
    several is refused here, before any work.
    resources: what each shard task asks of its Dask worker (default {'GPU': 1}).
    """
    if runner == "thread":
        return ThreadPoolTaskRunner(max_workers=THREAD_POOL_WORKERS)
    if runner != "dask":
        raise ValueError(f"runner={runner!r} is invalid; accepted: {', '.join(RUNNERS)}")
    device = dask_device(devices)  # refuse a bad --devices before any work
    from flows.dask_runner import DEFAULT_RESOURCES, ShardDaskTaskRunner, local_cluster

    if dask_address:
        return ShardDaskTaskRunner(address=dask_address, resources=resources)
    # Started when the flow starts its task runner, closed when the flow ends.
    cluster_class, cluster_kwargs = local_cluster(device, DEFAULT_RESOURCES if resources is None else resources)
    return ShardDaskTaskRunner(cluster_class=cluster_class, cluster_kwargs=cluster_kwargs, resources=resources)


def dask_device(devices: Sequence[str] | str | None) -> str:
    """The device named by --devices for the tasks on a Dask worker: 'auto', 'cpu' or 'cuda:N'."""
    if devices is None:
        return "auto"
    items = [d.strip() for d in (devices.split(",") if isinstance(devices, str) else devices) if d.strip()]
    if len(items) != 1 or not (
        items[0] in ("auto", "cpu") or (items[0].startswith("cuda:") and items[0][5:].isdigit())
    ):
        raise DeviceError(
            f"devices={','.join(items)!r} on a Dask cluster: accepted 'auto', 'cpu' or one 'cuda:N', the device of every "
            "worker's tasks (with dask-cuda, one worker per GPU, each worker's GPU is cuda:0)"
        )
    return items[0]


def shard_devices(config: Config, task_runner: Any = None) -> list[str]:
    """The device of every shard the flow keeps running at once.

    Call it inside the flow instead of `resolve_devices(config.devices)`. With
    the thread runner that is what it returns. With a Dask runner it returns one
    entry per slot of the cluster (workers' GPU resources), each the device the
    worker's task uses: --devices auto gives 'cuda:0' where every worker sees a
    GPU (dask-cuda: the worker's own) and 'cpu' where none does.
    """
    if task_runner is None:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        task_runner = context.task_runner if context else None
    if not is_dask_runner(task_runner):
        return resolve_devices(config.devices)
    device = dask_device(config.devices)
    slots = task_runner.worker_slots()
    if not slots:
        raise DeviceError(
            f"no worker of the Dask cluster offers the resources the shard tasks ask for ({task_runner.resources}): "
            f"start the workers with --resources {','.join(f'{k}={v:g}' for k, v in task_runner.resources.items())}"
        )
    if device == "auto":
        counts = task_runner.worker_cuda_counts(list(slots))
        with_gpu = {address for address, count in counts.items() if count > 0}
        if with_gpu and with_gpu != set(slots):
            raise DeviceError(
                f"--devices auto: Dask workers {sorted(set(slots) - with_gpu)} see no GPU while others do; "
                "pass --devices cpu or --devices cuda:0, or start them apart"
            )
        device = "cuda:0" if with_gpu else "cpu"
    if any(count > 1 for count in slots.values()) and device != "cpu":
        logger.warning(
            "a Dask worker offers more than one GPU slot; all its tasks use %s: run one worker per GPU (dask-cuda)",
            device,
        )
    return [device] * sum(slots.values())


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def workers_prefect_api(runner: str = "thread", dask_address: str | None = None) -> Iterator[str | None]:
    """Inside it, the flow has a Prefect API URL its Dask workers report to.

    Task runs on a worker use the settings of the flow (Prefect serializes them
    with each task) and the worker's own PREFECT_API_URL otherwise. With
    PREFECT_API_URL set (a `make serve` server, a shared server, Prefect Cloud)
    that is used as it is. Without one, Prefect would give the flow a temporary
    server the workers know nothing of (each would start its own), so this
    starts that temporary server here and points the flow's settings, and
    os.environ for locally started workers, at it. It listens on 127.0.0.1, so
    workers on other machines need PREFECT_API_URL set to a reachable server.
    """
    if runner != "dask":
        yield None
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        if _is_loopback(url) and dask_address and not _is_loopback(dask_address):
            logger.warning(
                "PREFECT_API_URL=%s is a loopback address: Dask workers on other machines cannot report to it; "
                "start the server with --host 0.0.0.0 and use this machine's address",
                url,
            )
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    url = server.api_url
    if dask_address and not _is_loopback(dask_address):
        logger.warning(
            "no PREFECT_API_URL: the temporary Prefect server %s is only reachable on this machine; "
            "Dask workers elsewhere need PREFECT_API_URL of a server they can reach (docs/SCALING.md)",
            url,
        )
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
