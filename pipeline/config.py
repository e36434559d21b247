"""The one typed config: every tunable of a run and its default.

The CLI flags (`designs generate --help`) and the Prefect flow's parameters are
derived from this dataclass; nothing else restates a default. Each field's
metadata carries its help text and whether it changes the pixels of a design
(`identity=True`: it is hashed into the design id) or only how the run is
carried out (devices, batch size, file-system limits).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from pipeline.engine.layers import LAYER_INDEX, MIN_SIDE, NETWORKS, layer_index
from pipeline.engine.layers import PREPROCESSINGS as NETWORK_PREPROCESSINGS

DEFAULT_OUT = "data/catalog"
# `designs curate` (pipeline/execution/curate.py): two designs are near-duplicates at most this
# cosine distance apart (1 - cos of their embeddings); the score's weights (docs/ANALYSTS.md).
CURATE_THRESHOLD = 0.02
CURATE_SCORE_WEIGHTS = {"style": 1.0, "content": 1.0, "seam": 1.0, "mask": 1.0}
# Past this many ok designs the static gallery shows the curated representatives only.
GALLERY_MAX_DESIGNS = 5_000
# `designs similar` lists this many nearest designs unless -k says otherwise.
SIMILAR_K = 10

OPTIMIZERS = ("adam", "lbfgs")
INITS = ("content", "noise")
COLORS = ("style", "keep", "match")
ADAM_CONVENTIONS = ("keras", "pytorch")
PREPROCESSINGS = ("auto", *NETWORK_PREPROCESSINGS)
# The VGG the weights hold (pipeline/engine/layers.py): 'auto' is the file's own.
NETWORK_CHOICES = ("auto", *NETWORKS)
# The network's arithmetic (pipeline/engine/transfer.py resolves auto).
PRECISIONS = ("auto", "fp32", "bf16")
# The network's memory layout (pipeline/engine/transfer.py resolves auto per device and CPU kind).
MEMORY_FORMATS = ("auto", "channels-last", "contiguous")
# How the output tile repeats: see pipeline/engine/repeats.py for the layouts.
REPEATS = ("none", "block", "half-drop", "brick")
POOLINGS = ("max", "avg")
FORMATS = ("png", "tiff16")
MAX_STYLE_SCALE = 4.0
# Fields added after designs were first made, left out of the design id at these values
# (and `repeat` none/block hashed as the `tile` flag it replaced): earlier designs keep their ids.
_LEGACY_IDENTITY = {"style_scale": 1.0, "pooling": "max", "format": "png"}
# Layer names follow the paper's convention convN_M; see pipeline/engine/layers.py.
DEFAULT_CONTENT_LAYERS = ("conv5_2",)
DEFAULT_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
# The paper's numbers hold at its own size and step count. `learning_rate`, `tv_weight` and `scales`
# default to None ("auto"): Config.resolved() fills them in from size and steps by the formulas below;
# at 512 px and 1000 steps the learning rate and TV weight are exactly the paper's. An explicit value
# is used as given. Chosen on the real VGG16 (README "Defaults at other sizes").
PAPER_SIZE, PAPER_STEPS = 512, 1000
PAPER_LEARNING_RATE, PAPER_TV_WEIGHT = 0.02, 30.0
# TV sums |neighbour differences| over pixels: for the same picture at a smaller size there are
# fewer pixels but each difference is larger, so the sum scales with the side, not the area (the
# area's square, tried first, made 128 px designs blocky and a brick repeat's rows show a seam).
TV_SIZE_EXPONENT = 1.0
# Adam moves a pixel by about the learning rate a step: fewer steps need longer ones, but
# 1000/steps itself left a grain at 300 steps, where its square root did not.
LR_STEPS_EXPONENT = 0.5
MAX_AUTO_LEARNING_RATE = 0.1
# `scales` auto, a departure from the paper's single scale (README "Defaults at other sizes"):
# size/4, size/2 and size, those at least AUTO_COARSEST px, for AUTO_MIN_STEPS steps or more and
# designs with a content (patterns run one scale: Config.resolved_scales). The steps spread over
# them with AUTO_FINAL_SHARE at the output size and each coarser scale twice the next finer one's
# (coarse steps are cheap: a 64 px step costs 0.12 of a 256 px one).
# On the real VGG16 at 256 px this reaches the paper's 1000-step style loss 5x sooner.
AUTO_COARSEST = 64
AUTO_LEVELS = 3
AUTO_FINAL_SHARE = 0.4
AUTO_MIN_STEPS = 50
AUTO = "auto"
NONE = "none"


def auto_tv_weight(size: int) -> float:
    """The total-variation weight "auto" gives at `size` px: the paper's 30 at 512."""
    return PAPER_TV_WEIGHT * (PAPER_SIZE / size) ** TV_SIZE_EXPONENT


