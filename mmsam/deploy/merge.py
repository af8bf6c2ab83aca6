"""Merged export: LoRA folded into the frozen encoder, written in the official SAM / SAM 2 layout.

The result is the base file itself with every adapted encoder weight replaced by
``W + ΔW``, so the official builders load it unchanged
(``segment_anything.sam_model_registry["vit_b"](checkpoint=...)``,
``sam2.build_sam.build_sam2(cfg, ckpt_path=...)``) and its image encoder computes what the
adapted encoder computes. The heads (and any fusion) stay in the model folder. Adapters that are
not a fixed linear update cannot merge: MoE-LoRA (one expert per modality), Conv-LoRA (non-linear
experts), MMAdapter (non-linear bottlenecks), MMLoRA (streams mixed at the MLP stage).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mmsam.adapters.inject import adapter_layers
from mmsam.errors import CheckpointError, ConfigError

__all__ = ["merged_state_dict", "write_merged"]


def merged_state_dict(method: Any, base_file: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """The base file's state dict with the method's LoRA folded in; returns it and the family."""
    from mmsam.backbones.checkpoints import checkpoint_family, read_checkpoint

    backbone = getattr(method, "backbone", None)
    encoder = getattr(backbone, "image_encoder", None)
    if encoder is None:
        raise ConfigError(f"{type(method).__name__} has no SAM / SAM 2 image encoder to merge into")
    layers = list(adapter_layers(encoder))
    if not layers:
        raise ConfigError(f"{type(method).__name__}: no adapter in the image encoder, nothing to merge")
    blocked = sorted({type(layer).__name__ for _, layer in layers if not layer.supports_merge})
    if blocked:
        raise ConfigError(
            f"{', '.join(blocked)} cannot be merged into the encoder weights (not one fixed linear update per layer); "
            "export the model folder without --merged"
        )
    state = read_checkpoint(base_file)
    family = checkpoint_family(state) or "sam"
    for name, layer in layers:
        key = f"image_encoder.{name}.weight"
        if key not in state:
            raise CheckpointError(f"{base_file}: has no {key}, so it is not the base these adapters were trained on")
        if layer.merged:
            raise ConfigError(f"{name}: already merged; unmerge it before a merged export")
        base = state[key]
        if base.shape != layer.base_layer.weight.shape:
            raise CheckpointError(f"{base_file}: {key} is {tuple(base.shape)}, the model's {tuple(layer.base_layer.weight.shape)}")
        with torch.no_grad():
            state[key] = (base.float() + layer.get_delta_weight().detach().cpu().float()).to(base.dtype).contiguous()
    return state, family


def write_merged(method: Any, base_file: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write the merged checkpoint to ``output`` (a flat dict for SAM, ``{"model": …}`` for SAM 2)."""
    from mmsam.fileio import atomic_write_with

    state, family = merged_state_dict(method, base_file)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(out, lambda tmp: torch.save({"model": state} if family == "sam2" else state, tmp))
    return out
