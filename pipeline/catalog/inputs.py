"""The input catalog: a parquet file listing content and style images.

Columns: image_id, role, uri (required); collection, mask_uri, tags
(optional); any other column is carried along into the designs' rows.
Catalog-level faults raise CatalogError before any work. Image-level faults
(a path outside the allowed roots, say) are recorded on the image and fail only
the pairings that use it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import config_field

IMAGE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
REQUIRED_COLUMNS = ("image_id", "role", "uri")
OPTIONAL_COLUMNS = ("collection", "mask_uri", "tags")
ROLES = ("content", "style")


class CatalogError(ValueError):
    """The catalog as a whole cannot be used; the message names the rows or column."""


class UnsafePathError(ValueError):
    """A uri that points outside the allowed roots."""


@dataclass(frozen=True)
class ImageRef:
    image_id: str
    role: str
    uri: str
    path: Path | None  # resolved, inside the allowed roots; None when `error` is set
    error: str | None = None
    collection: str | None = None
    mask_uri: str | None = None
    mask_path: Path | None = None
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # unknown columns, carried along

    @property
    def extra_json(self) -> str:
        return json.dumps(self.extra, sort_keys=True, default=str)


@dataclass(frozen=True)
class InputCatalog:
    path: Path
    contents: tuple[ImageRef, ...]
    styles: tuple[ImageRef, ...]

    def pairings(self) -> list[tuple[ImageRef, ImageRef]]:
        """Every content x style pair whose collections agree (null pairs with everything)."""
        return list(self.iter_pairings())

    def iter_pairings(self) -> Iterator[tuple[ImageRef, ImageRef]]:
        """pairings(), one at a time: a 1,000 x 1,000 catalog is never held as a list."""
        for c in self.contents:
            for s in self.styles:
                if _collections_match(c.collection, s.collection):
                    yield c, s

    def pairing_count(self) -> int:
        """len(pairings()), counted by collection instead of pair by pair."""
        by_collection = Counter(s.collection for s in self.styles)
        unlabelled = by_collection[None]
        return sum(
            len(self.styles) if c.collection is None else by_collection[c.collection] + unlabelled
            for c in self.contents
        )


def _collections_match(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a == b


def resolve_uri(uri: str, base: Path, allow_roots: tuple[Path, ...]) -> Path:
    """Resolve `uri` (relative to `base`, or absolute) and make sure it stays
    inside `base` or one of `allow_roots` after following symlinks."""
    if "://" in uri:
        raise UnsafePathError(
            f"uri {uri!r} is not a local path; only files under the catalog's folder or --allow-root are read"
        )
    if "\0" in uri:
        raise UnsafePathError(f"uri {uri!r} contains a NUL character; a file path cannot")
    candidate = Path(uri)
    if not candidate.is_absolute():
        candidate = base / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a symlink loop, a name too long
        raise UnsafePathError(f"uri {uri!r} cannot be resolved to a file: {err}") from None
    roots = (base.resolve(),) + tuple(r.resolve() for r in allow_roots)
    if not any(resolved.is_relative_to(root) for root in roots):
        raise UnsafePathError(
            f"uri {uri!r} resolves to {resolved}, outside the allowed roots ({', '.join(map(str, roots))}); "
            f"add its folder with --allow-root to allow it"
        )
    return resolved


def _string_like(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _normalise_types(table: pa.Table, path: Path) -> pa.Table:
    """Check the known columns' types; string variants (large, view, dictionary-encoded,
    as pandas writes a categorical) become plain strings."""
    for name in ("image_id", "role", "uri", "collection", "mask_uri"):
        if name not in table.column_names:
            continue
        kind = table.schema.field(name).type
        if (pa.types.is_dictionary(kind) and _string_like(kind.value_type)) or (
            _string_like(kind) and not pa.types.is_string(kind)
        ):
            table = table.set_column(table.column_names.index(name), name, table.column(name).cast(pa.string()))
        elif not (pa.types.is_string(kind) or pa.types.is_null(kind)):
            raise CatalogError(f"catalog {str(path)!r}: column {name!r} has type {kind}; expected string")
    if "tags" in table.column_names:
        kind = table.schema.field("tags").type
        is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind)
        if not (
            pa.types.is_null(kind) or (is_list and (_string_like(kind.value_type) or pa.types.is_null(kind.value_type)))
        ):
            raise CatalogError(f"catalog {str(path)!r}: column 'tags' has type {kind}; expected a list of strings")
    return table


DEFAULT_MAX_IMAGES: int = config_field("max_catalog_images").default  # Config's default, not restated


def load_input_catalog(
    path: str | Path, allow_roots: tuple[str, ...] = (), max_images: int = DEFAULT_MAX_IMAGES
) -> InputCatalog:
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"catalog {str(path)!r} does not exist or is not a file")
    try:
        # ParquetFile, not read_table: the dataset reader fails on a repeated column
        # name with an obscure message; it is reported as such below.
        with pq.ParquetFile(path) as parquet:
            rows_declared = parquet.metadata.num_rows
            if rows_declared > max_images:
                raise CatalogError(
                    f"catalog {str(path)!r} lists {rows_declared} images; this run refuses catalogs "
                    f"listing more images than {max_images} (max_catalog_images): split it or raise the limit"
                )
            table = parquet.read()
    except (pa.ArrowException, OSError) as err:
        raise CatalogError(f"catalog {str(path)!r} is not a readable parquet file: {err}") from None

    duplicated = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if duplicated:
        raise CatalogError(
            f"catalog {str(path)!r} has more than one column named {duplicated}; every column name must be unique"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise CatalogError(
            f"catalog {str(path)!r} lacks required column(s) {missing}; it has {table.column_names}; "
            f"required: {list(REQUIRED_COLUMNS)}, optional: {list(OPTIONAL_COLUMNS)}"
        )
    table = _normalise_types(table, path)

    rows = table.to_pylist()
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        image_id, role, uri = row["image_id"], row["role"], row["uri"]
        where = f"row {i}" + (f" (image_id {image_id!r})" if image_id is not None else "")
        if image_id is None:
            problems.append(f"{where}: image_id is null")
        elif not IMAGE_ID_PATTERN.match(image_id):
            problems.append(f"{where}: image_id must match [A-Za-z0-9][A-Za-z0-9._-]*")
        elif image_id in seen:
            problems.append(f"{where}: duplicate image_id, first at row {seen[image_id]}")
        else:
            seen[image_id] = i
        if role not in ROLES:
            problems.append(f"{where}: role {role!r} is not 'content' or 'style'")
        if not uri:
            problems.append(f"{where}: uri is null or empty")
        if role == "style" and row.get("mask_uri"):
            problems.append(f"{where}: mask_uri is set on a style row; masks belong to content rows")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise CatalogError(f"catalog {str(path)!r} has {len(problems)} problem(s):\n  " + "\n  ".join(shown))

    base = path.resolve().parent
    roots = tuple(Path(r).expanduser() for r in allow_roots)
    extra_columns = [c for c in table.column_names if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    contents, styles = [], []
    for row in rows:
        error = image_path = mask_path = None
        try:
            image_path = resolve_uri(row["uri"], base, roots)
        except UnsafePathError as err:
            error = f"image {row['image_id']!r}: {err}"
        mask_uri = row.get("mask_uri") or None
        if mask_uri and error is None:
            try:
                mask_path = resolve_uri(mask_uri, base, roots)
            except UnsafePathError as err:
                error = f"mask of image {row['image_id']!r}: {err}"
        ref = ImageRef(
            image_id=row["image_id"],
            role=row["role"],
            uri=row["uri"],
            path=image_path if error is None else None,
            error=error,
            collection=row.get("collection"),
            mask_uri=mask_uri,
            mask_path=mask_path if error is None else None,
            tags=tuple(t for t in row.get("tags") or () if t is not None),
            extra={c: row[c] for c in extra_columns},
        )
        (contents if ref.role == "content" else styles).append(ref)

    catalog = InputCatalog(path=path, contents=tuple(contents), styles=tuple(styles))
    if not catalog.pairing_count():
        raise CatalogError(
            f"catalog {str(path)!r} yields no pairings: {len(contents)} content and {len(styles)} style image(s)"
            + (" whose collections never match" if contents and styles else "")
            + "; it needs at least one content and one style row with compatible collections"
        )
    return catalog
