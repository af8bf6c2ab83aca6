"""MMHunan (Hunan multimodal land cover) in the layout MFNet reads (docs/datasets.md).

``<root>`` (or ``<root>/Hunan``)::

    images_png/<id>.png   8-bit RGB (Sentinel-2 bands 4, 3, 2)      -> modality rgb, /255 only
    dsm_pngs/<id>.png     8-bit one band (SRTM-derived DEM)           -> modality dsm, min-max x3
    masks_png/<id>.tif    int8 class map 0..6, -1 = unlabelled        -> label, -1 -> 255

Classes (ids 0..6): cropland, forest, grassland, wetland, water, unused_land, built_up.
Splits: MFNet's fixed id lists (450 train / 50 test, :mod:`mmhunan_splits`); there is no
validation split, ``val`` is the test tiles, as MFNet validates on them. Items are whole
256 x 256 tiles (MFNet crops nothing). The DEM is min-max scaled per tile without MFNet's
``+1e-8`` (a flat tile gives zeros instead of zeros / 1e-8).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from mmsam.data.datasets.base import MultiModalDataset
from mmsam.data.datasets.common import check_label_ids, visible_glob
from mmsam.data.datasets.mmhunan_splits import MMHUNAN_TEST_IDS, MMHUNAN_TRAIN_IDS
from mmsam.data.datasets.registry import register_dataset
from mmsam.data.readers import read_raster
from mmsam.data.transforms import IGNORE_INDEX
from mmsam.errors import DataError

MMHUNAN_CLASSES: tuple[str, ...] = (
    "cropland", "forest", "grassland", "wetland", "water", "unused_land", "built_up",
)
MMHUNAN_PALETTE: tuple[tuple[int, int, int], ...] = (
    (196, 90, 17), (51, 129, 88), (177, 205, 61), (228, 84, 96), (91, 154, 214),
    (225, 174, 110), (239, 159, 2),
)
NUM_CLASSES = len(MMHUNAN_CLASSES)
MMHUNAN_SPLITS = ("train", "val", "test")
MMHUNAN_IDS = {"train": MMHUNAN_TRAIN_IDS, "test": MMHUNAN_TEST_IDS}
#: modality -> (folder, suffix)
MMHUNAN_FOLDERS: dict[str, tuple[str, str]] = {
    "rgb": ("images_png", ".png"), "dsm": ("dsm_pngs", ".png"),
}
LABEL_FOLDER = ("masks_png", ".tif")
SPEC_NAMES = {"rgb": "ortho_rgb"}


def _signed_tiff(path: Path) -> bool:
    """True if ``path`` is a TIFF whose SampleFormat tag says signed integers."""
    try:
        with Image.open(path) as img:
            fmt = getattr(img, "tag_v2", {}).get(339)
    except Exception:
        return False
    fmt = fmt[0] if isinstance(fmt, tuple) and fmt else fmt
    return fmt == 2


def read_label(path: Union[str, Path]) -> np.ndarray:
    """A mask TIFF -> HxW int64 ids 0..6, 255 = ignore (negative values, MFNet's -1).

    PIL decodes a signed 8-bit TIFF as unsigned bytes; the SampleFormat tag tells them apart,
    so -1 (stored 0xFF) becomes 255 either way. Other ids raise DataError naming the file.
    """
    p = Path(path)
    raw = read_raster(p)
    if raw.shape[2] != 1:
        raise DataError(f"{p}: label has {raw.shape[2]} bands; expected a one-band class map")
    ids = raw[:, :, 0]
    if not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"{p}: label must be an integer map, got {ids.dtype}")
    if ids.dtype == np.uint8 and _signed_tiff(p):
        ids = ids.view(np.int8)
    ids = ids.astype(np.int64)
    ids[ids < 0] = IGNORE_INDEX
    return check_label_ids(ids, NUM_CLASSES, p)


@dataclass(frozen=True)
class HunanSample:
    """Where one tile's files are."""

    id: str
    files: dict[str, Path]  # modality (+ "label") -> path


def resolve_root(root: Union[str, Path]) -> Path:
    """``root`` itself, or ``root/Hunan`` when only that holds ``images_png``."""
    root = Path(root)
    inner = root / "Hunan"
    if not (root / "images_png").is_dir() and (inner / "images_png").is_dir():
        return inner
    return root


@register_dataset
class MMHunanDataset(MultiModalDataset):
    """MMHunan in MFNet's layout; items follow ``docs/contracts.md``.

    Args:
        root: the ``Hunan`` folder (or its parent).
        split: train, val or test (val = the test tiles).
        modalities: any of rgb, dsm, in output order.
        conditions: none exist; must be None.
        cases: none exist; None or ["normal"].
        transform: joint transform on ``{"modalities": images, "label"}`` (before normalising).
        check: validate every file's existence and header size at construction.
        missing: modalities replaced by zeros with ``present`` False (not read at all).
    """

    registry_name = "mmhunan"
    name = "MMHunan"
    splits = MMHUNAN_SPLITS
    data_splits = ("train", "test")  # val = the test tiles
    unknown_split = MultiModalDataset.unknown_split + " (val = the test tiles)"
    provided_modalities = tuple(MMHUNAN_FOLDERS)
    default_modalities = ("rgb", "dsm")
    spec_names = SPEC_NAMES
    classes = MMHUNAN_CLASSES
    palette = MMHUNAN_PALETTE
    resolve_root = staticmethod(resolve_root)
    read_label = staticmethod(read_label)

    @classmethod
    def has_data(cls, root: Union[str, Path]) -> bool:
        """True if ``root`` (or ``root/Hunan``) holds optical PNGs."""
        return bool(visible_glob(resolve_root(root), "images_png/*.png"))

    def _index(self) -> list[HunanSample]:
        return [self.sample(i) for i in MMHUNAN_IDS["train" if self.split == "train" else "test"]]

    def sample(self, tile: str) -> HunanSample:
        """The file paths of tile ``tile``."""
        files = {m: self.root / MMHUNAN_FOLDERS[m][0] / f"{tile}{MMHUNAN_FOLDERS[m][1]}"
                 for m in self.modalities}
        files["label"] = self.root / LABEL_FOLDER[0] / f"{tile}{LABEL_FOLDER[1]}"
        return HunanSample(tile, files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        self._check_sample(s)
        label = torch.from_numpy(read_label(s.files["label"]))
        images = {m: self._match(s.files[m], self.specs[m].load(s.files[m]), label)
                  for m in self._to_read}
        return self._item(images, label, s.id)

