"""BinarySegmentationMetrics (S-/E-/wF-measure, MAE via pysodmetrics; BER as the official Conv-LoRA
code) and the SegmentationTask option ``binary_metrics``."""
from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import py_sod_metrics as sod
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmsam.engine import SegmentationTask
from mmsam.engine.evaluation import Evaluation
from mmsam.errors import ConfigError
from mmsam.metrics import BinarySegmentationMetrics


def logits_of(prob: torch.Tensor) -> torch.Tensor:
    """Two-class logits ``[0, logit(p)]`` whose softmax gives ``prob`` (as Conv-LoRA's binary head)."""
    m = torch.logit(prob.double().clamp(1e-6, 1 - 1e-6)).float()
    return torch.stack([torch.zeros_like(m), m], dim=1)


def square_gt(b: int = 2, h: int = 24, w: int = 32) -> torch.Tensor:
    gt = torch.zeros(b, h, w, dtype=torch.long)
    gt[:, 6:18, 8:20] = 1
    return gt


def soft_pred(gt: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.6 * gt.float() + 0.4 * torch.rand(gt.shape, generator=g)).clamp(0, 1)


def scores(prob: torch.Tensor, gt: torch.Tensor, **kw) -> dict[str, float]:
    m = BinarySegmentationMetrics(**kw)
    m.update(logits_of(prob), gt)
    return {k: float(v) for k, v in m.compute().items()}


def test_perfect_prediction():
    gt = square_gt()
    s = scores(gt.float(), gt)
    assert s["Smeasure"] == pytest.approx(1.0, abs=1e-5)
    assert s["MAE"] == pytest.approx(0.0, abs=1e-5)
    assert s["BER"] == pytest.approx(0.0, abs=1e-6)
    assert s["wFmeasure"] == pytest.approx(1.0, abs=1e-4)
    # mean E-measure: the mean over 256 thresholds (the lowest marks every pixel foreground) of
    # sums divided by (pixels - 1), the MATLAB convention, so a perfect map scores about, not exactly, 1
    n = gt.shape[1] * gt.shape[2]
    assert 0.99 < s["Emeasure"] <= n / (n - 1)


def test_all_background_on_half_foreground_gt_gives_ber_50():
    gt = torch.zeros(1, 16, 16, dtype=torch.long)
    gt[:, :, :8] = 1
    s = scores(torch.full(gt.shape, 0.01), gt)
    assert s["BER"] == pytest.approx(50.0)
    assert s["MAE"] == pytest.approx(0.5, abs=0.02)  # constant map: no min-max stretch, |0.01 - gt| averaged


def test_values_match_pysodmetrics_and_official_ber():
    gt = square_gt(b=3)
    gt[2] = 0
    gt[2, 2:5, 2:30] = 1
    prob = soft_pred(gt)
    s = scores(prob, gt)
    sm, em, wfm, mae = sod.Smeasure(), sod.Emeasure(), sod.WeightedFmeasure(beta=0.3), sod.MAE()
    bers = []
    for p, t in zip(prob.double().numpy(), gt.numpy()):
        for m in (sm, em, wfm, mae):
            m.step(pred=p * 255, gt=(t * 255).astype(np.uint8))
        hard, truth = p > 125 / 255, t == 1
        tpr = (hard & truth).sum() / truth.sum()
        tnr = (~hard & ~truth).sum() / (~truth).sum()
        bers.append(100 * (1 - 0.5 * (tpr + tnr)))
    assert s["Smeasure"] == pytest.approx(sm.get_results()["sm"], abs=1e-5)
    assert s["Emeasure"] == pytest.approx(em.get_results()["em"]["curve"].mean(), abs=1e-5)
    assert s["wFmeasure"] == pytest.approx(wfm.get_results()["wfm"], abs=1e-5)
    assert s["MAE"] == pytest.approx(mae.get_results()["mae"], abs=1e-5)
    assert s["BER"] == pytest.approx(float(np.mean(bers)), abs=1e-4)  # per image, then averaged (official)


def test_ber_edge_cases_follow_torchmetrics_macro_accuracy():
    """No foreground in truth nor prediction: BER 0; foreground predicted on an empty truth: recall 0 counts."""
    gt = torch.zeros(2, 8, 8, dtype=torch.long)
    prob = torch.zeros(2, 8, 8)
    prob[1, :4] = 1.0  # half the second image predicted foreground
    m = BinarySegmentationMetrics()
    m.update(logits_of(prob[:1]), gt[:1])
    assert float(m.compute()["BER"]) == pytest.approx(0.0)
    m.update(logits_of(prob[1:]), gt[1:])
    assert float(m.compute()["BER"]) == pytest.approx((0.0 + 100 * (1 - (0.5 + 0.0) / 2)) / 2)


