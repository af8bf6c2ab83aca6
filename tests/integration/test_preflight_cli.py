"""`mmsam fit` refuses bad data and disagreeing configs before the first training step."""
from __future__ import annotations

import shutil

import pytest

from mmsam.cli import lightning_main
from mmsam.errors import ConfigError, DataError


def test_a_bad_test_file_stops_fit_before_training(tiny_root, make_config, tmp_path):
    root = tmp_path / "deliver"
    shutil.copytree(tiny_root, root)
    victim = sorted(root.glob("event/*/test/*/*.png"))[-1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # header intact
    cfg = make_config(tmp_path / "c.yaml", root, tmp_path / "run")
    with pytest.raises(DataError) as exc:  # main() prints it as "mmsam: error: <message>"
        lightning_main(["fit", "--config", str(cfg)])
    assert str(exc.value) == f"{victim}: cannot decode image (OSError: image file is truncated)"
    assert not (tmp_path / "run" / "checkpoints").exists()  # no epoch ran


def test_model_num_classes_that_disagrees_with_the_data_is_refused(tiny_root, make_config, tmp_path):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", model__num_classes=10)
    with pytest.raises(ConfigError, match="^model.num_classes: 10 disagrees with data set 'deliver', "
                                          "whose num_classes is 25"):
        lightning_main(["fit", "--config", str(cfg)])
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", model__num_classes=25)
    lightning_main(["--config", str(cfg)], run=False)  # agreeing: accepted
