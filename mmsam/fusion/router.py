"""MLE-SAM's cross-modal router: per image and per feature level, a weight for each modality.

MLE-SAM (Zhu et al., arXiv 2412.04220) Eq. 8–9, as relayed by secondary summaries of the paper
(no official code exists; our choices in ``docs/methods/mlesam.md``): for level ``i`` and
modality ``m``, ``f = GAP(Y_i^m)``, ``s = σ(W_i f + b_i)`` (one scalar per modality from a
Linear(C, 1) shared across modalities, one per level), a softmax across modalities, and only the
top-k modalities kept. Weights are per image, per level, per modality — not per pixel.

Absent modalities (``present`` False for a sample, or not in the batch at all) are excluded
*before* the softmax, so the weights renormalise over what is present; zeros are never scored
as if they were data.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class ModalityRouter(nn.Module):
    """Weights ``(M, B)`` per level and the routed features ``(B, C, h, w)``.

    Args:
        channels: C of every level.
        num_levels: number of feature levels (3 for SAM 2's FPN, 1 for SAM ViT).
        top_k: keep only the k highest-scoring present modalities per image (``None``: all).
        gate: ``"sigmoid"`` applies σ before the softmax as the paper's Eq. 8 is quoted;
            ``"none"`` feeds the raw scores to the softmax (sharper weights).
    """

    def __init__(self, channels: int, num_levels: int, *, top_k: int | None = None, gate: Literal["sigmoid", "none"] = "sigmoid") -> None:
        super().__init__()
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        if gate not in ("sigmoid", "none"):
            raise ValueError(f"gate must be 'sigmoid' or 'none', got {gate!r}")
        self.scorers = nn.ModuleList(nn.Linear(channels, 1) for _ in range(num_levels))
        self.top_k = top_k
        self.gate = gate

    def weights(self, level: int, features: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Routing weights ``(M, B)`` for one level's features ``(M, B, C, h, w)``."""
        scores = self.scorers[level](features.mean(dim=(-2, -1))).squeeze(-1)  # (M, B)
        if self.gate == "sigmoid":
            scores = torch.sigmoid(scores)
        mask = present.bool()
        if self.top_k is not None and self.top_k < scores.shape[0]:
            ranked = scores.masked_fill(~mask, float("-inf"))
            kth = ranked.topk(self.top_k, dim=0).values[-1:]  # (1, B)
            mask = mask & (ranked >= kth)
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=0).nan_to_num(0.0)  # a sample with nothing present gets 0

    def forward(self, levels: list[torch.Tensor], present: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        fused, all_weights = [], []
        for i, feats in enumerate(levels):
            w = self.weights(i, feats, present)
            fused.append(torch.einsum("mbchw,mb->bchw", feats, w))
            all_weights.append(w)
        return fused, all_weights
