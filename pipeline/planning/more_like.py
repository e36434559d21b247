"""More like the favourites: `designs generate CATALOG --more-like OUT` plans variations of the
designs whose latest verdict in OUT/reviews is favourite (pipeline/catalog/reviews.py).

Each favourite's row (content_id, style_ids, style_mix, params) is read through the catalog's
read-only connection (pipeline/catalog/sql.py); its inputs are taken from CATALOG by image id,
and its design params (the Config fields that change pixels) are kept, with one of them varied:

    style_weight x2, x0.5; a new seed (seed+1) where the seed changes the pixels (a noise start
    or a pattern: a design that starts from its content draws no noise); style_scale (the motif
    scale) x1.5, x0.75; each other repeat layout (a favourite that repeats); then x4, x0.25,
    seed+2, x2, x0.5 and further seeds

taking the first `config.per_favourite` that differ from the favourite and that the config
accepts. Each variation is a pairs-file row (pipeline/planning/variants.py: per-row overrides)
tagged with the favourite's design id, so it is an ordinary design with its own design id
(pipeline/planning/plan.py), recorded in the catalog's `more_like` column. The same favourites
and CATALOG give the same plan: favourites in design id order, variations in the order above.
A rerun plans the same ids and skips those made; a variation two favourites share is made once,
tagged with the first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.catalog.inputs import CatalogError, ImageRef, InputCatalog
from pipeline.config import REPEATS, Config, coerce, config_fields, with_repeat
from pipeline.planning.variants import JobSpecs

# The columns of a favourite's row the variations are planned from.
ROW_COLUMNS = ("design_id", "content_id", "style_id", "style_ids", "style_mix", "params")

# Round by round: the first round's changes are the smallest, so a small --per-favourite gets
# one of each kind before a larger step of any.
STYLE_WEIGHT_FACTORS = ((2.0, 0.5), (4.0, 0.25))
STYLE_SCALE_FACTORS = ((1.5, 0.75), (2.0, 0.5))
MAX_SEED_STEPS = 64  # past the rounds above only new seeds remain: enough for any sensible N


@dataclass(frozen=True)
class Favourite:
    """A favourite's row, as planning needs it."""

    design_id: str
    content_id: str | None  # None: a pattern from its style(s) alone
    style_ids: tuple[str, ...]
    style_mix: tuple[float, ...]
    params: dict[str, Any]


@dataclass(frozen=True)
class MoreLike:
    """What --more-like planned: the specs (one pairs row per variation) and what it left out."""

    specs: JobSpecs
    favourites: int  # favourite ids in the reviews
    varied: int  # favourites with at least one variation planned
    variations: int
    not_in_catalog: tuple[str, ...] = ()  # favourites whose content or style ids are not in CATALOG
    not_designs: tuple[str, ...] = ()  # favourite ids with no ok row in OUT's designs
    weights: tuple[str | None, ...] = ()  # the weights identity each varied favourite was made with

    def lines(self, weights_identity: str | None = None) -> list[str]:
        """What was planned and left out; with the run's weights identity, how many favourites
        were made with other weights (their variations are made with the run's)."""
        lines = [f"more like: {self.variations} variation(s) of {self.varied} favourite(s)"]
        other = sum(w != weights_identity for w in self.weights) if weights_identity is not None else 0
        if other:
            lines.append(
                f"more like: {other} favourite(s) were made with other weights than this run's ({weights_identity}); "
                "their variations are made with this run's (--weights)"
            )
        if self.not_in_catalog:
            lines.append(
                f"more like: {len(self.not_in_catalog)} favourite(s) skipped, their inputs are not in the catalog: "
                + ", ".join(self.not_in_catalog[:5])
                + (", ..." if len(self.not_in_catalog) > 5 else "")
            )
        if self.not_designs:
            lines.append(
                f"more like: {len(self.not_designs)} favourite(s) skipped, not an ok design of the catalog: "
                + ", ".join(self.not_designs[:5])
                + (", ..." if len(self.not_designs) > 5 else "")
            )
        return lines


def favourite_rows(out: str | Path, design_ids: Sequence[str]) -> list[Favourite]:
    """The ok rows of `design_ids` in OUT's designs (the latest version), in design id order,
    read through the read-only connection; the ids are bound as a parameter, never pasted
    into the SQL."""
    from pipeline.catalog.sql import connect

    con = connect(out)
    try:
        table = con.sql(
            f"select {', '.join(ROW_COLUMNS)} from designs "
            "where status = 'ok' and list_contains(?, design_id) order by design_id",
            params=[sorted(set(design_ids))],
        ).to_arrow_table()
    finally:
        con.close()
    return [
        Favourite(
            row["design_id"],
            row["content_id"],
            tuple(row["style_ids"] or row["style_id"].split("+")),
            tuple(row["style_mix"] or ()),
            with_repeat(dict(row["params"] or {})),  # a row made before `repeat` has `tile`
        )
        for row in table.to_pylist()
    ]


@dataclass(frozen=True)
class Favourites:
    """The favourites of OUT's reviews: their rows, and the ids with no ok row in OUT's designs."""

    rows: tuple[Favourite, ...]
    not_designs: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.rows) + len(self.not_designs)


