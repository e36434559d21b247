"""Test set-up: Prefect state inside the project, one temporary Prefect server
for the whole session, the `slow` / `cuda` markers, a one-torch-thread fixture, and
fp32 for precision 'auto' on every CPU (`cpu_without_native_bf16`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import SAMPLE

from pipeline.engine.transfer import CPU_BF16_ENV

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# Prefect sets up its log handlers on import, binding them to the sys.stderr of
# the moment; importing here keeps them off a test's capsys stream, which closes.
import prefect  # noqa: E402,F401


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (real weights, long runs)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_slow = pytest.mark.skip(reason="slow: pass --run-slow (make test-slow)")
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session", autouse=True)
def cpu_without_native_bf16():
    """precision='auto' is fp32 in every test, whatever this CPU: bf16 autocast on a CPU with
    AVX512-BF16 or AMX moves numbers that tests compare. Session-wide, so module fixtures
    that run the engine see it too, and so do the processes a test starts (a child
    `designs generate`, Dask workers). Tests about bf16 ask for both kinds of CPU
    themselves (`native_bf16` in tests/engine/test_precision.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CPU_BF16_ENV, "0")
        yield


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (10-20 s to start) shared by every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def sample_catalog(tmp_path: Path) -> Path:
    """A private copy of the repo's sample catalog (data/sample, made by data/make_sample.py)."""
    target = tmp_path / "sample"
    shutil.copytree(SAMPLE, target)
    return target / "catalog.parquet"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (test_hostile_inputs.py, test_property.py ask for it
    with pytestmark): 32 px images gain nothing from threads, and on a busy 2-core machine
    OpenMP's spinning threads multiply the CPU time several times over."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
