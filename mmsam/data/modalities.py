"""Modality registry: how a file becomes a normalised 3-channel image.

A :class:`ModalitySpec` bundles a file reader (:mod:`mmsam.data.readers`: path -> HxWxC
array), a conversion to HxWx3 float32 in [0, 1] (as the benchmark's reference loader does) and
the modality's own mean/std. Adding a modality (thermal, NIR, ...) is one call::

    register_modality(ModalitySpec("thermal", read_image, to_three_channels,
                                   (0.0,) * 3, (1.0,) * 3, "thermal camera, 8/16-bit PNG"))

Datasets call :meth:`ModalitySpec.load` (reader + to_three, as a 3xHxW tensor in [0, 1]),
run the joint transforms on that, and only then :meth:`ModalitySpec.normalize`, so padding
and resizing happen on raw intensities as in DELIVER's reference pipeline. (Exceptions to
[0, 1]: MCubeS AoLP is [sin, cos, sin] in [-1, 1]; the MUSES SDK projections are in their
physical units, metres and counts, as CAFuser feeds them.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

from mmsam.data.readers import (  # noqa: F401  (re-exported: the readers the specs use)
    check_finite,
    image_size,
    npy_shape,
    read_aolp,
    read_elevation,
    read_image,
    read_image_bgr,
    read_npy,
    read_raster,
    sibling_path,
)
from mmsam.errors import ConfigError, DataError

PathLike = Union[str, Path]
Reader = Callable[[PathLike], np.ndarray]
ToThree = Callable[[np.ndarray], np.ndarray]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (1.0, 1.0, 1.0)



def aolp_to_three(array: np.ndarray) -> np.ndarray:
    """[sin, cos] -> [sin, cos, sin] float32, as CMNeXt's MCubeS loader stacks AoLP."""
    if array.ndim != 3 or array.shape[2] != 2:
        raise DataError(f"expected an HxWx2 [sin, cos] AoLP array, got shape {tuple(array.shape)}")
    return np.ascontiguousarray(array[:, :, [0, 1, 0]].astype(np.float32))


#: MUSES SDK PNG codec: stored uint16 = (value + 100) * 150.
MUSES_CODEC_SCALE = 150.0
MUSES_CODEC_SHIFT = 100.0


def muses_decode_to_three(array: np.ndarray) -> np.ndarray:
    """MUSES SDK LiDAR/radar projection (uint16, cv2 channel order) -> value = png/150 - 100.

    Channels [range m, intensity, height m]; empty pixels (stored 15000) decode to 0.
    """
    if array.dtype != np.uint16 or array.ndim != 3 or array.shape[2] < 3:
        raise DataError(f"expected an HxWx3 uint16 MUSES projection, got {array.dtype} "
                        f"{tuple(array.shape)}")
    out = array[:, :, :3].astype(np.float32) / MUSES_CODEC_SCALE - MUSES_CODEC_SHIFT
    return np.ascontiguousarray(out)


def counts_to_three(array: np.ndarray) -> np.ndarray:
    """MUSES SDK event projection (uint8 event counts, cv2 channel order) as float counts."""
    if array.ndim != 3 or array.shape[2] < 3 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"expected an HxWx3 integer event-count image, got {array.dtype} "
                        f"{tuple(array.shape)}")
    return np.ascontiguousarray(array[:, :, :3].astype(np.float32))


