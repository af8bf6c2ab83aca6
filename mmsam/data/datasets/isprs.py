"""ISPRS Vaihingen and Potsdam in their official package layouts, read as MFNet reads them.

Vaihingen (``<root>`` or ``<root>/Vaihingen``)::

    top/top_mosaic_09cm_area{N}.tif                       IRRG orthophoto (NIR, R, G), 8-bit
    dsm/dsm_09cm_matching_area{N}.tif                     DSM, one float band (absolute heights)
    gts_for_participants/top_mosaic_09cm_area{N}.tif      colour GT
    gts_eroded_for_participants/top_mosaic_09cm_area{N}_noBoundary.tif   eroded colour GT

Potsdam (``<root>`` or ``<root>/Potsdam``; tile id ``<row>_<col>``, DSM names zero-padded)::

    4_Ortho_RGBIR/top_potsdam_{id}_RGBIR.tif              R, G, B, IR (modality rgb = bands 1-3)
    3_Ortho_IRRG/top_potsdam_{id}_IRRG.tif                IR, R, G (modality irrg)
    1_DSM_normalisation/dsm_potsdam_{rr_cc}_normalized_lastools.jpg   nDSM, 8-bit (modality dsm)
    1_DSM/dsm_potsdam_{rr_cc}.tif                         DSM, float (dsm_source="dsm")
    5_Labels_for_participants[_no_Boundary]/top_potsdam_{id}_label[_noBoundary].tif
    (or 5_Labels_all[_noBoundary]/ or flat in the root, as 5_Labels_all.zip unpacks and
    torchgeo's Potsdam2D reads it, for the complete release)

Vaihingen's complete-release GT is found the same way: ``gts_[eroded_]for_participants/``, a
folder named after the zip (``ISPRS_semantic_labeling_Vaihingen_ground_truth[_eroded]_COMPLETE/``)
or flat in the root (the zip unpacked in place, as torchgeo's Vaihingen2D reads it). Every file
may end in ``.tif`` or ``.tiff`` in any letter case (``.TIF``; the nDSM ``.jpg`` / ``.jpeg``);
hidden files (``._*`` AppleDouble copies) are never taken.

Labels are RGB colour codes mapped by the ISPRS palette (docs/datasets.md); black
(0, 0, 0), the eroded GT's boundary band (MFNet's "undefined"), becomes 255; any other colour
is a DataError naming the file and the colour. Optical bands are /255 with no mean/std and
the DSM / nDSM is min-max scaled over the whole tile before any crop, then repeated x3
(official MFNet train.py / utils.py).

Splits (official MFNet train.py / utils.py): ``split_scheme="mfnet"`` (default) uses MFNet's tiles
(Vaihingen 12 train / 4 test, Potsdam 18 / 6); ``"official"`` the ISPRS/mmseg lists. There
is no validation split: ``val`` is the test tiles, as MFNet validates on its test set. Training
reads the full GT; ``val``/``test`` read the eroded GT unless ``eroded_test_labels=False``
(MFNet scores against the eroded GT, official MFNet train.py). Items are whole tiles at native
size; ``train_window`` cuts a random window before the float conversion (MFNet's random
256 x 256 patch) and ``cache_tiles`` keeps the decoded training tiles in memory (MFNet's
``CACHE``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from mmsam.data.datasets.base import MultiModalDataset
from mmsam.data.datasets.common import find_file, visible_glob
from mmsam.data.datasets.registry import register_dataset
from mmsam.data.modalities import minmax_normalise, to_three_channels
from mmsam.data.readers import read_elevation, read_raster
from mmsam.data.transforms import IGNORE_INDEX
from mmsam.errors import ConfigError, DataError

ISPRS_CLASSES: tuple[str, ...] = (
    "impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter",
)
ISPRS_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0),
)
#: The eroded GT's boundary band (MFNet's "undefined" colour) -> ignore.
BOUNDARY_COLOUR = (0, 0, 0)
NUM_CLASSES = len(ISPRS_CLASSES)
ISPRS_SPLITS = ("train", "val", "test")
SPLIT_SCHEMES = ("mfnet", "official")
ELEVATION = ("dsm",)
#: File name endings accepted (compared case-insensitively, so ``.TIF`` matches too).
TIF_SUFFIXES = (".tif", ".tiff")
JPG_SUFFIXES = (".jpg", ".jpeg")

VAIHINGEN_TILES: dict[str, dict[str, tuple[str, ...]]] = {
    "mfnet": {"train": ("1", "3", "23", "26", "7", "11", "13", "28", "17", "32", "34", "37"),
              "test": ("5", "21", "15", "30")},
    "official": {"train": ("1", "3", "5", "7", "11", "13", "15", "17", "21", "23", "26", "28",
                           "30", "32", "34", "37"),
                 "test": ("2", "4", "6", "8", "10", "12", "14", "16", "20", "22", "24", "27",
                          "29", "31", "33", "35", "38")},
}
POTSDAM_TILES: dict[str, dict[str, tuple[str, ...]]] = {
    "mfnet": {"train": ("6_10", "7_10", "2_12", "3_11", "2_10", "7_8", "5_10", "3_12", "5_12",
                        "7_11", "7_9", "6_9", "7_7", "4_12", "6_8", "6_12", "6_7", "4_11"),
              "test": ("4_10", "5_11", "2_11", "3_10", "6_11", "7_12")},
    "official": {"train": ("2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11",
                           "4_12", "5_10", "5_11", "5_12", "6_10", "6_11", "6_12", "6_7", "6_8",
                           "6_9", "7_10", "7_11", "7_12", "7_7", "7_8", "7_9"),
                 "test": ("2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13",
                          "5_14", "5_15", "6_13", "6_14", "6_15", "7_13")},
}

_UNKNOWN = 254  # LUT value for colours outside the palette (never a valid id)
_LUT: Optional[np.ndarray] = None


def _colour_lut() -> np.ndarray:
    """24-bit RGB code -> class id (255 for black, 254 for any other colour)."""
    global _LUT
    if _LUT is None:
        lut = np.full(1 << 24, _UNKNOWN, np.uint8)
        for i, (r, g, b) in enumerate(ISPRS_PALETTE):
            lut[(r << 16) | (g << 8) | b] = i
        r, g, b = BOUNDARY_COLOUR
        lut[(r << 16) | (g << 8) | b] = IGNORE_INDEX
        _LUT = lut
    return _LUT


def colours_to_ids(rgb: np.ndarray, path: Union[str, Path] = "<array>") -> np.ndarray:
    """HxWx3 uint8 colour GT -> HxW uint8 ids (black -> 255); DataError naming unknown colours."""
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise DataError(f"{path}: expected an 8-bit RGB colour label, got {rgb.dtype} "
                        f"{tuple(rgb.shape)}")
    codes = ((rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8)
             | rgb[..., 2].astype(np.int32))
    ids = _colour_lut()[codes]
    bad = ids == _UNKNOWN
    if bad.any():
        colours, counts = np.unique(codes[bad], return_counts=True)
        shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255}) x{n}"
                          for c, n in list(zip(colours.tolist(), counts.tolist()))[:5])
        more = f" and {len(colours) - 5} more" if len(colours) > 5 else ""
        raise DataError(f"{path}: unknown label colour(s) {shown}{more} (RGB x pixels); the "
                        f"ISPRS palette is {dict(zip(ISPRS_CLASSES, ISPRS_PALETTE))} and black = "
                        f"boundary (ignore)")
    return ids


def ids_to_colours(ids: np.ndarray) -> np.ndarray:
    """HxW class ids -> HxWx3 uint8 ISPRS colours (255 -> black); DataError on other ids."""
    table = np.zeros((256, 3), np.uint8)
    table[:NUM_CLASSES] = ISPRS_PALETTE
    ids = np.asarray(ids)
    bad = np.setdiff1d(np.unique(ids), np.r_[0:NUM_CLASSES, IGNORE_INDEX])
    if bad.size:
        raise DataError(f"ids {bad.tolist()} are outside 0..{NUM_CLASSES - 1} and 255")
    return table[ids.astype(np.uint8)]


def read_label(path: Union[str, Path]) -> np.ndarray:
    """A colour GT TIFF (full or eroded) -> HxW int64 ids 0..5, 255 = boundary/ignore."""
    return colours_to_ids(read_raster(path), path).astype(np.int64)


@dataclass(frozen=True)
class TileSample:
    """Where one tile's files are."""

    id: str                 # e.g. area5 (Vaihingen), 2_10 (Potsdam)
    files: dict[str, Path]  # modality (+ "label") -> path


