"""What to make: the full content x style cross product, or explicit pairings
from a pairs parquet (blends, pattern mode, per-row config overrides), each
multiplied by a parameter grid (`--grid style_weight=1e-2,1e-1 --grid seed=0,1`).
Every variant is its own design with its own design id."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.catalog.inputs import CatalogError, ImageRef, InputCatalog
from pipeline.config import Config, coerce, coerce_bool, config_field, config_fields, field_type

PAIRS_COLUMNS = ("content_id", "style_ids", "style_mix")


@dataclass(frozen=True)
class JobSpec:
    """One design before hashing: its inputs and its resolved config."""

    content: ImageRef | None  # None: pattern mode from the style(s) alone (also when content_weight is 0)
    styles: tuple[ImageRef, ...]
    style_mix: tuple[float, ...]  # empty: equal weights
    config: Config
    more_like: str | None = None  # the favourite this design varies (pipeline/planning/more_like.py)


# `tile` (the flag `repeat` replaced) stays accepted in pairs files and grids: true is repeat=block.
ALIASES = ("tile",)


def pattern_config(config: Config) -> Config:
    """Pattern mode's config: Gatys texture synthesis from the style alone, from seeded
    noise. A null content_id and a content weight of 0 are this one mode: the content
    (and its mask) is dropped, and params record init noise and content_weight 0, so both
    spellings make, hash and record the same design."""
    if config.init == "noise" and config.content_weight == 0:
        return config
    return config.replace(init="noise", content_weight=0.0)


def _overridable() -> dict[str, Any]:
    return {f.name: f for f in config_fields() if f.metadata["identity"]}


def _coerce(name: str, value: Any) -> Any:
    if name == "tile":
        return coerce_bool("tile", value) if isinstance(value, str) else bool(value)
    return coerce(config_field(name), value)


def parse_grid(specs: list[str] | tuple[str, ...] | None) -> dict[str, list[Any]]:
    """['style_weight=1e-2,1e-1', 'seed=0,1'] -> {'style_weight': [0.01, 0.1], 'seed': [0, 1]}.
    List-valued fields separate their values with ';' (style_layers=conv1_1,conv2_1;conv3_1)."""
    grid: dict[str, list[Any]] = {}
    allowed = _overridable()
    for spec in specs or ():
        name, sep, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ValueError(f"--grid {spec!r} is not NAME=V1,V2,...; e.g. --grid style_weight=1e-2,1e-1")
        if name not in allowed and name not in ALIASES:
            raise ValueError(f"--grid {name!r} is not a field that changes a design; accepted: {', '.join(allowed)}")
        parts = values.split(";") if name in allowed and field_type(allowed[name]) is tuple else values.split(",")
        grid[name] = [_coerce(name, v.strip()) for v in parts if v.strip()]
    return grid


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))] or [{}]


def load_pairs(
    path: str | Path, catalog: InputCatalog
) -> list[tuple[ImageRef | None, tuple[ImageRef, ...], tuple[float, ...], dict[str, Any]]]:
    """Read a pairs parquet: content_id (null: pattern mode), style_ids (list),
    optional style_mix (list of weights) and per-row config overrides."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise CatalogError(f"pairs file {str(path)!r} is not a readable parquet file: {err}") from None
    if "style_ids" not in table.column_names or "content_id" not in table.column_names:
        raise CatalogError(
            f"pairs file {str(path)!r} needs columns content_id and style_ids; it has {table.column_names}"
        )
    allowed = _overridable()
    unknown = [c for c in table.column_names if c not in PAIRS_COLUMNS and c not in allowed and c not in ALIASES]
    if unknown:
        raise CatalogError(
            f"pairs file {str(path)!r} has column(s) {unknown} that are neither {list(PAIRS_COLUMNS)} "
            f"nor overridable config fields ({', '.join(allowed)})"
        )
    contents = {c.image_id: c for c in catalog.contents}
    styles = {s.image_id: s for s in catalog.styles}
    problems: list[str] = []
    specs = []
    for i, row in enumerate(table.to_pylist()):
        where = f"pairs row {i}"
        content_id, style_ids, mix = row["content_id"], row["style_ids"] or [], row.get("style_mix") or []
        if content_id is not None and content_id not in contents:
            problems.append(f"{where}: content_id {content_id!r} is not a content image of the catalog")
        missing = [s for s in style_ids if s not in styles]
        if not style_ids:
            problems.append(f"{where}: style_ids is empty; give one or more style image ids")
        if missing:
            problems.append(f"{where}: style_ids {missing} are not style images of the catalog")
        if mix and (len(mix) != len(style_ids) or any(w is None or w < 0 for w in mix) or sum(mix) <= 0):
            problems.append(f"{where}: style_mix {mix} must have one weight >= 0 per style id (not all 0)")
        overrides = {}
        for name in table.column_names:
            if (name in allowed or name in ALIASES) and row[name] is not None:
                try:
                    overrides[name] = _coerce(name, row[name])
                except ValueError as err:
                    problems.append(f"{where}: {err}")
        if not problems:
            specs.append(
                (
                    contents.get(content_id) if content_id else None,
                    tuple(styles[s] for s in style_ids),
                    tuple(float(w) for w in mix),
                    overrides,
                )
            )
    if problems:
        raise CatalogError(f"pairs file {str(path)!r} has {len(problems)} problem(s):\n  " + "\n  ".join(problems[:20]))
    if not specs:
        raise CatalogError(f"pairs file {str(path)!r} lists no pairings")
    return specs


