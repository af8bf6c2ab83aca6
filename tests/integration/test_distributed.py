"""Every method trains on 2 CPU processes (gloo) with plain DDP: parameters and buffers stay equal
across processes after every step (RankSyncCheck), and evaluation on 2 processes gives the
metrics of 1 process (no sample counted twice, none dropped)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmsam.data.synthetic import generate_deliver

LORA = {"r": 2, "parts": ["q", "v"]}
METHODS = {
    "sam_lora": ({"class_path": "mmsam.methods.SamLoRA", "init_args": {"backbone": "sam_vit_tiny", "img_size": 64, "lora": LORA}}, "ohem"),
    "mlesam": ({"class_path": "mmsam.methods.MLESAM", "init_args": {"backbone": "sam2_hiera_micro", "img_size": 64, "lora": LORA}}, "ohem"),
    "memorysam": ({"class_path": "mmsam.methods.MemorySAM", "init_args": {"backbone": "sam2_hiera_micro", "img_size": 64, "lora": LORA}}, "ohem"),
    "mfnet": ({"class_path": "mmsam.methods.MFNet", "init_args": {"backbone": "sam_vit_tiny", "img_size": 64,
                                                                  "adapter": {"class_path": "mmsam.adapters.MMLoRAConfig"}}}, "ce"),
    "convlora": ({"class_path": "mmsam.methods.ConvLoRASAM", "init_args": {"backbone": "sam_vit_tiny", "img_size": 64,
                  "lora": {"class_path": "mmsam.adapters.ConvLoRAConfig", "init_args": {"r": 2, "parts": None, "num_experts": 2}}}}, "none"),
}


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """9 validation samples: 2 processes get 5 + 4, a padding sampler would count one twice."""
    root = tmp_path_factory.mktemp("ddp") / "deliver"
    generate_deliver(root, num_train=8, num_val=9, num_test=2, size=64, seed=2, progress=False)
    return root


def _config(path: Path, root: Path, run: Path, method: dict, loss: str, devices: int) -> Path:
    cfg = {
        "seed_everything": 0,
        "test_after_fit": False,
        "trainer": {"accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto",
                    "max_steps": 2, "default_root_dir": str(run), "num_sanity_val_steps": 0, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "logger": False,
                    "callbacks": [{"class_path": "mmsam.engine.RankSyncCheck"}]},
        "model": {"method": method, "loss": loss, "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}},
                  "lr_scheduler": {"class_path": "mmsam.engine.schedule.WarmupPoly", "init_args": {"warmup_epochs": 0}}},
        "data": {"root": str(root), "train_size": 64, "eval_size": 64, "batch_size": 2, "eval_batch_size": 2, "num_workers": 0},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "mmsam.cli", *args], capture_output=True, text=True, env=env, timeout=600)


def _miou(text: str) -> str:
    found = re.findall(r"^mIoU\s+(\d+\.\d\d)", text, re.M)
    assert found, text[-3000:]
    return found[-1]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_trains_and_evaluates_on_two_processes(name: str, odd_root: Path, tmp_path: Path) -> None:
    method, loss = METHODS[name]
    cfg2 = _config(tmp_path / "ddp.yaml", odd_root, tmp_path / "run", method, loss, devices=2)
    res = _run(["fit", "--config", str(cfg2)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "differ across" not in res.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    # the same checkpoint validated by 2 processes and by 1: the same mIoU over the 9 samples
    two = _run(["validate", "--config", str(cfg2), "--ckpt_path", str(ckpt)])
    cfg1 = _config(tmp_path / "one.yaml", odd_root, tmp_path / "run1", method, loss, devices=1)
    one = _run(["validate", "--config", str(cfg1), "--ckpt_path", str(ckpt)])
    assert two.returncode == 0 and one.returncode == 0, (two.stderr[-2000:], one.stderr[-2000:])
    assert _miou(two.stdout) == _miou(one.stdout)
