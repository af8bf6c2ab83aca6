"""A run killed with SIGKILL and resumed with ``--ckpt_path last`` is the same run, bit for bit."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def _fit(cfg: Path, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), "PYTHONUNBUFFERED": "1"}
    env.pop("MMSAM_KILL_AT", None)
    if kill_at:
        env["MMSAM_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "mmsam.cli", "fit", "--config", str(cfg), "--test_after_fit", "false", *extra],
                          env=env, capture_output=True, text=True, timeout=600)


def _config(make_config, tmp_path: Path, root: Path, run: Path, name: str, **kw) -> Path:
    return make_config(
        tmp_path / f"{name}.yaml", root, run,
        trainer__max_epochs=3, trainer__callbacks=[{"class_path": "killer.KillAt"}],
        model__evaluation__modality_subsets=[], model__modality_dropout=0.3,  # training draws from the RNG too
        model__method__init_args__adapter={"r": 2, "parts": ["q", "v"], "dropout": 0.1},
        **kw,
    )


def _final(run: Path) -> tuple[dict, list[float]]:
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    rows = []
    for log in sorted((run / "logs").glob("version_*/metrics.csv")):
        rows += [r for r in csv.DictReader(log.open()) if r.get("val/mIoU")]
    by_epoch = {int(r["epoch"]): float(r["val/mIoU"]) for r in rows}
    return state, [by_epoch[e] for e in sorted(by_epoch)]


@pytest.fixture(scope="module")
def reference(tiny_root, tmp_path_factory):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_integration_conftest", HERE / "conftest.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)  # type: ignore[union-attr]
    write_config = helpers.write_config
    tmp = tmp_path_factory.mktemp("ref")
    cfg = _config(write_config, tmp, tiny_root, tmp / "run", "ref")
    res = _fit(cfg, "--last_every_n_train_steps", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    return _final(tmp / "run")


@pytest.mark.parametrize("kill_at, every, saved_at, workers", [
    ("before_optimizer_step:2", 0, 2, 0),  # in epoch 1's first step: resumes from the end-of-epoch-0 last.ckpt
    ("before_optimizer_step:3", 1, 3, 0),  # in epoch 1's second step: resumes mid-epoch (last.ckpt of step 3)
    ("validation_start:4", 1, 3, 0),       # in epoch 1's validation: resumes mid-epoch, replays the last batch
    ("before_optimizer_step:2", 0, 2, 2),  # loader workers: same bits as the reference made without
])
def test_killed_and_resumed_run_matches_uninterrupted(reference, tiny_root, make_config, tmp_path, kill_at, every, saved_at, workers):
    run = tmp_path / "run"
    cfg = _config(make_config, tmp_path, tiny_root, run, "c", data__num_workers=workers)
    killed = _fit(cfg, "--last_every_n_train_steps", str(every), kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    at_kill = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert at_kill["global_step"] == saved_at
    resumed = _fit(cfg, "--last_every_n_train_steps", str(every), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    ref_state, ref_miou = reference
    state, miou = _final(run)
    assert state["global_step"] == ref_state["global_step"] == 6 and state["epoch"] == ref_state["epoch"]
    assert state["state_dict"].keys() == ref_state["state_dict"].keys()
    for k, v in ref_state["state_dict"].items():
        assert torch.equal(state["state_dict"][k], v), k  # bit for bit
    for a, b in zip(state["optimizer_states"][0]["state"].values(), ref_state["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert miou == ref_miou  # val mIoU of every epoch
