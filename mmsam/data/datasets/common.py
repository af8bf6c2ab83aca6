"""Pieces the benchmark loaders share: argument checks, size checks, item assembly."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from mmsam.data.modalities import ModalitySpec, get_modality, validate_modalities
from mmsam.data.readers import image_size, npy_shape, read_image
from mmsam.data.transforms import IGNORE_INDEX
from mmsam.errors import ConfigError, DataError

PathLike = Union[str, Path]
Transform = Callable[[dict[str, Any]], dict[str, Any]]


def check_modalities(dataset: str, modalities: Sequence[str], provided: Sequence[str],
                     missing: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate ``modalities`` (registered, provided by ``dataset``) and ``missing`` (a subset)."""
    mods = validate_modalities(modalities)
    unsupported = [m for m in mods if m not in provided]
    if unsupported:
        raise ConfigError(f"{dataset} has no modality {unsupported}; it provides "
                          f"{', '.join(provided)}")
    missing = tuple(missing)
    extra = [m for m in missing if m not in mods]
    if extra:
        raise ConfigError(f"missing modalities {extra} are not among {list(mods)}")
    if set(missing) == set(mods):
        raise ConfigError("at least one modality must be present (all are listed as missing)")
    return mods, missing


def check_names(value: Optional[Sequence[str]], allowed: Sequence[str],
                what: str) -> Optional[tuple[str, ...]]:
    """None stays None; a name or list of names must all be in ``allowed``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    bad = [v for v in value if v not in allowed]
    if bad:
        raise ConfigError(f"unknown {what} {bad}; valid: {', '.join(allowed)}")
    return tuple(value)


def is_hidden(path: PathLike, below: Optional[PathLike] = None) -> bool:
    """True for a dot-file (``._x.png`` AppleDouble, ``.DS_Store``) or, with ``below``, a file
    inside a dot-folder under ``below``. Python's ``glob.glob``, which the reference loaders use,
    skips such names; ``Path.glob`` does not."""
    p = Path(path)
    if below is not None and p.is_relative_to(below):
        return any(part.startswith(".") for part in p.relative_to(below).parts)
    return p.name.startswith(".")


def visible_glob(folder: PathLike, pattern: str) -> list[Path]:
    """``sorted(folder.glob(pattern))`` without hidden entries (see :func:`is_hidden`)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(pattern) if not is_hidden(p, folder))


