"""Colourway maths: a design recoloured into N flat inks, as a screen printer separates it
(each pixel one of N colours, no dithering: a dither would need more screens or a finer mesh).

1. The design's pixels are clustered into N colours by k-means in OKLab.
   OKLab is perceptual: a Euclidean distance there tracks how different two
   colours look, so clusters split where the eye sees different inks (sRGB
   k-means spends clusters on greens and merges dark blues), and its hue stays
   straight under lightness changes where CIELAB bends blues toward purple.
   It needs no white point and is two 3x3 matrices and a cube root. k-means is
   seeded (k-means++ on a fixed stride of the pixels) so the same design always
   gives the same inks.
2. Inks of its own: each pixel takes its cluster's centre: the design in its own N inks.
   Given colours (a palette file, or the N colours k-means finds in another image): the
   design's clusters are matched to the palette by lightness rank, darkest to darkest, so the
   light and dark structure of the motif (what reads as figure and ground) survives.

Reading a palette file or an image is the catalog's (pipeline/catalog/palettes.py); making
colourways into the catalog is execution's (pipeline/execution/colourways.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_INKS = 16  # a screen per ink: more than a print table holds
DEFAULT_IMAGE_INKS = 6
KMEANS_SAMPLE = 1 << 16  # pixels k-means fits on; every pixel is then assigned
KMEANS_ITERATIONS = 40
QUOTED = 80  # characters of a bad value an error line quotes
_HEX = re.compile(r"#?([0-9A-Fa-f]{6})\b")


class ColourwayError(ValueError):
    """A palette, image or selection that cannot make colourways; the message says what is accepted."""


# --- colour ---

_M1 = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_M2 = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)


def _linear(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _gamma(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def srgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in [0, 1] -> OKLab (Ottosson 2020)."""
    lms = _linear(np.asarray(rgb, dtype=np.float64)) @ _M1.T
    return np.cbrt(lms) @ _M2.T


def oklab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """OKLab -> (..., 3) sRGB in [0, 1] (out-of-gamut colours clipped)."""
    lms = (np.asarray(lab, dtype=np.float64) @ np.linalg.inv(_M2).T) ** 3
    return np.clip(_gamma(lms @ np.linalg.inv(_M1).T), 0.0, 1.0)


def to_hex(rgb: np.ndarray) -> list[str]:
    return ["#" + "".join(f"{round(float(c) * 255):02x}" for c in colour) for colour in np.atleast_2d(rgb)]


