"""A design's embedding: 256 float16 values (512 bytes), unit length, the same for the same
pixels on any machine, computed from the engine's final forward where it has the layers (no
extra pass), and style-sensitive: an invisible change stays near, another texture goes far."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from test_real_weights import REAL_WEIGHTS, painting, shapes

from pipeline.config import Config
from pipeline.engine.embedding import (
    EMBEDDING_DIM,
    EMBEDDING_LAYERS,
    EMBEDDING_METHOD,
    embed,
    from_bytes,
    projection,
    to_bytes,
)
from pipeline.engine.transfer import Pairing, StyleTransfer
from pipeline.engine.weights import resolve_weights

TINY = Config(weights="random", size=32, steps=2, loss_every=1, precision="fp32")


@pytest.fixture(scope="module")
def engine() -> StyleTransfer:
    return StyleTransfer(TINY, resolve_weights("random", 0), "cpu", precision="fp32")


def stripes(size: int, period: int) -> torch.Tensor:
    y = torch.arange(size, dtype=torch.float32).view(size, 1).expand(size, size)
    band = (torch.sin(2 * math.pi * (y + 0.5) / period) > 0).float()
    return torch.stack([0.8 * band + 0.1, 0.3 * band + 0.2, 0.1 + 0.6 * (1 - band)])


def checks(size: int, cell: int) -> torch.Tensor:
    i = torch.arange(size) // cell
    board = ((i.view(-1, 1) + i.view(1, -1)) % 2).float()
    return torch.stack([board, 0.5 * board + 0.25, 1 - board])


def distance(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def pattern(key: str, style: torch.Tensor) -> Pairing:
    return Pairing(key, None, None, key, style, out_size=(32, 32))


def test_a_designs_embedding_is_256_float16_values_of_unit_length_in_512_bytes(engine):
    (result,) = engine.run([pattern("s", stripes(32, 8))])
    vector = result.embedding
    assert vector is not None and vector.shape == (EMBEDDING_DIM,) and vector.dtype == np.float16
    assert len(to_bytes(vector)) == 512
    assert np.array_equal(from_bytes(to_bytes(vector)), vector)
    assert np.linalg.norm(vector.astype(np.float64)) == pytest.approx(1.0, abs=2e-3)


def test_the_same_design_gives_the_same_embedding(engine):
    (first,) = engine.run([pattern("s", stripes(32, 8))])
    (again,) = engine.run([pattern("s", stripes(32, 8))])
    assert np.array_equal(first.embedding, again.embedding)


def test_the_projection_is_fixed_by_the_method_name():
    """Drawn from SHAKE-256 of the name, not a random generator: the same everywhere. A change
    of the matrix changes this digest: the method then needs a new name."""
    rows = 2 * (64 + 128 + 256 + 512 + 512)
    matrix = projection(rows)
    assert matrix.shape == (rows, EMBEDDING_DIM)
    assert set(np.unique(matrix.numpy() * math.sqrt(EMBEDDING_DIM))) == {-1.0, 1.0}
    digest = hashlib.sha256((matrix.numpy() > 0).tobytes()).hexdigest()
    assert EMBEDDING_METHOD == "vgg-style-stats-v1"
    assert digest == "209034af435b8c60d66b483af3a83e583ec8b1ea3cc07b7b6a3c8a1db34f254f"
    assert not torch.equal(projection(rows, EMBEDDING_DIM, "another-method"), matrix)


def test_an_invisible_change_stays_near_and_another_texture_goes_far(engine):
    base = stripes(32, 8)
    noisy = (base + torch.rand(base.shape, generator=torch.Generator().manual_seed(1)) * 2 / 255).clamp(0, 1)
    vectors = engine.embed(torch.stack([base, noisy, checks(32, 4), stripes(32, 4).transpose(1, 2)]))
    near = distance(vectors[0], vectors[1])
    far = min(distance(vectors[0], vectors[2]), distance(vectors[0], vectors[3]))
    assert near * 20 < far, (near, far)


def test_the_final_forward_gives_the_embedding_without_another_pass(engine, monkeypatch):
    """With the default layers the final forward's activations are the embedding's: no extra
    pass, and the same vector as embedding the finished image on its own."""
    (result,) = engine.run([pattern("s", stripes(32, 8))])
    assert set(EMBEDDING_LAYERS) <= set(TINY.style_layers)
    on_its_own = engine.embed(result.image[None])[0]
    assert distance(result.embedding, on_its_own) < 1e-4

    def no_pass(images):
        raise AssertionError("an extra forward for the embedding")

    monkeypatch.setattr(engine, "embed", no_pass)
    (again,) = engine.run([pattern("s", stripes(32, 8))])
    assert np.array_equal(again.embedding, result.embedding)


@pytest.mark.parametrize("changes", [{"repeat": "block"}, {"pooling": "avg"}, {"style_layers": ("conv1_1", "conv2_1")}])
def test_a_config_that_reads_the_network_otherwise_embeds_the_image_as_it_is(engine, changes):
    """Repeat padding, average pooling or other layers: one more forward on the plain network,
    so the embedding depends on the pixels alone (what the backfill computes from the file)."""
    cfg = TINY.replace(**changes)
    (result,) = engine.run([pattern("s", stripes(32, 8))], config=cfg)
    assert distance(result.embedding, engine.embed(result.image[None])[0]) < 1e-4


def test_embed_works_from_activations_in_any_layout_and_precision(engine):
    image = stripes(32, 8)[None]
    feats = engine.features(image, TINY)
    plain = embed(feats)
    other = embed(
        {name: f.to(torch.bfloat16).contiguous(memory_format=torch.channels_last) for name, f in feats.items()}
    )
    assert distance(plain[0], other[0]) < 1e-3


def test_a_failed_design_has_no_embedding(engine):
    style = stripes(32, 8)
    style[:, 0, 0] = float("nan")  # its Grams, and so the design's loss, are not finite
    (result,) = engine.run([pattern("nan", style)])
    assert result.error is not None and result.embedding is None


# --- on real weights (../shared/weights' VGG16; skipped where absent) ---


@pytest.fixture(scope="module")
def real_weights():
    if not REAL_WEIGHTS.is_file():
        pytest.skip(f"real weights absent: {REAL_WEIGHTS} (../shared/weights beside the repository)")
    return resolve_weights(str(REAL_WEIGHTS), 0)


def test_on_real_weights_designs_that_differ_invisibly_are_near_and_other_styles_far(real_weights):
    """The same pairings at style weights 100 and 101 (48 px, 15 steps, in make test): each
    design's twin is nearer than any design of another style, by orders of magnitude, and
    designs of different styles are far apart (> 0.1 in cosine distance, where twins are < 0.001)."""
    size = 48
    styles = {"stripes": stripes(size, 8), "checks": checks(size, 8), "painting": painting("starry_night.jpg", size)}
    content = shapes(size)
    base = Config(
        weights="test", size=size, steps=15, learning_rate=0.1, adam_beta1=0.9, loss_every=15, precision="fp32"
    )
    engine = StyleTransfer(base, real_weights, "cpu", precision="fp32")
    vectors = {}
    for weight in (100.0, 101.0):
        pairings = [Pairing(name, "content", content, name, style) for name, style in styles.items()]
        for name, result in zip(styles, engine.run(pairings, config=base.replace(style_weight=weight))):
            assert result.error is None
            vectors[name, weight] = result.embedding
    twins = {name: distance(vectors[name, 100.0], vectors[name, 101.0]) for name in styles}
    others = {
        (a, b): min(distance(vectors[a, x], vectors[b, y]) for x in (100.0, 101.0) for y in (100.0, 101.0))
        for a in styles
        for b in styles
        if a < b
    }
    assert max(twins.values()) < 1e-3, twins
    assert min(others.values()) > 0.1, others
    assert max(twins.values()) * 100 < min(others.values()), (twins, others)


@pytest.mark.slow
def test_on_real_weights_painted_designs_group_by_style_not_by_content(real_weights):
    """96 px, 60 steps, two contents x three styles (two paintings and stripes) at style weights 100
    and 101: every design's nearest other design is its twin, and the designs of one style on the
    two contents are nearer each other than any two designs of different styles on one content."""
    size = 96
    styles = {
        "starry": painting("starry_night.jpg", size),
        "shipwreck": painting("shipwreck.jpg", size),
        "stripes": stripes(size, 12),
    }
    contents = {"shapes": shapes(size), "scream": painting("the_scream.jpg", size)}
    contents["scream"] = torch.nn.functional.interpolate(contents["scream"][None], size=(size, size))[0]
    base = Config(
        weights="test", size=size, steps=60, learning_rate=0.05, adam_beta1=0.9, loss_every=60, precision="fp32"
    )
    engine = StyleTransfer(base, real_weights, "cpu", precision="fp32")
    vectors = {}
    for weight in (100.0, 101.0):
        pairings = [
            Pairing(f"{c}-{s}", c, content, s, style) for c, content in contents.items() for s, style in styles.items()
        ]
        for p, result in zip(pairings, engine.run(pairings, config=base.replace(style_weight=weight))):
            vectors[p.key, weight] = result.embedding
    keys = list(vectors)
    for key in keys:
        nearest = min((k for k in keys if k != key), key=lambda k: distance(vectors[key], vectors[k]))
        assert nearest[0] == key[0], (key, nearest)
    same_style = max(distance(vectors[f"shapes-{s}", 100.0], vectors[f"scream-{s}", 100.0]) for s in styles)
    same_content = min(
        distance(vectors[f"{c}-{a}", 100.0], vectors[f"{c}-{b}", 100.0])
        for c in contents
        for a in styles
        for b in styles
        if a < b
    )
    assert same_style < same_content, (same_style, same_content)