def test_two_updates_equal_one_on_the_concatenation():
    gt = square_gt(b=4)
    gt[3] = 0
    prob = soft_pred(gt, seed=1)
    one = BinarySegmentationMetrics()
    one.update(logits_of(prob), gt)
    two = BinarySegmentationMetrics()
    two.update(logits_of(prob[:1]), gt[:1])
    two.update(logits_of(prob[1:]), gt[1:])
    a, b = one.compute(), two.compute()
    assert int(two.count) == 4
    for key in a:
        assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), key


def test_probabilities_are_accepted_as_well_as_logits():
    gt = square_gt()
    prob = soft_pred(gt)
    m = BinarySegmentationMetrics()
    m.update(prob, gt)
    ref = scores(prob, gt)
    for key, value in m.compute().items():
        assert float(value) == pytest.approx(ref[key], abs=1e-4)
    with pytest.raises(ValueError, match="two-class"):
        m.update(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_ignore_padding_is_cropped_away_and_ber_excludes_ignored_pixels():
    gt = square_gt(b=1)
    prob = soft_pred(gt)
    ref = scores(prob, gt)
    # pad bottom/right with ignore and a wrong prediction there: nothing changes
    padded_gt = torch.full((1, 40, 48), 255, dtype=torch.long)
    padded_gt[:, :24, :32] = gt
    padded_prob = torch.ones(1, 40, 48)
    padded_prob[:, :24, :32] = prob
    got = scores(padded_prob, padded_gt)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-5), key


def test_ignore_inside_the_image_counts_as_background_except_for_ber():
    gt = square_gt(b=1)
    prob = soft_pred(gt)
    holed = gt.clone()
    holed[:, 0:3, 0:3] = 255  # inside the valid box (row 0 / column 0 stay partly valid elsewhere)
    as_bg = gt.clone()
    as_bg[:, 0:3, 0:3] = 0
    got, ref = scores(prob, holed), scores(prob, as_bg)
    for key in ("Smeasure", "Emeasure", "wFmeasure", "MAE"):
        assert got[key] == pytest.approx(ref[key], abs=1e-6), key
    # BER leaves the 9 ignored pixels out exactly
    hard = (prob[0] > 125 / 255)
    valid = holed[0] != 255
    truth = holed[0] == 1
    tpr = (hard & truth & valid).sum() / (truth & valid).sum()
    tnr = (~hard & ~truth & valid).sum() / (~truth & valid).sum()
    assert got["BER"] == pytest.approx(float(100 * (1 - 0.5 * (tpr + tnr))), abs=1e-4)


def test_all_ignored_images_are_skipped():
    gt = square_gt(b=2)
    gt[1] = 255
    m = BinarySegmentationMetrics()
    m.update(logits_of(gt.float().clamp(max=1)), gt)
    assert int(m.count) == 1
    m.update(logits_of(torch.zeros(1, 4, 4)), torch.full((1, 4, 4), 255))
    assert int(m.count) == 1
    assert float(m.compute()["Smeasure"]) == pytest.approx(1.0, abs=1e-5)


# ---- SegmentationTask(binary_metrics=True) ------------------------------------------------------


class ThresholdMethod(nn.Module):
    """A fixed per-pixel method: foreground logit = the rgb channel 0 value (no parameters to learn)."""

    def __init__(self, num_classes: int, modalities: list[str]) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, batch: dict) -> dict:
        x = batch["modalities"]["rgb"][:, 0] * self.scale
        return {"logits": torch.stack([torch.zeros_like(x), x], dim=1)}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"adapters": [], "fusion": [], "heads": [self.scale]}


class BinaryTiles(Dataset):
    def __init__(self, n: int = 3, h: int = 24, w: int = 32) -> None:
        self.y = square_gt(b=n, h=h, w=w)
        self.y[-1, :, -4:] = 255
        g = torch.Generator().manual_seed(0)
        self.x = (self.y.clamp(max=1).float() * 2 - 1)[:, None].repeat(1, 3, 1, 1) * 3 + torch.randn(n, 3, h, w, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"modalities": {"rgb": self.x[i]}, "present": {"rgb": torch.tensor(True)}, "label": self.y[i], "meta": {"id": f"t{i}"}}


def make_task(**kw) -> SegmentationTask:
    return SegmentationTask(ThresholdMethod, num_classes=2, modalities=["rgb"], class_names=["background", "foreground"], loss="ce", **kw)


def trainer() -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)


def test_task_logs_binary_scores_in_validate_and_test(capsys):
    data = BinaryTiles()
    task = make_task(evaluation=Evaluation(binary_metrics=True))
    val = trainer().validate(task, DataLoader(data, batch_size=2), verbose=False)[0]
    out = capsys.readouterr().out
    test = trainer().test(task, DataLoader(data, batch_size=2), verbose=False)[0]
    ref = BinarySegmentationMetrics()
    ref.update(task.method({"modalities": {"rgb": data.x}})["logits"], data.y)
    expected = ref.compute()
    for stage, logged in (("val", val), ("test", test)):
        for key in ("Smeasure", "Emeasure", "wFmeasure", "MAE", "BER"):
            assert logged[f"{stage}/{key}"] == pytest.approx(float(expected[key]), abs=1e-5), (stage, key)
        assert f"{stage}/mIoU" in logged
    assert "S-measure" in out and "BER" in out and out.index("S-measure") > out.index("mIoU")


