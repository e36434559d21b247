"""`designs weights list` and `designs weights fetch` (flows/cli.py, pipeline/engine/weights.py):
the weights ahead of a run, into the cache --weights auto looks in. No internet here: the
published files are replaced by small generated ones served from 127.0.0.1 or a file URL."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipeline.engine.weights as weights
from flows.cli import EXIT_ENVIRONMENT, EXIT_OK, EXIT_REFUSED, main
from flows.progress import DownloadProgress
from pipeline.engine.vgg import CAFFE, TORCHVISION

PAYLOAD = weights.HDF5_SIGNATURE + bytes(range(256)) * 800  # an HDF5 signature, then 200 kB
OTHER = weights.HDF5_SIGNATURE + b"not the published bytes" * 100


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server of tmp_path/www; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "vgg19.h5").write_bytes(PAYLOAD)
    (root / "other.h5").write_bytes(OTHER)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def known(url: str, network: str = "vgg19", md5: str | None = None) -> weights.KnownFile:
    return weights.KnownFile(
        f"{network}_test_notop.h5",
        url,
        weights.KERAS_HDF5,
        CAFFE,
        md5=md5 or hashlib.md5(PAYLOAD).hexdigest(),
        network=network,
    )


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty Keras and torch hub caches under tmp_path, no $NST_VGG19_WEIGHTS; returns the Keras cache folder."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
    return tmp_path / "keras" / "models"


def use_known(monkeypatch: pytest.MonkeyPatch, *files: weights.KnownFile) -> None:
    monkeypatch.setattr(weights, "known_files", lambda: files)


def test_fetch_downloads_into_the_cache_that_weights_auto_finds(caches, served, monkeypatch, capsys):
    file = known(f"{served}/vgg19.h5")
    use_known(monkeypatch, file)
    assert main(["weights", "fetch", "--network", "vgg19"]) == EXIT_OK
    target = caches / file.name
    assert target.read_bytes() == PAYLOAD
    assert [p.name for p in caches.iterdir()] == [file.name]  # no temporary file left
    out, err = capsys.readouterr()
    assert out.strip() == f"{target}: downloaded, MD5 {file.md5} as published; --weights auto finds it"
    assert f"{file.name}: 0.2 of 0.2 MB (100%)" in err  # progress on stderr

    # --weights auto takes it, checked, without downloading anything.
    source = weights.resolve_weights("auto", 0, allow_download=False)
    assert (source.path, source.origin) == (str(target), "the Keras cache")

    # Again: nothing to download, even with the server gone.
    use_known(monkeypatch, known("http://127.0.0.1:9/gone.h5"))
    assert main(["weights", "fetch"]) == EXIT_OK
    assert "already there" in capsys.readouterr().out


def test_a_mismatching_download_leaves_nothing_behind(caches, served, monkeypatch, capsys):
    url = f"{served}/other.h5"
    use_known(monkeypatch, known(url))
    assert main(["weights", "fetch"]) == EXIT_ENVIRONMENT
    progress, err = capsys.readouterr().err.strip().rsplit("\n", 1)  # the download's progress, then one line
    assert progress.startswith(known(url).name) and err.startswith("designs weights fetch: ")
    assert f"{url} gave a file with MD5 {hashlib.md5(OTHER).hexdigest()}, not the published MD5" in err
    assert not caches.parent.exists()  # not even the cache folders it made

    # With the folder already there: no partial file, and a file already there stays as it was.
    caches.mkdir(parents=True)
    stale = caches / known(url).name
    stale.write_bytes(b"stale")
    assert main(["weights", "fetch"]) == EXIT_ENVIRONMENT
    assert [p.name for p in caches.iterdir()] == [stale.name] and stale.read_bytes() == b"stale"

    # A good download replaces it.
    use_known(monkeypatch, known(f"{served}/vgg19.h5"))
    assert main(["weights", "fetch"]) == EXIT_OK
    assert stale.read_bytes() == PAYLOAD and [p.name for p in caches.iterdir()] == [stale.name]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("where", ["no server", "not found"])
def test_a_failed_download_is_one_line_naming_the_url_exit_3(caches, served, monkeypatch, capsys, where):
    url = f"http://127.0.0.1:{closed_port()}/vgg19.h5" if where == "no server" else f"{served}/missing.h5"
    use_known(monkeypatch, known(url))
    assert main(["weights", "fetch"]) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"designs weights fetch: cannot download {url}: " in err
    assert ("HTTP 404" in err) == (where == "not found")
    assert not caches.parent.exists()


def test_a_mirror_url_is_checked_against_the_published_checksum(caches, tmp_path, monkeypatch, capsys):
    use_known(monkeypatch, known("https://example.invalid/vgg19.h5"))
    mirror = tmp_path / "mirror.h5"
    mirror.write_bytes(OTHER)
    assert main(["weights", "fetch", "--url", mirror.as_uri()]) == EXIT_ENVIRONMENT
    assert "not the published MD5" in capsys.readouterr().err and not caches.parent.exists()
    mirror.write_bytes(PAYLOAD)
    assert main(["weights", "fetch", "--url", mirror.as_uri()]) == EXIT_OK
    assert (caches / known("").name).read_bytes() == PAYLOAD


def test_networks_come_from_the_known_files(caches, served, monkeypatch, capsys):
    assert weights.networks() == ("vgg19", "vgg16")  # the shipped files, the paper's first
    assert weights.fetch_file("vgg16").name == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert main(["weights", "fetch", "--network", "vgg13"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert err == "designs weights fetch: --network 'vgg13' has no known weights file; accepted: vgg19, vgg16\n"
    assert not caches.parent.exists()

    # A known VGG16 file makes --network vgg16 fetch it.
    use_known(monkeypatch, known(f"{served}/other.h5"), known(f"{served}/vgg19.h5", network="vgg16"))
    assert weights.networks() == ("vgg19", "vgg16")
    assert main(["weights", "fetch", "--network", "vgg16"]) == EXIT_OK
    assert (caches / "vgg16_test_notop.h5").read_bytes() == PAYLOAD


def test_list_shows_every_place_weights_auto_looks_with_sizes_and_checksums(caches, tmp_path, monkeypatch, capsys):
    keras = known("https://example.invalid/k.h5")
    hub = weights.KnownFile(
        "vgg19-abcdef12.pth", "https://example.invalid/h.pth", weights.STATE_DICT, TORCHVISION, sha256_prefix="abcdef12"
    )
    use_known(monkeypatch, keras, hub)
    assert main(["weights", "list"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"${weights.WEIGHTS_ENV}: not set"
    assert lines[1] == f"Keras cache, {keras.name} (vgg19): {caches / keras.name}: not found"
    assert lines[2].startswith(f"torch hub cache, {hub.name} (vgg19): ") and lines[2].endswith(": not found")
    assert lines[3].startswith("--weights auto finds no file: a run downloads ")

    caches.mkdir(parents=True)
    (caches / keras.name).write_bytes(PAYLOAD)
    hub_file = weights.cache_path(hub)
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(OTHER)
    explicit = tmp_path / "mine.h5"
    explicit.write_bytes(OTHER)
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(explicit))
    assert main(["weights", "list"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    sha_other, sha_payload = hashlib.sha256(OTHER).hexdigest(), hashlib.sha256(PAYLOAD).hexdigest()
    assert lines[0] == (
        f"${weights.WEIGHTS_ENV}: {explicit}: {len(OTHER)} bytes, SHA-256 {sha_other}, "
        f"taken as it is (an explicit file is not checked)"
    )
    assert lines[1] == (
        f"Keras cache, {keras.name} (vgg19): {caches / keras.name}: {len(PAYLOAD)} bytes, SHA-256 {sha_payload}, "
        f"MD5 {keras.md5}, matches the published MD5 {keras.md5}"
    )
    assert lines[2].endswith(
        f"{hub_file}: {len(OTHER)} bytes, SHA-256 {sha_other}, does NOT match the published SHA-256 starting with abcdef12"
    )
    assert lines[3] == f"--weights auto takes {explicit}"

    monkeypatch.delenv(weights.WEIGHTS_ENV)
    (caches / keras.name).unlink()
    assert main(["weights", "list"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"--weights auto takes {hub_file} and refuses it: delete it and run `designs weights fetch`"
    )


def test_download_progress_is_rate_limited_with_a_last_line():
    now = [0.0]
    stream = io.StringIO()
    progress = DownloadProgress("w.h5", stream=stream, every=10.0, clock=lambda: now[0])
    for done in range(0, 100_000_001, 1_000_000):  # 100 MB at 8 MB/s
        progress(done, 100_000_000)
        now[0] += 0.125
    progress.close()
    assert stream.getvalue().splitlines() == [  # at 0 s, 10 s, and the end
        "w.h5: 0.0 of 100.0 MB (0%), 0.0 MB/s",
        "w.h5: 80.0 of 100.0 MB (80%), 8.0 MB/s",
        "w.h5: 100.0 of 100.0 MB (100%), 7.9 MB/s",
    ]

    terminal = Terminal()
    progress = DownloadProgress("w.h5", stream=terminal, clock=lambda: now[0])
    for done in range(0, 1001):  # a thousand calls within a second: four redraws, in place
        progress(done, 1000)
        now[0] += 0.001
    progress.close()
    assert terminal.getvalue().count("\r") <= 6 and terminal.getvalue().endswith("(100%), 0.0 MB/s\x1b[K\n")

    silent = io.StringIO()
    DownloadProgress("w.h5", stream=silent).close()  # never connected: nothing to say
    assert silent.getvalue() == ""
