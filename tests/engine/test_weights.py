"""pipeline.engine.weights: finding, verifying and loading VGG19 weights, with generated
files in the published layouts (Keras' HDF5, torchvision's keys; no real weights)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn
from weight_files import seeded_features, write_keras_h5, write_state_dict

import pipeline.engine.weights as weights_mod
from pipeline.engine.vgg import CONV_INDICES, LAYER_INDEX, FeatureExtractor, make_features
from pipeline.engine.weights import (
    CAFFE_PTH,
    KERAS_FILE,
    TORCHVISION_PTH,
    WEIGHTS_ENV,
    WeightsError,
    cache_path,
    load_features,
    resolve_weights,
)
from pipeline.files import sha256_file

UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class NotATensor:
    """A custom object: unpickling it runs _record_unpickling, which weights_only=True must refuse."""

    def __reduce__(self):
        return (_record_unpickling, ("ran",))


def save_named(obj, folder: Path, stem: str = "vgg19") -> Path:
    """torch.save `obj`, then rename it to torch.hub's `<stem>-<sha256[:8]>.pth` convention."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "unnamed.pth"
    torch.save(obj, tmp)
    final = folder / f"{stem}-{sha256_file(tmp)[:8]}.pth"
    tmp.rename(final)
    return final


def vgg19_state_dict(seed: int = 0, prefix: str = "features.", classifier: bool = True) -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG19 state dict with seeded, well-scaled random conv weights,
    non-zero biases, and (tiny) classifier tensors that loading must drop."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in make_features().state_dict().items():
        if name.endswith("weight"):
            fan_in = tensor.shape[1] * tensor.shape[2] * tensor.shape[3]
            value = torch.randn(tensor.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        else:
            value = torch.randn(tensor.shape, generator=gen) * 0.1
        state[prefix + name] = value
    if classifier:
        for i in (0, 3, 6):
            state[f"classifier.{i}.weight"] = torch.randn(4, 5, generator=gen)
            state[f"classifier.{i}.bias"] = torch.randn(4, generator=gen)
    return state


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    state = vgg19_state_dict(seed=0)
    path = save_named(state, tmp_path_factory.mktemp("ckpt"))
    return path, state


@pytest.fixture
def small_checkpoint(tmp_path):
    """A correctly named small file, for resolution tests that never load it."""
    return save_named({"features.0.bias": torch.arange(64.0)}, tmp_path / "small")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No $NST_VGG19_WEIGHTS, empty Keras and torch hub caches, and a download URL that cannot connect."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(weights_mod, "DOWNLOAD_URL", f"http://127.0.0.1:9/{KERAS_FILE.name}")
    return home


def in_cache(known, data: bytes, monkeypatch, matching: bool = True) -> Path:
    """`data` under `known`'s name in its cache; `matching`: the published checksum is taken to be data's."""
    path = cache_path(known)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if matching:
        name = {KERAS_FILE.name: "KERAS_FILE", CAFFE_PTH.name: "CAFFE_PTH", TORCHVISION_PTH.name: "TORCHVISION_PTH"}[
            known.name
        ]
        patched = (
            dataclasses.replace(known, md5=hashlib.md5(data).hexdigest())
            if known.md5
            else dataclasses.replace(known, sha256_prefix=hashlib.sha256(data).hexdigest()[:8])
        )
        monkeypatch.setattr(weights_mod, name, patched)
    return path


# --- resolution ---------------------------------------------------------------------


def test_random_spec_runs_at_the_caffe_scale(clean_env):
    source = resolve_weights("random", 7)
    assert (source.kind, source.path, source.identity) == ("random", None, "random:7")
    assert (source.format, source.preprocessing) == ("random", "caffe")
    assert source.label.startswith("random:7 ") and "caffe" in source.label
    assert resolve_weights("random", 7, preprocessing="torchvision").preprocessing == "torchvision"


def test_explicit_path_gives_file_identity(small_checkpoint, clean_env):
    source = resolve_weights(str(small_checkpoint), 0)
    digest = hashlib.sha256(small_checkpoint.read_bytes()).hexdigest()
    assert source.kind == "file"
    assert source.path == str(small_checkpoint)
    assert source.identity == f"sha256:{digest}"
    assert len(digest) == 64 and small_checkpoint.name == f"vgg19-{digest[:8]}.pth"
    assert sha256_file(small_checkpoint) == digest
    assert str(small_checkpoint) in source.label and source.identity in source.label
    assert (source.format, source.preprocessing) == ("state-dict", "torchvision")
    assert source.design_identity == f"sha256:{digest}+torchvision"


def test_file_without_hash_in_name_is_accepted(tmp_path, clean_env):
    path = tmp_path / "my_vgg.pth"
    torch.save({"x": torch.ones(2)}, path)
    assert resolve_weights(str(path), 0).identity == f"sha256:{sha256_file(path)}"


def test_an_explicit_path_is_trusted_whatever_its_name(tmp_path, clean_env):
    """--weights PATH is identified by its SHA-256; a published name does not make it the published file."""
    path = tmp_path / "vgg19-d01eb7cb.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    source = resolve_weights(str(path), 0)
    assert source.identity == f"sha256:{sha256_file(path)}"
    assert source.preprocessing == "torchvision"  # what the bytes are, not what the name says


def test_the_format_comes_from_the_bytes_not_the_name(tmp_path, clean_env):
    keras = write_keras_h5(seeded_features(0), tmp_path / "weights.pth")  # an HDF5 file named .pth
    pth = write_state_dict(seeded_features(0), tmp_path / "weights.h5")  # a state dict named .h5
    assert (resolve_weights(str(keras), 0).format, resolve_weights(str(keras), 0).preprocessing) == (
        "keras-hdf5",
        "caffe",
    )
    assert resolve_weights(str(pth), 0).format == "state-dict"


@pytest.mark.parametrize("data", [b"hello, this is not a checkpoint", b""])
def test_a_file_of_no_known_format_is_refused_saying_what_was_found(tmp_path, clean_env, data):
    path = tmp_path / "vgg19.h5"
    path.write_bytes(data)
    with pytest.raises(WeightsError) as info:
        resolve_weights(str(path), 0)
    message = str(info.value)
    assert str(path) in message
    assert ("empty file" if not data else repr(data[:8])) in message
    assert KERAS_FILE.name in message and CAFFE_PTH.name in message and TORCHVISION_PTH.name in message


def test_preprocessing_can_be_given_for_an_unpublished_state_dict(tmp_path, clean_env):
    path = write_state_dict(seeded_features(0), tmp_path / "caffe_conversion.pth")
    assert resolve_weights(str(path), 0).preprocessing == "torchvision"
    source = resolve_weights(str(path), 0, preprocessing="caffe")
    assert source.preprocessing == "caffe" and source.design_identity.endswith("+caffe")
    with pytest.raises(WeightsError, match="preprocessing='bgr' is invalid; accepted: auto, caffe, torchvision"):
        resolve_weights(str(path), 0, preprocessing="bgr")


def test_the_caffe_conversion_is_known_by_its_hash():
    assert weights_mod._preprocessing_of("state-dict", "d01eb7cb" + "0" * 56) == "caffe"
    assert weights_mod._preprocessing_of("state-dict", "dcbb9e9d" + "0" * 56) == "torchvision"
    assert weights_mod._preprocessing_of("keras-hdf5", "0" * 64) == "caffe"


def test_missing_explicit_path_is_refused(tmp_path, clean_env):
    missing = tmp_path / "nope" / "vgg19-dcbb9e9d.pth"
    with pytest.raises(WeightsError, match="does not exist") as info:
        resolve_weights(str(missing), 0)
    assert str(missing) in str(info.value) and "--weights" in str(info.value)


@pytest.mark.parametrize("spec", ["auto", ""])
def test_env_var_used_for_auto(spec, small_checkpoint, clean_env, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(small_checkpoint))
    source = resolve_weights(spec, 0)
    assert source.kind == "file"
    assert source.path == str(small_checkpoint)
    assert source.identity == f"sha256:{sha256_file(small_checkpoint)}"


def test_env_var_to_missing_file_names_the_variable(tmp_path, clean_env, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError) as info:
        resolve_weights("auto", 0)
    assert f"${WEIGHTS_ENV}" in str(info.value)
    assert "missing.pth" in str(info.value)


def test_explicit_path_wins_over_env(small_checkpoint, tmp_path, clean_env, monkeypatch):
    other = save_named({"other": torch.zeros(3)}, tmp_path / "other")
    monkeypatch.setenv(WEIGHTS_ENV, str(other))
    assert resolve_weights(str(small_checkpoint), 0).path == str(small_checkpoint)
    assert resolve_weights("auto", 0).path == str(other)


def test_the_caches_prefer_the_papers_network(tmp_path, clean_env, monkeypatch):
    keras = write_keras_h5(seeded_features(0), tmp_path / "k.h5").read_bytes()
    state = write_state_dict(seeded_features(1), tmp_path / "s.pth").read_bytes()
    other = write_state_dict(seeded_features(2), tmp_path / "t.pth").read_bytes()
    torchvision = in_cache(TORCHVISION_PTH, other, monkeypatch)
    assert resolve_weights("auto", 0, allow_download=False).path == str(torchvision)
    caffe = in_cache(CAFFE_PTH, state, monkeypatch)
    source = resolve_weights("auto", 0, allow_download=False)
    assert (source.path, source.preprocessing, source.origin) == (str(caffe), "caffe", "the torch hub cache")
    assert caffe.parent == clean_env / "hub" / "checkpoints"
    in_cache(KERAS_FILE, keras, monkeypatch)
    source = resolve_weights("auto", 0, allow_download=False)
    assert (Path(source.path), source.format, source.preprocessing) == (cache_path(KERAS_FILE), "keras-hdf5", "caffe")
    assert cache_path(KERAS_FILE) == tmp_path / "keras_home" / "models" / KERAS_FILE.name
    assert source.origin == "the Keras cache"


def test_env_var_wins_over_the_caches(small_checkpoint, tmp_path, clean_env, monkeypatch):
    in_cache(TORCHVISION_PTH, small_checkpoint.read_bytes(), monkeypatch)
    other = save_named({"other": torch.zeros(3)}, tmp_path / "other")
    monkeypatch.setenv(WEIGHTS_ENV, str(other))
    assert resolve_weights("auto", 0).path == str(other)


@pytest.mark.parametrize("known", [KERAS_FILE, CAFFE_PTH, TORCHVISION_PTH], ids=lambda k: k.name)
def test_a_cached_file_with_a_wrong_checksum_is_refused(known, tmp_path, clean_env, monkeypatch):
    data = (write_keras_h5 if known is KERAS_FILE else write_state_dict)(
        seeded_features(0), tmp_path / "w"
    ).read_bytes()
    cached = in_cache(known, data, monkeypatch, matching=False)
    with pytest.raises(WeightsError) as info:
        resolve_weights("auto", 0, allow_download=False)
    message = str(info.value)
    assert str(cached) in message and known.url in message
    found = hashlib.md5(data).hexdigest() if known.md5 else hashlib.sha256(data).hexdigest()
    assert found in message and (known.md5 or known.sha256_prefix) in message


def test_refusals_before_the_network_is_known_do_not_call_it_vgg19(tmp_path, clean_env, monkeypatch):
    # Unreadable, missing, or a cached VGG16 file that fails its checksum: "VGG weights", whichever network.
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not weights at all")
    data = write_keras_h5(seeded_features(0), tmp_path / "w").read_bytes()
    in_cache(weights_mod.VGG16_KERAS_FILE, data, monkeypatch, matching=False)
    messages = []
    for spec in (str(garbage), str(tmp_path / "missing.h5"), "auto"):
        with pytest.raises(WeightsError) as info:
            resolve_weights(spec, 0, allow_download=False)
        messages.append(str(info.value))
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in messages[2]
    for message in messages:
        assert "VGG weights" in message and "VGG19" not in message, message


def test_offline_without_weights_lists_the_three_files_and_where_each_goes(clean_env):
    with pytest.raises(WeightsError) as info:
        resolve_weights("auto", 0)
    message = str(info.value)
    for known in (KERAS_FILE, CAFFE_PTH, TORCHVISION_PTH):
        assert known.name in message and known.url in message and str(cache_path(known)) in message
    assert message.index(KERAS_FILE.name) < message.index(CAFFE_PTH.name) < message.index(TORCHVISION_PTH.name)
    assert "--weights" in message and WEIGHTS_ENV in message
    assert "download failed" in message
    assert "--weights random" in message
    assert not cache_path(KERAS_FILE).parent.exists()  # no partial download, no empty cache folder left behind


def test_a_refused_download_leaves_no_keras_folder_in_home(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(weights_mod, "DOWNLOAD_URL", f"http://127.0.0.1:9/{KERAS_FILE.name}")
    assert cache_path(KERAS_FILE) == tmp_path / ".keras" / "models" / KERAS_FILE.name
    with pytest.raises(WeightsError, match="download failed"):
        resolve_weights("auto", 0)
    assert list(tmp_path.iterdir()) == []


def test_a_download_is_checked_against_the_published_md5(tmp_path, clean_env, monkeypatch):
    served = write_keras_h5(seeded_features(0), tmp_path / "served.h5")
    monkeypatch.setattr(weights_mod, "DOWNLOAD_URL", served.as_uri())
    with pytest.raises(WeightsError, match=f"not MD5 {KERAS_FILE.md5}"):
        resolve_weights("auto", 0)
    assert not cache_path(KERAS_FILE).parent.exists()
    monkeypatch.setattr(
        weights_mod, "KERAS_FILE", dataclasses.replace(KERAS_FILE, md5=hashlib.md5(served.read_bytes()).hexdigest())
    )
    source = resolve_weights("auto", 0)
    assert (Path(source.path), source.origin, source.format) == (cache_path(KERAS_FILE), "a download", "keras-hdf5")


def test_downloads_disabled(clean_env):
    with pytest.raises(WeightsError, match="downloads are disabled") as info:
        resolve_weights("auto", 0, allow_download=False)
    assert WEIGHTS_ENV in str(info.value) and "--weights" in str(info.value)


# --- loading ------------------------------------------------------------------------


def test_load_full_checkpoint_keeps_conv_weights_and_drops_classifier(full_checkpoint):
    path, state = full_checkpoint
    source = resolve_weights(str(path), 0)
    features = load_features(source)
    assert isinstance(features, nn.Sequential)
    assert len(features) == len(make_features())
    assert not any(isinstance(m, nn.Linear) for m in features.modules())
    loaded = features.state_dict()
    assert set(loaded) == {f"{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")}
    for i in CONV_INDICES:
        for p in ("weight", "bias"):
            assert torch.equal(loaded[f"{i}.{p}"], state[f"features.{i}.{p}"])


def test_load_until_index_keeps_only_the_needed_layers(full_checkpoint):
    path, state = full_checkpoint
    cut = LAYER_INDEX["conv2_1"]
    features = load_features(resolve_weights(str(path), 0), until_index=cut)
    assert len(features) == cut + 1
    assert torch.equal(features.state_dict()["5.weight"], state["features.5.weight"])


def test_feature_extractor_on_loaded_weights_gives_expected_shapes(full_checkpoint):
    path, _ = full_checkpoint
    features = load_features(resolve_weights(str(path), 0))
    extractor = FeatureExtractor(features, ("conv1_1", "conv3_1", "conv5_2"))
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = extractor(image)
    assert set(out) == {"conv1_1", "conv3_1", "conv5_2"}
    assert out["conv1_1"].shape == (1, 64, 32, 48)
    assert out["conv3_1"].shape == (1, 256, 8, 12)
    assert out["conv5_2"].shape == (1, 512, 2, 3)
    for value in out.values():
        assert torch.isfinite(value).all()
        assert (value >= 0).all()  # taken after the ReLU
    # conv1_1 is relu(conv(normalized image)) with the saved weights
    normalized = (image - extractor.mean) / extractor.std
    expected = torch.relu(torch.nn.functional.conv2d(normalized, features[0].weight, features[0].bias, padding=1))
    torch.testing.assert_close(out["conv1_1"], expected)


def test_bare_features_dict_loads(tmp_path):
    state = vgg19_state_dict(seed=1, prefix="", classifier=False)
    path = save_named(state, tmp_path)
    features = load_features(resolve_weights(str(path), 0))
    for i in CONV_INDICES:
        assert torch.equal(features.state_dict()[f"{i}.weight"], state[f"{i}.weight"])


def test_missing_conv_layer_is_refused_naming_the_key(tmp_path):
    state = vgg19_state_dict(seed=2)
    del state["features.10.weight"], state["features.10.bias"]
    path = save_named(state, tmp_path)
    with pytest.raises(WeightsError) as info:
        load_features(resolve_weights(str(path), 0))
    message = str(info.value)
    assert "2 tensor(s)" in message
    assert "features.10.weight" in message or "features.10.bias" in message
    assert str(path) in message


def test_wrong_shape_is_refused(tmp_path):
    state = {
        "0.weight": torch.zeros(64, 3, 5, 5),
        "0.bias": torch.zeros(64),
        "2.weight": torch.zeros(64, 64, 3, 3),
        "2.bias": torch.zeros(64),
    }
    path = save_named(state, tmp_path)
    with pytest.raises(WeightsError, match="do not fit"):
        load_features(resolve_weights(str(path), 0), until_index=LAYER_INDEX["conv1_2"])


def test_non_dict_checkpoint_is_refused(tmp_path):
    path = save_named([torch.ones(2)], tmp_path)
    with pytest.raises(WeightsError, match="hold a list, expected a state dict"):
        load_features(resolve_weights(str(path), 0))


def test_pickled_custom_object_is_refused(tmp_path):
    path = save_named({"features.0.weight": NotATensor()}, tmp_path)
    with pytest.raises(WeightsError, match="cannot load VGG weights"):
        load_features(resolve_weights(str(path), 0))


def test_pickled_custom_object_is_never_unpickled(tmp_path):
    # Whatever the exception type, weights_only=True must not run the pickled callable.
    path = save_named({"features.0.weight": NotATensor()}, tmp_path)
    UNPICKLED.clear()
    with pytest.raises(Exception):  # noqa: B017 (any type: what matters is that nothing ran)
        load_features(resolve_weights(str(path), 0))
    assert UNPICKLED == []
    # sanity: a plain (unsafe) load would run it
    torch.load(path, weights_only=False)
    assert UNPICKLED == ["ran"]


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"hello, this is not a checkpoint")
    with pytest.raises(WeightsError, match="neither a Keras HDF5 file"):
        load_features(resolve_weights(str(path), 0))


def test_truncated_checkpoint_is_refused(tmp_path):
    whole = tmp_path / "whole.pth"
    torch.save({"features.0.weight": torch.ones(64, 3, 3, 3)}, whole)
    data = whole.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cannot load VGG weights"):
        load_features(resolve_weights(str(path), 0))
