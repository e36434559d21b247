"""The engine against the TensorFlow tutorial the paper ran, on the same Keras
HDF5 weights (generated in the published layout) and the same images.

Optional: skipped unless `tensorflow` is importable (CI does not install it;
`pip install tensorflow-cpu==2.21.0` beside the project's environment runs it).
The tutorial's code below is its own, unchanged but for loading the weights
from a file instead of downloading them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from weight_files import seeded_features, write_keras_h5

from pipeline.config import Config
from pipeline.engine.transfer import Pairing, StyleTransfer
from pipeline.engine.weights import resolve_weights

tf = pytest.importorskip("tensorflow")

SIZE = 96
CONTENT_LAYERS = ["block5_conv2"]
STYLE_LAYERS = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]


def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    content = np.stack([0.5 + 0.4 * np.sin(6 * xx), 0.5 + 0.4 * np.cos(5 * yy), 0.5 + 0.3 * np.sin(4 * (xx + yy))], -1)
    style = np.clip(rng.random((SIZE, SIZE, 3)) * 0.6 + 0.2 * np.sin(20 * xx)[..., None], 0, 1)
    return content.astype(np.float32), style.astype(np.float32)


def tutorial(weights_path: str, content: np.ndarray, style: np.ndarray, steps: int) -> tuple[np.ndarray, list[float]]:
    """https://www.tensorflow.org/tutorials/generative/style_transfer, its loop as written."""

    def vgg_layers(layer_names):
        vgg = tf.keras.applications.VGG19(include_top=False, weights=weights_path)
        vgg.trainable = False
        outputs = [vgg.get_layer(name).output for name in layer_names]
        return tf.keras.Model([vgg.input], outputs)

    def gram_matrix(input_tensor):
        result = tf.linalg.einsum("bijc,bijd->bcd", input_tensor, input_tensor)
        input_shape = tf.shape(input_tensor)
        num_locations = tf.cast(input_shape[1] * input_shape[2], tf.float32)
        return result / (num_locations)

    class StyleContentModel(tf.keras.models.Model):
        def __init__(self, style_layers, content_layers):
            super().__init__()
            self.vgg = vgg_layers(style_layers + content_layers)
            self.style_layers = style_layers
            self.content_layers = content_layers
            self.num_style_layers = len(style_layers)
            self.vgg.trainable = False

        def call(self, inputs):
            inputs = inputs * 255.0
            preprocessed_input = tf.keras.applications.vgg19.preprocess_input(inputs)
            outputs = self.vgg(preprocessed_input)
            style_outputs, content_outputs = (outputs[: self.num_style_layers], outputs[self.num_style_layers :])
            style_outputs = [gram_matrix(style_output) for style_output in style_outputs]
            content_dict = dict(zip(self.content_layers, content_outputs))
            style_dict = dict(zip(self.style_layers, style_outputs))
            return {"content": content_dict, "style": style_dict}

    extractor = StyleContentModel(STYLE_LAYERS, CONTENT_LAYERS)
    style_targets = extractor(tf.constant(style[None]))["style"]
    content_targets = extractor(tf.constant(content[None]))["content"]
    image = tf.Variable(content[None])
    opt = tf.keras.optimizers.Adam(learning_rate=0.02, beta_1=0.99, epsilon=1e-1)
    style_weight, content_weight, total_variation_weight = 1e-2, 1e4, 30

    def style_content_loss(outputs):
        style_outputs, content_outputs = outputs["style"], outputs["content"]
        style_loss = tf.add_n([tf.reduce_mean((style_outputs[n] - style_targets[n]) ** 2) for n in style_outputs])
        style_loss *= style_weight / len(STYLE_LAYERS)
        content_loss = tf.add_n(
            [tf.reduce_mean((content_outputs[n] - content_targets[n]) ** 2) for n in content_outputs]
        )
        content_loss *= content_weight / len(CONTENT_LAYERS)
        return style_loss + content_loss

    losses = []

    @tf.function()
    def train_step(image):
        with tf.GradientTape() as tape:
            outputs = extractor(image)
            loss = style_content_loss(outputs)
            loss += total_variation_weight * tf.image.total_variation(image)
        grad = tape.gradient(loss, image)
        opt.apply_gradients([(grad, image)])
        image.assign(tf.clip_by_value(image, clip_value_min=0.0, clip_value_max=1.0))
        return loss

    for _ in range(steps):
        losses.append(float(train_step(image)[0]))
    return image.numpy()[0], losses


def engine(weights_path: str, content: np.ndarray, style: np.ndarray, steps: int):
    config = Config(size=SIZE, steps=steps, loss_every=1, precision="fp32")
    transfer = StyleTransfer(config, resolve_weights(weights_path, 0), "cpu")
    pairing = Pairing(
        "d", "c", torch.from_numpy(content).permute(2, 0, 1), "s", torch.from_numpy(style).permute(2, 0, 1)
    )
    (result,) = transfer.run([pairing])
    return result.image.permute(1, 2, 0).numpy(), result.loss_curves["total"][:-1]


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    # The Caffe network sees 0..255 inputs: a first layer scaled down keeps random activations in range.
    return str(write_keras_h5(seeded_features(0, scale=1 / 64), tmp_path_factory.mktemp("keras") / "vgg19.h5"))


def test_one_step_matches_the_tutorial(keras_file):
    content, style = images()
    theirs, their_losses = tutorial(keras_file, content, style, 1)
    ours, our_losses = engine(keras_file, content, style, 1)
    assert our_losses[0] == pytest.approx(their_losses[0], rel=1e-3)
    assert np.abs(ours - theirs).mean() * 255 < 0.3


def test_a_hundred_steps_move_the_design_as_far_as_the_tutorial(keras_file):
    """The loop is chaotic on random weights: compare how far each moves from the content, and the losses."""
    content, style = images()
    theirs, their_losses = tutorial(keras_file, content, style, 100)
    ours, our_losses = engine(keras_file, content, style, 100)
    their_move = np.abs(theirs - content).mean()
    our_move = np.abs(ours - content).mean()
    assert our_move == pytest.approx(their_move, rel=0.1)
    assert our_losses[-1] == pytest.approx(their_losses[-1], rel=0.1)
    assert our_losses[0] == pytest.approx(their_losses[0], rel=1e-3)
