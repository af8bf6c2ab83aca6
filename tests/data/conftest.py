"""Shared fixtures: one small synthetic DELIVER set per test session, copied when mutated."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mmsam.data.synthetic import generate_deliver

SIZE = 48
COUNTS = {"num_train": 20, "num_val": 10, "num_test": 5}


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic DELIVER set (read-only: copy it before changing files)."""
    root = tmp_path_factory.mktemp("synth") / "deliver"
    generate_deliver(root, size=SIZE, seed=0, progress=False, **COUNTS)
    return root


@pytest.fixture(scope="session")
def synth_info() -> dict:
    """Parameters of ``synth_root``: image side and sample counts."""
    return {"size": SIZE, "counts": dict(COUNTS)}


@pytest.fixture()
def synth_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic set that a test may damage."""
    dst = tmp_path / "deliver"
    shutil.copytree(synth_root, dst)
    return dst
