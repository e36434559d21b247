"""VGG16 beside VGG19: the network comes from the file's convolutions (13 or 16), never its
name; it is recorded with the weights and in the design id (VGG19's ids unchanged), and a
layer VGG16 lacks is refused before any work."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from weight_files import keras_layers, seeded_features, write_keras_h5, write_state_dict

from benchmarks.flops import conv_shapes, step_flops
from pipeline.config import Config
from pipeline.engine import weights as weights_module
from pipeline.engine.layers import LAYER_INDEX, NETWORK_BY_CONVS, layer_index
from pipeline.engine.memory import estimate_memory, layer_shapes
from pipeline.engine.transfer import Pairing, StyleTransfer
from pipeline.engine.vgg import make_features
from pipeline.engine.weights import WeightsError, known_files, load_features, networks, resolve_weights
from pipeline.execution.preflight import Refused, check_layers, preflight


def test_vgg16_has_every_layer_the_paper_uses_and_ends_at_conv5_3():
    vgg16 = layer_index("vgg16")
    for name in Config().content_layers + Config().style_layers:
        assert name in vgg16
    assert list(vgg16)[-1] == "conv5_3"
    assert set(LAYER_INDEX) - set(vgg16) == {"conv3_4", "conv4_4", "conv5_4"}
    assert NETWORK_BY_CONVS == {16: "vgg19", 13: "vgg16"}
    features = make_features("vgg16")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in features) == 13
    for index in vgg16.values():  # each name taps the ReLU after its conv
        assert isinstance(features[index], torch.nn.ReLU) and isinstance(features[index - 1], torch.nn.Conv2d)


def test_a_keras_vgg16_file_is_recognised_by_its_convolutions_not_its_name(tmp_path: Path):
    features = seeded_features(3, network="vgg16")
    path = write_keras_h5(features, tmp_path / "vgg19_weights.h5", network="vgg16")  # a misleading name
    source = resolve_weights(str(path), 0)
    assert (source.network, source.preprocessing) == ("vgg16", "caffe")
    assert "vgg16" in source.label
    loaded = load_features(source)
    assert len(loaded) == len(features)
    for (key, want), got in zip(features.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(want, got), key


def test_a_vgg16_state_dict_loads_without_its_misnumbered_classifier(tmp_path: Path):
    features = seeded_features(4, network="vgg16")
    path = write_state_dict(features, tmp_path / "some.pth", classifier=False)
    state = torch.load(path, weights_only=True)
    state["classifier.1.weight"] = torch.zeros(4, 4)  # jcjohnson's numbering, not torchvision's
    torch.save(state, path)
    source = resolve_weights(str(path), 0)
    assert (source.network, source.preprocessing) == ("vgg16", "torchvision")
    assert torch.equal(load_features(source)[28].weight, features[28].weight)


def test_the_design_id_names_the_network_only_when_it_is_not_vgg19(tmp_path: Path):
    vgg19 = resolve_weights(str(write_keras_h5(seeded_features(0), tmp_path / "a.h5")), 0)
    vgg16 = resolve_weights(
        str(write_keras_h5(seeded_features(0, network="vgg16"), tmp_path / "b.h5", network="vgg16")), 0
    )
    assert vgg19.design_identity == f"{vgg19.identity}+caffe"  # VGG19 designs keep their ids
    assert vgg16.design_identity == f"{vgg16.identity}+caffe+vgg16"
    assert resolve_weights("random", 0).design_identity == "random:0+caffe"
    assert resolve_weights("random", 0, network="vgg16").design_identity == "random:0+caffe+vgg16"


def test_network_flag_must_match_the_file(tmp_path: Path):
    path = write_keras_h5(seeded_features(0, network="vgg16"), tmp_path / "v.h5", network="vgg16")
    with pytest.raises(WeightsError, match=r"hold vgg16 \(13 convolutions\), not the vgg19 that --network asks for"):
        resolve_weights(str(path), 0, network="vgg19")
    assert resolve_weights(str(path), 0, network="vgg16").network == "vgg16"


def test_a_keras_file_whose_data_is_not_the_network_it_declares_is_refused_before_reading(tmp_path: Path):
    """layer_names declares VGG16 (13 convolutions), so VGG16's shapes are expected: a
    VGG19-shaped block3_conv3 kernel is refused from its declared shape."""
    path = write_keras_h5(seeded_features(0, network="vgg16"), tmp_path / "v.h5", network="vgg16")
    with h5py.File(path, "a") as handle:
        del handle["block4_conv1/block4_conv1/kernel:0"]
        handle["block4_conv1"].create_dataset("block4_conv1/kernel:0", data=np.zeros((3, 3, 256, 64), np.float32))
    with pytest.raises(WeightsError, match=r"declares shape \(3, 3, 256, 64\), expected \(3, 3, 256, 512\)"):
        load_features(resolve_weights(str(path), 0))
    assert [n for n in keras_layers("vgg16") if "conv" in n][-1] == "block5_conv3"


def test_vgg16_known_files_come_after_the_papers_vgg19_files():
    files = known_files()
    assert [k.network for k in files] == ["vgg19"] * 3 + ["vgg16"] * 3
    assert files[0].name == "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"  # the default
    vgg16 = {k.name: k for k in files[3:]}
    keras = vgg16["vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"]
    assert (keras.md5, keras.preprocessing) == ("6d6bbae143d832006294945121d1f1fc", "caffe")
    assert vgg16["vgg16-00b39a1b.pth"].preprocessing == "caffe"
    assert vgg16["vgg16-397923af.pth"].preprocessing == "torchvision"
    assert networks() == ("vgg19", "vgg16")
    assert weights_module.fetch_file("vgg16") is keras


def test_a_vgg16_run_asking_for_a_vgg19_layer_is_refused_before_work(sample_catalog: Path, tmp_path: Path):
    path = write_keras_h5(seeded_features(0, network="vgg16"), tmp_path / "v.h5", network="vgg16")
    config = Config(weights=str(path), devices="cpu", size=64, style_layers=("conv1_1", "conv5_4"))
    with pytest.raises(Refused) as info:
        preflight(sample_catalog, tmp_path / "out", config)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--style-layers conv5_4 is not a layer of vgg16")
    assert message.endswith("accepted: " + ", ".join(layer_index("vgg16")))
    assert not (tmp_path / "out").exists()
    check_layers([config.replace(style_layers=("conv5_3",))], resolve_weights("random", 0, network="vgg16"))


def test_the_config_refuses_conv5_4_when_vgg16_is_named():
    with pytest.raises(ValueError, match="style_layers='conv5_4' is invalid; accepted: conv1_1, .*conv5_3$"):
        Config(network="vgg16", style_layers=("conv5_4",))
    Config(style_layers=("conv5_4",))  # the file decides: checked once it is loaded


def test_memory_and_flops_count_the_network_in_use():
    features = make_features("vgg16", until_index=layer_index("vgg16")["conv5_2"]).eval()
    shapes = layer_shapes(40, 56, layer_index("vgg16")["conv5_2"], "vgg16")
    x = torch.zeros(1, 3, 40, 56)
    for module, shape in zip(features, shapes, strict=True):
        x = module(x)
        assert tuple(x.shape[1:]) == (shape.channels, shape.height, shape.width)
    kwargs = {"content_layers": ("conv5_2",), "style_layers": Config().style_layers}
    assert (
        estimate_memory(128, 128, 128, 1, network="vgg16", **kwargs).peak
        < estimate_memory(128, 128, 128, 1, **kwargs).peak
    )
    assert len(conv_shapes(64, 64, "conv5_3", "vgg16")) == 13
    assert len(conv_shapes(64, 64, "conv5_2", "vgg16")) == 12 < len(conv_shapes(64, 64, "conv5_2"))
    assert step_flops(64, 64, **kwargs, network="vgg16").total < step_flops(64, 64, **kwargs).total


def test_the_engine_runs_on_vgg16():
    torch.manual_seed(0)
    weights = resolve_weights("random", 0, network="vgg16")
    config = Config(size=32, steps=2, weights="random", network="vgg16", loss_every=1)
    engine = StyleTransfer(config, weights, "cpu", precision="fp32")
    content, style = torch.rand(3, 32, 32), torch.rand(3, 32, 32)
    (result,) = engine.run([Pairing("p", "c", content, "s", style)])
    assert result.error is None and result.image.shape[-2:] == (32, 32)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in engine._features) == 13
    with pytest.raises(ValueError, match="layer 'conv5_4' is not in vgg16"):
        engine.extractor_for(config.replace(network="auto", style_layers=("conv5_4",)))
