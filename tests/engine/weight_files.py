"""Weight files in the exact published layouts, made from seeded random weights:
Keras' `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5` (HDF5) and the
torchvision-layout state dict that `vgg19-d01eb7cb.pth` and `vgg19-dcbb9e9d.pth` use;
with network="vgg16", VGG16's (`vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`, ...)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline.engine.vgg import layer_index, make_features, random_init_

CONVS_PER_BLOCK = {"vgg19": (2, 2, 4, 4, 4), "vgg16": (2, 2, 3, 3, 3)}


def keras_layers(network: str = "vgg19") -> list[str]:
    """Keras' network without its top: the layers in order, pools and the input carry no weights."""
    return ["input_1"] + [
        name
        for block, convs in enumerate(CONVS_PER_BLOCK[network], start=1)
        for name in [f"block{block}_conv{c}" for c in range(1, convs + 1)] + [f"block{block}_pool"]
    ]


KERAS_LAYERS = keras_layers()


def seeded_features(seed: int = 0, scale: float = 1.0, network: str = "vgg19") -> torch.nn.Sequential:
    """The network's features with seeded random weights; biases seeded too, so a layout error shows.
    `scale` multiplies the first layer (the Caffe network sees inputs 255 times larger)."""
    features = make_features(network)
    random_init_(features, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in features:
            if isinstance(module, torch.nn.Conv2d):
                module.bias.normal_(0.0, 0.01, generator=gen)
        features[0].weight.mul_(scale)
    return features


def write_keras_h5(features: torch.nn.Sequential, path: Path, network: str = "vgg19") -> Path:
    """The Keras file's layout: root attribute `layer_names`, each layer group's `weight_names`
    (kernel, then bias) naming datasets `<layer>/kernel:0` of shape (3, 3, in, out)."""
    index = layer_index(network)
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = np.array([n.encode() for n in keras_layers(network)])
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.1.5"
        convs = {f"block{name[4]}_conv{name[6]}": index[name] - 1 for name in index}
        for layer in keras_layers(network):
            group = handle.create_group(layer)
            if layer not in convs:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            conv = features[convs[layer]]
            names = [f"{layer}/kernel:0".encode(), f"{layer}/bias:0".encode()]
            group.attrs["weight_names"] = np.array(names)
            group.create_dataset(names[0].decode(), data=conv.weight.detach().permute(2, 3, 1, 0).numpy())
            group.create_dataset(names[1].decode(), data=conv.bias.detach().numpy())
    return path


def write_state_dict(features: torch.nn.Sequential, path: Path, classifier: bool = True) -> Path:
    """torchvision's key layout: features.N.weight / features.N.bias (and a classifier, dropped on load)."""
    state = {f"features.{k}": v.clone() for k, v in features.state_dict().items()}
    if classifier:
        state["classifier.0.weight"] = torch.zeros(8, 8)
    torch.save(state, path)
    return path
