"""Weight files that point outside themselves or declare shapes they do not hold are refused
before any data is read: external storage, external and soft links, virtual datasets, a
declared shape that is not VGG19's; the .pth path checks its tensors' shapes too."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline.engine.vgg import LAYER_INDEX
from pipeline.engine.weights import WeightsError, load_features, resolve_weights
from tests.engine.weight_files import seeded_features, write_keras_h5

FIRST = "block1_conv1"
KERNEL = f"{FIRST}/kernel:0"  # the dataset's path inside its layer group
UNTIL = LAYER_INDEX["conv1_2"]  # two layers: enough to reach the first kernel, quick to load


@pytest.fixture
def keras_file(tmp_path: Path) -> Path:
    return write_keras_h5(seeded_features(0), tmp_path / "vgg19.h5")


def _replace_kernel(path: Path, make) -> None:
    """Delete the first layer's kernel and let `make(group, name)` put something in its place."""
    with h5py.File(path, "a") as handle:
        group = handle[FIRST]
        del group[KERNEL]
        make(group, KERNEL)


def _refusal(path: Path) -> str:
    with pytest.raises(WeightsError) as info:
        load_features(resolve_weights(str(path), 0), until_index=UNTIL)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_the_file_as_written_loads(keras_file: Path):
    load_features(resolve_weights(str(keras_file), 0), until_index=UNTIL)


def test_a_dataset_stored_in_an_external_file_is_refused(keras_file: Path, tmp_path: Path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.ones((3, 3, 3, 64), dtype=np.float32).tobytes())
    size = outside.stat().st_size
    _replace_kernel(
        keras_file, lambda g, n: g.create_dataset(n, (3, 3, 3, 64), "<f4", external=[(str(outside), 0, size)])
    )
    message = _refusal(keras_file)
    assert "external file" in message and "outside.bin" in message and "self-contained" in message


def test_an_external_link_is_refused(keras_file: Path, tmp_path: Path):
    other = write_keras_h5(seeded_features(1), tmp_path / "other.h5")
    _replace_kernel(keras_file, lambda g, n: g.__setitem__(n, h5py.ExternalLink(str(other), f"/{FIRST}/{KERNEL}")))
    message = _refusal(keras_file)
    assert "external link" in message and "other.h5" in message


def test_an_external_link_anywhere_in_the_file_is_refused(keras_file: Path, tmp_path: Path):
    other = write_keras_h5(seeded_features(1), tmp_path / "other.h5")
    with h5py.File(keras_file, "a") as handle:
        handle["unused"] = h5py.ExternalLink(str(other), "/")
    assert "'unused' is an external link" in _refusal(keras_file)


def test_a_soft_link_is_refused(keras_file: Path):
    with h5py.File(keras_file, "a") as handle:
        handle.create_dataset("elsewhere", data=np.zeros((3, 3, 3, 64), dtype=np.float32))
    _replace_kernel(keras_file, lambda g, n: g.__setitem__(n, h5py.SoftLink("/elsewhere")))
    assert "is a soft link to '/elsewhere'" in _refusal(keras_file)


def test_a_virtual_dataset_is_refused(keras_file: Path, tmp_path: Path):
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as handle:
        handle.create_dataset("data", data=np.ones((3, 3, 3, 64), dtype=np.float32))
    layout = h5py.VirtualLayout(shape=(3, 3, 3, 64), dtype="<f4")
    layout[:] = h5py.VirtualSource(str(source), "data", shape=(3, 3, 3, 64))
    _replace_kernel(keras_file, lambda g, n: g.create_virtual_dataset(n, layout))
    assert "virtual dataset" in _refusal(keras_file)


def test_a_declared_huge_shape_is_refused_without_allocating_it(keras_file: Path):
    # Chunked, never written: the file hardly grows, the declared data would be 4 GiB of float32.
    size = keras_file.stat().st_size
    _replace_kernel(
        keras_file, lambda g, n: g.create_dataset(n, (3, 3, 3, 2**25), "<f4", chunks=(3, 3, 3, 64), fillvalue=0)
    )
    assert keras_file.stat().st_size < size + 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    message = _refusal(keras_file)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert "declares shape (3, 3, 3, 33554432), expected (3, 3, 3, 64)" in message
    assert grown < 1024 * 1024  # far below the 4 GiB it declares


def test_a_kernel_of_the_wrong_layers_shape_is_refused(keras_file: Path):
    _replace_kernel(keras_file, lambda g, n: g.create_dataset(n, data=np.zeros((3, 3, 3, 32), dtype=np.float32)))
    assert "declares shape (3, 3, 3, 32), expected (3, 3, 3, 64)" in _refusal(keras_file)


def test_a_kernel_that_is_not_floating_point_is_refused(keras_file: Path):
    _replace_kernel(keras_file, lambda g, n: g.create_dataset(n, data=np.zeros((3, 3, 3, 64), dtype="S4")))
    assert "expected float32" in _refusal(keras_file)


def test_a_chunk_larger_than_its_data_is_refused(keras_file: Path):
    # A chunk is decompressed whole: a resizable dataset's chunk may be far larger than the data.
    _replace_kernel(
        keras_file,
        lambda g, n: g.create_dataset(n, (3, 3, 3, 64), "<f4", chunks=(3, 3, 3, 4096), maxshape=(3, 3, 3, None)),
    )
    assert "chunks (3, 3, 3, 4096) larger than its shape" in _refusal(keras_file)


def test_a_huge_name_list_is_refused_before_it_is_read(keras_file: Path):
    with h5py.File(keras_file, "a") as handle:
        handle.attrs["layer_names"] = np.array([b"x"] * 5000)
    assert "declares 5000 names" in _refusal(keras_file)


def test_a_state_dict_of_the_wrong_shape_is_refused_in_one_line(tmp_path: Path):
    state = {k: v.clone() for k, v in seeded_features(0).state_dict().items()}
    state["2.weight"] = torch.zeros(64, 64, 5, 5)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    message = _refusal(path)
    assert "features.2.weight has shape (64, 64, 5, 5), expected (64, 64, 3, 3)" in message


def test_a_state_dict_of_integers_is_refused(tmp_path: Path):
    state = {k: v.clone() for k, v in seeded_features(0).state_dict().items()}
    state["0.bias"] = torch.zeros(64, dtype=torch.int64)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    assert "features.0.bias is torch.int64, expected a floating-point tensor" in _refusal(path)


@pytest.mark.parametrize("kind", ["folder", "fifo", "device"])
def test_weights_that_are_not_a_regular_file_are_refused_as_such(kind: str, tmp_path: Path):
    path = {"folder": tmp_path, "fifo": tmp_path / "fifo", "device": Path("/dev/zero")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(WeightsError, match="is not a regular file; accepted: a weights file"):
        resolve_weights(str(path), 0)
