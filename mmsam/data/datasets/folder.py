"""Your own data, from YAML alone: folders of co-registered modalities and a label folder.

Two layouts (the first that fits a split is used)::

    root/<split>/<modality>/<id>.<ext>     root/<modality>/<id>.<ext>
    root/<split>/label/<id>.png            root/label/<id>.png
                                           root/<split>.txt   (one id per line)

Any number of modalities, each 1- or 3-channel (more: the first 3), 8- or 16-bit PNG / TIFF /
JPEG or ``.npy``; files of one sample are matched by name without extension (hidden files are
skipped). Labels hold class ids (0..K-1, 255 = ignore; palette PNGs give their indices). A
modality name the registry does not know (``thermal``) is registered; every modality of a folder
data set is read with the generic reader above (whatever a benchmark reads a same-named modality
with) and normalised with its ``modality_stats`` (from ``mmsam data stats``), or not at all —
per data set, so the built-in ``rgb`` keeps its ImageNet statistics elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from mmsam.data.datasets.base import MultiModalDataset
from mmsam.data.datasets.common import PathLike, Transform, read_id_image
from mmsam.data.datasets.registry import register_dataset
from mmsam.data.modalities import (
    UNIT_MEAN,
    UNIT_STD,
    ModalitySpec,
    _REGISTRY,
    register_modality,
    to_three_channels,
)
from mmsam.data.readers import read_npy, read_raster
from mmsam.data.transforms import IGNORE_INDEX
from mmsam.errors import ConfigError, DataError

#: File types a modality or label may be stored as.
EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".npy")

__all__ = ["FolderDataset", "folder_spec_name", "read_any", "register_folder_modalities"]


def read_any(path: PathLike) -> np.ndarray:
    """An image or ``.npy`` array as HxWxC, by extension (TIFF bands kept as stored)."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        return read_npy(p)
    return read_raster(p)


def folder_spec_name(name: str, stats: Optional[Mapping[str, Sequence[float]]]) -> str:
    """The registry name of a folder modality (generic reader) normalised with ``stats``."""
    if not stats:
        return f"{name}@folder"
    key = ",".join(f"{float(v):.6g}" for v in (*stats["mean"], *stats["std"]))
    return f"{name}@{key}"


def _three(values: Any, what: str) -> tuple[float, float, float]:
    vals = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ConfigError(f"dataset_options.modality_stats: {what} needs 1 or 3 values, got {values}")
    return vals[0], vals[1], vals[2]


def register_folder_modalities(modalities: Sequence[str], stats: Optional[Mapping[str, Any]] = None) -> dict[str, str]:
    """Register what a folder data set needs; returns modality name -> spec name."""
    stats = dict(stats or {})
    unknown = sorted(set(stats) - set(modalities))
    if unknown:
        raise ConfigError(f"dataset_options.modality_stats names {unknown}, which are not among the modalities {list(modalities)}")
    names: dict[str, str] = {}
    for m in modalities:
        if m not in _REGISTRY:
            register_modality(ModalitySpec(m, read_any, to_three_channels, UNIT_MEAN, UNIT_STD,
                                           "your own modality (folder data set): /255 or /65535, repeated x3 if 1 channel"))
        s = stats.get(m)
        if s is None:
            mean, std = UNIT_MEAN, UNIT_STD
            spec = folder_spec_name(m, None)
        else:
            if not isinstance(s, Mapping) or "mean" not in s or "std" not in s:
                raise ConfigError(f"dataset_options.modality_stats.{m} needs mean and std (run `mmsam data stats`)")
            mean, std = _three(s["mean"], f"{m}.mean"), _three(s["std"], f"{m}.std")
            if any(v <= 0 for v in std):
                raise ConfigError(f"dataset_options.modality_stats.{m}.std must be > 0, got {list(std)}")
            spec = folder_spec_name(m, {"mean": mean, "std": std})
        if spec not in _REGISTRY:
            register_modality(ModalitySpec(spec, read_any, to_three_channels, mean, std,
                                           f"{m} (folder data set) with its own mean / std"))
        names[m] = spec
    return names


@dataclass(frozen=True)
class FolderSample:
    id: str
    files: dict[str, Path]


