"""SegmentationTask options: optimiser and multi-step schedule, sliding-window evaluation in
validate / test / predict, evaluation.classes."""
from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmsam.engine import SegmentationTask
from mmsam.engine.schedule import WarmupPoly
from mmsam.engine.evaluation import Evaluation
from mmsam.engine.tables import format_table
from mmsam.errors import ConfigError
from mmsam.metrics import SegmentationMetrics

CLASSES = ["imp", "building", "low_veg", "tree", "car", "clutter"]


class FixedSizeMethod(nn.Module):
    """A per-pixel method that, like SAM, accepts only ``size × size`` inputs."""

    def __init__(self, num_classes: int, modalities: list[str], size: int = 32) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.size = size
        self.conv = nn.Conv2d(3, num_classes, 1)
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, batch: dict) -> dict:
        x = sum(batch["modalities"][m] for m in batch["modalities"])
        self.shapes.append(tuple(x.shape))
        if x.shape[-2:] != (self.size, self.size):
            raise AssertionError(f"got {tuple(x.shape[-2:])}, built for {self.size}")
        return {"logits": self.conv(x)}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"adapters": [], "fusion": [], "heads": list(self.conv.parameters())}


class Tiles(Dataset):
    def __init__(self, n: int, h: int, w: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, 3, h, w, generator=g)
        self.y = torch.randint(0, len(CLASSES), (n, h, w), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {
            "modalities": {"rgb": self.x[i, 0], "dsm": self.x[i, 1]},
            "present": {"rgb": torch.tensor(True), "dsm": torch.tensor(True)},
            "label": self.y[i],
            "meta": {"id": f"tile{i}"},
        }


def make_task(**kw) -> SegmentationTask:
    kw.setdefault("loss", "ce")
    return SegmentationTask(
        lambda k, mods: FixedSizeMethod(k, mods), num_classes=len(CLASSES), modalities=["rgb", "dsm"], class_names=CLASSES, **kw
    )


def trainer(**kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, **kw)


def test_sgd_multistep_gives_mfnets_effective_schedule():
    """milestones [2, 4] count completed epochs: lr 1e-2 for epochs 1-2, 1e-3 for 3-4, 1e-4 after."""
    task = make_task(optimizer=partial(torch.optim.SGD, lr=1e-2, momentum=0.9, weight_decay=5e-4),
                     lr_scheduler=partial(torch.optim.lr_scheduler.MultiStepLR, milestones=[2, 4], gamma=0.1))
    seen: dict[int, list[float]] = {}

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            seen.setdefault(trainer.current_epoch, []).append(trainer.optimizers[0].param_groups[0]["lr"])

    t = trainer(max_epochs=6, callbacks=[Record()], limit_val_batches=0)
    t.fit(task, DataLoader(Tiles(6, 32, 32), batch_size=2))
    opt = t.optimizers[0]
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 5e-4
    expected = [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4]
    for epoch, lr in enumerate(expected):
        assert seen[epoch] == pytest.approx([lr] * 3), epoch  # constant within each epoch


def test_default_optimiser_and_schedule_unchanged():
    task = make_task()
    t = trainer(max_epochs=2, limit_val_batches=0)
    t.fit(task, DataLoader(Tiles(4, 32, 32), batch_size=2))
    opt = t.optimizers[0]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 6e-4 and opt.defaults["weight_decay"] == 0.01
    sched = t.lr_scheduler_configs[0]
    assert isinstance(sched.scheduler, WarmupPoly) and sched.interval == "step"
    assert (sched.scheduler.warmup_ratio, sched.scheduler.power, sched.scheduler.warmup_steps, sched.scheduler.total_steps) == (0.1, 0.9, 20, 4)


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"evaluation": {"window": 32, "stride": 48}}, "model.evaluation.stride"),
        ({"evaluation": {"window": 32, "stride": 0}}, "model.evaluation.stride"),
        ({"evaluation": {"window": -4}}, "model.evaluation.window"),
        ({"evaluation": {"stride": 16}}, "model.evaluation.window is not"),
        ({"evaluation": {"window": 32, "window_batch": 0}}, "model.evaluation.window_batch"),
        ({"optimizer": partial(torch.optim.SGD, lr=-1.0)}, "model.optimizer: Invalid learning rate"),
        ({"lr_scheduler": partial(torch.optim.lr_scheduler.MultiStepLR, milestone=[2])}, "model.lr_scheduler: .*milestone"),
        ({"evaluation": {"classes": ["building", "roads"]}}, "model.evaluation.classes .*roads"),
        ({"evaluation": {"window": 32, "val_stride": 40}}, "model.evaluation.val_stride"),
        ({"evaluation": {"val_stride": 8}}, "model.evaluation.window is not"),
        ({"evaluation": {"modality_subsets": [["rgb", "lidar"]]}}, "model.evaluation.modality_subsets"),
    ],
)
def test_bad_options_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        make_task(**kw)


