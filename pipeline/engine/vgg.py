"""VGG `features` with torchvision's exact layouts, so its published checkpoints
(keys `features.N.weight`) load unchanged and Keras' HDF5 files map onto them.

VGG19 is the paper's network. Departure from the paper: VGG16 (configuration "D",
one convolution fewer in blocks 3 to 5) is accepted beside it, as Johnson et al.'s
perceptual losses and neural-style offer it; its activations differ, so the paper's
loss weights balance style and content differently on it.

The layout and the layer names (`convB_L`, the paper's) live torch-free in
pipeline/engine/layers.py; this module builds the network from them.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.engine.layers import (
    CAFFE,
    CONV_INDICES,
    LAYER_INDEX,
    MIN_SIDE,
    NETWORKS,
    PREPROCESSINGS,
    TORCHVISION,
    VGG16,
    VGG16_LAYOUT,
    VGG19,
    VGG19_LAYOUT,
    conv_indices,
    layer_index,
    layout,
)

__all__ = [
    "CAFFE",
    "CAFFE_MEAN_BGR",
    "CONV_INDICES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYER_INDEX",
    "MIN_SIDE",
    "NETWORKS",
    "PREPROCESSINGS",
    "TORCHVISION",
    "VGG16",
    "VGG16_LAYOUT",
    "VGG19",
    "VGG19_LAYOUT",
    "conv_indices",
    "layer_index",
    "FeatureExtractor",
    "make_features",
    "preprocess",
    "random_init_",
]

# The input each network was trained on. The paper's TensorFlow run fed Keras'
# VGG19 (the Caffe network) with `preprocess_input(image * 255)`: RGB to BGR,
# 0..255, minus the BGR mean. torchvision's retrained VGG19 takes RGB in 0..1
# normalised by the ImageNet mean and std.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess(image: torch.Tensor, preprocessing: str) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> the network's input."""
    if preprocessing == CAFFE:
        mean = torch.tensor(CAFFE_MEAN_BGR, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        return image.flip(1) * 255.0 - mean
    if preprocessing == TORCHVISION:
        mean = torch.tensor(IMAGENET_MEAN, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
        return (image - mean) / std
    raise ValueError(f"preprocessing={preprocessing!r} is invalid; accepted: {', '.join(PREPROCESSINGS)}")


def make_features(network: str = VGG19, until_index: int | None = None) -> nn.Sequential:
    """torchvision's `vgg19().features` (or `vgg16()`'s), optionally cut after `until_index`."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in layout(network):
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = item
    if until_index is not None:
        layers = layers[: until_index + 1]
    return nn.Sequential(*layers)


def random_init_(features: nn.Sequential, seed: int) -> None:
    """torchvision's own init for VGG convs, seeded, for tests and CPU demos."""
    gen = torch.Generator().manual_seed(seed)
    for module in features:
        if isinstance(module, nn.Conv2d):
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            with torch.no_grad():
                module.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
                module.bias.zero_()


class FeatureExtractor(nn.Module):
    """Runs the network up to the deepest requested layer, returning those activations."""

    def __init__(
        self,
        features: nn.Sequential,
        layers: tuple[str, ...],
        preprocessing: str = TORCHVISION,
        network: str = VGG19,
    ):
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))  # unique, order kept
        self.index = layer_index(network)
        if missing := [name for name in self.layers if name not in self.index]:
            raise ValueError(f"layer {missing[0]!r} is not in {network}; accepted: {', '.join(self.index)}")
        self.network = network
        self.taps = {self.index[name]: name for name in self.layers}
        deepest = max(self.taps)
        self.features = nn.Sequential(*list(features)[: deepest + 1])
        for module in self.features:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # tapped activations must survive the next layer
        self.features.requires_grad_(False).eval()
        # (x * scale - mean) / std on the channels in the network's order, as `preprocess` does.
        if preprocessing == CAFFE:
            bgr, scale, mean, std = True, 255.0, CAFFE_MEAN_BGR, (1.0, 1.0, 1.0)
        elif preprocessing == TORCHVISION:
            bgr, scale, mean, std = False, 1.0, IMAGENET_MEAN, IMAGENET_STD
        else:
            raise ValueError(f"preprocessing={preprocessing!r} is invalid; accepted: {', '.join(PREPROCESSINGS)}")
        self.preprocessing = preprocessing
        self.bgr = bgr
        self.input_scale = scale
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor, until: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """image: (N, 3, H, W) RGB in [0, 1]. `until`: only these layers, stopping at the deepest."""
        taps = self.taps if until is None else {self.index[name]: name for name in until}
        last = max(taps)
        if self.bgr:
            image = image.flip(1)  # RGB -> BGR
        x = (image * self.input_scale - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in taps:
                out[taps[index]] = x
            if index >= last:
                break
        return out
