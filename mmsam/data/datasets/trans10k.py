"""Trans10K (transparent objects), the multi-class sets of the Conv-LoRA paper, in their official layouts.

Conv-LoRA evaluates multi-class segmentation on Trans10K-v1 (3 classes) and Trans10K-v2
(background + 11 categories) (Conv-LoRA paper). The layouts are the ones the
data sets' own loaders read (TransLab ``segmentron/data/dataloader/trans10k.py`` for v1, Trans2Seg
``segmentron/data/dataloader/transparent11.py`` for v2)::

    Trans10K/                              Trans10K_cls12/
      train/images/<id>.jpg                  train/images/<id>.jpg
      train/masks/<id>_mask.png              train/masks_12/<id>_mask.png
      validation/{easy,hard}/images/…        validation/images/…, validation/masks_12/…
      validation/{easy,hard}/masks/…         test/images/…,       test/masks_12/…
      test/{easy,hard}/{images,masks}/…

* **v1** masks are colour images: the mean of the first three channels is 0 (background),
  85 (things, drawn red) or 255 (stuff, drawn white); any other value is a DataError.
  Validation and test come in ``easy`` and ``hard`` halves, exposed as cases.
* **v2** masks are single-channel (palette or grey) PNGs holding the class index 0..11.

``split`` ``val`` reads the ``validation`` folder. A sample whose mask is missing is an error
(the official loaders skip it silently; a silently smaller set would change the metric).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from mmsam.data.datasets.base import ImageMaskSample, SingleImageDataset
from mmsam.data.datasets.common import check_label_ids, check_names, read_id_image, visible_glob
from mmsam.data.datasets.registry import register_dataset
from mmsam.data.readers import read_image
from mmsam.errors import ConfigError, DataError

TRANS10K_V1_CLASSES: tuple[str, ...] = ("background", "things", "stuff")
TRANS10K_V1_PALETTE: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (255, 0, 0), (255, 255, 255))
# Trans2Seg's class list ("Glass Bow" there is the glass bowl category)
TRANS10K_V2_CLASSES: tuple[str, ...] = (
    "background", "shelf", "jar_or_tank", "freezer", "window", "glass_door",
    "eyeglass", "cup", "floor_glass", "glass_bowl", "water_bottle", "storage_box",
)
TRANS10K_V2_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (120, 120, 70), (235, 255, 7), (6, 230, 230), (204, 255, 4), (120, 120, 120),
    (140, 140, 140), (255, 51, 7), (224, 5, 255), (204, 5, 255), (150, 5, 61), (4, 250, 7),
)
SPLITS = ("train", "val", "test")
_FOLDER = {"train": "train", "val": "validation", "test": "test"}
_V1_MEANS = {0.0: 0, 85.0: 1, 255.0: 2}


class Trans10KSample(ImageMaskSample):
    """id: ``<split folder>[/<case>]/<image stem>``; case: "easy" / "hard" (v1 validation and
    test), else ""."""


def decode_v1_mask(raw: np.ndarray, path: Union[str, Path] = "<mask>") -> np.ndarray:
    """A v1 colour mask (HxWx3/4, or HxW grey) -> HxW int64 ids 0 background, 1 things, 2 stuff."""
    mean = raw[..., :3].astype(np.float64).mean(-1) if raw.ndim == 3 else raw.astype(np.float64)
    out = np.full(mean.shape, -1, dtype=np.int64)
    for value, cls in _V1_MEANS.items():
        out[mean == value] = cls
    if (out < 0).any():
        bad = np.unique(mean[out < 0])[:8]
        raise DataError(f"{path}: Trans10K-v1 mask values (channel means) {bad.tolist()} are none of "
                        "0 (background), 85 (things, red) or 255 (stuff, white)")
    return out


def encode_v1_mask(ids: np.ndarray) -> np.ndarray:
    """HxW ids -> the v1 colour mask (HxWx3 uint8); the inverse of :func:`decode_v1_mask`."""
    return np.asarray(TRANS10K_V1_PALETTE, dtype=np.uint8)[ids]


class Trans10KDataset(SingleImageDataset):
    """Trans10K-v1 or -v2 in the official layout; items follow ``docs/contracts.md``.

    Args:
        root: the ``Trans10K`` (v1) or ``Trans10K_cls12`` (v2) folder.
        version: 1 or 2 (default: the class's; :class:`Trans10KV1Dataset` /
            :class:`Trans10KV2Dataset`, registered as ``trans10k_v1`` / ``trans10k_v2``, fix it).
        split: train, val (the ``validation`` folder) or test.
        modalities: ``["rgb"]``, the only one.
        conditions: not applicable (must be ``None``).
        cases: v1 validation/test only: ``["easy"]``, ``["hard"]`` or both (default).
        transform: joint transform on ``{"modalities": [0,1] images, "label"}``.
        check: validate every file's existence and header at construction.
        missing: must be empty.
    """

    name = "Trans10K"
    splits = SPLITS
    unknown_split = "unknown split {split!r}; valid: {valid}"
    default_modalities = ("rgb",)
    version: int = 2

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        modalities: Optional[Sequence[str]] = None,
        *,
        version: Optional[int] = None,
        **common: Any,
    ) -> None:
        if version is None:
            version = type(self).version
        if version not in (1, 2):
            raise ConfigError(f"Trans10K version must be 1 or 2, got {version}")
        if self.registry_name and version != type(self).version:
            raise ConfigError(f"{self.registry_name} is Trans10K-v{type(self).version}; got "
                              f"version={version} (use trans10k_v{version})")
        self.version = version
        self.classes = TRANS10K_V1_CLASSES if version == 1 else TRANS10K_V2_CLASSES
        self.palette = TRANS10K_V1_PALETTE if version == 1 else TRANS10K_V2_PALETTE
        super().__init__(root, split, modalities, **common)

    def _check_cases(self, cases: Optional[Sequence[str]]) -> tuple[str, ...]:
        has_cases = self.version == 1 and self.split != "train"
        return check_names(cases, ("easy", "hard") if has_cases else (), "cases") or (
            ("easy", "hard") if has_cases else ("",)
        )

    def _folders(self) -> list[tuple[str, Path, Path]]:
        base = self.root / _FOLDER[self.split]
        masks = "masks" if self.version == 1 else "masks_12"
        return [(case, base / case / "images", base / case / masks) for case in self.cases]

    def _index(self) -> list[Trans10KSample]:
        samples = []
        for case, images, masks in self._folders():
            if not images.is_dir():
                raise DataError(f"{images}: missing Trans10K-v{self.version} image folder for split {self.split!r}")
            for image in visible_glob(images, "*.jpg"):
                sid = "/".join(p for p in (_FOLDER[self.split], case, image.stem) if p)
                samples.append(Trans10KSample(sid, case, image, masks / f"{image.stem}_mask.png"))
        if not samples:
            raise DataError(f"{self.root}: no .jpg images for split {self.split!r} in {[str(f[1]) for f in self._folders()]}")
        return samples

    @classmethod
    def has_data(cls, root: Union[str, Path]) -> bool:
        """True if ``root`` holds training images."""
        return bool(visible_glob(root, "train/images/*.jpg"))

    def read_label(self, path: Union[str, Path]) -> np.ndarray:
        """A mask -> HxW int64 class ids (v1: colour means, v2: indices); DataError naming it."""
        if self.version == 1:
            return decode_v1_mask(read_image(path), path)
        return check_label_ids(read_id_image(path), len(self.classes), path)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        image = self.spec.load(s.image)
        label = torch.from_numpy(self.read_label(s.label))
        if tuple(label.shape) != tuple(image.shape[-2:]):
            raise DataError(f"{s.label}: mask is {tuple(label.shape)} (HxW) but its image {s.image} is {tuple(image.shape[-2:])}")
        return self._item({"rgb": image}, label, s.id, "", s.case)

    def _repr_fields(self) -> dict[str, Any]:
        return {"root": str(self.root), "version": self.version, "split": self.split}


@register_dataset
class Trans10KV1Dataset(Trans10KDataset):
    """Trans10K-v1 (3 classes, easy / hard cases)."""

    registry_name = "trans10k_v1"
    version = 1
    repr_name = "Trans10KDataset"
    classes = TRANS10K_V1_CLASSES
    palette = TRANS10K_V1_PALETTE


@register_dataset
class Trans10KV2Dataset(Trans10KDataset):
    """Trans10K-v2 (background + 11 categories)."""

    registry_name = "trans10k_v2"
    version = 2
    repr_name = "Trans10KDataset"
    classes = TRANS10K_V2_CLASSES
    palette = TRANS10K_V2_PALETTE
