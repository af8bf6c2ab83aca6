"""Checkpoints of the papers' own code, converted to mmsam (``mmsam import``).

Each module maps the official state dict onto mmsam's method by the key rules that the parity
scripts in ``benchmarks/parity/`` verified against the running official code.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from mmsam.errors import CheckpointError, ConfigError

#: ``--from`` name -> (module, the mmsam method class it fills)
IMPORTERS: dict[str, tuple[str, str]] = {
    "memorysam": ("mmsam.interop.memorysam", "MemorySAM"),
    "mfnet": ("mmsam.interop.mfnet", "MFNet"),
    "convlora": ("mmsam.interop.convlora", "ConvLoRASAM"),
}

__all__ = ["IMPORTERS", "convert", "read_official_state"]


def read_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from an official training script's file (``weights_only=True``);
    ``{"state_dict": …}`` / ``{"model": …}`` wrappers and DataParallel's ``module.`` are removed."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (pickle with code, truncated or foreign bytes: one line)
        raise CheckpointError(f"{p}: cannot be read as a tensors-only PyTorch file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p}: not a state dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def convert(kind: str, state: Mapping[str, torch.Tensor], method: Any, modalities: Any) -> dict[str, torch.Tensor]:
    """Our state-dict entries for ``method`` from an official ``kind`` state dict."""
    if kind not in IMPORTERS:
        raise ConfigError(f"--from {kind!r}: known formats are {', '.join(sorted(IMPORTERS))}")
    module_name, cls_name = IMPORTERS[kind]
    if type(method).__name__ != cls_name:
        raise ConfigError(f"--from {kind} fills an mmsam {cls_name}, but the config builds a {type(method).__name__}")
    to_ours: Callable[..., dict[str, torch.Tensor]] = importlib.import_module(module_name).to_ours
    return to_ours(state, method.state_dict(), list(modalities))
