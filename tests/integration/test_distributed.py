"""Every method trains on 2 CPU processes (gloo) with plain DDP: parameters and buffers stay equal
across processes after every step (RankSyncCheck), and evaluation on 2 processes gives the
metrics of 1 process (no sample counted twice, none dropped)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from mmsam.data.synthetic import generate_deliver

LORA = {"r": 2, "parts": ["q", "v"]}
METHODS = {
    "sam_lora": ({"class_path": "mmsam.methods.SamLoRA", "init_args": {"backbone": "sam_vit_tiny", "img_size": 64, "adapter": LORA}}, "ohem"),
    "mlesam": ({"class_path": "mmsam.methods.MLESAM", "init_args": {"backbone": "sam2_hiera_micro", "img_size": 64, "adapter": LORA}}, "ohem"),
    "memorysam": ({"class_path": "mmsam.methods.MemorySAM", "init_args": {"backbone": "sam2_hiera_micro", "img_size": 64, "adapter": LORA}}, "ohem"),
    "mfnet": ({"class_path": "mmsam.methods.MFNet", "init_args": {"backbone": "sam_vit_tiny", "img_size": 64,
                                                                  "adapter": {"class_path": "mmsam.adapters.MMLoRAConfig"}}}, "ce"),
    "convlora": ({"class_path": "mmsam.methods.ConvLoRASAM", "init_args": {"backbone": "sam_vit_tiny", "img_size": 64,
                  "adapter": {"class_path": "mmsam.adapters.ConvLoRAConfig", "init_args": {"r": 2, "parts": None, "num_experts": 2}}}}, "none"),
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


# ---- a process that sees no batch still enters every metric synchronisation --------------------
CLASSES = ["a", "b", "c"]


class _PixelMethod(nn.Module):
    """A 1×1 convolution over the summed modalities (any image size)."""

    def __init__(self, num_classes: int, modalities: list[str]) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, batch: dict) -> dict:
        return {"logits": self.conv(sum(batch["modalities"].values()))}

    def param_groups(self) -> dict:
        return {"adapters": [], "fusion": [], "heads": list(self.conv.parameters())}


class _OnlyOnRank(IterableDataset):
    """All samples on ``rank`` 0, none on the others (no length: Lightning runs the loop everywhere)."""

    def __init__(self, rank: int, n: int = 3) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, 3, 8, 8, generator=g)
        self.y = torch.randint(0, len(CLASSES), (n, 8, 8), generator=g)
        self.rank = rank

    def __iter__(self):
        for i in range(len(self.y) if self.rank == 0 else 0):
            yield {"modalities": {"rgb": self.x[i, 0], "depth": self.x[i, 1]},
                   "present": {"rgb": torch.tensor(True), "depth": torch.tensor(True)}, "label": self.y[i]}


def _scores(rank: int, world: int) -> dict[str, float]:
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy

    from mmsam.engine import SegmentationTask
    from mmsam.engine.evaluation import Evaluation
    from mmsam.engine.val_images import ValidationImages

    torch.manual_seed(0)
    task = SegmentationTask(_PixelMethod, num_classes=3, modalities=["rgb", "depth"], class_names=CLASSES, loss="ce",
                            evaluation=Evaluation(modality_subsets=[["rgb"]]))
    strategy = DDPStrategy(process_group_backend="gloo", timeout=timedelta(seconds=30)) if world > 1 else "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=world, strategy=strategy, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         callbacks=[ValidationImages(max_samples=0)])
    out = trainer.validate(task, DataLoader(_OnlyOnRank(rank), batch_size=2), verbose=False)[0]
    return {k: float(v) for k, v in out.items()}


def _uneven_worker(rank: int, port: int, queue) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0", LOCAL_RANK=str(rank))
    try:
        queue.put((rank, _scores(rank, 2)))
    except BaseException as e:  # noqa: BLE001  (reported to the test, which fails with it)
        queue.put((rank, repr(e)))
        raise


def test_a_process_without_batches_still_enters_the_metric_synchronisation() -> None:
    """Process 1 gets no batch: both processes must compute (synchronise) every logged metric —
    scalars, per-subset scores, the per-class ClasswiseWrapper — or process 0 would wait forever."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("fork")  # the children start with this process's imports (spawn re-imports: ~15 s more)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_uneven_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        got = dict(queue.get(timeout=120) for _ in range(2))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(isinstance(v, dict) for v in got.values()), got
    one = _scores(0, 1)
    assert {"val/mIoU", "val/OA", "val/IoU/a", "val/mIoU@rgb"} <= one.keys()
    assert got[0] == pytest.approx(one) and got[1] == pytest.approx(one)  # every process holds the synchronised values
