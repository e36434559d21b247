"""The `generate` flow: validate the catalog, plan the designs not yet done,
run the shards on the available devices, commit each shard as it finishes,
and report a summary. The steps are those of `pipeline.execution.run.Run`;
this module only wraps them in Prefect tasks and runs the shards on the
flow's task runner."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run, task_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.artifacts import publish_run_artifacts
from flows.progress import RunProgress, register, registered
from flows.task_runners import THREAD_POOL_WORKERS, make_task_runner, shard_devices
from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.embeddings import commit_embeddings
from pipeline.catalog.inputs import InputCatalog
from pipeline.catalog.maintenance import MaintenanceReport
from pipeline.config import DEFAULT_OUT, Config
from pipeline.engine.transfer import Progress
from pipeline.engine.weights import WeightsSource
from pipeline.execution.devices import device_name
from pipeline.execution.preflight import Checked
from pipeline.execution.run import Run
from pipeline.execution.shard import run_shard
from pipeline.execution.summary import RunSummary
from pipeline.planning.plan import Job, Plan
from pipeline.planning.variants import JobSpecs
from pipeline.views.contact_sheet import CONTACT_SHEET, write_contact_sheet

PROGRESS_LOG_SECONDS = 15.0


class StopFlag:
    """Set by the CLI on Ctrl-C: no new shard starts, running ones stop at their next
    progress sample, finished ones are committed and the run ends with its summary.
    A plain flag, not a threading.Event: the shard task that reads it is pickled to
    Dask workers (a lock cannot be), where it stays unset and their shards run out."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set


STOP = StopFlag()
# The CLI prints the summary itself; a deployment's run has only its log.
LOG_SUMMARY = True


class Stopped(Exception):
    """A shard stopped on request (Ctrl-C); its designs are left for the next run."""


def stop_when_asked(on_progress: Callable[[Progress], None]) -> Callable[[Progress], None]:
    def check(progress: Progress) -> None:
        if STOP.is_set():
            raise Stopped("stopped on request")
        on_progress(progress)

    return check


# What the CLI prepared, by token, for the flow it starts in the same process. Only the
# token is a flow parameter: Prefect sends parameters to its API as JSON, and the input
# catalog's image list grows with the catalog.
_PREPARED: dict[str, Checked] = {}


def hand_over(checked: Checked) -> str:
    """A token under which the flow started next in this process finds `checked`."""
    token = uuid.uuid4().hex
    _PREPARED[token] = checked
    return token


# No retries: a missing catalog or a broken weights file does not mend itself.
@task(cache_policy=NO_CACHE)
def prepare(run: Run, pairs: str | None, grid: dict[str, list[Any]] | None, more_like: str | None = None) -> Checked:
    """Run.prepare for a run that no CLI prepared (a deployment): the same checks, the input
    catalog and the weights loaded once."""
    return run.prepare(pairs, grid, devices=run.config.runner == "thread", more_like=more_like)


@task(cache_policy=NO_CACHE)
def plan(run: Run, inputs: InputCatalog, weights: WeightsSource, devices: list[str], specs: JobSpecs) -> Plan:
    return run.plan(inputs, weights, devices, specs)


@task(cache_policy=NO_CACHE)
def contact_sheet(run: Run) -> str | None:
    path = write_contact_sheet(
        run.sample.rows,
        run.out,
        run.designs.run_dir(run.run_id) / CONTACT_SHEET,
        title=f"run {run.run_id}: {run.tally.ok} designs",
        defaults=Config().to_dict(),
    )
    return str(path) if path else None


def _retry_unless_stopping(task: Any, task_run: Any, state: Any) -> bool:
    return not STOP.is_set()


