"""Strict, safe image loading and PNG writing.

Every Pillow mode becomes RGB (alpha composited on white), EXIF orientation is
applied, and a declared pixel count over the limit is refused before decoding.
Anything unreadable raises ImageLoadError naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# Our own limit is checked first; Pillow's bomb check stays on as a backstop.
Image.MAX_IMAGE_PIXELS = None


class ImageLoadError(ValueError):
    """An image that cannot be used; the message names the file and the reason."""


def read_image_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(f"{path}: is a directory, not an image file") from None
    except OSError as err:
        raise ImageLoadError(f"{path}: cannot read: {err.strerror or err}") from None


def decode_rgb(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Decode image bytes to an RGB image; `name` is used in error messages."""
    if not data:
        raise ImageLoadError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageLoadError(
                    f"{name}: declares {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels} (max_image_pixels); refused before decoding"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not an image file Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageLoadError(f"{name}: unreadable image ({type(err).__name__}: {err})") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grey: scale to 8 bits instead of letting convert() clip.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        top = 1.0 if array.max() <= 1.0 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
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


def tensor_to_png_bytes(image: torch.Tensor, text: dict[str, str] | None = None) -> bytes:
    """(3, H, W) in [0, 1] -> PNG bytes."""
    array = (image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    buffer = io.BytesIO()
    pnginfo = None
    if text:
        from PIL.PngImagePlugin import PngInfo

        pnginfo = PngInfo()
        for key, value in text.items():
            pnginfo.add_itxt(key, value)
    Image.fromarray(array, "RGB").save(buffer, format="PNG", pnginfo=pnginfo)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> str:
    """Write via a temporary file and rename, so a crash never leaves half a file. Returns SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()
