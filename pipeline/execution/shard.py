"""Running one shard of planned jobs on one device: load, optimize in batches,
write PNGs, and return the catalog rows (committed by the caller)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.images import (
    ImageLoadError,
    decode_rgb,
    output_size,
    read_image_bytes,
    resize_to_tensor,
)
from pipeline.config import Config
from pipeline.engine.transfer import (
    DesignResult,
    Pairing,
    Progress,
    StyleTransfer,
    resolve_channels_last,
    resolve_precision,
)
from pipeline.engine.weights import WeightsSource
from pipeline.execution.devices import auto_batch_size
from pipeline.execution.rows import RowContext
from pipeline.planning.plan import Job

_engines: dict[tuple[str, str, str, bool], StyleTransfer] = {}
_engines_lock = threading.Lock()


def engine_for(config: Config, weights: WeightsSource, device: str) -> StyleTransfer:
    """One engine per device and weights, kept so its target caches and loaded
    weights serve every shard (and every config of a sweep) on that device."""
    precision = resolve_precision(config.precision, device)  # 'auto' and what it picks share an engine
    channels_last = resolve_channels_last(config.memory_format, device, precision)
    key = (device, weights.identity, precision, channels_last)
    with _engines_lock:
        if key not in _engines:
            for old in [k for k in _engines if k[0] == device]:
                del _engines[old]  # one engine per device: free the last weights' memory
            _engines[key] = StyleTransfer(config, weights, device, precision=precision, channels_last=channels_last)
        return _engines[key]


class _ImageCache:
    """Decoded, resized inputs of one shard, checked against their planned hashes."""

    def __init__(self, max_pixels: int, max_bytes: int):
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.decoded: dict[str, Any] = {}
        self.tensors: dict[tuple[str, int, int], torch.Tensor] = {}

    def get(self, image_id: str, path, sha256: str | None, size: tuple[int, int] | int) -> torch.Tensor:
        if image_id not in self.decoded:
            data = read_image_bytes(path, self.max_bytes)
            if hashlib.sha256(data).hexdigest() != sha256:
                raise ImageLoadError(
                    f"{path}: changed since the run was planned (SHA-256 differs); rerun to plan it again"
                )
            self.decoded[image_id] = decode_rgb(data, str(path), self.max_pixels)
        image = self.decoded[image_id]
        if isinstance(size, int):  # longest side
            size = output_size(image.width, image.height, size)
        key = (image_id, size[0], size[1])
        if key not in self.tensors:
            self.tensors[key] = resize_to_tensor(image, size)
        return self.tensors[key]

    def mask(self, content_id: str, path, sha256: str | None, size: tuple[int, int]) -> torch.Tensor:
        """The content's mask as (1, H, W) in [0, 1] (white = garment) at the output size."""
        key = f"mask:{content_id}"
        mask = self.get(key, path, sha256, size)
        content = self.decoded[content_id]
        found = self.decoded[key]
        if abs(found.width * content.height - content.width * found.height) > 0.01 * content.width * found.height:
            raise ImageLoadError(
                f"{path}: mask is {found.width}x{found.height}, which cannot be matched to the content's "
                f"{content.width}x{content.height} (aspect ratios differ); give a mask of the content's shape"
            )
        return mask.mean(dim=0, keepdim=True)


@dataclass
class _LoadedBatch:
    """A batch with its inputs decoded: the jobs that loaded and the rows of those that did not."""

    cfg: Config
    jobs: list[Job]
    pairings: list[Pairing]
    failed: list[dict[str, Any]]
    load_seconds: float  # decoding and resizing, for the whole batch

    def halves(self) -> list[_LoadedBatch]:
        half = len(self.jobs) // 2
        share = self.load_seconds / 2
        return [
            _LoadedBatch(self.cfg, self.jobs[:half], self.pairings[:half], [], share),
            _LoadedBatch(self.cfg, self.jobs[half:], self.pairings[half:], [], share),
        ]


