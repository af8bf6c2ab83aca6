"""MCubeS (MCubeSNet, CVPR 2022) as CMNeXt / MemorySAM load it, from its own layout unchanged.

``multimodal_dataset/{polL_color,polL_aolp_sin,polL_aolp_cos,polL_dolp,NIR_warped,
NIR_warped_mask,GT,SS}/<stem>.{png,npy}`` and ``list_folder/{train,val,test,all}.txt`` (one
stem per line; a line's first whitespace-separated token is the stem, as the reference reads
it). Modalities: ``rgb`` (polL_color; /255, /65535 if 16-bit; ImageNet mean/std), ``aolp``
([sin, cos, sin] of the two .npy), ``dolp`` ([d, d, d]) and ``nir`` (NIR_warped; /255 or
/65535, repeated x3). Every array loses its left 192 columns (1224 -> 1032 wide), as the
reference does. GT holds material ids 0..19, 255 = ignore.

Splits are named by their list files: ``train``, ``val``, ``test``, ``all``. The reference
(CMNeXt, MemorySAM) trains on ``train`` and evaluates on ``test.txt`` under the name "val";
here that evaluation split is ``split="test"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from mmsam.data.datasets.base import MultiModalDataset
from mmsam.data.datasets.common import check_label_ids, read_id_image
from mmsam.data.datasets.registry import register_dataset
from mmsam.data.readers import read_aolp, read_npy
from mmsam.errors import ConfigError, DataError

MCUBES_CLASSES: tuple[str, ...] = (
    "asphalt", "concrete", "metal", "road_marking", "fabric", "glass", "plaster", "plastic",
    "rubber", "sand", "gravel", "ceramic", "cobblestone", "brick", "grass", "wood", "leaf",
    "water", "human", "sky",
)
MCUBES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (44, 160, 44), (31, 119, 180), (255, 127, 14), (214, 39, 40), (140, 86, 75),
    (127, 127, 127), (188, 189, 34), (255, 152, 150), (23, 190, 207), (174, 199, 232),
    (196, 156, 148), (197, 176, 213), (247, 182, 210), (199, 199, 199), (219, 219, 141),
    (158, 218, 229), (57, 59, 121), (107, 110, 207), (156, 158, 222), (99, 121, 57),
)
NUM_CLASSES = len(MCUBES_CLASSES)
MCUBES_SPLITS = ("train", "val", "test", "all")
LIST_FOLDER = "list_folder"
#: Columns the reference drops on the left of every array (1224 -> 1032 wide).
LEFT_OFFSET = 192
#: modality -> (folder, suffix); aolp names its sine folder, the cosine is AOLP_COS.
MCUBES_FOLDERS: dict[str, tuple[str, str]] = {
    "rgb": ("polL_color", ".png"), "aolp": ("polL_aolp_sin", ".npy"),
    "dolp": ("polL_dolp", ".npy"), "nir": ("NIR_warped", ".png"),
}
AOLP_COS = ("polL_aolp_cos", ".npy")
LABEL_FOLDER = ("GT", ".png")
#: Read by the reference loader (must exist for it) but not by this one.
EXTRA_FOLDERS: dict[str, tuple[str, str]] = {
    "nir_mask": ("NIR_warped_mask", ".png"), "ss": ("SS", ".png"),
}


@dataclass(frozen=True)
class MCubeSSample:
    """Where one image set's files are."""

    id: str                 # the stem, e.g. outscene1208_2_0000000150
    files: dict[str, Path]  # modality (+ "aolp_cos", "label", "nir_mask", "ss") -> path


def resolve_root(root: Union[str, Path]) -> Path:
    """``root`` itself, or ``root/multimodal_dataset`` when only that holds ``list_folder``."""
    root = Path(root)
    inner = root / "multimodal_dataset"
    if not (root / LIST_FOLDER).is_dir() and (inner / LIST_FOLDER).is_dir():
        return inner
    return root


