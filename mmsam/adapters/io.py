"""Adapter-only files: the trainable tensors of a model in safetensors, with their config.

Like PEFT's ``save_pretrained``: only what training changed (adapters, fusion, heads — the
``modules_to_save`` idea) is written, a few MB instead of the frozen backbone's hundreds, and
the metadata names the base checkpoint (and its SHA-256) the adapters belong to.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mmsam.errors import CheckpointError
from mmsam.fileio import atomic_write_with, compare_state_dicts

FORMAT = "mmsam-adapters/1"


def trainable_state_dict(module: nn.Module) -> dict[str, Any]:
    """The trainable parameters of ``module`` by name (detached, contiguous, on CPU)."""
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def save_trainable(module: nn.Module, path: str | Path, *, config: dict[str, Any] | None = None) -> int:
    """Write ``module``'s trainable tensors to ``path`` atomically; returns the element count."""
    path = Path(path)
    state = trainable_state_dict(module)
    if not state:
        raise CheckpointError(f"{path}: the model has no trainable parameters to save")
    meta = {"format": FORMAT, "config": json.dumps(config or {}, sort_keys=True, default=str)}
    atomic_write_with(path, lambda tmp: save_file(state, tmp, metadata=meta))  # tmp in path's folder, fsync, rename
    return sum(t.numel() for t in state.values())


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The config stored with an adapter file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mmsam adapter file (format {meta.get('format')!r})")
    return json.loads(meta.get("config", "{}"))


def load_trainable(module: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load an adapter file into ``module`` (strict on names and shapes); returns its config."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: adapter file not found")
    config = read_metadata(path)
    state = load_file(str(path))
    own = dict(module.named_parameters())
    diff = compare_state_dicts(own, state, required=[n for n, p in own.items() if p.requires_grad])
    if diff:
        raise CheckpointError(
            f"{path}: adapters do not fit this model: missing {sorted(diff.missing)[:8]} ({len(diff.missing)}), "
            f"unexpected {sorted(diff.unexpected)[:8]} ({len(diff.unexpected)}), shape mismatches {sorted(diff.shapes)[:8]}"
        )
    for name, tensor in state.items():
        own[name].data.copy_(tensor)
    return config
