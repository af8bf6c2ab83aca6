"""Official SAM / SAM 2 checkpoint files, read unchanged and checked key by key.

Formats (the official build_sam.py loaders):

- SAM ``.pth`` (``sam_vit_b_01ec64.pth``…): a flat state dict, keys ``image_encoder.*``,
  ``prompt_encoder.*``, ``mask_decoder.*``.
- SAM 2 ``.pt`` (``sam2.1_hiera_tiny.pt``…): ``{"model": state_dict}``, keys
  ``image_encoder.trunk.*``, ``image_encoder.neck.*``, ``sam_prompt_encoder.*``,
  ``sam_mask_decoder.*``, ``memory_attention.*``, ``memory_encoder.*`` and a few bare tensors.
- Either as ``.safetensors`` (flat).

Files are always opened with ``torch.load(map_location="cpu", weights_only=True)``. Every
failure is one :class:`~mmsam.errors.CheckpointError` naming the file and what does not fit.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmsam.errors import CheckpointError
from mmsam.fileio import compare_state_dicts

Family = Literal["sam", "sam2"]
FAMILY_NAMES = {"sam": "SAM (v1)", "sam2": "SAM 2"}

_MAX_LISTED = 10
# (width, blocks) of the official image encoders -> size name, for messages
_SAM_SIZES = {(768, 12): "ViT-B", (1024, 24): "ViT-L", (1280, 32): "ViT-H"}
_SAM2_SIZES = {(96, 12): "Hiera-T", (96, 16): "Hiera-S", (112, 24): "Hiera-B+", (144, 48): "Hiera-L"}


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a SAM / SAM 2 file into a flat ``{key: tensor}`` dict (SAM 2's ``"model"`` unwrapped)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint file not found: {p}")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p} is a directory, not a file")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint {p} cannot be read as a safetensors file (truncated or corrupt?): {e}"
            ) from e
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "weights only" in str(e).lower() or "weights_only" in str(e):
                raise CheckpointError(
                    f"checkpoint {p} holds Python objects other than tensors, which mmsam does not unpickle "
                    "(weights_only=True); if you trust the file, load it yourself and re-save its state dict "
                    f"with torch.save. Detail: {_first_line(e)}"
                ) from e
            raise CheckpointError(
                f"checkpoint {p} is not a PyTorch file (truncated or corrupt?): {_first_line(e)}"
            ) from e
        except Exception as e:  # torch.load fails on foreign bytes with many types (IndexError, KeyError…)
            raise CheckpointError(
                f"checkpoint {p} cannot be read as a PyTorch file (truncated, corrupt or another format): "
                f"{type(e).__name__}: {_first_line(e)}"
            ) from e
    return _as_state_dict(obj, p)


def _as_state_dict(obj: object, p: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {p} holds a {type(obj).__name__}, not a state dict")
    if isinstance(obj.get("model"), Mapping):  # SAM 2 wraps its state dict
        obj = obj["model"]
    elif isinstance(obj.get("state_dict"), Mapping):
        raise CheckpointError(
            f"checkpoint {p} is a training checkpoint (it has a 'state_dict' entry, as Lightning writes); "
            "give the official SAM / SAM 2 file (or resume training from it with the trainer instead)"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"checkpoint {p} is not a state dict of tensors: {len(bad)} entries are not tensors "
            f"({_listing(bad)})"
        )
    if not obj:
        raise CheckpointError(f"checkpoint {p} is empty")
    return dict(obj)


def checkpoint_family(state_dict: Mapping[str, torch.Tensor]) -> Family | None:
    """``"sam2"`` / ``"sam"`` by the keys' prefixes (``None`` if neither layout)."""
    keys = state_dict.keys()
    if any(k.startswith(("image_encoder.trunk.", "sam_mask_decoder.", "sam_prompt_encoder.", "memory_attention."))
           for k in keys):
        return "sam2"
    if any(k.startswith(("image_encoder.patch_embed.", "image_encoder.blocks.", "mask_decoder.", "prompt_encoder."))
           for k in keys):
        return "sam"
    return None


