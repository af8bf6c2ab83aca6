"""Modality registry: how a file becomes a normalised 3-channel image.

A :class:`ModalitySpec` bundles a file reader (path -> HxWxC numpy array), a conversion to
HxWx3 float32 in [0, 1] (as the benchmark's reference loader does) and the modality's own
mean/std. Adding a modality (thermal, NIR, ...) is one call::

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


def _why(path: Path, exc: BaseException) -> str:
    """The reason in a cannot-read message: an empty file and an unknown format said plainly."""
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    if size == 0:
        return "empty file, 0 bytes"
    if type(exc).__name__ == "UnidentifiedImageError":  # its text repeats the path
        return f"not an image format PIL reads, {size} bytes"
    return f"{type(exc).__name__}: {exc}"


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file (PNG, TIFF, ...) to an HxWxC array of uint8, uint16 or float32.

    Palette images are expanded to RGB. 16-bit PNGs (grey or colour) stay uint16; 32-bit float TIFFs
    stay float32 and are checked for NaN/inf. Raises DataError naming the file when it is
    missing, cannot be decoded (truncated or corrupt) or has an unsupported pixel type.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    if _is_16bit_colour_png(p):  # PIL would keep only the high byte of each sample
        return _read_png16(p)
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
        raise DataError(f"{p}: cannot decode image ({_why(p, exc)})") from exc
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


def _is_16bit_colour_png(path: Path) -> bool:
    """True for a PNG whose IHDR says 16 bits per sample with colour (RGB/RGBA/grey+alpha)."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return False
    return (len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
            and head[24] == 16 and head[25] in (2, 4, 6))


def _read_png16(path: Path) -> np.ndarray:
    """Decode a 16-bit colour PNG to HxWxC uint16 (torchvision keeps all 16 bits)."""
    from torchvision.io import ImageReadMode, decode_png

    try:
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        arr = decode_png(data, ImageReadMode.UNCHANGED).permute(1, 2, 0).numpy()
    except Exception as exc:
        raise DataError(f"{path}: cannot decode image ({_why(path, exc)})") from exc
    return np.ascontiguousarray(arr.astype(np.uint16))


def read_npy(path: PathLike, left_offset: int = 0) -> np.ndarray:
    """Read a ``.npy`` array of one HxW (or HxWx1) plane as HxWx1 float32.

    Raises DataError naming the file when it is missing, not a valid ``.npy`` file, not
    numeric, not 2-D, or holds NaN/inf (as MCubeS' AoLP/DoLP arrays must not) in the columns
    from ``left_offset`` on (the part a loader that crops the left columns keeps).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{p}: cannot read .npy array ({_why(p, exc)})") from exc
    if not isinstance(arr, np.ndarray) or not (np.issubdtype(arr.dtype, np.floating)
                                               or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{p}: expected a numeric array, got {getattr(arr, 'dtype', type(arr))}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise DataError(f"{p}: expected an HxW array, got shape {tuple(arr.shape)}")
    check_finite(arr[:, left_offset:], p)
    return np.ascontiguousarray(arr.astype(np.float32))[:, :, None]


def npy_shape(path: PathLike) -> tuple[int, ...]:
    """Shape of a ``.npy`` array from its header only; DataError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, _ = read_header(f)
    except Exception as exc:
        raise DataError(f"{p}: cannot read .npy header ({_why(p, exc)})") from exc
    return tuple(int(s) for s in shape)


def sibling_path(path: PathLike, folder_from: str, folder_to: str) -> Path:
    """``<root>/<folder_from>/<name>`` -> ``<root>/<folder_to>/<name>`` (same file name)."""
    p = Path(path)
    if p.parent.name != folder_from:
        raise DataError(f"{p}: expected a file inside a {folder_from!r} folder")
    return p.parent.parent / folder_to / p.name