def test_eval_window_used_in_validate_test_and_predict_on_larger_tiles():
    task = make_task(evaluation=Evaluation(window=32, stride=16, window_batch=3, modality_subsets=[["rgb"]]))
    data = DataLoader(Tiles(2, 50, 70), batch_size=1)
    t = trainer()
    t.validate(task, data, verbose=False)
    scores = t.test(task, data, verbose=False)[0]
    assert {"test/mIoU", "test/OA", "test/mIoU@rgb"} <= scores.keys()
    preds = t.predict(task, data)
    assert preds[0]["pred"].shape == (1, 50, 70) and preds[0]["id"] == ["tile0"]
    assert {s[-2:] for s in task.method.shapes} == {(32, 32)} and max(s[0] for s in task.method.shapes) <= 3
    # the same score as a direct sliding-window pass over the whole tiles
    metric = SegmentationMetrics(len(CLASSES))
    with torch.no_grad():
        for batch in data:
            logits = task.eval_logits(batch)
            assert logits.shape == (1, len(CLASSES), 50, 70)
            metric.update(logits, batch["label"])
    assert scores["test/mIoU"] == pytest.approx(100 * float(metric.compute()["mIoU"]), abs=1e-4)


def test_val_stride_applies_to_validation_only():
    task = make_task(evaluation=Evaluation(window=32, stride=8, val_stride=32))
    data = DataLoader(Tiles(1, 64, 64), batch_size=1)
    t = trainer()
    t.validate(task, data, verbose=False)
    n_val = sum(s[0] for s in task.method.shapes)
    task.method.shapes.clear()
    t.test(task, data, verbose=False)
    assert n_val == 2 * 2 and sum(s[0] for s in task.method.shapes) == 5 * 5


def test_without_eval_window_the_whole_image_goes_through():
    task = make_task()
    with pytest.raises(AssertionError, match="built for 32"):
        trainer().test(task, DataLoader(Tiles(1, 50, 70), batch_size=1), verbose=False)


def test_eval_classes_change_means_not_oa_and_are_marked():
    data = DataLoader(Tiles(2, 32, 32), batch_size=2)
    scores = {}
    for key, classes in (("all", None), ("five", CLASSES[:5])):
        torch.manual_seed(0)
        task = make_task(evaluation=Evaluation(classes=classes))
        scores[key] = trainer().test(task, data, verbose=False)[0]
    assert scores["five"]["test/OA"] == pytest.approx(scores["all"]["test/OA"])
    assert scores["five"]["test/mIoU"] != pytest.approx(scores["all"]["test/mIoU"])
    assert task.mean_over == [0, 1, 2, 3, 4] and task.metrics["test_0"]["mIoU"].mean_over == [0, 1, 2, 3, 4]

    s = {"IoU": torch.full((6,), 0.5), "F1": torch.full((6,), 0.6), "Acc": torch.full((6,), 0.7),
         "mIoU": torch.tensor(0.5), "OA": torch.tensor(0.8), "mAcc": torch.tensor(0.7), "mF1": torch.tensor(0.6)}
    text = format_table("test", ["rgb"], s, CLASSES, mean_over=[0, 1, 2, 3, 4])
    marked = [line.split()[0] for line in text.splitlines() if "not in means" in line]
    assert marked == ["clutter"] and "over 5 of 6 classes" in text
    assert "not in means" not in format_table("test", ["rgb"], s, CLASSES)


def test_poly_extra_epoch_and_no_decay_1d_reach_the_optimiser():
    """MemorySAM's official schedule decays over (epochs + 1) × iterations; its AdamW skips 1-D tensors."""
    lrs: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    task = make_task(optimizer=partial(torch.optim.AdamW, lr=1.0, weight_decay=0.5), no_weight_decay_1d=True,
                     lr_scheduler=partial(WarmupPoly, warmup_epochs=0, power=1.0, extra_epochs=1))
    t = trainer(max_epochs=2, callbacks=[Record()], limit_val_batches=0)
    t.fit(task, DataLoader(Tiles(4, 32, 32), batch_size=2))  # 2 steps per epoch: decay over 6 steps
    assert lrs == pytest.approx([1 - s / 6 for s in range(4)])
    groups = {g["name"]: g for g in t.optimizers[0].param_groups}
    assert groups["heads"]["weight_decay"] == 0.5 and groups["heads_no_decay"]["weight_decay"] == 0.0
    assert [p.dim() for p in groups["heads_no_decay"]["params"]] == [1]
