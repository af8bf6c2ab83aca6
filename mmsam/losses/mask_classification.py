"""The Conv-LoRA paper's losses: mask classification (Mask2Former) and the binary-task losses.

Official Conv-LoRA code: AutoGluon ``multimodal/src/autogluon/multimodal/models/sam.py``,
``optim/losses/utils.py``, ``optim/losses/structure_loss.py`` and
``examples/automm/Conv-LoRA/run_semantic_segmentation.py``. It trains

* multi-class segmentation with Hugging Face's ``Mask2FormerLoss`` built from a default
  ``Mask2FormerConfig``: Hungarian matching of the N query masks to the per-class ground-truth
  masks (cost: ``-p(class)`` x 1 + point-sampled sigmoid BCE x 5 + dice x 5 on 12,544 random
  points; transformers 4.38, the version AutoGluon pinned when Conv-LoRA landed, hard-codes the
  class cost 1.0 in ``Mask2FormerLoss.__init__``), then cross-entropy on the classes (the "no
  object" class down-weighted to 0.1) and BCE + dice on importance-sampled points (oversample 3,
  75 % most uncertain), each normalised by the number of ground-truth masks. The three terms are
  summed **unweighted**: ``Mask2FormerLoss.forward`` returns them unweighted (its ``weight_dict``,
  CE 10 / mask 5 / dice 5 in AutoGluon's config, is applied only by
  ``Mask2FormerForUniversalSegmentation``, which AutoGluon does not use) and AutoGluon's
  ``SemanticSegmentationLitModule._compute_loss`` (``multimodal/src/autogluon/multimodal/optim/
  lit_semantic_seg.py``) adds ``dict_loss.values()`` as they are: effective weights 1 / 1 / 1;
* binary tasks with the PraNet "structure loss" (BCE + boundary-weighted IoU), SBU shadow with a
  balanced BCE.

Written from those definitions; the Hungarian matching is scipy's.
"""
from __future__ import annotations

from typing import Callable

import scipy.optimize
import torch
import torch.nn.functional as F
from torch import nn

# ---- Hungarian matching ---------------------------------------------------------------------