def read_aolp(path: PathLike, left_offset: int = 0) -> np.ndarray:
    """MCubeS AoLP: ``polL_aolp_sin/<stem>.npy`` plus its ``polL_aolp_cos`` twin -> HxWx2.

    ``path`` is the sine file; the cosine file has the same name in the sibling folder. NaN/inf
    are errors only from column ``left_offset`` on (see :func:`read_npy`).
    """
    sin = read_npy(path, left_offset)
    cos_path = sibling_path(path, "polL_aolp_sin", "polL_aolp_cos")
    cos = read_npy(cos_path, left_offset)
    if cos.shape != sin.shape:
        raise DataError(f"{cos_path}: AoLP cosine is {cos.shape[0]}x{cos.shape[1]} (HxW) but the "
                        f"sine {Path(path).name} is {sin.shape[0]}x{sin.shape[1]}")
    return np.concatenate([sin, cos], axis=2)


def aolp_to_three(array: np.ndarray) -> np.ndarray:
    """[sin, cos] -> [sin, cos, sin] float32, as CMNeXt's MCubeS loader stacks AoLP."""
    if array.ndim != 3 or array.shape[2] != 2:
        raise DataError(f"expected an HxWx2 [sin, cos] AoLP array, got shape {tuple(array.shape)}")
    return np.ascontiguousarray(array[:, :, [0, 1, 0]].astype(np.float32))


def read_image_bgr(path: PathLike) -> np.ndarray:
    """:func:`read_image` with the colour planes reversed, as ``cv2.imread`` returns them.

    For files written with OpenCV whose channel 0 therefore sits in the PNG's blue plane
    (the MUSES SDK projections).
    """
    arr = read_image(path)
    if arr.shape[2] >= 3:
        arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)
    return np.ascontiguousarray(arr)


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


def read_raster(path: PathLike) -> np.ndarray:
    """Read a raster (GeoTIFF orthophoto, DSM, JPG/PNG) to HxWxC keeping its bands as stored.

    Unlike :func:`read_image`, a 4-band TIFF that PIL opens as CMYK or RGBA is not colour
    converted: its bands come back raw (ISPRS Potsdam's ``*_RGBIR.tif`` -> R, G, B, IR). A TIFF
    PIL cannot decode is read with ``tifffile`` when that package is installed. DataError names
    the file otherwise.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with Image.open(p) as img:
            if img.mode in ("CMYK", "RGBA"):
                img.load()
                return np.array(img)
    except Exception:
        pass  # read_image below (or tifffile) names the file and the problem
    try:
        return read_image(p)
    except DataError as err:
        if p.suffix.lower() not in (".tif", ".tiff"):
            raise
        try:
            import tifffile
        except ImportError:
            raise err from None
        try:
            arr = np.asarray(tifffile.imread(p))
        except Exception as exc:
            raise DataError(f"{p}: cannot decode TIFF ({type(exc).__name__}: {exc})") from exc
        if arr.ndim == 3 and arr.shape[0] < arr.shape[2] and arr.shape[0] <= 4:  # planar CxHxW
            arr = arr.transpose(1, 2, 0)
        return check_finite(arr if arr.ndim == 3 else arr[:, :, None], p)


def read_elevation(path: PathLike, as_float: bool = True) -> np.ndarray:
    """A one-band elevation raster (float DSM TIFF, 8-bit nDSM JPG / DEM PNG) as HxWx1 float32.

    Multi-band files must hold the same value in every band (a grey JPG saved as RGB).
    NaN / inf (e.g. nodata holes) raise DataError naming the file; no nodata value is assumed.
    ``as_float=False`` keeps the stored dtype (an 8-bit nDSM stays uint8, 4x less memory).
    """
    arr = read_raster(path)
    if arr.shape[2] > 1:
        if not all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[2])):
            raise DataError(f"{path}: elevation raster has {arr.shape[2]} differing bands; "
                            f"expected one band")
        arr = arr[..., :1]
    arr = np.ascontiguousarray(arr.astype(np.float32) if as_float else arr)
    return check_finite(arr, path)


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


def image_size(path: PathLike) -> tuple[int, int]:
    """(H, W) of an image from its header only (no full decode); DataError if unreadable."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        with Image.open(p) as img:
            w, h = img.size
    except Exception as exc:
        raise DataError(f"{p}: cannot read image header ({_why(p, exc)})") from exc
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