def read_list(path: Union[str, Path]) -> list[str]:
    """Stems of a list file: first token of each non-empty line (DataError if unreadable).

    Read as UTF-8 with an optional byte-order mark (a BOM would otherwise become part of the
    first stem, which then names no file)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: split list file not found")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()  # a leading BOM is dropped
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read split list ({type(exc).__name__}: {exc})") from exc
    return [line.split()[0] for line in lines if line.strip()]


def read_label(path: Union[str, Path]) -> np.ndarray:
    """GT PNG -> HxW int64 material ids 0..19, 255 = ignore; DataError naming other ids."""
    return check_label_ids(read_id_image(path), NUM_CLASSES, path)


@register_dataset
class MCubeSDataset(MultiModalDataset):
    """MCubeS in its own layout; items follow ``docs/contracts.md``.

    Args:
        root: the ``multimodal_dataset`` folder (or its parent).
        split: list file to read: train, val, test or all (the reference's "val" is test).
        modalities: any of rgb, aolp, dolp, nir, in output order.
        conditions: MCubeS has none; must be None.
        cases: MCubeS has none; None or ["normal"].
        transform: joint transform on ``{"modalities": images, "label"}`` (before normalising).
        check: validate every file's existence and header size at construction.
        missing: modalities replaced by zeros with ``present`` False (not read at all).
        left_offset: columns dropped on the left of every array (192 as the reference).
    """

    registry_name = "mcubes"
    name = "MCubeS"
    splits = MCUBES_SPLITS
    data_splits = ("train", "val", "test")  # "all" is their union
    unknown_split = (MultiModalDataset.unknown_split
                     + " (the reference's evaluation split is 'test')")
    provided_modalities = tuple(MCUBES_FOLDERS)
    default_modalities = ("rgb", "aolp", "dolp", "nir")
    classes = MCUBES_CLASSES
    palette = MCUBES_PALETTE
    file_roles = {"label": "label", "aolp_cos": "AoLP cosine"}
    resolve_root = staticmethod(resolve_root)
    read_label = staticmethod(read_label)

    @classmethod
    def has_data(cls, root: Union[str, Path]) -> bool:
        """True if ``root`` (or its ``multimodal_dataset``) holds an MCubeS list folder."""
        return (resolve_root(root) / LIST_FOLDER / "train.txt").is_file()

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        modalities: Optional[Sequence[str]] = None,
        *,
        left_offset: int = LEFT_OFFSET,
        **common: Any,
    ) -> None:
        if not isinstance(left_offset, int) or left_offset < 0:
            raise ConfigError(f"left_offset must be an int >= 0, got {left_offset!r}")
        self.left_offset = left_offset
        super().__init__(root, split, modalities, **common)

    # -- indexing ---------------------------------------------------------------------------
    def _index(self) -> list[MCubeSSample]:
        list_file = self.root / LIST_FOLDER / f"{self.split}.txt"
        if not list_file.is_file():
            raise DataError(f"{list_file}: split list file not found (expected the MCubeS layout "
                            f"multimodal_dataset/{LIST_FOLDER}/{self.split}.txt under {self.root})")
        stems = read_list(list_file)
        if not stems:
            raise DataError(f"{list_file}: split list is empty")
        return [self.sample(s) for s in stems]

    def sample(self, stem: str) -> MCubeSSample:
        """The file paths of image set ``stem``."""
        def path(folder: str, suffix: str) -> Path:
            return self.root / folder / f"{stem}{suffix}"

        files = {m: path(*MCUBES_FOLDERS[m]) for m in self.modalities}
        files["aolp_cos"] = path(*AOLP_COS)
        files["label"] = path(*LABEL_FOLDER)
        files.update({k: path(*v) for k, v in EXTRA_FOLDERS.items()})
        return MCubeSSample(stem, files)

    # -- validation -------------------------------------------------------------------------
    def _needed(self, s: MCubeSSample) -> list[str]:
        keys = self._to_read
        if "aolp" in keys:
            keys.append("aolp_cos")
        return keys

    def _reference_hw(self, s: MCubeSSample) -> tuple[int, int]:
        expected = super()._reference_hw(s)
        if expected[1] <= self.left_offset:
            raise DataError(f"{s.files['label']}: only {expected[1]} columns wide; the loader "
                            f"drops the left {self.left_offset} (MCubeS images are 1224 wide)")
        return expected

    # -- reading ----------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        self._check_sample(s)
        left = self.left_offset
        label = torch.from_numpy(read_label(s.files["label"])[:, left:].copy())
        images = {}
        for m in self._to_read:
            images[m] = self._match(s.files[m], self._load(m, s.files[m]), label,
                                    " after the crop")
        return self._item(images, label, s.id)

    def _load(self, m: str, path: Path) -> torch.Tensor:
        """Modality ``m`` cropped by ``left_offset`` as a 3xHxW tensor.

        The crop comes before the conversion, so NaN/inf in the dropped columns, which the
        reference never looks at, are no error; in the kept part they are (naming the file).
        """
        spec = self.specs[m]
        arr = (spec.reader(path, self.left_offset) if spec.reader in (read_npy, read_aolp)
               else spec.reader(path))
        three = spec.to_three(np.ascontiguousarray(arr[:, self.left_offset:]))
        return torch.from_numpy(np.ascontiguousarray(three.transpose(2, 0, 1)))
