"""Validation images and per-class IoU for loggers that take them (TensorBoard)."""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from mmsam.palette import colorize


def _palette(trainer: pl.Trainer, k: int) -> list[list[int]]:
    pal = getattr(getattr(trainer, "datamodule", None), "palette", None)
    if pal and len(pal) >= k:
        return [list(c) for c in pal]
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (k, 3)).tolist()


def _image_loggers(trainer: pl.Trainer) -> list[Any]:
    """Loggers whose ``experiment`` has ``add_image`` (TensorBoard); empty without them."""
    return [lg for lg in trainer.loggers if type(lg).__name__ == "TensorBoardLogger" and hasattr(lg.experiment, "add_image")]


class ValidationImages(pl.Callback):
    """Every ``every_n_epochs`` validation epochs, up to ``max_samples`` of the first validation
    batch (all modalities) as input (first modality, rescaled to [0, 1] per channel: the normalised
    image de-normalised for display), ground truth and prediction side by side, to TensorBoard;
    and, every validation epoch, the per-class IoU as ``val/IoU/<class>`` scalars.

    A no-op for images without a TensorBoard logger; the scalars go to every logger.
    """

    def __init__(self, every_n_epochs: int = 1, max_samples: int = 4, per_class_iou: bool = True) -> None:
        super().__init__()
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.max_samples = max(0, min(4, int(max_samples)))
        self.per_class_iou = per_class_iou

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or self.max_samples == 0:
            return
        if trainer.current_epoch % self.every_n_epochs != 0:
            return
        loggers = _image_loggers(trainer)
        if not loggers:
            return
        n = self.max_samples
        small = {**batch, "modalities": {k: v[:n] for k, v in batch["modalities"].items()},
                 "present": {k: v[:n] for k, v in (batch.get("present") or {}).items()}, "label": batch["label"][:n]}
        with torch.no_grad():
            pred = pl_module.eval_logits(small).argmax(1).cpu().numpy()
        label = small["label"].cpu().numpy()
        first = next(iter(small["modalities"].values()))[:, :3].float().cpu()
        lo = first.amin(dim=(2, 3), keepdim=True)
        hi = first.amax(dim=(2, 3), keepdim=True)
        image = ((first - lo) / (hi - lo).clamp(min=1e-6)).numpy()
        if image.shape[1] == 1:
            image = np.repeat(image, 3, axis=1)
        palette = _palette(trainer, pl_module.num_classes)
        for i in range(image.shape[0]):
            gt = colorize(label[i], palette).transpose(2, 0, 1) / 255.0
            pr = colorize(pred[i], palette).transpose(2, 0, 1) / 255.0
            panel = np.concatenate([image[i], gt, pr], axis=2).astype(np.float32)  # input | truth | prediction
            for lg in loggers:
                lg.experiment.add_image(f"val/sample_{i}", panel, global_step=trainer.global_step, dataformats="CHW")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """The task's ``per_class_iou`` (a ``ClasswiseWrapper``, reset at each validation epoch's
        start): computed on every process (one synchronisation, also where no batch was seen)."""
        if not self.per_class_iou or trainer.sanity_checking:
            return
        values = pl_module.per_class_iou.compute()  # {"val/IoU/<class>": percent}
        pl_module.log_dict({k: v for k, v in values.items() if not torch.isnan(v)}, sync_dist=False)
