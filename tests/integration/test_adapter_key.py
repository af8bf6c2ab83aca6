"""The method's one `adapter:` key, and the deprecated `lora:` read as it (config files, command line, model folders)."""
from __future__ import annotations

import pytest
import yaml

from mmsam import cli_support
from mmsam.adapters import LoRAConfig, MMLoRAConfig
from mmsam.cli import lightning_main, main

LORA = {"r": 2, "parts": ["q", "v"]}


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(cli_support, "_warned", set())


def _old_style(path, make_config, tiny_root, tmp_path, **init):
    cfg = yaml.safe_load(make_config(path, tiny_root, tmp_path / "run").read_text())
    args = cfg["model"]["method"]["init_args"]
    del args["adapter"]
    args.update(init)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_deprecated_lora_key_in_a_config_file_is_read_as_adapter(tiny_root, make_config, tmp_path, capsys):
    cfg = _old_style(tmp_path / "old.yaml", make_config, tiny_root, tmp_path, lora=LORA)
    method = lightning_main(["--config", str(cfg)], run=False).model.method
    assert method.adapter_config == LoRAConfig(**LORA)
    err = capsys.readouterr().err.strip().splitlines()
    warned = [ln for ln in err if ln.startswith("mmsam: warning:")]
    assert len(warned) == 1 and "'model.method.init_args.lora' is deprecated: renamed to 'adapter'" in warned[0]


def test_deprecated_lora_option_on_the_command_line(tiny_root, make_config, tmp_path, capsys):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run")
    method = lightning_main(["--config", str(cfg), "--model.method.init_args.lora.r", "3"], run=False).model.method
    assert method.adapter_config.r == 3
    assert "init_args.lora' is deprecated" in capsys.readouterr().err


def test_both_keys_are_refused_in_one_line(tiny_root, make_config, tmp_path, capsys):
    cfg = _old_style(tmp_path / "both.yaml", make_config, tiny_root, tmp_path, lora=LORA, adapter=LORA)
    assert main(["fit", "--config", str(cfg)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mmsam: error:") and "keep 'adapter' only" in last


def test_any_adapter_by_class_path_in_any_method_from_yaml(tiny_root, make_config, tmp_path):
    mm = {"class_path": "mmsam.adapters.MMLoRAConfig", "init_args": {"r": 2}}
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", model__method__init_args__adapter=mm)
    method = lightning_main(["--config", str(cfg)], run=False).model.method
    assert isinstance(method.adapter_config, MMLoRAConfig)
    assert method.adapter_config.streams == list(method.modalities)  # filled from the data's modalities


def test_model_folder_written_with_the_old_key_still_builds():
    from mmsam.deploy.model_folder import build_task

    model = {"method": {"class_path": "mmsam.methods.SamLoRA",
                        "init_args": {"backbone": "sam_vit_tiny", "img_size": 64, "lora": LORA}},
             "num_classes": 3, "modalities": ["rgb"]}
    with pytest.warns(FutureWarning, match="renamed to 'adapter'"):
        task = build_task(model)
    assert task.method.adapter_config == LoRAConfig(**LORA)


def test_model_folder_written_with_the_old_task_keys_still_builds():
    """A model folder exported before model.optimizer / model.evaluation: evaluation keys move
    under ``evaluation``, optimiser keys (training only) are dropped."""
    from mmsam.deploy.model_folder import build_task

    model = {"method": {"class_path": "mmsam.methods.SamLoRA", "init_args": {"backbone": "sam_vit_tiny", "img_size": 64}},
             "num_classes": 3, "modalities": ["rgb"], "lr": 0.01, "optimizer": "sgd", "warmup_epochs": 10.0,
             "eval_window": 64, "eval_stride": 32, "absent_classes": "skip"}
    task = build_task(model)
    assert (task.evaluation.window, task.evaluation.stride, task.evaluation.absent_classes) == (64, 32, "skip")
