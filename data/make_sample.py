"""Make the small sample input catalog under data/sample/.

Writes three garment silhouettes (content/, RGB PNG) with their masks (masks/,
mode "L": 255 = garment, 0 = background), four textures (styles/, RGB PNG
256x256) and catalog.parquet listing them. Every image is synthetic: drawn by
this script with Pillow and numpy from fixed shapes and fixed seeds, no external
data. Output is byte-identical from run to run and is overwritten each time.

    python data/make_sample.py [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

# Garments: size (w, h), fill colour, filled shapes ("poly" points or "ellipse"
# box) and detail strokes (seams, collars, pockets) drawn in a darker tone.
GARMENTS = {
    "tshirt": dict(
        size=(256, 256),
        colour=(212, 212, 218),
        shapes=[
            (
                "poly",
                [
                    (100, 40),
                    (60, 52),
                    (16, 100),
                    (42, 130),
                    (72, 108),
                    (74, 228),
                    (182, 228),
                    (184, 108),
                    (214, 130),
                    (240, 100),
                    (196, 52),
                    (156, 40),
                    (142, 56),
                    (128, 60),
                    (114, 56),
                ],
            )
        ],
        details=[
            ("line", [(60, 52), (72, 108)]),
            ("line", [(196, 52), (184, 108)]),
            ("line", [(22, 106), (46, 125)]),
            ("line", [(234, 106), (210, 125)]),
            ("line", [(75, 218), (181, 218)]),
            ("line", [(106, 46), (118, 62), (128, 65), (138, 62), (150, 46)]),
            ("poly", [(146, 92), (170, 92), (170, 118), (146, 118)]),
        ],
    ),
    "dress": dict(
        size=(256, 320),
        colour=(226, 188, 204),
        shapes=[
            (
                "poly",
                [
                    (92, 26),
                    (106, 26),
                    (128, 78),
                    (150, 26),
                    (164, 26),
                    (172, 62),
                    (168, 132),
                    (224, 290),
                    (180, 300),
                    (128, 304),
                    (76, 300),
                    (32, 290),
                    (88, 132),
                    (84, 62),
                ],
            )
        ],
        details=[
            ("line", [(88, 124), (168, 124)]),
            ("line", [(88, 134), (168, 134)]),
            ("line", [(110, 134), (88, 298)]),
            ("line", [(128, 134), (128, 300)]),
            ("line", [(146, 134), (168, 298)]),
            ("line", [(36, 282), (76, 291), (128, 295), (180, 291), (220, 282)]),
            ("dot", [(128, 92)]),
            ("dot", [(128, 106)]),
        ],
    ),
    "hoodie": dict(
        size=(256, 256),
        colour=(182, 198, 216),
        shapes=[
            ("ellipse", [(84, 8), (172, 92)]),
            (
                "poly",
                [
                    (84, 50),
                    (50, 60),
                    (18, 200),
                    (46, 212),
                    (70, 112),
                    (68, 234),
                    (188, 234),
                    (186, 112),
                    (210, 212),
                    (238, 200),
                    (206, 60),
                    (172, 50),
                ],
            ),
        ],
        details=[
            ("ellipse", [(104, 26), (152, 80)]),
            ("line", [(118, 78), (114, 122)]),
            ("line", [(138, 78), (142, 122)]),
            ("poly", [(90, 162), (166, 162), (180, 214), (76, 214)]),
            ("line", [(69, 220), (187, 220)]),
            ("line", [(21, 190), (48, 200)]),
            ("line", [(235, 190), (208, 200)]),
            ("line", [(50, 60), (70, 112)]),
            ("line", [(206, 60), (186, 112)]),
        ],
    ),
}
TAGS = {
    "tshirt": ["garment", "top"],
    "dress": ["garment", "dress"],
    "hoodie": ["garment", "top", "outerwear"],
    "stripes": ["texture", "geometric"],
    "gingham": ["texture", "geometric", "check"],
    "waves": ["texture", "organic"],
    "speckle": ["texture", "noise"],
}
COLLECTIONS = {"dress": "summer", "waves": "summer", "gingham": "winter"}


def draw_shapes(draw: ImageDraw.ImageDraw, shapes, fill=None, outline=None, width=1) -> None:
    for kind, pts in shapes:
        if kind == "poly":
            draw.polygon(pts, fill=fill, outline=outline, width=width)
        elif kind == "ellipse":
            draw.ellipse(pts, fill=fill, outline=outline, width=width)
        elif kind == "line":
            draw.line(pts, fill=outline, width=width, joint="curve")
        elif kind == "dot":
            ((x, y),) = pts
            draw.ellipse([(x - 3, y - 3), (x + 3, y + 3)], fill=outline)


def garment(spec) -> tuple[Image.Image, Image.Image]:
    w, h = spec["size"]
    mask = Image.new("L", (w, h), 0)
    draw_shapes(ImageDraw.Draw(mask), spec["shapes"], fill=255)
    inside = np.asarray(mask) > 0
    # Shading: lit from the top left, darker towards the garment's edges.
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    edge = np.asarray(mask.filter(ImageFilter.GaussianBlur(6)), dtype=np.float64) / 255
    shade = (1.0 - 0.18 * (xx + yy) / 2) * (0.72 + 0.28 * edge)
    rgb = np.array(spec["colour"], dtype=np.float64) * shade[..., None]
    pixels = np.where(inside[..., None], rgb, 255.0)
    image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")
    dark = tuple(int(c * 0.55) for c in spec["colour"])
    draw = ImageDraw.Draw(image)
    draw_shapes(draw, spec["details"], outline=dark, width=2)
    draw_shapes(draw, spec["shapes"], outline=dark, width=2)
    return image, mask


def styles(n: int = 256) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    out = {}
    # Diagonal stripes in four colours with thin dark separators.
    palette = np.array([(230, 57, 70), (241, 250, 238), (69, 123, 157), (255, 183, 3)], dtype=np.float64)
    t = (x + y) / 24
    img = palette[np.floor(t).astype(int) % 4]
    out["stripes"] = np.where(((t % 1) < 0.08)[..., None], 40.0, img)
    # Gingham: red and white check, where a red band crosses a red band is darkest.
    bands = ((x // 16) % 2) + ((y // 16) % 2)
    out["gingham"] = np.array([(250, 246, 240), (226, 118, 120), (176, 28, 44)], dtype=np.float64)[bands.astype(int)]
    # Sinusoidal waves whose phase drives three offset colour channels.
    v = x / 18 + 2.5 * np.sin(y / 22) + 1.2 * np.sin((x + y) / 41)
    out["waves"] = 255 * (0.5 + 0.5 * np.stack([np.sin(v), np.sin(v + 2.1), np.sin(v + 4.2)], axis=-1))
    # Speckle: smoothed seeded noise per channel, plus fine seeded grain.
    rng = np.random.default_rng(20240601)
    coarse = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse, "RGB").resize((n, n), Image.Resampling.BICUBIC), dtype=np.float64)
    lo, hi = smooth.min(axis=(0, 1)), smooth.max(axis=(0, 1))
    out["speckle"] = (smooth - lo) / (hi - lo) * 235 + 10 + rng.normal(0, 14, (n, n, 3))
    return {k: np.clip(a + 0.5, 0, 255).astype(np.uint8) for k, a in out.items()}


# Explicit pairings for `make demo`: masked garments, a colour-keeping design,
# a blend of two styles, and two seamless repeats made from a style alone
# (a half-drop and a brick; `make demo` then recolours the half-drop into inks).
PAIRS = [
    dict(content_id="tshirt", style_ids=["stripes"]),
    dict(content_id="hoodie", style_ids=["gingham"]),
    dict(content_id="dress", style_ids=["waves"], color="keep"),
    dict(content_id="hoodie", style_ids=["waves", "speckle"], style_mix=[0.7, 0.3]),
    dict(content_id=None, style_ids=["speckle"], repeat="half-drop"),
    dict(content_id=None, style_ids=["waves"], repeat="brick"),
]


def write_pairs(path: Path) -> None:
    schema = pa.schema(
        [
            ("content_id", pa.string()),
            ("style_ids", pa.list_(pa.string())),
            ("style_mix", pa.list_(pa.float64())),
            ("color", pa.string()),
            ("repeat", pa.string()),
        ]
    )
    rows = [{"style_mix": None, "color": None, "repeat": None, **row} for row in PAIRS]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "sample")
    out = parser.parse_args().out
    for sub in ("content", "masks", "styles"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    rows = []
    for name, spec in GARMENTS.items():
        image, mask = garment(spec)
        image.save(out / "content" / f"{name}.png", format="PNG")
        mask.save(out / "masks" / f"{name}_mask.png", format="PNG")
        rows.append(
            dict(
                image_id=name,
                role="content",
                uri=f"content/{name}.png",
                collection=COLLECTIONS.get(name),
                mask_uri=f"masks/{name}_mask.png",
                tags=TAGS[name],
                designer="Sample Studio",
            )
        )
    for name, array in styles().items():
        Image.fromarray(array, "RGB").save(out / "styles" / f"{name}.png", format="PNG")
        rows.append(
            dict(
                image_id=name,
                role="style",
                uri=f"styles/{name}.png",
                collection=COLLECTIONS.get(name),
                mask_uri=None,
                tags=TAGS[name],
                designer="Pattern Lab",
            )
        )

    schema = pa.schema(
        [
            ("image_id", pa.string()),
            ("role", pa.string()),
            ("uri", pa.string()),
            ("collection", pa.string()),
            ("mask_uri", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("designer", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / "catalog.parquet")
    write_pairs(out / "pairs.parquet")
    n_content = sum(r["role"] == "content" for r in rows)
    print(
        f"wrote {n_content} content + {len(rows) - n_content} style images and catalog.parquet ({len(rows)} rows) to {out}"
    )


if __name__ == "__main__":
    main()
