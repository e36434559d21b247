"""Strict, safe image loading, and PNG and 16-bit TIFF writing.

Every Pillow mode becomes RGB (alpha composited on white), EXIF orientation is
applied, and a declared pixel count over the limit is refused before decoding.
Only regular files are read, their size checked before reading (a FIFO would
block, /dev/zero never ends). Anything unreadable raises ImageLoadError naming
the file.

Planning (`header_size`) and decoding (`decode_rgb`) read the size and the EXIF
orientation the same way, from the header only, so the size a design is
planned at is the size its content decodes to.
"""

from __future__ import annotations

import functools
import io
import json
import os
import stat
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError

from pipeline.config import config_field

# Pillow's own bomb check is off: our limit (max_image_pixels) is checked on the
# declared size right after the header is read, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None

# EXIF orientation -> the transpose that turns the stored pixels upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {5, 6, 7, 8}  # orientations that turn the image by 90 degrees


class ImageLoadError(ValueError):
    """An image that cannot be used; the message names the file and the reason."""


DEFAULT_MAX_BYTES: int = config_field("max_image_bytes").default  # Config's default, not restated

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path, mode: int) -> ImageLoadError | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return ImageLoadError(f"{path}: is a directory, not an image file")
    kind = next((name for test, name in _KINDS if test(mode)), f"file type {stat.S_IFMT(mode):o}")
    return ImageLoadError(f"{path}: not a regular file ({kind}); only regular image files are read")


def read_image_bytes(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, both checked before reading."""
    try:
        # stat before open: opening a FIFO waits for a writer, opening a device can act on it.
        if error := _not_regular(path, os.stat(path).st_mode):
            raise error
        # O_NONBLOCK: should a FIFO replace the file after the stat, the open does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: file not found") from None
    except OSError as err:
        raise ImageLoadError(f"{path}: cannot read: {err.strerror or err}") from None
    with os.fdopen(fd, "rb") as handle:
        found = os.fstat(handle.fileno())  # the file opened, in case it was swapped after the stat
        if error := _not_regular(path, found.st_mode):
            raise error
        if found.st_size > max_bytes:
            raise ImageLoadError(f"{path}: {found.st_size} bytes, over max_image_bytes={max_bytes}")
        try:
            data = handle.read(found.st_size + 1)
            # More only if the file grew after the stat (or, like /proc files, says 0): still bounded.
            while len(data) <= max_bytes and (more := handle.read(min(1 << 20, max_bytes + 1 - len(data)))):
                data += more
        except OSError as err:
            raise ImageLoadError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise ImageLoadError(f"{path}: more than {max_bytes} bytes, over max_image_bytes={max_bytes}")
    return data


def open_image(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open image bytes and read the header only; refuse a declared size over
    `max_pixels` before anything is decoded. Raises ImageLoadError naming `name`."""
    if not data:
        raise ImageLoadError(f"{name}: empty file")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not an image file Pillow can identify") from None
    except Exception as err:  # a corrupt header can raise almost anything inside a Pillow plugin
        raise ImageLoadError(f"{name}: unreadable image header ({type(err).__name__}: {err})") from None
    if width < 1 or height < 1:
        image.close()
        raise ImageLoadError(f"{name}: declares an empty size {width}x{height}; an image needs at least 1x1 pixels")
    if width * height > max_pixels:
        image.close()
        raise ImageLoadError(
            f"{name}: declares {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} (max_image_pixels); refused before decoding"
        )
    return image


def exif_orientation(image: Image.Image, data: bytes | None = None) -> int:
    """The EXIF (or XMP) orientation, 1 to 8, read without decoding any pixels.

    PngImageFile.getexif decodes the whole image first when the header has no
    eXIf chunk (it may follow the pixel data), so the base implementation reads
    what the header gave, and a PNG's chunk list is walked for an eXIf chunk
    after the data. A missing, unknown or unparsable orientation counts as 1."""
    try:
        orientation = Image.Image.getexif(image).get(ExifTags.Base.Orientation)
        if orientation is None and image.format == "PNG" and data is not None:
            chunk = _png_chunk(data, b"eXIf")
            if chunk:
                exif = Image.Exif()
                exif.load(chunk)
                orientation = exif.get(ExifTags.Base.Orientation)
    except Exception:
        return 1
    return orientation if orientation in _UPRIGHT else 1


def _png_chunk(data: bytes, kind: bytes) -> bytes | None:
    """The body of the first chunk of type `kind` in PNG bytes, found by skipping from chunk to chunk."""
    position = 8
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        name = data[position + 4 : position + 8]
        if name == kind:
            return data[position + 8 : position + 8 + length]
        if name == b"IEND":
            return None
        position += 12 + length
    return None


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) once the EXIF orientation is applied."""
    return (height, width) if orientation in _SWAPS_AXES else (width, height)


def header_size(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """The upright (width, height) of image bytes, from the header alone: nothing is decoded."""
    with open_image(data, name, max_pixels) as image:
        return upright_size(image.width, image.height, exif_orientation(image, data))


def decode_rgb(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Decode image bytes to an upright RGB image; `name` is used in error messages."""
    image = open_image(data, name, max_pixels)
    try:
        with image:
            orientation = exif_orientation(image, data)  # before load(), as header_size reads it
            image.load()
            if orientation in _UPRIGHT:
                image = image.transpose(_UPRIGHT[orientation])
            return to_rgb(image)
    except Exception as err:  # truncated data, a corrupt stream, a mode Pillow cannot convert
        raise ImageLoadError(f"{name}: unreadable image ({type(err).__name__}: {err})") from None


