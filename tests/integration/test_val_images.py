"""Validation images (TensorBoard) and per-class IoU scalars during fit."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
from lightning.pytorch.loggers import CSVLogger, Logger

from mmsam.cli import lightning_main
from mmsam.engine.val_images import ValidationImages, _image_loggers


class _Experiment:
    def __init__(self) -> None:
        self.images: list[tuple[str, np.ndarray]] = []

    def add_image(self, tag: str, image: np.ndarray, global_step: int = 0, dataformats: str = "CHW") -> None:
        self.images.append((tag, image))


class TensorBoardLogger(Logger):
    """Stands in for Lightning's (same class name, an ``experiment.add_image``): tensorboard is optional."""

    def __init__(self) -> None:
        super().__init__()
        self._exp = _Experiment()

    name = "tb"
    version = 0

    @property
    def experiment(self) -> _Experiment:
        return self._exp

    def log_metrics(self, metrics, step=None) -> None:  # noqa: D102
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:  # noqa: D102
        pass


def _fit(cfg: Path, loggers: list) -> object:
    cli = lightning_main(["--config", str(cfg), "--test_after_fit", "false"], run=False)
    cli.trainer.loggers = loggers
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def test_per_class_iou_scalars_and_images(tiny_root, make_config, tmp_path):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", trainer__max_epochs=2)
    tb = TensorBoardLogger()
    csv_logger = CSVLogger(str(tmp_path / "run"), name="logs")
    cli = _fit(cfg, [csv_logger, tb])
    assert any(isinstance(c, ValidationImages) for c in cli.trainer.callbacks)
    # images: one set (<= 4 samples) per validation epoch, input | truth | prediction side by side
    tags = [t for t, _ in tb.experiment.images]
    assert tags and len(tags) <= 4 * 2 and set(tags) <= {f"val/sample_{i}" for i in range(4)}
    img = tb.experiment.images[0][1]
    assert img.shape[0] == 3 and img.shape[2] == 3 * img.shape[1] and 0.0 <= img.min() and img.max() <= 1.0
    rows = list(csv.DictReader(open(Path(csv_logger.log_dir) / "metrics.csv")))
    keys = {k for r in rows for k, v in r.items() if v}
    per_class = {k for k in keys if k.startswith("val/IoU/")}
    assert per_class and per_class <= {f"val/IoU/{n}" for n in cli.model.class_names}


def test_image_hook_is_a_no_op_without_tensorboard(tiny_root, make_config, tmp_path):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run")
    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        # tensorboard is optional (cli._loggers adds it only when importable): with CSV alone,
        # fit must run through and no logger is asked for images
        cli = _fit(cfg, [CSVLogger(str(tmp_path / "run"), name="logs")])
        assert _image_loggers(cli.trainer) == []
    else:
        # tensorboard installed: the real TensorBoardLogger is an image logger
        from lightning.pytorch.loggers import TensorBoardLogger as RealTB

        cli = _fit(cfg, [RealTB(str(tmp_path / "run"), name="tb")])
        assert len(_image_loggers(cli.trainer)) == 1
