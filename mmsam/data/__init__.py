"""Data: modality registry, dataset loaders, joint transforms, synthetic sets, DataModule.

``MultiModalDataModule`` is imported lazily (it pulls in Lightning).
"""
from __future__ import annotations

from typing import Any

from mmsam.data.datasets import create_dataset, get_dataset_entry, list_datasets, register_dataset
from mmsam.data.modalities import (
    ModalitySpec,
    get_modality,
    list_modalities,
    read_image,
    register_modality,
    to_three_channels,
)

__all__ = [
    "ModalitySpec", "MultiModalDataModule", "create_dataset", "get_dataset_entry",
    "get_modality", "list_datasets", "list_modalities", "read_image", "register_dataset",
    "register_modality", "to_three_channels",
]


def __getattr__(name: str) -> Any:
    if name == "MultiModalDataModule":
        from mmsam.data.datamodule import MultiModalDataModule

        return MultiModalDataModule
    raise AttributeError(f"module 'mmsam.data' has no attribute {name!r}")
