"""A 3x3 piece of fabric from one repeat tile, laid out as its repeat says (the README's pictures).

    python data/fabric.py DESIGN.png REPEAT OUT.png

REPEAT: block, half-drop or brick (pipeline.engine.repeats.fabric). The picture is kept
under 400 KB for the docs: quantized to 256 colours when the full-colour PNG is larger.
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np
import torch
from PIL import Image

from pipeline.engine.repeats import fabric

MAX_BYTES = 400_000


def fabric_png(tile: Image.Image, repeat: str, rows: int = 3, columns: int = 3) -> bytes:
    pixels = torch.from_numpy(np.array(tile.convert("RGB"))).permute(2, 0, 1)
    laid = fabric(pixels, repeat, rows, columns).permute(1, 2, 0).numpy()
    picture = Image.fromarray(np.ascontiguousarray(laid))
    for image in (picture, picture.quantize(256, dither=Image.Dither.NONE)):
        out = io.BytesIO()
        image.save(out, "PNG", optimize=True)
        if out.tell() <= MAX_BYTES:
            break
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("design")
    parser.add_argument("repeat", choices=("block", "half-drop", "brick"))
    parser.add_argument("output")
    args = parser.parse_args(argv)
    data = fabric_png(Image.open(args.design), args.repeat)
    with open(args.output, "wb") as f:
        f.write(data)
    print(f"{args.output}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
