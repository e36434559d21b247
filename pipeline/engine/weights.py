"""Finding, checking and loading the VGG19 weights.

Resolution order: an explicit path (`--weights PATH`), `$NST_VGG19_WEIGHTS`,
the torch hub cache, then a download of torchvision's checkpoint through
`torch.hub` with its hash checked. `random` is an explicit, seeded choice for
tests and CPU demos. Every design records which weights made it.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.engine.vgg import CONV_INDICES, make_features, random_init_
from pipeline.files import sha256_file

WEIGHTS_ENV = "NST_VGG19_WEIGHTS"
CHECKPOINT_NAME = "vgg19-dcbb9e9d.pth"
CHECKPOINT_URL = f"https://download.pytorch.org/models/{CHECKPOINT_NAME}"
# torch.hub's convention: the hex part of the file name is a prefix of its SHA-256.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.\w+$")


class WeightsError(RuntimeError):
    """The weights cannot be found, downloaded, verified or loaded."""


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # "file" or "random"
    path: str | None
    identity: str  # "sha256:<hex>" or "random:<seed>"; recorded with every design

    @property
    def label(self) -> str:
        return self.identity if self.kind == "random" else f"{self.identity} ({self.path})"


def _checked_file(path: Path, origin: str) -> WeightsSource:
    if not path.is_file():
        raise WeightsError(f"VGG19 weights file {str(path)!r} (from {origin}) does not exist")
    digest = sha256_file(path)
    match = _HASH_IN_NAME.search(path.name)
    if match and not digest.startswith(match.group(1)):
        raise WeightsError(
            f"VGG19 weights file {str(path)!r} (from {origin}) has SHA-256 {digest}, "
            f"which does not start with {match.group(1)!r} as its name promises: the file is corrupt or not "
            f"torchvision's checkpoint; download {CHECKPOINT_URL} again"
        )
    return WeightsSource("file", str(path), f"sha256:{digest}")


def hub_checkpoint_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINT_NAME


def resolve_weights(spec: str, seed: int, allow_download: bool = True) -> WeightsSource:
    """Find the weights before any work starts; raise WeightsError saying how to fix it."""
    if spec == "random":
        return WeightsSource("random", None, f"random:{seed}")
    if spec not in ("auto", ""):
        return _checked_file(Path(spec).expanduser(), "--weights")
    if env := os.environ.get(WEIGHTS_ENV):
        return _checked_file(Path(env).expanduser(), f"${WEIGHTS_ENV}")
    cached = hub_checkpoint_path()
    if cached.is_file():
        return _checked_file(cached, "the torch hub cache")
    if not allow_download:
        raise WeightsError(_how_to_provide(cached, "downloads are disabled"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        # hash_prefix makes torch.hub refuse a corrupted or substituted download.
        torch.hub.download_url_to_file(CHECKPOINT_URL, str(cached), hash_prefix=CHECKPOINT_NAME.split("-")[1][:8])
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a hash mismatch is a RuntimeError
        raise WeightsError(_how_to_provide(cached, f"download failed: {err}")) from err
    return _checked_file(cached, "a torch.hub download")


def _how_to_provide(cached: Path, reason: str) -> str:
    return (
        f"VGG19 weights not found and could not be downloaded ({reason}). Provide torchvision's "
        f"{CHECKPOINT_NAME} (from {CHECKPOINT_URL}) in one of these ways: pass --weights /path/to/{CHECKPOINT_NAME}; "
        f"set {WEIGHTS_ENV}=/path/to/{CHECKPOINT_NAME}; or copy it to {cached}. "
        f"For tests and CPU demos only, --weights random uses seeded random weights."
    )


def load_features(source: WeightsSource, until_index: int | None = None) -> nn.Sequential:
    """The VGG19 conv stack with the resolved weights; the classifier is never kept."""
    features = make_features(until_index)
    if source.kind == "random":
        random_init_(features, int(source.identity.split(":")[1]))
        return features
    assert source.path is not None
    try:
        state = torch.load(source.path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        OSError,
        ValueError,
        EOFError,
        KeyError,
        pickle.UnpicklingError,
    ) as err:  # weights_only refuses pickled code
        raise WeightsError(f"cannot load VGG19 weights {source.path!r}: {err}") from err
    if not isinstance(state, dict):
        raise WeightsError(f"VGG19 weights {source.path!r} hold a {type(state).__name__}, expected a state dict")
    # Accept torchvision's full-model keys (features.N.*) or a bare features dict (N.*).
    prefix = "features." if any(k.startswith("features.") for k in state) else ""
    wanted = {k for k in features.state_dict()}
    kept = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix) :] in wanted}
    missing = sorted(wanted - set(kept), key=lambda k: int(k.split(".")[0]))
    if missing:
        raise WeightsError(
            f"VGG19 weights {source.path!r} lack {len(missing)} tensor(s) of torchvision's layout, e.g. "
            f"{prefix}{missing[0]}; expected keys {prefix}N.weight/bias for N in {CONV_INDICES}"
        )
    try:
        features.load_state_dict(kept)
    except RuntimeError as err:  # shape mismatch
        raise WeightsError(f"VGG19 weights {source.path!r} do not fit torchvision's VGG19 layout: {err}") from err
    del state
    return features
