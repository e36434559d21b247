"""Finding, checking and loading the VGG weights.

Six files are known, each with its network and the input it was trained on. The
paper's VGG19 first (the default, and what --weights auto downloads):

- Keras' `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`, the Caffe-trained
  VGG19 of Simonyan and Zisserman that the paper's TensorFlow run loaded
  (HDF5; caffe preprocessing: BGR, 0..255, minus the BGR mean);
- `vgg19-d01eb7cb.pth`, the same Caffe weights as a PyTorch state dict in
  torchvision's key layout (jcjohnson's conversion; caffe preprocessing);
- torchvision's retrained `vgg19-dcbb9e9d.pth` (ImageNet mean/std on RGB in 0..1).

Then VGG16, a departure from the paper (the same three kinds: Keras'
`vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`, jcjohnson's `vgg16-00b39a1b.pth`,
torchvision's `vgg16-397923af.pth`).

The format is recognised from the file's bytes (an HDF5 signature, or a torch
checkpoint holding a state dict), never from its name; so is the network (16
convolutions: VGG19, 13: VGG16). `--weights auto` looks
in $NST_VGG19_WEIGHTS, the Keras cache, the torch hub cache (the Caffe
conversion first), then downloads the Keras file with its MD5 checked. An
explicit path is trusted and identified by its SHA-256; a file found in a cache
under a known name, or downloaded, must match its published checksum.
`random` is an explicit, seeded choice for tests and CPU demos, at the Caffe
network's scale. Every design records which weights and preprocessing made it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from pipeline.engine.layers import NETWORK_BY_CONVS
from pipeline.engine.vgg import (
    CAFFE,
    NETWORKS,
    PREPROCESSINGS,
    TORCHVISION,
    VGG16,
    VGG19,
    conv_indices,
    layer_index,
    make_features,
    random_init_,
)
from pipeline.files import sha256_file

WEIGHTS_ENV = "NST_VGG19_WEIGHTS"
KERAS_HDF5 = "keras-hdf5"  # formats, as recorded
STATE_DICT = "state-dict"
RANDOM = "random"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass(frozen=True)
class KnownFile:
    """A published weights file: where it comes from, where a cache keeps it, how it is checked."""

    name: str
    url: str
    format: str
    preprocessing: str
    md5: str | None = None  # the whole digest (Keras publishes MD5s)
    sha256_prefix: str | None = None  # torch.hub's name convention
    network: str = "vgg19"  # the network it holds: what `designs weights fetch --network` names

    def matches(self, path: Path) -> tuple[bool, str]:
        """(whether the file has the published checksum, the digest found)."""
        if self.md5:
            digest = _md5_file(path)
            return digest == self.md5, f"MD5 {digest}"
        digest = weights_sha256(path)
        return digest.startswith(self.sha256_prefix or ""), f"SHA-256 {digest}"


KERAS_FILE = KnownFile(
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    KERAS_HDF5,
    CAFFE,
    md5="253f8cb515780f3b799900260a226db6",
)
CAFFE_PTH = KnownFile(
    "vgg19-d01eb7cb.pth",
    "https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth",
    STATE_DICT,
    CAFFE,
    sha256_prefix="d01eb7cb",
)
TORCHVISION_PTH = KnownFile(
    "vgg19-dcbb9e9d.pth",
    "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    STATE_DICT,
    TORCHVISION,
    sha256_prefix="dcbb9e9d",
)
# VGG16, a departure from the paper: after its VGG19 files, never downloaded by --weights auto.
VGG16_KERAS_FILE = KnownFile(
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    KERAS_HDF5,
    CAFFE,
    md5="6d6bbae143d832006294945121d1f1fc",
    network=VGG16,
)
VGG16_CAFFE_PTH = KnownFile(  # its classifier keys are misnumbered: only features.* is read
    "vgg16-00b39a1b.pth",
    "https://web.eecs.umich.edu/~justincj/models/vgg16-00b39a1b.pth",
    STATE_DICT,
    CAFFE,
    sha256_prefix="00b39a1b",
    network=VGG16,
)
VGG16_TORCHVISION_PTH = KnownFile(
    "vgg16-397923af.pth",
    "https://download.pytorch.org/models/vgg16-397923af.pth",
    STATE_DICT,
    TORCHVISION,
    sha256_prefix="397923af",
    network=VGG16,
)
DOWNLOAD_URL = KERAS_FILE.url  # what --weights auto downloads when no cache has a file


def known_files() -> tuple[KnownFile, ...]:
    """The published files in the order --weights auto prefers them: the paper's network first."""
    return (KERAS_FILE, CAFFE_PTH, TORCHVISION_PTH, VGG16_KERAS_FILE, VGG16_CAFFE_PTH, VGG16_TORCHVISION_PTH)


