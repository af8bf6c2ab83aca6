"""``model.grad_checkpointing`` from YAML: reaches the method's encoder blocks; a non-bool is one line."""
from __future__ import annotations

from argparse import ArgumentError

import pytest

from mmsam.backbones.grad_checkpointing import is_grad_checkpointed
from mmsam.cli import lightning_main
from mmsam.cli_support import config_error_line


def test_yaml_option_switches_the_encoder_blocks(tiny_root, make_config, tmp_path):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", model__grad_checkpointing=True)
    model = lightning_main(["--config", str(cfg)], run=False).model
    blocks = model.method.backbone.image_encoder.blocks
    assert len(blocks) == 2 and all(is_grad_checkpointed(b) for b in blocks)
    assert model.hparams["grad_checkpointing"] is True


def test_yaml_non_bool_is_refused_in_one_line(make_config, tmp_path):
    cfg = make_config(tmp_path / "c.yaml", tmp_path, tmp_path / "run", model__grad_checkpointing="sometimes")
    with pytest.raises((ArgumentError, ValueError)) as e:
        lightning_main(["--config", str(cfg)], run=False)
    line = config_error_line(e.value)
    assert "grad_checkpointing" in line and "sometimes" in line and "\n" not in line, line
