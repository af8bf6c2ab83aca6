"""MFNet's Deep Fusion Module: a simple feature pyramid per modality and SE fusion at every scale.

Ma et al., IEEE TGRS 2025, Sec. III-C-3 and Fig. 6 (official: sstary/SSRS ``MFNet/UNetFormer_MMSAM.py``, ``fpn1x`` … ``fusion4``).
From the encoder's single stride-16 output ``F_m`` (the SAM neck, ``C`` = 256 channels) each
modality builds its own ViTDet-style pyramid::

    1/4 : ConvT(k2, s2) -> norm -> GELU -> ConvT(k2, s2)
    1/8 : ConvT(k2, s2)
    1/16: identity
    1/32: MaxPool2d(2)            (the official code; the paper says a stride-2 conv)

and at every scale ``i`` the fused map is the sum over the modalities present in each sample of
their squeeze-and-excitation reweighted maps, ``Σ_m SE_m,i(P_m,i)`` (with two streams,
``SE_x(F_x^i) + SE_y(F_y^i)``). SE: global average pool -> 1×1 conv C -> C/16 -> ReLU -> 1×1 conv
-> sigmoid -> channel weights.

The norm of the 1/4 branch is a channel LayerNorm for the optical stream and BatchNorm for the DSM
stream in the official code; ``norm="asymmetric"`` keeps that (first modality LayerNorm, every
other BatchNorm), ``"layer"`` / ``"batch"`` use one kind for all (``docs/methods/mfnet.md``).
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from mmsam.errors import ConfigError

PYRAMID_STRIDES = (4, 8, 16, 32)  # relative to the input, from a stride-16 map


class SEUnit(nn.Module):
    """Squeeze-and-excitation channel reweighting: ``x · sigmoid(W2 ReLU(W1 GAP(x)))``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class SimplePyramid(nn.Module):
    """One modality's pyramid: a stride-16 map to strides 4, 8, 16 and 32 (channels unchanged)."""

    def __init__(self, channels: int, norm: Literal["layer", "batch"]) -> None:
        super().__init__()
        norm_layer = LayerNorm2d(channels) if norm == "layer" else nn.BatchNorm2d(channels)
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(channels, channels, 2, stride=2), norm_layer, nn.GELU(),
            nn.ConvTranspose2d(channels, channels, 2, stride=2),
        )
        self.up8 = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.down32 = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.up4(x), self.up8(x), x, self.down32(x)]


class DeepFusionModule(nn.Module):
    """Per-modality pyramids and SE units; the fused pyramid is the sum over present modalities.

    Args:
        modalities: the trained modalities, optical first (its pyramid gets the LayerNorm under
            ``norm="asymmetric"``).
        channels: of the encoder output (256 for SAM's neck).
        norm: the 1/4 branch's norm (see the module docstring).
        reduction: SE channel reduction (16: 256 -> 16).

    ``forward(levels (M, B, C, h, w), names, present (M, B))`` returns the fused maps at strides
    4, 8, 16, 32 (``(B, C, 4h, 4w)`` … ``(B, C, h/2, w/2)``); ``names`` are the ``M`` stacked modalities.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        channels: int = 256,
        *,
        norm: Literal["asymmetric", "layer", "batch"] = "asymmetric",
        reduction: int = 16,
    ) -> None:
        super().__init__()
        if norm not in ("asymmetric", "layer", "batch"):
            raise ConfigError(f"dfm_norm must be 'asymmetric', 'layer' or 'batch', got {norm!r}")
        norms = {m: ("layer" if i == 0 else "batch") if norm == "asymmetric" else norm for i, m in enumerate(modalities)}
        self.pyramids = nn.ModuleDict({m: SimplePyramid(channels, norms[m]) for m in modalities})  # type: ignore[arg-type]
        self.se = nn.ModuleDict(
            {m: nn.ModuleList(SEUnit(channels, reduction) for _ in PYRAMID_STRIDES) for m in modalities}
        )

    def forward(self, levels: torch.Tensor, names: Sequence[str], present: torch.Tensor) -> list[torch.Tensor]:
        fused: list[torch.Tensor] | None = None
        for i, name in enumerate(names):
            w = present[i].to(levels.dtype).view(-1, 1, 1, 1)
            maps = [se(p) * w for se, p in zip(self.se[name], self.pyramids[name](levels[i]))]
            fused = maps if fused is None else [f + m for f, m in zip(fused, maps)]
        assert fused is not None
        return fused
