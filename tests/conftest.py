import os
from pathlib import Path

import pytest

SHARED_ENV = "GAN_FEATURES_SHARED"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder (real CIFAR-10, Imagenette, the paper's weights), or skip."""
    value = os.environ.get(SHARED_ENV)
    if not value:
        pytest.skip(f"${SHARED_ENV} is not set: point it at the shared data folder to run this test")
    path = Path(value)
    if not (path / "data").is_dir():
        pytest.skip(f"${SHARED_ENV}={value} has no data/ folder")
    return path


@pytest.fixture(autouse=True, scope="session")
def quick_core_sample():
    """Commands run in-process sample the other processes' CPU use for their thread count
    (gan_features.threads); a hundredth of a second instead of a fifth keeps the many CLI cases quick."""
    from gan_features import threads

    threads.SAMPLE_SECONDS, before = 0.01, threads.SAMPLE_SECONDS
    yield
    threads.SAMPLE_SECONDS = before


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a module of small kernels: on 2 shared, busy cores, 2 OpenMP threads ran
    5-15x slower. Use with ``pytestmark = pytest.mark.usefixtures("single_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
