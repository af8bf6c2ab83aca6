"""MUSES (ECCV 2024) in the layout the SAM-style papers use, or with the SDK projections.

``layout="multimodal"`` (default; AnySeg/MAGIC-style ``muses/multimodal/`` root):
``<root>/{frame_camera,event_camera,lidar,radar}/<split>/<weather>/<tod>/<stem>_<folder>.png``,
pre-rendered images; each becomes 3 channels (grey repeated, alpha dropped), /255
(/65535 if 16-bit), and only the frame camera gets ImageNet mean/std.

``layout="sdk"`` (the official root after the SDK's ``project_sensors_to_rgb.py
--output_file_type .png``): the frame camera as above, LiDAR / radar / events from
``<root>/projected_to_rgb/<sensor>/<split>/<weather>/<tod>/<stem>_<sensor>.png`` (or CAFuser's
``<stem>_<sensor>_projected.png``), decoded as CAFuser does (uint16 png/150 - 100; cv2 channel
order) and normalised with CAFuser's per-modality statistics.

Labels (both layouts): ``<label_root>/<split>/<weather>/<tod>/<stem>_gt_labelTrainIds.png``,
Cityscapes trainIds 0..18, 255 = ignore (kept as ignore: AnySeg's 255 -> 0 is not copied).
``label_root`` defaults to ``<root>/gt_semantic`` (where AnySeg's path rewrite points), else
``<root>/../gt_semantic`` (a ``multimodal/`` folder inside the official root). The test split's
labels are withheld; without ``<label_root>/test`` its items carry all-255 labels.
Modality names: ``rgb`` (frame_camera), ``event`` (event_camera), ``lidar``, ``radar``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from mmsam.data.datasets.base import MultiModalDataset
from mmsam.data.datasets.common import check_label_ids, misplaced, read_id_image, visible_glob
from mmsam.data.datasets.registry import register_dataset
from mmsam.data.transforms import IGNORE_INDEX
from mmsam.errors import ConfigError, DataError

MUSES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
MUSES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
NUM_CLASSES = len(MUSES_CLASSES)
MUSES_SPLITS = ("train", "val", "test")
MUSES_WEATHERS = ("clear", "fog", "rain", "snow")
MUSES_TIMES = ("day", "night")
#: Valid ``conditions``: a weather, a time of day, or both joined as ``<weather>_<tod>``.
MUSES_CONDITIONS = MUSES_WEATHERS + MUSES_TIMES + tuple(
    f"{w}_{t}" for w in MUSES_WEATHERS for t in MUSES_TIMES)
MUSES_LAYOUTS = ("multimodal", "sdk")
CAMERA = "frame_camera"
#: modality -> sensor folder / file tag.
MUSES_FOLDERS: dict[str, str] = {
    "rgb": CAMERA, "event": "event_camera", "lidar": "lidar", "radar": "radar",
}
PROJECTED = "projected_to_rgb"
#: In the sdk layout these modalities read the SDK projections with these specs.
SDK_SPECS: dict[str, str] = {
    "event": "muses_event_projected", "lidar": "muses_lidar_projected",
    "radar": "muses_radar_projected",
}
LABEL_FOLDER = "gt_semantic"
LABEL_TAG = "gt_labelTrainIds"


@dataclass(frozen=True)
class MusesSample:
    """Where one scene's files are and under which conditions it was recorded."""

    id: str            # split/weather/tod/stem
    weather: str
    time_of_day: str
    files: dict[str, Path]  # modality (+ "camera", "label") -> path

    @property
    def condition(self) -> str:
        return f"{self.weather}_{self.time_of_day}"


def default_label_root(root: Union[str, Path]) -> Path:
    """``<root>/gt_semantic`` if present, else ``<root>/../gt_semantic`` if present, else the
    first."""
    root = Path(root)
    for cand in (root / LABEL_FOLDER, root.parent / LABEL_FOLDER):
        if cand.is_dir():
            return cand
    return root / LABEL_FOLDER


def read_label(path: Union[str, Path]) -> np.ndarray:
    """trainId PNG -> HxW int64 ids 0..18, 255 = ignore; DataError naming other ids."""
    return check_label_ids(read_id_image(path), NUM_CLASSES, path)


def _keep(s: MusesSample, conditions: tuple[str, ...]) -> bool:
    weathers = [c for c in conditions if c in MUSES_WEATHERS]
    times = [c for c in conditions if c in MUSES_TIMES]
    pairs = [c for c in conditions if "_" in c]
    if s.condition in pairs:
        return True
    if not weathers and not times:
        return False
    return (not weathers or s.weather in weathers) and (not times or s.time_of_day in times)