class WeightsError(RuntimeError):
    """The weights cannot be found, downloaded, verified or loaded."""


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # "file" or "random"
    path: str | None
    identity: str  # "sha256:<hex>" or "random:<seed>"; recorded with every design
    format: str = RANDOM  # keras-hdf5, state-dict or random
    preprocessing: str = CAFFE  # the input the network expects: caffe or torchvision
    origin: str = ""  # where it was found: --weights, $NST_VGG19_WEIGHTS, a cache, a download
    network: str = VGG19  # the network the file holds (its number of convolutions), or random weights'

    @property
    def design_identity(self) -> str:
        """What a design id hashes: the weights, the preprocessing that feeds them and the network
        (named only when it is not VGG19, so every VGG19 design keeps the id it had)."""
        network = "" if self.network == VGG19 else f"+{self.network}"
        return f"{self.identity}+{self.preprocessing}{network}"

    @property
    def seed(self) -> int:
        assert self.kind == "random", self
        return int(self.identity.split(":")[1])

    @property
    def label(self) -> str:
        where = "" if self.path is None else f", {self.path}"
        return f"{self.identity} ({self.network}, {self.format}, {self.preprocessing} preprocessing{where})"


_SHA256_BY_FILE: dict[tuple[str, int, int], str] = {}


def weights_sha256(path: Path) -> str:
    """The file's SHA-256, read once per process while its size and mtime stay the same:
    a run resolves the weights before Prefect starts and again inside the flow, and a
    548 MB file takes seconds to hash."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_BY_FILE:
        _SHA256_BY_FILE[key] = sha256_file(path)
    return _SHA256_BY_FILE[key]


def _md5_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights: $KERAS_HOME/models, default ~/.keras/models."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def hub_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_path(known: KnownFile) -> Path:
    return (keras_cache_dir() if known.format == KERAS_HDF5 else hub_cache_dir()) / known.name


def hub_checkpoint_path() -> Path:
    """torchvision's checkpoint in the torch hub cache."""
    return cache_path(TORCHVISION_PTH)


