"""The command line's terminal output: no third-party notices, config errors as one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mmsam.cli_support import format_config_error

NOISE = ("💡 Tip", "litlogger", "GPU available:", "TPU available:", "HPU available:")


def test_fit_output_has_no_lightning_notices(tiny_root, make_config, tmp_path):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run")
    res = subprocess.run([sys.executable, "-m", "mmsam.cli", "fit", "--config", str(cfg)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    both = res.stdout + res.stderr
    assert not [n for n in NOISE if n in both]
    assert "[test] modalities:" in res.stdout and "mIoU" in res.stdout  # our tables stay


@pytest.mark.parametrize(
    "extra,expected",
    [
        (["--model.method.init_args.adapter.rank", "8"], "did you mean 'r'?"),
        (["--model.lossx", "ce"], "did you mean 'loss'?"),
        (["--trainer.max_epochs", "abc"], "trainer.max_epochs: expected int, got 'abc'"),
        (["--model.method.init_args.adapter.r", "0"], "LoRA r (the rank) must be an integer >= 1, got 0"),
        (["--model.method.init_args.adapter.r", "-2"], "must be an integer >= 1, got -2"),
        (["--model.optimizer.init_args.lr", "-1"], "model.optimizer: Invalid learning rate: -1.0"),
        (["--model.lr", "0.1"], "config key 'model.lr' was replaced: use model.optimizer.init_args.lr"),  # a replaced key
    ],
)
def test_config_errors_are_one_line(tiny_root, make_config, tmp_path, extra, expected):
    # a subprocess, as a user runs it: in-process, Lightning's log handlers hold an earlier test's closed stderr
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run")
    res = subprocess.run([sys.executable, "-m", "mmsam.cli", "fit", "--config", str(cfg), *extra], capture_output=True, text=True)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-2000:]
    assert err[-1].startswith("mmsam: error:") and expected in err[-1]
    assert len(err) <= 2, err  # at most Lightning's "Seed set to 0" before it


def test_unknown_yaml_key_at_depth_is_named_with_a_suggestion(tiny_root, make_config, tmp_path):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", model__method__init_args__adapter={"rank": 4})
    res = subprocess.run([sys.executable, "-m", "mmsam.cli", "fit", "--config", str(cfg)], capture_output=True, text=True)
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) <= 2, res.stderr[-2000:]
    assert "adapter.rank" in err[-1] and "did you mean 'r'?" in err[-1]


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("lr", 0.1, "config key 'model.lr' was replaced: use model.optimizer.init_args.lr"),
        ("milestones", [2, 4], "'model.milestones' was replaced: use model.lr_scheduler.init_args.milestones (class_path: torch.optim.lr_scheduler.MultiStepLR)"),
        ("poly_power", 1.0, "'model.poly_power' was replaced: use model.lr_scheduler.init_args.power"),
        ("eval_window", 256, "config key 'model.eval_window' was replaced: use model.evaluation.window"),
        ("optimizer", "sgd", "'sgd' is no longer a name: use model.optimizer: {class_path: torch.optim.SGD"),
        ("optimizer", {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "weight_decay": -0.1}},
         "model.optimizer: Invalid weight_decay value: -0.1"),
        ("lr_scheduler", {"class_path": "mmsam.engine.schedule.WarmupPoly", "init_args": {"warmup_ratio": 2}}, "warmup_ratio in [0, 1]"),
    ],
)
def test_replaced_yaml_keys_name_the_new_key(make_config, tmp_path, key, value, expected):
    """An old config's optimiser / schedule keys: one line saying where the value goes now (as the CLI prints it)."""
    from argparse import ArgumentError

    from mmsam.cli import lightning_main
    from mmsam.cli_support import config_error_line

    cfg = make_config(tmp_path / "c.yaml", tmp_path, tmp_path / "run", **{f"model__{key}": value})
    with pytest.raises((ArgumentError, ValueError)) as e:  # a constructor's ConfigError arrives wrapped in a ValueError
        lightning_main(["--config", str(cfg)], run=False)
    line = config_error_line(e.value)
    assert expected in line and "\n" not in line


def test_older_checkpoint_hyper_parameters_are_translated():
    """A checkpoint written before model.optimizer / lr_scheduler / evaluation still tests: its
    evaluation keys move under `evaluation`, its optimiser keys are left to the config."""
    from mmsam.cli_support import legacy_hparams

    old = {"loss": "ce", "lr": 0.01, "optimizer": "sgd", "milestones": [24], "warmup_epochs": 10.0, "poly_extra_epochs": 1,
           "eval_window": 256, "eval_stride": 32, "absent_classes": "zero", "eval_classes": ["a"], "modality_dropout": 0.0}
    assert legacy_hparams(old) == {"loss": "ce", "modality_dropout": 0.0,
                                   "evaluation": {"window": 256, "stride": 32, "absent_classes": "zero", "classes": ["a"]}}
    new = {"loss": "ce", "evaluation": {"window": 256}, "no_weight_decay_1d": True}
    assert legacy_hparams(new) is new


def test_integer_limit_batches_means_batches(tiny_root, make_config, tmp_path):
    """Lightning types limit_*_batches ``int | float`` (int = batches); jsonargparse used to read 1 as 1.0 = all."""
    from mmsam.cli import lightning_main

    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run")
    cli = lightning_main(["--config", str(cfg), "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0.5"], run=False)
    assert cli.trainer.limit_train_batches == 1 and isinstance(cli.trainer.limit_train_batches, int)
    assert cli.trainer.limit_val_batches == 0.5 and isinstance(cli.trainer.limit_val_batches, float)


def test_unparsed_messages_still_fit_on_one_line():
    assert "\n" not in format_config_error("Parser key \"a\":\n  something\n  odd")
