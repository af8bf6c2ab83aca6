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


# -- MCubeS and MUSES stand-ins (issue #8) ---------------------------------------------------
MCUBES_SIZE = 32
MCUBES_COUNTS = {"num_train": 6, "num_val": 3, "num_test": 4}
MUSES_SIZE = 32
MUSES_COUNTS = {"num_train": 8, "num_val": 8, "num_test": 4}


@pytest.fixture(scope="session")
def mcubes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic MCubeS set, ``multimodal_dataset`` layout (read-only)."""
    from mmsam.data.synthetic.mcubes import generate_mcubes

    root = tmp_path_factory.mktemp("mcubes") / "multimodal_dataset"
    generate_mcubes(root, size=MCUBES_SIZE, seed=0, progress=False, **MCUBES_COUNTS)
    return root


@pytest.fixture()
def mcubes_copy(mcubes_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic MCubeS set that a test may damage."""
    dst = tmp_path / "multimodal_dataset"
    shutil.copytree(mcubes_root, dst)
    return dst


@pytest.fixture(scope="session")
def muses_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic MUSES set (multimodal layout + SDK projections, read-only)."""
    from mmsam.data.synthetic.muses import generate_muses

    root = tmp_path_factory.mktemp("muses") / "multimodal"
    generate_muses(root, size=MUSES_SIZE, seed=0, progress=False, **MUSES_COUNTS)
    return root


@pytest.fixture()
def muses_copy(muses_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic MUSES set that a test may damage."""
    dst = tmp_path / "multimodal"
    shutil.copytree(muses_root, dst)
    return dst


@pytest.fixture(scope="session")
def mcubes_info() -> dict:
    """Parameters of ``mcubes_root``: image height and sample counts."""
    return {"size": MCUBES_SIZE, "counts": dict(MCUBES_COUNTS)}


@pytest.fixture(scope="session")
def muses_info() -> dict:
    """Parameters of ``muses_root``: image height and sample counts."""
    return {"size": MUSES_SIZE, "counts": dict(MUSES_COUNTS)}