def from_hex(colours: Sequence[str]) -> np.ndarray:
    return np.array([[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in colours], dtype=np.float64)


def kmeans(points: np.ndarray, k: int, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """k centres of (N, 3) points, seeded k-means++ on a fixed stride of at most KMEANS_SAMPLE
    points, sorted by lightness (the first coordinate). Fewer distinct points than k: those points."""
    sample = points[:: max(1, len(points) // KMEANS_SAMPLE)]
    distinct = np.unique(np.round(sample, 6), axis=0)
    if len(distinct) <= k:
        return distinct[np.argsort(distinct[:, 0], kind="stable")]
    rng = np.random.default_rng(0)
    centres = [sample[rng.integers(len(sample))]]
    for _ in range(1, k):
        d2 = ((sample[:, None, :] - np.array(centres)[None]) ** 2).sum(-1).min(1)
        centres.append(sample[rng.choice(len(sample), p=d2 / d2.sum())])
    centres = np.array(centres)
    for _ in range(iterations):
        labels = assign(sample, centres)
        moved = np.array([sample[labels == i].mean(0) if (labels == i).any() else centres[i] for i in range(k)])
        if np.allclose(moved, centres, atol=1e-7):
            break
        centres = moved
    return centres[np.argsort(centres[:, 0], kind="stable")]


def assign(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The nearest centre of each point, in chunks to bound memory."""
    out = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), 1 << 18):
        chunk = points[start : start + (1 << 18)]
        out[start : start + len(chunk)] = ((chunk[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    return out


# --- palettes ---


@dataclass(frozen=True)
class Palette:
    """How a colourway is coloured: given colours, another image's N colours, or the design's own N inks."""

    method: str  # "palette", "image" or "inks"
    colours: tuple[str, ...] = ()  # the hex colours given or found (not for "inks": found per design)
    inks: int = 0
    source: str = ""  # --palette FILE or --from-image IMG, as given
    source_sha256: str = ""  # --from-image: the image's bytes

    @property
    def key(self) -> str:
        """What the colourway's id hashes: the same palette definition gives the same ids."""
        if self.method == "palette":
            return "palette:" + ",".join(self.colours)
        if self.method == "image":
            return f"image:{self.source_sha256}:{self.inks}"
        return f"inks:{self.inks}"

    def describe(self) -> str:
        if self.method == "palette":
            return f"palette {self.source} ({len(self.colours)} colours)"
        if self.method == "image":
            return f"{self.inks} colours of {self.source}"
        return f"{self.inks} inks of its own"


def check_inks(n: int, what: str) -> None:
    if not 2 <= n <= MAX_INKS:
        raise ColourwayError(f"{what} {n} is invalid; accepted: 2 to {MAX_INKS} colours")


def parse_palette(text: str, name: str) -> tuple[str, ...]:
    """Hex colours (#RRGGBB or RRGGBB) separated by whitespace, commas or semicolons, in their
    order; a '#' followed by a space (or ending the line) starts a comment to the end of the line."""
    colours = []
    for line in text.splitlines():
        for token in re.split(r"[\s,;]+", line.strip()):
            if not token:
                continue
            match = _HEX.fullmatch(token)
            if match:
                colours.append("#" + match.group(1).lower())
            elif token == "#":
                break  # a comment: "#" then a space
            else:
                raise ColourwayError(
                    f"palette {name}: {_quote(token)} is not a hex colour; accepted: #RRGGBB, e.g. #1f6fb4"
                )
    if len(set(colours)) != len(colours):
        raise ColourwayError(f"palette {name}: a colour is listed twice; accepted: distinct #RRGGBB colours")
    check_inks(len(colours), f"palette {name}: colour count")
    return tuple(colours)


def _quote(value: str) -> str:
    """repr(value), cut to QUOTED characters: an error line never echoes a whole file."""
    return repr(value) if len(value) <= QUOTED else repr(value[:QUOTED]) + f"... ({len(value)} characters)"


def image_palette(rgb: np.ndarray, inks: int, source: str, source_sha256: str) -> Palette:
    """The `inks` colours k-means finds in (..., 3) sRGB pixels in [0, 1] of the image `source`."""
    check_inks(inks, "--inks")
    centres = kmeans(srgb_to_oklab(np.asarray(rgb).reshape(-1, 3)), inks)
    if len(centres) < inks:
        raise ColourwayError(
            f"--from-image {source!r} has {len(centres)} colours; accepted: --inks {len(centres)} or fewer"
        )
    return Palette("image", tuple(to_hex(oklab_to_srgb(centres))), inks, source, source_sha256)


def inks_palette(inks: int) -> Palette:
    check_inks(inks, "--inks")
    return Palette("inks", inks=inks)


def recolour(rgb: np.ndarray, palette: Palette) -> tuple[np.ndarray, list[str]]:
    """(H, W, 3) sRGB in [0, 1] -> the flat colourway and the hex colours it is printed in."""
    h, w, _ = rgb.shape
    lab = srgb_to_oklab(rgb.reshape(-1, 3))
    k = palette.inks if palette.method == "inks" else len(palette.colours)
    centres = kmeans(lab, k)
    labels = assign(lab, centres)
    if palette.method == "inks":
        inks = oklab_to_srgb(centres)
    else:
        # Lightness rank to lightness rank; a design with fewer colours takes the palette's spread over them.
        target = from_hex(palette.colours)
        order = np.argsort(srgb_to_oklab(target)[:, 0], kind="stable")
        picks = np.round(np.linspace(0, len(order) - 1, len(centres))).astype(int) if len(centres) < k else np.arange(k)
        inks = target[order[picks]]
    used = sorted(set(labels.tolist()))
    out = inks[labels].reshape(h, w, 3)
    return out, to_hex(inks[used])
