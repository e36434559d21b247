"""A design's embedding: a compact, style-sensitive vector of its image for near-duplicate
grouping and nearest-design search (the `embeddings` table, docs/ANALYSTS.md).

Method `vgg-style-stats-v1`, from the network's activations at the paper's five style layers
(conv1_1 ... conv5_1, in VGG19 and VGG16 alike; 64 + 128 + 256 + 512 + 512 channels):

1. per layer and channel, the mean and the standard deviation of the activations over the
   image's positions (the statistics style transfer matches, Huang and Belongie's AdaIN; a
   Gram matrix's diagonal and first moments, without its C x C size);
2. their square roots (activations are ReLU outputs, >= 0), so a few strong channels do not
   outweigh the rest;
3. per layer, the 2C values centred on their own mean and scaled to unit length: each layer
   counts once, and the common magnitude every image shares (which would leave all cosines
   near 1) is dropped. Measured on VGG16 (docs/ANALYSTS.md): different paintings 0.29 to 0.53
   apart in cosine distance, a quarter of a painting and the whole 0.08 to 0.18, a copy with
   2/255 noise 0.0000;
4. the 2,944 values projected to 256 by a fixed matrix of +-1/16 drawn from SHAKE-256 of the
   method's name (the same on every machine and library version: no random generator), then
   L2-normalised and stored as float16: 512 bytes.

The image is fed as it is (zero padding, max pooling), whatever repeat or pooling made it, so
the embedding depends on the pixels and the weights alone: the backfill (pipeline/execution/
embed.py) computes from a design's file what the engine computes at its final forward.
Embeddings are comparable within one method and one network (params.network). A change of any
step above is a new method name.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pipeline.engine.embedding_format import (  # noqa: F401 (to_bytes, from_bytes: the format beside the maths)
    EMBEDDING_DIM,
    EMBEDDING_DTYPE,
    EMBEDDING_LAYERS,
    EMBEDDING_METHOD,
    from_bytes,
    to_bytes,
)


@functools.cache
def projection(rows: int, dim: int = EMBEDDING_DIM, method: str = EMBEDDING_METHOD) -> torch.Tensor:
    """(rows, dim) of +-1/sqrt(dim), one bit each from SHAKE-256(method): reproducible anywhere."""
    bits = np.unpackbits(np.frombuffer(hashlib.shake_256(method.encode()).digest(rows * dim // 8 + 1), np.uint8))
    signs = bits[: rows * dim].astype(np.float32) * 2 - 1
    return torch.from_numpy(signs.reshape(rows, dim) / np.float32(np.sqrt(dim)))


def layer_statistics(features: Mapping[str, torch.Tensor], layers: Sequence[str] = EMBEDDING_LAYERS) -> torch.Tensor:
    """(N, sum 2C) fp32: steps 1 to 3 of the method for a batch's activations."""
    blocks = []
    for name in layers:
        f = features[name].float().flatten(2)  # (N, C, positions); channels-last reads the same
        stats = torch.cat([f.mean(2), f.std(2, unbiased=False)], dim=1).clamp_min(0).sqrt()
        stats = stats - stats.mean(dim=1, keepdim=True)
        blocks.append(stats / stats.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return torch.cat(blocks, dim=1)


def embed(features: Mapping[str, torch.Tensor]) -> np.ndarray:
    """(N, EMBEDDING_DIM) float16, unit length: the embeddings of a batch from its activations
    at EMBEDDING_LAYERS (any device, precision or layout)."""
    stats = layer_statistics(features).cpu()
    vectors = torch.nn.functional.normalize(stats @ projection(stats.shape[1]), dim=1)
    return vectors.numpy().astype(EMBEDDING_DTYPE)
