"""End to end through the ``mmsam`` command line, as a user runs it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.cli import main


def test_fit_writes_checkpoints_and_prints_tables(tiny_root, make_config, tmp_path, capsys):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", trainer__max_epochs=2)
    assert main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "[test] modalities: rgb, depth, event, lidar" in text and "[test] modalities: rgb" in text
    assert re.search(r"^Road\s+\d+\.\d\d", text, re.M)
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("epoch001") for n in ckpts)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 4
    assert list((tmp_path / "run" / "logs").glob("version_*/metrics.csv"))

    # predict: one palette PNG per test sample (class ids, DELIVER's palette), in the sample's relative folder
    out_dir = tmp_path / "preds"
    assert main(["predict", "--config", str(cfg), "--ckpt_path", str(tmp_path / "run/checkpoints/last.ckpt"),
                 "--predict_writer.output_dir", str(out_dir)]) == 0
    pngs = sorted(out_dir.rglob("*.png"))
    assert len(pngs) == 4
    img = Image.open(pngs[0])
    assert img.mode == "P" and img.size == (64, 64) and np.array(img).max() < 25
    assert img.getpalette()[:3] == [70, 70, 70]  # DELIVER class 0 (Building)

    # a checkpoint of another model is refused, naming the file and the keys
    capsys.readouterr()
    code = main(["validate", "--config", str(cfg), "--model.method.init_args.adapter.r", "3",
                 "--ckpt_path", str(tmp_path / "run/checkpoints/last.ckpt")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("mmsam: error:")
    assert "last.ckpt" in last and "does not fit" in last and "lora_A" in last


def test_info_prints_exact_parameter_counts(tiny_root, make_config, tmp_path, capsys):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run")
    assert main(["info", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+[\d,]+\s+\((\d+)\)$", out, re.M)}
    from mmsam.methods import SamLoRA

    from mmsam.adapters import LoRAConfig

    ref = SamLoRA(25, ["rgb", "depth", "event", "lidar"], backbone="sam_vit_tiny", img_size=64, adapter=LoRAConfig(r=2, parts=["q", "v"]))
    groups = {k: sum(p.numel() for p in v) for k, v in ref.param_groups().items()}
    assert counts["adapters"] == groups["adapters"] == 2 * 2 * (32 * 2 + 2 * 32)  # 2 blocks, q and v
    assert counts["heads"] == groups["heads"]
    assert counts["trainable"] == counts["adapters"] + counts["fusion"] + counts["heads"]
    assert counts["frozen"] == sum(p.numel() for p in ref.parameters() if not p.requires_grad)


@pytest.mark.parametrize(
    "override,message",
    [
        ({"data__modalities": ["rgb", "thermal"]}, "thermal"),
        ({"data__dataset": "kitti360"}, "kitti360"),
        ({"model__method__init_args__backbone": "sam_vit_x"}, "unknown backbone"),
        ({"model__method__init_args__checkpoint": "/nonexistent/sam_vit_b_01ec64.pth"}, "sam_vit_b_01ec64.pth"),
    ],
)
def test_bad_config_values_give_one_clear_error(tiny_root, make_config, tmp_path, capsys, override, message):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", **override)
    code = main(["fit", "--config", str(cfg)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("mmsam: error:") and message in last


def test_error_output_has_no_traceback(tiny_root, make_config, tmp_path):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", data__modalities=["rgb", "thermal"])
    res = subprocess.run([sys.executable, "-m", "mmsam.cli", "fit", "--config", str(cfg)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "unknown modality 'thermal'" in res.stderr


def test_missing_modality_file_stops_before_training(tiny_root, make_config, tmp_path, capsys):
    import shutil

    root = tmp_path / "deliver"
    shutil.copytree(tiny_root, root)
    victim = sorted((root / "lidar").glob("*/train/*/*_lidar_front.png"))[0]
    victim.unlink()
    cfg = make_config(tmp_path / "c.yaml", root, tmp_path / "run")
    code = main(["fit", "--config", str(cfg)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("mmsam: error:") and victim.name in last
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_kill_during_training_then_resume(tiny_root, make_config, tmp_path):
    """SIGKILL a real training process after its first checkpoint, then resume with ``--ckpt_path last``."""
    run = tmp_path / "run"
    cfg = make_config(tmp_path / "c.yaml", tiny_root, run, trainer__max_epochs=1000, model__evaluation__modality_subsets=[])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmsam.cli", "fit", "--config", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and not last.exists():
            time.sleep(0.2)
        assert last.exists(), "no checkpoint written within 240 s"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = torch.load(last, map_location="cpu", weights_only=True)  # not torn: written atomically
    done = state["epoch"]
    cfg2 = make_config(tmp_path / "c2.yaml", tiny_root, run, trainer__max_epochs=done + 2, model__evaluation__modality_subsets=[])
    assert main(["fit", "--config", str(cfg2), "--ckpt_path", "last", "--test_after_fit", "false"]) == 0
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    # no optimiser step lost or repeated: 2 steps per epoch up to the new max_epochs
    assert resumed["global_step"] == (done + 2) * 2
    # the resumed run started where the killed one stopped, not at epoch 0
    import csv

    logs = sorted((run / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    epochs = {int(r["epoch"]) for r in csv.DictReader(logs[-1].open()) if r.get("epoch")}
    assert len(logs) == 2 and min(epochs) >= done


def test_print_config_lists_documented_keys(tiny_root, make_config, tmp_path, capsys):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(cfg), "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key in ("class_path: mmsam.methods.SamLoRA", "ohem_thresh: 0.7", "parts:", "scale_range:", "precision:",
                "class_path: torch.optim.AdamW", "class_path: mmsam.engine.schedule.WarmupPoly", "window_edges: unique"):
        assert key in out


def test_bf16_mixed_precision_trains_on_cpu(tiny_root, make_config, tmp_path):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", trainer__precision="bf16-mixed",
                      trainer__max_steps=2, model__evaluation__modality_subsets=[])
    assert main(["fit", "--config", str(cfg), "--test_after_fit", "false"]) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    assert all(torch.isfinite(v).all() for k, v in state["state_dict"].items() if "lora_" in k)


@pytest.mark.parametrize("method", ["mmsam.methods.SamLoRA", "mmsam.methods.MLESAM"])
def test_missing_modality_table_for_every_method(tiny_root, make_config, tmp_path, capsys, method):
    init = {"backbone": "sam2_hiera_micro", "img_size": 64}
    if method.endswith("MLESAM"):
        init["adapter"] = {"r": 2, "parts": ["q", "v"]}
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", trainer__max_steps=2,
                      model__method={"class_path": method, "init_args": init},
                      model__evaluation__modality_subsets="all", model__modality_dropout=0.3)
    assert main(["fit", "--config", str(cfg), "--test_after_fit", "false"]) == 0
    capsys.readouterr()
    assert main(["test", "--config", str(cfg), "--ckpt_path", str(tmp_path / "run/checkpoints/last.ckpt")]) == 0
    out = capsys.readouterr().out
    table = out[out.index("[test] modalities present (x)"):].splitlines()[1:]
    rows = [r for r in table[1:] if re.match(r"^\s*[x-]\s", r)]
    assert len(rows) == 15  # every non-empty subset of 4 modalities
    assert rows[0].split()[:4] == ["x", "x", "x", "x"] and sum(r.split()[:4] == ["x", "-", "-", "-"] for r in rows) == 1
    assert all(re.search(r"\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d$", r) for r in rows)


def test_data_synth_and_check_report_missing_files(tmp_path, capsys):
    root = tmp_path / "muses"
    assert main(["data", "synth", "--dataset", "muses", "--root", str(root), "--num-train", "4", "--num-val", "2",
                 "--num-test", "2", "--size", "64"]) == 0
    assert main(["data", "check", "--dataset", "muses", "--root", str(root)]) == 0
    victim = sorted(root.rglob("*_event_camera.png"))[0]
    victim.rename(victim.with_name("renamed.png"))
    capsys.readouterr()
    assert main(["data", "check", "--dataset", "muses", "--root", str(root)]) == 1
    assert victim.name in capsys.readouterr().out
    assert main(["data", "check", "--dataset", "nope", "--root", str(root)]) == 2


def test_own_checkpoint_callback_without_dirpath_saves_under_the_run(tiny_root, make_config, tmp_path):
    """A config's ModelCheckpoint (another monitor) replaces the default one and, without a dirpath,
    saves where the default would: <default_root_dir>/checkpoints."""
    callback = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"monitor": "val/OA", "mode": "max", "filename": "best-oa", "save_last": True}}
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", trainer__callbacks=[callback],
                      test_after_fit=False)
    assert main(["fit", "--config", str(cfg)]) == 0
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["best-oa.ckpt", "last.ckpt"]
