"""The design catalog's row schema: one row per design, `params` the Config that made it.

Old tables keep params fields the Config has since dropped; LEGACY_PARAMS (pipeline/config.py,
the one old-params rule) derives them, and conform_params widens a merge's rows to the table's params.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pyarrow as pa

from pipeline.config import LEGACY_PARAMS, Config, element_type, field_type

_ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}


def params_type() -> pa.StructType:
    """Every Config field, as resolved (weights: the identity of the file used)."""
    fields = []
    for f in dataclasses.fields(Config):
        kind = field_type(f)
        arrow = pa.list_(_ARROW_TYPES[element_type(f)]) if kind is tuple else _ARROW_TYPES[kind]
        fields.append(pa.field(f.name, arrow))
    return pa.struct(fields)


LOSS_FIELDS = ("total", "content", "style", "tv")
TIMING_FIELDS = ("load_s", "targets_s", "optimize_s", "write_s", "total_s", "steps_per_second")
# pipeline/engine/quality.py, docs/ANALYSTS.md "Quality measures"; null in rows made before it, failed rows, colourways.
QUALITY_TYPE = pa.struct(
    [
        pa.field("style_ratio", pa.float64()),  # final style distance / the content's (a pattern: the noise start's)
        pa.field("style_ratio_per_layer", pa.list_(pa.float64())),  # in the order of params.style_layers
        pa.field("content_kept", pa.float64()),  # content-layer feature cosine with the content; null for patterns
    ]
)

SCHEMA = pa.schema(
    [
        pa.field("design_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "ok" or "failed"
        pa.field("error", pa.string()),
        pa.field("notes", pa.string()),  # e.g. a retry at a lower learning rate
        pa.field("content_id", pa.string()),  # null: a pattern made from the style(s) alone
        pa.field("style_id", pa.string(), nullable=False),  # a blend's ids joined by "+"
        pa.field("style_ids", pa.list_(pa.string())),
        pa.field("style_mix", pa.list_(pa.float64())),  # a blend's normalised weights
        pa.field("content_uri", pa.string()),
        pa.field("style_uri", pa.string()),
        pa.field("content_sha256", pa.string()),
        pa.field("style_sha256", pa.string()),
        pa.field("mask_sha256", pa.string()),
        pa.field("collection", pa.string()),
        # The same pairing, config and weights whatever the input bytes: a later ok
        # design of the same pairing_key supersedes the failed rows under it.
        pa.field("pairing_key", pa.string()),
        pa.field("output_uri", pa.string()),  # relative to OUT
        pa.field("output_sha256", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("params", params_type()),
        pa.field("weights_source", pa.string()),
        pa.field("loss_every", pa.int32()),
        pa.field("loss_total", pa.list_(pa.float32())),
        pa.field("loss_content", pa.list_(pa.float32())),
        pa.field("loss_style", pa.list_(pa.float32())),
        pa.field("loss_tv", pa.list_(pa.float32())),
        pa.field("final_loss", pa.struct([pa.field(n, pa.float64()) for n in LOSS_FIELDS])),
        pa.field("timings", pa.struct([pa.field(n, pa.float64()) for n in TIMING_FIELDS])),
        pa.field("seam_score", pa.float64()),  # tile designs only: wrap-edge / interior neighbour difference
        pa.field("mask_leakage", pa.float64()),  # mean |output - content| outside the garment mask
        pa.field("device", pa.string()),
        pa.field("device_name", pa.string()),
        pa.field("batch_size", pa.int32()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("content_extra", pa.string()),  # JSON of the input catalog's extra columns
        pa.field("style_extra", pa.string()),
        pa.field("versions", pa.struct([pa.field(n, pa.string()) for n in ("package", "torch", "python")])),
        # Colourways (pipeline/execution/colourways.py): the design recoloured, and the inks it is printed in.
        pa.field("parent_design_id", pa.string()),  # null: an optimized design
        pa.field("palette", pa.list_(pa.string())),  # "#rrggbb" colours, darkest first
        pa.field("quality", QUALITY_TYPE),  # added after parent_design_id and palette: older files read null
        # `designs generate --more-like` (pipeline/planning/more_like.py): the favourite this design varies;
        # null for every other design. Added after quality: older files read null.
        pa.field("more_like", pa.string()),
    ]
)


def params_value(
    config: Config, weights_identity: str, preprocessing: str, precision: str | None = None, network: str = "vgg19"
) -> dict[str, Any]:
    """The config as it made the design: the weights file's identity, the preprocessing
    that fed it, the network the file holds and the precision it ran in (resolved from
    'auto') in place of what was asked for, and the learning rate and TV weight that "auto"
    gave at its size and steps. `precision` None: the config's (a design no device has run)."""
    values = config.resolved().to_dict()
    values["weights"] = weights_identity
    values["preprocessing"] = preprocessing
    values["network"] = network
    if precision is not None:
        values["precision"] = precision
    return values


def conform_params(source: pa.Table, records: list[dict[str, Any]], target: pa.StructType) -> pa.Table:
    """`source` (rows to merge) with every params field of the table's `target` params type: a
    table made by an earlier version keeps fields the Config has since dropped (`tile`, now
    `repeat`), and delta-rs cannot merge a struct that lacks some of the target's fields.
    Values are derived from the rows' params where LEGACY_PARAMS says how, else null."""
    params = source.column("params").combine_chunks()
    missing = [f for f in target if params.type.get_field_index(f.name) < 0]
    if not missing:
        return source

    def value(record: dict[str, Any], name: str) -> Any:
        params = record.get("params")
        return LEGACY_PARAMS[name](params) if params and name in LEGACY_PARAMS else None

    extra = [pa.array([value(r, f.name) for r in records], f.type) for f in missing]
    children = [params.field(i) for i in range(params.type.num_fields)] + extra
    widened = pa.StructArray.from_arrays(children, fields=[*params.type, *missing], mask=params.is_null())
    return source.set_column(source.schema.get_field_index("params"), pa.field("params", widened.type), widened)
