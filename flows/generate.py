"""The `generate` flow: validate the catalog, plan the designs not yet done,
run the shards on the available devices, commit each shard as it finishes,
and report a summary. The work itself lives in `pipeline/`."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run, task_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.reporting import CONTACT_SHEET, RunProgress, publish_run_artifacts
from flows.task_runners import THREAD_POOL_WORKERS, shard_devices

from pipeline.config import DEFAULT_OUT, Config
from pipeline.design_catalog import DesignCatalog
from pipeline.devices import CPU_BATCH_SIZE, MAX_AUTO_BATCH, device_name
from pipeline.engine import Progress
from pipeline.inputs import InputCatalog, load_input_catalog
from pipeline.plan import Job, Plan, cut_shards, plan_designs
from pipeline.runner import failed_row, now_utc, run_shard
from pipeline.runs import run_config
from pipeline.contact_sheet import write_contact_sheet
from pipeline.summary import RunSummary, summarize
from pipeline.variants import JobSpecs, job_specs
from pipeline.weights import WeightsSource, resolve_weights

PROGRESS_LOG_SECONDS = 15.0


@task(cache_policy=NO_CACHE)
def validate_catalog(catalog: str, allow_roots: tuple[str, ...], max_images: int) -> InputCatalog:
    return load_input_catalog(catalog, allow_roots, max_images)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def find_weights(spec: str, seed: int) -> WeightsSource:
    return resolve_weights(spec, seed)


@task(cache_policy=NO_CACHE)
def enumerate_designs(catalog: InputCatalog, config: Config, pairs: str | None, grid: dict[str, list[Any]] | None) -> JobSpecs:
    return job_specs(catalog, config, pairs, grid)


@task(cache_policy=NO_CACHE)
def plan(catalog: InputCatalog, config: Config, weights: WeightsSource, out: str, specs: JobSpecs) -> Plan:
    return plan_designs(catalog, config, weights.identity, DesignCatalog(out).ok_design_ids(), specs)


@task(cache_policy=NO_CACHE)
def contact_sheet(rows: list[dict[str, Any]], out: str, run_id: str) -> str | None:
    path = write_contact_sheet(rows, out, DesignCatalog(out).run_dir(run_id) / CONTACT_SHEET,
                               title=f"run {run_id}: {sum(r['status'] == 'ok' for r in rows)} designs", defaults=Config().to_dict())
    return str(path) if path else None


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5, task_run_name="shard-{index}")
def run_shard_task(index: int, jobs: list[Job], config: Config, weights: WeightsSource, devices: list[str], out: str, run_id: str) -> list[dict[str, Any]]:
    """Runs on devices[0]; a retry moves to the next device where there is one."""
    logger = get_run_logger()
    attempt = max(1, task_run.run_count or 1)
    device = devices[(attempt - 1) % len(devices)]
    if attempt > 1:
        logger.warning("shard %d: attempt %d, now on %s", index, attempt, device)
    logger.info("shard %d: %d design(s) on %s (%s)", index, len(jobs), device, device_name(device))
    last_log = [0.0]

    def on_progress(progress: Progress) -> None:
        if time.monotonic() - last_log[0] >= PROGRESS_LOG_SECONDS or progress.step == 0:
            last_log[0] = time.monotonic()
            mean_loss = sum(progress.loss_total) / len(progress.loss_total)
            logger.info("shard %d: step %d/%d, %d design(s) in batch, mean loss %.4g", index, progress.step, progress.steps, progress.designs, mean_loss)

    rows = run_shard(jobs, config, weights, device, DesignCatalog(out), run_id, on_progress)
    failed = [r for r in rows if r["status"] != "ok"]
    logger.info("shard %d: %d ok, %d failed", index, len(rows) - len(failed), len(failed))
    return rows


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2)
def commit(out: str, rows: list[dict[str, Any]], run_id: str, note: str) -> int | None:
    return DesignCatalog(out).commit(rows, run_id, note)


# The device loop below bounds concurrency to one shard per device.
@flow(name="generate", task_runner=ThreadPoolTaskRunner(max_workers=THREAD_POOL_WORKERS), log_prints=True)
def generate(catalog: str, out: str = DEFAULT_OUT, config: Config = Config(), pairs: str | None = None,
             grid: dict[str, list[Any]] | None = None) -> RunSummary:
    """Make every content x style design of CATALOG not yet in the design catalog at OUT.

    pairs: a parquet of explicit pairings (content_id, style_ids, style_mix, per-row
    config overrides) instead of the cross product; grid: field -> values, every
    pairing made once per combination (see pipeline.variants)."""
    logger = get_run_logger()
    started = now_utc()
    start = time.perf_counter()
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{str(flow_run.id or 'local')[:8]}"
    design_catalog = DesignCatalog(out)

    # Everything that can refuse the whole run happens before any work.
    devices = shard_devices(config)
    inputs = validate_catalog(catalog, config.allow_roots, config.max_catalog_images)
    weights = find_weights(config.weights, config.seed)
    specs = enumerate_designs(inputs, config, pairs, grid)
    planned = plan(inputs, config, weights, out, specs)
    logger.info(
        "run %s: %d pairing(s), %d already in the catalog, %d to make, %d failing on their inputs; devices %s; weights %s",
        run_id, planned.pairings, planned.already_done, len(planned.todo), len(planned.failed), devices, weights.label,
    )
    design_catalog.write_run_file(run_id, "config.json", run_config(
        run_id, str(flow_run.id), catalog, out, config, weights.identity, weights.path, devices, started))

    progress = RunProgress().start(len(planned.todo) + len(planned.failed))
    rows: list[dict[str, Any]] = []
    if planned.failed:
        fault_rows = [failed_row(job, job.error or "input fault", config, weights, run_id) for job in planned.failed]
        commit(out, fault_rows, run_id, "input-faults")
        rows += fault_rows
        progress.advance_rows(fault_rows)

    # Each shard holds one device while it runs; a device takes the next shard
    # as soon as it is free, so faster devices take more shards.
    # Four batches a shard; on GPUs room for the largest batch the memory probe may choose.
    auto_batch = MAX_AUTO_BATCH if any(d.startswith("cuda") for d in devices) else CPU_BATCH_SIZE
    shard_size = config.shard_size or 4 * (config.batch_size or auto_batch)
    shards = list(enumerate(cut_shards(planned.todo, shard_size)))
    free = list(devices)
    running: dict[Any, tuple[int, list[Job], str]] = {}

    def start_shards() -> None:
        while shards and free:
            index, jobs = shards.pop(0)
            device = free.pop(0)
            fallback = [d for d in devices if d != device]  # where a retry goes
            future = run_shard_task.submit(index, jobs, config, weights, [device, *fallback], out, run_id)
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
        else:
            # The task failed after its retries: its designs are recorded as failed.
            message = state.message or "shard task failed"
            logger.error("shard %d on %s failed: %s", index, device, message)
            shard_rows = [failed_row(job, f"shard task failed on {device}: {message}", config, weights, run_id, device) for job in jobs]
        commit(out, shard_rows, run_id, f"shard-{index}")
        rows += shard_rows
        progress.advance_rows(shard_rows)
    progress.close()

    sheet = contact_sheet(rows, out, run_id) if rows else None
    if sheet:
        logger.info("contact sheet: %s", sheet)
    summary = summarize(run_id, str(flow_run.id), catalog, out, started, time.perf_counter() - start, planned, rows, devices, design_catalog.version())
    design_catalog.write_run_file(run_id, "summary.json", summary.to_dict())
    publish_run_artifacts(summary, rows, out, run_id)
    for line in summary.report_lines():
        logger.info(line)
    return summary
