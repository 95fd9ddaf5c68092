"""`gan-features demo`: the whole pipeline (train, three representations through one extraction path, two
protocols, the table) on the embedded digits."""
from __future__ import annotations

import pytest

from gan_features.demo import run_demo
from gan_features.store import FeatureStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


def test_demo_trains_extracts_three_representations_and_writes_the_table(tmp_path):
    table = run_demo(tmp_path / "demo", steps=5, progress=False)
    assert table["representation"].tolist() == ["trained D (5 steps)", "random D (same init)", "raw pixels"]
    assert table["dimension"].tolist() == [7168, 7168, 3 * 32 * 32]
    assert (table["test acc, all labels (%)"] > 80).all()  # digits separate well under every representation
    for tag in ("trained", "random", "pixels"):
        with FeatureStore(tmp_path / "demo" / f"{tag}-train.h5") as store:
            assert store.attrs["split"] == "train" and store.attrs["dataset"] == "digits"
    assert (tmp_path / "demo" / "demo.md").exists() and (tmp_path / "demo" / "demo.csv").exists()