def auto_scales(size: int, steps: int) -> tuple[int, ...]:
    """The coarse-to-fine ladder "auto" gives at `size` px and `steps` steps: () (one scale) below
    2 x AUTO_COARSEST px or AUTO_MIN_STEPS steps."""
    if steps < AUTO_MIN_STEPS:
        return ()
    ladder = tuple(side for i in reversed(range(AUTO_LEVELS)) if (side := size // 2**i) >= AUTO_COARSEST)
    return ladder if len(ladder) > 1 else ()


def auto_scale_steps(steps: int, levels: int) -> tuple[int, ...]:
    """`steps` (at least AUTO_MIN_STEPS) spread over a ladder of `levels` scales: AUTO_FINAL_SHARE at
    the last, the rest halving from the coarsest to the finest; they sum to `steps`."""
    final = max(1, round(steps * AUTO_FINAL_SHARE))
    weights = [2.0 ** (levels - 2 - i) for i in range(levels - 1)]  # coarsest first: ..., 4, 2, 1
    coarse = [max(1, round((steps - final) * w / sum(weights))) for w in weights]
    return (*coarse, max(1, steps - sum(coarse)))


def auto_learning_rate(steps: int) -> float:
    """The Adam learning rate "auto" gives for `steps` steps: the paper's 0.02 at 1000."""
    return min(MAX_AUTO_LEARNING_RATE, PAPER_LEARNING_RATE * (PAPER_STEPS / steps) ** LR_STEPS_EXPONENT)


# Delta's default delta.deletedFileRetentionDuration: a vacuum may not keep less.
MIN_RETENTION_HOURS = 7 * 24


def _field(default: Any, help: str, identity: bool = True, choices: tuple[str, ...] | None = None):
    meta = {"help": help, "identity": identity, "choices": choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Config:
    # --- what the design looks like (hashed into design_id) ---
    size: int = _field(512, "longest side of the output image in pixels")
    steps: int = _field(1000, "total optimization steps (the paper: 10 epochs x 100 steps)")
    optimizer: str = _field("adam", "optimizer", choices=OPTIMIZERS)
    learning_rate: float | None = _field(
        None,
        "Adam learning rate (L-BFGS uses lbfgs_learning_rate); auto: the paper's 0.02 at 1000 steps, "
        "else 0.02 x sqrt(1000 / steps) up to 0.1",
    )
    adam_beta1: float = _field(0.99, "Adam beta1 (the paper's TensorFlow run uses 0.99)")
    adam_beta2: float = _field(0.999, "Adam beta2")
    adam_eps: float = _field(0.1, "Adam epsilon (the paper's TensorFlow run uses 0.1)")
    adam_convention: str = _field(
        "keras",
        "where Adam adds epsilon: 'keras' (the paper's run: to the uncorrected sqrt(v)) or 'pytorch' "
        "(to the bias-corrected sqrt(v), torch.optim.Adam's own)",
        choices=ADAM_CONVENTIONS,
    )
    lbfgs_learning_rate: float = _field(1.0, "L-BFGS step length")
    content_weight: float = _field(
        1e4, "weight of the content loss (0: pattern mode, from seeded noise and the style alone, as a null content_id)"
    )
    style_weight: float = _field(1e-2, "weight of the style loss")
    tv_weight: float | None = _field(
        None, "weight of the total-variation loss; auto: the paper's 30 at 512 px, else 30 x 512 / size"
    )
    content_layers: tuple[str, ...] = _field(DEFAULT_CONTENT_LAYERS, "VGG layers for the content loss")
    content_layer_weights: tuple[float, ...] = _field((), "per-layer content weights (empty: all 1)")
    style_layers: tuple[str, ...] = _field(DEFAULT_STYLE_LAYERS, "VGG layers for the style loss")
    style_layer_weights: tuple[float, ...] = _field((), "per-layer style weights (empty: all 1)")
    init: str = _field(
        "content", "starting image of the optimization (pattern mode always starts from noise)", choices=INITS
    )
    repeat: str = _field(
        "none",
        "seamless repeat of the output tile: 'block' (side by side), 'half-drop' (every second column shifted "
        "down by half the tile's height), 'brick' (every second row shifted right by half its width); padding in "
        "every convolution and the wrap-around TV term follow the repeat (--tile: block)",
        choices=REPEATS,
    )
    style_scale: float = _field(
        1.0,
        "motif scale: the style image is resized to this fraction of the output's longest side before its "
        "targets are computed (above 1: larger motifs, below 1: smaller)",
    )
    pooling: str = _field(
        "max", "pooling layers: 'max' (the network's own) or 'avg' (Gatys et al.: smoother)", choices=POOLINGS
    )
    format: str = _field(
        "png",
        "the design's file: 'png' (8-bit, sRGB chunk) or 'tiff16' (16-bit TIFF with an embedded sRGB ICC profile, "
        "for printers); both carry the DPI, design id, params and weights",
        choices=FORMATS,
    )
    color: str = _field(
        "style",
        "colour: 'style' plain transfer, 'keep' the content's colours (YIQ luminance transfer), "
        "'match' the style's colours to the content's first",
        choices=COLORS,
    )
    scales: tuple[int, ...] | None = _field(
        None,
        "coarse-to-fine longest sides ending at --size, e.g. 512,1024,2048; auto: size/4, size/2, size from "
        f"{AUTO_COARSEST} px up with {AUTO_FINAL_SHARE:g} of --steps at the output size (one scale below "
        f"{2 * AUTO_COARSEST} px, {AUTO_MIN_STEPS} steps or in pattern mode); none: one scale, as the paper",
    )
    scale_steps: tuple[int, ...] = _field(
        (), "steps per scale of explicit --scales (empty: --steps at the first, halved at each next)"
    )
    mask_feather: int = _field(3, "soft edge of a garment mask, in pixels inside the mask")
    seed: int = _field(0, "seed for noise init and for --weights random")
    # --- what is recorded (not part of the design id) ---
    loss_every: int = _field(10, "sample the loss curves every N steps", identity=False)
    # --- how the run is carried out (not part of the design id) ---
    weights: str = _field(
        "auto",
        "the VGG weights: 'auto' ($NST_VGG19_WEIGHTS, the Keras cache, the torch hub cache, then a download "
        "of Keras' file), a path to a Keras .h5 or a PyTorch .pth, or 'random' (tests and CPU demos)",
        identity=False,
    )
    preprocessing: str = _field(
        "auto",
        "the input the weights expect: 'auto' (caffe for Keras' file and vgg19-d01eb7cb.pth, torchvision for "
        "other .pth files), 'caffe' (BGR, 0..255, minus the mean) or 'torchvision' (ImageNet mean/std); "
        "recorded in params and hashed into the design id",
        identity=False,
        choices=PREPROCESSINGS,
    )
    network: str = _field(
        "auto",
        "the network the weights hold: 'auto' (the file's, from its number of convolutions: 16 VGG19, 13 VGG16; "
        "random weights VGG19), 'vgg19' or 'vgg16' (the file must hold it; random weights take its layout); "
        "recorded in params and, when not vgg19, hashed into the design id",
        identity=False,
        choices=NETWORK_CHOICES,
    )
    runner: str = _field(
        "thread",
        "where shard tasks run: 'thread' (this process) or 'dask' (the cluster at --dask-address, or without one "
        "a local cluster started for the run: one worker per GPU with dask-cuda, else one CPU worker)",
        identity=False,
        choices=("thread", "dask"),
    )
    dask_address: str = _field(
        "",
        "a Dask scheduler, tcp://HOST:PORT, for --runner dask; empty: --runner dask starts a local cluster and "
        "closes it when the run ends (docs/SCALING.md)",
        identity=False,
    )
    precision: str = _field(
        "auto",
        "the network's arithmetic: 'auto' (bf16 autocast on CUDA and on CPUs with native bf16, else fp32; "
        "NST_CPU_BF16=0 or 1 in the environment answers for the CPU), "
        "'fp32' or 'bf16'; Gram matrices, losses, the image and the optimizer are always fp32; "
        "params record the precision used",
        identity=False,
        choices=PRECISIONS,
    )
    memory_format: str = _field(
        "auto",
        "VGG's memory layout: 'auto' (channels-last on CUDA, and on CPUs with native bf16 when the precision is "
        "bf16; contiguous elsewhere, where channels-last was measured slower), 'channels-last' or 'contiguous'; "
        "the design is the same up to rounding",
        identity=False,
        choices=MEMORY_FORMATS,
    )
    devices: str = _field(
        "auto", "'auto' (every visible CUDA GPU, else cpu), 'cpu', or 'cuda:0,cuda:1'", identity=False
    )
    batch_size: int = _field(0, "pairings optimized together on one device (0: chosen per device)", identity=False)
    shard_size: int = _field(0, "pairings per shard task (0: 4 batches)", identity=False)
    overlap: str = _field(
        "auto",
        "decode the next batch and write finished PNGs on threads while the device optimizes: "
        "'on', 'off' (one stage after another), or 'auto' (on for GPUs; off on a CPU, whose cores "
        "the optimization already uses)",
        identity=False,
        choices=("auto", "on", "off"),
    )
    allow_roots: tuple[str, ...] = _field((), "extra folders that absolute image paths may point into", identity=False)
    # A print file without a resolution reads as 1 or 72 dpi; 300 is print's usual figure.
    dpi: int = _field(
        300, "DPI written into the design's files, PNG or TIFF (0: none, which readers take as 1 or 72)", identity=False
    )
    max_image_pixels: int = _field(64_000_000, "refuse images declaring more pixels than this", identity=False)
    max_image_bytes: int = _field(
        512 * 1024 * 1024,
        "refuse image files larger than this many bytes, checked before reading (only regular files are read)",
        identity=False,
    )
    max_catalog_images: int = _field(100_000, "refuse catalogs listing more images than this", identity=False)
    max_pairings: int = _field(
        10_000_000,
        "refuse catalogs yielding more pairings than this (times the --grid variants), before any file is read",
        identity=False,
    )
    per_favourite: int = _field(
        4,
        "with --more-like: the variations planned of each favourite, the first N of: style weight x2 and x0.5, "
        "a new seed (where the seed changes the pixels: a noise start), motif scale x1.5 and x0.75, the other "
        "repeats (a favourite that repeats), then x4, x0.25, x2, x0.5 and further seeds",
        identity=False,
    )
    maintain_after_files: int = _field(
        256,
        "a run ends with what `designs maintain` does (compaction, vacuum, checkpoint) when the design catalog "
        "holds more than this many data files under --maintain-small-file-bytes (0: never)",
        identity=False,
    )
    maintain_small_file_bytes: int = _field(
        2 * 1024 * 1024,
        "data files smaller than this count as small for --maintain-after-files (a shard's file is; the 8 MiB "
        "files maintenance writes are not)",
        identity=False,
    )
    maintain_retention_hours: int = _field(
        MIN_RETENTION_HOURS,
        "the end-of-run maintenance vacuums files that no version committed in the last this many hours reads; "
        "--version/--as-of to older versions may then fail",
        identity=False,
    )
    nonfinite_retry_factor: float = _field(
        0.1, "a design whose loss turns NaN/inf is retried once with its learning rate times this", identity=False
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, value: Any, accepted: str) -> ValueError:
            return ValueError(f"config {name}={value!r} is invalid; accepted: {accepted}")

        if self.size < 16:
            raise bad("size", self.size, "an integer >= 16 (the deepest layers need 16 px)")
        if self.steps < 1:
            raise bad("steps", self.steps, "an integer >= 1")
        if self.loss_every < 1:
            raise bad("loss_every", self.loss_every, "an integer >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", self.optimizer, " or ".join(OPTIMIZERS))
        if self.init not in INITS:
            raise bad("init", self.init, " or ".join(INITS))
        if self.repeat not in REPEATS:
            raise bad("repeat", self.repeat, ", ".join(REPEATS))
        if self.pooling not in POOLINGS:
            raise bad("pooling", self.pooling, " or ".join(POOLINGS))
        if self.format not in FORMATS:
            raise bad("format", self.format, " or ".join(FORMATS))
        if self.color not in COLORS:
            raise bad("color", self.color, " or ".join(COLORS))
        if self.adam_convention not in ADAM_CONVENTIONS:
            raise bad("adam_convention", self.adam_convention, " or ".join(ADAM_CONVENTIONS))
        if self.preprocessing not in PREPROCESSINGS:
            raise bad("preprocessing", self.preprocessing, ", ".join(PREPROCESSINGS))
        if self.network not in NETWORK_CHOICES:
            raise bad("network", self.network, ", ".join(NETWORK_CHOICES))
        if self.scales:
            if any(s < 16 for s in self.scales) or list(self.scales) != sorted(set(self.scales)):
                raise bad("scales", self.scales, "increasing sizes of at least 16 px, e.g. 512,1024,2048")
            if self.scales[-1] != self.size:
                raise bad(
                    "scales",
                    self.scales,
                    f"sizes ending at --size ({self.size}), e.g. --size {self.scales[-1]} --scales {','.join(map(str, self.scales))}",
                )
        if self.scale_steps and self.scales is None:
            raise bad(
                "scale_steps",
                self.scale_steps,
                "empty with scales auto (auto spreads --steps itself), or give --scales explicitly",
            )
        if self.scale_steps and (len(self.scale_steps) != len(self.scales) or min(self.scale_steps) < 1):
            raise bad(
                "scale_steps",
                self.scale_steps,
                f"empty, or {len(self.scales)} positive integers, one per entry of scales"
                if self.scales
                else "empty with one scale (--scales none: --steps is its step count)",
            )
        # The style at the coarsest scale must keep the pixels VGG19's four pools need.
        scales = self.resolved_scales()
        coarsest = min(scales or (self.size,))
        if not (self.style_scale <= MAX_STYLE_SCALE and round(coarsest * self.style_scale) >= MIN_SIDE):
            raise bad(
                "style_scale",
                self.style_scale,
                f"a number from {MIN_SIDE / coarsest:.4g} to {MAX_STYLE_SCALE:g} at "
                + (f"--scales {','.join(map(str, scales))}" if scales else f"--size {self.size}")
                + f" (the style's longest side, {coarsest} px x style_scale, must keep the {MIN_SIDE} px the network's "
                "four pools need), e.g. 0.5 or 2",
            )
        if self.mask_feather < 0:
            raise bad("mask_feather", self.mask_feather, "an integer >= 0")
        if self.dpi < 0:
            raise bad("dpi", self.dpi, "0 (none) or a positive integer")
        for name in ("learning_rate", "lbfgs_learning_rate", "adam_eps"):
            if (value := getattr(self, name)) is not None and not value > 0:
                raise bad(name, value, "a number > 0" + (" or auto" if name in AUTO_FIELDS else ""))
        for name in ("content_weight", "style_weight", "tv_weight"):
            if (value := getattr(self, name)) is not None and not value >= 0:
                raise bad(name, value, "a number >= 0" + (" or auto" if name in AUTO_FIELDS else ""))
        for layers_name in ("content_layers", "style_layers"):
            layers = getattr(self, layers_name)
            if not layers:
                raise bad(layers_name, layers, "one or more of " + ", ".join(LAYER_INDEX))
            if len(set(layers)) != len(layers):
                raise bad(layers_name, layers, "each layer at most once")
            # Any network's names here; the network loaded is checked before the run (preflight).
            known = LAYER_INDEX if self.network == "auto" else layer_index(self.network)
            for layer in layers:
                if layer not in known:
                    raise bad(layers_name, layer, ", ".join(known))
            weights = getattr(self, layers_name.replace("layers", "layer_weights"))
            if weights and len(weights) != len(layers):
                raise bad(
                    layers_name.replace("layers", "layer_weights"),
                    weights,
                    f"empty or {len(layers)} numbers, one per entry of {layers_name}",
                )
        if self.batch_size < 0:
            raise bad("batch_size", self.batch_size, "0 (auto) or a positive integer")
        if self.shard_size < 0:
            raise bad("shard_size", self.shard_size, "0 (auto) or a positive integer")
        if self.max_image_pixels < 1:
            raise bad("max_image_pixels", self.max_image_pixels, "a positive integer")
        if self.max_image_bytes < 1:
            raise bad("max_image_bytes", self.max_image_bytes, "a positive integer")
        if self.max_catalog_images < 1:
            raise bad("max_catalog_images", self.max_catalog_images, "a positive integer")
        if self.max_pairings < 1:
            raise bad("max_pairings", self.max_pairings, "a positive integer")
        if self.per_favourite < 1:
            raise bad("per_favourite", self.per_favourite, "a positive integer")
        if self.maintain_after_files < 0:
            raise bad("maintain_after_files", self.maintain_after_files, "0 (never) or a positive integer")
        if self.maintain_small_file_bytes < 1:
            raise bad("maintain_small_file_bytes", self.maintain_small_file_bytes, "a positive integer")
        if self.maintain_retention_hours < MIN_RETENTION_HOURS:
            raise bad(
                "maintain_retention_hours",
                self.maintain_retention_hours,
                f"an integer >= {MIN_RETENTION_HOURS} (a week: the Delta table's minimum, so that no version "
                "inside it loses files)",
            )
        if self.overlap not in ("auto", "on", "off"):
            raise bad("overlap", self.overlap, "auto, on or off")
        if not 0 < self.nonfinite_retry_factor < 1:
            raise bad("nonfinite_retry_factor", self.nonfinite_retry_factor, "a number between 0 and 1")

    # --- derived views ---

    @property
    def tile(self) -> bool:
        """Whether the output repeats at all (any repeat but 'none')."""
        return self.repeat != "none"

    @property
    def style_side(self) -> int:
        """The longest side the style is used at: style_scale times the output's (--size)."""
        return max(1, round(self.size * self.style_scale))

    def resolved(self) -> Config:
        """This config with every "auto" number (None) made concrete from its size and steps
        (auto_learning_rate, auto_tv_weight); itself when it has none. What the engine runs,
        what params record and what the design id hashes: an auto design has the id of the
        same numbers given explicitly."""
        changes: dict[str, Any] = {}
        if self.learning_rate is None:
            changes["learning_rate"] = auto_learning_rate(self.steps)
        if self.tv_weight is None:
            changes["tv_weight"] = auto_tv_weight(self.size)
        if self.scales is None:
            changes["scales"] = self.resolved_scales()
            changes["scale_steps"] = auto_scale_steps(self.steps, len(changes["scales"])) if changes["scales"] else ()
        return dataclasses.replace(self, **changes) if changes else self

    def resolved_scales(self) -> tuple[int, ...]:
        if self.scales is not None:
            return self.scales
        # A pattern (texture synthesis from noise) gains nothing from the ladder: on the real VGG16
        # at 256 px one scale reached the ladder's 300-step style loss at the same cost and ended 3x lower.
        return auto_scales(self.size, self.steps) if self.content_weight > 0 else ()

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **tile_alias(changes))

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        values = tile_alias(values)
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; accepted: {', '.join(known)}")
        return cls(**{k: coerce(known[k], v) for k, v in values.items()})

    def identity_dict(self) -> dict[str, Any]:
        """The fields that change a design's pixels, for hashing into design_id."""
        values = {k: v for k, v in self.resolved().to_dict().items() if config_field(k).metadata["identity"]}
        for name, legacy in _LEGACY_IDENTITY.items():
            if values[name] == legacy:
                del values[name]
        if values["repeat"] in ("none", "block"):
            values["tile"] = legacy_tile(values.pop("repeat"))
        return values

    def identity_json(self) -> str:
        """Cached on the instance: planning hashes it for every pairing of a million-pairing catalog."""
        try:
            return self.__dict__[_IDENTITY_JSON]
        except KeyError:
            value = json.dumps(self.identity_dict(), sort_keys=True, separators=(",", ":"))
            object.__setattr__(self, _IDENTITY_JSON, value)  # not a field: eq, hash, replace and to_dict ignore it
            return value

    def __getstate__(self) -> dict[str, Any]:
        """Pickles the fields only, not the cache."""
        state = dict(self.__dict__)
        state.pop(_IDENTITY_JSON, None)
        return state


_IDENTITY_JSON = "_identity_json_cache"
# The fields whose default None is "auto", resolved from size and steps (Config.resolved).
AUTO_FIELDS = frozenset({"learning_rate", "tv_weight", "scales"})


# The one old-params rule: `tile`, the flag that `repeat` replaced, is `repeat` 'block'; a
# false `tile` is 'none'. Old pairs files, design ids and tables' params still speak of `tile`.
def legacy_tile(repeat: str | None) -> bool:
    """`tile` as the fields that replaced it give it (a half-drop or a brick was never a `tile`)."""
    return repeat == "block"


def repeat_of_tile(tile: bool) -> str:
    return "block" if tile else "none"


# Params fields a Config no longer has, derived from the params that replaced them
# (pipeline/catalog/schema.py widens a merge into an old table with them).
LEGACY_PARAMS = {"tile": lambda params: legacy_tile(params.get("repeat"))}


def with_repeat(params: dict[str, Any]) -> dict[str, Any]:
    """A row's stored params, `repeat` filled from `tile` where the row was made before `repeat`."""
    if params.get("repeat") is None and params.get("tile") is not None:
        params = {**params, "repeat": repeat_of_tile(bool(params["tile"]))}
    return params


def tile_alias(values: dict[str, Any]) -> dict[str, Any]:
    """`tile` (the flag that `repeat` replaced, still in old pairs files and params) as `repeat`:
    true is 'block' (or the repeat given with it), false 'none'."""
    if "tile" not in values:
        return values
    values = dict(values)
    tile, repeat = values.pop("tile"), values.get("repeat")
    if tile is None:
        return values
    tile = coerce_bool("tile", tile) if isinstance(tile, str) else bool(tile)
    if repeat is None:
        values["repeat"] = repeat_of_tile(tile)
    elif tile != (repeat != "none"):
        raise ValueError(f"config tile={tile} and repeat={repeat!r} disagree; accepted: one of them, or both alike")
    return values


def config_fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(Config)


def config_field(name: str) -> dataclasses.Field:
    for f in config_fields():
        if f.name == name:
            return f
    raise KeyError(name)


def field_type(f: dataclasses.Field) -> type:
    """The runtime type of a field: int, float, str, bool, or tuple (of element_type); an
    "auto" field (`float | None`) is its number's type."""
    hints = typing.get_type_hints(Config)
    hint = hints[f.name]
    if f.name in AUTO_FIELDS:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint


def element_type(f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(Config)[f.name]
    if f.name in AUTO_FIELDS:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_args(hint)[0]


def coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn a CLI string, a JSON value or a list into the field's type ("auto" or None: None
    for the fields that take it)."""
    if f.name in AUTO_FIELDS and (value is None or (isinstance(value, str) and value.strip().lower() == AUTO)):
        return None
    kind = field_type(f)
    if kind is tuple:
        elem = element_type(f)
        if f.name == "scales" and isinstance(value, str) and value.strip().lower() == NONE:
            return ()  # one scale, as the paper
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        try:
            return tuple(elem(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(
                f"config {f.name}={value!r} is invalid; accepted: comma-separated {elem.__name__} values"
            ) from None
    if kind is bool and isinstance(value, str):
        return coerce_bool(f.name, value)
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"config {f.name}={value!r} is invalid; accepted: a whole number")
        return int(value)
    if kind is float and isinstance(value, int):
        return float(value)
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"config {f.name}={value!r} is invalid; accepted: a value of type {kind.__name__}") from None


def coerce_bool(name: str, value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"config {name}={value!r} is invalid; accepted: true or false")
