"""MemorySAM's semantic prototype memory (SPMM): training-only class prototypes and their loss.

Liao et al., "MemorySAM", arXiv 2503.06700, Eq. 7-12 as the official code computes them
(``PrototypeSegmentation`` in ``train_sam2_lora.py`` of Chenfei-Liao/MemorySAM; choices in
``docs/methods/memorysam.md``):
the modality-mean stride-4 features are pooled per class into the batch's *current*
prototypes; a *global* prototype memory (a buffer, not a parameter) moves towards them with
momentum; the loss pulls the current prototypes towards the updated global ones (MSE).

Two forms of the prototype and the loss scale:
    ``"code"`` (default): the official code's: each class sum is divided by its pixel count
        twice, and the MSE is multiplied by 256·256 = 65536 (a constant, whatever the input size).
    ``"clean"``: the paper's reading: class-mean prototypes, plain MSE.
Either way the result is multiplied by ``weight`` (the paper's lambda = 1).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

CODE_SCALE = 256.0 * 256.0  # `loss * 256 * 256` in the official train_sam2_lora.py


class SemanticPrototypeMemory(nn.Module):
    """Global class prototypes ``(K, C)`` with a momentum update and the prototype adaptation loss.

    Args:
        num_classes: K; label values outside ``[0, K)`` (e.g. 255) are ignored.
        channels: C, channels of the features (32 for SAM 2's ``conv_s0`` at width 256).
        momentum: weight of the current batch in ``G <- (1 - m) G + m P`` (0.2: ``0.8 * G + 0.2 * P`` in train_sam2_lora.py).
        weight: lambda, the loss weight (1).
        form: ``"code"`` or ``"clean"`` (module docstring).

    ``forward(features (B, C, h, w), labels (B, H, W))`` updates the memory and returns the
    weighted loss. The global prototypes are a persistent buffer, so they are saved in and
    restored from checkpoints. Under ``torch.distributed`` the update uses the batch over
    all processes (``"clean"``: all-reduced class sums and counts; ``"code"``: the mean of the
    processes' prototypes, which keeps the code's per-process scale), so every process keeps the
    same memory; the loss uses the local prototypes, as the official per-GPU code does.
    """

    def __init__(
        self,
        num_classes: int,
        channels: int,
        *,
        momentum: float = 0.2,
        weight: float = 1.0,
        form: Literal["code", "clean"] = "code",
    ) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"SPMM momentum (weight of the new batch) must be in (0, 1], got {momentum}")
        if weight < 0:
            raise ValueError(f"SPMM weight must be >= 0, got {weight}")
        if form not in ("code", "clean"):
            raise ValueError(f"SPMM form must be 'code' or 'clean', got {form!r}")
        self.num_classes = num_classes
        self.momentum = momentum
        self.weight = weight
        self.form = form
        self.register_buffer("prototypes", torch.zeros(num_classes, channels))

    def class_sums(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class feature sums ``(K, C)`` and pixel counts ``(K,)`` over the whole batch.

        Labels are nearest-resized to the feature size first, as the official code.
        """
        b, c, h, w = features.shape
        if labels.shape[-2:] != (h, w):
            labels = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        lab = labels.reshape(-1)
        lab = torch.where((lab >= 0) & (lab < self.num_classes), lab, self.num_classes)  # ignored -> spare row
        feat = features.float().permute(0, 2, 3, 1).reshape(-1, c)
        sums = feat.new_zeros(self.num_classes + 1, c).index_add(0, lab, feat)[:-1]
        counts = torch.bincount(lab, minlength=self.num_classes + 1)[:-1].to(feat.dtype)
        return sums, counts

    def current_prototypes(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Class means (``"clean"``) or sums over count squared (``"code"``); absent classes -> 0."""
        n = counts.clamp(min=1)[:, None]
        return sums / (n * n) if self.form == "code" else sums / n

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sums, counts = self.class_sums(features, labels)
        protos = self.current_prototypes(sums, counts)
        self.update(protos.detach(), sums.detach(), counts)
        loss = F.mse_loss(protos, self.prototypes.clone())  # after the update, as the code does
        if self.form == "code":
            loss = loss * CODE_SCALE
        return loss * self.weight

    @torch.no_grad()
    def update(self, protos: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """``G <- (1 - m) G + m P`` with P the batch's prototypes over all processes."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            if self.form == "clean":
                sums, counts = sums.clone(), counts.clone()
                dist.all_reduce(sums)
                dist.all_reduce(counts)
                protos = self.current_prototypes(sums, counts)
            else:
                protos = protos.clone()
                dist.all_reduce(protos)
                protos /= dist.get_world_size()
        self.prototypes.mul_(1.0 - self.momentum).add_(protos.to(self.prototypes.dtype), alpha=self.momentum)

    def extra_repr(self) -> str:
        k, c = self.prototypes.shape
        return f"classes={k}, channels={c}, momentum={self.momentum}, weight={self.weight}, form={self.form!r}"
