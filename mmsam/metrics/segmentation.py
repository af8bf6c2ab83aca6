"""Segmentation scores from one confusion matrix (torchmetrics; distributed-safe)."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torchmetrics.classification import MulticlassConfusionMatrix


class SegmentationMetrics(MulticlassConfusionMatrix):
    """Per-class IoU and F1, mIoU, OA, mAcc, mF1 over pixels, ignoring ``ignore_index``.

    Accumulates a single ``K×K`` confusion matrix (rows = truth, columns = prediction); every
    score is derived from it in :meth:`compute`. OA is always over all K classes; the means
    (mIoU, mAcc, mF1) over ``mean_over`` when given.

    Args:
        num_classes: K.
        ignore_index: label value excluded from every score (255 in all benchmarks here).
        absent_classes: how a class with no ground truth and no prediction enters the means.
            ``"zero"`` counts it as 0 over all K classes, as the DELIVER/MCubeS reference code
            does (official MemorySAM ``semseg/metrics.py``, ``compute_iou``); ``"skip"`` leaves it out of the means.
        mean_over: class ids averaged in the means (default all). ISPRS protocol: the five
            foreground classes, clutter left out (official MFNet train.py); its pixels still count in OA
            and as errors of the other classes.
        ignore_in_union: a prediction of class k on an ignored pixel (``ignore_index``) counts in
            class k's IoU union (so in IoU and mIoU only; OA, Acc and F1 still leave ignored pixels
            out). This is the Trans2Seg / AutoGluon ``Multiclass_IoU`` protocol
            (``multimodal/src/autogluon/multimodal/optim/metrics/semantic_seg_metrics.py``: it masks
            predictions where ``label + 1 > 0``, which keeps label 255, and histograms them into
            the predicted area). Default off: ignored pixels count nowhere.
    """

    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int = 255,
        absent_classes: Literal["zero", "skip"] = "zero",
        mean_over: Sequence[int] | None = None,
        ignore_in_union: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, normalize=None, validate_args=False, **kwargs)
        if absent_classes not in ("zero", "skip"):
            raise ValueError(f"absent_classes must be 'zero' or 'skip', got {absent_classes!r}")
        self.absent_classes = absent_classes
        if mean_over is not None:
            mean_over = sorted(set(int(i) for i in mean_over))
            if not mean_over or mean_over[0] < 0 or mean_over[-1] >= num_classes:
                raise ValueError(f"mean_over must be a non-empty list of class ids in [0, {num_classes}), got {mean_over}")
        self.mean_over = mean_over
        self.ignore_in_union = ignore_in_union
        # per class: predictions on ignored pixels (used only with ignore_in_union)
        self.add_state("ignored_pred", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        """``preds``: logits ``(B, K, H, W)`` or labels ``(B, H, W)``; ``target``: ``(B, H, W)``."""
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        if self.ignore_in_union and self.ignore_index is not None:
            on_ignored = preds[target == self.ignore_index].long()
            on_ignored = on_ignored[(on_ignored >= 0) & (on_ignored < self.num_classes)]
            self.ignored_pred += torch.bincount(on_ignored, minlength=self.num_classes).to(self.ignored_pred.device)
        super().update(preds, target)

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self.scores_of_state()

    def synced_scores(self) -> dict[str, torch.Tensor]:
        """Every score of :meth:`compute` plus the ``confmat``, over all processes (a collective:
        every process must call it) and without touching the states or ``compute``'s cache."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync):
            return {**self.scores_of_state(), "confmat": self.confmat.clone()}

    def scores_of_state(self) -> dict[str, torch.Tensor]:
        """The scores of this process's states (no synchronisation)."""
        cm = self.confmat.double()
        tp = cm.diag()
        gt = cm.sum(1)
        pred = cm.sum(0)
        union = gt + pred - tp
        present = union > 0
        iou_union = union + self.ignored_pred.double() if self.ignore_in_union else union
        iou = torch.where(iou_union > 0, tp / iou_union.clamp(min=1), torch.nan)
        f1 = torch.where(present, 2 * tp / (gt + pred).clamp(min=1), torch.nan)
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.nan)

        def mean(v: torch.Tensor) -> torch.Tensor:
            if self.mean_over is not None:
                v = v[self.mean_over]
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


SCALAR_SCORES = ("mIoU", "OA", "mAcc", "mF1")


class SegmentationScore(SegmentationMetrics):
    """One score of :class:`SegmentationMetrics` as its own torchmetrics object, so that Lightning
    can log, synchronise and reset it (``self.log`` / ``log_dict``): ``mIoU``, ``OA``, ``mAcc`` or
    ``mF1`` (scalars), or the per-class ``IoU`` / ``F1`` / ``Acc`` (for ``ClasswiseWrapper``),
    times ``scale`` (100: percent). Several of them in a ``MetricCollection`` compute group share
    one confusion matrix (:func:`segmentation_scores`)."""

    def __init__(self, num_classes: int, *, score: str = "mIoU", scale: float = 100.0, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        if score not in (*SCALAR_SCORES, "IoU", "F1", "Acc"):
            raise ValueError(f"score must be one of {[*SCALAR_SCORES, 'IoU', 'F1', 'Acc']}, got {score!r}")
        self.score, self.scale = score, scale

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        return self.scores_of_state()[self.score] * self.scale


def segmentation_scores(num_classes: int, *, prefix: str = "", postfix: str = "", **kwargs: Any) -> Any:
    """``mIoU``, ``OA``, ``mAcc``, ``mF1`` (percent) as a ``MetricCollection`` of
    :class:`SegmentationScore` sharing one confusion matrix (one compute group): Lightning logs it
    with ``log_dict`` as ``{prefix}mIoU{postfix}``, … ``kwargs``: ``SegmentationMetrics`` options."""
    from torchmetrics import MetricCollection

    return MetricCollection({k: SegmentationScore(num_classes, score=k, **kwargs) for k in SCALAR_SCORES},
                            prefix=prefix, postfix=postfix, compute_groups=[list(SCALAR_SCORES)])
