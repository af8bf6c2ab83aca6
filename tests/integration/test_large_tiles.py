"""``mmsam fit`` / ``test`` / ``report`` with sliding-window evaluation on images larger than the
model's input, SGD + multi-step schedule and a class left out of the means."""
from __future__ import annotations

import re

from mmsam.cli import main


def test_fit_test_report_with_sliding_windows(tiny_root, make_config, tmp_path, capsys):
    # SAM's encoder is built for 64 px; evaluation images are 96 px, seen through 64 px windows
    cfg = make_config(
        tmp_path / "c.yaml", tiny_root, tmp_path / "run",
        trainer__max_epochs=2, trainer__limit_train_batches=1, data__eval_size=96,
        model__optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 1e-2, "momentum": 0.9, "weight_decay": 5e-4}},
        model__lr_scheduler={"class_path": "torch.optim.lr_scheduler.MultiStepLR", "init_args": {"milestones": [1], "gamma": 0.1}},
        model__evaluation__window=64, model__evaluation__stride=32, model__evaluation__window_batch=3,
        model__evaluation__classes=["Building", "Road", "Vegetation", "Sky"], model__evaluation__modality_subsets=[],
    )
    assert main(["fit", "--config", str(cfg), "--test_after_fit", "false"]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["test", "--config", str(cfg), "--ckpt_path", str(ckpt)]) == 0
    text = capsys.readouterr().out
    tested = re.search(r"^mIoU\s+(\d+\.\d\d)\s+OA (\d+\.\d\d)", text, re.M)
    assert tested and "over 4 of 25 classes" in text
    assert re.search(r"^Fence\s.*\(not in means\)$", text, re.M) and not re.search(r"^Road\s.*not in means", text, re.M)

    # the lr of the SGD optimiser dropped ×0.1 after epoch 1 (stepped per epoch)
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-3
    assert state["lr_schedulers"][0]["milestones"] == {1: 1}

    out = tmp_path / "report"
    assert main(["report", "--config", str(cfg), "--ckpt_path", str(ckpt), "--output", str(out), "--examples", "1"]) == 0
    report = (out / "report.md").read_text()
    row = next(line for line in report.splitlines()[report.splitlines().index("## Summary (all modalities)"):] if re.match(r"\| \d", line))
    assert row.split("|")[1:3] == [f" {tested.group(1)} ", f" {tested.group(2)} "]  # same as `mmsam test`
    assert "sliding windows: 64 px, stride 32 px" in report and "left out: Fence" in report