def read_favourites(out: str | Path) -> Favourites:
    """The designs whose latest verdict in OUT/reviews is favourite (by any reviewer).
    CatalogError, one line, for OUT without reviews or without a favourite, or without designs."""
    from pipeline.catalog.history import QueryError
    from pipeline.catalog.reviews import favourite_ids, reviews_path

    folder = reviews_path(out)
    if not (folder / "_delta_log").is_dir():
        raise CatalogError(
            f"--more-like {str(out)!r}: no reviews at {folder}; review its designs first "
            f"(`designs review {out}`, f marks a favourite)"
        )
    ids = sorted(set(favourite_ids(Path(out))))
    if not ids:
        raise CatalogError(
            f"--more-like {str(out)!r}: no favourites in {folder} (no design's latest verdict is "
            f"favourite); mark some with f in `designs review {out}`"
        )
    try:
        rows = favourite_rows(out, ids)
    except (FileNotFoundError, QueryError) as err:
        raise CatalogError(f"--more-like {str(out)!r}: {err}") from None
    found = {r.design_id for r in rows}
    return Favourites(tuple(rows), tuple(i for i in ids if i not in found))


def design_params(params: dict[str, Any]) -> dict[str, Any]:
    """A row's params as overrides of the fields that change pixels: a field the row lacks
    (made before the field existed) takes its default, the value it was made at."""
    values = {}
    for f in config_fields():
        if f.metadata["identity"]:
            found = params.get(f.name)
            values[f.name] = f.default if found is None else coerce(f, found)
    return values


def seed_matters(config: Config, pattern: bool) -> bool:
    """Whether the seed changes a design's pixels: only a noise start draws from it."""
    return pattern or config.init == "noise" or config.content_weight == 0


def candidates(config: Config, pattern: bool) -> Iterator[dict[str, Any]]:
    """The changes to try on a favourite made at `config`, in the module docstring's order."""
    seeds = seed_matters(config, pattern)
    for round_, (weights, scales) in enumerate(zip(STYLE_WEIGHT_FACTORS, STYLE_SCALE_FACTORS, strict=True)):
        for factor in weights:
            yield {"style_weight": config.style_weight * factor}
        if seeds:
            yield {"seed": config.seed + round_ + 1}
        for factor in scales:
            yield {"style_scale": round(config.style_scale * factor, 6)}
        if round_ == 0 and config.repeat != "none":
            yield from ({"repeat": r} for r in REPEATS if r not in ("none", config.repeat))
    if seeds:
        first = len(STYLE_WEIGHT_FACTORS) + 1
        yield from ({"seed": config.seed + step} for step in range(first, first + MAX_SEED_STEPS))


def variations(base: Config, pattern: bool, count: int) -> list[dict[str, Any]]:
    """The first `count` candidates that change something and that the config accepts (a
    motif scale past its bounds is left out), each as the change it makes."""
    found = []
    for change in candidates(base, pattern):
        if len(found) == count:
            break
        name, value = next(iter(change.items()))
        if getattr(base, name) == value:
            continue  # a style weight of 0 doubled: the favourite itself
        try:
            base.replace(**change)
        except ValueError:
            continue
        found.append(change)
    return found


def more_like_specs(inputs: InputCatalog, config: Config, favourites: Favourites | Sequence[Favourite]) -> MoreLike:
    """The pairs rows of `config.per_favourite` variations of each favourite whose inputs are in
    `inputs`; `config` gives how they run (devices, weights, limits), each favourite's params what
    they look like. CatalogError when no favourite can be varied."""
    if not isinstance(favourites, Favourites):
        favourites = Favourites(tuple(favourites), ())
    contents = {c.image_id: c for c in inputs.contents}
    styles = {s.image_id: s for s in inputs.styles}
    rows: list[tuple[ImageRef | None, tuple[ImageRef, ...], tuple[float, ...], dict[str, Any], str]] = []
    skipped: list[str] = []
    varied: list[str | None] = []
    for favourite in sorted(favourites.rows, key=lambda f: f.design_id):
        content = contents.get(favourite.content_id) if favourite.content_id is not None else None
        refs = tuple(styles.get(s) for s in favourite.style_ids)
        if (favourite.content_id is not None and content is None) or None in refs or not refs:
            skipped.append(favourite.design_id)
            continue
        own = design_params(favourite.params)
        try:
            base = config.replace(**own)
        except ValueError as err:
            raise CatalogError(f"favourite {favourite.design_id}: its params are not a valid config: {err}") from None
        pattern = content is None
        changes = variations(base, pattern, config.per_favourite)
        if changes:
            varied.append(favourite.params.get("weights"))
        rows += [(content, refs, favourite.style_mix, {**own, **change}, favourite.design_id) for change in changes]
    if not rows:
        why = [f"the inputs of {len(skipped)} are not in the catalog {str(inputs.path)!r}"] if skipped else []
        why += [f"{len(favourites.not_designs)} are not ok designs"] if favourites.not_designs else []
        raise CatalogError(
            f"--more-like: none of the {favourites.count} favourite design(s) can be varied: "
            + ("; ".join(why) or "no variation of their params is valid")
            + "; give the catalog that made them"
        )
    if len(rows) > config.max_pairings:
        raise CatalogError(
            f"--more-like plans {len(rows)} variations, over max_pairings={config.max_pairings}; "
            "lower --per-favourite or raise --max-pairings"
        )
    specs = JobSpecs(inputs, config, list(rows), [{}])
    specs.configs()  # each row's config resolved once now: a bad one refuses the run here
    return MoreLike(
        specs, favourites.count, len(varied), len(rows), tuple(skipped), favourites.not_designs, tuple(varied)
    )
