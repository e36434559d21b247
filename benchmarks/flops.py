"""Floating-point work of one optimization step, computed from the network's layer shapes
(VGG19's, or VGG16's: the network in use, `network=`).

Counted per design and per step (one forward and one backward to the image):

- each convolution up to the deepest layer used: forward 2 * Cin * Cout * 9 * H * W
  (a multiply and an add per weight and output position, 3x3 kernels, "same" padding);
- its backward to the input (a transposed convolution) costs the same; there are no
  weight gradients (the network is frozen);
- each style layer's Gram matrix: forward 2 * C * C * H * W, and its backward to the
  features (dG @ F) the same again.

Pooling, ReLU, the losses and the optimizer are elementwise and left out, as are the
targets (one forward per content and style, cached) and the final loss evaluation:
the count is the useful work of the optimization loop, the same for every way of
running it, so achieved FLOP/s compare like with like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pipeline.engine.vgg import VGG19, layer_index, layout

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data
# sheets, matched against torch.cuda.get_device_name by substring, first match
# wins (so the specific names come before the general ones).
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H800", 989.0),
    ("B200", 2250.0),
    ("B100", 1750.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 6000 Ada", 364.0),
    ("A6000", 155.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
)


def peak_bf16_tflops(device_name: str) -> float | None:
    """The device's dense bf16 peak, or None (the CPU, or a GPU not in the table)."""
    for needle, peak in PEAK_BF16_TFLOPS:
        if needle.lower() in device_name.lower():
            return peak
    return None


@dataclass(frozen=True)
class ConvShape:
    index: int  # of the conv in `features`
    name: str  # convB_L
    cin: int
    cout: int
    height: int
    width: int

    @property
    def forward_flops(self) -> int:
        return 2 * self.cin * self.cout * 9 * self.height * self.width


def conv_shapes(height: int, width: int, deepest: str, network: str = VGG19) -> list[ConvShape]:
    """Every convolution of `network` up to and including `deepest` (a convB_L name), with
    the grid it runs on for an (height, width) image. Pools floor odd sides, as
    nn.MaxPool2d(2, 2) does."""
    last = layer_index(network)[deepest] - 1  # the conv before that ReLU
    shapes: list[ConvShape] = []
    index, block, conv, cin, h, w = 0, 1, 0, 3, height, width
    for item in layout(network):
        if index > last:
            break
        if item == "M":
            h, w = h // 2, w // 2
            index += 1
            block, conv = block + 1, 0
            continue
        conv += 1
        shapes.append(ConvShape(index, f"conv{block}_{conv}", cin, int(item), h, w))
        cin = int(item)
        index += 2
    return shapes


@dataclass(frozen=True)
class StepFlops:
    conv_forward: int
    conv_backward: int
    gram_forward: int
    gram_backward: int

    @property
    def total(self) -> int:
        return self.conv_forward + self.conv_backward + self.gram_forward + self.gram_backward

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def step_flops(
    height: int, width: int, content_layers: Sequence[str], style_layers: Sequence[str], network: str = VGG19
) -> StepFlops:
    """FLOPs of one optimization step of one design of (height, width) on `network`."""
    layers = tuple(content_layers) + tuple(style_layers)
    deepest = max(layers, key=layer_index(network).__getitem__)
    shapes = conv_shapes(height, width, deepest, network)
    forward = sum(s.forward_flops for s in shapes)
    by_name = {s.name: s for s in shapes}
    grams = sum(2 * by_name[name].cout ** 2 * by_name[name].height * by_name[name].width for name in style_layers)
    return StepFlops(conv_forward=forward, conv_backward=forward, gram_forward=grams, gram_backward=grams)
