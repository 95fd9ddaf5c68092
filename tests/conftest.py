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
