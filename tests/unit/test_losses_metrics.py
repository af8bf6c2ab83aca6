import math

import pytest
import torch
import torch.nn.functional as F

from mmsam.engine.schedule import warmup_poly
from mmsam.errors import ConfigError
from mmsam.losses import OhemCrossEntropy, build_loss
from mmsam.metrics import SegmentationMetrics


def test_ohem_keeps_hard_pixels_and_ignores_255():
    # two classes, label 0 everywhere: a pixel's CE is log(1 + e^d) for logits (0, d)
    d = torch.full((1, 4, 8), -5.0)  # easy: CE 0.0067 < -log(0.7) = 0.357
    d[0, 1, :2] = 0.0  # hard: CE log 2
    d[0, 2, :2] = 1.0  # hard: CE log(1 + e)
    d[0, 0] = 10.0  # the hardest, but ignored
    logits = torch.stack([torch.zeros_like(d), d], dim=1)
    labels = torch.zeros(1, 4, 8, dtype=torch.long)
    labels[0, 0] = 255
    loss = OhemCrossEntropy(thresh=0.7)(logits, labels)
    expected = (2 * math.log(2) + 2 * math.log(1 + math.e)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss > F.cross_entropy(logits, labels, ignore_index=255)


def test_ohem_min_kept_when_everything_is_easy():
    labels = torch.zeros(1, 4, 8, dtype=torch.long)
    logits = torch.zeros(1, 3, 4, 8)
    logits[:, 0] = 10.0  # all pixels confidently right
    logits[0, 0, 0, 0] = -10.0  # one hard pixel
    loss = OhemCrossEntropy(thresh=0.7)(logits, labels)
    per = F.cross_entropy(logits, labels, reduction="none").flatten()
    assert torch.allclose(loss, per.topk(32 // 16).values.mean())


def test_ohem_all_ignored_is_zero_with_grad():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = OhemCrossEntropy()(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0


def test_build_loss_unknown():
    with pytest.raises(ConfigError):
        build_loss("dice")


def test_metrics_from_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    m = SegmentationMetrics(4, absent_classes="zero")
    m.update(pred, target)
    s = m.compute()
    # class 0: tp1 fp1 fn1 -> IoU 1/3; class 1: tp2 fp1 -> 2/3; class 2: tp0 fn1 -> 0; class 3 absent -> nan
    assert torch.allclose(s["IoU"][:3], torch.tensor([1 / 3, 2 / 3, 0.0]))
    assert torch.isnan(s["IoU"][3])
    assert torch.isclose(s["mIoU"], torch.tensor((1 / 3 + 2 / 3) / 4))
    assert torch.isclose(s["OA"], torch.tensor(3 / 5))
    assert torch.allclose(s["F1"][:3], torch.tensor([0.5, 0.8, 0.0]))
    skip = SegmentationMetrics(4, absent_classes="skip")
    skip.update(F.one_hot(pred.clamp(max=3), 4).permute(0, 2, 1).float().unsqueeze(-1).squeeze(-1).reshape(1, 4, 1, 6), target.reshape(1, 1, 6))
    assert torch.isclose(skip.compute()["mIoU"], torch.tensor(1 / 3))


def test_mean_over_a_subset_of_classes_keeps_oa_over_all():
    """ISPRS protocol: clutter (class 2 here) counts in OA and as an error, not in the means."""
    target = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 255]])
    pred = torch.tensor([[0, 0, 1, 1, 2, 2, 0, 1, 0]])
    # confusion (rows truth): 0 -> [2, 1, 0]; 1 -> [0, 1, 1]; 2 -> [1, 1, 1]
    iou = torch.tensor([2 / 4, 1 / 4, 1 / 4])
    f1 = torch.tensor([4 / 6, 2 / 5, 2 / 5])
    acc = torch.tensor([2 / 3, 1 / 2, 1 / 3])
    full = SegmentationMetrics(3)
    part = SegmentationMetrics(3, mean_over=[0, 1])
    for m in (full, part):
        m.update(pred, target)
    s_full, s_part = full.compute(), part.compute()
    assert torch.isclose(s_full["mIoU"], iou.mean()) and torch.isclose(s_part["mIoU"], iou[:2].mean())
    assert torch.isclose(s_part["mF1"], f1[:2].mean()) and torch.isclose(s_part["mAcc"], acc[:2].mean())
    assert torch.isclose(s_part["OA"], torch.tensor(4 / 8)) and torch.isclose(s_full["OA"], s_part["OA"])
    assert torch.allclose(s_part["IoU"], iou) and torch.allclose(s_part["F1"], f1)  # per class unchanged
    part.reset()
    assert part.mean_over == [0, 1] and part.confmat.sum() == 0
    with pytest.raises(ValueError, match="mean_over"):
        SegmentationMetrics(3, mean_over=[3])


def test_warmup_poly_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = warmup_poly(opt, total_steps=100, warmup_steps=10, warmup_ratio=0.1, power=0.9)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a > b for a, b in zip(lrs[10:99], lrs[11:100])) and lrs[-1] < 0.05


def test_ignore_in_union_counts_predictions_on_ignored_pixels():
    """Trans2Seg / AutoGluon Multiclass_IoU: a prediction on a 255 pixel enlarges its class's union."""
    target = torch.tensor([[[0, 0, 1, 255]]])
    preds = torch.tensor([[[0, 0, 1, 1]]])
    plain = SegmentationMetrics(2)
    plain.update(preds, target)
    assert plain.compute()["IoU"].tolist() == pytest.approx([1.0, 1.0])
    official = SegmentationMetrics(2, ignore_in_union=True)
    official.update(preds, target)
    got = official.compute()
    assert got["IoU"].tolist() == pytest.approx([1.0, 0.5])
    assert float(got["mIoU"]) == pytest.approx(0.75)
    assert float(got["OA"]) == pytest.approx(1.0)  # OA still leaves ignored pixels out
    # the official formula (multimodal/.../optim/metrics/semantic_seg_metrics.py, Multiclass_IoU)
    predict = preds.float() + 1
    tgt = target.float() + 1
    predict = predict * (tgt > 0).float()
    inter = torch.histc(predict * (predict == tgt).float(), bins=2, min=1, max=2)
    union = torch.histc(predict, bins=2, min=1, max=2) + torch.histc(tgt, bins=2, min=1, max=2) - inter
    assert got["IoU"].tolist() == pytest.approx((inter / union).tolist())


def test_mask_classification_defaults_match_autogluon():
    """AutoGluon sums HF Mask2FormerLoss's unweighted terms; transformers 4.38's matcher class cost is 1."""
    from mmsam.losses.mask_classification import MaskClassificationLoss

    loss = MaskClassificationLoss(3)
    assert loss.weights == {"mask_ce": 1.0, "mask_bce": 1.0, "mask_dice": 1.0}
    assert loss.costs == (1.0, 5.0, 5.0)