@dataclass
class _Tile:
    """A decoded tile: stored arrays (optical HxWxC, elevation HxW), elevation ranges, ids."""

    arrays: dict[str, np.ndarray]
    ranges: dict[str, tuple[float, float]]
    label: np.ndarray  # HxW uint8


class ISPRSDataset(MultiModalDataset):
    """Shared loader of the ISPRS 2D labelling tiles; subclasses name the files.

    Args:
        root: the data set folder (or its parent holding ``Vaihingen/`` / ``Potsdam/``).
        split: train, val or test (val = the test tiles; there is no validation split).
        modalities: the data set's modalities, in output order.
        conditions: none exist; must be None.
        cases: none exist; None or ["normal"].
        transform: joint transform on ``{"modalities": images, "label"}`` (before normalising).
        check: validate every file's existence and header size at construction.
        missing: modalities replaced by zeros with ``present`` False (not read at all).
        eroded_test_labels: val/test read the eroded GT (boundary band = 255), as MFNet scores.
        split_scheme: "mfnet" (MFNet's tiles) or "official" (ISPRS / mmseg tiles).
        cache_tiles: keep the decoded training tiles in memory (per DataLoader worker).
        train_window: on the train split, each item is a random window of this side cut from
            its tile before the float conversion (None: the whole tile).
    """

    name = "ISPRS"
    splits = ISPRS_SPLITS
    data_splits = ("train", "test")  # val = the test tiles
    unknown_split = MultiModalDataset.unknown_split + " (val = the test tiles)"
    classes = ISPRS_CLASSES
    palette = ISPRS_PALETTE
    #: The image folders also hold tiles outside the split lists (``mmsam data check``).
    partial_folders = True
    folder = ""                                    # the package folder under a parent root
    tiles: dict[str, dict[str, tuple[str, ...]]] = {}
    read_label = staticmethod(read_label)

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        modalities: Optional[Sequence[str]] = None,
        *,
        eroded_test_labels: bool = True,
        split_scheme: str = "mfnet",
        cache_tiles: bool = True,
        train_window: Optional[int] = None,
        **common: Any,
    ) -> None:
        if split_scheme not in SPLIT_SCHEMES:
            raise ConfigError(f"unknown split_scheme {split_scheme!r}; valid: "
                              f"{', '.join(SPLIT_SCHEMES)}")
        if train_window is not None and (not isinstance(train_window, int) or train_window < 1):
            raise ConfigError(f"train_window must be a positive int or None, got {train_window!r}")
        self.split_scheme = split_scheme
        self.eroded = eroded_test_labels and split != "train"
        self.window = train_window if split == "train" else None
        self.cache_tiles = cache_tiles and split == "train"
        self._cache: dict[int, _Tile] = {}
        super().__init__(root, split, modalities, **common)

    # -- layout (subclasses) ----------------------------------------------------------------
    @classmethod
    def resolve_root(cls, root: Union[str, Path]) -> Path:
        """``root`` itself, or ``root/<folder>`` when only that holds the package."""
        root = Path(root)
        inner = root / cls.folder
        return inner if not cls._looks_like(root) and cls._looks_like(inner) else root

    @classmethod
    def _looks_like(cls, root: Path) -> bool:
        raise NotImplementedError

    def _index(self) -> list[TileSample]:
        self.tile_ids = self.tiles[self.split_scheme]["train" if self.split == "train" else "test"]
        return [self.sample(t) for t in self.tile_ids]

    def sample(self, tile: str) -> TileSample:
        """The file paths of tile ``tile`` (its modalities and the split's label)."""
        raise NotImplementedError

    def _find(self, folders: Sequence[str], stem: str,
              suffixes: Sequence[str] = TIF_SUFFIXES) -> Path:
        """``<root>/<folder>/<stem><suffix>`` for the first folder holding it (``""`` = the root
        itself; suffix in any letter case); the first candidate if none does (it is then
        reported missing under its canonical name)."""
        folders = [self.root / f if f else self.root for f in folders]
        return find_file(folders, stem, suffixes) or folders[0] / f"{stem}{suffixes[0]}"

    # -- reading ----------------------------------------------------------------------------
    def _read_tile(self, s: TileSample) -> _Tile:
        label = colours_to_ids(read_raster(s.files["label"]), s.files["label"])
        arrays, ranges = {}, {}
        for m in self._to_read:
            path = s.files[m]
            if m in ELEVATION:
                arr = read_elevation(path, as_float=False)[:, :, 0]
                ranges[m] = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
            else:
                arr = self.specs[m].reader(path)
                if arr.shape[2] < 3:
                    raise DataError(f"{path}: {arr.shape[2]} band(s); modality {m!r} needs 3")
                arr = np.ascontiguousarray(arr[:, :, :3])  # RGBIR: keep R, G, B only
            if arr.shape[:2] != label.shape:
                raise DataError(f"{path}: {arr.shape[0]}x{arr.shape[1]} (HxW) but the label "
                                f"{s.files['label'].name} is {label.shape[0]}x{label.shape[1]}")
            arrays[m] = arr
        return _Tile(arrays, ranges, label)

    def _tile(self, index: int) -> _Tile:
        if index in self._cache:
            return self._cache[index]
        s = self.samples[index]
        self._check_sample(s)
        tile = self._read_tile(s)
        if self.cache_tiles:
            self._cache[index] = tile
        return tile

    def _window(self, h: int, w: int) -> tuple[slice, slice]:
        if self.window is None:
            return slice(None), slice(None)
        wh, ww = min(self.window, h), min(self.window, w)
        top = int(torch.randint(0, h - wh + 1, ()).item())
        left = int(torch.randint(0, w - ww + 1, ()).item())
        return slice(top, top + wh), slice(left, left + ww)

    def __getitem__(self, index: int) -> dict[str, Any]:
        tile = self._tile(index)
        rows, cols = self._window(*tile.label.shape)
        images = {}
        for m, arr in tile.arrays.items():
            part = arr[rows, cols]
            if m in ELEVATION:
                plane = minmax_normalise(part, *tile.ranges[m])
                img = torch.from_numpy(np.ascontiguousarray(plane))[None].expand(3, -1, -1)
                images[m] = img.contiguous()
            else:
                three = to_three_channels(part)
                images[m] = torch.from_numpy(np.ascontiguousarray(three.transpose(2, 0, 1)))
        label = torch.from_numpy(tile.label[rows, cols].astype(np.int64))
        return self._item(images, label, self.samples[index].id)

    def _repr_fields(self) -> dict[str, Any]:
        return {"root": str(self.root), "split": self.split, "scheme": self.split_scheme,
                "modalities": list(self.modalities)}


