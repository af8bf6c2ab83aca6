"""Checkpoint files in the official formats, written once per session from randomly initialised models.

No official weights can be downloaded here, so every file is a random model saved exactly as
Meta ships them: SAM as a flat state dict (``.pth``), SAM 2 as ``{"model": state_dict}`` (``.pt``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mmsam.backbones import create_backbone


@dataclass
class SavedModel:
    path: Path
    state_dict: dict[str, torch.Tensor]  # exactly what the file holds (unwrapped for SAM 2)


def _save_sam(name: str, path: Path, **kw) -> SavedModel:
    torch.manual_seed(0)
    sd = create_backbone(name, **kw).state_dict()
    torch.save(sd, path)
    return SavedModel(path, sd)


def _save_sam2(name: str, path: Path, **kw) -> SavedModel:
    torch.manual_seed(0)
    sd = create_backbone(name, with_memory=True, **kw).sam2_model.state_dict()
    torch.save({"model": sd}, path)
    return SavedModel(path, sd)


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def tiny_sam(ckpt_dir) -> SavedModel:
    return _save_sam("sam_vit_tiny", ckpt_dir / "sam_vit_tiny.pth")


@pytest.fixture(scope="session")
def micro_sam2(ckpt_dir) -> SavedModel:
    return _save_sam2("sam2_hiera_micro", ckpt_dir / "sam2_hiera_micro.pt")


@pytest.fixture(scope="session")
def vit_b(ckpt_dir) -> SavedModel:
    """A full-size random SAM ViT-B in the layout of ``sam_vit_b_01ec64.pth`` (375 MB, ~2.5 s)."""
    return _save_sam("sam_vit_b", ckpt_dir / "sam_vit_b_random.pth")


@pytest.fixture(scope="session")
def hiera_t(ckpt_dir) -> SavedModel:
    """A full-size random SAM 2.1 Hiera-T in the layout of ``sam2.1_hiera_tiny.pt``."""
    return _save_sam2("sam2.1_hiera_t", ckpt_dir / "sam2.1_hiera_t_random.pt")

