"""Planning: hash every input file once, give every pairing its design id, drop
the designs already `ok` in the catalog, and cut the rest into shards.

Files are read once each, however many catalog rows name them (thousands of
image ids may point at a few swatches), and a catalog with more pairings than
`max_pairings` is refused before anything is read.

A design id is a hash of both inputs' bytes, the mask's bytes, the config
fields that change pixels and the weights' identity: the same job always gets
the same id, so reruns skip finished work.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Container, Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.catalog.images import DEFAULT_MAX_BYTES, ImageLoadError, header_size, output_size, read_image_bytes
from pipeline.catalog.inputs import ImageRef, InputCatalog
from pipeline.config import Config
from pipeline.engine.layers import MIN_SIDE
from pipeline.planning.variants import JobSpec, job_specs

DESIGN_ID_VERSION = 1


@dataclass(frozen=True)
class InputFile:
    """What planning learns of one image file: its hash and upright size, or why it cannot be used."""

    sha256: str | None
    width: int = 0
    height: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Job:
    """One design to make."""

    design_id: str
    pairing_key: str
    content: ImageRef | None  # None: pattern mode from the style(s) alone
    style: ImageRef  # the first (or only) style
    content_sha256: str | None
    style_sha256: str | None
    mask_sha256: str | None
    width: int  # output size
    height: int
    error: str | None = None  # an input fault found while planning: the design fails without running
    extra_styles: tuple[ImageRef, ...] = ()  # a blend's other styles
    extra_style_sha256s: tuple[str | None, ...] = ()
    style_mix: tuple[float, ...] = ()  # blend weights, one per style (empty: equal)
    config: Config | None = None  # this design's config, where a pairs row or a grid changes the run's
    more_like: str | None = None  # the favourite this design varies (`designs generate --more-like`)

    @property
    def styles(self) -> tuple[ImageRef, ...]:
        return (self.style, *self.extra_styles)

    @property
    def style_sha256s(self) -> tuple[str | None, ...]:
        return (self.style_sha256, *self.extra_style_sha256s)

    def weights_normalized(self) -> tuple[float, ...]:
        mix = self.style_mix or (1.0,) * len(self.styles)
        return tuple(w / sum(mix) for w in mix)

    @property
    def content_id(self) -> str | None:
        return self.content.image_id if self.content else None

    @property
    def style_label(self) -> str:
        """style ids joined by '+': the catalog's style_id of a blend."""
        return "+".join(s.image_id for s in self.styles)


@dataclass(frozen=True)
class Plan:
    todo: tuple[Job, ...]
    failed: tuple[Job, ...]
    already_done: int
    pairings: int
    duplicates: int = 0  # pairings whose inputs' bytes repeat another pairing's: one design serves both


def inspect_file(
    path: Path | None, name: str, max_pixels: int, header: bool = True, max_bytes: int = DEFAULT_MAX_BYTES
) -> InputFile:
    """Hash a file and read its header only: a regular file of at most `max_bytes`,
    its declared size checked against `max_pixels` before anything else, and no
    pixel decoded."""
    if path is None:
        return InputFile(None, error=f"{name}: no usable path")
    try:
        data = read_image_bytes(path, max_bytes)
    except ImageLoadError as err:
        return InputFile(None, error=str(err))
    sha = hashlib.sha256(data).hexdigest()
    if not header:
        return InputFile(sha)
    try:
        width, height = header_size(data, str(path), max_pixels)
    except ImageLoadError as err:
        return InputFile(sha, error=str(err))
    return InputFile(sha, width, height)