@register_dataset
class VaihingenDataset(ISPRSDataset):
    """ISPRS Vaihingen: modalities ``irrg`` (top/) and ``dsm`` (dsm/); see the module doc."""

    registry_name = "vaihingen"
    name = "Vaihingen"
    folder = "Vaihingen"
    provided_modalities = ("irrg", "dsm")
    default_modalities = ("irrg", "dsm")
    tiles = VAIHINGEN_TILES
    #: Where the full / eroded GT may be, in order ("" = flat in the root).
    label_folders = ("gts_for_participants",
                     "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE", "")
    eroded_label_folders = ("gts_eroded_for_participants",
                            "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE", "")

    @classmethod
    def _looks_like(cls, root: Path) -> bool:
        return (root / "top").is_dir()

    @classmethod
    def has_data(cls, root: Union[str, Path]) -> bool:
        """True if ``root`` (or ``root/Vaihingen``) holds IRRG tiles."""
        return any(p.suffix.lower() in TIF_SUFFIXES for p in visible_glob(
            cls.resolve_root(root), "top/top_mosaic_09cm_area*"))

    def sample(self, tile: str) -> TileSample:
        name = f"top_mosaic_09cm_area{tile}"
        finders = {"irrg": lambda: self._find(["top"], name),
                   "dsm": lambda: self._find(["dsm"], f"dsm_09cm_matching_area{tile}")}
        files = {m: finders[m]() for m in self.modalities}
        files["label"] = (self._find(self.eroded_label_folders, f"{name}_noBoundary")
                          if self.eroded else self._find(self.label_folders, name))
        return TileSample(f"area{tile}", files)


