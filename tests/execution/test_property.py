"""Property: whatever catalog and files a team hands over, the pure-Python
pipeline (load_input_catalog -> plan_designs -> run_shard -> commit) either
refuses the catalog with a CatalogError naming the row, column or file, or
gives every pairing an honest row: ok with its PNG on disk, or failed with an
error naming the image. Hypothesis draws the catalog table (ids, roles, uris,
optional and extra columns of any type) and the files' bytes."""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import encode, image_array, with_ihdr_size
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.catalog.designs import DesignCatalog
from pipeline.catalog.images import output_size
from pipeline.catalog.inputs import CatalogError, load_input_catalog
from pipeline.config import Config
from pipeline.engine.weights import resolve_weights
from pipeline.execution.rows import RowContext
from pipeline.execution.shard import run_shard
from pipeline.planning.plan import plan_designs

WEIGHTS = resolve_weights("random", 0)
SIZE = 32
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # the README's contract
STRING_COLUMNS = ("image_id", "role", "uri", "collection", "mask_uri")
REQUIRED = ("image_id", "role", "uri")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- files --------------------------------------------------------------------------------------


@dataclass
class FileSpec:
    kind: str
    data: bytes
    size: tuple[int, int] | None = None  # a valid image's (width, height)
    certainly_bad: bool = False  # no decoder can make an image of it


MAGICS = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"BM",
]


MODES = {  # what each format can hold
    "PNG": ["RGB", "L", "RGBA", "P", "LA", "1", "I;16"],
    "JPEG": ["RGB", "L", "CMYK"],
    "GIF": ["RGB", "L", "P", "1"],
    "WEBP": ["RGB", "RGBA"],
    "TIFF": ["RGB", "L", "RGBA", "P", "LA", "1", "CMYK", "I;16"],
}


@st.composite
def valid_image(draw, fmt: str | None = None) -> FileSpec:
    width = draw(st.integers(8, 48))
    height = draw(st.integers(max(8, width // 2), min(48, 2 * width)))  # narrow strips are FILE_KINDS' "strip"
    fmt = fmt or draw(st.sampled_from(list(MODES)))
    mode = draw(st.sampled_from(MODES[fmt]))
    seed = draw(st.integers(0, 2**16))
    image = Image.fromarray(image_array(width, height, seed), "RGB").convert(mode)
    return FileSpec(f"{fmt.lower()}-{mode}", encode(image, fmt), (width, height))


FILE_KINDS = ["strip", "empty", "text", "random", "truncated", "corrupted", "bomb"]


@st.composite
def file_spec(draw, mood: str = "hostile") -> FileSpec:
    kinds = {"friendly": ["valid"], "mixed": ["valid"] * 21 + FILE_KINDS, "hostile": ["valid"] * 4 + FILE_KINDS}[mood]
    kind = draw(st.sampled_from(kinds))
    if kind == "valid":
        return draw(valid_image())
    if kind == "strip":  # 200x10 is 32x2 at size 32: under VGG19's 16 px
        return FileSpec("strip", encode(Image.new("RGB", (200, 10), (90, 20, 40)), "PNG"), (200, 10))
    if kind == "empty":
        return FileSpec("empty", b"", certainly_bad=True)
    if kind == "text":
        words = draw(st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=80))
        return FileSpec("text", ("notes: " + words).encode(), certainly_bad=True)
    if kind == "random":
        return FileSpec("random", draw(st.sampled_from(MAGICS)) + draw(st.binary(max_size=300)))
    if kind == "bomb":  # declares far more than any limit drawn below, carries 16x16 of data
        side = draw(st.integers(20_000, 100_000))
        data = with_ihdr_size(encode(Image.new("RGB", (16, 16)), "PNG"), side, side)
        return FileSpec("bomb", data, certainly_bad=True)
    whole = draw(valid_image(draw(st.sampled_from(["PNG", "JPEG"]))))
    if kind == "truncated":
        return FileSpec("truncated", whole.data[: draw(st.integers(0, len(whole.data) - 1))])
    data = bytearray(whole.data)  # corrupted: a few bytes flipped
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return FileSpec("corrupted", bytes(data))


# --- catalogs -----------------------------------------------------------------------------------

URI_KINDS = [
    "file",
    "file",
    "file",
    "file",
    "missing",
    "escape_relative",
    "escape_absolute",
    "escape_symlink",
    "inside_absolute",
    "inside_symlink",
    "dotdot_inside",
    "directory",
    "scheme",
    "nul",
    "null",
    "empty",
]
GOOD_IDS = ["a", "b", "c1", "img.2", "x-y", "Z_9", "dress", "stripes"]
BAD_IDS = ["", "../x", ".hidden", "-dash", "a b", "a/b", "é", "x\n", None]
ROLES = ["content", "style"]
BAD_ROLES = ["Content", "", "mask", None]

EXTRA_TYPES = {
    "int": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "float": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "text": (pa.string(), st.text(max_size=12)),
    "bool": (pa.bool_(), st.booleans()),
    "binary": (pa.binary(), st.binary(max_size=12)),
    "ints": (pa.list_(pa.int64()), st.lists(st.integers(-5, 5), max_size=3)),
    "time": (pa.timestamp("us"), st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1))),
    "struct": (pa.struct([("k", pa.string())]), st.fixed_dictionaries({"k": st.text(max_size=4)})),
}