@register_dataset
class FolderDataset(MultiModalDataset):
    """Folders of any co-registered modalities plus a label folder (see the module docstring).

    Args (besides the loaders' protocol):
        classes: class names, in id order (required).
        palette: an RGB colour per class (optional; for predictions and reports).
        label_folder: name of the label folder (``label``).
        folders: modality -> folder name where it differs from the modality's name.
        modality_stats: modality -> ``{mean: [...], std: [...]}`` in the [0, 1] value range
            (``mmsam data stats`` computes them); modalities without stats are not normalised.
        splits: the split names (``train``, ``val``, ``test``).
    """

    registry_name = "folder"
    name = "folder data set"
    reference_key = "label"
    default_modalities = ("rgb",)
    classes_from_options = True

    @staticmethod
    def prepare(modalities: Any, options: dict) -> dict[str, str]:
        """Register the modalities (and ``modality_stats``) of ``dataset_options`` before the
        data module reads them; returns modality -> registered spec name."""
        return register_folder_modalities(list(modalities or ("rgb",)), options.get("modality_stats"))

    @classmethod
    def has_data(cls, root: PathLike) -> bool:
        """True if ``root`` holds any visible entry."""
        r = Path(root)
        return r.is_dir() and any(p for p in r.iterdir() if not p.name.startswith("."))

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        modalities: Optional[Sequence[str]] = None,
        *,
        classes: Optional[Sequence[str]] = None,
        palette: Optional[Sequence[Sequence[int]]] = None,
        label_folder: str = "label",
        folders: Optional[Mapping[str, str]] = None,
        modality_stats: Optional[Mapping[str, Any]] = None,
        splits: Sequence[str] = ("train", "val", "test"),
        **common: Any,
    ) -> None:
        if not classes or isinstance(classes, str):
            raise ConfigError("the folder data set needs dataset_options.classes: the class names in id order")
        self.classes = tuple(str(c) for c in classes)
        if len(self.classes) > 255:
            raise ConfigError(f"dataset_options.classes: at most 255 classes (255 = ignore), got {len(self.classes)}")
        if palette is not None and (len(palette) != len(self.classes) or any(len(c) != 3 for c in palette)):
            raise ConfigError(f"dataset_options.palette needs one [R, G, B] per class ({len(self.classes)}), got {len(palette)}")
        self.palette = tuple(tuple(int(v) for v in c) for c in palette) if palette else ()
        self.splits = tuple(splits)
        self.label_folder = label_folder
        self.folders = dict(folders or {})
        modalities = self.default_modalities if modalities is None else modalities
        self.provided_modalities = tuple(modalities)
        self.spec_names = register_folder_modalities(modalities, modality_stats)
        super().__init__(root, split, modalities, **common)

    def _folder(self, key: str) -> str:
        return self.label_folder if key == "label" else self.folders.get(key, key)

    @staticmethod
    def _files(folder: Path) -> dict[str, Path]:
        """Stem -> file of the supported types in ``folder`` (hidden files skipped)."""
        out: dict[str, Path] = {}
        if not folder.is_dir():
            return out
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in EXTENSIONS:
                continue
            if p.stem in out:
                raise DataError(f"{p}: two files for sample {p.stem!r} in {folder} ({out[p.stem].name}, {p.name})")
            out[p.stem] = p
        return out

    def _index(self) -> list[FolderSample]:
        keys = [*self.modalities, "label"]
        split_dir, list_file = self.root / self.split, self.root / f"{self.split}.txt"
        if split_dir.is_dir():
            base, ids = split_dir, None
        elif list_file.is_file():
            base = self.root
            ids = [ln.strip() for ln in list_file.read_text(encoding="utf-8-sig").splitlines() if ln.strip() and not ln.startswith("#")]
        else:
            raise DataError(f"{self.root}: no {self.split}/ folder and no {self.split}.txt list: "
                            f"lay out <root>/{self.split}/<modality>/<id>.png, or list the ids in {self.split}.txt")
        found = {k: self._files(base / self._folder(k)) for k in keys if k not in self.missing}
        if ids is None:
            ids = sorted(found["label"])
            if not ids:
                raise DataError(f"{base / self.label_folder}: no label file ({', '.join(EXTENSIONS)})")
        samples = []
        for i in ids:
            files = {}
            for k in keys:
                if k in self.missing:
                    continue
                path = found[k].get(i)
                if path is None:
                    raise DataError(f"{base / self._folder(k)}: no file for sample {i!r} ({'label' if k == 'label' else 'modality ' + repr(k)})")
                files[k] = path
            samples.append(FolderSample(i, files))
        if not samples:
            raise DataError(f"{list_file}: lists no sample")
        return samples

    def read_label(self, path: Path) -> np.ndarray:
        """The label ids of ``path`` (DataError naming it for ids outside the classes)."""
        label = read_id_image(path)
        bad = np.setdiff1d(np.unique(label), np.r_[0 : len(self.classes), IGNORE_INDEX])
        if bad.size:
            raise DataError(f"{path}: label ids {bad.tolist()[:8]} outside 0..{len(self.classes) - 1} (255 = ignore)")
        return label

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        lab = torch.from_numpy(self.read_label(s.files["label"]))
        images = {m: self._match(s.files[m], self.specs[m].load(s.files[m]), lab) for m in self._to_read}
        return self._item(images, lab, s.id)

