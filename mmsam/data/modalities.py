"""Modality registry: how a file becomes a normalised 3-channel image.

A :class:`ModalitySpec` bundles a file reader (path -> HxWxC numpy array), a conversion to
HxWx3 float32 in [0, 1] (as the benchmark's reference loader does) and the modality's own
mean/std. Adding a modality (thermal, NIR, ...) is one call::

    register_modality(ModalitySpec("thermal", read_image, to_three_channels,
                                   (0.0,) * 3, (1.0,) * 3, "thermal camera, 8/16-bit PNG"))

Datasets call :meth:`ModalitySpec.load` (reader + to_three, as a 3xHxW tensor in [0, 1]),
run the joint transforms on that, and only then :meth:`ModalitySpec.normalize`, so padding
and resizing happen on raw intensities as in DELIVER's reference pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from PIL import Image

from mmsam.errors import ConfigError, DataError

PathLike = Union[str, Path]
Reader = Callable[[PathLike], np.ndarray]
ToThree = Callable[[np.ndarray], np.ndarray]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (1.0, 1.0, 1.0)

_CONVERT = {"P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def check_finite(array: np.ndarray, path: PathLike = "<array>") -> np.ndarray:
    """Return ``array`` unchanged; raise DataError naming ``path`` if it holds NaN or inf."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(np.isinf(array).sum())
        raise DataError(f"{path}: contains non-finite values ({n_nan} NaN, {n_inf} inf)")
    return array


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file (PNG, TIFF, ...) to an HxWxC array of uint8, uint16 or float32.

    Palette images are expanded to RGB. 16-bit grey PNGs stay uint16; 32-bit float TIFFs
    stay float32 and are checked for NaN/inf. Raises DataError naming the file when it is
    missing, cannot be decoded (truncated or corrupt) or has an unsupported pixel type.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with Image.open(p) as img:
            img.load()
            if img.mode in _CONVERT:
                img = img.convert(_CONVERT[img.mode])
            elif img.mode == "1":
                img = img.convert("L")
            mode = img.mode
            arr = np.array(img)
    except DataError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib errors...
        raise DataError(f"{p}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    if mode in _UINT16_MODES:
        arr = arr.astype(np.uint16)
    elif mode == "I":
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"{p}: 32-bit integer pixels outside 0..65535 are not supported")
        arr = arr.astype(np.uint16)
    elif mode == "F":
        arr = arr.astype(np.float32)
    elif arr.dtype != np.uint8:
        raise DataError(f"{p}: unsupported pixel type (PIL mode {mode!r}, dtype {arr.dtype})")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return check_finite(arr, p)


def image_size(path: PathLike) -> tuple[int, int]:
    """(H, W) of an image from its header only (no full decode); DataError if unreadable."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with Image.open(p) as img:
            w, h = img.size
    except Exception as exc:
        raise DataError(f"{p}: cannot read image header ({type(exc).__name__}: {exc})") from exc
    return int(h), int(w)


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
