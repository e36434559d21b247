"""The memory one optimization needs, estimated from the network's layer shapes (VGG19's,
or VGG16's for a VGG16 file) before a run.

Plain arithmetic on the shapes (no tensor is made), so a run that cannot fit is
refused before any work (pipeline/execution/preflight.py). What it counts:

- the optimization loop, per design of a batch: every activation autograd keeps for
  the backward pass up to the deepest layer used (each ReLU's output, each pool's
  output and a max pool's int64 indices, a repeat's padded copy of each conv's
  input), the fp32 copies the Gram and content losses make of their layers, the
  gradients of the two largest activations alive at once in the backward pass, the
  image with its gradient and the optimizer's state (L-BFGS: its 100 pairs of
  history), the content targets and the Grams;
- the style targets, one style at a time without gradients: the layers kept for
  their Grams, the two activations alive at each layer and the fp32 copy a Gram makes;
- the network's weights (fp32, and their bf16 copies under autocast).

The peak is the weights plus the larger of the loop (times the batch size) and the
style targets. Allocator slack and library workspaces are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.engine.layers import VGG19, layer_index, layout

FP32 = 4
INDEX = 8  # max pooling's indices are int64
LBFGS_HISTORY = 100  # torch.optim.LBFGS's history_size as the engine sets it


@dataclass(frozen=True)
class Layer:
    """One module of the network's `features` as run on an image: its output's shape."""

    index: int
    kind: str  # "conv", "relu" or "pool"
    channels: int
    height: int
    width: int
    in_channels: int  # the input's channels (a conv's padded copy, a pool's input)
    in_height: int
    in_width: int

    @property
    def elements(self) -> int:
        return self.channels * self.height * self.width


def layer_shapes(height: int, width: int, until_index: int, network: str = VGG19) -> list[Layer]:
    """The output shape of every module of the network's `features` up to `until_index`, for an
    input of (height, width): 3x3 convolutions keep the grid, 2x2 pools floor-halve it."""
    layers: list[Layer] = []
    channels, h, w = 3, height, width
    index = 0
    for item in layout(network):
        if index > until_index:
            break
        if item == "M":
            layers.append(Layer(index, "pool", channels, h // 2, w // 2, channels, h, w))
            h, w = h // 2, w // 2
            index += 1
        else:
            layers.append(Layer(index, "conv", item, h, w, channels, h, w))
            if index + 1 <= until_index:
                layers.append(Layer(index + 1, "relu", item, h, w, item, h, w))
            channels = item
            index += 2
    return [layer for layer in layers if layer.index <= until_index]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes: the network's weights, what autograd keeps for one design's backward pass
    (`saved`, part of `per_design`), one design's loop, the batch's loop and the style targets."""

    weights: int
    saved: int
    per_design: int
    batch: int
    loop: int
    style_targets: int

    @property
    def peak(self) -> int:
        return self.weights + max(self.loop, self.style_targets)


def estimate_memory(
    height: int,
    width: int,
    style_side: int,
    batch: int,
    *,
    content_layers: tuple[str, ...],
    style_layers: tuple[str, ...],
    precision: str = "fp32",
    repeat: str = "none",
    pooling: str = "max",
    optimizer: str = "adam",
    content: bool = True,
    network: str = VGG19,
) -> MemoryEstimate:
    """The memory of optimizing `batch` designs of (height, width) against styles whose
    longest side is `style_side` (a square style: the most pixels that side allows).
    `precision` 'bf16': the network's activations in 2 bytes (autocast), the rest fp32.
    `content` False: pattern mode, no content targets. `network`: whose layout (vgg19, vgg16)."""
    act = 2 if precision == "bf16" else FP32
    taps = tuple(dict.fromkeys(tuple(content_layers) + tuple(style_layers)))
    positions = layer_index(network)
    deepest = max(positions[name] for name in taps)
    tapped = {positions[name]: name for name in taps}
    layers = layer_shapes(height, width, deepest, network)

    # The loop: what autograd keeps, per design.
    pixels = 3 * height * width
    kept = 0
    largest = 0
    for layer in layers:
        out = layer.elements
        largest = max(largest, out)
        if layer.kind == "conv" and repeat != "none":
            kept += layer.in_channels * (layer.in_height + 2) * (layer.in_width + 2) * act  # the padded input
        elif layer.kind == "relu":
            kept += out * act
        elif layer.kind == "pool":
            kept += out * act + (out * INDEX if pooling == "max" else 0)
    kept += pixels * act  # the network's input, preprocessed (and cast)
    # The losses: each tapped layer read in fp32 (a copy when the network runs in bf16), each
    # Gram's difference to its target, the content difference, the TV term's two differences.
    held = 0  # what the loop holds besides what autograd keeps
    for index, name in tapped.items():
        layer = next(x for x in layers if x.index == index)
        if act != FP32:
            kept += layer.elements * FP32
        if name in style_layers:
            kept += layer.channels**2 * FP32
            held += 3 * layer.channels**2 * FP32  # the target, the Gram and its gradient
        if content and name in content_layers:
            kept += layer.elements * FP32
            held += layer.elements * FP32  # the target
    kept += 2 * pixels * FP32
    backward = 2 * largest * act  # a layer's gradient and its input's, alive together
    # The image, its gradient and Adam's two moments (or L-BFGS's history and directions).
    held += pixels * FP32 * 4
    if optimizer == "lbfgs":
        held += pixels * FP32 * (2 * LBFGS_HISTORY + 4)
    per_design = kept + backward + held

    # The style targets: one square style at a time, no gradients.
    style = layer_shapes(style_side, style_side, max(positions[name] for name in style_layers), network)
    style_taps = {positions[name] for name in style_layers}
    taps_held = sum(x.elements for x in style if x.index in style_taps) * act
    running = max(x.elements + x.in_channels * x.in_height * x.in_width for x in style) * act
    gram_copy = max(x.elements for x in style if x.index in style_taps) * FP32 if act != FP32 else 0
    style_targets = taps_held + running + gram_copy + 3 * style_side * style_side * FP32

    weights = 0
    for layer in layers:
        if layer.kind == "conv":
            weights += (layer.in_channels * layer.channels * 9 + layer.channels) * (FP32 + (2 if act != FP32 else 0))
    return MemoryEstimate(weights, kept, per_design, batch, per_design * batch, style_targets)


def gib(n: int | float) -> str:
    return f"{n / 2**30:.1f} GiB"
