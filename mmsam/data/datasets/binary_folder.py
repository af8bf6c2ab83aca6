"""Binary segmentation sets as the Conv-LoRA code prepares them: image/mask pairs listed in CSVs.

The official ``prepare_semantic_segmentation_datasets.py`` unzips each task (polyp,
leaf_disease_segmentation, camo_sem_seg, isic2017, road_segmentation, SBU-shadow) to
``datasets/<task>/<task>/``, and ``run_semantic_segmentation.py`` reads from there
``train.csv``, ``val.csv`` and ``test.csv`` — or, for polyp and camouflage, one
``test_<subset>.csv`` per test set (``test_CVC-ClinicDB.csv``, ``test_Kvasir.csv``,
``test_CAMO.csv``) — each with an ``image`` and a ``label`` column of paths relative to that
folder (other columns, e.g. a pandas index, are ignored). ``root`` is that folder (or its parent
``datasets/<task>``).

Masks: the first channel; values in {0, 1} are used as they are, otherwise foreground is the
upper half of the range (>= 128 for 8-bit, as the official ``ToTensor`` + 0.5 reading).
Labels: 0 background, 1 foreground. A mask of another size than its image is resized to it
(nearest), as the official pipeline resizes both to the same square.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from mmsam.data.datasets.base import ImageMaskSample, SingleImageDataset
from mmsam.data.datasets.common import visible_glob
from mmsam.data.datasets.registry import register_dataset
from mmsam.data.readers import read_image
from mmsam.data.transforms import resize_nearest
from mmsam.errors import ConfigError, DataError

BINARY_CLASSES: tuple[str, ...] = ("background", "foreground")
BINARY_PALETTE: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (255, 255, 255))
BINARY_SPLITS = ("train", "val", "test")
#: the official tasks (folder names of ``prepare_semantic_segmentation_datasets.py``)
BINARY_TASKS = ("polyp", "leaf_disease_segmentation", "camo_sem_seg", "isic2017", "road_segmentation", "SBU-shadow")


class BinarySample(ImageMaskSample):
    """id: image path relative to the root, without suffix; case: the CSV's subset
    ("Kvasir" for test_Kvasir.csv, else the split name)."""


def decode_mask(raw: np.ndarray, path: Union[str, Path] = "<mask>") -> np.ndarray:
    """An HxW(xC) mask array -> HxW int64 with 0 background, 1 foreground."""
    v = raw[..., 0] if raw.ndim == 3 else raw
    if v.size and v.max() <= 1 and v.min() >= 0:
        return (v >= 0.5).astype(np.int64) if np.issubdtype(v.dtype, np.floating) else v.astype(np.int64)
    if v.dtype == np.uint8:
        return (v >= 128).astype(np.int64)
    if v.dtype == np.uint16:
        return (v >= 32768).astype(np.int64)
    if np.issubdtype(v.dtype, np.floating):
        return (v >= 0.5).astype(np.int64)
    raise DataError(f"{path}: unsupported mask pixel type {v.dtype}")


def read_label(path: Union[str, Path]) -> np.ndarray:
    """A mask file -> HxW int64 labels (0 background, 1 foreground)."""
    return decode_mask(read_image(path), path)


def binary_folder_has_data(root: Union[str, Path]) -> bool:
    try:
        return bool(visible_glob(_csv_dir(Path(root)), "*.csv"))
    except DataError:
        return False


def _csv_dir(root: Path) -> Path:
    if visible_glob(root, "*.csv"):
        return root
    nested = root / root.name  # datasets/<task> -> datasets/<task>/<task>, as the official script reads
    if visible_glob(nested, "*.csv"):
        return nested
    raise DataError(f"{root}: no split CSVs (train.csv, val.csv, test.csv or test_<subset>.csv) here or in {nested}")


@register_dataset
class BinaryFolderDataset(SingleImageDataset):
    """One Conv-LoRA binary task from its CSV lists; items follow ``docs/contracts.md``.

    Args:
        root: the folder holding the CSVs (``datasets/<task>/<task>``) or its parent.
        split: train, val or test (``test.csv``, else every ``test_<subset>.csv``).
        modalities: ``["rgb"]`` (the only one these sets have).
        conditions: not applicable (must be ``None``).
        cases: keep only these test subsets (``["Kvasir"]``…) or, for train/val, the split name.
        transform: joint transform on ``{"modalities": [0,1] images, "label"}``.
        check: validate every file's existence and header at construction.
        missing: must be empty (the one modality cannot be missing).
    """

    registry_name = "binary_folder"
    name = "binary folder sets"
    has = "have"
    splits = BINARY_SPLITS
    unknown_split = "unknown split {split!r}; valid: {valid}"
    classes = BINARY_CLASSES
    palette = BINARY_PALETTE
    default_modalities = ("rgb",)
    resizable = ("rgb",)  # image and mask may differ in size (the mask is resized to the image)

    read_label = staticmethod(read_label)

    @classmethod
    def has_data(cls, root: Union[str, Path]) -> bool:
        """True if ``root`` (or ``root/<its name>``) holds split CSVs."""
        return binary_folder_has_data(root)

    def _check_cases(self, cases: Optional[Sequence[str]]) -> Optional[list[str]]:
        # the valid names are the CSVs' subsets: checked by _index
        return None if cases is None else ([cases] if isinstance(cases, str) else list(cases))

    def _index(self) -> list[BinarySample]:
        folder = _csv_dir(self.root)
        files = [folder / f"{self.split}.csv"]
        if self.split == "test" and not files[0].is_file():
            files = visible_glob(folder, "test_*.csv")
        files = [f for f in files if f.is_file()]
        if not files:
            raise DataError(f"{folder}: no {self.split}.csv" + (" or test_<subset>.csv" if self.split == "test" else ""))
        samples = []
        for f in files:
            case = f.stem[len("test_"):] if f.stem.startswith("test_") else self.split
            samples += self._read_csv(f, folder, case)
        cases = self.cases
        if cases is not None:
            known = sorted({s.case for s in samples})
            unknown = [c for c in cases if c not in known]
            if unknown:
                raise ConfigError(f"unknown cases {unknown} for split {self.split!r}; this set has {known}")
            samples = [s for s in samples if s.case in cases]
        if not samples:
            raise DataError(f"{folder}: the {self.split} CSVs list no samples")
        return samples

    @staticmethod
    def _read_csv(path: Path, folder: Path, case: str) -> list[BinarySample]:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            if "image" not in cols or "label" not in cols:
                raise DataError(f"{path}: needs 'image' and 'label' columns, has {cols}")
            out = []
            for row in reader:
                image, label = folder / row["image"].strip(), folder / row["label"].strip()
                rel = image.relative_to(folder) if image.is_relative_to(folder) else Path(image.name)
                out.append(BinarySample(str(rel.with_suffix("")), case, image, label))
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        image = self.spec.load(s.image)
        label = torch.from_numpy(read_label(s.label))
        if tuple(label.shape) != tuple(image.shape[-2:]):
            label = resize_nearest(label, tuple(image.shape[-2:]))
        return self._item({"rgb": image}, label, s.id, "", s.case)

    def _repr_fields(self) -> dict[str, Any]:
        return {"root": str(self.root), "split": self.split}