@register_dataset
class MusesDataset(MultiModalDataset):
    """MUSES; items follow ``docs/contracts.md`` (meta condition = ``<weather>_<tod>``).

    Args:
        root: the multimodal root (``muses/multimodal``) or, for ``layout="sdk"``, the
            official MUSES root.
        split: train, val or test (test labels are withheld: all-255 labels if absent).
        modalities: any of rgb, event, lidar, radar, in output order.
        conditions: weathers (clear, fog, rain, snow) and/or times of day (day, night), or
            pairs like ``fog_night``. Weathers and times combine with AND, names of one
            kind with OR; a pair is kept as it is.
        cases: MUSES has no sensor-failure cases; None or ["normal"].
        transform: joint transform on ``{"modalities": images, "label"}`` (before normalising).
        check: validate every file's existence and header size at construction.
        missing: modalities replaced by zeros with ``present`` False (not read at all).
        layout: "multimodal" (pre-rendered PNGs) or "sdk" (SDK projections).
        label_root: the ``gt_semantic`` folder (default: see :func:`default_label_root`).
    """

    registry_name = "muses"
    name = "MUSES"
    splits = MUSES_SPLITS
    provided_modalities = tuple(MUSES_FOLDERS)
    default_modalities = ("rgb", "event", "lidar")
    condition_names = MUSES_CONDITIONS
    cases_note = " (filter with conditions)"
    classes = MUSES_CLASSES
    palette = MUSES_PALETTE
    reference_key = "camera"
    reference_role = "the frame camera image"
    repr_name = "MusesDataset"  # MusesSDKDataset too (its layout field tells them apart)
    read_label = staticmethod(read_label)

    @classmethod
    def has_data(cls, root: Union[str, Path]) -> bool:
        """True if ``root`` holds MUSES frame-camera images."""
        return bool(visible_glob(root, f"{CAMERA}/*/*/*/*.png"))

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        modalities: Optional[Sequence[str]] = None,
        *,
        layout: str = "multimodal",
        label_root: Optional[Union[str, Path]] = None,
        **common: Any,
    ) -> None:
        if layout not in MUSES_LAYOUTS:
            raise ConfigError(f"unknown MUSES layout {layout!r}; valid: {', '.join(MUSES_LAYOUTS)}")
        self.layout = layout
        if layout == "sdk":
            self.spec_names = SDK_SPECS
        self.label_root = Path(label_root) if label_root is not None else \
            default_label_root(root)
        self.labelled = split != "test" or (self.label_root / split).is_dir()
        super().__init__(root, split, modalities, **common)

    # -- indexing ---------------------------------------------------------------------------
    def _index(self) -> list[MusesSample]:
        pattern = f"{CAMERA}/{self.split}/*/*/*.png"
        files = visible_glob(self.root, pattern)
        if not files:
            raise DataError(f"{self.root}: no MUSES frame-camera images match {pattern!r} "
                            f"(expected {self.root}/{CAMERA}/{self.split}/<weather>/<tod>/"
                            f"<stem>_{CAMERA}.png)")
        samples = [self._sample(f) for f in files]
        if self.conditions is not None:
            samples = [s for s in samples if _keep(s, self.conditions)]
        if not samples:
            raise DataError(f"{self.root}: {len(files)} images match {pattern!r} but none pass "
                            f"conditions={list(self.conditions or ())}")
        return samples

    def _sample(self, camera: Path) -> MusesSample:
        split, weather, tod, name = camera.relative_to(self.root / CAMERA).parts
        if weather not in MUSES_WEATHERS or tod not in MUSES_TIMES:
            raise DataError(f"{camera}: expected <weather>/<tod> folders with weather in "
                            f"{'/'.join(MUSES_WEATHERS)} and tod in {'/'.join(MUSES_TIMES)}, "
                            f"got {weather}/{tod}")
        suffix = f"_{CAMERA}.png"
        if not name.endswith(suffix) or len(name) == len(suffix):
            raise DataError(f"{camera}: file name lacks the '{suffix}' ending "
                            f"(expected <stem>{suffix})")
        stem = name[: -len(suffix)]
        rel = Path(split, weather, tod)
        files = {m: self._modality_path(m, rel, stem) for m in self.modalities}
        files["camera"] = camera
        files["label"] = self.label_root / rel / f"{stem}_{LABEL_TAG}.png"
        return MusesSample(f"{split}/{weather}/{tod}/{stem}", weather, tod, files)

    def _modality_path(self, m: str, rel: Path, stem: str) -> Path:
        folder = MUSES_FOLDERS[m]
        if self.layout == "sdk" and m in SDK_SPECS:
            base = self.root / PROJECTED / folder / rel
            sdk = base / f"{stem}_{folder}.png"
            cafuser = base / f"{stem}_{folder}_projected.png"
            return cafuser if not sdk.is_file() and cafuser.is_file() else sdk
        return self.root / folder / rel / f"{stem}_{folder}.png"

    # -- validation -------------------------------------------------------------------------
    def misplaced_files(self) -> list[Path]:
        """Frame-camera PNGs not at ``<split>/<weather>/<tod>/<file>`` (the glob skips them)."""
        return misplaced(self.root / CAMERA, 4, ".png", self.splits, split_at=0)

    def _needed(self, s: MusesSample) -> list[str]:
        return [k for k in super()._needed(s) if self.labelled or k != "label"]

    # -- reading ----------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        self._check_sample(s)
        images = {m: self.specs[m].load(s.files[m]) for m in self._to_read}
        hw = tuple(next(iter(images.values())).shape[-2:])
        if self.labelled:
            label = torch.from_numpy(read_label(s.files["label"]))
        else:
            label = torch.full(hw, IGNORE_INDEX, dtype=torch.int64)
        for m, img in images.items():
            self._match(s.files[m], img, label)
        return self._item(images, label, s.id, s.condition)

    def _repr_fields(self) -> dict[str, Any]:
        return {"root": str(self.root), "split": self.split, "layout": self.layout,
                "modalities": list(self.modalities)}


@register_dataset
class MusesSDKDataset(MusesDataset):
    """:class:`MusesDataset` with ``layout="sdk"`` (the official root + SDK projections)."""

    registry_name = "muses_sdk"

    def __init__(self, root: Union[str, Path], split: str = "train",
                 modalities: Optional[Sequence[str]] = None, *,
                 label_root: Optional[Union[str, Path]] = None, **common: Any) -> None:
        super().__init__(root, split, modalities, layout="sdk", label_root=label_root, **common)