def detect_format(path: Path) -> str:
    """keras-hdf5 or state-dict, from the file's first bytes; WeightsError naming what was found otherwise."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as err:
        raise WeightsError(f"cannot read VGG weights {str(path)!r}: {err}") from None
    if head == HDF5_SIGNATURE:
        return KERAS_HDF5
    # A torch checkpoint: a zip archive (torch.save since 1.6) or a legacy pickle (protocol 2, b"\x80\x02").
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return STATE_DICT
    found = "an empty file" if not head else f"a file starting with {head!r}"
    raise WeightsError(
        f"VGG weights {str(path)!r}: found {found}, which is neither a Keras HDF5 file "
        f"({KERAS_FILE.name}) nor a PyTorch state dict ({CAFFE_PTH.name}, {TORCHVISION_PTH.name})"
    )


def _source(
    path: Path, origin: str, preprocessing: str, known: KnownFile | None = None, network: str = "auto"
) -> WeightsSource:
    if not path.is_file():
        if path.exists():  # a folder, a FIFO, a device: reading it would fail, block or never end
            raise WeightsError(
                f"VGG weights {str(path)!r} (from {origin}) is not a regular file; accepted: a weights file"
            )
        raise WeightsError(f"VGG weights file {str(path)!r} (from {origin}) does not exist")
    fmt = detect_format(path)
    digest = weights_sha256(path)
    if known is not None:
        ok, found = known.matches(path)
        if not ok:
            expected = f"MD5 {known.md5}" if known.md5 else f"SHA-256 starting with {known.sha256_prefix}"
            raise WeightsError(
                f"VGG weights file {str(path)!r} (from {origin}) has {found}, not the published {expected}: "
                f"the file is corrupt or not {known.name}; delete it and download {known.url} again"
            )
    # A published file, its checksum matched, holds its known network; any other file is counted.
    found_network = known.network if known is not None else detect_network(path, fmt, digest)
    if network not in ("auto", found_network):
        raise WeightsError(
            f"weights {str(path)!r} (from {origin}) hold {found_network} "
            f"({_conv_count(found_network)} convolutions), not the {network} that --network asks for; "
            f"accepted: a {network} file, or --network auto"
        )
    if preprocessing == "auto":
        preprocessing = _preprocessing_of(fmt, digest)
    return WeightsSource("file", str(path), f"sha256:{digest}", fmt, preprocessing, origin, found_network)


def _preprocessing_of(fmt: str, digest: str) -> str:
    """The Keras files are the Caffe networks; a state dict is torchvision's retrained
    network unless its hash is that of a Caffe conversion (same layout, other weights)."""
    caffe = tuple(k.sha256_prefix for k in known_files() if k.format == STATE_DICT and k.preprocessing == CAFFE)
    if fmt == KERAS_HDF5 or digest.startswith(tuple(p for p in caffe if p)):
        return CAFFE
    return TORCHVISION


def _conv_count(network: str) -> int:
    return next(count for count, name in NETWORK_BY_CONVS.items() if name == network)


def _network_of(count: int, path: str, what: str) -> str:
    """The network with `count` convolutions; WeightsError naming the accepted counts otherwise."""
    if count not in NETWORK_BY_CONVS:
        accepted = " or ".join(f"{n} ({name})" for n, name in NETWORK_BY_CONVS.items())
        raise WeightsError(f"weights {path!r}: {what} {count} convolutions; accepted: {accepted}")
    return NETWORK_BY_CONVS[count]


_NETWORK_BY_FILE: dict[tuple[str, int, int], str] = {}


def detect_network(path: Path, fmt: str, digest: str | None = None) -> str:
    """vgg19 or vgg16, from the file's convolutions (never its name): a Keras file's
    `layer_names` (blockB_convL entries, no data read), a state dict's 4-D `features`
    weights (a known file by its published hash, without loading it). Cached per file."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _NETWORK_BY_FILE:
        return _NETWORK_BY_FILE[key]
    if fmt == KERAS_HDF5:
        network = _network_of(len(_keras_conv_names(str(path))), str(path), "its layer_names list")
    else:
        digest = digest or weights_sha256(path)
        known = [k for k in known_files() if k.sha256_prefix and digest.startswith(k.sha256_prefix)]
        if known:
            network = known[0].network
        else:
            state = _torch_state(str(path))
            convs = sum(1 for k, v in state.items() if k.endswith(".weight") and getattr(v, "ndim", 0) == 4)
            # Neither count: VGG19's layout, which loading then refuses naming the first misfit.
            network = NETWORK_BY_CONVS.get(convs, VGG19)
    _NETWORK_BY_FILE[key] = network
    return network


def _keras_conv_names(path: str) -> list[str]:
    """The blockB_convL entries of a Keras file's `layer_names` (its size checked before it is read)."""
    import h5py  # local: only this format needs it

    try:
        with h5py.File(path, "r") as handle:
            group = handle["model_weights"] if "model_weights" in handle else handle
            names = _name_list(group, "layer_names", path)
    except (OSError, KeyError, ValueError, TypeError) as err:  # h5py raises these for broken files
        raise WeightsError(f"cannot read VGG weights {path!r} as Keras HDF5: {err}") from None
    if not names:
        raise WeightsError(f"VGG weights {path!r}: an HDF5 file without Keras' `layer_names` attribute")
    return [n for n in names if re.fullmatch(r"block\d+_conv\d+", n)]