class _FileInspections:
    """inspect_file once per distinct file of one plan: keyed by the resolved path
    with its size and mtime, so a file rewritten while planning is read again."""

    def __init__(self, config: Config):
        self.max_pixels, self.max_bytes = config.max_image_pixels, config.max_image_bytes
        self.seen: dict[tuple[Path, int, int], InputFile] = {}

    def __call__(self, path: Path | None, name: str) -> InputFile:
        if path is None:
            return inspect_file(None, name, self.max_pixels, max_bytes=self.max_bytes)
        try:
            found = os.stat(path)
        except OSError:  # missing or unreachable: inspect_file says which
            return inspect_file(path, name, self.max_pixels, max_bytes=self.max_bytes)
        key = (path, found.st_size, found.st_mtime_ns)
        if key not in self.seen:
            self.seen[key] = inspect_file(path, name, self.max_pixels, max_bytes=self.max_bytes)
        return self.seen[key]


def min_size_for(width: int, height: int) -> int:
    """The smallest --size at which an image of (width, height) keeps a short side of MIN_SIDE px."""
    long, short = max(width, height, 1), max(min(width, height), 1)
    size = max(MIN_SIDE, (MIN_SIDE - 1) * long // short)
    while min(output_size(long, short, size)) < MIN_SIDE:
        size += 1
    return size


def _too_small(role: str, ref: ImageRef, file: InputFile, config: Config) -> str | None:
    """Why `ref` (a readable header) cannot be used at config.size, or for a style at its
    style_side (a short side under MIN_SIDE), or None."""
    side = config.style_side if role == "style" else config.size
    width, height = output_size(file.width, file.height, side)
    if min(width, height) >= MIN_SIDE:
        return None
    at = f"size {config.size}" + (f" x style_scale {config.style_scale:g}" if side != config.size else "")
    fix = min_size_for(file.width, file.height)
    if side != config.size:
        fix = f"{math.ceil(fix / config.style_scale)} or more, or --style-scale to {fix / config.size:.3g} or more"
    else:
        fix = f"{fix} or more"
    return (
        f"{role} image {ref.image_id!r} ({ref.path}, {file.width}x{file.height}) at {at} would be "
        f"{width}x{height}; the short side must be at least {MIN_SIDE} px (the network pools four times): "
        f"raise --size to {fix}, or crop the image"
    )


def _ref_error(ref: ImageRef) -> str:
    """The catalog's error of an image, without its own 'image <id>: ' prefix (the plan adds its role)."""
    prefix = f"image {ref.image_id!r}: "
    return ref.error[len(prefix) :] if ref.error and ref.error.startswith(prefix) else (ref.error or "")


def _hash_id(**parts: str | None) -> str:
    payload = {"v": DESIGN_ID_VERSION, **parts}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def design_id(content_sha: str, style_sha: str, mask_sha: str | None, config: Config, weights_identity: str) -> str:
    return _hash_id(
        content=content_sha, style=style_sha, mask=mask_sha, config=config.identity_json(), weights=weights_identity
    )


def pairing_key(content_id: str, style_id: str, config: Config, weights_identity: str) -> str:
    """Like design_id, but of image ids instead of bytes: stable while inputs are fixed."""
    return _hash_id(content=content_id, style=style_id, config=config.identity_json(), weights=weights_identity)


def plan_designs(
    catalog: InputCatalog,
    config: Config,
    weights_identity: str,
    done_ids: Container[str],
    specs: Iterable[JobSpec] | None = None,
) -> Plan:
    """`specs`: the designs to make (pipeline.planning.variants.job_specs), iterated once;
    default: the catalog's content x style cross product at `config`. Memory
    grows with the designs to do, not with the pairings already done."""
    # First, so that a catalog over max_pairings is refused before any file is read.
    specs = specs if specs is not None else job_specs(catalog, config)
    inspect = _FileInspections(config)
    files: dict[str, InputFile] = {}
    masks: dict[str, InputFile] = {}
    for ref in catalog.contents + catalog.styles:
        label = f"image {ref.image_id!r}"
        files[ref.image_id] = InputFile(None, error=_ref_error(ref)) if ref.error else inspect(ref.path, label)
        if ref.mask_path is not None:
            masks[ref.image_id] = inspect(ref.mask_path, f"mask of {label}")

    # Per (role, image, size): the output size and why it is too small, reused by every pairing of the image.
    sized: dict[tuple[str, str, int], tuple[tuple[int, int], str | None]] = {}

    def fit(role: str, ref: ImageRef, file: InputFile, cfg: Config) -> tuple[tuple[int, int], str | None]:
        side = cfg.style_side if role == "style" else cfg.size
        key = (role, ref.image_id, side, cfg.size)
        if key not in sized:
            sized[key] = (output_size(file.width, file.height, side), _too_small(role, ref, file, cfg))
        return sized[key]

    todo: list[Job] = []
    failed: list[Job] = []
    done = duplicates = 0
    planned: set[str] = set()
    pairings = 0
    for spec in specs:
        pairings += 1
        cfg, content = spec.config, spec.content
        c = files[content.image_id] if content else None
        m = masks.get(content.image_id) if content else None
        # Every fault of the pairing at once, so one rerun after fixing them is enough.
        # The runner scales the content to the output size and the style to
        # style_scale times its longest side: both must keep a short side VGG19 can pool.
        errors = []
        content_size = (0, 0)
        if content is not None and c is not None:
            if c.error:
                errors.append(f"content image {content.image_id!r}: {c.error}")
            else:
                content_size, too_small = fit("content", content, c, cfg)
                errors.append(too_small)
        for style in spec.styles:
            s = files[style.image_id]
            errors.append(f"style image {style.image_id!r}: {s.error}" if s.error else fit("style", style, s, cfg)[1])
        if m and m.error:
            errors.append(f"mask of content image {content.image_id!r}: {m.error}")
        error = "; ".join(e for e in errors if e) or None
        if content is None:
            width = height = cfg.size  # pattern mode: a square repeat
        else:
            width, height = content_size if error is None else (0, 0)
        style_shas = [files[s.image_id].sha256 or f"unusable:{s.image_id}" for s in spec.styles]
        mix = f"@{','.join(map(repr, spec.style_mix))}" if spec.style_mix else ""
        # Faulty inputs get a stable id from their image ids, so a rerun updates
        # the same failed row instead of adding another.
        did = design_id(
            (c.sha256 or f"unusable:{content.image_id}") if content else "pattern",
            "+".join(style_shas) + mix,
            (m.sha256 or f"unusable-mask:{content.image_id}") if m else None,
            cfg,
            weights_identity,
        )
        if did in done_ids:
            done += 1
            continue
        if did in planned:
            duplicates += 1
            continue
        planned.add(did)
        key = pairing_key(
            content.image_id if content else "", "+".join(s.image_id for s in spec.styles) + mix, cfg, weights_identity
        )
        job = Job(
            did,
            key,
            content,
            spec.styles[0],
            c.sha256 if c else None,
            files[spec.styles[0].image_id].sha256,
            m.sha256 if m else None,
            width,
            height,
            error,
            extra_styles=spec.styles[1:],
            extra_style_sha256s=tuple(files[s.image_id].sha256 for s in spec.styles[1:]),
            style_mix=spec.style_mix,
            config=None if cfg is config or cfg == config else cfg,
            more_like=spec.more_like,
        )
        (failed if error else todo).append(job)
    # The same config and size batch together; sorting keeps each shard's batches full.
    # Within them, design id order: a shard's ids are neighbours, so its commit reads only
    # the few catalog files whose id range meets theirs (DesignCatalog.commit).
    todo.sort(key=lambda j: ("" if j.config is None else j.config.identity_json(), j.height, j.width, j.design_id))
    return Plan(tuple(todo), tuple(failed), done, pairings, duplicates)


def cut_shards(jobs: tuple[Job, ...] | list[Job], shard_size: int) -> list[list[Job]]:
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size} must be >= 1")
    return [list(jobs[i : i + shard_size]) for i in range(0, len(jobs), shard_size)]
