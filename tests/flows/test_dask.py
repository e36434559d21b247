"""The generate flow on a Dask cluster (flows/task_runners.py): a local
2-worker distributed.LocalCluster on CPU, each worker offering one `GPU`
resource, gives the same designs as the default thread runner, and every shard
task asked its worker for one GPU; without --dask-address the task runner
starts a one-worker CPU cluster of its own and closes it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from helpers import SAMPLE_PAIRINGS

from pipeline.catalog.designs import DesignCatalog
from pipeline.config import Config
from pipeline.execution.devices import DeviceError

distributed = pytest.importorskip("distributed")
pytest.importorskip("prefect_dask")

from flows.task_runners import dask_device, make_task_runner, shard_devices  # noqa: E402

TINY = dict(weights="random", size=32, steps=2, loss_every=1, batch_size=2, shard_size=4, devices="cpu")


class ResourceLog(distributed.diagnostics.plugin.SchedulerPlugin):
    """Records, on the scheduler, the resources each task asked for and the worker that ran it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tasks: dict[str, tuple[dict | None, str | None]] = {}

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing":
            state = self.scheduler.tasks.get(key)
            if state is not None:
                with self.lock:
                    worker = state.processing_on.address if state.processing_on else None
                    self.tasks[str(key)] = (dict(state.resource_restrictions or {}), worker)

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler


@pytest.fixture
def dask_cluster(prefect_server):
    """Two worker processes, one thread and one GPU resource each, reporting to the test's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # spawned workers inherit os.environ
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        resources={"GPU": 1},
        dashboard_address=None,
        host="127.0.0.1",
        silence_logs=40,
    )
    log = ResourceLog()
    cluster.scheduler.add_plugin(log)
    log.scheduler = cluster.scheduler
    try:
        yield cluster, log
    finally:
        cluster.close()
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved


def designs(out: Path) -> set[tuple[str, str]]:
    frame = DesignCatalog(out).to_pandas()
    return set(zip(frame.design_id, frame.status))


def test_dask_runner_makes_the_same_designs_as_the_thread_runner(sample_catalog: Path, tmp_path: Path, dask_cluster):
    from flows.generate import generate

    cluster, log = dask_cluster
    config = Config(**TINY)

    threaded = generate(catalog=str(sample_catalog), out=str(tmp_path / "thread"), config=config)
    task_runner = make_task_runner("dask", cluster.scheduler_address, config.devices)
    on_dask = generate.with_options(task_runner=task_runner)(
        catalog=str(sample_catalog), out=str(tmp_path / "dask"), config=config
    )

    assert (threaded.ok, threaded.failed) == (on_dask.ok, on_dask.failed) == (SAMPLE_PAIRINGS, 0)
    assert designs(tmp_path / "dask") == designs(tmp_path / "thread")
    assert len(designs(tmp_path / "dask")) == SAMPLE_PAIRINGS

    # Every shard task ran on a worker of the cluster and asked it for one GPU.
    shard_tasks = {key: value for key, value in log.tasks.items() if "run_shard" in key}
    assert len(shard_tasks) == 3  # 11 designs in shards of 4
    workers = set(cluster.scheduler.workers)
    for resources, worker in shard_tasks.values():
        assert resources == {"GPU": 1}
        assert worker in workers
    assert on_dask.devices == ("cpu", "cpu")
    # the flow sized its device loop with shard_devices: one shard per worker GPU at once
    assert {worker for _, worker in shard_tasks.values()} == workers
    # The rows were made on the workers and committed by the flow.
    frame = DesignCatalog(tmp_path / "dask").to_pandas()
    assert set(frame.device) == {"cpu"} and set(frame.run_id) == {on_dask.run_id}


def test_shard_devices_gives_one_slot_per_worker_gpu(dask_cluster):
    cluster, _log = dask_cluster
    task_runner = make_task_runner("dask", cluster.scheduler_address, "auto")
    with task_runner:
        assert shard_devices(Config(devices="auto"), task_runner) == ["cpu", "cpu"]  # no CUDA on these workers
        assert shard_devices(Config(devices="cpu"), task_runner) == ["cpu", "cpu"]
        assert sorted(task_runner.worker_slots().values()) == [1, 1]
    # Without a Dask runner it is the flow machine's own devices.
    assert shard_devices(Config(devices="cpu"), make_task_runner("thread")) == ["cpu"]


def test_without_an_address_the_runner_starts_a_local_cluster_and_closes_it(
    sample_catalog: Path, tmp_path: Path, prefect_server, monkeypatch
):
    import torch
    from prefect.settings import PREFECT_API_URL

    from flows.generate import generate

    started: list[distributed.LocalCluster] = []

    class RecordedCluster(distributed.LocalCluster):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.offered = [spec["options"]["resources"] for spec in self.worker_spec.values()]
            with distributed.Client(self, set_as_default=False) as client:
                self.worker_threads = list(client.run(torch.get_num_threads).values())
            started.append(self)

    monkeypatch.setattr(distributed, "LocalCluster", RecordedCluster)
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # spawned workers inherit os.environ
    config = Config(**TINY)
    summary = generate.with_options(task_runner=make_task_runner("dask", None, config.devices))(
        catalog=str(sample_catalog), out=str(tmp_path), config=config
    )

    assert (summary.ok, summary.failed) == (SAMPLE_PAIRINGS, 0)
    assert len(designs(tmp_path)) == SAMPLE_PAIRINGS
    assert summary.devices == ("cpu",)  # one CPU worker, one slot
    (cluster,) = started
    assert cluster.status == distributed.core.Status.closed
    assert cluster.offered == [{"GPU": 1}]  # the slot the shard tasks ask for, though it is no GPU
    # The one worker's torch has this process's threads (distributed would cap them at 1).
    assert cluster.worker_threads == [torch.get_num_threads()]


def test_bad_runner_settings_are_refused_before_any_work():
    with pytest.raises(ValueError, match="accepted: thread, dask"):
        make_task_runner("ray", None)
    with pytest.raises(DeviceError, match="one 'cuda:N'"):
        make_task_runner("dask", "tcp://127.0.0.1:8786", "cuda:0,cuda:1")
    assert dask_device("cuda:1") == "cuda:1" and dask_device(None) == "auto"


def test_the_local_cluster_follows_the_devices(monkeypatch):
    import importlib.util

    import torch

    from flows.dask_runner import cpu_cluster, cuda_cluster, local_cluster

    one_gpu = {"GPU": 1}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_cluster("auto", one_gpu)[0] is cpu_cluster
    assert local_cluster("cpu", one_gpu)[1]["n_workers"] == 1
    with pytest.raises(DeviceError, match="no visible CUDA GPU.*accepted: 'auto' or 'cpu'"):
        local_cluster("cuda:0", one_gpu)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert local_cluster("cpu", one_gpu)[0] is cpu_cluster
    with pytest.raises(DeviceError, match="'cuda:1' on a local Dask cluster.*accepted: 'auto', 'cuda:0' or 'cpu'"):
        local_cluster("cuda:1", one_gpu)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DeviceError, match="needs dask-cuda"):
        local_cluster("auto", one_gpu)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    cluster_class, kwargs = local_cluster("cuda:0", one_gpu)
    assert cluster_class is cuda_cluster and kwargs["resources"] == one_gpu and "n_workers" not in kwargs
