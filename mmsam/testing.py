"""Deterministic weights and golden files for the parity tests.

The parity scripts in ``benchmarks/parity/`` fill an mmsam model with :func:`fill_deterministic`,
copy the same tensors into the papers' official model, run both on one fixed input and store the
official outputs in ``tests/golden/<name>.safetensors``. The tests rebuild the mmsam model, fill it
the same way and compare with the stored outputs, so CI checks every method against the official
numbers without the official code.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import torch
from torch import nn

__all__ = ["fill_deterministic", "fixed_input", "load_golden", "save_golden"]


def _generator(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))


def fill_deterministic(module: nn.Module, seed: int = 0, *, std: float = 0.05, buffers: bool = True) -> nn.Module:
    """Overwrite every floating parameter (and buffer) with values that depend only on ``seed``
    and the tensor's name: weights ``N(0, std²)``; norm weights ``1 + N(0, std²)``; BatchNorm
    running variances ``1 + |N(0, std²)|``. Independent of construction order, so any
    refactor that keeps the state-dict names keeps the values."""
    with torch.no_grad():
        tensors = dict(module.named_parameters())
        if buffers:
            tensors.update({k: v for k, v in module.named_buffers() if k.rsplit(".", 1)[-1] in ("running_mean", "running_var")})
        for name, t in sorted(tensors.items()):
            if not t.is_floating_point():
                continue
            values = torch.randn(t.shape, generator=_generator(seed, name), dtype=torch.float64) * std
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                values = 1 + values.abs()
            elif leaf == "weight" and t.dim() == 1:  # norm scales
                values = 1 + values
            t.copy_(values.to(t.dtype))
    return module


def fixed_input(shape: tuple[int, ...], seed: int = 0, *, name: str = "input") -> torch.Tensor:
    """A reproducible ``N(0, 1)`` input tensor."""
    return torch.randn(shape, generator=_generator(seed, name), dtype=torch.float64).float()


def save_golden(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a golden file (safetensors; ``metadata`` records the official commit and the command)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def load_golden(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a golden file: tensors and metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
