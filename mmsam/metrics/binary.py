"""Binary-segmentation scores of the Conv-LoRA tasks (torchmetrics; distributed-safe).

The official Conv-LoRA code (AutoGluon MultiModal ``optimization/semantic_seg_metrics.py`` with
``examples/automm/Conv-LoRA/run_semantic_segmentation.py``) selects models by
S-measure for polyp and camouflage and by BER for SBU shadow, and reports S-measure, weighted
F-measure, mean E-measure and MAE for polyp / camouflage. This metric gives all five, each per
image and then averaged over the images, as the official code does:

* **S-measure, mean E-measure, weighted F-measure, MAE** come from ``pysodmetrics`` (the library
  the official file was copied from), on the foreground probability map (``softmax`` of the two
  logits, class 1) against the binary truth. As in the official call the map is given in [0, 255]
  as floats and the library normalises it (``/255``, then min-max per image, MATLAB's
  ``mapminmax``); the mean E-measure is the mean of the 256-threshold E-measure curve; the weighted
  F-measure uses ``beta = 0.3`` (the official ``WeightedFmeasure`` default; pysodmetrics' own
  default is 1).
* **BER** (balanced error rate) in percent: ``100·(1 − ½(TP/(TP+FN) + TN/(TN+FP)))`` per image,
  then the mean over images. Official ``Balanced_Error_Rate``: foreground where ``prob·255 > 125``,
  then ``1 − torchmetrics Accuracy(task="multiclass", num_classes=2, average="macro",
  multidim_average="samplewise")`` and the mean over samples, i.e. per image, not over the pooled
  pixels of the set. The same torchmetrics call is used here, so its edge cases are the official
  ones too: a class with no truth and no prediction in an image leaves the mean (an image without
  foreground, predicted without foreground, has BER 0); a class with no truth but predicted
  counts with recall 0.

* **Binary_IoU**: the foreground IoU of each image, then the mean over images: official
  ``Binary_IoU`` (the model-selection and test metric of leaf, road and ISIC), which calls
  ``torchmetrics.JaccardIndex(task="binary")`` on each image (probabilities thresholded at 0.5)
  and averages the results. An image with neither foreground truth nor foreground prediction
  scores 0 (torchmetrics' ``zero_division=0``), as in the official metric. This is not the
  pooled mean of background and foreground IoU that ``SegmentationMetrics`` gives (``mIoU``).

Ignored pixels (``ignore_index``, 255): BER and Binary_IoU leave them out exactly. pysodmetrics needs a whole 2-D
map, so for the other four scores each image is first cropped to the bounding box of its valid
pixels (this removes bottom/right padding, the usual source of 255, exactly); ignored pixels left
inside that box count as background in the truth, the prediction there is kept. An image without
valid pixels is skipped by every score.

State: the sums of the per-image scores and the image count (``dist_reduce_fx="sum"``), so DDP
reduces them exactly. Scores are computed on the CPU in :meth:`update` (numpy / scipy).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_accuracy

#: official binarisation of probabilities and labels for BER: ``x·255 > 125``
BER_THRESHOLD = 125.0 / 255.0
#: official weighted-F-measure beta (AutoGluon ``WeightedFmeasure(beta=0.3)``)
WFM_BETA = 0.3
#: official ``Binary_IoU`` threshold on the foreground probability (torchmetrics' binary default)
IOU_THRESHOLD = 0.5
KEYS = ("Smeasure", "Emeasure", "wFmeasure", "MAE", "BER", "Binary_IoU")
SOD_KEYS = KEYS[:4]


def sod_scores(prob: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """S-measure, mean E-measure, weighted F-measure and MAE of one image with pysodmetrics.

    ``prob``: foreground probability ``(H, W)`` in [0, 1]; ``gt``: boolean ``(H, W)``.
    """
    import py_sod_metrics as sod

    pred = np.asarray(prob, dtype=np.float64) * 255.0  # the library's im2double + mapminmax
    truth = np.where(gt, 255, 0).astype(np.uint8)
    sm, em, wfm, mae = sod.Smeasure(), sod.Emeasure(), sod.WeightedFmeasure(beta=WFM_BETA), sod.MAE()
    for m in (sm, em, wfm, mae):
        m.step(pred=pred, gt=truth)
    return {
        "Smeasure": float(sm.get_results()["sm"]),
        "Emeasure": float(em.get_results()["em"]["curve"].mean()),
        "wFmeasure": float(wfm.get_results()["wfm"]),
        "MAE": float(mae.get_results()["mae"]),
    }


class BinarySegmentationMetrics(Metric):
    """S-measure, mean E-measure, weighted F-measure, MAE, BER and Binary_IoU of a binary task, per image averaged.

    :meth:`compute` returns ``Smeasure``, ``Emeasure``, ``wFmeasure``, ``MAE`` and ``Binary_IoU``
    as fractions in [0, 1] (as the official code and the polyp / camouflage papers report them)
    and ``BER`` in percent (as shadow-detection papers report it), all as tensors. See the module
    docstring for the definitions, the official choices they follow and the handling of ignored pixels.

    Args:
        ignore_index: label value excluded (see the module docstring); ``None``: none.
        scores: the scores to compute (a subset of ``KEYS``); default all. Leaving out the four
            pysodmetrics scores (S, E, wF, MAE) saves their CPU time.
    """

    full_state_update = False
    higher_is_better = None  # mixed: S / E / wF higher, MAE / BER lower

    def __init__(self, *, ignore_index: int | None = 255, scores: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        unknown = sorted(set(scores or ()) - set(KEYS))
        if unknown or (scores is not None and not scores):
            raise ValueError(f"binary scores must be a non-empty subset of {list(KEYS)}, got {scores}")
        self.scores = tuple(k for k in KEYS if scores is None or k in scores)
        for key in KEYS:
            self.add_state(key, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        """``preds``: two-class logits ``(B, 2, H, W)`` or foreground probabilities ``(B, H, W)``;
        ``target``: labels ``(B, H, W)`` in {0, 1, ignore_index}."""
        if preds.ndim == target.ndim + 1:
            if preds.shape[1] != 2:
                raise ValueError(f"binary metrics need two-class logits (B, 2, H, W), got {tuple(preds.shape)}")
            prob = preds.detach().float().softmax(dim=1)[:, 1]
        else:
            prob = preds.detach().float()
        if prob.shape != target.shape:
            raise ValueError(f"prediction {tuple(prob.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.detach()
        valid = torch.ones_like(target, dtype=torch.bool) if self.ignore_index is None else target != self.ignore_index
        keep = valid.flatten(1).any(1)
        if not bool(keep.any()):
            return
        prob, target, valid = prob[keep], target[keep], valid[keep]

        if "BER" in self.scores:  # the official torchmetrics call, per image, ignored pixels left out
            hard = (prob > BER_THRESHOLD).long()
            truth = torch.where(valid, target.long(), torch.full_like(target, -1, dtype=torch.long))
            acc = multiclass_accuracy(hard, truth, num_classes=2, average="macro", multidim_average="samplewise", ignore_index=-1,
                                     validate_args=False)
            self.BER += (100.0 * (1.0 - acc.double())).sum().to(self.BER.device)
        if "Binary_IoU" in self.scores:  # foreground IoU per image (0 when both are empty), valid pixels only
            fg_pred = (prob > IOU_THRESHOLD) & valid
            fg_true = (target == 1) & valid
            inter = (fg_pred & fg_true).flatten(1).sum(1).double()
            union = (fg_pred | fg_true).flatten(1).sum(1).double()
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
            self.Binary_IoU += iou.sum().to(self.Binary_IoU.device)

        sums = dict.fromkeys([k for k in SOD_KEYS if k in self.scores], 0.0)
        for p, t, v in zip(prob.cpu().numpy(), target.cpu().numpy(), valid.cpu().numpy()):
            if not sums:
                break
            rows, cols = np.flatnonzero(v.any(1)), np.flatnonzero(v.any(0))
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            scores = sod_scores(p[box], (t[box] == 1) & v[box])
            for key in sums:
                sums[key] += scores[key]
        for key, value in sums.items():
            state = getattr(self, key)
            setattr(self, key, state + torch.tensor(value, dtype=torch.float64, device=state.device))
        self.count += int(keep.sum())

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self.scores_of_state()

    def scores_of_state(self) -> dict[str, torch.Tensor]:
        """The scores of this process's states (no synchronisation)."""
        n = self.count.clamp(min=1).double()
        return {key: (getattr(self, key) / n).float() for key in self.scores}

    def synced_scores(self) -> dict[str, torch.Tensor]:
        """:meth:`compute` over all processes without touching the states or ``compute``'s cache
        (a collective: every process must call it)."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync):
            return self.scores_of_state()


class BinaryScore(BinarySegmentationMetrics):
    """One score (``key``) of :class:`BinarySegmentationMetrics` as its own torchmetrics object
    for Lightning's ``log`` / ``log_dict``; ``scores``: all those computed in ``update`` (the same
    for every member of a compute group, whose first member alone is updated)."""

    def __init__(self, key: str, *, ignore_index: int | None = 255, scores: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(ignore_index=ignore_index, scores=scores, **kwargs)
        if key not in self.scores:
            raise ValueError(f"binary score {key!r} is not among those computed, {list(self.scores)}")
        self.key = key

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        return self.scores_of_state()[self.key]


def binary_scores(*, prefix: str = "", ignore_index: int | None = 255, scores: Sequence[str] | None = None) -> Any:
    """The binary scores as a ``MetricCollection`` of :class:`BinaryScore` in one compute group (the
    per-image scores are computed once per batch), logged by Lightning as ``{prefix}Smeasure``, …"""
    from torchmetrics import MetricCollection

    keys = BinarySegmentationMetrics(ignore_index=ignore_index, scores=scores).scores
    return MetricCollection({k: BinaryScore(k, ignore_index=ignore_index, scores=scores) for k in keys},
                            prefix=prefix, compute_groups=[list(keys)])
