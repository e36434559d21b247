"""pipeline.catalog.inputs: the input catalog's catalog-level and image-level faults."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import catalog_row, write_catalog, write_png

from pipeline.catalog.inputs import CatalogError, load_input_catalog


def _catalog(folder: Path, rows: list[dict], schema: pa.Schema | None = None, images: bool = True) -> Path:
    if images:
        for i, row in enumerate(rows):
            uri = row.get("uri")
            if isinstance(uri, str) and uri and "://" not in uri and not os.path.isabs(uri) and ".." not in uri:
                write_png(folder / uri, 16, 16, seed=i)
    return write_catalog(folder / "catalog.parquet", rows, schema)


def _basic_rows() -> list[dict]:
    return [catalog_row("c1", "content"), catalog_row("c2", "content"), catalog_row("s1", "style")]


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(CatalogError) as info:
        load_input_catalog(path, **kwargs)
    return str(info.value)


# --- catalog-level faults --------------------------------------------------------------------


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "catalog.parquet"
    path.write_text("image_id,role,uri\nc1,content,c1.png\n")
    message = _error(path)
    assert "not a readable parquet file" in message and str(path) in message


def test_missing_file(tmp_path):
    message = _error(tmp_path / "nope.parquet")
    assert "does not exist" in message and "nope.parquet" in message


def test_directory_instead_of_file(tmp_path):
    assert "not a file" in _error(tmp_path)


def test_missing_uri_column(tmp_path):
    path = write_catalog(tmp_path / "catalog.parquet", [{"image_id": "c1", "role": "content"}])
    message = _error(path)
    assert "lacks required column(s) ['uri']" in message
    assert "required: ['image_id', 'role', 'uri']" in message


def test_duplicate_image_id_names_the_id_and_both_rows(tmp_path):
    rows = _basic_rows() + [catalog_row("c1", "content", uri="other.png")]
    message = _error(_catalog(tmp_path, rows))
    assert "row 3 (image_id 'c1'): duplicate image_id, first at row 0" in message


def test_bad_role_names_the_row_and_the_role(tmp_path):
    rows = _basic_rows() + [catalog_row("x1", "banana")]
    message = _error(_catalog(tmp_path, rows))
    assert "row 3 (image_id 'x1')" in message
    assert "role 'banana'" in message


def test_null_role(tmp_path):
    rows = _basic_rows() + [{"image_id": "x1", "role": None, "uri": "x1.png"}]
    assert "row 3 (image_id 'x1'): role None" in _error(_catalog(tmp_path, rows))


@pytest.mark.parametrize("bad_id", ["../x", "", "a/b", ".hidden", "-dash", "sp ace"])
def test_invalid_image_id(tmp_path, bad_id):
    rows = _basic_rows() + [catalog_row(bad_id, "style", uri="s2.png")]
    message = _error(_catalog(tmp_path, rows))
    assert f"row 3 (image_id {bad_id!r}): image_id must match" in message


def test_null_image_id(tmp_path):
    rows = _basic_rows() + [{"image_id": None, "role": "style", "uri": "s2.png"}]
    assert "row 3: image_id is null" in _error(_catalog(tmp_path, rows))


@pytest.mark.parametrize("uri", [None, ""])
def test_null_or_empty_uri(tmp_path, uri):
    rows = _basic_rows() + [{"image_id": "s2", "role": "style", "uri": uri}]
    assert "row 3 (image_id 's2'): uri is null or empty" in _error(_catalog(tmp_path, rows))


def test_mask_uri_on_style_row(tmp_path):
    rows = [catalog_row("c1", "content", mask_uri="m.png"), catalog_row("s1", "style", mask_uri="m.png")]
    write_png(tmp_path / "m.png")
    message = _error(_catalog(tmp_path, rows))
    assert "row 1 (image_id 's1'): mask_uri is set on a style row" in message
    assert "row 0" not in message


def test_all_problems_are_reported_together(tmp_path):
    rows = [catalog_row("c1", "content"), catalog_row("c1", "style"), catalog_row("bad/id", "banana")]
    message = _error(_catalog(tmp_path, rows))
    assert "3 problem(s)" in message
    assert "row 1 (image_id 'c1'): duplicate" in message
    assert "row 2 (image_id 'bad/id'): image_id must match" in message
    assert "row 2 (image_id 'bad/id'): role 'banana'" in message


def test_many_problems_are_capped(tmp_path):
    rows = [catalog_row("c1", "content")] + [catalog_row(f"x{i}", "banana") for i in range(25)]
    message = _error(_catalog(tmp_path, rows, images=False))
    assert "25 problem(s)" in message
    assert "... and 5 more" in message
    assert "row 20 (image_id 'x19')" in message and "row 21 " not in message


def test_no_pairings_only_contents(tmp_path):
    message = _error(_catalog(tmp_path, [catalog_row("c1", "content"), catalog_row("c2", "content")]))
    assert "yields no pairings" in message
    assert "2 content and 0 style" in message


def test_collections_that_never_match(tmp_path):
    rows = [catalog_row("c1", "content", collection="spring"), catalog_row("s1", "style", collection="autumn")]
    message = _error(_catalog(tmp_path, rows))
    assert "yields no pairings" in message and "collections never match" in message


@pytest.mark.parametrize(
    "tags_type, value",
    [(pa.string(), "floral"), (pa.list_(pa.int64()), [1, 2]), (pa.int64(), 3)],
)
def test_tags_of_wrong_type(tmp_path, tags_type, value):
    schema = pa.schema([("image_id", pa.string()), ("role", pa.string()), ("uri", pa.string()), ("tags", tags_type)])
    rows = [catalog_row("c1", "content", tags=value), catalog_row("s1", "style", tags=value)]
    message = _error(_catalog(tmp_path, rows, schema))
    assert "column 'tags'" in message and "expected a list of strings" in message


def test_non_string_column(tmp_path):
    schema = pa.schema([("image_id", pa.int64()), ("role", pa.string()), ("uri", pa.string())])
    rows = [{"image_id": 1, "role": "content", "uri": "a.png"}, {"image_id": 2, "role": "style", "uri": "b.png"}]
    message = _error(_catalog(tmp_path, rows, schema))
    assert "column 'image_id' has type int64" in message


# --- valid catalogs --------------------------------------------------------------------------


def test_valid_catalog(tmp_path):
    catalog = load_input_catalog(_catalog(tmp_path, _basic_rows()))
    assert [r.image_id for r in catalog.contents] == ["c1", "c2"]
    assert [r.image_id for r in catalog.styles] == ["s1"]
    for ref in catalog.contents + catalog.styles:
        assert ref.error is None
        assert ref.path == (tmp_path / f"{ref.image_id}.png").resolve()
        assert ref.path.is_file()
        assert ref.collection is None and ref.tags == () and ref.extra == {}
    assert [(c.image_id, s.image_id) for c, s in catalog.pairings()] == [("c1", "s1"), ("c2", "s1")]


def test_collection_rule(tmp_path):
    rows = [
        catalog_row("c_spring", "content", collection="spring"),
        catalog_row("c_any", "content", collection=None),
        catalog_row("c_autumn", "content", collection="autumn"),
        catalog_row("s_spring", "style", collection="spring"),
        catalog_row("s_any", "style", collection=None),
        catalog_row("s_winter", "style", collection="winter"),
    ]
    catalog = load_input_catalog(_catalog(tmp_path, rows))
    pairs = {(c.image_id, s.image_id) for c, s in catalog.pairings()}
    assert catalog.pairing_count() == len(pairs) == len(list(catalog.iter_pairings()))
    assert pairs == {
        ("c_spring", "s_spring"),  # both set and equal
        ("c_spring", "s_any"),  # null pairs with all
        ("c_any", "s_spring"),
        ("c_any", "s_any"),
        ("c_any", "s_winter"),
        ("c_autumn", "s_any"),
    }
    # different collections never pair
    assert ("c_spring", "s_winter") not in pairs and ("c_autumn", "s_spring") not in pairs


def test_extra_columns_and_tags_are_carried(tmp_path):
    schema = pa.schema(
        [
            ("image_id", pa.string()),
            ("role", pa.string()),
            ("uri", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("designer", pa.string()),
            ("year", pa.int64()),
        ]
    )
    rows = [
        catalog_row("c1", "content", tags=["floral", "blue"], designer="Ada", year=2021),
        catalog_row("s1", "style", tags=None, designer=None, year=1999),
    ]
    catalog = load_input_catalog(_catalog(tmp_path, rows, schema))
    (c1,), (s1,) = catalog.contents, catalog.styles
    assert c1.tags == ("floral", "blue")
    assert s1.tags == ()
    assert c1.extra == {"designer": "Ada", "year": 2021}
    assert s1.extra == {"designer": None, "year": 1999}
    assert c1.extra_json == '{"designer": "Ada", "year": 2021}'


def test_mask_on_content_row_is_resolved(tmp_path):
    write_png(tmp_path / "masks" / "m1.png")
    rows = [catalog_row("c1", "content", mask_uri="masks/m1.png"), catalog_row("s1", "style")]
    (c1,) = load_input_catalog(_catalog(tmp_path, rows)).contents
    assert c1.mask_uri == "masks/m1.png"
    assert c1.mask_path == (tmp_path / "masks" / "m1.png").resolve()
    assert c1.error is None


def test_uri_in_subfolder_and_absolute_inside(tmp_path):
    write_png(tmp_path / "sub" / "deep.png")
    rows = [
        catalog_row("c1", "content", uri="sub/deep.png"),
        catalog_row("s1", "style", uri=str(tmp_path / "sub" / "deep.png")),
    ]
    catalog = load_input_catalog(_catalog(tmp_path, rows, images=False))
    assert catalog.contents[0].path == catalog.styles[0].path == (tmp_path / "sub" / "deep.png").resolve()


# --- image-level faults ---------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path) -> Path:
    return write_png(tmp_path / "elsewhere" / "outside.png")


def _escaping_catalog(tmp_path: Path, outside: Path, uri: str) -> Path:
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "link.png").symlink_to(outside)
    rows = [catalog_row("c1", "content"), catalog_row("c_bad", "content", uri=uri), catalog_row("s1", "style")]
    return _catalog(folder, rows)


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink"])
def test_uri_escaping_the_catalog_folder_is_an_image_error(tmp_path, outside, kind):
    uri = {"relative": "../elsewhere/outside.png", "absolute": str(outside), "symlink": "link.png"}[kind]
    catalog = load_input_catalog(_escaping_catalog(tmp_path, outside, uri))
    good, bad = catalog.contents
    assert good.error is None and good.path is not None
    assert bad.path is None
    assert bad.error is not None
    assert "image 'c_bad'" in bad.error
    assert "outside the allowed roots" in bad.error and "--allow-root" in bad.error
    assert str(outside.resolve()) in bad.error
    # the catalog is still usable; the faulty image's pairings are still listed, to fail later
    assert len(catalog.pairings()) == 2


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink"])
def test_allow_roots_accepts_the_outside_folder(tmp_path, outside, kind):
    uri = {"relative": "../elsewhere/outside.png", "absolute": str(outside), "symlink": "link.png"}[kind]
    catalog = load_input_catalog(_escaping_catalog(tmp_path, outside, uri), allow_roots=(str(outside.parent),))
    bad = catalog.contents[1]
    assert bad.error is None
    assert bad.path == outside.resolve()


def test_allow_roots_of_another_folder_does_not_help(tmp_path, outside):
    other = tmp_path / "other"
    other.mkdir()
    catalog = load_input_catalog(_escaping_catalog(tmp_path, outside, str(outside)), allow_roots=(str(other),))
    assert catalog.contents[1].error is not None and catalog.contents[1].path is None


def test_prefix_sibling_folder_is_outside(tmp_path):
    # /x/cat2/... must not count as inside /x/cat
    sibling = write_png(tmp_path / "cat2" / "a.png")
    folder = tmp_path / "cat"
    rows = [catalog_row("c1", "content"), catalog_row("c2", "content", uri=str(sibling)), catalog_row("s1", "style")]
    catalog = load_input_catalog(_catalog(folder, rows))
    assert catalog.contents[1].path is None and "outside the allowed roots" in catalog.contents[1].error


def test_uri_with_a_scheme_is_an_image_error(tmp_path):
    rows = [
        catalog_row("c1", "content"),
        catalog_row("s1", "style"),
        catalog_row("s3", "style", uri="s3://bucket/k.png"),
    ]
    catalog = load_input_catalog(_catalog(tmp_path, rows))
    bad = catalog.styles[1]
    assert bad.path is None
    assert "'s3://bucket/k.png' is not a local path" in bad.error
    assert catalog.styles[0].error is None


def test_escaping_mask_is_an_image_error_of_its_content(tmp_path, outside):
    folder = tmp_path / "cat"
    rows = [catalog_row("c1", "content", mask_uri=str(outside)), catalog_row("s1", "style")]
    (c1,) = load_input_catalog(_catalog(folder, rows)).contents
    assert c1.path is None and c1.mask_path is None
    assert c1.error.startswith("mask of image 'c1'")


def test_missing_image_file_is_not_a_catalog_error(tmp_path):
    rows = [catalog_row("c1", "content"), catalog_row("s1", "style", uri="missing.png")]
    catalog = load_input_catalog(_catalog(tmp_path, rows, images=False))
    assert catalog.styles[0].error is None
    assert catalog.styles[0].path == (tmp_path / "missing.png").resolve()


def test_a_catalog_over_max_catalog_images_is_refused_before_reading(tmp_path):
    from pipeline.catalog.inputs import DEFAULT_MAX_IMAGES
    from pipeline.config import Config

    assert Config().max_catalog_images == DEFAULT_MAX_IMAGES
    rows = [{"image_id": f"i{n}", "role": "content" if n % 2 else "style", "uri": f"i{n}.png"} for n in range(6)]
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(CatalogError, match=r"lists 6 images.*more images than 5 \(max_catalog_images\)"):
        load_input_catalog(path, max_images=5)
    assert len(load_input_catalog(path, max_images=6).contents) == 3
