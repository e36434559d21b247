"""One `generate` run, without Prefect: its id, config.json, the input-fault
rows, the shards, one commit per shard and the summary.

The Prefect flow (flows/generate.py) wraps these steps in tasks and runs the
shards on its task runner; tests and benchmarks call `Run.run_local` (or the
steps one by one) instead of writing the flow's glue again.

    run = Run(catalog, out, config)
    checked = run.prepare(pairs, grid)                    # everything that can refuse the run
    planned = run.plan(checked.inputs, checked.weights, devices, checked.specs)  # writes runs/<id>/config.json
    run.commit(run.input_fault_rows(), "input-faults")
    for index, jobs in run.shards():
        run.commit(run_shard(jobs, ...), f"shard-{index}")
    summary = run.finish()                                # writes runs/<id>/summary.json
    run.maintain_if_due()                                 # compaction, vacuum, checkpoint past a count of small files
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import commit_embeddings
from pipeline.catalog.inputs import InputCatalog
from pipeline.catalog.maintenance import MaintenanceReport, maintain, small_files
from pipeline.config import Config
from pipeline.engine.transfer import Progress
from pipeline.engine.weights import WeightsSource
from pipeline.execution.devices import CPU_BATCH_SIZE, MAX_AUTO_BATCH
from pipeline.execution.preflight import Checked, check_run
from pipeline.execution.rows import RowContext, now_utc
from pipeline.execution.shard import run_shard
from pipeline.execution.summary import RunSummary, Sample, Tally, summarize
from pipeline.files import sha256_file
from pipeline.planning.plan import Job, Plan, cut_shards, plan_designs
from pipeline.planning.variants import JobSpecs


def run_config(
    run_id: str,
    flow_run_id: str,
    catalog: str | Path,
    out: str | Path,
    config: Config,
    weights: WeightsSource,
    devices: list[str],
    started: datetime,
) -> dict[str, Any]:
    """The payload of OUT/runs/<run_id>/config.json, written before a run's first commit."""
    return {
        "run_id": run_id,
        "flow_run_id": str(flow_run_id),
        "catalog": str(Path(catalog).resolve()),
        "catalog_sha256": sha256_file(catalog),
        "out": str(Path(out).resolve()),
        "config": config.to_dict(),
        "weights": {
            "identity": weights.identity,
            "path": weights.path,
            "format": weights.format,
            "preprocessing": weights.preprocessing,
            "network": weights.network,
        },
        "devices": list(devices),
        "started_at": started.isoformat(),
    }


def shard_size(config: Config, devices: list[str]) -> int:
    """config.shard_size, or four batches a shard; on GPUs room for the largest batch the memory probe may choose."""
    auto_batch = MAX_AUTO_BATCH if any(d.startswith("cuda") for d in devices) else CPU_BATCH_SIZE
    return config.shard_size or 4 * (config.batch_size or auto_batch)