@dataclass
class Column:
    name: str
    type: pa.DataType
    values: list[Any]
    fill: str | None = None  # "uri" or "mask_uri": the values are the targets' uris, known once the folder exists


@dataclass
class Scenario:
    files: list[FileSpec]
    uris: list[tuple[str, int]]  # per row: uri kind, pool index
    masks: list[tuple[str, int] | None]  # per row, when a mask_uri column is drawn
    columns: list[Column]
    allow_outside: bool
    max_pixels: int


def _string_type(draw) -> pa.DataType:
    return draw(st.sampled_from([pa.string(), pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())]))


@st.composite
def scenarios(draw) -> Scenario:
    mood = draw(st.sampled_from(["friendly", "mixed", "hostile"]))  # how many of the files and uris are bad
    files = draw(st.lists(file_spec(mood), min_size=1, max_size=4))
    clean = draw(st.sampled_from([True, True, True, False]))  # clean: a catalog that should load
    n = draw(st.integers(2 if clean else 1, 6))
    if clean:
        ids = [f"i{k}" if draw(st.booleans()) else GOOD_IDS[k] for k in range(n)]
        roles = ["content", "style"] + [draw(st.sampled_from(ROLES)) for _ in range(n - 2)]
    else:
        ids = [draw(st.sampled_from(GOOD_IDS + BAD_IDS)) for _ in range(n)]
        roles = [draw(st.sampled_from(ROLES + BAD_ROLES)) for _ in range(n)]
    pool = st.integers(0, len(files) - 1)
    kinds = {
        "friendly": ["file"],
        "mixed": ["file"] * 30 + URI_KINDS[:-2],
        "hostile": URI_KINDS if not clean else URI_KINDS[:-2],
    }[mood]
    uris = [(draw(st.sampled_from(kinds)), draw(pool)) for _ in range(n)]

    columns = [
        Column("image_id", _string_type(draw), ids),
        Column("role", _string_type(draw), roles),
        Column("uri", _string_type(draw), [None] * n, fill="uri"),
    ]
    masks: list[tuple[str, int] | None] = [None] * n
    if draw(st.booleans()):
        columns.append(
            Column("collection", _string_type(draw), [draw(st.sampled_from([None, None, "a", "b"])) for _ in range(n)])
        )
    if draw(st.booleans()):
        masks = [
            draw(st.sampled_from(URI_KINDS[:-2]))
            if draw(st.integers(0, 3)) == 0 and (not clean or roles[i] == "content")
            else None
            for i in range(n)
        ]
        masks = [(m, draw(pool)) if m else None for m in masks]
        columns.append(Column("mask_uri", pa.string(), [None] * n, fill="mask_uri"))
    if draw(st.booleans()):
        tag = st.one_of(st.none(), st.text(max_size=6))
        columns.append(
            Column(
                "tags", pa.list_(pa.string()), [draw(st.one_of(st.none(), st.lists(tag, max_size=3))) for _ in range(n)]
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        name = draw(
            st.one_of(
                st.sampled_from(
                    ["designer", "year", "notes", "weird name", ""] + (["tags", "uri", "role"] if not clean else [])
                ),
                st.text(alphabet="abcxyz_", min_size=1, max_size=6),
            )
        )
        kind, values = EXTRA_TYPES[draw(st.sampled_from(list(EXTRA_TYPES)))]
        columns.append(Column(name, kind, [draw(st.one_of(st.none(), values)) for _ in range(n)]))
    if not clean and draw(st.integers(0, 5)) == 0:  # a required column missing, or of a wrong type
        victim = draw(st.sampled_from(REQUIRED))
        if draw(st.booleans()):
            columns = [c for c in columns if c.name != victim]
        else:
            columns = [Column(c.name, pa.int64(), list(range(n))) if c.name == victim else c for c in columns]
    return Scenario(files, uris, masks, columns, draw(st.booleans()), draw(st.sampled_from([64_000_000] * 3 + [1000])))


# --- building the scenario on disk --------------------------------------------------------------


@dataclass
class Target:
    """What a uri of the catalog points at, as the test knows it."""

    uri: str | None
    file: FileSpec | None = None  # the file it reaches, when it reaches an allowed one
    refused: bool = False  # outside the roots, not local, a NUL, a directory, missing


def build(s: Scenario, root: Path) -> tuple[Path, list[Target], list[Target | None], tuple[str, ...]]:
    folder, outside_dir = root / "cat", root / "outside"
    folder.mkdir()
    outside_dir.mkdir()
    outside = FileSpec("png-RGB", encode(Image.new("RGB", (30, 30), (10, 200, 30)), "PNG"), (30, 30))
    (outside_dir / "outside.png").write_bytes(outside.data)
    for i, f in enumerate(s.files):
        (folder / f"f{i}.img").write_bytes(f.data)
    (folder / "sub").mkdir()
    (folder / "a_directory.png").mkdir()

    def target(kind: str, i: int, n: int) -> Target:
        name = f"f{i}.img"
        if kind == "file":
            return Target(name, s.files[i])
        if kind == "missing":
            return Target(f"missing{n}.png", refused=True)
        if kind.startswith("escape"):
            uri = {
                "escape_relative": "../outside/outside.png",
                "escape_absolute": str(outside_dir / "outside.png"),
            }.get(kind)
            if uri is None:
                uri = f"link_out{n}.png"
                (folder / uri).symlink_to(outside_dir / "outside.png")
            return Target(uri, outside) if s.allow_outside else Target(uri, refused=True)
        if kind == "inside_absolute":
            return Target(str(folder / name), s.files[i])
        if kind == "inside_symlink":
            (folder / f"link_in{n}.png").symlink_to(folder / name)
            return Target(f"link_in{n}.png", s.files[i])
        if kind == "dotdot_inside":
            return Target(f"sub/../{name}", s.files[i])
        if kind == "directory":
            return Target("a_directory.png", refused=True)
        if kind == "scheme":
            return Target(f"s3://bucket/{name}", refused=True)
        if kind == "nul":
            return Target(f"f{i}\x00.img", refused=True)
        return Target(None if kind == "null" else "")

    targets = [target(kind, i, n) for n, (kind, i) in enumerate(s.uris)]
    masks = [target(m[0], m[1], 100 + n) if m else None for n, m in enumerate(s.masks)]
    arrays, names = [], []
    for column in s.columns:
        values = column.values
        if column.fill == "uri" and column.type != pa.int64():
            values = [t.uri for t in targets]
        if column.fill == "mask_uri":
            values = [m.uri if m else None for m in masks]
        if pa.types.is_dictionary(column.type):
            arrays.append(pa.array(values, pa.string()).dictionary_encode())
        else:
            arrays.append(pa.array(values, column.type))
        names.append(column.name)
    path = folder / "catalog.parquet"
    pq.write_table(pa.Table.from_arrays(arrays, names=names), path)
    return path, targets, masks, ((str(outside_dir),) if s.allow_outside else ())


# --- the oracle: the README's catalog contract ----------------------------------------------------


def catalog_faults(table: pa.Table) -> list[str]:
    """What makes the whole catalog unusable, by the README's rules (empty: it loads)."""
    names = table.column_names
    if len(set(names)) != len(names):
        return ["duplicate column"]
    if any(c not in names for c in REQUIRED):
        return ["missing column"]
    for name in names:
        kind = table.schema.field(name).type
        string_like = (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_null(kind)
            or (pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type))
        )
        if name in STRING_COLUMNS and not string_like:
            return [f"column {name}"]
        if name == "tags" and not (
            pa.types.is_null(kind) or pa.types.is_list(kind) and pa.types.is_string(kind.value_type)
        ):
            return ["column tags"]
    faults, seen = [], set()
    for i, row in enumerate(table.to_pylist()):
        image_id = row["image_id"]
        if image_id is None or not ID_PATTERN.fullmatch(image_id) or image_id in seen:
            faults.append(f"row {i}: image_id")
        seen.add(image_id)
        if row["role"] not in ROLES:
            faults.append(f"row {i}: role")
        if not row["uri"]:
            faults.append(f"row {i}: uri")
        if row["role"] == "style" and row.get("mask_uri"):
            faults.append(f"row {i}: mask on style")
    if faults:
        return faults
    rows = table.to_pylist()
    contents = [r for r in rows if r["role"] == "content"]
    styles = [r for r in rows if r["role"] == "style"]
    if not any(
        c.get("collection") is None or s.get("collection") is None or c.get("collection") == s.get("collection")
        for c in contents
        for s in styles
    ):
        return ["no pairings"]
    return []


def certainly_unusable(t: Target | None, max_pixels: int, *, scaled: bool) -> bool:
    """No run can make a design of this target (`scaled`: it is scaled to SIZE, not a mask)."""
    if t is None:
        return False
    if t.refused or t.file is None or t.file.certainly_bad:
        return True
    if t.file.size is None:
        return False
    width, height = t.file.size
    return width * height > max_pixels or (scaled and min(output_size(width, height, SIZE)) < 16)


def certainly_usable(t: Target | None, max_pixels: int, *, scaled: bool) -> bool:
    return t is None or (
        t.file is not None and t.file.size is not None and not certainly_unusable(t, max_pixels, scaled=scaled)
    )


def _sha(t: Target | None) -> str | None:
    return hashlib.sha256(t.file.data).hexdigest() if t is not None and t.file is not None else None


# --- the property ---------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_pipeline_never_lets_a_bad_input_through_nor_loses_a_pairing(s: Scenario):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path, targets, masks, allow = build(s, root)
        table = pq.ParquetFile(path).read()
        faults = catalog_faults(table)
        config = Config(weights="random", size=SIZE, steps=1, loss_every=1, batch_size=4, max_image_pixels=s.max_pixels)

        try:
            catalog = load_input_catalog(path, allow)
        except CatalogError as err:
            message = str(err)
            event("catalog refused")
            assert faults, f"refused a catalog the contract accepts: {message}"
            assert str(path) in message
            assert re.search(r"row \d+|column|no pairings", message), message
            return
        assert not faults, f"accepted a catalog with {faults}"

        rows_by_id = {r["image_id"]: i for i, r in enumerate(table.to_pylist())}
        target_of = {image_id: targets[i] for image_id, i in rows_by_id.items()}
        mask_of = {image_id: masks[i] for image_id, i in rows_by_id.items()}
        roots = [(root / "cat").resolve()] + [Path(a).resolve() for a in allow]

        plan = plan_designs(catalog, config, WEIGHTS.identity, set())
        pairings = catalog.pairings()
        assert plan.pairings == len(pairings)
        assert len(plan.todo) + len(plan.failed) + plan.duplicates == len(pairings)
        for job in plan.todo:  # nothing outside the roots is ever read
            for ref in (job.content, job.style):
                assert ref.path is not None and any(ref.path.is_relative_to(r) for r in roots)

        out = root / "out"
        designs = DesignCatalog(out)
        rows = [RowContext(config, WEIGHTS, "t").failed(job, job.error) for job in plan.failed]
        rows += run_shard(list(plan.todo), config, WEIGHTS, "cpu", designs, "t")
        assert len({r["design_id"] for r in rows}) == len(rows) == len(plan.todo) + len(plan.failed)
        planned = {j.design_id: j for j in plan.todo + plan.failed}

        for row in rows:
            pair = f"image {row['content_id']!r}", f"image {row['style_id']!r}"
            if row["status"] == "ok":
                png = out / row["output_uri"]
                assert png.is_file() and hashlib.sha256(png.read_bytes()).hexdigest() == row["output_sha256"]
                job = planned[row["design_id"]]
                assert (row["width"], row["height"]) == (job.width, job.height) and max(job.width, job.height) == SIZE
            else:
                event("failed: " + re.sub(r"'[^']*'|\S*/\S*|\d+", "_", row["error"].split(";")[0])[:60])
                assert row["status"] == "failed" and row["error"], row
                assert any(p in row["error"] for p in pair), row["error"]

        by_pair = {(r["content_id"], r["style_id"]): r for r in rows}
        for content, style in pairings:
            c, st_, m = target_of[content.image_id], target_of[style.image_id], mask_of.get(content.image_id)
            row = by_pair.get((content.image_id, style.image_id))
            if (
                row is None
            ):  # a duplicate: another pairing of the same bytes (or the same unusable image) carries its row
                key = (
                    (None if content.error else _sha(c)) or content.image_id,
                    (None if style.error else _sha(st_)) or style.image_id,
                )
                same = [
                    r
                    for r in rows
                    if (r["content_sha256"] or r["content_id"], r["style_sha256"] or r["style_id"]) == key
                ]
                assert same and plan.duplicates > 0, (content.image_id, style.image_id)
                continue
            bad = [
                (ref, t)
                for ref, t, scaled in ((content, c, True), (style, st_, True))
                if certainly_unusable(t, s.max_pixels, scaled=scaled)
            ]
            if certainly_unusable(m, s.max_pixels, scaled=False):
                bad.append((content, m))
            if bad:  # nothing let in
                assert row["status"] == "failed", (bad, row)
                for ref, _ in bad:
                    assert f"image {ref.image_id!r}" in row["error"], row["error"]
            elif all(certainly_usable(t, s.max_pixels, scaled=True) for t in (c, st_)) and (
                m is None or certainly_usable(m, s.max_pixels, scaled=False) and m.file.size == c.file.size
            ):
                assert row["status"] == "ok", row["error"]  # nothing lost

        event(
            f"rows: {'some' if any(r['status'] == 'ok' for r in rows) else 'no'} ok, "
            f"{'some' if any(r['status'] == 'failed' for r in rows) else 'no'} failed"
        )
        designs.commit(rows, "t")
        frame = designs.to_pandas()
        assert len(frame) == len(rows) and frame.design_id.is_unique
        assert sorted(frame.status) == sorted(r["status"] for r in rows)
        for r in frame.itertuples():
            if r.status == "ok":
                assert hashlib.sha256((out / r.output_uri).read_bytes()).hexdigest() == r.output_sha256
            else:
                assert r.error