def visible_files(folder: PathLike) -> list[Path]:
    """The files directly in ``folder`` whose names do not start with '.', sorted ([] if none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))


def find_file(folders: Sequence[PathLike], stem: str, suffixes: Sequence[str]) -> Optional[Path]:
    """The first file ``<folder>/<stem><suffix>`` over ``folders`` (in order), the name compared
    case-insensitively (``.TIF``, ``.tiff``); hidden files are never returned. None if absent."""
    if stem.startswith("."):
        return None
    wanted = {f"{stem}{s}".lower() for s in suffixes}
    for folder in folders:
        folder = Path(folder)
        exact = [folder / f"{stem}{s}" for s in suffixes]
        hit = next((e for e in exact if e.is_file()), None)
        if hit is not None:
            return hit
        hit = next((f for f in visible_files(folder) if f.name.lower() in wanted), None)
        if hit is not None:
            return hit
    return None


def misplaced(base: PathLike, depth: int, suffix: str, splits: Sequence[str] = (),
              split_at: Optional[int] = None) -> list[Path]:
    """Visible ``*<suffix>`` files under ``base`` that a glob of ``depth`` levels misses.

    A file is misplaced when its path below ``base`` has not ``depth`` parts, or (with
    ``split_at``) its part ``split_at`` is not one of ``splits``. Such files are silently
    skipped by the loaders' globs; ``mmsam data check`` reports them.
    """
    base = Path(base)
    if not base.is_dir():
        return []
    out = []
    for f in sorted(base.rglob(f"*{suffix}")):
        if not f.is_file() or is_hidden(f, base):
            continue
        parts = f.relative_to(base).parts
        if len(parts) != depth or (split_at is not None and parts[split_at] not in splits):
            out.append(f)
    return out


def file_hw(path: PathLike) -> tuple[int, int]:
    """(H, W) of an image (header only) or a ``.npy`` plane (header only)."""
    p = Path(path)
    if p.suffix == ".npy":
        shape = npy_shape(p)
        if len(shape) == 3 and shape[2] == 1:
            shape = shape[:2]
        if len(shape) != 2:
            raise DataError(f"{p}: expected an HxW array, got shape {shape}")
        return shape[0], shape[1]
    return image_size(p)


def check_file(path: Path, what: str, sample_id: str, expected: tuple[int, int],
               expected_from: str, *, match_size: bool = True, size_prefix: str = "") -> None:
    """DataError naming ``path`` if it is missing or its size differs from ``expected``.

    The header is read (and must be readable) either way; with ``match_size`` False its size
    is not compared. ``size_prefix`` goes before the size in the message (e.g. "image is ").
    """
    if not path.is_file():
        raise DataError(f"{path}: missing file for {what} of sample {sample_id}")
    hw = file_hw(path)
    if match_size and hw != expected:
        raise DataError(f"{path}: {size_prefix}{hw[0]}x{hw[1]} (HxW) but {expected_from} is "
                        f"{expected[0]}x{expected[1]}")


def read_id_image(path: PathLike, first_channel: bool = False) -> np.ndarray:
    """A single-channel id image as HxW int64 (palette PNGs give their indices).

    Multi-channel images are accepted only when every channel is equal (DataError otherwise),
    or, with ``first_channel``, whatever the other channels hold: the first one is used.
    """
    p = Path(path)
    raw: Optional[np.ndarray] = None
    if p.is_file():
        try:
            with Image.open(p) as img:
                if img.mode == "P":
                    img.load()
                    raw = np.array(img)
        except Exception:
            raw = None  # read_image below names the file and the problem
    if raw is None:
        raw = read_image(p)
    if not np.issubdtype(raw.dtype, np.integer):
        raise DataError(f"{p}: label must be an integer image, got {raw.dtype}")
    if raw.ndim == 3:
        if (not first_channel and raw.shape[2] > 1
                and not all(np.array_equal(raw[..., 0], raw[..., c])
                            for c in range(1, raw.shape[2]))):
            raise DataError(f"{p}: label has {raw.shape[2]} differing channels; expected a "
                            f"single-channel id image")
        raw = raw[..., 0]
    return raw.astype(np.int64)


def check_label_ids(ids: np.ndarray, num_classes: int, path: PathLike) -> np.ndarray:
    """Return ``ids`` if all are in 0..num_classes-1 or 255; DataError naming the rest."""
    bad = np.setdiff1d(np.unique(ids), np.r_[0:num_classes, IGNORE_INDEX])
    if bad.size:
        raise DataError(f"{path}: label ids {bad.tolist()} outside 0..{num_classes - 1} "
                        f"(255 = ignore)")
    return ids


def assemble_item(images: dict[str, torch.Tensor], label: torch.Tensor,
                  modalities: Sequence[str], missing: Sequence[str],
                  specs: dict[str, ModalitySpec], transform: Optional[Transform],
                  meta: dict[str, str]) -> dict[str, Any]:
    """Run the joint transform on [0, 1] images, normalise, zero the missing modalities."""
    sample: dict[str, Any] = {"modalities": images, "label": label}
    if transform is not None:
        sample = transform(sample)
    out_hw = tuple(sample["label"].shape[-2:])
    mods = {}
    for m in modalities:
        if m in missing:
            mods[m] = torch.zeros(3, *out_hw, dtype=torch.float32)
        else:
            mods[m] = specs[m].normalize(sample["modalities"][m])
    return {
        "modalities": mods,
        "present": {m: torch.tensor(m not in missing) for m in modalities},
        "label": sample["label"].long(),
        "meta": meta,
    }


def specs_for(modalities: Sequence[str], spec_names: Optional[dict[str, str]] = None
              ) -> dict[str, ModalitySpec]:
    """Modality name -> registered spec (``spec_names`` maps a name to another spec)."""
    spec_names = spec_names or {}
    return {m: get_modality(spec_names.get(m, m)) for m in modalities}
