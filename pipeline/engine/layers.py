"""The VGG networks' layouts and layer names, without torch: the config, the CLI's parser and the
memory estimate read them without loading the network's library.

VGG19 is the paper's network; VGG16 (the same blocks with one convolution fewer in
blocks 3 to 5) is a departure the engine accepts beside it. A weights file is
recognised as one or the other by its number of convolutions (16 or 13), never by
its name. Every layer the paper uses (conv1_1..conv5_1 for style, conv5_2 for
content) exists in both; VGG16 ends at conv5_3.

Layers are named as in the paper: `convB_L` is the L-th convolution of block B,
taken after its ReLU (Keras' `blockB_convL`, which the paper's TensorFlow run
used, includes the activation); `poolB` is the pool that ends block B.
"""

from __future__ import annotations

# torchvision's configurations "E" (VGG19) and "D" (VGG16): channel counts, "M" = 2x2 max pool.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG19 = "vgg19"
VGG16 = "vgg16"
# The paper's network first: the default wherever none is named.
LAYOUTS: dict[str, tuple[int | str, ...]] = {VGG19: VGG19_LAYOUT, VGG16: VGG16_LAYOUT}
NETWORKS = tuple(LAYOUTS)
# How a weights file is recognised: its number of convolutions.
NETWORK_BY_CONVS = {sum(1 for item in layout if item != "M"): name for name, layout in LAYOUTS.items()}

# The input each network was trained on (pipeline/engine/vgg.py applies them).
CAFFE = "caffe"
TORCHVISION = "torchvision"
PREPROCESSINGS = (CAFFE, TORCHVISION)


def layer_names(layout: tuple[int | str, ...] = VGG19_LAYOUT) -> dict[str, int]:
    """convB_L -> index of its ReLU in `features`; poolB -> index of the pool."""
    names: dict[str, int] = {}
    index, block, conv = 0, 1, 0
    for item in layout:
        if item == "M":
            names[f"pool{block}"] = index
            index += 1
            block, conv = block + 1, 0
        else:
            conv += 1
            names[f"conv{block}_{conv}"] = index + 1  # the ReLU after the conv
            index += 2
    return names


def layout(network: str) -> tuple[int | str, ...]:
    """The network's layout; ValueError naming the accepted networks otherwise."""
    if network not in LAYOUTS:
        raise ValueError(f"network={network!r} is invalid; accepted: {', '.join(NETWORKS)}")
    return LAYOUTS[network]


def layer_index(network: str = VGG19) -> dict[str, int]:
    """convB_L -> index of its ReLU in the network's `features`."""
    return {k: v for k, v in layer_names(layout(network)).items() if k.startswith("conv")}


def conv_indices(network: str = VGG19) -> tuple[int, ...]:
    """The index of each convolution in the network's `features`."""
    return tuple(i - 1 for i in layer_index(network).values())


# VGG19's, the paper's: the names any network may have (VGG16's are a subset).
LAYER_INDEX: dict[str, int] = layer_index(VGG19)
CONV_INDICES: tuple[int, ...] = conv_indices(VGG19)
# Each pooling halves the grid; conv5_x sits after four pools.
MIN_SIDE = 16