@task(
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_unless_stopping,
    task_run_name="shard-{index}",
)
def run_shard_task(
    index: int, jobs: list[Job], config: Config, weights: WeightsSource, devices: list[str], out: str, run_id: str
) -> list[dict[str, Any]]:
    """Runs on devices[0]; a retry moves to the next device where there is one."""
    logger = get_run_logger()
    attempt = max(1, task_run.run_count or 1)
    device = devices[(attempt - 1) % len(devices)]
    if attempt > 1:
        logger.warning("shard %d: attempt %d, now on %s", index, attempt, device)
    logger.info("shard %d: %d design(s) on %s (%s)", index, len(jobs), device, device_name(device))
    from flows.progress import StepLog

    # The bar of the run when this thread is in the flow's process (the thread runner); on a
    # Dask worker (another process) there is none and the bar moves when the shard ends.
    live = registered(run_id)
    bar_steps = live.shard(index, len(jobs)) if live is not None else None

    def log_step(progress: Progress) -> None:
        mean_loss = sum(progress.loss_total) / len(progress.loss_total)
        logger.info(
            "shard %d: step %d/%d, %d design(s) in batch, mean loss %.4g",
            index,
            progress.step,
            progress.steps,
            progress.designs,
            mean_loss,
        )

    # Each batch's first and last sampled step, and at most one line every PROGRESS_LOG_SECONDS between.
    on_progress = StepLog(log_step, PROGRESS_LOG_SECONDS, config.loss_every)

    def on_step(progress: Progress) -> None:
        on_progress(progress)
        if bar_steps is not None:
            bar_steps(progress)

    rows = run_shard(jobs, config, weights, device, DesignCatalog(out), run_id, stop_when_asked(on_step))
    on_progress.close()  # the last batch's last step, if it was held back
    failed = [r for r in rows if r["status"] != "ok"]
    logger.info("shard %d: %d ok, %d failed", index, len(rows) - len(failed), len(failed))
    return rows


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def maintain_catalog(run: Run) -> MaintenanceReport | None:
    return run.maintain_if_due()


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2)
def commit(run: Run, rows: list[dict[str, Any]], note: str) -> int | None:
    version = run.designs.commit(rows, run.run_id, note)
    # After the designs: a crash between leaves them without embeddings, which `designs curate` fills.
    commit_embeddings(run.out, rows)
    return version


def commit_rows(run: Run, rows: list[dict[str, Any]], note: str) -> None:
    """The commit task, then the rows count for the run's summary."""
    commit(run, rows, note)
    run.record(rows)


# The device loop below bounds concurrency to one shard per device.
@flow(name="generate", task_runner=ThreadPoolTaskRunner(max_workers=THREAD_POOL_WORKERS), log_prints=True)
def generate(
    catalog: str,
    out: str = DEFAULT_OUT,
    config: Config = Config(),  # noqa: B008 (frozen: one shared default is safe)
    pairs: str | None = None,
    grid: dict[str, list[Any]] | None = None,
    prepared: str | None = None,
    more_like: str | None = None,
) -> RunSummary:
    """Make every content x style design of CATALOG not yet in the design catalog at OUT.

    pairs: a parquet of explicit pairings (content_id, style_ids, style_mix, per-row
    config overrides) instead of the cross product; grid: field -> values, every
    pairing made once per combination (see pipeline.planning.variants); prepared: the
    token of what Run.prepare checked for these arguments in this process (the CLI's,
    `hand_over`), else the flow prepares itself; more_like: an OUT whose favourites to vary
    instead of the pairings (pipeline.planning.more_like)."""
    run = Run(catalog, out, config, flow_run_id=str(flow_run.id or "local"))
    devices = shard_devices(config)
    # What can refuse the run, first.
    checked = _PREPARED.pop(prepared or "", None) or prepare(run, pairs, grid, more_like)
    planned = plan(run, checked.inputs, checked.weights, devices, checked.specs)
    log_plan(run, planned, devices, checked.weights)
    progress = RunProgress().start(len(planned.todo) + len(planned.failed))
    register(run.run_id, progress)  # shard tasks in this process report their steps to it
    if planned.failed:
        fault_rows = run.input_fault_rows()
        commit_rows(run, fault_rows, "input-faults")
        progress.advance_rows(fault_rows)
    run_shards(run, devices, checked.weights, progress)
    progress.close()
    register(run.run_id, None)
    summary = report(run)
    if not STOP.is_set():  # a stop asked for the run to end, not for upkeep
        upkeep(run)
    return summary