def _later(pool: ThreadPoolExecutor | None, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """Start fn(*args) on the pool and return what waits for its result; without
    a pool, run it now (overlap off: every stage in line, as the naive loop)."""
    if pool is None:
        value = fn(*args)
        return lambda: value
    return pool.submit(fn, *args).result


def overlaps(config: Config, device: str) -> bool:
    """Whether decoding and writing run on threads beside the device's work.
    'auto': on a GPU yes; on a CPU no, since the threads would take cores from
    the optimization itself (the pipeline bench measures it slower there)."""
    return config.overlap == "on" or (config.overlap == "auto" and not device.startswith("cpu"))


# Finished designs waiting for the writer, in batches: bounds the host memory
# their images hold when PNG encoding falls behind the device.
MAX_BATCHES_WRITING = 2


def run_shard(
    jobs: list[Job],
    config: Config,
    weights: WeightsSource,
    device: str,
    catalog: DesignCatalog,
    run_id: str,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[dict[str, Any]]:
    """Make every design of the shard; each becomes an ok or failed row.

    With config.overlap on (the default on GPUs) the device is kept fed: while
    it optimizes one batch, a thread decodes the next batch's images and another
    encodes and writes the finished designs' PNGs. Targets are device work (and
    cached per input) and are computed in line."""
    engine = engine_for(config, weights, device)
    images = _ImageCache(config.max_image_pixels, config.max_image_bytes)
    rows_for = RowContext(config, weights, run_id, device, catalog)

    # A batch shares one config (a sweep's variants differ) and one output size.
    groups: dict[tuple[str, int, int], list[Job]] = {}
    for job in jobs:
        groups.setdefault(("" if job.config is None else job.config.identity_json(), job.width, job.height), []).append(
            job
        )
    batches: list[tuple[Config, tuple[int, int], list[Job]]] = []
    for (_, width, height), group in groups.items():
        cfg = group[0].config or config
        batch_size = config.batch_size or auto_batch_size(device, width, height, engine=engine, config=cfg)
        batches += [(cfg, (width, height), group[i : i + batch_size]) for i in range(0, len(group), batch_size)]

    def load(cfg: Config, size: tuple[int, int], batch: list[Job]) -> _LoadedBatch:
        start = time.perf_counter()
        loaded = _LoadedBatch(cfg, [], [], [], 0.0)
        for job in batch:
            try:
                loaded.pairings.append(_load_pairing(job, cfg, images, size))
                loaded.jobs.append(job)
            except ImageLoadError as err:
                loaded.failed.append(rows_for.failed(job, str(err)))
        loaded.load_seconds = time.perf_counter() - start
        return loaded

    rows: list[dict[str, Any]] = []
    writing: deque[list[Callable[[], dict[str, Any]]]] = deque()
    with contextlib.ExitStack() as stack:
        loader = writer = None
        if overlaps(config, device):
            # Exiting waits for both threads, so no PNG is left half-written behind a failure.
            loader = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix=f"load-{device}"))
            writer = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix=f"write-{device}"))
        upcoming = iter(batches)

        def load_next() -> Callable[[], _LoadedBatch] | None:
            batch = next(upcoming, None)
            return None if batch is None else _later(loader, load, *batch)

        split: deque[_LoadedBatch] = deque()  # halves of a batch that ran out of device memory
        loading = load_next()
        while split or loading:
            if split:
                loaded = split.popleft()
            else:
                assert loading is not None
                loaded = loading()
                loading = load_next()  # decodes while the device works on this one
                rows += loaded.failed
            if not loaded.jobs:
                continue
            try:
                results = engine.run(loaded.pairings, on_progress=on_progress, config=loaded.cfg)
            except torch.OutOfMemoryError:
                if len(loaded.jobs) == 1:
                    raise
                # Halve the batch and try again; no design is lost.
                engine.clear_cache()
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                split.extendleft(reversed(loaded.halves()))
                continue
            results = _retry_diverged(engine, loaded.pairings, results, loaded.cfg, on_progress)
            load_share = loaded.load_seconds / len(loaded.jobs)
            writing.append(
                [
                    _later(writer, rows_for.design, job, result, note, len(loaded.jobs), load_share)
                    for job, (result, note) in zip(loaded.jobs, results)
                ]
            )
            while len(writing) > MAX_BATCHES_WRITING:
                rows += [done() for done in writing.popleft()]
        while writing:
            rows += [done() for done in writing.popleft()]
    return rows


def _load_pairing(job: Job, cfg: Config, images: _ImageCache, size: tuple[int, int]) -> Pairing:
    """Decode a job's inputs into a Pairing; ImageLoadError names the failing image."""
    content = mask = None
    if job.content is not None:
        cid = job.content.image_id
        try:
            content = images.get(cid, job.content.path, job.content_sha256, size)
        except ImageLoadError as err:
            raise ImageLoadError(f"content image {cid!r}: {err}") from None
        if job.content.mask_path is not None:
            try:
                mask = images.mask(cid, job.content.mask_path, job.mask_sha256, size)
            except ImageLoadError as err:
                raise ImageLoadError(f"mask of content image {cid!r}: {err}") from None
    styles = []
    for ref, sha in zip(job.styles, job.style_sha256s):
        try:
            # Motif scale: the style at style_scale times the output's longest side, decoded from its file.
            styles.append((sha, images.get(ref.image_id, ref.path, sha, cfg.style_side)))
        except ImageLoadError as err:
            raise ImageLoadError(f"style image {ref.image_id!r}: {err}") from None
    # Targets are cached by the inputs' bytes: an image id reused with new bytes gets new targets.
    return Pairing(
        job.design_id,
        job.content_sha256,
        content,
        styles[0][0],
        styles[0][1],
        extra_styles=tuple(styles[1:]),
        style_mix=job.style_mix,
        mask=mask,
        out_size=None if content is not None else (size[1], size[0]),
    )


def _retry_diverged(
    engine: StyleTransfer,
    pairings: list[Pairing],
    results: list[DesignResult],
    config: Config,
    on_progress: Callable[[Progress], None] | None,
) -> list[tuple[DesignResult, str | None]]:
    """Designs whose loss turned NaN/inf get one more try at a smaller learning rate."""
    out: list[tuple[DesignResult, str | None]] = [(r, None) for r in results]
    diverged = [i for i, r in enumerate(results) if r.error]
    if not diverged:
        return out
    factor = config.nonfinite_retry_factor
    retried = engine.run(
        [pairings[i] for i in diverged], on_progress=on_progress, learning_rate_scale=factor, config=config
    )
    for i, result in zip(diverged, retried):
        note = f"{results[i].error}; retried with the learning rate times {factor}"
        if result.error:
            result.error = (
                f"{results[i].error}; again after retrying with the learning rate times {factor}: {result.error}"
            )
        out[i] = (result, note)
    return out
