"""Segmentation scores from one confusion matrix (torchmetrics; distributed-safe)."""
from __future__ import annotations

from typing import Any, Literal

import torch
from torchmetrics.classification import MulticlassConfusionMatrix


class SegmentationMetrics(MulticlassConfusionMatrix):
    """Per-class IoU and F1, mIoU, OA, mAcc, mF1 over pixels, ignoring ``ignore_index``.

    Accumulates a single ``K×K`` confusion matrix (rows = truth, columns = prediction); every
    score is derived from it in :meth:`compute`.

    Args:
        num_classes: K.
        ignore_index: label value excluded from every score (255 in all benchmarks here).
        absent_classes: how a class with no ground truth and no prediction enters the means.
            ``"zero"`` counts it as 0 over all K classes, as the DELIVER/MCubeS reference code
            does (``../shared/reference/memorysam.md`` §4); ``"skip"`` leaves it out of the means.
    """

    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int = 255,
        absent_classes: Literal["zero", "skip"] = "zero",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, normalize=None, validate_args=False, **kwargs)
        if absent_classes not in ("zero", "skip"):
            raise ValueError(f"absent_classes must be 'zero' or 'skip', got {absent_classes!r}")
        self.absent_classes = absent_classes

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        """``preds``: logits ``(B, K, H, W)`` or labels ``(B, H, W)``; ``target``: ``(B, H, W)``."""
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        super().update(preds, target)

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        cm = self.confmat.double()
        tp = cm.diag()
        gt = cm.sum(1)
        pred = cm.sum(0)
        union = gt + pred - tp
        present = union > 0
        iou = torch.where(present, tp / union.clamp(min=1), torch.nan)
        f1 = torch.where(present, 2 * tp / (gt + pred).clamp(min=1), torch.nan)
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.nan)

        def mean(v: torch.Tensor) -> torch.Tensor:
            if self.absent_classes == "zero":
                return v.nan_to_num(0.0).mean()
            return v.nanmean() if bool((~v.isnan()).any()) else v.new_tensor(0.0)

        total = cm.sum()
        return {
            "mIoU": mean(iou).float(),
            "OA": (tp.sum() / total.clamp(min=1)).float(),
            "mAcc": mean(acc).float(),
            "mF1": mean(f1).float(),
            "IoU": iou.float(),
            "F1": f1.float(),
            "Acc": acc.float(),
        }
