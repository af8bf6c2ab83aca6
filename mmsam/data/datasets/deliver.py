"""DELIVER (CMNeXt, CVPR 2023) read from its official folder layout, unchanged.

``{img,hha,event,lidar,semantic}/<condition>/<split>/<scene>/<frame>_<tag>_front.png`` with
tags rgb/depth/event/lidar/semantic; the depth modality is HHA read from ``hha/``. Samples
are found by globbing ``img/*/<split>/*/*.png``; the other paths swap folder and tag.
Labels hold ids 1..25 in their first channel (0 and 255 = unlabeled) -> 0..24, 255 ignore.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from mmsam.data.datasets.base import MultiModalDataset
from mmsam.data.datasets.common import misplaced, read_id_image, visible_glob
from mmsam.data.datasets.registry import register_dataset
from mmsam.data.transforms import IGNORE_INDEX
from mmsam.errors import DataError

DELIVER_CLASSES: tuple[str, ...] = (
    "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine", "Road", "SideWalk",
    "Vegetation", "Cars", "Wall", "TrafficSign", "Sky", "Ground", "Bridge", "RailTrack",
    "GroundRail", "TrafficLight", "Static", "Dynamic", "Water", "Terrain", "TwoWheeler",
    "Bus", "Truck",
)
DELIVER_PALETTE: tuple[tuple[int, int, int], ...] = (
    (70, 70, 70), (100, 40, 40), (55, 90, 80), (220, 20, 60), (153, 153, 153),
    (157, 234, 50), (128, 64, 128), (244, 35, 232), (107, 142, 35), (0, 0, 142),
    (102, 102, 156), (220, 220, 0), (70, 130, 180), (81, 0, 81), (150, 100, 100),
    (230, 150, 140), (180, 165, 180), (250, 170, 30), (110, 190, 160), (170, 120, 50),
    (45, 60, 150), (145, 170, 100), (0, 0, 230), (0, 60, 100), (0, 0, 70),
)
DELIVER_SPLITS = ("train", "val", "test")
DELIVER_CONDITIONS = ("cloud", "fog", "night", "rain", "sun")
DELIVER_FAILURES = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
#: Valid ``cases``: the reference loader's (substring of the path) plus "normal" (no failure).
DELIVER_CASES = DELIVER_CONDITIONS + DELIVER_FAILURES + ("normal",)
#: modality -> (top-level folder, file tag)
DELIVER_FOLDERS: dict[str, tuple[str, str]] = {
    "rgb": ("img", "rgb"), "depth": ("hha", "depth"),
    "event": ("event", "event"), "lidar": ("lidar", "lidar"),
}
LABEL_FOLDER = ("semantic", "semantic")
NUM_CLASSES = len(DELIVER_CLASSES)
#: Modalities whose size may differ from RGB (resized with nearest, for ``eventlowres``).
RESIZABLE = ("event",)
#: Side of DELIVER's images and of the event images of ``*_eventlowres`` scenes.
IMAGE_SIDE, EVENT_LOWRES_SIDE = 1042, 512


def eventlowres_hw(hw: tuple[int, int]) -> tuple[int, int]:
    """The event size expected in ``*_eventlowres`` scenes for images of size ``hw``.

    512/1042 of each side, rounded down (512x512 for DELIVER's 1042x1042 images); the synthetic
    generator writes its low-resolution events at this size, a non-integer ratio as in the data.
    """
    return tuple(max(1, v * EVENT_LOWRES_SIDE // IMAGE_SIDE) for v in hw)  # type: ignore[return-value]


def resize_event(img: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Resize a CxHxW event image to ``hw`` as the reference loader does.

    The reference calls torchvision's ``resize(..., InterpolationMode.NEAREST)`` on a tensor,
    which is ``F.interpolate(mode="nearest")``: output pixel i takes source pixel
    floor(i * in / out) (not the pixel-centre rule of ``nearest-exact``). Nearest only picks
    values, so resizing after the /255 scaling gives the reference's values exactly.
    """
    if tuple(img.shape[-2:]) == tuple(hw):
        return img
    out = F.interpolate(img[None].float(), size=tuple(hw), mode="nearest")[0]
    return out.to(img.dtype)


@dataclass(frozen=True)
class DeliverSample:
    """Where one sample's files are and what it is."""

    id: str            # condition/split/scene/frame
    condition: str
    case: str          # failure suffix of the scene, or "normal"
    files: dict[str, Path]  # modality name (+ "label") -> path


def decode_label(raw: np.ndarray, path: Union[str, Path] = "<label>") -> np.ndarray:
    """First channel ids 1..25 -> 0..24; 0 and 255 -> 255. DataError on other ids."""
    ids = raw[..., 0] if raw.ndim == 3 else raw
    ids = ids.astype(np.int64)
    bad = np.setdiff1d(np.unique(ids), np.r_[0:NUM_CLASSES + 1, 255])
    if bad.size:
        raise DataError(f"{path}: label ids {bad.tolist()} outside 1..{NUM_CLASSES} "
                        f"(0 and 255 mean unlabeled)")
    out = ids - 1
    out[(ids == 0) | (ids == 255)] = IGNORE_INDEX
    return out


def read_label(path: Union[str, Path]) -> np.ndarray:
    """Read a DELIVER semantic PNG to an HxW int64 array of train ids (255 = ignore).

    The id is the first channel; a palette (mode "P") PNG gives its indices instead.
    """
    p = Path(path)
    return decode_label(read_id_image(p, first_channel=True), p)


@register_dataset
class DeliverDataset(MultiModalDataset):
    """DELIVER in its official layout; items follow ``docs/contracts.md``.

    Args:
        root: dataset root holding img/, hha/, event/, lidar/, semantic/.
        split: train, val or test.
        modalities: names from the modality registry that DELIVER provides, in output order.
        conditions: keep only these weather folders (cloud, fog, night, rain, sun).
        cases: keep samples whose relative path contains any of these (the reference
            loader's ``case``), or "normal" for scenes without a sensor-failure suffix.
        transform: joint transform on ``{"modalities": [0,1] images, "label"}``.
        check: validate every file's existence and header size at construction.
        missing: modalities replaced by zeros with ``present`` False (not read at all).
    """

    registry_name = "deliver"
    name = "DELIVER"
    splits = DELIVER_SPLITS
    provided_modalities = tuple(DELIVER_FOLDERS)
    default_modalities = ("rgb", "depth", "event", "lidar")
    condition_names = DELIVER_CONDITIONS
    case_names = DELIVER_CASES
    classes = DELIVER_CLASSES
    palette = DELIVER_PALETTE
    # every file is a .png, so check_file's header read is image_size's
    reference_key = "rgb_ref"
    reference_role = "the RGB image"
    resizable = RESIZABLE
    size_prefix = "image is "

    read_label = staticmethod(read_label)

    @classmethod
    def has_data(cls, root: Union[str, Path]) -> bool:
        """True if ``root`` holds DELIVER RGB images."""
        return bool(visible_glob(root, "img/*/*/*/*.png"))

    # -- indexing ---------------------------------------------------------------------------
    def _index(self) -> list[DeliverSample]:
        pattern = f"img/*/{self.split}/*/*.png"
        files = visible_glob(self.root, pattern)
        if not files:
            raise DataError(f"{self.root}: no DELIVER images match {pattern!r} "
                            f"(expected {self.root}/img/<condition>/{self.split}/<scene>/"
                            f"<frame>_rgb_front.png)")
        samples = [self._sample(f) for f in files]
        if self.conditions is not None:
            samples = [s for s in samples if s.condition in self.conditions]
        if self.cases is not None:
            samples = [s for s in samples if self._matches_case(s)]
        if not samples:
            raise DataError(f"{self.root}: {len(files)} images match {pattern!r} but none pass "
                            f"the filters conditions={self.conditions} cases={self.cases}")
        return samples

    def _matches_case(self, s: DeliverSample) -> bool:
        return any((s.case == "normal") if c == "normal" else (c in s.id) for c in self.cases)

    def _sample(self, rgb: Path) -> DeliverSample:
        condition, split, scene, name = rgb.relative_to(self.root / "img").parts
        pos = name.rfind("_rgb")
        if pos < 0:
            raise DataError(f"{rgb}: file name lacks the '_rgb' tag "
                            f"(expected <frame>_rgb_front.png)")
        frame, rest = name[:pos], name[pos + len("_rgb"):]
        rel = Path(condition, split, scene)

        def path(folder: str, tag: str) -> Path:
            return self.root / folder / rel / f"{frame}_{tag}{rest}"

        files = {m: path(*DELIVER_FOLDERS[m]) for m in self.modalities}
        files["rgb_ref"] = rgb
        files["label"] = path(*LABEL_FOLDER)
        case = next((c for c in DELIVER_FAILURES if c in scene), "normal")
        return DeliverSample(f"{condition}/{split}/{scene}/{frame}", condition, case, files)

    # -- validation -------------------------------------------------------------------------
    def accepted_sizes(self, key: str, hw: tuple[int, int]) -> tuple[tuple[int, int], ...]:
        """``mmsam data check``: an event image may also have the low-resolution size of the
        ``*_eventlowres`` scenes (:func:`eventlowres_hw`); any other mismatch is reported, though
        the loader, as the reference, resizes whatever event size it finds."""
        return (eventlowres_hw(hw),) if key == "event" else ()

    def misplaced_files(self) -> list[Path]:
        """PNGs under the read folders that are not at ``<condition>/<split>/<scene>/<file>``."""
        folders = ["img"] + [DELIVER_FOLDERS[m][0] for m in self.modalities if m != "rgb"]
        return [f for folder in folders + [LABEL_FOLDER[0]]
                for f in misplaced(self.root / folder, 4, ".png", DELIVER_SPLITS, split_at=1)]

    # -- reading ----------------------------------------------------------------------------
    @staticmethod
    def check_array(key: str, path: Path, array: np.ndarray) -> None:
        """DataError unless ``array`` (a decoded modality file) is 8-bit.

        The reference reads every file with torchvision's ``read_image``, which (in the
        torchvision it pins, 0.10) refuses PNGs of more than 8 bits, and then divides by 255; a
        16-bit file is therefore refused here rather than scaled some other way.
        """
        if array.dtype != np.uint8:
            bits = array.dtype.itemsize * 8
            raise DataError(f"{path}: {bits}-bit {array.dtype} image for {key}; DELIVER files are "
                            f"8-bit PNGs (the reference loader reads 8-bit only and divides by 255)")

    def _load(self, m: str, path: Path) -> torch.Tensor:
        """Modality ``m`` from ``path`` as a 3xHxW float tensor in [0, 1] (8-bit files only)."""
        spec = self.specs[m]
        arr = spec.reader(path)
        self.check_array(m, path, arr)
        three = spec.to_three(arr)
        return torch.from_numpy(np.ascontiguousarray(three.transpose(2, 0, 1)))

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        self._check_sample(s)
        label = torch.from_numpy(read_label(s.files["label"]))
        hw = tuple(label.shape)
        images = {}
        for m in self._to_read:
            img = self._load(m, s.files[m])
            if tuple(img.shape[-2:]) != hw:  # only RESIZABLE modalities get here
                img = resize_event(img, hw)
            images[m] = img
        return self._item(images, label, s.id, s.condition, s.case)