def potsdam_padded(tile: str) -> str:
    """``2_10`` -> ``02_10``: the DSM / nDSM file names zero-pad both numbers."""
    try:
        row, col = (int(v) for v in tile.split("_"))
    except ValueError:
        raise ConfigError(f"Potsdam tile ids are <row>_<col>, got {tile!r}") from None
    return f"{row:02d}_{col:02d}"


@register_dataset
class PotsdamDataset(ISPRSDataset):
    """ISPRS Potsdam: ``rgb`` (first 3 bands of RGBIR), ``irrg`` and ``dsm`` (nDSM by default).

    Extra args: ``dsm_source`` "ndsm" (``1_DSM_normalisation`` JPG, as MFNet) or "dsm"
    (``1_DSM`` float TIFF).
    """

    registry_name = "potsdam"
    name = "Potsdam"
    folder = "Potsdam"
    provided_modalities = ("rgb", "irrg", "dsm")
    spec_names = {"rgb": "ortho_rgb"}
    tiles = POTSDAM_TILES
    default_modalities = ("rgb", "dsm")
    #: Where the full / eroded GT may be, in order ("" = flat in the root).
    label_folders = ("5_Labels_for_participants", "5_Labels_all", "")
    eroded_label_folders = ("5_Labels_for_participants_no_Boundary", "5_Labels_all_noBoundary",
                            "")

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        modalities: Optional[Sequence[str]] = None,
        *,
        dsm_source: str = "ndsm",
        **options: Any,
    ) -> None:
        if dsm_source not in ("ndsm", "dsm"):
            raise ConfigError(f"dsm_source must be 'ndsm' or 'dsm', got {dsm_source!r}")
        self.dsm_source = dsm_source
        super().__init__(root, split, modalities, **options)

    @classmethod
    def _looks_like(cls, root: Path) -> bool:
        return (root / "4_Ortho_RGBIR").is_dir() or (root / "5_Labels_for_participants").is_dir()

    @classmethod
    def has_data(cls, root: Union[str, Path]) -> bool:
        """True if ``root`` (or ``root/Potsdam``) holds RGBIR tiles."""
        return any(p.suffix.lower() in TIF_SUFFIXES for p in visible_glob(
            cls.resolve_root(root), "4_Ortho_RGBIR/top_potsdam_*_RGBIR.*"))

    def _label_path(self, tile: str) -> Path:
        """The participants' GT, else the complete release's (``5_Labels_all*`` or flat)."""
        if self.eroded:
            return self._find(self.eroded_label_folders, f"top_potsdam_{tile}_label_noBoundary")
        return self._find(self.label_folders, f"top_potsdam_{tile}_label")

    def sample(self, tile: str) -> TileSample:
        pad = potsdam_padded(tile)
        finders = {
            "rgb": lambda: self._find(["4_Ortho_RGBIR"], f"top_potsdam_{tile}_RGBIR"),
            "irrg": lambda: self._find(["3_Ortho_IRRG"], f"top_potsdam_{tile}_IRRG"),
            "dsm": lambda: (self._find(["1_DSM_normalisation"],
                                       f"dsm_potsdam_{pad}_normalized_lastools", JPG_SUFFIXES)
                            if self.dsm_source == "ndsm"
                            else self._find(["1_DSM"], f"dsm_potsdam_{pad}")),
        }
        files = {m: finders[m]() for m in self.modalities}
        files["label"] = self._label_path(tile)
        return TileSample(tile, files)