class Run:
    """The state of one run between its steps; `rows` holds every committed row."""

    def __init__(
        self,
        catalog: str | Path,
        out: str | Path,
        config: Config,
        run_id: str | None = None,
        flow_run_id: str = "local",
        started: datetime | None = None,
    ):
        self.catalog = str(catalog)
        self.out = str(out)
        self.config = config
        self.flow_run_id = str(flow_run_id)
        self.started = started or now_utc()
        self.run_id = run_id or f"{self.started:%Y%m%dT%H%M%SZ}-{self.flow_run_id[:8]}"
        self.designs = DesignCatalog(out)
        self.tally = Tally()  # counts as shards commit; no per-design data of the whole run
        self.sample = Sample()  # a bounded sample for the contact sheet and the loss-curve plot
        self.weights: WeightsSource | None = None
        self.devices: list[str] = []
        self.planned: Plan | None = None
        self._clock = time.perf_counter()

    # --- the steps, in order ---

    def prepare(
        self,
        pairs: str | None = None,
        grid: dict[str, list[Any]] | None = None,
        devices: bool = True,
        more_like: str | None = None,
    ) -> Checked:
        """Everything that can refuse the run, before any work (pipeline/execution/preflight.py):
        the input catalog and the weights are loaded once here; plan() takes what it returns.
        `devices=False` leaves config.devices to a Dask cluster's workers. `more_like`: the OUT
        whose favourites to vary instead of the pairings (pipeline/planning/more_like.py)."""
        return check_run(self.catalog, self.out, self.config, pairs, grid, devices, more_like)

    def plan(
        self, inputs: InputCatalog, weights: WeightsSource, devices: list[str], specs: JobSpecs | None = None
    ) -> Plan:
        """Plan the designs not yet ok in the catalog, then write runs/<run_id>/config.json."""
        self.weights, self.devices = weights, list(devices)
        self.planned = plan_designs(inputs, self.config, weights.design_identity, self.designs.done_ids(), specs)
        self.designs.write_run_file(
            self.run_id,
            "config.json",
            run_config(
                self.run_id, self.flow_run_id, self.catalog, self.out, self.config, weights, self.devices, self.started
            ),
        )
        return self.planned

    def input_fault_rows(self) -> list[dict[str, Any]]:
        """A failed row for every pairing whose inputs failed while planning."""
        assert self.planned is not None and self.weights is not None, "plan() first"
        context = RowContext(self.config, self.weights, self.run_id)
        return [context.failed(job, job.error or "input fault") for job in self.planned.failed]

    def shards(self) -> list[tuple[int, list[Job]]]:
        assert self.planned is not None, "plan() first"
        return list(enumerate(cut_shards(self.planned.todo, shard_size(self.config, self.devices))))

    def failed_shard_rows(self, jobs: list[Job], device: str, message: str) -> list[dict[str, Any]]:
        """The rows of a shard whose task failed after its retries: every design failed."""
        assert self.weights is not None, "plan() first"
        context = RowContext(self.config, self.weights, self.run_id, device)
        return [context.failed(job, f"shard task failed on {device}: {message}") for job in jobs]

    def commit(self, rows: list[dict[str, Any]], note: str) -> int | None:
        """One commit of the design catalog (the run id in its metadata); the rows count for the summary."""
        version = self.designs.commit(rows, self.run_id, note)
        # After the designs: a crash between leaves them without embeddings, which `designs curate` fills.
        commit_embeddings(self.out, rows)
        self.record(rows)
        return version

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Count rows committed elsewhere (the flow commits in a task of its own)."""
        self.tally.add(rows)
        self.sample.add(rows)

    def finish(self, stopped: bool = False) -> RunSummary:
        """The summary, written to runs/<run_id>/summary.json. `stopped`: the run was stopped
        on request, and the designs it did not reach are left for the next run."""
        assert self.planned is not None, "plan() first"
        summary = summarize(
            self.run_id,
            self.flow_run_id,
            self.catalog,
            self.out,
            self.started,
            time.perf_counter() - self._clock,
            self.planned,
            self.tally,
            self.devices,
            self.designs.version(),
            stopped=stopped,
        )
        self.designs.write_run_file(self.run_id, "summary.json", summary.to_dict())
        return summary

    def maintain_if_due(self) -> MaintenanceReport | None:
        """After finish(): compact, vacuum and checkpoint the design catalog (and the tables beside
        it: maintenance.SIDE_TABLES) when it holds more than config.maintain_after_files small data
        files (0: never); None when not due."""
        limit = self.config.maintain_after_files
        if not limit or small_files(self.out, self.config.maintain_small_file_bytes) <= limit:
            return None
        return maintain(
            self.out,
            retention_hours=self.config.maintain_retention_hours,
            small_file_bytes=self.config.maintain_small_file_bytes,
        )

    # --- all of it, in this process ---

    def run_local(
        self,
        inputs: InputCatalog,
        weights: WeightsSource,
        device: str = "cpu",
        specs: JobSpecs | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        stop_after_shards: int | None = None,
    ) -> RunSummary | None:
        """Every step in this process on one device, shards one after another.
        `stop_after_shards`: return None after that many shard commits, before the
        summary (what a crash leaves: config.json and some commits)."""
        self.plan(inputs, weights, [device], specs)
        if self.planned.failed:
            self.commit(self.input_fault_rows(), "input-faults")
        for index, jobs in self.shards():
            if stop_after_shards is not None and index >= stop_after_shards:
                return None
            self.commit(
                run_shard(jobs, self.config, weights, device, self.designs, self.run_id, on_progress), f"shard-{index}"
            )
        return self.finish()
