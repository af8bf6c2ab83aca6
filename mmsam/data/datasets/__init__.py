"""The benchmark loaders, each registered once from its class (:mod:`.registry`).

Importing this package imports every loader module, which registers its classes; the
registry API (``get_dataset_entry``, ``list_datasets``, ``register_dataset``, ...) is
re-exported here. Synthetic generators live in :mod:`mmsam.data.synthetic` (which imports
the loaders' layout constants, never the reverse).
"""
from __future__ import annotations

from mmsam.data.datasets.binary_folder import BinaryFolderDataset
from mmsam.data.datasets.deliver import DeliverDataset
from mmsam.data.datasets.folder import FolderDataset
from mmsam.data.datasets.isprs import ISPRSDataset, PotsdamDataset, VaihingenDataset
from mmsam.data.datasets.mcubes import MCubeSDataset
from mmsam.data.datasets.mmhunan import MMHunanDataset
from mmsam.data.datasets.muses import MusesDataset, MusesSDKDataset
from mmsam.data.datasets.registry import (
    DATASET_PROTOCOL,
    DatasetEntry,
    check_dataset_options,
    create_dataset,
    entry_of,
    get_dataset_entry,
    list_datasets,
    register_dataset,
)
from mmsam.data.datasets.trans10k import Trans10KDataset, Trans10KV1Dataset, Trans10KV2Dataset

__all__ = [
    "BinaryFolderDataset", "FolderDataset",
    "DatasetEntry", "DeliverDataset", "ISPRSDataset", "MCubeSDataset", "MMHunanDataset",
    "MusesDataset", "MusesSDKDataset", "PotsdamDataset", "Trans10KDataset", "Trans10KV1Dataset",
    "Trans10KV2Dataset", "VaihingenDataset",
    "DATASET_PROTOCOL", "check_dataset_options", "create_dataset", "entry_of",
    "get_dataset_entry", "list_datasets", "register_dataset",
]