def linear_sum_assignment(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost assignment of a ``(n, m)`` cost matrix: ``scipy.optimize.linear_sum_assignment``
    on a float64 CPU copy (as HF's ``Mask2FormerHungarianMatcher``).

    Returns int64 ``(rows, cols)`` sorted by row, ``min(n, m)`` pairs.
    """
    rows, cols = scipy.optimize.linear_sum_assignment(cost.detach().to("cpu", torch.float64).numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


# ---- point sampling (Mask2Former / PointRend) -------------------------------------------------


def point_sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``x (N, C, H, W)`` at ``coords (N, P, 2)`` in [0, 1]² -> ``(N, C, P)``."""
    return F.grid_sample(x, 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False).squeeze(3)


def _pairwise_bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean point BCE of every prediction ``(Q, P)`` against every target ``(T, P)`` -> ``(Q, T)``."""
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (pos @ target.T + neg @ (1 - target).T) / pred.shape[1]


def _pairwise_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = pred.sigmoid()
    num = 2 * prob @ target.T
    den = prob.sum(-1)[:, None] + target.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def _uncertain_points(logits: torch.Tensor, num_points: int, oversample: float, importance: float) -> torch.Tensor:
    """Coordinates ``(N, P, 2)``: the most uncertain (|logit| smallest) of ``oversample·P`` random
    points for a share ``importance`` of them, uniform random points for the rest."""
    n = logits.shape[0]
    sampled = int(num_points * oversample)
    coords = torch.rand(n, sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits, coords).abs()[:, 0]
    k = int(importance * num_points)
    idx = uncertainty.topk(k, dim=1).indices
    chosen = torch.gather(coords, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    rest = torch.rand(n, num_points - k, 2, device=logits.device)
    return torch.cat([chosen, rest], dim=1)


def semantic_targets(labels: torch.Tensor, ignore_index: int = 255) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image of ``labels (B, H, W)``: the classes present (sorted) and their binary masks ``(T, H, W)``.

    Ignored pixels belong to no mask (they count as background in the mask losses, as in the
    official code).
    """
    out = []
    for lab in labels:
        classes = torch.unique(lab)
        classes = classes[classes != ignore_index]
        masks = (lab[None] == classes[:, None, None]).float()
        out.append((classes.long(), masks))
    return out


class MaskClassificationLoss(nn.Module):
    """Mask2Former's set loss for N query masks with class logits (``K + 1``, the last "no object").

    ``forward(mask_logits (B, N, h, w), class_logits (B, N, K+1), labels (B, H, W))`` returns
    the weighted terms ``{"mask_ce", "mask_bce", "mask_dice"}``.

    Args:
        num_classes: K.
        class_weight, mask_weight, dice_weight: loss weights (official effective weights 1, 1, 1:
            AutoGluon sums HF's unweighted terms; see the module docstring).
        no_object_weight: CE weight of the "no object" class (HF default 0.1).
        cost_class, cost_mask, cost_dice: matching costs (HF ``Mask2FormerLoss`` of transformers
            4.38: class 1.0 hard-coded, mask and dice ``Mask2FormerConfig``'s 5, 5).
        num_points, oversample_ratio, importance_sample_ratio: point sampling (12544, 3, 0.75).
        ignore_index: label value that is no class.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        class_weight: float = 1.0,
        mask_weight: float = 1.0,
        dice_weight: float = 1.0,
        no_object_weight: float = 0.1,
        cost_class: float = 1.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if num_points < 1 or oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
            raise ValueError("need num_points >= 1, oversample_ratio >= 1 and importance_sample_ratio in [0, 1]")
        self.num_classes = num_classes
        self.weights = {"mask_ce": class_weight, "mask_bce": mask_weight, "mask_dice": dice_weight}
        self.costs = (cost_class, cost_mask, cost_dice)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.ignore_index = ignore_index
        empty = torch.ones(num_classes + 1)
        empty[-1] = no_object_weight
        self.register_buffer("empty_weight", empty, persistent=False)

    @torch.no_grad()
    def match(self, mask_logits: torch.Tensor, class_logits: torch.Tensor,
              targets: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Hungarian matching per image: ``(query indices, target indices)``."""
        cost_class, cost_mask, cost_dice = self.costs
        indices = []
        for pred, logits, (classes, masks) in zip(mask_logits, class_logits, targets):
            if classes.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty))
                continue
            prob = logits.float().softmax(-1)[:, classes]  # (N, T)
            coords = torch.rand(1, self.num_points, 2, device=pred.device)
            p = point_sample(pred[:, None].float(), coords.expand(pred.shape[0], -1, -1))[:, 0]
            t = point_sample(masks[:, None].to(p), coords.expand(masks.shape[0], -1, -1))[:, 0]
            cost = cost_mask * _pairwise_bce(p, t) - cost_class * prob + cost_dice * _pairwise_dice(p, t)
            cost = torch.nan_to_num(cost, nan=1e30, posinf=1e30, neginf=1e30)
            indices.append(linear_sum_assignment(cost))
        return indices

    def forward(self, mask_logits: torch.Tensor, class_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        b, n = class_logits.shape[:2]
        if class_logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"class_logits have {class_logits.shape[-1]} classes, expected K+1={self.num_classes + 1}")
        targets = semantic_targets(labels, self.ignore_index)
        indices = self.match(mask_logits, class_logits, targets)
        dev = class_logits.device
        batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]).to(dev)
        query_idx = torch.cat([q for q, _ in indices]).to(dev)

        target_classes = torch.full((b, n), self.num_classes, dtype=torch.int64, device=dev)
        target_classes[batch_idx, query_idx] = torch.cat([cls[t.to(dev)] for (cls, _), (_, t) in zip(targets, indices)])
        loss_ce = F.cross_entropy(class_logits.float().transpose(1, 2), target_classes, weight=self.empty_weight.to(dev))

        num_masks = max(1.0, float(sum(len(c) for c, _ in targets)))
        if query_idx.numel() == 0:
            zero = mask_logits.sum() * 0.0
            loss_bce, loss_dice = zero, zero
        else:
            pred = mask_logits[batch_idx, query_idx][:, None].float()
            target = torch.cat([m[t.to(dev)] for (_, m), (_, t) in zip(targets, indices)])[:, None]
            with torch.no_grad():
                coords = _uncertain_points(pred, self.num_points, self.oversample_ratio, self.importance_sample_ratio)
                point_labels = point_sample(target.to(pred), coords)[:, 0]
            point_logits = point_sample(pred, coords)[:, 0]
            loss_bce = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none").mean(1).sum() / num_masks
            prob = point_logits.sigmoid()
            dice = 1 - (2 * (prob * point_labels).sum(-1) + 1) / (prob.sum(-1) + point_labels.sum(-1) + 1)
            loss_dice = dice.sum() / num_masks
        raw = {"mask_ce": loss_ce, "mask_bce": loss_bce, "mask_dice": loss_dice}
        return {k: self.weights[k] * v for k, v in raw.items()}


