"""Palettes read from files: `designs colourways --palette FILE` (hex colours) and
`--from-image IMG` (the colours k-means finds in another image). Both are refused, in one
line, before they are read when they are not what they seem (a FIFO, a device, a folder, a
huge file); the maths is pipeline/engine/palette.py's."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np

from pipeline.catalog.images import DEFAULT_MAX_BYTES, ImageLoadError, decode_rgb_reduced, read_image_bytes
from pipeline.config import config_field
from pipeline.engine.palette import ColourwayError, Palette, check_inks, image_palette, parse_palette

MAX_PIXELS: int = config_field("max_image_pixels").default
MAX_PALETTE_BYTES = 1 << 20  # a palette is a few lines of hex colours; checked before reading
PALETTE_IMAGE_PIXELS = 1 << 18  # --from-image is decoded down to about this many: k-means fits on 1 << 16


def _not_regular(mode: int) -> str | None:
    """What a file that is not a regular file is, for the refusal; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"))
    kinds += ((stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), f"file type {stat.S_IFMT(mode):o}")


def read_palette_text(path: str | Path, max_bytes: int = MAX_PALETTE_BYTES) -> str:
    """The text of a palette file: a regular file of at most `max_bytes`, both checked before
    reading (a FIFO would block, /dev/zero never ends), UTF-8 with or without a BOM."""
    name = repr(str(path))
    try:
        # stat before open: opening a FIFO waits for a writer.
        if kind := _not_regular(os.stat(path).st_mode):
            raise ColourwayError(f"palette {name} is {kind}; accepted: a regular text file of hex colours")
        # O_NONBLOCK: should a FIFO replace the file after the stat, the open does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise ColourwayError(f"palette {name}: cannot read: {err.strerror or err}") from None
    with os.fdopen(fd, "rb") as handle:
        found = os.fstat(handle.fileno())  # the file opened, in case it was swapped after the stat
        if kind := _not_regular(found.st_mode):
            raise ColourwayError(f"palette {name} is {kind}; accepted: a regular text file of hex colours")
        if found.st_size > max_bytes:
            raise ColourwayError(f"palette {name}: {found.st_size} bytes; accepted: at most {max_bytes} bytes")
        try:
            data = handle.read(max_bytes + 1)  # bounded even if the file grew after the stat
        except OSError as err:
            raise ColourwayError(f"palette {name}: cannot read: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise ColourwayError(f"palette {name}: more than {max_bytes} bytes; accepted: at most {max_bytes} bytes")
    try:
        return data.decode("utf-8-sig")  # a BOM, as some editors save, is not a colour
    except UnicodeDecodeError as err:
        raise ColourwayError(
            f"palette {name}: not UTF-8 text (byte {err.start}); accepted: a text file of hex colours"
        ) from None


def palette_from_file(path: str | Path) -> Palette:
    return Palette("palette", parse_palette(read_palette_text(path), repr(str(path))), source=str(path))


def palette_from_image(path: str | Path, inks: int) -> Palette:
    check_inks(inks, "--inks")
    try:
        data = read_image_bytes(Path(path), DEFAULT_MAX_BYTES)
        # Decoded reduced (JPEG's DCT scaling, then a nearest-pixel resize): a 62-megapixel photo
        # would otherwise take gigabytes for colours that a quarter-million pixels show as well.
        image = decode_rgb_reduced(data, str(path), MAX_PIXELS, PALETTE_IMAGE_PIXELS)
    except ImageLoadError as err:
        raise ColourwayError(f"--from-image: {err}") from None
    rgb = np.asarray(image, dtype=np.float64).reshape(-1, 3) / 255
    return image_palette(rgb, inks, str(path), hashlib.sha256(data).hexdigest())