def test_task_with_sliding_windows_scores_the_same_logits():
    data = BinaryTiles(n=2, h=40, w=56)
    task = make_task(evaluation=Evaluation(binary_metrics=True, window=24, stride=16))
    logged = trainer().validate(task, DataLoader(data, batch_size=1), verbose=False)[0]
    ref = BinarySegmentationMetrics()
    batch = {"modalities": {"rgb": data.x}, "present": {"rgb": torch.ones(2, dtype=torch.bool)}, "label": data.y}
    ref.update(task.eval_logits(batch), data.y)
    assert logged["val/Smeasure"] == pytest.approx(float(ref.compute()["Smeasure"]), abs=1e-5)


def test_default_logs_no_binary_scores():
    task = make_task()
    assert task.binary_scores is None
    logged = trainer().validate(task, DataLoader(BinaryTiles(), batch_size=2), verbose=False)[0]
    assert "val/Smeasure" not in logged and "val/BER" not in logged and "val/mIoU" in logged


def test_binary_metrics_need_two_classes():
    with pytest.raises(ConfigError, match="binary_metrics"):
        SegmentationTask(ThresholdMethod, num_classes=3, modalities=["rgb"], loss="ce", evaluation=Evaluation(binary_metrics=True))


# ---- Binary_IoU (official Conv-LoRA model selection for leaf / road / ISIC) ----------------------


def toy_binary_set() -> tuple[torch.Tensor, torch.Tensor]:
    """Three 4x4 images: a half-found object, an empty truth with a false alarm, an exact hit."""
    gt = torch.zeros(3, 4, 4, dtype=torch.long)
    prob = torch.full((3, 4, 4), 0.1)
    gt[0, :2, :2] = 1
    prob[0, 0, :2] = 0.9  # 2 of 4 found, no false positive: IoU 0.5
    prob[1, 3, 3] = 0.9  # no truth, one false positive: IoU 0
    gt[2, 1:3, 1:3] = 1
    prob[2, 1:3, 1:3] = 0.8  # exact: IoU 1
    return prob, gt


def test_binary_iou_is_foreground_iou_per_image_averaged():
    import torchmetrics

    prob, gt = toy_binary_set()
    metric = BinarySegmentationMetrics(scores=["Binary_IoU"])
    metric.update(logits_of(prob), gt)
    got = metric.compute()
    assert set(got) == {"Binary_IoU"}
    assert float(got["Binary_IoU"]) == pytest.approx((0.5 + 0.0 + 1.0) / 3, abs=1e-6)
    # the official call: torchmetrics JaccardIndex(task="binary") per image, mean over images
    official = torch.stack([torchmetrics.JaccardIndex(task="binary")(p, t) for p, t in zip(prob, gt)]).mean()
    assert float(got["Binary_IoU"]) == pytest.approx(float(official), abs=1e-6)
    # not the pooled mean of background and foreground IoU
    from mmsam.metrics import SegmentationMetrics

    pooled = SegmentationMetrics(2)
    pooled.update(logits_of(prob), gt)
    assert abs(float(pooled.compute()["mIoU"]) - float(got["Binary_IoU"])) > 0.1


def test_binary_iou_empty_image_scores_zero_and_ignores_255():
    gt = torch.zeros(2, 4, 4, dtype=torch.long)
    prob = torch.full((2, 4, 4), 0.1)
    gt[1, :2] = 1
    gt[1, 3] = 255
    prob[1, :2] = 0.9
    prob[1, 3] = 0.9  # foreground predicted on ignored pixels: left out
    metric = BinarySegmentationMetrics(scores=["Binary_IoU", "BER"])
    metric.update(logits_of(prob), gt)
    got = metric.compute()
    assert set(got) == {"BER", "Binary_IoU"}
    assert float(got["Binary_IoU"]) == pytest.approx(0.5, abs=1e-6)  # (0 + 1) / 2


def test_binary_scores_unknown_name():
    with pytest.raises(ValueError, match="subset"):
        BinarySegmentationMetrics(scores=["IoU"])


def test_task_logs_binary_iou_only_when_asked(capsys):
    data = BinaryTiles()
    task = make_task(evaluation=Evaluation(binary_metrics=["Binary_IoU"]))
    logged = trainer().validate(task, DataLoader(data, batch_size=2), verbose=True)[0]
    ref = BinarySegmentationMetrics(scores=["Binary_IoU"])
    ref.update(task.method({"modalities": {"rgb": data.x}})["logits"], data.y)
    assert logged["val/Binary_IoU"] == pytest.approx(float(ref.compute()["Binary_IoU"]), abs=1e-6)
    assert "val/Smeasure" not in logged and "val/BER" not in logged
    assert "Binary_IoU" in capsys.readouterr().out
