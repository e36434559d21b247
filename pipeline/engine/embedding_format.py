"""What an embedding is, without torch: the method's name, its layers, its size and the bytes
the `embeddings` table stores (float16, little-endian). The readers (designs query, curate,
similar, the review desk) need these and nothing of the network; pipeline/engine/embedding.py
computes the vectors."""

from __future__ import annotations

import numpy as np

EMBEDDING_METHOD = "vgg-style-stats-v1"
EMBEDDING_LAYERS: tuple[str, ...] = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
EMBEDDING_DIM = 256
EMBEDDING_DTYPE = np.dtype("<f2")  # float16, little-endian: the bytes the table stores


def to_bytes(vector: np.ndarray) -> bytes:
    """One embedding as the table stores it: float16 little-endian."""
    return np.ascontiguousarray(vector, dtype=EMBEDDING_DTYPE).tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=EMBEDDING_DTYPE)
