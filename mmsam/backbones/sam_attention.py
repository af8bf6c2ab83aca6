"""SAM ViT attention through PyTorch's ``scaled_dot_product_attention`` (SDPA).

The official ``segment_anything.modeling.image_encoder.Attention`` computes attention by hand:
``(q·scale) @ kᵀ``, plus the decomposed relative-position bias of MViTv2 (``add_decomposed_rel_pos``),
softmax, ``@ v``; autograd then keeps the score and probability maps of every head. Here the same
bias is built once and passed to SDPA as its additive ``attn_mask``, so the fused kernels (flash /
memory-efficient on GPU, the CPU flash kernel) do the rest: same parameters, same state-dict keys,
same outputs within float rounding (checked against the official module in
``tests/backbones/test_sam_attention.py``).

:func:`set_sam_attention` switches every SAM attention module of a model between the two
implementations in place (a class swap, no copy). SAM backbones are built with ``"official"``;
the task's ``sam_attention: sdpa`` (``SegmentationTask``) switches them.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn

from mmsam.errors import ConfigError

AttentionImpl = Literal["sdpa", "official"]
ATTENTION_IMPLS = ("sdpa", "official")


def decomposed_rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """The bias ``add_decomposed_rel_pos`` adds to the scores, as a tensor ``(..., H·W, H·W)``.

    ``q``: ``(..., H·W, C)`` unscaled queries (the official code uses them unscaled too).
    """
    h, w = size
    rh = get_rel_pos(h, h, rel_pos_h)  # (H, H, C)
    rw = get_rel_pos(w, w, rel_pos_w)  # (W, W, C)
    r_q = q.reshape(*q.shape[:-2], h, w, q.shape[-1])
    rel_h = torch.einsum("...hwc,hkc->...hwk", r_q, rh)
    rel_w = torch.einsum("...hwc,wkc->...hwk", r_q, rw)
    bias = rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)  # (..., H, W, kH, kW)
    return bias.reshape(*q.shape[:-2], h * w, h * w)


class SdpaAttention(Attention):
    """The official ``Attention`` (same ``__init__`` and parameters) with an SDPA ``forward``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, H·W, C)
        bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w)) if self.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


def set_sam_attention(model: nn.Module, impl: AttentionImpl = "sdpa") -> int:
    """Switch every SAM ViT attention module inside ``model`` to ``impl``; returns how many were switched.

    ``"sdpa"``: :class:`SdpaAttention`; ``"official"``: the hand-written official ``Attention``.
    Parameters, buffers and adapters wrapped around or inside the modules are untouched.
    """
    if impl not in ATTENTION_IMPLS:
        raise ConfigError(f"SAM attention must be one of {', '.join(ATTENTION_IMPLS)}, got {impl!r}")
    cls = SdpaAttention if impl == "sdpa" else Attention
    n = 0
    for m in model.modules():
        if type(m) in (Attention, SdpaAttention):
            m.__class__ = cls
            n += 1
    return n