def resolve_weights(
    spec: str, seed: int, allow_download: bool = True, preprocessing: str = "auto", network: str = "auto"
) -> WeightsSource:
    """Find the weights before any work starts; raise WeightsError saying how to fix it.

    preprocessing: 'auto' (the format's own: caffe for the Keras file and the
    Caffe conversion, torchvision for other state dicts), or 'caffe' /
    'torchvision' to say what an unpublished state dict was trained on.
    network: 'auto' (the file's, found from its convolutions; VGG19 for random
    weights), or 'vgg19' / 'vgg16': the file must hold it (random weights take its layout)."""
    if preprocessing not in ("auto", *PREPROCESSINGS):
        raise WeightsError(f"preprocessing={preprocessing!r} is invalid; accepted: auto, {', '.join(PREPROCESSINGS)}")
    if network not in ("auto", *NETWORKS):
        raise WeightsError(f"network={network!r} is invalid; accepted: auto, {', '.join(NETWORKS)}")
    if spec == "random":
        # The Caffe network's input scale, so the paper's loss weights act on random weights as on the real ones.
        return WeightsSource(
            "random",
            None,
            f"random:{seed}",
            RANDOM,
            CAFFE if preprocessing == "auto" else preprocessing,
            network=VGG19 if network == "auto" else network,
        )
    if spec not in ("auto", ""):
        return _source(Path(spec).expanduser(), "--weights", preprocessing, network=network)
    if env := os.environ.get(WEIGHTS_ENV):
        return _source(Path(env).expanduser(), f"${WEIGHTS_ENV}", preprocessing, network=network)
    for known in known_files():
        cached = cache_path(known)
        if cached.is_file() and network in ("auto", known.network):
            return _source(
                cached,
                f"the {'Keras' if known.format == KERAS_HDF5 else 'torch hub'} cache",
                preprocessing,
                known,
                network,
            )
    if not allow_download:
        raise WeightsError(how_to_provide("downloads are disabled"))
    target = cache_path(KERAS_FILE)
    partial = target.with_name(target.name + ".partial")
    made: list[Path] = []
    try:
        made = _make_dirs(target.parent)  # taken back below unless the file lands in them
        torch.hub.download_url_to_file(DOWNLOAD_URL, str(partial), progress=False)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; so is a cache folder that cannot be made
        _take_back(partial, made)
        raise WeightsError(how_to_provide(f"download failed: {err}")) from None
    ok, found = KERAS_FILE.matches(partial)
    if not ok:
        _take_back(partial, made)
        raise WeightsError(how_to_provide(f"the download of {DOWNLOAD_URL} has {found}, not MD5 {KERAS_FILE.md5}"))
    os.replace(partial, target)
    return _source(target, "a download", preprocessing, KERAS_FILE, network)


def _take_back(partial: Path, made: list[Path]) -> None:
    """A refused download leaves nothing: its partial file, the cache folders made for it."""
    partial.unlink(missing_ok=True)
    for folder in reversed(made):
        with contextlib.suppress(OSError):  # not empty: something else put a file there
            folder.rmdir()


def how_to_provide(reason: str) -> str:
    places = "; ".join(f"{k.name} ({k.url}) as {cache_path(k)}" for k in known_files())
    return (
        f"VGG weights not found ({reason}). Copy one of these files into its cache folder, best first: {places}; "
        f"or pass --weights /path/to/file, or set {WEIGHTS_ENV}=/path/to/file. "
        f"For tests and CPU demos only, --weights random uses seeded random weights."
    )


# --- Ahead of a run: what --weights auto finds where (`designs weights list`), and a checked
# download into the cache it looks in (`designs weights fetch`).

MAX_DOWNLOAD_BYTES = 2 << 30  # the published files are 80 to 575 MB; a mirror sending more is cut off
DOWNLOAD_TIMEOUT_S = 60.0  # per connection attempt and per read


class DownloadError(WeightsError):
    """A weights file could not be downloaded or did not have its published checksum: the
    network, the mirror or the disk failed, not the command."""


