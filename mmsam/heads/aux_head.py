"""A light multi-scale auxiliary head (SegFormer-style all-MLP decoder).

MLE-SAM supervises an auxiliary head that fuses the multi-scale FPN features (Zhu et al.,
arXiv 2412.04220, abstract); its architecture is not given and no official code exists. This head projects each
level with a 1×1 conv, upsamples to the finest level, concatenates, fuses with a 1×1 conv +
BatchNorm + ReLU and classifies with a 1×1 conv (as SegFormer's decoder; choice documented in
``docs/methods/mlesam.md``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiScaleAuxHead(nn.Module):
    """``forward(levels)`` -> logits ``(B, K, h0, w0)`` at the finest level's resolution."""

    def __init__(self, in_channels: int, num_levels: int, num_classes: int, *, embed_dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(in_channels, embed_dim, 1) for _ in range(num_levels))
        self.fuse = nn.Sequential(
            nn.Conv2d(num_levels * embed_dim, embed_dim, 1, bias=False), nn.BatchNorm2d(embed_dim), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        size = levels[0].shape[-2:]
        feats = [
            F.interpolate(p(x), size=size, mode="bilinear", align_corners=False) if x.shape[-2:] != size else p(x)
            for p, x in zip(self.proj, levels)
        ]
        return self.classifier(self.dropout(self.fuse(torch.cat(feats, dim=1))))
