"""Cross-entropy with online hard example mining (OHEM), as in CMNeXt / MemorySAM.

Semantics follow ``OhemCrossEntropy`` in ``semseg/losses.py`` of the official MemorySAM code
(Chenfei-Liao/MemorySAM; the same class as in CMNeXt's jamycheung/DELIVER):
per-pixel CE ignoring ``ignore_index``; keep the pixels whose loss exceeds ``-log(thresh)``,
but at least ``n_min = valid_pixels // 16`` of the hardest ones; average those.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class OhemCrossEntropy(nn.Module):
    """OHEM cross-entropy over logits ``(B, K, H, W)`` and labels ``(B, H, W)``."""

    def __init__(self, *, ignore_index: int = 255, thresh: float = 0.7, min_kept_fraction: float = 1 / 16) -> None:
        super().__init__()
        if not 0.0 < thresh < 1.0:
            raise ValueError(f"OHEM thresh is a probability in (0, 1), got {thresh}")
        self.ignore_index = ignore_index
        self.loss_thresh = -math.log(thresh)
        self.min_kept_fraction = min_kept_fraction

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, labels, ignore_index=self.ignore_index, reduction="none").flatten()
        valid = labels.flatten() != self.ignore_index
        n_valid = int(valid.sum())
        if n_valid == 0:
            return logits.sum() * 0.0
        loss = loss[valid]
        n_min = max(1, int(n_valid * self.min_kept_fraction))
        hard = loss[loss > self.loss_thresh]
        if hard.numel() < n_min:
            hard, _ = loss.topk(n_min)
        return hard.mean()


def build_loss(name: str, *, ignore_index: int = 255, ohem_thresh: float = 0.7) -> nn.Module:
    """``"ce"`` (plain cross-entropy) or ``"ohem"``, both ignoring ``ignore_index``."""
    if name == "ce":
        return nn.CrossEntropyLoss(ignore_index=ignore_index)
    if name == "ohem":
        return OhemCrossEntropy(ignore_index=ignore_index, thresh=ohem_thresh)
    from mmsam.errors import ConfigError

    raise ConfigError(f"unknown loss {name!r}; choose 'ce' or 'ohem'")