def networks() -> tuple[str, ...]:
    """The networks some known file holds, in known_files() order: what `weights fetch --network` accepts."""
    return tuple(dict.fromkeys(k.network for k in known_files()))


def fetch_file(network: str) -> KnownFile:
    """The file `weights fetch --network` downloads: the network's first known file, the one
    --weights auto prefers (for vgg19, the Keras file --weights auto downloads itself).
    ValueError naming the accepted networks otherwise."""
    for known in known_files():
        if known.network == network:
            return known
    raise ValueError(f"--network {network!r} has no known weights file; accepted: {', '.join(networks())}")


def expected_checksum(known: KnownFile) -> str:
    return f"MD5 {known.md5}" if known.md5 else f"SHA-256 starting with {known.sha256_prefix}"


@dataclass(frozen=True)
class FoundWeights:
    """One place --weights auto looks, and what is there."""

    place: str  # "$NST_VGG19_WEIGHTS", "Keras cache", "torch hub cache"
    path: Path | None  # None: $NST_VGG19_WEIGHTS is not set
    known: KnownFile | None  # the published file expected there; None for $NST_VGG19_WEIGHTS
    size: int | None = None  # None: no file there
    sha256: str | None = None
    md5: str | None = None  # only for a file published with an MD5
    matches: bool | None = None  # its published checksum; None: nothing to check against
    used: bool = False  # the file --weights auto takes (the first there, in this order)


def find_weights_files() -> list[FoundWeights]:
    """Every place --weights auto looks, in its order, with each file's size and checksums."""
    found: list[FoundWeights] = []
    env = os.environ.get(WEIGHTS_ENV)
    places: list[tuple[str, Path | None, KnownFile | None]] = [
        (f"${WEIGHTS_ENV}", Path(env).expanduser() if env else None, None)
    ]
    places += [
        ("Keras cache" if k.format == KERAS_HDF5 else "torch hub cache", cache_path(k), k) for k in known_files()
    ]
    used = False
    for place, path, known in places:
        if path is None or not path.is_file():
            found.append(FoundWeights(place, path, known))
            continue
        sha256 = weights_sha256(path)
        md5 = _md5_file(path) if known is not None and known.md5 else None
        matches = None
        if known is not None:
            matches = md5 == known.md5 if known.md5 else sha256.startswith(known.sha256_prefix or "")
        found.append(FoundWeights(place, path, known, path.stat().st_size, sha256, md5, matches, not used))
        used = True
    return found