def decode_rgb_reduced(data: bytes, name: str, max_pixels: int, target_pixels: int) -> Image.Image:
    """As decode_rgb, but an image over `target_pixels` comes back with about that many: a JPEG
    is decoded at 1/2, 1/4 or 1/8 scale (draft mode: the smaller decode is what saves the memory
    and the time), then every image is resized, nearest pixel, so its colours are its own.
    For what needs the colours, not the full resolution (a palette)."""
    image = open_image(data, name, max_pixels)  # the declared size is checked before any decoding
    try:
        with image:
            orientation = exif_orientation(image, data)
            width, height = image.size
            factor = (width * height / target_pixels) ** 0.5
            if factor > 1:
                wanted = (max(1, int(width / factor)), max(1, int(height / factor)))
                image.draft(None, wanted)  # JPEG only; others ignore it
            image.load()
            if factor > 1 and image.size[0] * image.size[1] > target_pixels:
                image = image.resize(wanted, Image.Resampling.NEAREST)
            if orientation in _UPRIGHT:
                image = image.transpose(_UPRIGHT[orientation])
            return to_rgb(image)
    except Exception as err:  # truncated data, a corrupt stream, a mode Pillow cannot convert
        raise ImageLoadError(f"{name}: unreadable image ({type(err).__name__}: {err})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit and float grey: scale to 8 bits instead of letting convert() clip.
        array = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            top = 1.0 if np.nanmax(array, initial=0.0) <= 1.0 else 255.0
        else:
            top = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        grey = np.clip(np.nan_to_num(array) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        key = image.info.get("transparency")
        if isinstance(key, (int, float)):  # a tRNS grey level: those pixels are transparent
            alpha = np.where(array == key, 0, 255).astype(np.uint8)
            image = Image.merge("LA", (Image.fromarray(grey, "L"), Image.fromarray(alpha, "L")))
        else:
            image = Image.fromarray(grey, "L")
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def output_size(width: int, height: int, longest_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is `longest_side`."""
    scale = longest_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_to_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] at `size` = (width, height)."""
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def tensor_to_png_bytes(image: torch.Tensor, text: dict[str, str] | None = None, dpi: int = 0) -> bytes:
    """(3, H, W) in [0, 1] -> PNG bytes, marked sRGB, with text chunks and an optional DPI."""
    from PIL.PngImagePlugin import PngInfo

    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    pnginfo = PngInfo()
    pnginfo.add(b"sRGB", b"\x00")  # perceptual rendering intent: the pixels are sRGB
    for key, value in (text or {}).items():
        pnginfo.add_itxt(key, value)
    options = {"dpi": (dpi, dpi)} if dpi else {}
    Image.fromarray(array, "RGB").save(buffer, format="PNG", pnginfo=pnginfo, **options)
    return buffer.getvalue()


@functools.cache
def srgb_icc_profile() -> bytes:
    """LittleCMS's sRGB profile (IEC 61966-2.1 primaries and tone curve), built once per process."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# TIFF field types: SHORT, LONG, RATIONAL, ASCII, UNDEFINED.
_SHORT, _LONG, _RATIONAL, _ASCII, _UNDEFINED = 3, 4, 5, 2, 7


def tensor_to_tiff16_bytes(image: torch.Tensor, text: dict[str, str] | None = None, dpi: int = 0) -> bytes:
    """(3, H, W) in [0, 1] -> an uncompressed 16-bit RGB baseline TIFF (little-endian, one strip)
    with an embedded sRGB ICC profile, the DPI, and `text` as JSON in ImageDescription.

    Written here, not by Pillow, which saves RGB TIFFs with 8 bits per sample only."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    pixels = image.detach().float().clamp(0, 1).mul(65535).round().to(torch.int32).permute(1, 2, 0).cpu().numpy()
    data = pixels.astype("<u2").tobytes()
    description = json.dumps(text or {}, sort_keys=True).encode("utf-8") + b"\0"
    fields: list[tuple[int, int, int, bytes]] = [  # tag, type, count, value bytes
        (256, _LONG, 1, struct.pack("<I", width)),
        (257, _LONG, 1, struct.pack("<I", height)),
        (258, _SHORT, 3, struct.pack("<HHH", 16, 16, 16)),
        (259, _SHORT, 1, struct.pack("<H", 1)),  # no compression
        (262, _SHORT, 1, struct.pack("<H", 2)),  # RGB
        (270, _ASCII, len(description), description),
        (273, _LONG, 1, b""),  # the strip's offset, known once the layout is
        (277, _SHORT, 1, struct.pack("<H", 3)),
        (278, _LONG, 1, struct.pack("<I", height)),
        (279, _LONG, 1, struct.pack("<I", len(data))),
        (284, _SHORT, 1, struct.pack("<H", 1)),  # interleaved RGB
        (305, _ASCII, 8, b"designs\0"),
        (34675, _UNDEFINED, len(srgb_icc_profile()), srgb_icc_profile()),
    ]
    if dpi:
        fields += [
            (282, _RATIONAL, 1, struct.pack("<II", dpi, 1)),
            (283, _RATIONAL, 1, struct.pack("<II", dpi, 1)),
            (296, _SHORT, 1, struct.pack("<H", 2)),  # inches
        ]
    fields.sort()
    ifd_size = 2 + 12 * len(fields) + 4
    extra = bytearray()
    extra_start = 8 + ifd_size
    offsets: dict[int, int] = {}
    for tag, _, _, value in fields:
        if len(value) > 4:
            offsets[tag] = extra_start + len(extra)
            extra += value + b"\0" * (len(value) % 2)  # values start on a word boundary
    strip_offset = extra_start + len(extra)
    out = bytearray(b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(fields)))
    for tag, kind, count, value in fields:
        if tag == 273:
            value = struct.pack("<I", strip_offset)
        field_value = struct.pack("<I", offsets[tag]) if tag in offsets else value.ljust(4, b"\0")
        out += struct.pack("<HHI", tag, kind, count) + field_value
    out += struct.pack("<I", 0) + extra + data
    return bytes(out)


def design_file_bytes(image: torch.Tensor, file_format: str, text: dict[str, str], dpi: int) -> tuple[bytes, str]:
    """The design's file in `file_format` ('png' or 'tiff16') and its extension."""
    if file_format == "tiff16":
        return tensor_to_tiff16_bytes(image, text=text, dpi=dpi), "tif"
    if file_format == "png":
        return tensor_to_png_bytes(image, text=text, dpi=dpi), "png"
    raise ValueError(f"format={file_format!r} is invalid; accepted: png or tiff16")