def semantic_inference(mask_logits: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
    """MaskFormer's semantic combination: ``Σ_q softmax(class_q)[:K] · sigmoid(mask_q)`` -> ``(B, K, h, w)``."""
    probs = class_logits.float().softmax(-1)[..., :-1]
    return torch.einsum("bqk,bqhw->bkhw", probs, mask_logits.float().sigmoid())


# ---- binary tasks -------------------------------------------------------------------------------


def _binary_target(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``logits (B, 1, H, W)`` or ``(B, H, W)`` and labels ``(B, H, W)`` (1 = foreground) ->
    logits, target, valid as ``(B, 1, H, W)`` floats."""
    if logits.ndim == 3:
        logits = logits[:, None]
    valid = (labels != ignore_index)[:, None].to(logits.dtype)
    target = (labels == 1)[:, None].to(logits.dtype)
    return logits.float(), target.float(), valid.float()


def structure_loss(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = 255, weighted_bce: bool = False) -> torch.Tensor:
    """PraNet's structure loss: BCE + boundary-weighted IoU, weight ``1 + 5·|avgpool31(gt) − gt|``.

    The official code (and PraNet's) passes ``reduce="none"`` to ``binary_cross_entropy_with_logits``;
    PyTorch reads that legacy argument as ``reduce=True``, so its BCE is the plain mean over all
    pixels of the batch, not the weighted one. ``weighted_bce=False`` (default) reproduces that;
    ``True`` gives the weighted BCE the formula intends. Ignored pixels count in neither term.
    """
    x, t, valid = _binary_target(logits, labels, ignore_index)
    weit = (1 + 5 * (F.avg_pool2d(t, kernel_size=31, stride=1, padding=15) - t).abs()) * valid
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    if weighted_bce:
        wbce = ((weit * bce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3)).clamp(min=1e-6)).mean()
    else:
        wbce = (bce * valid).sum() / valid.sum().clamp(min=1.0)
    p = x.sigmoid()
    inter = (p * t * weit).sum(dim=(2, 3))
    union = ((p + t) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return wbce + wiou.mean()


def balanced_bce_loss(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = 255) -> torch.Tensor:
    """Balanced BCE (the official SBU-shadow loss): positives weighted by ``#neg/#pos`` and the whole
    by ``#pos/(#pos+#neg)``, counts over the batch's valid pixels; mean over valid pixels."""
    x, t, valid = _binary_target(logits, labels, ignore_index)
    pos = (t * valid).sum() + 1e-10
    neg = ((1 - t) * valid).sum()
    bce = F.binary_cross_entropy_with_logits(x, t, pos_weight=neg / pos, reduction="none")
    return (pos / (pos + neg)) * (bce * valid).sum() / valid.sum().clamp(min=1.0)


BINARY_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"structure": structure_loss, "balanced_bce": balanced_bce_loss}