def minmax_normalise(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(x - lo) / (hi - lo) as float32; all zeros when the range is empty (a flat tile)."""
    if hi <= lo:
        return np.zeros(array.shape, np.float32)
    return ((array.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)


def minmax_to_three(array: np.ndarray) -> np.ndarray:
    """An elevation plane -> HxWx3 float32 in [0, 1]: min-max over the whole array, repeated x3.

    MFNet scales each DSM tile by its own min and max before cropping (official MFNet
    ``utils.py``); the datasets call this on whole tiles. A flat tile becomes zeros (MFNet would divide
    by zero).
    """
    if array.ndim == 3:
        if array.shape[2] != 1:
            raise DataError(f"expected a one-band elevation array, got shape {tuple(array.shape)}")
        array = array[:, :, 0]
    check_finite(array)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    out = minmax_normalise(array, lo, hi)
    return np.ascontiguousarray(np.repeat(out[:, :, None], 3, axis=2))


def to_three_channels(array: np.ndarray) -> np.ndarray:
    """HxWxC -> HxWx3 float32 in [0, 1], like DELIVER's reference loader.

    1 channel is repeated, 2 (grey + alpha) keeps grey repeated, 4 drops alpha, more keeps
    the first 3. uint8 is divided by 255, uint16 by 65535, floats are kept as they are.
    """
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] < 1:
        raise DataError(f"expected an HxWxC image array, got shape {tuple(array.shape)}")
    c = array.shape[2]
    if c in (1, 2):
        array = np.repeat(array[:, :, :1], 3, axis=2)
    else:
        array = array[:, :, :3]
    if array.dtype == np.uint8:
        out = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        out = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        out = check_finite(array.astype(np.float32))
    elif array.dtype == np.bool_:
        out = array.astype(np.float32)
    else:
        raise DataError(f"unsupported image dtype {array.dtype}")
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality: how to read it, make it 3 channels, and normalise it."""

    name: str
    reader: Reader
    to_three: ToThree
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str = ""

    def load(self, path: PathLike) -> torch.Tensor:
        """Read ``path`` and return a 3xHxW float32 tensor in [0, 1] (not yet normalised)."""
        arr = self.to_three(self.reader(path))
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise DataError(f"{path}: modality {self.name!r} gave shape {arr.shape}, not HxWx3")
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std per channel; image is 3xHxW or Bx3xHxW."""
        mean = torch.tensor(self.mean, dtype=image.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype).view(3, 1, 1)
        return (image - mean) / std

    def denormalize(self, image: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize` (for visualisation)."""
        mean = torch.tensor(self.mean, dtype=image.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype).view(3, 1, 1)
        return image * std + mean


_REGISTRY: dict[str, ModalitySpec] = {}


def register_modality(spec: ModalitySpec, *, overwrite: bool = False) -> ModalitySpec:
    """Add ``spec`` to the registry; ConfigError if the name is taken (unless overwrite)."""
    if not overwrite and spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ConfigError(f"modality {spec.name!r} is already registered")
    if len(spec.mean) != 3 or len(spec.std) != 3 or any(s <= 0 for s in spec.std):
        raise ConfigError(f"modality {spec.name!r}: mean/std need 3 values, std > 0")
    _REGISTRY[spec.name] = spec
    return spec


def get_modality(name: str) -> ModalitySpec:
    """The registered spec for ``name``; ConfigError listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown modality {name!r}; known modalities: {', '.join(list_modalities())}"
        ) from None


def list_modalities() -> list[str]:
    """Names of all registered modalities, sorted."""
    return sorted(_REGISTRY)


def validate_modalities(names: object) -> tuple[str, ...]:
    """Check a list of modality names (known, non-empty, no duplicates); return a tuple."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ConfigError(f"modalities must be a list of names, got {names!r}")
    names = tuple(names)
    if not names:
        raise ConfigError("at least one modality is required")
    for n in names:
        get_modality(n)
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate modality names in {list(names)}")
    return names


register_modality(ModalitySpec(
    "rgb", read_image, to_three_channels, IMAGENET_MEAN, IMAGENET_STD,
    "colour camera; first 3 channels, /255, ImageNet mean/std"))
register_modality(ModalitySpec(
    "depth", read_image, to_three_channels, UNIT_MEAN, UNIT_STD,
    "depth as HHA (DELIVER reads it from hha/); /255 only"))
register_modality(ModalitySpec(
    "event", read_image, to_three_channels, UNIT_MEAN, UNIT_STD,
    "event frame rendered as an image; /255 only"))
register_modality(ModalitySpec(
    "lidar", read_image, to_three_channels, UNIT_MEAN, UNIT_STD,
    "LiDAR projected to the camera as an image; /255 only"))
# MCubeS (CMNeXt / MemorySAM loaders); rgb above also serves MCubeS (16-bit -> /65535).
register_modality(ModalitySpec(
    "aolp", read_aolp, aolp_to_three, UNIT_MEAN, UNIT_STD,
    "MCubeS angle of linear polarisation: polL_aolp_sin + polL_aolp_cos .npy -> [sin, cos, sin]"))
register_modality(ModalitySpec(
    "dolp", read_npy, to_three_channels, UNIT_MEAN, UNIT_STD,
    "MCubeS degree of linear polarisation: polL_dolp .npy -> [d, d, d], no scaling"))
register_modality(ModalitySpec(
    "nir", read_image, to_three_channels, UNIT_MEAN, UNIT_STD,
    "near-infrared image (MCubeS NIR_warped); /255 or /65535, repeated x3"))
# MUSES: pre-rendered images of the SAM-style "multimodal" layout use rgb/event/lidar above.
register_modality(ModalitySpec(
    "radar", read_image, to_three_channels, UNIT_MEAN, UNIT_STD,
    "radar rendered as an image (MUSES multimodal layout); /255 only"))
# MUSES SDK projections (projected_to_rgb/), normalised with CAFuser's per-modality statistics.
register_modality(ModalitySpec(
    "muses_lidar_projected", read_image_bgr, muses_decode_to_three,
    (4.91737, 6.149373, 0.27025607), (13.34715295, 17.63751258, 1.23208644),
    "MUSES SDK LiDAR projection: uint16 PNG, png/150 - 100 -> [range m, intensity, height m]"))
register_modality(ModalitySpec(
    "muses_radar_projected", read_image_bgr, muses_decode_to_three,
    (4.003564, 9.342789, 0.0), (14.60685343, 19.29406236, 1.0),
    "MUSES SDK radar projection: uint16 PNG, png/150 - 100 -> [range m, intensity, 0]"))
register_modality(ModalitySpec(
    "muses_event_projected", read_image_bgr, counts_to_three,
    (0.12577528, 0.12728328, 0.0), (0.54420582, 0.47625199, 1.0),
    "MUSES SDK event projection: uint8 PNG of [positive, negative, 0] event counts"))
# Remote sensing (ISPRS Vaihingen / Potsdam, MMHunan) as MFNet reads them (official MFNet
# ``utils.py``): optical bands /255 with no mean/std, elevation min-max per tile and repeated x3.
register_modality(ModalitySpec(
    "irrg", read_raster, to_three_channels, UNIT_MEAN, UNIT_STD,
    "IRRG orthophoto (NIR, R, G): first 3 bands, /255 only (MFNet)"))
register_modality(ModalitySpec(
    "ortho_rgb", read_raster, to_three_channels, UNIT_MEAN, UNIT_STD,
    "RGB orthophoto / satellite RGB: first 3 bands (of e.g. a 4-band RGBIR TIFF), /255 only "
    "(MFNet; no ImageNet mean/std)"))
register_modality(ModalitySpec(
    "dsm", read_elevation, minmax_to_three, UNIT_MEAN, UNIT_STD,
    "digital surface / elevation model, one band: min-max over the whole tile to [0, 1], "
    "repeated x3 (MFNet)"))
