"""The paper's network in each published layout: Keras' HDF5 file and the same
weights as a torchvision-layout state dict load into identical features, each
format carries its preprocessing, and broken HDF5 files are refused."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from weight_files import KERAS_LAYERS, seeded_features, write_keras_h5, write_state_dict

from pipeline.engine.vgg import CAFFE_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD, LAYER_INDEX, FeatureExtractor, preprocess
from pipeline.engine.weights import WeightsError, load_features, resolve_weights

LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1", "conv5_2")


@pytest.fixture(scope="module")
def both_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats")
    features = seeded_features(3)
    return features, write_keras_h5(features, folder / "vgg19.h5"), write_state_dict(features, folder / "vgg19.pth")


def test_the_keras_file_and_the_state_dict_give_identical_weights_and_features(both_files):
    features, keras, pth = both_files
    from_keras = load_features(resolve_weights(str(keras), 0))
    from_pth = load_features(resolve_weights(str(pth), 0, preprocessing="caffe"))
    for name, tensor in features.state_dict().items():
        assert torch.equal(from_keras.state_dict()[name], tensor), name
        assert torch.equal(from_pth.state_dict()[name], tensor), name
    image = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = FeatureExtractor(from_keras, LAYERS, "caffe")(image)
        b = FeatureExtractor(from_pth, LAYERS, "caffe")(image)
    for name in LAYERS:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_keras_kernels_become_torch_kernels(both_files):
    """(3, 3, in, out) -> (out, in, 3, 3), checked against the file's own dataset."""
    features, keras, _ = both_files
    loaded = load_features(resolve_weights(str(keras), 0))
    with h5py.File(keras, "r") as handle:
        kernel = np.asarray(handle["block3_conv2"]["block3_conv2/kernel:0"])
    index = LAYER_INDEX["conv3_2"] - 1
    assert kernel.shape == (3, 3, 256, 256)
    assert torch.equal(loaded[index].weight, torch.from_numpy(kernel).permute(3, 2, 0, 1))
    assert [n for n in KERAS_LAYERS if "conv" in n][:3] == ["block1_conv1", "block1_conv2", "block2_conv1"]


def test_caffe_preprocessing_is_bgr_0_to_255_minus_the_mean():
    image = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    direct = torch.stack([image[:, 2] * 255 - 103.939, image[:, 1] * 255 - 116.779, image[:, 0] * 255 - 123.68], 1)
    torch.testing.assert_close(preprocess(image, "caffe"), direct)
    assert CAFFE_MEAN_BGR == (103.939, 116.779, 123.68)
    features = seeded_features(0)
    extractor = FeatureExtractor(features, ("conv1_1",), "caffe")
    with torch.no_grad():
        conv = torch.nn.functional.conv2d(direct, features[0].weight, features[0].bias, padding=1)
        torch.testing.assert_close(extractor(image)["conv1_1"], torch.relu(conv))


def test_torchvision_preprocessing_is_the_imagenet_mean_and_std():
    image = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(2))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(preprocess(image, "torchvision"), (image - mean) / std)
    with pytest.raises(ValueError, match="preprocessing='rgb' is invalid; accepted: caffe, torchvision"):
        preprocess(image, "rgb")


def test_an_hdf5_file_without_keras_layers_is_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsError, match="without Keras' `layer_names`"):
        load_features(resolve_weights(str(path), 0))


def test_a_keras_file_missing_a_layer_is_refused_naming_it(tmp_path):
    path = write_keras_h5(seeded_features(0), tmp_path / "vgg19.h5")
    with h5py.File(path, "a") as handle:
        del handle["block4_conv3"]  # listed in layer_names, absent from the file
    with pytest.raises(WeightsError, match=r"lack 2 tensor\(s\)") as info:
        load_features(resolve_weights(str(path), 0))
    assert f"features.{LAYER_INDEX['conv4_3'] - 1}." in str(info.value)


def test_a_keras_file_listing_neither_networks_convolutions_is_refused_before_reading(tmp_path):
    path = write_keras_h5(seeded_features(0), tmp_path / "vgg19.h5")
    with h5py.File(path, "a") as handle:
        names = [n for n in handle.attrs["layer_names"] if n != b"block4_conv3"]
        handle.attrs["layer_names"] = np.array(names)
    with pytest.raises(WeightsError, match=r"15 convolutions; accepted: 16 \(vgg19\) or 13 \(vgg16\)"):
        resolve_weights(str(path), 0)


def test_a_truncated_keras_file_is_refused(tmp_path):
    whole = write_keras_h5(seeded_features(0), tmp_path / "whole.h5").read_bytes()
    path = tmp_path / "truncated.h5"
    path.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(WeightsError, match="cannot read VGG(19)? weights"):
        load_features(resolve_weights(str(path), 0))
