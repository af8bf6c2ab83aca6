"""Fixtures for end-to-end CLI tests: a small synthetic set and a tiny config."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmsam.data.synthetic import generate_deliver


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "deliver"
    generate_deliver(root, num_train=8, num_val=4, num_test=4, size=64, seed=1, progress=False)
    return root


def write_config(path: Path, root: Path, run_dir: Path, **overrides) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 1,
            "default_root_dir": str(run_dir),
            "log_every_n_steps": 1,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "model": {
            "method": {
                "class_path": "mmsam.methods.SamLoRA",
                "init_args": {"backbone": "sam_vit_tiny", "img_size": 64, "adapter": {"r": 2, "parts": ["q", "v"]}},
            },
            "loss": "ohem",
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
            "lr_scheduler": {"class_path": "mmsam.engine.schedule.WarmupPoly", "init_args": {"warmup_epochs": 0}},
            "evaluation": {"absent_classes": "skip", "modality_subsets": [["rgb"]]},
        },
        "data": {
            "root": str(root),
            "train_size": 64,
            "eval_size": 64,
            "batch_size": 4,
            "eval_batch_size": 4,
            "num_workers": 0,
        },
    }
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture()
def make_config():
    """``make_config(path, root, run_dir, a__b=value, ...)`` writes a tiny YAML config."""
    return write_config