class JobSpecs:
    """Every design to make: pairings (cross product or pairs file) x grid variants,
    produced on demand so that a million pairings are never held as a list.
    Iterating twice gives the same specs in the same order; len() counts them.
    Pairings that change nothing share the run's config object, and each distinct
    set of overrides resolves to one Config."""

    def __init__(self, catalog: InputCatalog, config: Config, rows: list[tuple] | None, variants: list[dict[str, Any]]):
        self.catalog = catalog
        self.config = config
        # A pairs file's (content, styles, mix, overrides), or --more-like's with the favourite's id
        # after them; None: the cross product.
        self.rows = rows
        self.variants = variants
        self._configs: dict[tuple, Config] = {}
        self._patterns: dict[Config, Config] = {}

    def __len__(self) -> int:
        return (len(self.rows) if self.rows is not None else self.catalog.pairing_count()) * len(self.variants)

    def __iter__(self) -> Iterator[JobSpec]:
        if self.rows is None:
            # No per-row overrides: one config per variant (job_specs checked them all).
            configs = [self._resolved(variant) if variant else self.config for variant in self.variants]
            patterns = [self._pattern(c) if c.content_weight == 0 else None for c in configs]
            for content, style in self.catalog.iter_pairings():
                for config, pattern in zip(configs, patterns):
                    # Content weight 0: every content gives the same pattern, one design (plan counts the rest as duplicates).
                    yield JobSpec(None, (style,), (), pattern) if pattern else JobSpec(content, (style,), (), config)
            return
        for content, styles, mix, overrides, *tag in self.rows:
            more_like = tag[0] if tag else None
            for variant in self.variants:
                config = self._config_of({**overrides, **variant}, content, styles)
                if content is None or config.content_weight == 0:
                    yield JobSpec(None, styles, mix, self._pattern(config), more_like)
                else:
                    yield JobSpec(content, styles, mix, config, more_like)

    def configs(self) -> list[Config]:
        """Every distinct config the specs take (a pairs file's rows resolved now, which
        checks their overrides), without iterating the pairings."""
        if self.rows is None:
            return list({(self._resolved(v) if v else self.config): None for v in self.variants})
        found = {
            self._config_of({**overrides, **variant}, content, styles): None
            for content, styles, _, overrides, *_ in self.rows
            for variant in self.variants
        }
        return list(found)

    def _pattern(self, config: Config) -> Config:
        if config not in self._patterns:
            self._patterns[config] = pattern_config(config)
        return self._patterns[config]

    def _config_of(self, changes: dict[str, Any], content: ImageRef | None, styles: tuple[ImageRef, ...]) -> Config:
        try:
            return self._resolved(changes) if changes else self.config
        except ValueError as err:
            label = f"{content.image_id if content else '(pattern)'} x {'+'.join(s.image_id for s in styles)}"
            raise CatalogError(f"pairing {label}: {err}") from None

    def _resolved(self, changes: dict[str, Any]) -> Config:
        key = tuple(sorted(changes.items()))
        if key not in self._configs:
            self._configs[key] = self.config.replace(**changes)
        return self._configs[key]


def job_specs(
    catalog: InputCatalog, config: Config, pairs: str | Path | None = None, grid: dict[str, list[Any]] | None = None
) -> JobSpecs:
    """Every design to make. The pairs file is read and checked now, each grid
    variant is checked against the config now; the specs are produced as iterated."""
    rows = load_pairs(pairs, catalog) if pairs else None
    variants = expand_grid(grid or {})
    specs = JobSpecs(catalog, config, rows, variants)
    count = len(specs)  # counted, not listed
    if count > config.max_pairings:
        source = f"pairs file {str(pairs)!r}" if pairs else f"catalog {str(catalog.path)!r}"
        made_of = f" to plan ({count // len(variants)} x {len(variants)} grid variants)" if len(variants) > 1 else ""
        raise CatalogError(
            f"{source} yields {count} pairings{made_of}, over max_pairings={config.max_pairings}; "
            "split the catalog or raise --max-pairings"
        )
    for variant in variants:
        try:
            resolved = specs._resolved(variant) if variant else config  # checked now, and kept for iterating
        except ValueError as err:
            raise CatalogError(f"--grid {variant}: {err}") from None
        if resolved.content_weight == 0 and resolved.color != "style":
            where = f"--grid {variant}: " if variant else ""
            raise CatalogError(
                f"{where}content_weight=0 is pattern mode (from the style alone, no content) and color={resolved.color!r} "
                "needs a content; accepted: --color style with --content-weight 0, or a content weight above 0"
            )
    return specs