def sam2_version(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"2.1"`` if the SAM 2 state dict has SAM 2.1's ``no_obj_embed_spatial``, else ``"2.0"``."""
    return "2.1" if "no_obj_embed_spatial" in state_dict else "2.0"


def describe_state_dict(state_dict: Mapping[str, torch.Tensor], *, version: str | None = None) -> str:
    """A short description of the image encoder a state dict holds, e.g. ``SAM ViT-L (width 1024, 24 blocks)``.

    ``version`` overrides the SAM 2 version read from the keys (an image-only state dict has no
    ``no_obj_embed_spatial`` to tell 2.1 from 2.0).
    """
    family = checkpoint_family(state_dict)
    prefix = {"sam": "image_encoder.", "sam2": "image_encoder.trunk."}.get(family or "", "")
    w = state_dict.get(prefix + "patch_embed.proj.weight")
    if family is None or w is None:
        return "an unknown model"
    blocks = {m.group(1) for k in state_dict if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))}
    width, depth = int(w.shape[0]), len(blocks)
    if family == "sam":
        size = _SAM_SIZES.get((width, depth), "ViT")
        return f"SAM {size} (width {width}, {depth} blocks)"
    size = _SAM2_SIZES.get((width, depth), "Hiera")
    return f"SAM {version or sam2_version(state_dict)} {size} (width {width}, {depth} blocks)"


def check_family(
    state_dict: Mapping[str, torch.Tensor], expected: Family, *, path: str | os.PathLike, model: str
) -> None:
    """Refuse a file of the other family (or of neither) with one message saying which it is."""
    found = checkpoint_family(state_dict)
    if found == expected:
        return
    if found is None:
        raise CheckpointError(
            f"checkpoint {path} is neither a SAM nor a SAM 2 file: its keys ({_listing(list(state_dict))}) "
            f"have none of the official prefixes; backbone {model!r} expects a {FAMILY_NAMES[expected]} checkpoint"
        )
    other = {"sam": "a sam_vit_* backbone", "sam2": "a sam2_* / sam2.1_* backbone"}[found]
    raise CheckpointError(
        f"checkpoint {path} is a {FAMILY_NAMES[found]} checkpoint ({describe_state_dict(state_dict)}), "
        f"but backbone {model!r} is a {FAMILY_NAMES[expected]} model; use {other} for this file"
    )


def load_checked(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    path: str | os.PathLike,
    model: str,
    file_prefixes: Mapping[str, str] | None = None,
    ignore: Collection[str] = (),
    hint: str = "",
) -> None:
    """Strictly load ``state_dict`` (keys as in the file) into ``module``, or raise one CheckpointError.

    Args:
        file_prefixes: module-key prefix -> file-key prefix where they differ
            (e.g. ``{"mask_decoder.": "sam_mask_decoder."}``).
        ignore: file keys that are expected and skipped when present (not missing when absent).
        hint: a sentence put first in the error message (e.g. "the file is ViT-L, the model ViT-B").
    """
    model_sd = module.state_dict()
    expected = {_rename(mk, file_prefixes or {}): mk for mk in model_sd}  # file key -> module key
    present = [k for k in state_dict if k not in ignore]
    diff = compare_state_dicts({k: model_sd[mk] for k, mk in expected.items()}, {k: state_dict[k] for k in present})
    missing, unexpected, shapes = diff.missing, diff.unexpected, diff.shapes
    if diff:
        lines = [f"checkpoint {path} does not fit backbone {model!r}" + (f": {hint}" if hint else "")]
        if missing:
            lines.append(f"  {len(missing)} missing key(s), in the model but not in the file: {_listing(missing)}")
        if unexpected:
            lines.append(
                f"  {len(unexpected)} unexpected key(s), in the file but not in the model: {_listing(unexpected)}"
            )
        if shapes:
            lines.append(f"  {len(shapes)} shape mismatch(es): {_listing(shapes, sep='; ')}")
        raise CheckpointError("\n".join(lines))
    module.load_state_dict({expected[k]: state_dict[k] for k in present}, strict=True)


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize SAM's absolute position embedding ``(1, H, W, C)`` (channels last) to ``(1, *grid, C)``, bicubic."""
    x = pos_embed.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(grid), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).to(pos_embed.dtype).contiguous()


def resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Resize a relative-position table ``(L, head_dim)`` to ``(length, head_dim)``, linearly.

    The result equals the table SAM's own ``get_rel_pos`` interpolates on the fly.
    """
    x = table.float().t().unsqueeze(0)  # (1, head_dim, L)
    x = F.interpolate(x, size=length, mode="linear", align_corners=False)
    return x.squeeze(0).t().to(table.dtype).contiguous()


def sha256_of(path: str | os.PathLike, *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (a 2.5 GB ViT-H file never sits in memory)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _rename(key: str, prefixes: Mapping[str, str]) -> str:
    for old, new in prefixes.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _listing(items: list[str], *, sep: str = ", ") -> str:
    shown = sep.join(items[:_MAX_LISTED])
    return shown + (f" … (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
