"""MemorySAM (Chenfei-Liao/MemorySAM, ``LoRA_Sam`` of its SAM 2 training script) state dicts ->
mmsam's ``MemorySAM``.

``sam.<k>`` is the official ``SAM2Base`` (ours: ``backbone.sam2_model.<k>``). The official
``_LoRA_qkv`` wraps each qkv Linear as ``qkv.qkv`` with ``linear_{a,b}_{q,v}`` (``y += B A x``, no
scaling); ours is a ``LoRALinear`` with ``base_layer`` and ``lora.lora_{A,B}.{0: q, 1: v}``.
``benchmarks/parity/memorysam.py`` runs both models with tensors mapped this way (max |Δ| 6e-7
on the logits).
"""
from __future__ import annotations

from typing import Mapping

import torch

from mmsam.errors import CheckpointError

_RENAMES = (
    (".attn.qkv.qkv.", ".attn.qkv.base_layer."),
    (".attn.qkv.linear_a_q.", ".attn.qkv.lora.lora_A.0."),
    (".attn.qkv.linear_b_q.", ".attn.qkv.lora.lora_B.0."),
    (".attn.qkv.linear_a_v.", ".attn.qkv.lora.lora_A.1."),
    (".attn.qkv.linear_b_v.", ".attn.qkv.lora.lora_B.1."),
)


def official_to_ours(key: str) -> str:
    """Official ``LoRA_Sam`` state-dict key -> our ``MemorySAM`` state-dict key."""
    if not key.startswith("sam."):
        raise CheckpointError(f"unexpected key {key!r}: an official LoRA_Sam state dict has every tensor under 'sam.'")
    k = "backbone.sam2_model." + key[len("sam."):]
    for theirs, ours in _RENAMES:
        k = k.replace(theirs, ours)
    return k


def ours_to_official(key: str) -> str:
    """The inverse of :func:`official_to_ours`."""
    prefix = "backbone.sam2_model."
    if not key.startswith(prefix):
        raise KeyError(key)
    k = "sam." + key[len(prefix):]
    for theirs, ours in _RENAMES:
        k = k.replace(ours, theirs)
    return k


def to_ours(state: Mapping[str, torch.Tensor], ours: Mapping[str, torch.Tensor], modalities: object = None) -> dict[str, torch.Tensor]:
    """Our state-dict entries from an official ``LoRA_Sam`` state dict (every tensor mapped)."""
    out: dict[str, torch.Tensor] = {}
    unknown, shapes = [], []
    for key, value in state.items():
        mine = official_to_ours(key)
        if mine not in ours:
            unknown.append(key)
        elif ours[mine].shape != value.shape:
            shapes.append(f"{key} {tuple(value.shape)} vs {tuple(ours[mine].shape)}")
        else:
            out[mine] = value.clone()
    if unknown or shapes:
        raise CheckpointError(
            f"the official MemorySAM checkpoint does not fit this model (backbone size, class count, LoRA rank?): "
            f"{len(unknown)} unknown tensors {unknown[:5]}, {len(shapes)} shape mismatches {shapes[:5]}"
        )
    return out
