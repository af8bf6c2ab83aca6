"""File readers: path -> HxWxC numpy array (or its size from the header), DataError naming the
file when it is missing, corrupt or of an unsupported type.

The modality specs (:mod:`mmsam.data.modalities`) pair one of these readers with a conversion to
3 channels; the loaders and ``mmsam data check`` call them directly for labels and headers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import tifffile
import torch
from PIL import Image

from mmsam.errors import DataError

PathLike = Union[str, Path]

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
    """Shape of a ``.npy`` array without reading its data (memory-mapped); DataError naming the
    file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{p}: cannot read .npy header ({_why(p, exc)})") from exc
    shape = tuple(int(s) for s in arr.shape)
    del arr  # closes the memory map
    return shape


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


def read_image_bgr(path: PathLike) -> np.ndarray:
    """:func:`read_image` with the colour planes reversed, as ``cv2.imread`` returns them.

    For files written with OpenCV whose channel 0 therefore sits in the PNG's blue plane
    (the MUSES SDK projections).
    """
    arr = read_image(path)
    if arr.shape[2] >= 3:
        arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)
    return np.ascontiguousarray(arr)


def read_raster(path: PathLike) -> np.ndarray:
    """Read a raster (GeoTIFF orthophoto, DSM, JPG/PNG) to HxWxC keeping its bands as stored.

    Unlike :func:`read_image`, a 4-band TIFF that PIL opens as CMYK or RGBA is not colour
    converted: its bands come back raw (ISPRS Potsdam's ``*_RGBIR.tif`` -> R, G, B, IR). A TIFF
    PIL cannot decode is read with ``tifffile``. DataError names
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
    except DataError:
        if p.suffix.lower() not in (".tif", ".tiff"):
            raise
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
