"""Planning: hash every input once, give every pairing its design id, drop the
designs already `ok` in the catalog, and cut the rest into shards.

A design id is a hash of both inputs' bytes, the mask's bytes, the config
fields that change pixels and the weights' identity: the same job always gets
the same id, so reruns skip finished work.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipeline.config import Config
from pipeline.images import ImageLoadError, output_size, read_image_bytes
from pipeline.inputs import ImageRef, InputCatalog
from pipeline.vgg import MIN_SIDE

DESIGN_ID_VERSION = 1
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees


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
    content: ImageRef
    style: ImageRef
    content_sha256: str | None
    style_sha256: str | None
    mask_sha256: str | None
    width: int  # output size
    height: int
    error: str | None = None  # an input fault found while planning: the design fails without running


@dataclass(frozen=True)
class Plan:
    todo: tuple[Job, ...]
    failed: tuple[Job, ...]
    already_done: int
    pairings: int
    duplicates: int = 0  # pairings whose inputs' bytes repeat another pairing's: one design serves both


def inspect_file(path: Path | None, name: str, max_pixels: int, header: bool = True) -> InputFile:
    """Hash a file and read its header only (no decoding)."""
    if path is None:
        return InputFile(None, error=f"{name}: no usable path")
    try:
        data = read_image_bytes(path)
    except ImageLoadError as err:
        return InputFile(None, error=str(err))
    sha = hashlib.sha256(data).hexdigest()
    if not header:
        return InputFile(sha)
    if not data:
        return InputFile(sha, error=f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                orientation = image.getexif().get(0x0112, 1)
    except UnidentifiedImageError:
        return InputFile(sha, error=f"{path}: not an image file Pillow can identify")
    except (OSError, SyntaxError, ValueError) as err:
        return InputFile(sha, error=f"{path}: unreadable image header ({type(err).__name__}: {err})")
    if width * height > max_pixels:
        return InputFile(sha, error=f"{path}: declares {width}x{height} = {width * height} pixels, over the limit of {max_pixels} (max_image_pixels)")
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return InputFile(sha, width, height)


def design_id(content_sha: str, style_sha: str, mask_sha: str | None, config: Config, weights_identity: str) -> str:
    payload = {
        "v": DESIGN_ID_VERSION,
        "content": content_sha,
        "style": style_sha,
        "mask": mask_sha,
        "config": config.identity_dict(),
        "weights": weights_identity,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def pairing_key(content_id: str, style_id: str, config: Config, weights_identity: str) -> str:
    """Like design_id, but of image ids instead of bytes: stable while inputs are fixed."""
    payload = {"v": DESIGN_ID_VERSION, "content": content_id, "style": style_id, "config": config.identity_dict(), "weights": weights_identity}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def plan_designs(catalog: InputCatalog, config: Config, weights_identity: str, done_ids: set[str]) -> Plan:
    files: dict[str, InputFile] = {}
    masks: dict[str, InputFile] = {}
    for ref in catalog.contents + catalog.styles:
        label = f"image {ref.image_id!r}"
        files[ref.image_id] = InputFile(None, error=ref.error) if ref.error else inspect_file(ref.path, label, config.max_image_pixels)
        if ref.mask_path is not None:
            masks[ref.image_id] = inspect_file(ref.mask_path, f"mask of {label}", config.max_image_pixels)

    todo: list[Job] = []
    failed: list[Job] = []
    done = duplicates = 0
    planned: set[str] = set()
    pairings = catalog.pairings()
    for content, style in pairings:
        c, s = files[content.image_id], files[style.image_id]
        m = masks.get(content.image_id)
        errors = [f"content image {content.image_id!r}: {c.error}" if c.error else None,
                  f"style image {style.image_id!r}: {s.error}" if s.error else None,
                  f"mask of content image {content.image_id!r}: {m.error}" if m and m.error else None]
        error = "; ".join(e for e in errors if e) or None
        width = height = 0
        if error is None:
            width, height = output_size(c.width, c.height, config.size)
            if min(width, height) < MIN_SIDE:
                error = (f"content image {content.image_id!r} at size {config.size} would be {width}x{height}; "
                         f"the short side must be at least {MIN_SIDE} px (VGG19 pools four times): raise --size")
        # Faulty inputs get a stable id from their image ids, so a rerun updates
        # the same failed row instead of adding another.
        did = design_id(
            c.sha256 or f"unusable:{content.image_id}",
            s.sha256 or f"unusable:{style.image_id}",
            (m.sha256 or f"unusable-mask:{content.image_id}") if m else None,
            config,
            weights_identity,
        )
        if did in done_ids:
            done += 1
            continue
        if did in planned:
            duplicates += 1
            continue
        planned.add(did)
        key = pairing_key(content.image_id, style.image_id, config, weights_identity)
        job = Job(did, key, content, style, c.sha256, s.sha256, m.sha256 if m else None, width, height, error)
        (failed if error else todo).append(job)
    # The same size batches together; sorting keeps each shard's batches full.
    todo.sort(key=lambda j: (j.height, j.width, j.style.image_id, j.content.image_id))
    return Plan(tuple(todo), tuple(failed), done, len(pairings), duplicates)


def cut_shards(jobs: tuple[Job, ...] | list[Job], shard_size: int) -> list[list[Job]]:
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size} must be >= 1")
    return [list(jobs[i : i + shard_size]) for i in range(0, len(jobs), shard_size)]
