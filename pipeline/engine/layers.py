"""VGG19's layout and layer names, without torch: the config, the CLI's parser and the
memory estimate read them without loading the network's library.

Layers are named as in the paper: `convB_L` is the L-th convolution of block B,
taken after its ReLU (Keras' `blockB_convL`, which the paper's TensorFlow run
used, includes the activation); `poolB` is the pool that ends block B.
"""

from __future__ import annotations

# torchvision's configuration "E" (VGG19): channel counts, "M" = 2x2 max pool.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")

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


LAYER_INDEX: dict[str, int] = {k: v for k, v in layer_names().items() if k.startswith("conv")}
CONV_INDICES: tuple[int, ...] = tuple(i - 1 for i in LAYER_INDEX.values())
# Each pooling halves the grid; conv5_x sits after four pools.
MIN_SIDE = 16