def fetch_weights(
    known: KnownFile,
    url: str | None = None,
    on_bytes: Callable[[int, int | None], None] | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> tuple[Path, bool]:
    """Put `known` into the cache --weights auto looks in: (its path, whether it was downloaded).

    A file already there with the published checksum is kept. Otherwise `url` (default: the
    published one; http, https or file) is downloaded to a temporary file beside the target,
    checked, and renamed over it: a failed or mismatching download leaves nothing behind, not
    even the cache folders it made. on_bytes(done, total or None) follows the download.
    DownloadError names the URL and what failed."""
    target = cache_path(known)
    if target.is_file() and known.matches(target)[0]:
        return target, False
    url = url or known.url
    made: list[Path] = []
    partial: Path | None = None
    done = False
    try:
        made = _make_dirs(target.parent)
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{known.name}.", suffix=".partial")
        partial = Path(name)
        with os.fdopen(handle, "wb") as out:
            md5, sha256 = _download(url, out, on_bytes, timeout)
        ok = md5 == known.md5 if known.md5 else sha256.startswith(known.sha256_prefix or "")
        if not ok:
            found = f"MD5 {md5}" if known.md5 else f"SHA-256 {sha256}"
            raise DownloadError(f"{url} gave a file with {found}, not the published {expected_checksum(known)}")
        os.replace(partial, target)
        done = True
    except OSError as err:  # the cache folder: not writable, full
        raise DownloadError(f"cannot write {known.name} into {str(target.parent)!r}: {err}") from None
    finally:
        if not done:
            if partial is not None:
                partial.unlink(missing_ok=True)
            for folder in reversed(made):
                with contextlib.suppress(OSError):  # not empty: something else put a file there
                    folder.rmdir()
    return target, True


def _make_dirs(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it made, outermost first (to remove them on a failure)."""
    missing: list[Path] = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made = []
    try:
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            made.append(path)
    except OSError:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    return made


def _download(
    url: str, out: BinaryIO, on_bytes: Callable[[int, int | None], None] | None, timeout: float
) -> tuple[str, str]:
    """Stream `url` into `out`: (MD5, SHA-256) of what came. DownloadError naming the URL otherwise."""
    import http.client
    import urllib.error
    import urllib.request

    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    done = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "designs-weights-fetch"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if on_bytes is not None:
                on_bytes(0, total)
            while block := response.read(1 << 20):
                done += len(block)
                if done > MAX_DOWNLOAD_BYTES:
                    raise DownloadError(f"cannot download {url}: more than {MAX_DOWNLOAD_BYTES} bytes")
                md5.update(block)
                sha256.update(block)
                out.write(block)
                if on_bytes is not None:
                    on_bytes(done, total)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:  # no network, no such host or file, refused
        raise DownloadError(f"cannot download {url}: {err.reason}") from None
    except (OSError, http.client.HTTPException, ValueError) as err:  # a cut connection, a timeout, a bad URL
        raise DownloadError(f"cannot download {url}: {err or type(err).__name__}") from None
    if total is not None and done != total:
        raise DownloadError(f"cannot download {url}: got {done} of {total} bytes")
    return md5.hexdigest(), sha256.hexdigest()


# The last file's checked tensors: a run loads the weights once to refuse a bad file before any
# work, and its engines take them from here instead of reading the file again (one entry: a
# process runs one set of weights at a time).
_LAST_LOADED: list[tuple[tuple, dict[str, torch.Tensor]]] = []


def load_features(source: WeightsSource, until_index: int | None = None) -> nn.Sequential:
    """The network's conv stack (source.network) with the resolved weights; the classifier is never kept."""
    network = source.network
    features = make_features(network, until_index)
    if source.kind == "random":
        random_init_(features, source.seed)
        return features
    assert source.path is not None
    stat = os.stat(source.path)
    cache_key = (source.path, source.identity, network, until_index, stat.st_size, stat.st_mtime_ns)
    if _LAST_LOADED and _LAST_LOADED[0][0] == cache_key:
        features.load_state_dict(_LAST_LOADED[0][1])  # copied into the new module's own tensors
        return features
    expected = {key: tuple(value.shape) for key, value in features.state_dict().items()}
    if source.format == KERAS_HDF5:
        state = _keras_state(source.path, expected, network)
    else:
        state = _torch_state(source.path)
        convs = sum(1 for k, v in state.items() if k.endswith(".weight") and getattr(v, "ndim", 0) == 4)
        if NETWORK_BY_CONVS.get(convs, network) != network:
            raise WeightsError(
                f"weights {source.path!r} hold {NETWORK_BY_CONVS[convs]} now, not the {network} found when resolved"
            )
    wanted = set(expected)
    kept = {k: v for k, v in state.items() if k in wanted}
    missing = sorted(wanted - set(kept), key=lambda k: int(k.split(".")[0]))
    if missing:
        raise WeightsError(
            f"{network} weights {source.path!r} lack {len(missing)} tensor(s) of {network}'s layout, e.g. "
            f"features.{missing[0]}; expected features.N.weight/bias for N in {conv_indices(network)}"
        )
    for key in sorted(kept, key=lambda k: int(k.split(".")[0])):  # one line for the first misfit
        found = kept[key]
        if not isinstance(found, torch.Tensor) or not found.is_floating_point():
            what = found.dtype if isinstance(found, torch.Tensor) else type(found).__name__
            raise WeightsError(
                f"{network} weights {source.path!r} do not fit {network}'s layout: features.{key} is {what}, "
                "expected a floating-point tensor"
            )
        if tuple(found.shape) != expected[key]:
            raise WeightsError(
                f"{network} weights {source.path!r} do not fit {network}'s layout: features.{key} has shape "
                f"{tuple(found.shape)}, expected {expected[key]}"
            )
    try:
        features.load_state_dict(kept)
    except RuntimeError as err:  # shape mismatch
        raise WeightsError(f"{network} weights {source.path!r} do not fit {network}'s layout: {err}") from None
    _LAST_LOADED[:] = [(cache_key, kept)]
    return features


def _torch_state(path: str) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save, loaded with weights_only=True (no pickled code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, KeyError, pickle.UnpicklingError) as err:
        raise WeightsError(f"cannot load VGG weights {path!r}: {_load_error(err)}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"VGG weights {path!r} hold a {type(state).__name__}, expected a state dict")
    # torchvision's full-model keys (features.N.*) or a bare features dict (N.*).
    prefix = "features." if any(str(k).startswith("features.") for k in state) else ""
    return {k[len(prefix) :]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}


def _load_error(err: BaseException) -> str:
    """One line of torch.load's error. Its weights_only refusal spans paragraphs and suggests
    loading unsafely; what matters is which object it refused."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error:"):
            found = line.removeprefix("WeightsUnpickler error:").split(" was not an allowed global")[0].strip()
            return f"it holds pickled objects, not only tensors ({found}); refused without running them"
    return lines[0] if lines else type(err).__name__


def _keras_state(path: str, expected: dict[str, tuple[int, ...]], network: str = VGG19) -> dict[str, torch.Tensor]:
    """Keras' HDF5 weights as features.N.* tensors: the root attribute `layer_names`
    lists the layers, each layer group's `weight_names` its datasets (kernel, then
    bias); kernels are (3, 3, in, out) and become torch's (out, in, 3, 3).

    `expected` holds the torch shape of each tensor wanted (N.weight, N.bias) in
    `network`'s layout; only those layers are read. The file declares its network by
    the convolutions its `layer_names` lists (16 or 13), counted before any data is
    read: it must be `network`, whose shapes are expected. Before any data is read, the file must be self-contained
    (no soft or external link anywhere, no dataset stored in other files or virtual)
    and every dataset read must declare its layer's shape: a file's SHA-256 then
    covers all that is read, and a declared shape of (3, 3, 3, 2**25) is refused
    instead of allocated."""
    import h5py  # local: only this format needs it
    import numpy as np

    try:
        with h5py.File(path, "r") as handle:
            if problem := handle.visititems_links(_foreign_link):
                raise WeightsError(f"VGG weights {path!r}: {problem}; {_SELF_CONTAINED}")
            group = handle["model_weights"] if "model_weights" in handle else handle
            names = _name_list(group, "layer_names", path)
            if not names:
                raise WeightsError(f"VGG weights {path!r}: an HDF5 file without Keras' `layer_names` attribute")
            convs = [n for n in names if re.fullmatch(r"block\d+_conv\d+", n)]
            if (declared := _network_of(len(convs), path, "its layer_names list")) != network:
                raise WeightsError(
                    f"weights {path!r} declare {declared} ({len(convs)} convolutions in layer_names), "
                    f"not the {network} expected; accepted: a {network} file"
                )
            state: dict[str, torch.Tensor] = {}
            for layer, index in layer_index(network).items():  # conv{B}_{L} -> Keras' block{B}_conv{L}
                conv_index = index - 1  # LAYER_INDEX points at the ReLU after the conv
                if f"{conv_index}.weight" not in expected:
                    continue  # a layer past the cut: not read
                block, conv = layer[len("conv") :].split("_")
                name = f"block{block}_conv{conv}"
                if name not in names or name not in group:
                    continue  # reported as missing by the caller
                weight_names = _name_list(group[name], "weight_names", path)
                if len(weight_names) != 2:
                    raise WeightsError(
                        f"VGG weights {path!r}: layer {name} lists {weight_names[:4]}, expected a kernel and a bias"
                    )
                out_c, in_c, kh, kw = expected[f"{conv_index}.weight"]
                kernel = _dataset(group[name], weight_names[0], (kh, kw, in_c, out_c), f"{name}'s kernel", path)
                bias = _dataset(group[name], weight_names[1], (out_c,), f"{name}'s bias", path)
                kernel_array = np.asarray(kernel, dtype=np.float32)  # shapes checked: bounded reads
                state[f"{conv_index}.weight"] = torch.from_numpy(
                    np.ascontiguousarray(kernel_array.transpose(3, 2, 0, 1))
                )
                state[f"{conv_index}.bias"] = torch.from_numpy(np.asarray(bias, dtype=np.float32))
            return state
    except (OSError, KeyError, ValueError, TypeError) as err:  # h5py raises these for broken files
        raise WeightsError(f"cannot read VGG weights {path!r} as Keras HDF5: {err}") from None


_SELF_CONTAINED = (
    "accepted: a self-contained Keras HDF5 file (hard links only, each layer's kernel and bias "
    "stored in the file itself at its network's shapes)"
)
MAX_NAMES = 1024  # entries of a `layer_names` or `weight_names` attribute: Keras' VGG19 has 27 and 2


def _foreign_link(name: str, link: object) -> str | None:
    """What is wrong with a link that is not a hard link inside the file (h5py's visititems_links)."""
    import h5py

    if isinstance(link, h5py.HardLink):
        return None
    if isinstance(link, h5py.ExternalLink):
        return f"{name!r} is an external link to {link.filename!r}:{link.path!r}"
    if isinstance(link, h5py.SoftLink):
        return f"{name!r} is a soft link to {link.path!r}"
    return f"{name!r} is a {type(link).__name__}, not a hard link"


def _name_list(node: object, attribute: str, path: str) -> list[str]:
    """A Keras name list attribute, its size checked before it is read."""
    attrs = node.attrs  # type: ignore[attr-defined]
    if attribute not in attrs:
        return []
    count = math.prod(attrs.get_id(attribute).shape or ())
    if count > MAX_NAMES:
        raise WeightsError(
            f"VGG weights {path!r}: attribute {attribute} of {node.name!r} declares {count} names; "  # type: ignore[attr-defined]
            f"accepted: at most {MAX_NAMES}"
        )
    value = attrs[attribute]
    return [_text(n) for n in (value.reshape(-1) if hasattr(value, "reshape") else [value])]


def _dataset(group: object, name: str, shape: tuple[int, ...], what: str, path: str) -> object:
    """The dataset `name` of a layer group, refused unless stored in the file, floating point and of
    `shape` (the chunk shape too: a chunk larger than its data would be decompressed whole).
    Nothing is read: the caller reads it once it is known to be bounded."""
    import h5py

    node = group.get(name)  # type: ignore[attr-defined]
    if node is None:
        raise WeightsError(f"VGG weights {path!r}: {what} {name!r} is not in the file")
    where = f"VGG weights {path!r}: {what} {node.name!r}"
    if not isinstance(node, h5py.Dataset):
        raise WeightsError(f"{where} is a {type(node).__name__}, expected a dataset; {_SELF_CONTAINED}")
    if node.is_virtual:
        raise WeightsError(f"{where} is a virtual dataset (its data lives in other files); {_SELF_CONTAINED}")
    if node.external:
        files = ", ".join(repr(_text(f[0])) for f in node.external[:3])
        raise WeightsError(f"{where} stores its data in external file(s) {files}; {_SELF_CONTAINED}")
    if node.shape != shape:
        raise WeightsError(f"{where} declares shape {node.shape}, expected {shape}; {_SELF_CONTAINED}")
    if node.dtype.kind != "f" or node.dtype.itemsize > 8:
        raise WeightsError(f"{where} holds {node.dtype}, expected float32; {_SELF_CONTAINED}")
    if node.chunks is not None and any(c > s for c, s in zip(node.chunks, shape, strict=True)):
        raise WeightsError(f"{where} declares chunks {node.chunks} larger than its shape; {_SELF_CONTAINED}")
    return node


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_loadable(source: WeightsSource) -> None:
    """Load the weights once before any work, so a broken file is refused up front."""
    load_features(source)
