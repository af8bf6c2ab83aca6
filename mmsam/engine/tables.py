"""Plain-text tables of evaluation scores, printed by ``mmsam validate`` / ``test``."""
from __future__ import annotations

from typing import Sequence

import torch


def format_subset_table(stage: str, rows: list[tuple[Sequence[str], dict[str, torch.Tensor]]], modalities: Sequence[str]) -> str:
    """The missing-modality table: one row per subset of modalities present, mIoU and OA."""
    width = max(len(m) for m in modalities)
    head = "  ".join(f"{m:^{width}}" for m in modalities)
    lines = [f"\n[{stage}] modalities present (x) -> scores", f"{head}  {'mIoU':>6}  {'OA':>6}  {'mF1':>6}"]
    for subset, scores in rows:
        marks = "  ".join(f"{'x' if m in subset else '-':^{width}}" for m in modalities)
        lines.append(f"{marks}  {100 * float(scores['mIoU']):6.2f}  {100 * float(scores['OA']):6.2f}  {100 * float(scores['mF1']):6.2f}")
    return "\n".join(lines)


def format_binary(scores: dict[str, torch.Tensor]) -> str:
    """One line of binary scores (``BinarySegmentationMetrics``): S, E, wF, MAE and Binary_IoU as fractions,
    BER in percent; the scores computed only."""
    names = {"Smeasure": "S-measure", "Emeasure": "mean E-measure", "wFmeasure": "wF-measure", "MAE": "MAE", "BER": "BER", "Binary_IoU": "Binary_IoU"}
    return "   ".join(f"{names[k]} {float(v):.2f}" if k == "BER" else f"{names[k]} {float(v):.4f}" for k, v in scores.items() if k in names)


def format_table(
    stage: str, subset: Sequence[str], scores: dict[str, torch.Tensor], class_names: Sequence[str], *, mean_over: Sequence[int] | None = None
) -> str:
    """A per-class IoU / F1 / Acc table followed by the summary scores, in percent.

    Classes outside ``mean_over`` (``eval_classes``) are marked: they count in OA, not in the means.
    """
    width = max(12, *(len(n) for n in class_names))
    lines = [f"\n[{stage}] modalities: {', '.join(subset)}", f"{'class':<{width}}  {'IoU':>6}  {'F1':>6}  {'Acc':>6}"]
    for i, (name, iou, f1, acc) in enumerate(zip(class_names, scores["IoU"], scores["F1"], scores["Acc"])):
        fmt = lambda v: "   n/a" if torch.isnan(v) else f"{100 * float(v):6.2f}"  # noqa: E731
        mark = "  (not in means)" if mean_over is not None and i not in mean_over else ""
        lines.append(f"{name:<{width}}  {fmt(iou)}  {fmt(f1)}  {fmt(acc)}{mark}")
    lines.append(
        f"{'mIoU':<{width}}  {100 * float(scores['mIoU']):6.2f}   OA {100 * float(scores['OA']):.2f}"
        f"   mAcc {100 * float(scores['mAcc']):.2f}   mF1 {100 * float(scores['mF1']):.2f}"
    )
    if mean_over is not None:
        lines.append(f"(mIoU / mAcc / mF1 over {len(mean_over)} of {len(class_names)} classes; OA over all)")
    return "\n".join(lines)