def log_plan(run: Run, planned: Plan, devices: list[str], weights: WeightsSource) -> None:
    get_run_logger().info(
        "run %s: %d pairing(s), %d already in the catalog, %d to make, %d failing on their inputs; devices %s; weights %s",
        run.run_id,
        planned.pairings,
        planned.already_done,
        len(planned.todo),
        len(planned.failed),
        devices,
        weights.label,
    )


def run_shards(run: Run, devices: list[str], weights: WeightsSource, progress: RunProgress) -> None:
    """The device loop: each shard holds one device while it runs; a device takes the next
    shard as soon as it is free, so faster devices take more shards. Each finished shard
    is committed (a failed one as failed rows; a stopped one left for the next run)."""
    logger = get_run_logger()
    shards = run.shards()
    free = list(devices)
    running: dict[Any, tuple[int, list[Job], str]] = {}

    def start_shards() -> None:
        while shards and free and not STOP.is_set():
            index, jobs = shards.pop(0)
            device = free.pop(0)
            fallback = [d for d in devices if d != device]  # where a retry goes
            future = run_shard_task.submit(index, jobs, run.config, weights, [device, *fallback], run.out, run.run_id)
            running[future] = (index, jobs, device)

    start_shards()
    while running:
        future = next(as_completed(list(running)))
        index, jobs, device = running.pop(future)
        free.append(device)
        start_shards()  # the device gets its next shard before this one is committed
        future.wait()  # records the final state on the future
        state = future.state
        if state.is_completed():
            shard_rows = future.result()
        elif STOP.is_set():
            # Stopped on request: its designs are neither made nor failed; the next run makes them.
            logger.warning("shard %d on %s stopped; %d design(s) left for the next run", index, device, len(jobs))
            progress.shard_done(index)
            continue
        else:
            # The task failed after its retries: its designs are recorded as failed.
            message = state.message or "shard task failed"
            logger.error("shard %d on %s failed: %s", index, device, message)
            shard_rows = run.failed_shard_rows(jobs, device, message)
        commit_rows(run, shard_rows, f"shard-{index}")
        progress.advance_rows(shard_rows, shard=index)


def report(run: Run) -> RunSummary:
    """The contact sheet, the summary (runs/<run_id>/summary.json), the run's Prefect
    artifacts and, for a deployment, the summary in the log."""
    logger = get_run_logger()
    sheet = contact_sheet(run) if run.tally.rows else None
    if sheet:
        logger.info("contact sheet: %s", sheet)
    summary = run.finish(stopped=STOP.is_set())
    publish_run_artifacts(summary, run.sample.rows, run.out, run.run_id)
    for line in summary.report_lines() if LOG_SUMMARY else ():
        logger.info(line)
    return summary


def upkeep(run: Run) -> None:
    """Compaction, vacuum and checkpoint once due; a failure is a warning, as the run's designs are committed."""
    logger = get_run_logger()
    maintenance = maintain_catalog(run, return_state=True)
    if maintenance.is_completed():
        done = maintenance.result()
        for line in done.lines() if done else ():
            logger.info(line)
    else:
        logger.warning(
            "design catalog maintenance failed: %s; run `designs maintain %s` to finish it",
            maintenance.message,
            run.out,
        )


def generate_flow(config: Config):
    """The `generate` flow with the task runner of config.runner / config.dask_address: the flow
    itself for 'thread' (its own thread pool), else a copy with a Dask task runner.
    Raises ValueError (DeviceError included) for bad runner settings, before any work."""
    if config.runner == "thread":
        return generate
    return generate.with_options(
        task_runner=make_task_runner(config.runner, config.dask_address or None, config.devices)
    )
